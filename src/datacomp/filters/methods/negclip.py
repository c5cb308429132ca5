"""negCLIPLoss (Wang et al. 2024, "CLIPLoss and Norm-Based Data Selection Methods", arXiv 2405.19547).

The CLIP score ``s_ii = <img_i, txt_i>`` minus the batch-contrastive normalisation term of the CLIP
loss: ``R_i = tau/2 * (LME_j s_ij/tau + LME_j s_ji/tau)`` over a random batch holding ``i``, averaged
over ``repeats`` batches. A caption that matches every image (a "generic" caption) and an image
that matches every caption get a large ``R_i`` and fall below a specific pair of equal raw score.

LME is the log-*mean*-exp (the paper's log-sum-exp minus ``log B``): the same ranking for a fixed
batch size, and scores that stay comparable when a small file's batch is smaller than ``batch``.
Batches are drawn *within each metadata file* from a generator fixed by ``(seed, file name,
repeat)``: a file of a DataComp pool is a uniform sample of the pool (rows are ordered by uid hash),
so in-file batches are random batches of the pool, and each file stays one independent task.
"""

from __future__ import annotations

import numpy as np

from datacomp.filters.methods.common import arch_of, file_rng, register_rank_filter, unit
from datacomp.filters.registry import register_signal
from datacomp.filters.signals import SignalConfig, SignalInputs
from datacomp.storage import as_location

BATCH = 1024
REPEATS = 4
TAU = 0.01


def _lme(s: np.ndarray, axis: int) -> np.ndarray:
    m = s.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(s - m).mean(axis=axis, keepdims=True))).squeeze(axis)


def negclip_scores(img: np.ndarray, txt: np.ndarray, batch: int = BATCH, repeats: int = REPEATS, tau: float = TAU,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """negCLIPLoss per row of row-aligned image and text embeddings (normalised here)."""
    img, txt = unit(img), unit(txt)
    n = img.shape[0]
    raw = np.einsum("ij,ij->i", img, txt)
    if n == 0:
        return raw
    rng = rng or np.random.default_rng(0)
    b = max(1, min(int(batch), n))
    reg = np.zeros(n, np.float64)
    for _ in range(int(repeats)):
        perm = rng.permutation(n)
        for a in range(0, n, b):
            idx = perm[a: a + b]
            # A short last batch is filled up with rows of the first one (negatives only), so every
            # row is normalised over a batch of the same size.
            full = idx if idx.size == b else np.concatenate([idx, perm[: b - idx.size]])
            s = (img[full] @ txt[full].T).astype(np.float64) / tau
            r = tau * 0.5 * (_lme(s, 1) + _lme(s, 0))
            reg[idx] += r[: idx.size]
    return (raw - reg / int(repeats)).astype(np.float32)


def _options(cfg: SignalConfig) -> tuple[int, int, float, int]:
    return (cfg.option("negclip.batch", BATCH, int), cfg.option("negclip.repeats", REPEATS, int),
            cfg.option("negclip.tau", TAU, float), cfg.option("seed", 0, int))


def _fingerprint(cfg: SignalConfig) -> str:
    b, k, t, s = _options(cfg)
    return f"b{b}-r{k}-t{t:g}-s{s}"


def _compute(x: SignalInputs, arch: str) -> dict[str, object]:
    b, k, t, s = _options(x.cfg)
    img, txt = x.array(f"{arch}_img"), x.array(f"{arch}_txt")
    return {f"negclip_{arch}": negclip_scores(img, txt, b, k, t, file_rng(s, as_location(x.parquet).stem))}


for _arch in ("l14", "b32"):
    register_signal(f"negclip_{_arch}", {f"negclip_{_arch}": "float32"}, arrays=(f"{_arch}_img", f"{_arch}_txt"),
                    params=_fingerprint, version="1", on_demand=True,
                    description=f"negCLIPLoss of the {_arch} embeddings (CLIP score minus the batch-contrastive term)",
                    )(lambda x, _a=_arch: _compute(x, _a))

register_rank_filter("negclip", lambda p: f"negclip_{arch_of(p)}",
                     "negCLIPLoss (Wang et al. 2024): top --fraction by negclip_<arch> (--arch l14 default)")
