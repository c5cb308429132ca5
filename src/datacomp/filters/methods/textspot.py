"""Text spotting: where an image shows rendered text, as a boolean pixel mask per image.

T-MARS (Maini et al. 2023) needs a text *detector*, not a reader: it masks the detected text and
re-scores the image. Detectors are a registry (:func:`register_text_detector`), so the real-scale
version plugs in a scene-text detector (FAST, as in the paper; docTR, EasyOCR, PaddleOCR; see
``docs/methods/text_in_image.md``) under a name and is chosen with ``--param text_in_image.detector=NAME``.

The built-in ``world-font`` detector spots the embedded world's bitmap font (:data:`FONT`, 3x5
pixels per letter, drawn at scale 1 or 2): it binarises each image against its own paper tone,
codes every 3x5 window as a 15-bit integer, looks the code up in the font, and keeps runs of at
least :data:`MIN_RUN` letters on one baseline with one empty column between them (a word). Like a
real detector trained on real fonts, it knows the script, not the words; ink may be darker or
lighter than the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from datacomp.errors import DataCompError

# 3x5 capitals: every letter touches its box's four sides, so a letter's box is unambiguous.
FONT: dict[str, tuple[str, str, str, str, str]] = {
    "A": (".#.", "#.#", "###", "#.#", "#.#"), "B": ("##.", "#.#", "##.", "#.#", "##."),
    "C": (".##", "#..", "#..", "#..", ".##"), "D": ("##.", "#.#", "#.#", "#.#", "##."),
    "E": ("###", "#..", "##.", "#..", "###"), "F": ("###", "#..", "##.", "#..", "#.."),
    "G": (".##", "#..", "#.#", "#.#", ".##"), "H": ("#.#", "#.#", "###", "#.#", "#.#"),
    "I": ("###", ".#.", ".#.", ".#.", "###"), "J": ("..#", "..#", "..#", "#.#", ".#."),
    "K": ("#.#", "#.#", "##.", "#.#", "#.#"), "L": ("#..", "#..", "#..", "#..", "###"),
    "M": ("#.#", "###", "###", "#.#", "#.#"), "N": ("##.", "#.#", "#.#", "#.#", "#.#"),
    "O": ("###", "#.#", "#.#", "#.#", "###"), "P": ("##.", "#.#", "##.", "#..", "#.."),
    "Q": (".#.", "#.#", "#.#", "##.", ".##"), "R": ("##.", "#.#", "##.", "#.#", "#.#"),
    "S": (".##", "#..", ".#.", "..#", "##."), "T": ("###", ".#.", ".#.", ".#.", ".#."),
    "U": ("#.#", "#.#", "#.#", "#.#", "###"), "V": ("#.#", "#.#", "#.#", "#.#", ".#."),
    "W": ("#.#", "#.#", "###", "###", "#.#"), "X": ("#.#", "#.#", ".#.", "#.#", "#.#"),
    "Y": ("#.#", "#.#", ".#.", ".#.", ".#."), "Z": ("###", "..#", ".#.", "#..", "###"),
}
GLYPH_W, GLYPH_H, PITCH = 3, 5, 4  # letter box and advance (one empty column between letters)
MIN_RUN = 3  # letters on one baseline before a detection counts as a word
MIN_CONTRAST = 60.0  # grey levels between paper and ink below which nothing is read


def glyph_bits(ch: str) -> np.ndarray:
    """The (5, 3) boolean bitmap of a letter (KeyError for one the font lacks)."""
    return np.array([[c == "#" for c in row] for row in FONT[ch.upper()]], bool)


def _font_codes() -> np.ndarray:
    codes = np.zeros(1 << (GLYPH_W * GLYPH_H), bool)
    weights = (1 << np.arange(GLYPH_W * GLYPH_H)).reshape(GLYPH_H, GLYPH_W)
    for ch in FONT:
        codes[int((glyph_bits(ch) * weights).sum())] = True
    return codes


_CODES = _font_codes()


def ink_mask(images: np.ndarray) -> np.ndarray:
    """(n, h, w) bool: the pixels of each image's ink, dark on light paper or light on dark paper.

    The paper is the image's median grey; the ink is the tone (2nd or 98th percentile) farther from
    it; a pixel is ink when it lies beyond halfway from the paper to the ink.
    """
    g = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    flat = g.reshape(len(g), -1)
    paper = np.median(flat, axis=1)
    dark, light = np.percentile(flat, 2, axis=1), np.percentile(flat, 98, axis=1)
    dark_ink = (paper - dark) >= (light - paper)
    ink = np.where(dark_ink, dark, light)
    cut = ((paper + ink) / 2)[:, None, None]
    mask = np.where(dark_ink[:, None, None], g < cut, g > cut)
    return mask & (np.abs(paper - ink) >= MIN_CONTRAST)[:, None, None]


def _letter_boxes(ink: np.ndarray) -> np.ndarray:
    """(n, h, w) bool: True at (y, x) where a font letter's box starts, with an empty ring around it."""
    n, h, w = ink.shape
    p = np.zeros((n, h + 2, w + 2), bool)  # a blank frame: letters may touch the image edge
    p[:, 1:-1, 1:-1] = ink
    oh, ow = h + 2 - GLYPH_H - 1, w + 2 - GLYPH_W - 1  # box origins (y, x) in the padded frame, >= 1
    code = np.zeros((n, oh, ow), np.int32)
    for dy in range(GLYPH_H):
        for dx in range(GLYPH_W):
            code |= p[:, 1 + dy: 1 + dy + oh, 1 + dx: 1 + dx + ow].astype(np.int32) << (dy * GLYPH_W + dx)
    ring = np.zeros((n, oh, ow), bool)
    for dx in range(-1, GLYPH_W + 1):
        ring |= p[:, 0: oh, 1 + dx: 1 + dx + ow] | p[:, 1 + GLYPH_H: 1 + GLYPH_H + oh, 1 + dx: 1 + dx + ow]
    for dy in range(GLYPH_H):
        ring |= p[:, 1 + dy: 1 + dy + oh, 0: ow] | p[:, 1 + dy: 1 + dy + oh, 1 + GLYPH_W: 1 + GLYPH_W + ow]
    hit = _CODES[code] & ~ring
    out = np.zeros((n, h, w), bool)
    out[:, :oh, :ow] = hit  # origin (y, x) in the image = padded (y + 1, x + 1)
    return out


