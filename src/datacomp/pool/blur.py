"""Face blurring from ``face_bboxes``, with img2dataset's BoundingBoxBlurrer numerics.

Boxes are ``[x0, y0, x1, y1]`` fractions; each is grown by 10% of its larger side, painted into a mask,
and image and mask are Gaussian-blurred with ``sigma = 0.1 * largest box side``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np


def blur_array(img: np.ndarray, bboxes: Sequence[Sequence[float]]) -> np.ndarray:
    """Blur the boxes of an HxWxC uint8 image; an empty box list returns the image unchanged."""
    if bboxes is None or len(bboxes) == 0:
        return img
    from scipy.ndimage import gaussian_filter

    h, w = img.shape[:2]
    mask = np.zeros((h, w), dtype=np.float32)
    max_side = 0
    for x0, y0, x1, y1 in bboxes:
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
    """Decode, blur and re-encode a JPEG (only called when there is at least one box)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"))
    out = io.BytesIO()
    Image.fromarray(blur_array(arr, bboxes)).save(out, format="JPEG", quality=quality)
    return out.getvalue()
