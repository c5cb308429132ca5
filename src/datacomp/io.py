"""Atomic writes and provenance records: nothing half-written ever sits under a final name."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from datacomp import __version__, storage

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary local path; publish it as ``final`` only if the block completes.

    ``final`` may be a local path or any storage URL (``s3://...``): the one implementation is
    :meth:`datacomp.storage.Location.atomic_path` (a rename locally, an upload of a local spool file
    remotely). On any exception the temporary file (or directory) is removed and ``final`` is untouched.
    """
    try:
        with storage.atomic_path(final) as tmp:
            yield tmp
    except OSError as e:
        if e.errno is not None and e.filename is None:
            e.filename = str(final)  # a failed write() names no file: name the one being written
        raise


def lock_path(output: str | os.PathLike[str]) -> Path:
    """The lock file of an output file or directory: a hidden sibling, ``.<name>.lock``."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


def _is_url(path: str | os.PathLike[str] | storage.Location) -> bool:
    """``s3://...``-style locations (also as ``Path`` collapses them, ``s3:/...``); not ``C:/``."""
    if isinstance(path, storage.Location):
        return not path.is_local
    head = os.fspath(path).split(":/", 1)
    return len(head) == 2 and len(head[0]) > 1 and head[0].isalnum() and "/" not in head[0]


@contextlib.contextmanager
def output_lock(output: str | os.PathLike[str] | storage.Location,
                lock: str | os.PathLike[str] | storage.Location | None = None) -> Iterator[Path | None]:
    """Hold an exclusive lock on ``output`` for the block (one run per output file or directory).

    ``lock``: the lock file (default :func:`lock_path`). An ``flock`` is released by the OS when its
    holder dies, even on SIGKILL, so a dead run's lock is taken over at once; the file holds the
    holder's pid for the message and is removed on release. A second run gets a one-line
    :class:`~datacomp.errors.DataCompError` (the CLI exits 2).
    """
    import errno
    import fcntl

    from datacomp.errors import ENVIRONMENT_ERRNOS, DataCompError

    if _is_url(output):  # a remote store: no local lock file can guard it
        yield None
        return
    output = Path(output)
    lock = Path(lock) if lock is not None else lock_path(output)
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno in ENVIRONMENT_ERRNOS:
                raise  # read-only, full, no permission: the CLI's environment line (exit 1) names the lock
            raise DataCompError(
                f"{lock}: cannot create the lock file of {output} ({e.strerror}); make its folder writable "
                "or choose another output"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            held = e.errno in (errno.EAGAIN, errno.EACCES)
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() if held else ""
            os.close(fd)
            if not held:  # a file system without locks (ENOLCK): run unlocked rather than refuse
                yield lock
                return
            who = f", pid {pid}" if pid.isdigit() else ""
            raise DataCompError(
                f"another run holds this output ({output}{who}); wait for it or remove {lock} if it died"
            ) from None
        try:  # the previous holder may have removed the file between our open and lock: retry then
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def locks_output(param: str) -> Callable[[F], F]:
    """Decorator: the call holds :func:`output_lock` on its argument ``param`` (an output path)."""

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            target = sig.bind(*args, **kwargs).arguments[param]
            with output_lock(target if _is_url(target) else Path(target).resolve()):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    storage.as_location(path).write_bytes(data)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Write JSON atomically; refuses NaN/inf so every file we write is valid JSON."""
    text = json.dumps(obj, indent=indent, allow_nan=False, default=_json_default)
    write_bytes_atomic(path, (text + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, Path | storage.Location):
        return str(o)
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def file_fingerprint(path: str | os.PathLike[str], full_hash: bool = False) -> dict[str, Any]:
    """Size and mtime (cheap), plus sha256 when asked: enough to tell whether an input changed."""
    loc = storage.as_location(path)
    info = loc.info()
    fp: dict[str, Any] = {"path": loc.url, "bytes": info["bytes"],
                          "mtime": int(info["mtime"]) if info["mtime"] is not None else None}
    if full_hash:
        fp["sha256"] = sha256_file(path)
    return fp


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with storage.as_location(path).open("rb") as f:
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

    Refuses bytes that are not UTF-8, text that is not JSON (``NaN`` and ``Infinity`` included: every
    JSON file we write is strict), and a top-level value that is not ``expect``.
    """
    from datacomp.errors import DataCompError

    def strict(token: str) -> Any:
        raise ValueError(f"{token} is not a JSON number")

    p = storage.as_location(path)
    try:
        value = json.loads(p.read_bytes().decode("utf-8"), parse_constant=strict)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataCompError(f"{p}: not valid JSON ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(value, expect):
        raise DataCompError(f"{p}: expected a JSON {expect.__name__}, found {type(value).__name__}; {fix}")
    return value
