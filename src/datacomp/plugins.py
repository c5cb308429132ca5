"""Importing a user's plug-in file (a filter, a signal, an evaluation family): one loader for every registry."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from datacomp.errors import DataCompError


def import_file(path: str | Path, kind: str = "plugin") -> ModuleType:
    """Import ``path`` as a module once per process (it registers what it defines when imported).

    A missing file, or one that raises on import, is one error naming the file.
    """
    p = Path(path).resolve()
    if not p.is_file():
        raise DataCompError(f"{p}: {kind} file not found")
    mod_name = f"datacomp_user_{kind.replace(' ', '_')}_{abs(hash(str(p)))}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, p)
    if spec is None or spec.loader is None:
        raise DataCompError(f"{p}: not an importable Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 - a user's file may raise anything on import
        del sys.modules[mod_name]
        raise DataCompError(f"{p}: importing the {kind} failed ({type(e).__name__}: {e})") from None
    return mod
