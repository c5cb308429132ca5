"""Decode, resize, blur and re-encode a downloaded image as img2dataset does (PIL instead of OpenCV).

Resize modes and the ``resize_only_if_bigger`` rule follow img2dataset's ``resizer.py``: downscale
with area-style (box) filtering, upscale with Lanczos, alpha composited on white, faces blurred after
resizing. The pixel count is checked from the header before any pixel is decoded (decompression
bombs). ``reencode="auto"`` keeps the downloaded bytes when nothing would change them.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datacomp.pool.http import SampleError

RESIZE_MODES = ("no", "border", "keep_ratio", "keep_ratio_largest", "center_crop")
ENCODE_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own decompression-bomb warning threshold


@dataclass(frozen=True)
class ImageConfig:
    """How a downloaded image becomes a shard member. Defaults are DataComp's download settings."""

    image_size: int = 512  # resize target in pixels
    resize_mode: str = "keep_ratio_largest"  # one of RESIZE_MODES
    resize_only_if_bigger: bool = True  # never upscale (DataComp default)
    encode_format: str = "jpg"  # jpg | png | webp
    encode_quality: int = 95  # jpg/webp quality
    reencode: str = "always"  # always (img2dataset) | auto (keep the downloaded bytes when unchanged)
    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse images with more pixels (checked before decoding)
    blur_faces: bool = True  # blur face_bboxes (DataComp default)


class ImageError(SampleError):
    """The image could not be decoded or processed: status ``failed_to_resize``."""


@dataclass
class Processed:
    data: bytes
    ext: str
    width: int
    height: int
    original_width: int
    original_height: int
    exif: str | None


def _target_size(w: int, h: int, cfg: ImageConfig) -> tuple[int, int] | None:
    """The (w, h) to resize to before cropping/padding, or None to keep the size."""
    s = cfg.image_size
    mode = cfg.resize_mode
    if mode == "no":
        return None
    if mode in ("keep_ratio", "center_crop"):
        if cfg.resize_only_if_bigger and min(w, h) <= s:
            return None
        scale = s / min(w, h)
    else:  # keep_ratio_largest, border
        if cfg.resize_only_if_bigger and max(w, h) <= s:
            return None
        scale = s / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _to_rgb(im):  # noqa: ANN001, ANN202 - PIL types stay local to this module
    from PIL import Image

    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


def _exif_json(im) -> str:  # noqa: ANN001
    from PIL.ExifTags import TAGS

    try:
        exif = im.getexif()
    except Exception:  # noqa: BLE001 - broken EXIF must not fail the image
        return "{}"
    out = {}
    for k, v in exif.items():
        if isinstance(v, bytes):
            continue
        out[f"Image {TAGS.get(k, k)}"] = str(v).strip()
    return json.dumps(out)


def _open_header(data: bytes, max_pixels: int) -> Any:
    """``Image.open`` (header only, nothing decoded yet) with the pixel cap."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise ImageError("too_many_pixels", f"image too large: {e}") from None
    except Exception as e:  # noqa: BLE001 - any decoder error is a failed image
        raise ImageError("decode_error", f"cannot decode image: {type(e).__name__}: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise ImageError("too_many_pixels", f"image has {w}x{h} pixels, over the {max_pixels}-pixel cap")
    return im


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """Decode to an RGB PIL image (``convert("RGB")``), refusing images over ``max_pixels`` before decoding.

    The one decoder for training and evaluation images; raises :class:`ImageError` (``too_many_pixels``,
    ``decode_error``) whose message names the cause.
    """
    from PIL import Image

    with warnings.catch_warnings():  # PIL warns below its error threshold; our cap decides
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = _open_header(data, max_pixels)
        try:
            im.load()
            return im.convert("RGB")
        except Exception as e:  # noqa: BLE001
            raise ImageError("decode_error", f"cannot decode image: {type(e).__name__}: {e}") from None


def _boxes(bboxes: Any) -> np.ndarray | None:
    """The row's face boxes, validated and clipped (None: nothing to blur); a bad row fails this sample only."""
    if bboxes is None:
        return None
    from datacomp.pool.blur import clean_boxes

    try:
        boxes = clean_boxes(bboxes)
    except ValueError as e:
        raise ImageError("bad_face_bboxes", str(e)) from None
    return boxes if len(boxes) else None


def process_image(data: bytes, cfg: ImageConfig, bboxes: Sequence[Sequence[float]] | None = None) -> Processed:
    """Downloaded bytes -> encoded shard image and its sizes; raises :class:`ImageError`."""
    from PIL import Image

    if cfg.resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}")
    boxes = _boxes(bboxes) if cfg.blur_faces else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = _open_header(data, cfg.max_pixels)
        ow, oh = im.size
        try:
            im.load()
            src_format = im.format
            exif = _exif_json(im)
            rgb = _to_rgb(im)
        except Exception as e:  # noqa: BLE001
            raise ImageError("decode_error", f"cannot decode image: {type(e).__name__}: {e}") from None
    target = _target_size(ow, oh, cfg)
    if (cfg.reencode == "auto" and target is None and boxes is None and im.mode == "RGB"
            and ENCODE_FORMATS[cfg.encode_format] == src_format):
        return Processed(data, cfg.encode_format, ow, oh, ow, oh, exif)
    if target is not None:
        tw, th = target
        down = tw * th < ow * oh
        resample = Image.Resampling.BOX if down else Image.Resampling.LANCZOS
        rgb = rgb.resize((tw, th), resample=resample)
        s = cfg.image_size
        if cfg.resize_mode == "center_crop":
            left, top = (tw - s) // 2, (th - s) // 2
            rgb = rgb.crop((left, top, left + s, top + s))
        elif cfg.resize_mode == "border":
            canvas = Image.new("RGB", (s, s), (255, 255, 255))
            canvas.paste(rgb, ((s - tw) // 2, (s - th) // 2))
            rgb = canvas
    if boxes is not None:
        from datacomp.pool.blur import blur_array

        rgb = Image.fromarray(blur_array(np.asarray(rgb), boxes))
    out = io.BytesIO()
    fmt = ENCODE_FORMATS[cfg.encode_format]
    kwargs = {"quality": cfg.encode_quality} if fmt in ("JPEG", "WEBP") else {}
    rgb.save(out, format=fmt, **kwargs)
    return Processed(out.getvalue(), cfg.encode_format, rgb.width, rgb.height, ow, oh, exif)
