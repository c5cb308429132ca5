"""The evaluation task registry: DataComp's 40 tasks and the embedded suite, both read from data files.

DataComp's entries live in ``datacomp_tasks.json`` beside this module (the original's ``tasklist.yml``
with the aggregate group each task counts in made explicit); the embedded suite's entries are the
synth package's ``eval_tasks.json``. Both use the same fields, so one loader and one runner serve both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from datacomp.errors import DataCompError

SUITES = ("embedded", "datacomp")
DATACOMP_TASKS_FILE = Path(__file__).parent / "datacomp_tasks.json"
EMBEDDED_TASKS_FILE = Path(__file__).parent.parent / "synth" / "eval_tasks.json"

# Which metric routine a task runs: zero-shot classification (plus group metrics when the task
# carries metadata), retrieval, WinoGAViL, or the FairFace/UTKFace multi-objective tables.
FAMILIES = ("zeroshot_classification", "retrieval", "winogavil", "wilds", "fairness", "fairface")
AGGREGATE_GROUPS = ("imagenet", "imagenet_dist_shift", "vtab", "retrieval")


@dataclass(frozen=True)
class EvalTask:
    key: str
    name: str
    family: str
    main_metric: str | None
    size: int
    num_classes: int | None = None
    aggregate: str | None = None
    tags: tuple[str, ...] = ()
    source: str | None = None
    metadata_fields: tuple[str, ...] = ()
    group_field: str | None = None
    suite: str = "datacomp"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def folder(self) -> str:
        """Directory name of the task's data in a CLIP_benchmark-layout data dir."""
        return self.key.replace("/", "-")

    @property
    def wds_folder(self) -> str:
        """The original's download folder name (``wds_<key without fairness/, '/'->'-'>_test``)."""
        return f"wds_{self.key.removeprefix('fairness/').replace('/', '-')}_test"


_KNOWN = {"key", "name", "family", "main_metric", "size", "num_classes", "aggregate", "tags", "source",
          "metadata_fields", "group_field"}


def _task_from_dict(d: dict[str, Any], suite: str, origin: Path) -> EvalTask:
    where = f"{origin}: task {d.get('key', '?')!r}"
    for req in ("key", "name", "family"):
        if req not in d:
            raise DataCompError(f"{where}: missing field {req!r}")
    if d["family"] not in FAMILIES:
        raise DataCompError(f"{where}: family {d['family']!r} is not one of {', '.join(FAMILIES)}")
    if d.get("aggregate") not in (None, *AGGREGATE_GROUPS):
        raise DataCompError(f"{where}: aggregate {d['aggregate']!r} is not one of {', '.join(AGGREGATE_GROUPS)}")
    fields = tuple(d.get("metadata_fields") or ())
    if d.get("group_field") and d["group_field"] not in fields:
        raise DataCompError(f"{where}: group_field {d['group_field']!r} is not in metadata_fields {list(fields)}")
    return EvalTask(
        key=d["key"], name=d["name"], family=d["family"], main_metric=d.get("main_metric"),
        size=int(d.get("size") or 0), num_classes=d.get("num_classes"), aggregate=d.get("aggregate"),
        tags=tuple(d.get("tags") or ()), source=d.get("source"), metadata_fields=fields,
        group_field=d.get("group_field"), suite=suite,
        extra={k: v for k, v in d.items() if k not in _KNOWN},
    )


def load_tasks_file(path: str | Path, suite: str) -> list[EvalTask]:
    """Tasks declared in a JSON list file (the registry format)."""
    p = Path(path)
    if not p.is_file():
        raise DataCompError(f"{p}: task list not found")
    try:
        rows = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataCompError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(rows, list):
        raise DataCompError(f"{p}: expected a JSON list of task objects")
    tasks = [_task_from_dict(r, suite, p) for r in rows]
    keys = [t.key for t in tasks]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise DataCompError(f"{p}: duplicate task keys {dup}")
    return tasks


@cache
def _datacomp() -> tuple[EvalTask, ...]:
    return tuple(load_tasks_file(DATACOMP_TASKS_FILE, "datacomp"))


def list_tasks(suite: str = "datacomp", tasks_file: str | Path | None = None) -> list[EvalTask]:
    """All tasks of a suite in registry order (``tasks_file`` overrides where the embedded suite is read)."""
    if suite not in SUITES:
        raise DataCompError(f"unknown suite {suite!r}: use one of {', '.join(SUITES)}")
    if suite == "datacomp":
        return list(_datacomp())
    path = Path(tasks_file) if tasks_file else EMBEDDED_TASKS_FILE
    if not path.is_file():
        raise DataCompError(
            f"{path}: the embedded suite's task list is missing; reinstall datacomp or pass the suite's "
            "eval_tasks.json"
        )
    return load_tasks_file(path, "embedded")


def get_task(key: str, suite: str | None = None, tasks_file: str | Path | None = None) -> EvalTask:
    """The task with this key (searching both suites unless one is named); unknown keys list the valid ones."""
    suites = [suite] if suite else [s for s in SUITES if s == "datacomp" or tasks_file or EMBEDDED_TASKS_FILE.is_file()]
    pool: list[EvalTask] = []
    for s in suites:
        pool.extend(list_tasks(s, tasks_file))
    for t in pool:
        if t.key == key:
            return t
    raise DataCompError(f"unknown task {key!r}; valid keys: {', '.join(t.key for t in pool)}")


def suite_tasks_file(suite: str, data_dir: str | Path | None, tasks_file: str | Path | None = None) -> Path | None:
    """The embedded suite's task list: explicit, else the one the world wrote beside its data, else packaged."""
    if tasks_file or suite != "embedded" or data_dir is None:
        return Path(tasks_file) if tasks_file else None
    beside = Path(data_dir) / "eval_tasks.json"
    return beside if beside.is_file() else None


def select_tasks(suite: str, keys: list[str] | None = None, tasks_file: str | Path | None = None) -> list[EvalTask]:
    """The suite's tasks, or the named subset (in the order given), refusing unknown keys."""
    all_tasks = list_tasks(suite, tasks_file)
    if not keys:
        return all_tasks
    by_key = {t.key: t for t in all_tasks}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise DataCompError(
            f"unknown task(s) {', '.join(unknown)} in suite {suite!r}; valid keys: {', '.join(by_key)}"
        )
    return [by_key[k] for k in dict.fromkeys(keys)]
