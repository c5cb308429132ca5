"""Training data: webdataset shards resampled with replacement, shuffled, decoded and batched.

This mirrors open_clip's ``--dataset-type webdataset --dataset-resampled`` pipeline (spec §5.2):
shards are drawn with replacement (uniformly, or by per-source weight copied to every shard of the
source), samples pass a shuffle buffer, samples with ``txt`` and an image are decoded to RGB, go
through open_clip's train transform and tokenizer, and are batched. It is written with plain tar
reading (``iter_tar_samples``) because open_clip_train's own loader breaks with webdataset 1.0.2.

What we add: every random choice derives from (seed, rank, epoch, stream), and each sample's
transform is seeded from its position in the stream, so a run resumed mid-epoch replays exactly the
batches it would have seen (the skipped part is read but not decoded). Each loader worker is one
"stream"; batch ``b`` of an epoch comes from stream ``b % workers``, so the run is the same whatever
the machine's speed.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datacomp.artifacts import IMAGE_EXTS
from datacomp.errors import DataCompError
from datacomp.pool.shards import iter_tar_samples, list_shards
from datacomp.storage import Location, as_location

log = logging.getLogger(__name__)

KeepFn = Callable[[str], bool]


@dataclass
class Source:
    """One ``--data-dir`` entry: its shards, sampling weight and optional uid filter."""

    path: str
    shards: list[Path | Location]
    weight: float = 1.0
    keep: KeepFn | None = None
    filter_desc: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "shards": len(self.shards), "weight": self.weight, "uid_filter": self.filter_desc}


def split_data_arg(data: str | os.PathLike[str] | list[Any]) -> list[str]:
    """``a::b`` or a list (of strings that may themselves hold ``::``) -> list of paths."""
    items = data if isinstance(data, list | tuple) else [data]
    out = [p for item in items for p in str(item).split("::") if p]
    if not out:
        raise DataCompError("no training data given: pass --data-dir DIR (several separated by '::')")
    return out


def split_weights(weights: str | list[float] | None, n: int) -> list[float]:
    if weights is None or weights == "":
        return [1.0] * n
    parts = weights.split("::") if isinstance(weights, str) else list(weights)
    try:
        vals = [float(w) for w in parts]
    except ValueError:
        raise DataCompError(f"--data-weights {weights!r}: expected numbers separated by '::'") from None
    if len(vals) != n:
        raise DataCompError(
            f"--data-weights has {len(vals)} value(s) but --data-dir has {n} dir(s): give one weight per dir"
        )
    if any(v < 0 for v in vals) or not any(v > 0 for v in vals):
        raise DataCompError(f"--data-weights {weights!r}: weights must be >= 0 and at least one > 0")
    return vals


def _discover(path: Location, depth: int = 0) -> tuple[list[Location], KeepFn | None, str | None]:
    """Shards of a tar path or a directory, local or at a storage URL (listing, never arithmetic;
    spec §7.1.3). Remote shards are streamed when read.

    A dir without tars contributes its direct sub-dirs' shards (one level only, so pointing at a
    world's root never sweeps in the evaluation suite's tars)."""
    if path.suffix == ".tar":
        if not path.isfile():
            raise DataCompError(f"{path}: shard not found")
        return [path], None, None
    if not path.isdir():
        path.check_bucket()
        raise DataCompError(f"{path}: data dir not found")
    if (path / "meta.json").isfile():
        filt = _reshard_uid_filter(path)
        if filt is not None:
            shard_paths, keep = filt
            return [as_location(p).native for p in shard_paths], keep, f"{path / 'meta.json'} uid filter"
        return list_shards(path), None, None
    shards = list_shards(path)
    if shards:
        return shards, None, None
    if depth > 0:
        return [], None, None
    for sub in (p for p in path.ls(dirs=True) if not p.name.startswith(".")):
        sub_shards, keep, desc = _discover(sub, depth + 1)
        if keep is not None:
            raise DataCompError(f"{sub}: a uid-filtered reshard output must be passed as its own --data-dir")
        shards.extend(sub_shards)
    return shards, None, None


def _reshard_uid_filter(path: Location) -> tuple[list[Any], KeepFn] | None:
    """The reshard step's training-time uid filter (``reshard --no-copy``), if its ``meta.json`` declares one."""
    from datacomp.reshard import load_uid_filter

    return load_uid_filter(path)


