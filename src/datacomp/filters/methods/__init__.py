"""Post-DataComp filtering methods as filter and signal plug-ins (one page each in ``docs/methods/``).

Per-file signals, computed from the pool's npz embeddings (or, for ``dfn``, the shards' images):
``negclip`` (negCLIPLoss), ``normsim`` (NormSim-2 / NormSim-inf against target embeddings), ``dfn``
(CLIP score from a filtering network), ``text_in_image`` (T-MARS: the CLIP score with the image's
text masked; images and a text detector). Global signals, decided per embedding cluster through the
engine (so ``--executor ray`` runs them on a cluster): ``semdedup`` (semantic deduplication) and
``density`` (density-based pruning). Each signal's column also works in ``--where``; parameters
come from ``--param NAME=VALUE`` (``SignalConfig.options``).
"""

from datacomp.errors import DataCompError
from datacomp.filters.methods import (  # noqa: F401 - registers them
    density,
    dfn,
    negclip,
    normsim,
    semdedup,
    text_in_image,
)

# The ``--param`` names each method reads (a misspelt one is refused, never silently ignored).
PARAMS: dict[str, tuple[str, ...]] = {
    "semdedup": ("eps", "clusters", "key"),
    "negclip": ("batch", "repeats", "tau"),
    "normsim": ("p",),
    "dfn": ("model",),
    "density": ("fraction", "tau", "neighbours", "clusters", "key"),
    "text_in_image": ("model", "detector"),
}


# Suggested runs on an embedded world: run name -> (filter, ``run_filter`` keyword arguments), in the
# shape of ``datacomp.artifacts.BASELINE_RUNS`` (semdedup's eps suits the world's 96-d embeddings:
# docs/methods/semdedup.md; the paper's range for real CLIP embeddings is 0.0001-0.1).
WORLD_EPS = {"semdedup.eps": "0.005"}
RUNS: dict[str, tuple[str, dict[str, object]]] = {
    "negclip_l14_30": ("negclip", {"arch": "l14", "fraction": 0.3}),
    "normsim_inf_30": ("normsim", {"fraction": 0.3}),
    "dfn_30": ("dfn", {"fraction": 0.3}),
    "density_30": ("density", {"fraction": 0.3}),
    "text_in_image_30": ("text_in_image", {"fraction": 0.3}),
    "semdedup": ("semdedup", {"method_params": WORLD_EPS}),
    "semdedup_clip_score_l14_30": ("semdedup", {"arch": "l14", "fraction": 0.3, "method_params": WORLD_EPS}),
}


def check_params(options: dict[str, str]) -> None:
    """Refuse ``--param METHOD.NAME`` for a name the method does not read (other prefixes: plug-ins')."""
    for key in options:
        method, _, name = key.partition(".")
        if method in PARAMS and name not in PARAMS[method]:
            raise DataCompError(f"--param {key}: {method} has no parameter {name!r}; it takes "
                                f"{', '.join(f'{method}.{n}' for n in PARAMS[method])} (docs/methods/{method}.md)")


__all__ = ["PARAMS", "RUNS", "check_params", "density", "dfn", "negclip", "normsim", "semdedup", "text_in_image"]
