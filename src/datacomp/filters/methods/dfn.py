"""Data filtering networks (Fang et al. 2023, "Data Filtering Networks", arXiv 2309.17425, ICLR'24).

The CLIP score of each image-caption pair computed by a *filtering network*: a CLIP model trained on
high-quality data, not the pool's scoring model. The model is any spec :func:`datacomp.models.resolve_model`
accepts (``--param dfn.model=ViT-B-32:openai``, ``ViT-B-32:/path/epoch.pt``, ``hf-hub:apple/DFN2B-CLIP-ViT-L-14``);
it re-embeds the images (read from the pool's shards, ``--shards-dir``) and the captions, so the
signal costs one forward pass per sample. Default: the embedded world's filtering network
``datacomp-ref-dfn``, the l14 scorer's architecture and recipe trained on curated pairs only (the
world's clean set without its text cards; never the pool): ``datacomp synth train-reference
--work-dir W --which dfn`` reproduces its shipped weights.
Rows without an image get NaN, which no cut keeps.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from typing import Any

import numpy as np

from datacomp.filters.methods.common import register_rank_filter
from datacomp.filters.registry import register_signal
from datacomp.filters.signals import SignalConfig, SignalInputs

DEFAULT_MODEL = "datacomp-ref-dfn"
BATCH = 64


def _model_spec(cfg: SignalConfig) -> str:
    return str(cfg.option("dfn.model", DEFAULT_MODEL))


def _fingerprint(cfg: SignalConfig) -> str:
    return model_fingerprint(_model_spec(cfg))


def model_fingerprint(spec: str) -> str:
    """The spec's name and hash; a checkpoint file's size and mtime too, so new weights are new scores."""
    name = "".join(ch if ch.isalnum() else "_" for ch in spec.split("/")[-1])[:40]
    key = spec
    weights = spec.partition(":")[2] or spec
    if os.path.isfile(weights):
        st = os.stat(weights)
        key += f":{st.st_size}:{st.st_mtime_ns}"
    return f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


@cache
def _model(spec: str) -> Any:
    from datacomp.models import resolve_model

    lm = resolve_model(spec)
    lm.model.eval()
    return lm


def dfn_scores(spec: str, images: list[np.ndarray | None], texts: list[str], batch: int = BATCH) -> np.ndarray:
    """Cosine similarity of each (image, caption) under the model ``spec``; NaN where the image is None."""
    import torch
    from PIL import Image

    lm = _model(spec)
    out = np.full(len(texts), np.nan, np.float32)
    with torch.no_grad():
        for a in range(0, len(texts), batch):
            pos = [i for i in range(a, min(a + batch, len(texts))) if images[i] is not None]
            if not pos:
                continue
            x = torch.stack([lm.preprocess_val(Image.fromarray(images[i])) for i in pos]).to(lm.device)
            tok = lm.tokenizer([texts[i] for i in pos]).to(lm.device)
            fi = torch.nn.functional.normalize(lm.model.encode_image(x).float(), dim=-1)
            ft = torch.nn.functional.normalize(lm.model.encode_text(tok).float(), dim=-1)
            out[pos] = (fi * ft).sum(-1).cpu().numpy()
    return out


@register_signal("dfn", {"dfn_score": "float32"}, meta=("text",), images=True, params=_fingerprint, version="1",
                 on_demand=True,
                 description="CLIP score from a filtering network (--param dfn.model=SPEC; images from the shards)")
def dfn(x: SignalInputs) -> dict[str, object]:
    from datacomp.filters.pixels import decode_rgb

    texts = [t or "" for t in x.column("text").to_pylist()]
    images = [decode_rgb(b) for b in x.image_bytes()]
    return {"dfn_score": dfn_scores(_model_spec(x.cfg), images, texts)}


register_rank_filter("dfn", lambda p: "dfn_score",
                     "DFN (Fang et al. 2023): top --fraction by a filtering network's CLIP score (--param dfn.model)")
