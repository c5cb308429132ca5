"""``eval_results.jsonl``: append one valid-JSON line per finished task, resume from what is there.

Line format as the original: ``{"key": ..., "dataset": ..., "metrics": {..., "main_metric": ...}}``.
A line is written and fsynced as soon as its task finishes; a crash loses at most the running task.
NaN/inf never reach the file (they become ``null``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from datacomp.errors import DataCompError
from datacomp.io import write_bytes_atomic


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


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Lines of an ``eval_results.jsonl`` (ours or the original's, whose ``NaN`` tokens read as None)."""
    p = Path(path)
    if not p.is_file():
        raise DataCompError(f"{p}: results file not found")
    rows = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=lambda _c: None)
        except json.JSONDecodeError as e:
            raise DataCompError(f"{p}:{i}: not a JSON line ({e.msg}); delete the line to re-run that task") from None
        if not isinstance(row, dict) or "metrics" not in row or not ("key" in row or "dataset" in row):
            raise DataCompError(f"{p}:{i}: expected an object with key, dataset and metrics")
        rows.append(row)
    return rows


class ResultsFile:
    """The results of one output folder, keyed by task key (the last line of a key wins)."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: dict[str, dict[str, Any]] = {}
        if path.is_file():
            self._truncate_partial()
            for row in read_results(path):
                self.lines[row.get("key") or row["dataset"]] = row

    def _truncate_partial(self) -> None:
        """Drop a torn last line (a crash mid-write), so the file stays line-valid."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            write_bytes_atomic(self.path, data[: data.rfind(b"\n") + 1])

    def append(self, line: dict[str, Any]) -> None:
        text = json.dumps(line, allow_nan=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.lines[line["key"]] = line

    def drop(self, keys: list[str]) -> None:
        """Remove the lines of tasks about to be re-run (``--force``), atomically."""
        drop = set(keys)
        self.lines = {k: v for k, v in self.lines.items() if k not in drop}
        write_bytes_atomic(self.path, "".join(json.dumps(v, allow_nan=False) + "\n"
                                              for v in self.lines.values()).encode())
