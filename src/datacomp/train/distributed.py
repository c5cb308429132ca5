"""Process-group set-up for ``torchrun``/``srun`` launches (world info from the environment)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    created_group: bool  # we initialised the process group, so we tear it down

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def world_info() -> tuple[int, int, int]:
    """(local_rank, rank, world_size) from torchrun / MPI / SLURM variables (open_clip_train's rule)."""
    from open_clip_train.distributed import world_info_from_env

    return world_info_from_env()


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when launched with several processes; pick this process's device."""
    local_rank, rank, world_size = world_info()
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True  # as open_clip training does
        torch.backends.cudnn.allow_tf32 = True
    created = False
    if world_size > 1 and not dist.is_initialized():
        if "SLURM_PROCID" in os.environ and "RANK" not in os.environ:
            os.environ.setdefault("RANK", str(rank))
            os.environ.setdefault("WORLD_SIZE", str(world_size))
            os.environ.setdefault("LOCAL_RANK", str(local_rank))
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
        created = True
        log.info("joined process group: rank %d of %d on %s", rank, world_size, dev)
    return DistInfo(rank, local_rank, world_size, dev, created)


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's decision, shared with every rank (so collective saves happen everywhere at once)."""
    if info.world_size == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=info.device)
    dist.broadcast(t, 0)
    return bool(t.item())


def gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if info.world_size == 1:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.created_group and dist.is_initialized():
        dist.destroy_process_group()