def _words(starts: np.ndarray) -> np.ndarray:
    """(n, h, w) bool pixel mask of the runs of >= MIN_RUN letters one PITCH apart on a baseline."""
    n, h, w = starts.shape
    run = starts.copy()
    for k in range(1, MIN_RUN):  # run[y, x]: letters at x, x+PITCH, ..., x+(MIN_RUN-1)*PITCH
        shifted = np.zeros_like(starts)
        shifted[:, :, : w - k * PITCH] = starts[:, :, k * PITCH:]
        run &= shifted
    member = run.copy()  # every letter that belongs to some run
    for k in range(1, MIN_RUN):
        member[:, :, k * PITCH:] |= run[:, :, : w - k * PITCH]
    mask = np.zeros_like(starts)
    for dy in range(-1, GLYPH_H + 1):  # the letter boxes grown by one pixel, as a detector's box
        for dx in range(-1, GLYPH_W + 1):
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            mask[:, yd, xd] |= member[:, ys, xs]
    return mask


def detect_world_font(images: np.ndarray) -> np.ndarray:
    """The ``world-font`` detector: (n, h, w, 3) uint8 -> (n, h, w) bool text mask (scales 1 and 2)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise DataCompError(f"text detector: expected (n, h, w, 3) images, got shape {images.shape}")
    ink = ink_mask(images)
    mask = _words(_letter_boxes(ink))
    h, w = ink.shape[1:]
    for py in (0, 1):  # scale 2: each font pixel is a 2x2 block; one sampling phase per block corner
        for px in (0, 1):
            sub = ink[:, py::2, px::2]
            m2 = _words(_letter_boxes(sub))
            up = np.repeat(np.repeat(m2, 2, axis=1), 2, axis=2)
            ys, xs = min(h - py, up.shape[1]), min(w - px, up.shape[2])
            mask[:, py: py + ys, px: px + xs] |= up[:, :ys, :xs]
    return mask


TextDetector = Callable[[np.ndarray], np.ndarray]
_DETECTORS: dict[str, TextDetector] = {"world-font": detect_world_font}


def register_text_detector(name: str) -> Callable[[TextDetector], TextDetector]:
    """Decorator: ``fn(images (n, h, w, 3) uint8) -> (n, h, w) bool`` as the text detector ``name``."""
    def deco(fn: TextDetector) -> TextDetector:
        _DETECTORS[name] = fn
        return fn

    return deco


def get_text_detector(name: str) -> TextDetector:
    try:
        return _DETECTORS[name]
    except KeyError:
        raise DataCompError(f"--param text_in_image.detector={name}: no such text detector; registered: "
                            f"{', '.join(sorted(_DETECTORS))} (register one with "
                            f"datacomp.filters.methods.textspot.register_text_detector in a --plugin file)") from None


def text_detectors() -> list[str]:
    return sorted(_DETECTORS)


def draw_text(img: np.ndarray, lines: Sequence[str], x0: int, y0: int, scale: int, ink: np.ndarray,
              line_gap: int = 2) -> None:
    """Write ``lines`` in :data:`FONT` into the float (h, w, 3) image in place, top-left at (x0, y0)."""
    for li, line in enumerate(lines):
        y = y0 + li * (GLYPH_H * scale + line_gap)
        for ci, ch in enumerate(line):
            if ch == " ":
                continue
            bits = np.kron(glyph_bits(ch), np.ones((scale, scale), bool))
            x = x0 + ci * PITCH * scale
            region = img[y: y + bits.shape[0], x: x + bits.shape[1]]
            region[bits[: region.shape[0], : region.shape[1]]] = ink


def text_size(lines: Sequence[str], scale: int, line_gap: int = 2) -> tuple[int, int]:
    """(width, height) in pixels that :func:`draw_text` needs for ``lines`` at ``scale``."""
    w = max((len(s) * PITCH - 1) * scale for s in lines) if lines else 0
    h = len(lines) * GLYPH_H * scale + (len(lines) - 1) * line_gap
    return w, h
