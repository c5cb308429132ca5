"""One rich console for tables: full width in a terminal, never truncated when piped to a file."""

from __future__ import annotations

import sys
from functools import cache

from rich.console import Console


@cache
def console() -> Console:
    piped = not sys.stdout.isatty()
    return Console(width=200 if piped else None, soft_wrap=piped)
