"""The project's error types, and the one mapping from any failure to the CLI's one-line message.

A user mistake (``DataCompError``, a file that does not decode, a missing optional package) exits 2;
an environment fault (disk full, read-only or unwritable output, quota, too many open files) exits 1.
Both print one ``error:`` line naming the file and the fix; ``-v`` adds the traceback.
"""

from __future__ import annotations

import errno
import os

EXIT_USER = 2
EXIT_ENVIRONMENT = 1


class DataCompError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag).

    The CLI prints ``error: <message>`` and exits non-zero without a traceback, so the message must
    say which file, row, field or flag is wrong and what to do about it.
    """

    exit_code = EXIT_USER

    def __init__(self, *args: object):
        # one line by construction: a message built from another library's text may hold newlines
        if args and isinstance(args[0], str) and ("\n" in args[0] or "\r" in args[0]):
            args = (" ".join(line.strip() for line in args[0].splitlines() if line.strip()), *args[1:])
        super().__init__(*args)


class MissingDependencyError(DataCompError):
    """An optional dependency is not installed; the message names the install command."""

    def __init__(self, package: str, extra: str | None = None, why: str = ""):
        cmd = f'pip install "datacomp[{extra}]"' if extra else f"pip install {package}"
        reason = f" ({why})" if why else ""
        super().__init__(f"{package} is required{reason}: run `{cmd}`")


# errno -> (what happened, what to do). The environment's faults: exit 1.
_ENVIRONMENT = {
    errno.ENOSPC: ("no space left on device",
                   "free space on that disk (or choose an output on another disk) and re-run: completed work is kept"),
    errno.EDQUOT: ("disk quota exceeded",
                   "free space within your quota (or write elsewhere) and re-run: completed work is kept"),
    errno.EROFS: ("read-only file system", "choose a writable output directory"),
    errno.EACCES: ("permission denied", "fix the permissions (or choose a path you can write) and re-run"),
    errno.EPERM: ("operation not permitted", "fix the permissions (or choose a path you can write) and re-run"),
    errno.EMFILE: ("too many open files",
                   "raise the limit (`ulimit -n 65536`) or use fewer --workers, then re-run"),
    errno.ENFILE: ("too many open files on this system", "close other programs or use fewer --workers, then re-run"),
    errno.EIO: ("input/output error", "check the disk or mount, then re-run"),
}
ENVIRONMENT_ERRNOS = frozenset(_ENVIRONMENT)
# A path the user named that is not there / not a file: their mistake, exit 2.
_USER = {
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.ENOTDIR: ("not a directory", "check the path"),
    errno.EISDIR: ("is a directory, not a file", "give a file path"),
    errno.ENAMETOOLONG: ("file name too long", "choose a shorter path"),
}
# Exceptions that mean "this file is not what it should be" (matched by name: nothing is imported).
_DECODE = {
    "builtins.UnicodeDecodeError", "builtins.UnicodeError", "json.decoder.JSONDecodeError",
    "PIL.UnidentifiedImageError", "PIL.Image.DecompressionBombError", "pyarrow.lib.ArrowInvalid",
    "pyarrow.lib.ArrowTypeError", "_pickle.UnpicklingError", "pickle.UnpicklingError", "zipfile.BadZipFile",
    "tarfile.TarError", "tokenize.TokenError", "yaml.error.YAMLError", "tomllib.TOMLDecodeError",
    "safetensors_rust.SafetensorError",
}
# Top-level module -> the extra that installs it.
EXTRAS = {"ray": "ray", "s3fs": "remote", "gcsfs": "remote", "pandas": "bench", "clip_benchmark": "dev",
          "hypothesis": "dev", "moto": "dev", "pytest": "dev"}
_MAX = 400


def one_line(text: object, limit: int = _MAX) -> str:
    """``text`` as one line (newlines folded), cut to ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _chain(exc: BaseException):
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or getattr(e, "cause", None) or e.__context__


def _names(exc: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}


def os_error_line(e: OSError) -> str:
    what, fix = _ENVIRONMENT.get(e.errno) or _USER.get(e.errno) or (e.strerror or type(e).__name__, "")
    paths = [p for p in (e.filename, e.filename2) if p is not None]
    where = (" -> ".join(os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in paths) + ": ") if paths else ""
    return one_line(f"{where}{what}" + (f"; {fix}" if fix else ""))


def _short_write(e: BaseException) -> bool:
    """numpy's ``tofile`` reports a full disk as ``OSError("N requested and M written")``, without errno."""
    return isinstance(e, OSError) and e.errno is None and "requested and" in str(e) and "written" in str(e)


def _probe(path: str | os.PathLike[str] | None) -> int | None:
    """For an OSError that lost its errno: is the file system at ``path`` read-only or (nearly) full?"""
    if path is None:
        return None
    p = os.path.abspath(os.fspath(path))
    while p and not os.path.exists(p):
        p = os.path.dirname(p) if os.path.dirname(p) != p else ""
    try:
        st = os.statvfs(p or "/")
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if st.f_bavail * st.f_frsize < max(1 << 20, st.f_blocks * st.f_frsize // 100):
        return errno.ENOSPC
    return None


def describe(exc: BaseException, output: str | os.PathLike[str] | None = None) -> tuple[str, int] | None:
    """The one-line message and exit code for ``exc``, or None for an unexpected error (a bug).

    An environment fault anywhere in the exception's chain wins (a library that turns a full disk
    into its own ``RuntimeError`` still reports the full disk). ``output`` (the step's output
    location) is named when the error itself names no file.
    """
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _ENVIRONMENT:
            line = os_error_line(e)
            if e.filename is None and output is not None:
                line = one_line(f"{os.fspath(output)}: {line}")
            return line, EXIT_ENVIRONMENT
        if _short_write(e):
            where = e.filename or output
            code = _probe(where) or errno.ENOSPC
            return os_error_line(OSError(code, os.strerror(code), where)), EXIT_ENVIRONMENT
    if isinstance(exc, DataCompError):
        return one_line(exc, 2000), getattr(exc, "exit_code", EXIT_USER)
    if isinstance(exc, ImportError):
        mod = (exc.name or "").split(".")[0]
        if mod and mod != "datacomp":  # our own module failing to import is a bug: keep the traceback
            extra = EXTRAS.get(mod)
            cmd = f'pip install "datacomp[{extra}]"' if extra else f"pip install {mod}"
            return one_line(f"the optional package {mod!r} is not installed (or failed to import): run `{cmd}`"
                            + (f" (it is in the {extra!r} extra)" if extra else "")), EXIT_USER
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller --batch-size or fewer --workers, or a machine with more memory", \
            EXIT_ENVIRONMENT
    if isinstance(exc, OSError) and exc.errno in _USER:
        return os_error_line(exc), EXIT_USER
    if _names(exc) & _DECODE:
        where = getattr(exc, "filename", None)
        where = f"{os.fspath(where)}: " if isinstance(where, str | os.PathLike) else ""
        return one_line(f"{where}cannot decode an input file ({type(exc).__name__}: {one_line(exc, 200)}); "
                        "check that the input is complete and in the expected format, or re-create it "
                        "(-v shows where it was read)"), EXIT_USER
    if isinstance(exc, OSError) and exc.errno is not None:
        return os_error_line(exc), EXIT_ENVIRONMENT
    return None
