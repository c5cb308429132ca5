"""Which model to evaluate: from a training output folder (ours or the original's) or explicit flags.

The model is identified by architecture + checkpoint sha256 (``fingerprint``): that keys the text
classifier cache and guards resume (results in an output folder belong to one model).
"""

from __future__ import annotations

import json
import logging
import os
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
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataCompError(f"{rec_path}: not valid JSON ({e})") from None
    cfg = rec.get("config") or {} if isinstance(rec, dict) else None
    if not isinstance(cfg, dict):
        raise DataCompError(f"{rec_path}: not a train record (expected a JSON object with a config object)")
    model = cfg.get("model") or rec.get("model")
    if not model or not isinstance(model, str):
        raise DataCompError(f"{rec_path}: no config.model field; pass --model and --checkpoint instead")
    ckpt = rec.get("checkpoint") or (rec.get("outputs") or {}).get("checkpoint")
    return model, _record_checkpoint(rec_path, ckpt), cfg.get("scale") or rec.get("scale")


def _record_checkpoint(rec_path: Path, value: Any) -> Path | None:
    """The record's checkpoint: relative paths are relative to the record's folder; one the record names
    but that is gone is an error, never a silent switch to another checkpoint."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise DataCompError(f"{rec_path}: checkpoint must be a path string, got {type(value).__name__}")
    p = Path(value)
    cands = [p if p.is_absolute() else rec_path.parent / p]
    if p.parent.name == "checkpoints":  # the run folder was moved or the path was relative to another cwd
        cands.append(rec_path.parent / "checkpoints" / p.name)
    for c in cands:
        if c.is_file():
            return c
    raise DataCompError(
        f"{rec_path}: names checkpoint {value}, which is not found (looked at {', '.join(map(str, cands))}); "
        "pass --checkpoint"
    )


def _from_info_pkl(path: Path) -> tuple[str, Path | None, str | None]:
    from datacomp.train.checkpoint import read_info_pkl

    info = read_info_pkl(path)
    cfg = info.get("scale_config")
    model = cfg.get("model") if isinstance(cfg, dict) else None
    if not model or not isinstance(model, str):
        raise DataCompError(f"{path}: has no scale_config.model; pass --model and --checkpoint instead")
    ckpt = info.get("checkpoint")
    scale = info.get("scale")
    return model, Path(str(ckpt)) if ckpt is not None else None, scale if isinstance(scale, str) else None


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
