"""Atomic writes and provenance records: nothing half-written ever sits under a final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datacomp import __version__


def tmp_name(final: Path) -> Path:
    """A temporary sibling of ``final`` (same directory, so the rename is atomic)."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``final`` only if the block completes.

    On any exception the temporary file (or directory) is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as e:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:
            e.filename = str(final)  # a failed write() names no file: name the one being written
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Write JSON atomically; refuses NaN/inf so every file we write is valid JSON."""
    text = json.dumps(obj, indent=indent, allow_nan=False, default=_json_default)
    write_bytes_atomic(path, (text + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_fingerprint(path: str | os.PathLike[str], full_hash: bool = False) -> dict[str, Any]:
    """Size and mtime (cheap), plus sha256 when asked: enough to tell whether an input changed."""
    p = Path(path)
    st = p.stat()
    fp: dict[str, Any] = {"path": str(p), "bytes": st.st_size, "mtime": int(st.st_mtime)}
    if full_hash:
        fp["sha256"] = sha256_file(p)
    return fp


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of what shaped the result, for provenance records."""
    out = {"datacomp": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for mod in ("numpy", "pyarrow", "torch", "open_clip", "webdataset"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            out[mod] = str(m.__version__)
    return out


def write_record(
    path: str | os.PathLike[str],
    step: str,
    config: dict[str, Any],
    counts: dict[str, Any] | None = None,
    inputs: list[dict[str, Any]] | None = None,
    started: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write the provenance record each step leaves beside its outputs: config, counts, timings."""
    now = time.time()
    rec: dict[str, Any] = {
        "step": step,
        "config": config,
        "counts": counts or {},
        "inputs": inputs or [],
        "finished_at": now,
        "seconds": round(now - started, 3) if started else None,
        "versions": versions(),
        **extra,
    }
    write_json_atomic(path, rec)
    return rec


def read_json_file(path: str | os.PathLike[str], fix: str, expect: type = dict) -> Any:
    """A JSON file the user may have damaged: its value, or one ``DataCompError`` naming the file and ``fix``.

    Refuses bytes that are not UTF-8, text that is not JSON, and a top-level value that is not ``expect``.
    """
    from datacomp.errors import DataCompError

    p = Path(path)
    try:
        value = json.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataCompError(f"{p}: not valid JSON ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(value, expect):
        raise DataCompError(f"{p}: expected a JSON {expect.__name__}, found {type(value).__name__}; {fix}")
    return value
