"""Evaluation suites: data files listing tasks, their family, main metric, size and aggregate group.

A suite is one JSON or YAML file (``suites/<name>.json`` in this package, or any file a user passes
with ``--suite FILE``)::

    {"suite": "my-suite",                       # name (default: the file name)
     "aggregates": {"imagenet": "ImageNet", ...},  # group -> label (default: DataComp's four)
     "average": "Average",                      # label of the mean over every scored task (null: none)
     "tasks": [{"key": "...", "name": "...", "family": "zeroshot_classification",
                "main_metric": "acc1", "size": 10000, "aggregate": "imagenet", ...}, ...]}

A bare JSON list of task objects is accepted too (older ``eval_tasks.json`` files). Fields a task does
not use by name (e.g. ``top_k``) are kept in ``EvalTask.extra`` for its family. How a family is
evaluated lives in :mod:`datacomp.evaluate.families`; a suite only names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from datacomp.errors import DataCompError

SUITES_DIR = Path(__file__).parent / "suites"
SUITE_EXTS = (".json", ".yaml", ".yml")
DATA_SUITE_NAME = "eval_tasks.json"  # the suite file a data folder (an embedded world's eval/) may carry
DEFAULT_AGGREGATES = {"imagenet": "ImageNet", "imagenet_dist_shift": "ImageNet dist. shifts", "vtab": "VTAB",
                      "retrieval": "Retrieval"}
DEFAULT_AVERAGE = "Average"


@dataclass(frozen=True)
class EvalTask:
    key: str  # unique in its suite; the result line's "key"
    name: str  # display name; the result line's "dataset"
    family: str  # a registered family (datacomp.evaluate.families)
    main_metric: str | None  # the metric aggregated; None: reported, not scored
    size: int  # samples in the test set (0: unknown, not checked)
    num_classes: int | None = None
    aggregate: str | None = None  # aggregate group (a key of the suite's aggregates), or None
    tags: tuple[str, ...] = ()
    source: str | None = None  # where `download-evalsets` fetches it (a Hub repo)
    metadata_fields: tuple[str, ...] = ()  # names of the npy metadata vector's entries
    group_field: str | None = None  # the metadata field worst-group metrics group by
    suite: str = "datacomp"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # family parameters

    @property
    def folder(self) -> str:
        """Directory name of the task's data in a CLIP_benchmark-layout data dir."""
        return self.key.replace("/", "-")

    @property
    def wds_folder(self) -> str:
        """The original's download folder name (``wds_<key without fairness/, '/'->'-'>_test``)."""
        return f"wds_{self.key.removeprefix('fairness/').replace('/', '-')}_test"


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: tuple[EvalTask, ...]
    aggregates: dict[str, str]  # group -> label, in display order
    average: str | None = DEFAULT_AVERAGE
    path: Path | None = None
    description: str = ""

    @property
    def scored(self) -> list[EvalTask]:
        return [t for t in self.tasks if t.main_metric is not None]

    def get(self, key: str) -> EvalTask:
        for t in self.tasks:
            if t.key == key:
                return t
        raise DataCompError(f"unknown task {key!r} in suite {self.name!r}; valid keys: "
                            + ", ".join(t.key for t in self.tasks))

    def select(self, keys: list[str] | None = None) -> list[EvalTask]:
        """The suite's tasks, or the named subset (in the order given), refusing unknown keys."""
        if not keys:
            return list(self.tasks)
        by_key = {t.key: t for t in self.tasks}
        unknown = [k for k in keys if k not in by_key]
        if unknown:
            raise DataCompError(f"unknown task(s) {', '.join(unknown)} in suite {self.name!r}; valid keys: "
                                + ", ".join(by_key))
        return [by_key[k] for k in dict.fromkeys(keys)]


_KNOWN = {"key", "name", "family", "main_metric", "size", "num_classes", "aggregate", "tags", "source",
          "metadata_fields", "group_field"}


def _task_from_dict(d: Any, suite: str, origin: Path, groups: dict[str, str], check_family: bool) -> EvalTask:
    if not isinstance(d, dict):
        raise DataCompError(f"{origin}: each task must be an object, found {type(d).__name__}")
    where = f"{origin}: task {d.get('key', '?')!r}"
    for req in ("key", "name", "family"):
        if not isinstance(d.get(req), str) or not d[req]:
            raise DataCompError(f"{where}: field {req!r} must be a non-empty string")
    group = d.get("aggregate")
    if check_family:
        from datacomp.evaluate.families import get_family

        try:
            fam = get_family(d["family"])
        except DataCompError as e:
            raise DataCompError(f"{where}: {e}") from None
        if "aggregate" not in d and fam.aggregate in groups:  # no entry: the family's group, if the suite has it
            group = fam.aggregate
    if d.get("aggregate") is not None and d["aggregate"] not in groups:
        raise DataCompError(f"{where}: aggregate {d['aggregate']!r} is not one of the suite's groups "
                            f"({', '.join(groups)}); add it to \"aggregates\" or use null")
    for f in ("main_metric", "source", "group_field"):
        if d.get(f) is not None and not isinstance(d[f], str):
            raise DataCompError(f"{where}: {f} must be a string or null")
    size = d.get("size") or 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise DataCompError(f"{where}: size must be a non-negative integer (the test set's sample count)")
    fields = d.get("metadata_fields") or ()
    tags = d.get("tags") or ()
    if not all(isinstance(x, str) for x in (*fields, *tags)):
        raise DataCompError(f"{where}: metadata_fields and tags must be lists of strings")
    if d.get("group_field") and d["group_field"] not in fields:
        raise DataCompError(f"{where}: group_field {d['group_field']!r} is not in metadata_fields {list(fields)}")
    return EvalTask(
        key=d["key"], name=d["name"], family=d["family"], main_metric=d.get("main_metric"), size=size,
        num_classes=d.get("num_classes"), aggregate=group, tags=tuple(tags), source=d.get("source"),
        metadata_fields=tuple(fields), group_field=d.get("group_field"), suite=suite,
        extra={k: v for k, v in d.items() if k not in _KNOWN},
    )


