"""Training: the fixed DataComp recipe on open_clip (``train``), its config and layout."""

from datacomp.train.config import Layout, TrainConfig, plan_layout
from datacomp.train.loop import TrainResult, train

__all__ = ["Layout", "TrainConfig", "TrainResult", "plan_layout", "train"]
