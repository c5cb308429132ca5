"""``eval_results.jsonl``: the one reader and the one writer of the evaluation results file.

Line format as the original: ``{"key": ..., "dataset": ..., "metrics": {..., "main_metric": ...}}``.
Every consumer (evaluate's resume, aggregate, report, leaderboard, submit) reads through
:func:`read_results`, so there is one rule for every line: JSON ``NaN``/``Infinity`` tokens (which the
original wrote) read as ``None``, and a line that is not an object with a string ``key`` (or
``dataset``), a ``metrics`` object of scalars and a numeric-or-null ``main_metric`` is damaged.

Writing (:class:`ResultsFile`) holds the project's output lock (:func:`datacomp.io.output_lock`, on
``.eval_results.jsonl.lock`` beside the file) for the whole run, so a second ``evaluate`` on the same
folder stops at once with one line instead of appending duplicate lines, and replaces the file
atomically after each finished task (temporary name, then rename): a
kill at any point leaves the previous complete file. A damaged file found at the start of a run is
repaired: each bad line is reported and dropped (the original bytes are kept in
``eval_results.jsonl.damaged``) and its task runs again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from datacomp.errors import DataCompError
from datacomp.io import write_bytes_atomic

log = logging.getLogger(__name__)

RESULTS_NAME = "eval_results.jsonl"
DAMAGED_SUFFIX = ".damaged"


def sanitize(obj: Any) -> Any:
    """Plain JSON values: numpy/torch scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [sanitize(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_line(raw: bytes) -> dict[str, Any] | str:
    """One line as a result object, or the reason it is damaged."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    try:
        row = json.loads(text, parse_constant=lambda _c: None)
    except (json.JSONDecodeError, RecursionError) as e:
        return f"not a JSON line ({getattr(e, 'msg', 'nested too deeply')})"
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    key, name = row.get("key"), row.get("dataset")
    if key is None and name is None:
        return "no 'key' (or 'dataset') field"
    for field, v in (("key", key), ("dataset", name)):
        if v is not None and not (isinstance(v, str) and v):
            return f"'{field}' is {type(v).__name__} {str(v)[:40]!r}, not a task name"
    metrics = row.get("metrics")
    if not isinstance(metrics, dict):
        return f"'metrics' is {type(metrics).__name__}, not an object"
    for k, v in metrics.items():
        if v is not None and not _is_number(v) and not isinstance(v, str):
            return f"metric {k!r} is a {type(v).__name__}, not a number"
    if "main_metric" in metrics and metrics["main_metric"] is not None and not _is_number(metrics["main_metric"]):
        return "'main_metric' is not a number or null"
    return row


def row_key(row: dict[str, Any]) -> str:
    """The task a line belongs to (``key``, else the original's display name)."""
    return str(row.get("key") or row["dataset"])


def scan_results(path: Path) -> tuple[list[tuple[int, bytes, dict[str, Any]]], list[tuple[int, str]]]:
    """``([(line number, raw line, row)], [(line number, why damaged)])``; blank lines are ignored."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataCompError(f"{path}: cannot read evaluation results ({e.strerror})") from None
    good: list[tuple[int, bytes, dict[str, Any]]] = []
    bad: list[tuple[int, str]] = []
    lines = data.split(b"\n")
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        if i == len(lines):  # no newline after the last line: a write cut short
            bad.append((i, "cut off (no newline at the end)"))
            continue
        row = parse_line(raw)
        if isinstance(row, str):
            bad.append((i, row))
        else:
            good.append((i, raw, row))
    return good, bad


def read_results(path: str | os.PathLike[str], require: bool = False) -> list[dict[str, Any]]:
    """The lines of an ``eval_results.jsonl`` (ours or the original's), in file order.

    A damaged line is one error naming the line and the fix; ``require`` also refuses a file with none.
    """
    p = Path(path)
    if not p.is_file():
        raise DataCompError(f"{p}: results file not found; run `datacomp evaluate` first")
    good, bad = scan_results(p)
    if bad:
        i, why = bad[0]
        more = f" (and {len(bad) - 1} more damaged line(s))" if len(bad) > 1 else ""
        raise DataCompError(f"{p}:{i}: {why}{more}; re-run `datacomp evaluate` on this folder (it drops damaged "
                            "lines and evaluates their tasks again) or delete the line")
    if require and not good:
        raise DataCompError(f"{p}: no evaluation results; run `datacomp evaluate` first")
    return [row for _, _, row in good]


def encode_line(line: dict[str, Any]) -> bytes:
    return (json.dumps(line, allow_nan=False) + "\n").encode()


class ResultsFile:
    """The results of one output folder, keyed by task (the last line of a key wins), written under a lock.

    Use as a context manager: entering takes the file's output lock (or stops with one line naming the
    file when another run holds it) and loads the file, repairing it when damaged.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.raw: dict[str, bytes] = {}
        self.lines: dict[str, dict[str, Any]] = {}
        self.dropped: list[tuple[int, str]] = []
        self._lock: Any = None

    def __enter__(self) -> ResultsFile:
        self._acquire()
        try:
            self._load()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release()

    def _acquire(self) -> None:
        from datacomp.io import output_lock

        stack = contextlib.ExitStack()
        stack.enter_context(output_lock(self.path))  # one-line error naming the file when another run holds it
        self._lock = stack

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _load(self) -> None:
        if not self.path.is_file():
            return
        good, bad = scan_results(self.path)
        for _, raw, row in good:
            k = row_key(row)
            self.raw.pop(k, None)  # a repeated key: the last line wins and moves to its place
            self.raw[k] = raw + b"\n"
            self.lines.pop(k, None)
            self.lines[k] = row
        repeated = len(good) - len(self.lines)
        if bad or repeated:
            self.dropped = bad
            backup = self.path.with_name(self.path.name + DAMAGED_SUFFIX)
            write_bytes_atomic(backup, self.path.read_bytes())
            for i, why in bad:
                log.warning("%s:%d: dropped a damaged line (%s); its task is evaluated again", self.path, i, why)
            if repeated:
                log.warning("%s: %d repeated task line(s); kept the last of each", self.path, repeated)
            log.warning("%s: repaired (the damaged file is kept as %s)", self.path, backup.name)
            self._write()

    def _write(self) -> None:
        write_bytes_atomic(self.path, b"".join(self.raw.values()))

    def put(self, line: dict[str, Any]) -> None:
        """Add (or replace) one task's line; the file is replaced atomically."""
        k = row_key(line)
        self.raw.pop(k, None)
        self.lines.pop(k, None)
        self.raw[k] = encode_line(line)
        self.lines[k] = line
        self._write()

    def drop(self, keys: list[str]) -> None:
        """Remove the lines of tasks about to be re-run (``--force``), atomically."""
        drop = set(keys)
        if not drop & set(self.raw):
            return
        self.raw = {k: v for k, v in self.raw.items() if k not in drop}
        self.lines = {k: v for k, v in self.lines.items() if k not in drop}
        self._write()
