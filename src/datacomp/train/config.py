"""The training recipe (``TrainConfig``) and the step/batch layout it implies for a device count.

The recipe is frozen: a scale fixes model, global batch, lr, warm-up, beta2 and samples seen, and the
layout below turns that into an exact number of optimiser steps and a per-device batch. Unlike the
original (spec §5.3), the step count never depends on workers, devices or accumulation, and a layout
that cannot keep the global batch exact is refused instead of silently truncated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from datacomp.errors import DataCompError
from datacomp.scales import get_scale, original_config

PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes the trained weights. Two runs with equal configs and data are identical."""

    model: str  # open_clip model config name
    batch_size: int  # global batch (all devices, all accumulation steps)
    lr: float
    train_num_samples: int  # samples seen over the whole run
    warmup: int  # linear warm-up steps
    beta2: float | None = None  # AdamW beta2; None = open_clip's default 0.98
    beta1: float = 0.9
    weight_decay: float = 0.2
    eps: float = 1e-6
    num_checkpoints: int = 5  # open_clip "epochs"
    precision: str = "amp"
    seed: int = 0
    workers: int = 4  # data loader processes per device (0: load in the training process)
    grad_clip_norm: float | None = None
    accum_freq: int = 1  # gradient accumulation (the contrastive batch stays the global batch)
    grad_checkpointing: bool = True  # activation checkpointing in both towers (original: always on)
    shuffle_buffer: int = 5000  # sample shuffle buffer (open_clip's webdataset pipeline)
    shuffle_initial: int = 1000
    scale: str | None = None  # the DataComp scale this recipe came from (None: a custom recipe)

    def __post_init__(self) -> None:
        for name in ("batch_size", "train_num_samples", "num_checkpoints", "accum_freq"):
            if getattr(self, name) < 1:
                raise DataCompError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.workers < 0:
            raise DataCompError("TrainConfig.warmup and TrainConfig.workers must be >= 0")
        if self.precision not in PRECISIONS:
            raise DataCompError(f"unknown precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.train_num_samples // self.num_checkpoints < 1:
            raise DataCompError("TrainConfig.train_num_samples must be at least num_checkpoints")

    @classmethod
    def from_scale(cls, scale_name: str, seed: int = 0, **overrides: Any) -> TrainConfig:
        """The fixed recipe of a DataComp scale; only run-layout fields may be overridden."""
        bad = set(overrides) - RUN_FIELDS
        if bad:
            raise DataCompError(
                f"{', '.join(sorted(bad))} cannot be changed at a fixed scale (only {', '.join(sorted(RUN_FIELDS))})"
            )
        s = get_scale(scale_name)
        cfg = cls(
            model=s.model, batch_size=s.batch_size, lr=s.learning_rate, train_num_samples=s.train_num_samples,
            warmup=s.warmup, beta2=s.beta2, num_checkpoints=s.num_checkpoints, precision=s.precision,
            seed=seed, workers=0 if s.embedded else 4, grad_checkpointing=not s.embedded, scale=s.name,
        )
        return replace(cfg, **overrides)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil((self.train_num_samples // self.num_checkpoints) / self.batch_size)

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run: fixed by the recipe, whatever the data or devices."""
        return self.steps_per_epoch * self.num_checkpoints

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def scale_config(self) -> dict[str, Any]:
        """The original ``scale_configs.py`` dict for this recipe (what ``info.pkl`` stores)."""
        return original_config(self.model, self.batch_size, self.lr, self.train_num_samples, self.warmup, self.beta2)


# Fields a participant may set at a fixed scale: they change how the run is laid out, not the recipe.
RUN_FIELDS = frozenset({"workers", "precision", "accum_freq", "grad_clip_norm", "grad_checkpointing"})


@dataclass(frozen=True)
class Layout:
    """How the global batch is split: per device, per accumulation step."""

    world_size: int
    accum_freq: int
    per_device_batch: int  # micro-batch one device processes per forward pass
    steps_per_epoch: int
    total_steps: int
    global_batch: int

    @property
    def samples_seen(self) -> int:
        return self.total_steps * self.global_batch


def plan_layout(config: TrainConfig, world_size: int = 1) -> Layout:
    """Split the global batch over ``world_size`` devices × ``accum_freq``; refuse what does not divide."""
    parts = world_size * config.accum_freq
    if config.batch_size % parts:
        ok = [d for d in range(1, min(config.batch_size, 4096) + 1) if config.batch_size % d == 0]
        raise DataCompError(
            f"global batch {config.batch_size} cannot be split exactly over {world_size} device(s) x "
            f"accum-freq {config.accum_freq} = {parts}; use a devices x accum-freq product that divides it "
            f"(e.g. {', '.join(str(d) for d in ok[-6:])})"
        )
    return Layout(world_size, config.accum_freq, config.batch_size // parts, config.steps_per_epoch,
                  config.total_steps, config.batch_size)