def _subset_keep(subset_path: str | os.PathLike[str]) -> KeepFn:
    from datacomp.reshard import UidFilter
    from datacomp.uids import read_subset

    return UidFilter(read_subset(subset_path))


def resolve_sources(
    data: str | os.PathLike[str] | list[Any],
    weights: str | list[float] | None = None,
    uid_filter: str | os.PathLike[str] | None = None,
) -> list[Source]:
    """Parse ``--data-dir``/``--data-weights`` into sources with their discovered shards."""
    paths = split_data_arg(data)
    ws = split_weights(weights, len(paths))
    subset_keep = _subset_keep(uid_filter) if uid_filter is not None else None
    sources = []
    for p, w in zip(paths, ws, strict=True):
        loc = as_location(os.path.expanduser(p) if "://" not in p else p)
        shards, keep, desc = _discover(loc)
        if not shards:
            raise DataCompError(f"{p}: no .tar shards found (expected webdataset shards such as 00000000.tar)")
        if subset_keep is not None:
            keep = subset_keep if keep is None else _both(keep, subset_keep)
            desc = f"{desc} + {uid_filter}" if desc else str(uid_filter)
        sources.append(Source(str(loc.resolve()), shards, w, keep, desc))
    return sources


class _both:
    def __init__(self, a: KeepFn, b: KeepFn):
        self.a, self.b = a, b

    def __call__(self, uid: str) -> bool:
        return self.a(uid) and self.b(uid)


def stream_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0])


@dataclass
class StreamPlan:
    """Which batches of one epoch a process produces, and where a resumed run starts."""

    seed: int
    rank: int
    epoch: int
    streams: int  # logical streams (= loader workers, at least 1)
    batches: int  # micro-batches this process consumes this epoch
    start: int  # micro-batches already consumed (resume)
    batch_size: int

    def stream_of_worker(self, worker: int) -> int:
        """The loader asks worker 0 first, so after a resume at batch k worker j plays stream (k+j) % n."""
        return (self.start + worker) % self.streams

    def stream_counts(self, stream: int) -> tuple[int, int]:
        """(batches to skip, batches to produce) for a logical stream."""
        skip = len(range(stream, self.start, self.streams))
        total = len(range(stream, self.batches, self.streams))
        return skip, total - skip


