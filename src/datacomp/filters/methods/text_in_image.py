"""T-MARS (Maini et al. 2023, "T-MARS: Improving Visual Representations by Circumventing Text Feature
Learning", arXiv 2307.03132, ICLR'24): how much of an image's match with its caption is text written in it.

Many web images score a high CLIP score only because the caption is written in the image (signs,
posters, book covers, slides): a CLIP model that learned to read matches the letters. T-MARS detects
the text, masks it (fills the boxes with the image's own background colour) and scores the image
again; a pair whose *masked* score stays high shows what it names, a pair whose score collapses was
matched by its letters. The signal writes three columns per row:

- ``text_area``: share of the image's pixels inside detected text boxes (0: no text found);
- ``text_masked_score``: the CLIP score of the masked image with the caption (the T-MARS key);
- ``text_score_drop``: the CLIP score minus the masked score, the part of the match that came from
  text (0 where no text was found).

Text detector: ``--param text_in_image.detector=NAME`` from :mod:`datacomp.filters.methods.textspot`'s
registry (default ``world-font``, the embedded world's font). Scoring model:
``--param text_in_image.model=SPEC``, any :func:`datacomp.models.resolve_model` spec (default
``datacomp-ref-l14``, the world's l14 scorer; at real scale the pool's scorer, ``ViT-L-14:openai``).
The images come from the pool's shards (``--shards-dir``), so the signal costs one detector pass and
one or two image forward passes per sample. Rows without an image get NaN, which no cut keeps.
"""

from __future__ import annotations

import numpy as np

from datacomp.filters.methods.common import register_rank_filter
from datacomp.filters.methods.dfn import dfn_scores, model_fingerprint
from datacomp.filters.methods.textspot import get_text_detector
from datacomp.filters.registry import register_signal
from datacomp.filters.signals import SignalConfig, SignalInputs

DEFAULT_MODEL = "datacomp-ref-l14"
DEFAULT_DETECTOR = "world-font"


def _options(cfg: SignalConfig) -> tuple[str, str]:
    return (str(cfg.option("text_in_image.model", DEFAULT_MODEL)),
            str(cfg.option("text_in_image.detector", DEFAULT_DETECTOR)))


def _fingerprint(cfg: SignalConfig) -> str:
    spec, detector = _options(cfg)
    return f"{model_fingerprint(spec)}-{''.join(c if c.isalnum() else '_' for c in detector)[:24]}"


def detect_text(images: list[np.ndarray | None], detector: str) -> list[np.ndarray | None]:
    """Each image's (h, w) bool text mask under ``detector`` (images of one size go as one batch)."""
    detect = get_text_detector(detector)
    out: list[np.ndarray | None] = [None] * len(images)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        if img is not None:
            by_shape.setdefault(img.shape, []).append(i)
    for rows in by_shape.values():
        masks = np.asarray(detect(np.stack([images[i] for i in rows])), bool)
        for i, m in zip(rows, masks, strict=True):
            out[i] = m
    return out


def mask_text(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``img`` with the masked pixels filled by the median colour of the rest (T-MARS's in-painting)."""
    out = img.copy()
    rest = img[~mask]
    out[mask] = np.median(rest, axis=0).astype(img.dtype) if len(rest) else 127
    return out


def tmars(images: list[np.ndarray | None], texts: list[str], spec: str = DEFAULT_MODEL,
          detector: str = DEFAULT_DETECTOR) -> dict[str, np.ndarray]:
    """``text_area``, ``text_masked_score``, ``text_score_drop`` of each (image, caption) pair."""
    masks = detect_text(images, detector)
    area = np.array([np.nan if m is None else float(m.mean()) for m in masks], np.float32)
    score = dfn_scores(spec, images, texts)
    with_text = [i for i, m in enumerate(masks) if m is not None and m.any()]
    masked = score.copy()
    if with_text:
        sub = [mask_text(images[i], masks[i]) for i in with_text]  # type: ignore[arg-type]
        masked[with_text] = dfn_scores(spec, sub, [texts[i] for i in with_text])  # type: ignore[arg-type]
    return {"text_area": area, "text_masked_score": masked, "text_score_drop": (score - masked).astype(np.float32)}


@register_signal("text_in_image", {"text_area": "float32", "text_masked_score": "float32",
                                   "text_score_drop": "float32"},
                 meta=("text",), images=True, params=_fingerprint, version="1", on_demand=True,
                 description="T-MARS: text found in the image, the CLIP score with it masked, and the drop "
                             "(--param text_in_image.detector=NAME, text_in_image.model=SPEC)")
def text_in_image(x: SignalInputs) -> dict[str, object]:
    from datacomp.filters.pixels import decode_rgb

    texts = [t or "" for t in x.column("text").to_pylist()]
    images = [decode_rgb(b) for b in x.image_bytes()]
    spec, detector = _options(x.cfg)
    return dict(tmars(images, texts, spec, detector))


register_rank_filter("text_in_image", lambda p: "text_masked_score",
                     "T-MARS (Maini et al. 2023): top --fraction by the CLIP score with the image's text "
                     "masked (--param text_in_image.detector, text_in_image.model)")
