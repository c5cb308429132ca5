"""Post-DataComp filtering methods as filter and signal plug-ins (one page each in ``docs/methods/``).

Per-file signals, computed from the pool's npz embeddings (or, for ``dfn``, the shards' images):
``negclip`` (negCLIPLoss), ``normsim`` (NormSim-2 / NormSim-inf against target embeddings), ``dfn``
(CLIP score from a filtering network). Global signals, decided per embedding cluster through the
engine (so ``--executor ray`` runs them on a cluster): ``semdedup`` (semantic deduplication) and
``density`` (density-based pruning). Each signal's column also works in ``--where``; parameters
come from ``--param NAME=VALUE`` (``SignalConfig.options``).
"""

from datacomp.filters.methods import density, dfn, negclip, normsim, semdedup  # noqa: F401 - registers them

__all__ = ["density", "dfn", "negclip", "normsim", "semdedup"]
