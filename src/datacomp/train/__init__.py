"""Training: the fixed DataComp recipe on open_clip (``train``), its config and layout.

``TrainConfig`` and ``plan_layout`` import without torch; ``train`` and ``TrainResult`` load the loop
(torch, open_clip) on first use.
"""

from typing import Any

from datacomp.train.config import Layout, TrainConfig, plan_layout

__all__ = ["Layout", "TrainConfig", "TrainResult", "plan_layout", "train"]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult"):
        from datacomp.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'datacomp.train' has no attribute {name!r}")
