"""The embedded world's reference CLIP models ("b32" and "l14" stand-ins) and batch embedding.

Their weights ship in ``datacomp/synth/weights/<which>.safetensors`` (fp16). Without them (only
while retraining from scratch) a fixed-seed random initialisation is used so formats stay right.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
REFERENCE_MODELS: dict[str, str] = {"b32": "datacomp-ref-b32", "l14": "datacomp-ref-l14"}
_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def weights_path(which: str) -> Path:
    return WEIGHTS_DIR / f"{which}.safetensors"


@cache
def load_reference(which: str) -> Any:
    """The ``LoadedModel`` of a reference model (cached per process)."""
    import torch

    from datacomp.models import load_model

    path = weights_path(which)
    if path.is_file():
        return load_model(REFERENCE_MODELS[which], checkpoint=path)
    log.warning("%s: no reference weights, using a fixed-seed random initialisation", path)
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    try:
        return load_model(REFERENCE_MODELS[which])
    finally:
        torch.random.set_rng_state(state)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``n`` torch threads, then restore the caller's setting.

    Small models on a shared 2-core machine run many times faster on one thread than on two that
    spin-wait for each other (measured: 300 vs 14 samples/s under load), so embedding uses one.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


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


def embed_texts(lm: Any, texts: list[str], batch: int = 1024) -> np.ndarray:
    """L2-normalised float32 text embeddings; each distinct caption is encoded once."""
    import torch

    uniq, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    out = []
    with torch.no_grad():
        for a in range(0, len(uniq), batch):
            tok = lm.tokenizer(list(uniq[a: a + batch]))
            f = lm.model.encode_text(tok)
            out.append(torch.nn.functional.normalize(f.float(), dim=-1).numpy())
    emb = np.concatenate(out) if out else np.zeros((0, 1), np.float32)
    return emb[inverse.reshape(-1)]


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
