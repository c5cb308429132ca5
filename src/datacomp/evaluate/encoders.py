"""The model side of evaluation: batched image and text encoding, and cached zero-shot classifiers.

The text side (zero-shot classifiers) is cached in memory per (model fingerprint, class names,
templates), and optionally on disk, so re-evaluating the same model, or tasks sharing class names
(ImageNet and its shifts), costs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datacomp.io import atomic_path

_CLASSIFIER_CACHE: dict[str, Any] = {}


def _autocast(device: str, enabled: bool) -> Any:
    return torch.autocast("cuda") if enabled and device.startswith("cuda") else contextlib.nullcontext()


def encode_texts(loaded: Any, texts: list[str], normalize: bool = True, amp: bool = True,
                 chunk: int = 512) -> Any:
    """Text embeddings (float32, rows L2-normalised unless told otherwise), encoded in bounded chunks."""
    import torch.nn.functional as F

    out = []
    with torch.inference_mode():
        for s in range(0, len(texts), chunk):
            tok = loaded.tokenizer(texts[s:s + chunk]).to(loaded.device)
            with _autocast(loaded.device, amp):
                e = loaded.model.encode_text(tok)
            e = e.float()
            out.append(F.normalize(e, dim=-1) if normalize else e)
    return torch.cat(out) if out else torch.zeros(0)


def encode_images(loaded: Any, images: list[Any], normalize: bool = True, amp: bool = False) -> Any:
    """Image embeddings of preprocessed tensors (float32, L2-normalised unless told otherwise)."""
    import torch.nn.functional as F

    x = torch.stack(images).to(loaded.device)
    with torch.inference_mode(), _autocast(loaded.device, amp):
        f = loaded.model.encode_image(x)
    f = f.float()
    return F.normalize(f, dim=-1) if normalize else f


def zero_shot_classifier(loaded: Any, classnames: list[str], templates: list[str], fingerprint: str,
                         cache_dir: Path | None = None) -> Any:
    """``(d, C)`` class weights: per class, normalised template embeddings averaged and re-normalised.

    Cached in memory and (with ``cache_dir``) on disk under a hash of the model fingerprint, class
    names and templates.
    """
    h = hashlib.sha256("\x1e".join([fingerprint, "\x1f".join(classnames), "\x1f".join(templates)]).encode())
    key = h.hexdigest()[:32]
    disk = cache_dir / f"classifier-{key}.npy" if cache_dir else None
    w = _CLASSIFIER_CACHE.get(key)
    if w is None and disk is not None and disk.is_file():
        try:
            w = torch.from_numpy(np.load(disk, allow_pickle=False))
        except (ValueError, OSError, EOFError):  # a damaged cache entry is rebuilt, not trusted
            disk.unlink(missing_ok=True)
    if w is None:
        texts = [t.format(c=c) for c in classnames for t in templates]
        emb = encode_texts(loaded, texts).reshape(len(classnames), len(templates), -1)
        w = emb.mean(dim=1)
        w = (w / w.norm(dim=-1, keepdim=True)).T.contiguous().cpu()
    if disk is not None and not disk.is_file():
        with atomic_path(disk) as tmp, open(tmp, "wb") as f:
            np.save(f, w.numpy())
    _CLASSIFIER_CACHE[key] = w
    return w.to(loaded.device)
