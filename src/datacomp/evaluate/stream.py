"""The DataLoader dataset over a task's shards (its own module so that reading data needs no torch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch.utils.data as tud

from datacomp.evaluate.data import Sample, TaskData, iter_samples


class SampleStream(tud.IterableDataset):
    """An IterableDataset over a task's shards, split by DataLoader worker (order is irrelevant to metrics)."""

    def __init__(self, data: TaskData, preprocess: Any):
        self.data = data
        self.preprocess = preprocess

    def __iter__(self) -> Iterator[Sample]:
        info = tud.get_worker_info()
        shards = self.data.shards if info is None else self.data.shards[info.id::info.num_workers]
        return iter_samples(self.data, self.preprocess, shards)
