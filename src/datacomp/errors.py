"""The project's error types: a user mistake becomes one line naming the file/field and the fix."""

from __future__ import annotations


class DataCompError(Exception):
    """A problem the user can fix (bad input, missing file, wrong flag).

    The CLI prints ``error: <message>`` and exits non-zero without a traceback, so the message must
    say which file, row, field or flag is wrong and what to do about it.
    """


class MissingDependencyError(DataCompError):
    """An optional dependency is not installed; the message names the install command."""

    def __init__(self, package: str, extra: str | None = None, why: str = ""):
        cmd = f'pip install "datacomp[{extra}]"' if extra else f"pip install {package}"
        reason = f" ({why})" if why else ""
        super().__init__(f"{package} is required{reason}: run `{cmd}`")
