"""Evaluation families: how a kind of task is loaded, scored and aggregated, one small module each.

A family is a :class:`Family` registered by name with :func:`register_family`:

- ``load_sample(key, members, task, preprocess, where) -> Sample | None``: the loader, turning one
  webdataset sample's members (``{ext: bytes}``) into what the metric needs (helpers in
  :mod:`datacomp.evaluate.data` decode images, labels, metadata and captions with one-line errors);
- ``run(run: TaskRun) -> dict``: the metric, given the loaded model and the task's samples
  (:class:`TaskRun` batches them, encodes images and texts, and builds cached zero-shot classifiers);
- ``aggregate``: the aggregate group a task of this family counts in when its suite entry names none;
- ``needs_classnames`` and ``hub_rows`` (how ``download-evalsets`` rewrites a Hub parquet export).

The built-in families live in this package (``classification``, ``wilds``, ``retrieval``,
``winogavil``, ``fairface``); a new one is one module that calls :func:`register_family`, loaded with
``datacomp evaluate --plugin FILE`` or from the ``datacomp.eval_families`` entry-point group of an
installed package, plus a suite file that names it (see ``tests/eval_plugin/`` and docs/evaluate.md).
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datacomp.errors import DataCompError

if TYPE_CHECKING:
    from datacomp.evaluate.data import Sample, TaskData
    from datacomp.evaluate.registry import EvalTask

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "datacomp.eval_families"
BUILTIN = ("classification", "wilds", "retrieval", "winogavil", "fairface")

SampleLoader = Callable[[str, dict[str, bytes], "EvalTask", Any, Path], "Sample | None"]


@dataclass(frozen=True)
class Family:
    name: str
    run: Callable[[TaskRun], dict[str, Any]]  # the metric: all metrics of one task
    load_sample: SampleLoader  # the loader: one webdataset sample -> Sample (None: not a sample of this task)
    aggregate: str | None = None  # default aggregate group of its tasks
    needs_classnames: bool = True  # classnames.txt + zeroshot_classification_templates.txt required
    hub_rows: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # Hub parquet row -> tar members
    description: str = ""


_FAMILIES: dict[str, Family] = {}
_loaded = False


def register_family(family: Family) -> Family:
    """Add a family (a later registration of the same name replaces the earlier one)."""
    if not isinstance(family, Family):
        raise DataCompError(f"register_family expects a Family, got {type(family).__name__}")
    _FAMILIES[family.name] = family
    return family


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN:
        importlib.import_module(f"datacomp.evaluate.families.{mod}")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001 - an installed plugin may raise anything on import
            raise DataCompError(f"evaluation family plugin {ep.name} ({ep.value}) failed to import "
                                f"({type(e).__name__}: {e}); fix or uninstall that package") from None


def get_family(name: str) -> Family:
    _ensure_loaded()
    if name not in _FAMILIES:
        raise DataCompError(f"family {name!r} is not registered (known: {', '.join(sorted(_FAMILIES))}); "
                            "load the module that registers it with --plugin FILE")
    return _FAMILIES[name]


def list_families() -> list[Family]:
    _ensure_loaded()
    return [_FAMILIES[k] for k in sorted(_FAMILIES)]


def load_plugins(paths: list[str] | tuple[str, ...]) -> None:
    """Import family modules given as files (each registers its families when imported)."""
    from datacomp.plugins import import_file

    _ensure_loaded()
    for p in paths:
        import_file(p, "evaluation plugin")


# ----------------------------------------------------------------------------------------------
# what a family's run() gets


class TaskRun:
    """One task being evaluated: the loaded model, the task's data, and the shared encoders.

    ``batches()`` / ``samples()`` read the task's tars in one pass and count what they yield
    (``count``), which the runner checks against the task's size after the family returns.
    """

    def __init__(self, loaded: Any, data: TaskData, fingerprint: str, batch_size: int, workers: int = 0,
                 cache_dir: Path | None = None, progress: bool = False):
        self.loaded = loaded
        self.data = data
        self.task = data.task
        self.fingerprint = fingerprint
        self.batch_size = batch_size
        self.workers = workers
        self.cache_dir = cache_dir
        self.progress = progress
        self.count = 0

    @property
    def device(self) -> str:
        return str(self.loaded.device)

    @property
    def amp(self) -> bool:
        return self.device.startswith("cuda")

    def _bar(self, unit_size: int) -> Any:
        from tqdm.auto import tqdm

        total = math.ceil(self.task.size / unit_size) if self.task.size else None
        return tqdm(total=total, desc=self.task.name, unit="batch", disable=not self.progress, leave=False)

    def batches(self) -> Iterator[list[Sample]]:
        """Lists of up to ``batch_size`` preprocessed samples (DataLoader workers split the shards)."""
        from datacomp.evaluate.data import iter_batches

        bar = self._bar(self.batch_size)
        try:
            for batch in iter_batches(self.data, self.loaded.preprocess_val, self.batch_size, self.workers):
                self.count += len(batch)
                yield batch
                bar.update(1)
        finally:
            bar.close()

    def samples(self) -> Iterator[Sample]:
        """Preprocessed samples one at a time, in archive order (no worker processes)."""
        from datacomp.evaluate.data import iter_samples

        bar = self._bar(1)
        try:
            for s in iter_samples(self.data, self.loaded.preprocess_val):
                self.count += 1
                yield s
                bar.update(1)
        finally:
            bar.close()

    def encode_images(self, images: list[Any], normalize: bool = True, amp: bool = False) -> Any:
        from datacomp.evaluate.encoders import encode_images

        return encode_images(self.loaded, images, normalize=normalize, amp=amp)

    def encode_texts(self, texts: list[str], normalize: bool = True, amp: bool = True) -> Any:
        from datacomp.evaluate.encoders import encode_texts

        return encode_texts(self.loaded, texts, normalize=normalize, amp=amp)

    def classifier(self, classnames: list[str] | None = None, templates: list[str] | None = None) -> Any:
        """``(d, C)`` zero-shot class weights (the task's own class names and templates by default), cached."""
        from datacomp.evaluate.encoders import zero_shot_classifier

        classnames = self.data.classnames if classnames is None else classnames
        templates = self.data.templates if templates is None else templates
        if not classnames or not templates:
            raise DataCompError(f"task {self.task.key}: {self.data.root} has no class names or templates")
        return zero_shot_classifier(self.loaded, classnames, templates, self.fingerprint, self.cache_dir)

    def fail(self, message: str) -> DataCompError:
        """An error naming this task and its data folder."""
        return DataCompError(f"task {self.task.key}: {message} ({self.data.root})")
