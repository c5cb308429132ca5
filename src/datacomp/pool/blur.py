"""Face blurring from ``face_bboxes``, with img2dataset's BoundingBoxBlurrer numerics.

Boxes are ``[x0, y0, x1, y1]`` fractions; each is grown by 10% of its larger side, painted into a mask,
and image and mask are Gaussian-blurred with ``sigma = 0.1 * largest box side``.

Boxes are validated (four finite numbers each) and clipped to the image (``[0, 1]``) first, so a box
reaching far outside the image cannot make the kernel, and the blur's run time, unbounded. Boxes inside
the image blur exactly as in img2dataset; for a box sticking out, the sigma comes from its visible part.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def clean_boxes(bboxes: Any) -> np.ndarray:
    """``(k, 4)`` float64 boxes clipped to ``[0, 1]``; ``ValueError`` saying what is wrong with the row."""
    try:
        arr = np.asarray(bboxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"face_bboxes {str(bboxes)[:60]!r}: expected a list of [x0, y0, x1, y1] number lists"
        ) from None
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"face_bboxes {str(bboxes)[:60]!r}: expected boxes of 4 numbers [x0, y0, x1, y1]")
    if not np.isfinite(arr).all():
        raise ValueError(f"face_bboxes {str(bboxes)[:60]!r}: a coordinate is NaN or infinite")
    return np.clip(arr, 0.0, 1.0)


def blur_array(img: np.ndarray, bboxes: Any) -> np.ndarray:
    """Blur the boxes of an HxWxC uint8 image; an empty box list returns the image unchanged."""
    if bboxes is None:
        return img
    boxes = clean_boxes(bboxes)
    if len(boxes) == 0:
        return img
    from scipy.ndimage import gaussian_filter

    h, w = img.shape[:2]
    mask = np.zeros((h, w), dtype=np.float32)
    max_side = 0
    for x0, y0, x1, y1 in boxes.tolist():
        px0, py0, px1, py1 = int(x0 * w), int(y0 * h), int(x1 * w), int(y1 * h)
        side = max(px1 - px0, py1 - py0)
        max_side = max(max_side, side)
        grow = int(0.1 * side)
        px0, py0 = max(0, px0 - grow), max(0, py0 - grow)
        px1, py1 = min(w, px1 + grow), min(h, py1 + grow)
        mask[py0:py1, px0:px1] = 1.0
    sigma = max(0.1 * max_side, 0.5)
    truncate = math.ceil(4 * sigma) / sigma  # kernel radius ceil(4 sigma), as ksize = 2*ceil(4s)+1
    f = img.astype(np.float32)
    blurred = np.stack([gaussian_filter(f[..., c], sigma, truncate=truncate) for c in range(f.shape[2])], -1)
    m = gaussian_filter(mask, sigma, truncate=truncate)[..., None]
    return np.clip(f * (1 - m) + blurred * m, 0, 255).round().astype(np.uint8)


def blur_jpeg(data: bytes, bboxes: Sequence[Sequence[float]], quality: int = 95) -> bytes:
    """Decode (pixel-capped), blur and re-encode a JPEG (only called when there is at least one box).

    A bad box list or an undecodable image is a one-line :class:`DataCompError`."""
    from PIL import Image

    from datacomp.errors import DataCompError
    from datacomp.pool.resize import ImageError, open_image

    try:
        boxes = clean_boxes(bboxes)
        arr = np.asarray(open_image(data))
    except ValueError as e:
        raise DataCompError(f"cannot blur: {e}") from None
    except ImageError as e:
        raise DataCompError(f"cannot blur: {e.message}") from None
    out = io.BytesIO()
    Image.fromarray(blur_array(arr, boxes)).save(out, format="JPEG", quality=quality)
    return out.getvalue()
