"""NormSim (Wang et al. 2024): how close each sample's image is to the target tasks' images.

``NormSim_p(x) = || T x ||_p`` over the unit target embeddings ``T`` (rows) and the sample's unit
image embedding ``x``. Here ``p=2`` is the root *mean* square (``|| T x ||_2 / sqrt(|T|)``, the same
ranking, comparable across target sets) and ``p=inf`` the largest similarity to any target.
Targets: ``--targets FILE`` (an ``(n, d)`` .npy/.npz/.pt of image embeddings, e.g. ImageNet-1k
train), by default the embedded world's ImageNet-1k stand-in (``assets/imagenet_analog_l14_img.npy``),
the same targets the ``image_based`` baseline uses.
"""

from __future__ import annotations

import numpy as np

from datacomp.filters.methods.common import register_rank_filter, unit
from datacomp.filters.registry import FilterParams, register_signal
from datacomp.filters.signals import SignalInputs

CHUNK = 4096
_TARGETS: dict[str, np.ndarray] = {}


def targets(path: str) -> np.ndarray:
    from datacomp.filters.clusters import load_matrix

    if path not in _TARGETS:
        _TARGETS.clear()
        _TARGETS[path] = unit(load_matrix(path, "target embeddings"))
    return _TARGETS[path]


def normsim(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(NormSim-2 as RMS, NormSim-inf)`` of each row of ``x`` against the target rows ``t``."""
    x = unit(x)
    t = unit(t)
    n2 = np.empty(x.shape[0], np.float32)
    ninf = np.empty(x.shape[0], np.float32)
    for a in range(0, x.shape[0], CHUNK):
        s = x[a: a + CHUNK] @ t.T
        n2[a: a + CHUNK] = np.sqrt(np.mean(s.astype(np.float64) ** 2, axis=1))
        ninf[a: a + CHUNK] = s.max(axis=1) if t.shape[0] else np.nan
    return n2, ninf


@register_signal("normsim_l14", {"normsim_2_l14": "float32", "normsim_inf_l14": "float32"}, arrays=("l14_img",),
                 assets=("targets",), version="1", on_demand=True,
                 description="NormSim-2 (RMS) and NormSim-inf of the l14 image embedding against --targets")
def normsim_l14(x: SignalInputs) -> dict[str, object]:
    t = targets(x.asset("targets"))
    emb = x.array("l14_img", dim=t.shape[1], dim_source=f"targets {x.asset('targets')}")
    n2, ninf = normsim(emb, t)
    return {"normsim_2_l14": n2, "normsim_inf_l14": ninf}


def _column(p: FilterParams) -> str:
    from datacomp.errors import DataCompError

    norm = str(p.extra.get("normsim.p", "inf"))
    if norm not in ("2", "inf"):
        raise DataCompError(f"--param normsim.p={norm}: choose 2 or inf")
    return f"normsim_{norm}_l14"


register_rank_filter("normsim", _column, "NormSim (Wang et al. 2024): top --fraction by similarity to the "
                     "target set (--param normsim.p=inf|2)")
