"""Which model to evaluate: from a training output folder (ours or the original's) or explicit flags.

The model is identified by architecture + checkpoint sha256 (``fingerprint``): that keys the text
classifier cache and guards resume (results in an output folder belong to one model).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datacomp.errors import DataCompError
from datacomp.io import sha256_file
from datacomp.models import is_pretrained_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    checkpoint: Path | None
    fingerprint: str
    scale: str | None = None
    info_pkl: Path | None = None


def _from_record(rec_path: Path) -> tuple[str, Path | None, str | None]:
    try:
        rec = json.loads(rec_path.read_text())
    except json.JSONDecodeError as e:
        raise DataCompError(f"{rec_path}: not valid JSON ({e})") from None
    cfg = rec.get("config") or {}
    model = cfg.get("model") or rec.get("model")
    if not model:
        raise DataCompError(f"{rec_path}: no config.model field; pass --model and --checkpoint instead")
    ckpt = rec.get("checkpoint") or (rec.get("outputs") or {}).get("checkpoint")
    return model, Path(ckpt) if ckpt else None, cfg.get("scale") or rec.get("scale")


def _from_info_pkl(path: Path) -> tuple[str, Path | None, str | None]:
    try:
        with open(path, "rb") as f:
            info: dict[str, Any] = pickle.load(f)  # noqa: S301 - the user's own training output
    except ModuleNotFoundError as e:
        raise DataCompError(f"{path}: needs module {e.name!r} to unpickle (install it, e.g. cloudpathlib)") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise DataCompError(f"{path}: not a readable info.pkl ({type(e).__name__}: {e})") from None
    model = (info.get("scale_config") or {}).get("model")
    if not model:
        raise DataCompError(f"{path}: has no scale_config.model; pass --model and --checkpoint instead")
    ckpt = info.get("checkpoint")
    return model, Path(str(ckpt)) if ckpt is not None else None, info.get("scale")


def _train_dir(d: Path) -> Path:
    """``d`` itself, or its single experiment sub-folder holding a record (``train --output-dir`` level)."""
    if (d / "train_record.json").is_file() or (d / "info.pkl").is_file():
        return d
    subs = [p for p in sorted(d.iterdir()) if (p / "train_record.json").is_file() or (p / "info.pkl").is_file()] \
        if d.is_dir() else []
    if len(subs) == 1:
        return subs[0]
    if not d.is_dir():
        raise DataCompError(f"{d}: training output folder not found")
    raise DataCompError(
        f"{d}: holds no train_record.json or info.pkl" + (f" (several experiments: {', '.join(p.name for p in subs)};"
                                                          " pass one)" if subs else "")
    )


def resolve_model(
    model: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    train_output_dir: str | os.PathLike[str] | None = None,
) -> ModelSpec:
    """Model name and checkpoint from flags or a training folder (``train_record.json`` or ``info.pkl``)."""
    scale = info_pkl = None
    ckpt = Path(checkpoint) if checkpoint else None
    if train_output_dir is not None:
        d = _train_dir(Path(train_output_dir))
        rec = d / "train_record.json"
        pkl = d / "info.pkl"
        rec_model, rec_ckpt, scale = _from_record(rec) if rec.is_file() else _from_info_pkl(pkl)
        info_pkl = pkl if pkl.is_file() else None
        model = model or rec_model
        if ckpt is None:
            ckpt = rec_ckpt
            if ckpt is None or not ckpt.is_file():
                fallback = d / "checkpoints" / "epoch_latest.pt"
                if not fallback.is_file():
                    raise DataCompError(f"{d}: checkpoint {ckpt} not found and no checkpoints/epoch_latest.pt")
                ckpt = fallback
    if not model:
        raise DataCompError("no model to evaluate: pass --train-output-dir, or --model (and --checkpoint)")
    if ckpt is None and is_pretrained_spec(model) and not model.startswith(("hf-hub:", "local-dir:")):
        name, _, tag = model.partition(":")
        if Path(tag).is_file():  # ViT-B-32:/path/epoch_latest.pt
            model, ckpt = name, Path(tag)
    if ckpt is not None and not ckpt.is_file():
        raise DataCompError(f"{ckpt}: checkpoint not found")
    if ckpt is not None:
        fp = f"{model}|sha256:{sha256_file(ckpt)}"
    else:  # a pretrained tag / hub id names its weights; a bare architecture is random-init
        fp = f"{model}|pretrained" if is_pretrained_spec(model) else f"{model}|random-init-seed0"
    return ModelSpec(model, ckpt, fp, scale, info_pkl)
