"""The fixed scale table: model, batch, lr, warmup, beta2 and samples seen per DataComp scale.

The participant cannot change these: the train step reads them from here and nowhere else. The real
scales carry the original ``scale_configs.py`` values; ``tiny`` is the embedded CPU scale
(see ``docs/train.md`` for how it was calibrated).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from datacomp.errors import DataCompError


@dataclass(frozen=True)
class Scale:
    name: str
    model: str  # open_clip model config name
    batch_size: int  # global batch, whatever the number of devices
    learning_rate: float
    train_num_samples: int  # samples seen over the whole run, whatever the subset size
    warmup: int  # linear warm-up steps before the cosine decay
    beta2: float | None  # AdamW beta2; None keeps open_clip's default (0.98 for ViTs)
    pool_size: int | None  # CommonPool size at this scale (None: no pool)
    hf_repo: str | None  # Hugging Face dataset repo holding the pool metadata
    num_checkpoints: int = 5  # open_clip "epochs": train_num_samples is split into this many
    precision: str = "amp"  # default mixed precision on GPU
    embedded: bool = False  # True for the CPU scale of the embedded world

    @property
    def steps(self) -> int:
        """Optimiser steps for a run that keeps the global batch exact (before worker rounding)."""
        per_epoch = self.train_num_samples // self.num_checkpoints
        return -(-per_epoch // self.batch_size) * self.num_checkpoints

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def original_config(self) -> dict[str, Any]:
        """The dict the original ``scale_configs.py`` returns (what ``info.pkl`` stores)."""
        return original_config(self.model, self.batch_size, self.learning_rate, self.train_num_samples,
                               self.warmup, self.beta2)


def original_config(model: str, batch_size: int, learning_rate: float, train_num_samples: int, warmup: int,
                    beta2: float | None) -> dict[str, Any]:
    """A recipe as the original ``scale_configs.py`` dict (``beta2`` only when set); the one place its keys live."""
    cfg: dict[str, Any] = {"batch_size": batch_size, "learning_rate": learning_rate,
                           "train_num_samples": train_num_samples, "warmup": warmup, "model": model}
    if beta2 is not None:
        cfg["beta2"] = beta2
    return cfg


_SCALES: dict[str, Scale] = {
    s.name: s
    for s in [
        Scale("tiny", "datacomp-tiny-rn", 128, 2e-3, 51_200, 40, None, 60_000, None,
              precision="fp32", embedded=True),
        Scale("debug", "ViT-B-32", 1024, 1e-4, 128_000, 500, None, None, None),
        Scale("small", "ViT-B-32", 4096, 5e-4, 12_800_000, 500, None, 12_800_000,
              "mlfoundations/datacomp_small"),
        Scale("medium", "ViT-B-32", 4096, 5e-4, 128_000_000, 500, None, 128_000_000,
              "mlfoundations/datacomp_medium"),
        Scale("large", "ViT-B-16", 8192, 5e-4, 1_280_000_000, 500, None, 1_280_000_000,
              "mlfoundations/datacomp_large"),
        Scale("xlarge", "ViT-L-14", 90112, 1e-3, 12_800_000_000, 10_000, 0.95, 12_800_000_000,
              "mlfoundations/datacomp_xlarge"),
    ]
}


def available_scales() -> list[str]:
    """Scale names in increasing compute order."""
    return list(_SCALES)


def get_scale(name: str) -> Scale:
    try:
        return _SCALES[name]
    except KeyError:
        raise DataCompError(
            f"unknown scale {name!r}: choose one of {', '.join(available_scales())}"
        ) from None