def _read_data(p: Path) -> Any:
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataCompError(f"{p}: cannot read the suite file ({e})") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise DataCompError(f"{p}: not valid YAML ({' '.join(str(e).split())[:200]})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataCompError(f"{p}: not valid JSON ({e})") from None


def load_suite_file(path: str | Path, name: str | None = None, check_families: bool = True) -> Suite:
    """A suite from a JSON/YAML file (an object with ``tasks``, or a bare list of tasks)."""
    p = Path(path)
    if not p.is_file():
        raise DataCompError(f"{p}: suite file not found")
    raw = _read_data(p)
    if isinstance(raw, list):
        raw = {"tasks": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list):
        raise DataCompError(f"{p}: expected an object with a \"tasks\" list (or a list of task objects)")
    suite = raw.get("suite") or name or p.stem
    groups = raw.get("aggregates", DEFAULT_AGGREGATES)
    if not isinstance(groups, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in groups.items()):
        raise DataCompError(f"{p}: \"aggregates\" must map group names to labels")
    average = raw.get("average", DEFAULT_AVERAGE)
    tasks = [_task_from_dict(r, str(suite), p, groups, check_families) for r in raw["tasks"]]
    keys = [t.key for t in tasks]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise DataCompError(f"{p}: duplicate task keys {dup}")
    return Suite(str(suite), tuple(tasks), dict(groups), average if isinstance(average, str) else None, p,
                 str(raw.get("description") or ""))


def list_suites() -> list[str]:
    """The packaged suites' names."""
    return sorted(p.stem for p in SUITES_DIR.iterdir() if p.suffix in SUITE_EXTS)


@cache
def _packaged(name: str) -> Suite:
    for ext in SUITE_EXTS:
        p = SUITES_DIR / f"{name}{ext}"
        if p.is_file():
            return load_suite_file(p, name)
    raise DataCompError(f"unknown suite {name!r}: use one of {', '.join(list_suites())} or a suite file "
                        "(.json/.yaml)")


def _is_path(s: str) -> bool:
    return Path(s).suffix.lower() in SUITE_EXTS or "/" in s or Path(s).is_file()


def get_suite(suite: str | Path | Suite = "datacomp", data_dir: str | Path | None = None,
              tasks_file: str | Path | None = None) -> Suite:
    """A suite by packaged name or file path; ``tasks_file`` (or the suite file a data folder carries,
    e.g. an embedded world's ``eval/eval_tasks.json``) takes precedence for the ``embedded`` suite."""
    if isinstance(suite, Suite):
        return suite
    if tasks_file:
        return load_suite_file(tasks_file, None if _is_path(str(suite)) else str(suite))
    if _is_path(str(suite)):
        return load_suite_file(suite)
    if suite == "embedded" and data_dir is not None and (Path(data_dir) / DATA_SUITE_NAME).is_file():
        return load_suite_file(Path(data_dir) / DATA_SUITE_NAME, "embedded")
    return _packaged(str(suite))


def list_tasks(suite: str | Path | Suite = "datacomp", tasks_file: str | Path | None = None) -> list[EvalTask]:
    """All tasks of a suite in file order."""
    return list(get_suite(suite, tasks_file=tasks_file).tasks)


def get_task(key: str, suite: str | Path | Suite | None = None, tasks_file: str | Path | None = None) -> EvalTask:
    """The task with this key (searching every packaged suite unless one is named)."""
    if suite is not None or tasks_file:
        return get_suite(suite or "embedded", tasks_file=tasks_file).get(key)
    pool = [t for name in list_suites() for t in _packaged(name).tasks]
    for t in pool:
        if t.key == key:
            return t
    raise DataCompError(f"unknown task {key!r}; valid keys: {', '.join(t.key for t in pool)}")


def select_tasks(suite: str | Path | Suite, keys: list[str] | None = None,
                 tasks_file: str | Path | None = None) -> list[EvalTask]:
    """The suite's tasks, or the named subset (in the order given), refusing unknown keys."""
    return get_suite(suite, tasks_file=tasks_file).select(keys)
