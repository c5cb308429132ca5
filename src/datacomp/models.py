"""open_clip models the project uses: our model configs, checkpoint loading, packaged reference weights.

The project's model configs (the ``tiny`` scale's model and the embedded world's reference models)
are JSON files in ``model_configs/``, registered with open_clip on first use, so they are created
with ``open_clip.create_model_and_transforms`` like any built-in architecture.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from datacomp.errors import DataCompError

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


@cache
def register_model_configs() -> None:
    """Make our JSON configs known to open_clip (idempotent)."""
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass
class LoadedModel:
    name: str
    model: Any  # open_clip.CLIP
    preprocess_train: Any
    preprocess_val: Any
    tokenizer: Any
    device: str


def available_models() -> list[str]:
    import open_clip

    register_model_configs()
    return open_clip.list_models()


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Weights from an open_clip checkpoint (``.pt`` with ``state_dict``, DDP prefixes) or ``.safetensors``.

    ``.pt`` files are read with ``torch.load(weights_only=True)``: tensors and plain values only, so a
    crafted checkpoint cannot run code; anything else in it is refused in one line.
    """
    import pickle

    import torch

    p = Path(path)
    if not p.is_file():
        raise DataCompError(f"{p}: checkpoint not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(p))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise DataCompError(f"{p}: not a readable .safetensors file ({type(e).__name__})") from None
    else:
        try:
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            import re

            m = re.search(r"GLOBAL ([\w.]+)", str(e))
            detail = f" (e.g. {m.group(1)[:80]})" if m else ""
            raise DataCompError(
                f"{p}: refused: the checkpoint holds objects other than tensors and plain values{detail}, and "
                "loading them could run code; re-save its state_dict (or use .safetensors)"
            ) from None
        except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
            why = str(e).splitlines()[0][:160] if str(e) else ""
            raise DataCompError(f"{p}: not a readable checkpoint ({type(e).__name__}: {why})") from None
        sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DataCompError(f"{p}: checkpoint holds no state_dict of tensors")
    if next(iter(sd), "").startswith("module."):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def check_state_dict(model: Any, sd: dict[str, Any], checkpoint: Any, name: str) -> None:
    """One line when a checkpoint does not fit ``model`` (other keys or other tensor shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise DataCompError(
            f"{checkpoint}: does not match model {name!r} "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys); pass the model it was trained as"
        )
    shapes = [k for k in own if tuple(own[k].shape) != tuple(sd[k].shape)]
    if shapes:
        k = shapes[0]
        raise DataCompError(
            f"{checkpoint}: a checkpoint of another architecture than model {name!r} ({len(shapes)} tensor(s) "
            f"differ in shape, e.g. {k}: {list(sd[k].shape)} here, {list(own[k].shape)} expected); "
            "pass the model it was trained as"
        )


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def quiet_random_init(active: bool = True) -> Iterator[None]:
    """Drop open_clip's "initialized randomly" warning where random init is intended or weights follow."""
    if not active:
        yield
        return
    f = _DropRandomInitWarning()
    logging.getLogger().addFilter(f)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(f)


def load_model(name: str, checkpoint: str | os.PathLike[str] | None = None, device: str = "cpu") -> LoadedModel:
    """Create an open_clip model by config name and load ``checkpoint`` (None: random init)."""
    import open_clip

    register_model_configs()
    if name not in open_clip.list_models():
        raise DataCompError(
            f"unknown model {name!r}: use an open_clip architecture (e.g. ViT-B-32) or one of "
            f"{', '.join(sorted(p.stem for p in MODEL_CONFIG_DIR.glob('*.json')))}"
        )
    with quiet_random_init(checkpoint is not None):
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(name, device=device)
    if checkpoint is not None:
        sd = load_state_dict(checkpoint)
        check_state_dict(model, sd, checkpoint, name)
        model.load_state_dict(sd)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    return LoadedModel(name, model, preprocess_train, preprocess_val, tokenizer, device)
