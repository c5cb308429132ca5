"""Checkpoints in open_clip's format, plus what an exact resume needs; the run's side files.

A checkpoint is open_clip's dict (``epoch``, ``name``, ``state_dict``, ``optimizer``, ``scaler``) so
``open_clip.create_model_and_transforms(model, pretrained=path)`` and open_clip's own ``--resume``
read it, with a ``datacomp`` entry holding the optimiser step, data-stream positions, RNG state and
the run's identity (recipe + data) that a resume must match. Only tensors and plain Python values
are stored, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from datacomp.errors import DataCompError
from datacomp.io import atomic_path

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a run killed mid-write leaves the previous checkpoint intact.

    torch's writer reports a full or read-only disk as ``RuntimeError: [enforce fail at
    inline_container.cc]``; that becomes the ``OSError`` (with the path) the CLI reports in one line.
    """
    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except RuntimeError as e:
        raise _save_error(Path(path), state, e) from e


def _save_error(path: Path, state: dict[str, Any], e: RuntimeError) -> BaseException:
    import errno
    import shutil

    msg = str(e)
    code = next((c for c in (errno.EROFS, errno.EACCES, errno.ENOSPC, errno.EDQUOT) if os.strerror(c) in msg), None)
    if code is None:
        try:
            st = os.statvfs(path.parent)
            need = _tensor_bytes(state)
            if st.f_flag & os.ST_RDONLY:
                code = errno.EROFS
            elif shutil.disk_usage(path.parent).free < need + (1 << 20):  # the partial file is gone by now
                code = errno.ENOSPC
            elif not os.access(path.parent, os.W_OK):
                code = errno.EACCES
        except OSError:
            return e
    if code is None:
        return e
    return OSError(code, f"{os.strerror(code)} while saving a checkpoint", str(path))


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def link_or_copy(src: Path, dst: Path) -> None:
    """``epoch_<E>.pt`` is the same bytes as ``epoch_latest.pt`` at that moment: hard-link it (no extra disk)."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            import shutil

            shutil.copyfile(src, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise DataCompError(
            f"{path}: cannot read checkpoint ({type(e).__name__}); delete it to restart the run, "
            "or pick another --exp-name"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("datacomp", {}), dict):
        raise DataCompError(f"{path}: not a datacomp train checkpoint; delete it to restart the run, "
                            "or pick another --exp-name")
    return ckpt


def identity_diff(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """Human-readable differences between two run identities (nested dicts/lists)."""
    out: list[str] = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += identity_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def write_params(path: Path, params: dict[str, Any]) -> None:
    """open_clip's ``params.txt``: ``name: value`` per argument, sorted."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{k}: {params[k]}\n" for k in sorted(params)))


# What an info.pkl may hold besides plain values (which pickle without globals): paths and ordered dicts.
_PATHS = ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")
_INFO_GLOBALS = frozenset({*(("pathlib", n) for n in _PATHS), *(("pathlib._local", n) for n in _PATHS),
                           ("collections", "OrderedDict"), *((m, n) for m in ("builtins", "__builtin__")
                                                              for n in ("set", "frozenset"))})


class _Refused(Exception):
    pass


class _InfoUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals, so unpickling cannot call anything else (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _INFO_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(ascii(f"{module}.{name}"[:100]))


def read_info_pkl(path: Path) -> dict[str, Any]:
    """An ``info.pkl`` (ours or the original's) read with an allow-list: plain values, paths, dicts only."""
    try:
        with open(path, "rb") as f:
            info = _InfoUnpickler(f).load()
    except _Refused as e:
        raise DataCompError(
            f"{path}: refused: it holds a {e} object, and only plain values and paths are loaded from info.pkl "
            "(anything else could run code); use the run's train_record.json or pass --model and --checkpoint"
        ) from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataCompError(f"{path}: not a readable info.pkl ({type(e).__name__})") from None
    if not isinstance(info, dict):
        raise DataCompError(f"{path}: not an info.pkl (holds a {type(info).__name__}, expected a dict)")
    return info


def write_info_pkl(path: Path, scale: str | None, checkpoint: Path, scale_config: dict[str, Any],
                   data_dir: str) -> None:
    """The original ``info.pkl`` (spec §3.8) that ``evaluate.py`` reads."""
    info = {"scale": scale, "checkpoint": checkpoint, "scale_config": scale_config, "data_dir": Path(data_dir)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(info, f)
