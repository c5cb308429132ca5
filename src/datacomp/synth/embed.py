"""The embedded world's reference CLIP models ("b32" and "l14" stand-ins) and batch embedding.

The models themselves (configs, packaged fp16 weights in ``datacomp/model_weights/``, loading) live in
:mod:`datacomp.models`, which any step may use by name (``datacomp-ref-b32``); this module adds the
world's own 32-px uint8 image path.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from datacomp.models import REFERENCE_MODELS, REFERENCE_WEIGHTS_DIR, embed_texts, load_reference, torch_threads
from datacomp.models import reference_weights_path as weights_path

log = logging.getLogger(__name__)

WEIGHTS_DIR = REFERENCE_WEIGHTS_DIR
_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
__all__ = ["REFERENCE_MODELS", "WEIGHTS_DIR", "cosine", "embed_all", "embed_images", "embed_texts", "load_reference",
           "to_tensor", "torch_threads", "weights_path"]


def to_tensor(images: np.ndarray) -> Any:
    """uint8 (n, 32, 32, 3) -> normalised float tensor (n, 3, 32, 32), as open_clip's preprocess does."""
    import torch

    x = (images.astype(np.float32) / 255.0 - _MEAN) / _STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def embed_images(lm: Any, images: np.ndarray, batch: int = 512) -> np.ndarray:
    """L2-normalised float32 image embeddings of uint8 32x32 images."""
    import torch

    out = []
    with torch.no_grad():
        for a in range(0, len(images), batch):
            f = lm.model.encode_image(to_tensor(images[a: a + batch]))
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, lm.model.text_projection.shape[1]), np.float32)


def embed_all(images: np.ndarray, texts: list[str], threads: int = 1) -> dict[str, np.ndarray]:
    """``b32_img``, ``b32_txt``, ``l14_img``, ``l14_txt`` (float32, L2-normalised)."""
    out = {}
    with torch_threads(threads):
        for which in REFERENCE_MODELS:
            lm = load_reference(which)
            out[f"{which}_img"] = embed_images(lm, images)
            out[f"{which}_txt"] = embed_texts(lm, texts)
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two L2-normalised embedding matrices, float32."""
    return np.einsum("ij,ij->i", a.astype(np.float32), b.astype(np.float32)).astype(np.float32)