@dataclass
class SampleReader:
    """Raw samples drawn from shards with replacement, through a shuffle buffer (no decoding)."""

    sources: list[Source]
    shuffle_buffer: int
    shuffle_initial: int
    _shards: list[tuple[Path, KeepFn | None]] = field(init=False)
    _weights: list[float] | None = field(init=False)

    def __post_init__(self) -> None:
        self._shards = [(s, src.keep) for src in self.sources for s in src.shards]
        ws = [src.weight for src in self.sources for _ in src.shards]
        self._weights = None if len(set(ws)) <= 1 else ws

    def _one_shard(self, shard: Path, keep: KeepFn | None) -> Iterator[tuple[bytes, str]]:
        for _key, m in iter_tar_samples(shard):
            text = m.get("txt")
            img = next((m[e] for e in IMAGE_EXTS if e in m), None)
            if text is None or img is None:
                continue
            if keep is not None:
                try:
                    uid = json.loads(m["json"])["uid"]
                except (KeyError, ValueError):
                    continue
                if not keep(uid):
                    continue
            yield img, text.decode("utf-8", errors="replace")

    def _resampled(self, rng: random.Random) -> Iterator[tuple[bytes, str]]:
        idx = range(len(self._shards))
        dry = 0
        while True:
            i = rng.choices(idx, weights=self._weights)[0]
            got = False
            for sample in self._one_shard(*self._shards[i]):
                got = True
                yield sample
            dry = 0 if got else dry + 1
            if dry > max(100, 3 * len(self._shards)):
                raise DataCompError(
                    f"{dry} shard draws in a row gave no usable sample (need txt + jpg/png/webp, and uids "
                    "kept by the uid filter): check the data dirs and the subset"
                )

    def samples(self, rng: random.Random) -> Iterator[tuple[bytes, str]]:
        """Infinite shuffled stream (webdataset's shuffle: grow to ``buffer``, emit from ``initial``)."""
        src = self._resampled(rng)
        buf: list[tuple[bytes, str]] = []
        for sample in src:
            buf.append(sample)
            if len(buf) < self.shuffle_buffer:
                buf.append(next(src))
            if len(buf) >= self.shuffle_initial:
                k = rng.randrange(len(buf))
                buf[k], buf[-1] = buf[-1], buf[k]
                yield buf.pop()


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class BatchStream(torch.utils.data.IterableDataset):
    """``(images, tokens, stream, position)`` micro-batches for one process and one epoch.

    ``position`` is how many raw samples the stream has consumed after this batch; the training loop
    stores it in checkpoints so a resumed stream skips exactly that many (undecodable images included).
    """

    def __init__(self, reader: SampleReader, plan: StreamPlan, transform: Any, tokenizer: Any,
                 positions: dict[int, int] | None = None):
        super().__init__()
        self.reader, self.plan, self.transform, self.tokenizer = reader, plan, transform, tokenizer
        self.positions = positions or {}

    # A stream that has decoded nothing after this many tries stops (one line) instead of looping forever.
    max_undecodable = 1000

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, int]]:
        from datacomp.pool.resize import ImageError, open_image

        info = torch.utils.data.get_worker_info()
        stream = self.plan.stream_of_worker(info.id if info is not None else 0)
        skip, todo = self.plan.stream_counts(stream)
        p = self.plan
        base = stream_seed(p.seed, p.rank, p.epoch, stream)
        samples = self.reader.samples(random.Random(base))
        bs = p.batch_size
        cpu_rng = torch.default_generator  # what torchvision's random transforms draw from
        n = self.positions.get(stream, skip * bs)
        for _ in range(n):  # resume: replay the draws, skip the decoding
            next(samples)
        decoded = 0
        failures: dict[str, int] = {}
        for _ in range(todo):
            images, texts = [], []
            with torch.random.fork_rng(devices=[]):
                while len(images) < bs:
                    img_bytes, text = next(samples)
                    cpu_rng.manual_seed((base + n) % (1 << 63))  # 100x cheaper than torch.manual_seed
                    n += 1
                    try:
                        img = open_image(img_bytes)
                    except ImageError as e:
                        log.debug("skipping undecodable image: %s", e.message)
                        failures[e.message[:120]] = failures.get(e.message[:120], 0) + 1
                        tried = sum(failures.values())
                        if not decoded and tried >= self.max_undecodable:
                            raise DataCompError(_undecodable_message(tried, failures, self.reader)) from None
                        continue
                    decoded += 1
                    images.append(self.transform(img))
                    texts.append(text)
            yield torch.stack(images), self.tokenizer(texts), stream, n


def _undecodable_message(tried: int, failures: dict[str, int], reader: SampleReader) -> str:
    top = sorted(failures.items(), key=lambda kv: -kv[1])[:2]
    why = "; ".join(f"{c} x {m}" for m, c in top)
    dirs = ", ".join(sorted({src.path for src in reader.sources}))[:200]
    return (f"{tried} samples tried, none could be decoded as an image ({why}): check the shards in {dirs} "
            "(re-download them)")


def next_batch(loader: Iterator[Any]) -> Any:
    """``next(loader)``; a DataCompError raised in a loader worker comes back as its own one line.

    (DataLoader re-raises a worker's exception with the worker's traceback in the message.)"""
    try:
        return next(loader)
    except DataCompError as e:
        msg = str(e)  # (DataCompError folds the worker's traceback into its one line)
        if "Original Traceback" in msg and "DataCompError: " in msg:
            raise DataCompError(msg.rsplit("DataCompError: ", 1)[-1]) from None
        raise


def make_loader(stream: BatchStream, workers: int) -> Any:
    """Iterate in-process (``workers=0``) or through a DataLoader with one worker per logical stream."""
    if workers == 0:
        return stream
    return torch.utils.data.DataLoader(
        stream, batch_size=None, num_workers=workers, worker_init_fn=_worker_init,
        multiprocessing_context="fork", prefetch_factor=4, persistent_workers=False,
    )
