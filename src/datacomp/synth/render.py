"""Fast deterministic renderer of class-centric scenes at 32x32.

Why it is fast: every glyph (12 shapes, 10 digits) is drawn once per (style, size, rotation) with
PIL at 4x and box-downsampled into an anti-aliased alpha mask that is cached; backgrounds are
blends of two tones through cached pattern fields. Rendering an image is then a handful of numpy
blends. Why it is deterministic: all randomness comes from arrays the caller draws from a seeded
``numpy.random.Generator`` (:func:`sample_scenes`); the caches are built from fixed constants.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

import numpy as np

from datacomp.synth.concepts import ALL_BACKGROUNDS, BACKGROUNDS, COLOURS, SHAPES

IMAGE_SIZE = 32
SS = 4  # supersampling factor of the mask cache
N_ROT = 12  # rotation steps of 30 degrees for shapes
DIGIT_ANGLES = (-15.0, 0.0, 15.0)
N_GLYPHS = len(SHAPES) + 10  # shapes, then digits 0-9
N_VARIANTS = 16  # pattern variants per background kind
JITTER_COLS = 32  # uniform [0,1) numbers consumed per scene
_COLOUR_RGB = np.array(list(COLOURS.values()), dtype=np.float32)
_SKIN = np.array([[241, 194, 160], [224, 172, 125], [198, 134, 86], [141, 85, 54]], dtype=np.float32)

# Scene fields (one int per scene); -1 marks "not applicable".
SCENE_FIELDS = ("glyph", "colour", "count", "size", "position", "background", "style")


@dataclass
class Scenes:
    """A batch of scene parameters plus the jitter that makes each render unique."""

    glyph: np.ndarray  # 0..11 shapes, 12..21 digits 0-9
    colour: np.ndarray  # index into COLOURS; -1 for sketch ink
    count: np.ndarray  # 1..4
    size: np.ndarray  # 0 small, 1 large
    position: np.ndarray  # index into POSITIONS for single objects, -1 otherwise
    background: np.ndarray  # index into ALL_BACKGROUNDS
    style: np.ndarray  # 0 photo (filled), 1 sketch (outline on paper)
    jitter: np.ndarray  # (n, JITTER_COLS) float64 in [0, 1)

    def __len__(self) -> int:
        return len(self.glyph)

    def take(self, idx: np.ndarray) -> Scenes:
        return Scenes(**{f: getattr(self, f)[idx] for f in (*SCENE_FIELDS, "jitter")})

    def is_digit(self) -> np.ndarray:
        return self.glyph >= len(SHAPES)


def sample_scenes(
    rng: np.random.Generator,
    n: int,
    backgrounds: tuple[int, ...] = tuple(range(len(BACKGROUNDS))),
    sketch_share: float = 0.1,
    digit_share: float = 0.08,
    count_p: tuple[float, ...] = (0.55, 0.2, 0.15, 0.1),
    glyphs: tuple[int, ...] | None = None,
) -> Scenes:
    """Draw ``n`` scenes: shapes (or digits), colour, count, size, position, background, style."""
    digit = rng.random(n) < digit_share
    glyph = np.where(digit, len(SHAPES) + rng.integers(0, 10, n), rng.integers(0, len(SHAPES), n))
    if glyphs is not None:
        glyph = np.asarray(glyphs, dtype=np.int64)[rng.integers(0, len(glyphs), n)]
        digit = glyph >= len(SHAPES)
    style = (rng.random(n) < sketch_share).astype(np.int64)
    colour = rng.integers(0, len(COLOURS), n)
    count = rng.choice(np.arange(1, 5), n, p=np.asarray(count_p) / np.sum(count_p))
    count = np.where(digit, 1, count)
    size = rng.integers(0, 2, n)
    position = np.where(count == 1, rng.integers(0, 5, n), -1)
    background = np.asarray(backgrounds)[rng.integers(0, len(backgrounds), n)]
    colour = np.where(style == 1, -1, colour)
    background = np.where(style == 1, 0, background)
    jitter = rng.random((n, JITTER_COLS))
    return Scenes(glyph, colour, count, size, position, background, style, jitter)


# ------------------------------------------------------------------------------------------------
# glyph geometry (unit coordinates, y down, radius ~1)

def _ngon(k: int, r: float = 1.0, start: float = -np.pi / 2) -> np.ndarray:
    a = start + np.arange(k) * 2 * np.pi / k
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _ellipse(rx: float, ry: float, cx: float = 0.0, cy: float = 0.0, k: int = 40) -> np.ndarray:
    a = np.arange(k) * 2 * np.pi / k
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1)


def _star() -> np.ndarray:
    outer, inner = _ngon(5, 1.0), _ngon(5, 0.42, -np.pi / 2 + np.pi / 5)
    return np.stack([outer, inner], 1).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], 1) / 17.0
    return pts - [0, 0.1]


def _cross(w: float = 0.32) -> np.ndarray:
    return np.array([(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
                     (-1, -w), (-w, -w)], dtype=float) * 0.92


# Each glyph: list of (polygon points, fill) drawn in order (fill 0 cuts holes).
_SHAPE_GEOMETRY: dict[str, list[tuple[np.ndarray, int]]] = {
    "circle": [(_ellipse(0.92, 0.92), 1)],
    "square": [(np.array([(-0.78, -0.78), (0.78, -0.78), (0.78, 0.78), (-0.78, 0.78)]), 1)],
    "triangle": [(_ngon(3, 1.0) + [0, 0.2], 1)],
    "star": [(_star(), 1)],
    "cross": [(_cross(), 1)],
    "heart": [(_heart(), 1)],
    "hexagon": [(_ngon(6, 0.95), 1)],
    "pentagon": [(_ngon(5, 0.98) + [0, 0.08], 1)],
    "diamond": [(np.array([(0, -1), (0.62, 0), (0, 1), (-0.62, 0)]), 1)],
    "arrow": [(np.array([(-0.95, -0.22), (0.15, -0.22), (0.15, -0.65), (0.98, 0), (0.15, 0.65), (0.15, 0.22),
                         (-0.95, 0.22)]), 1)],
    "ring": [(_ellipse(0.95, 0.95), 1), (_ellipse(0.52, 0.52), 0)],
    "crescent": [(_ellipse(0.95, 0.95), 1), (_ellipse(0.78, 0.78, 0.42, -0.1), 0)],
}

# Digits as strokes (polylines) in [-0.6, 0.6] x [-1, 1].
_DIGIT_STROKES: tuple[list[np.ndarray], ...] = (
    [np.vstack([_ellipse(0.52, 0.9, k=28), _ellipse(0.52, 0.9, k=28)[:1]])],
    [np.array([(-0.25, -0.65), (0.08, -0.95), (0.08, 0.95)])],
    [np.array([(-0.5, -0.55), (-0.3, -0.85), (0.2, -0.92), (0.5, -0.6), (0.45, -0.25), (-0.5, 0.9), (0.55, 0.9)])],
    [np.array([(-0.5, -0.82), (0.45, -0.85), (0.0, -0.1), (0.5, 0.2), (0.45, 0.7), (0.0, 0.93), (-0.5, 0.75)])],
    [np.array([(0.25, 0.95), (0.25, -0.95), (-0.55, 0.35), (0.6, 0.35)])],
    [np.array([(0.5, -0.9), (-0.4, -0.9), (-0.45, -0.1), (0.2, -0.2), (0.55, 0.25), (0.4, 0.8), (-0.1, 0.95),
               (-0.5, 0.75)])],
    [np.array([(0.45, -0.85), (-0.1, -0.85), (-0.5, -0.1), (-0.5, 0.6), (-0.1, 0.92), (0.4, 0.75), (0.5, 0.3),
               (0.1, 0.0), (-0.5, 0.2)])],
    [np.array([(-0.55, -0.9), (0.55, -0.9), (-0.1, 0.95)])],
    [np.vstack([_ellipse(0.38, 0.43, 0, -0.47, 24), _ellipse(0.38, 0.43, 0, -0.47, 24)[:1]]),
     np.vstack([_ellipse(0.48, 0.47, 0, 0.45, 24), _ellipse(0.48, 0.47, 0, 0.45, 24)[:1]])],
    [np.array([(0.5, -0.2), (-0.2, 0.0), (-0.5, -0.4), (-0.35, -0.85), (0.2, -0.9), (0.5, -0.5), (0.45, 0.4),
               (0.0, 0.92), (-0.45, 0.8)])],
)


def _rotate(p: np.ndarray, deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return p @ np.array([[c, s], [-s, c]])


def _downsample(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape[0] // f, a.shape[1] // f
    return a[: h * f, : w * f].reshape(h, f, w, f).mean(axis=(1, 3))


def _erode(a: np.ndarray, r: int) -> np.ndarray:
    """Grey erosion by a (2r+1)-square: separable running minimum (what PIL's MinFilter does, faster)."""
    out = a.copy()
    for axis in (0, 1):
        src = np.pad(out, [(r, r) if ax == axis else (0, 0) for ax in (0, 1)], constant_values=0)
        n = a.shape[axis]
        out = np.min([src[k: k + n] if axis == 0 else src[:, k: k + n] for k in range(2 * r + 1)], axis=0)
    return out


@cache
def glyph_mask(glyph: int, style: int, size: int, rot: int) -> np.ndarray:
    """Anti-aliased alpha mask (size x size, float32 in [0,1]) of a glyph; cached."""
    from PIL import Image, ImageDraw

    big = size * SS
    im = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(im)
    half = big / 2.0
    scale = half * 0.96
    if glyph < len(SHAPES):
        deg = 30.0 * rot
        for pts, fill in _SHAPE_GEOMETRY[SHAPES[glyph]]:
            q = _rotate(pts, deg) * scale + half
            draw.polygon([tuple(v) for v in q], fill=255 * fill)
    else:
        deg = DIGIT_ANGLES[rot % len(DIGIT_ANGLES)]
        width = max(2, int(round(big * 0.16)))
        for stroke in _DIGIT_STROKES[glyph - len(SHAPES)]:
            q = _rotate(stroke * [1.0, 0.92], deg) * scale + half
            draw.line([tuple(v) for v in q], fill=255, width=width, joint="curve")
    a = np.asarray(im, dtype=np.float32)
    if style == 1:  # sketch: keep an outline about 1.2 output pixels wide
        a = a - _erode(a, int(round(1.2 * SS)))
    return (_downsample(a, SS) / 255.0).astype(np.float32)


def warm_caches() -> int:
    """Build every glyph mask and pattern up front (a worker pays this once: ~8k small masks)."""
    n = 0
    for glyph in range(N_GLYPHS):
        rots = len(DIGIT_ANGLES) if glyph >= len(SHAPES) else N_ROT
        for style in (0, 1):
            for size in range(7, 23):
                for rot in range(rots):
                    glyph_mask(glyph, style, size, rot)
                    n += 1
    for bg in range(len(ALL_BACKGROUNDS)):
        for v in range(N_VARIANTS):
            pattern(bg, v)
    return n


@cache
def face_masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(skin, features) alpha masks of a cartoon face: an oval with two eyes and a mouth."""
    from PIL import Image, ImageDraw

    big = size * SS
    skin = Image.new("L", (big, big), 0)
    ImageDraw.Draw(skin).ellipse([big * 0.1, 0.02 * big, big * 0.9, 0.98 * big], fill=255)
    feat = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(feat)
    r = big * 0.08
    for cx in (0.35, 0.65):
        d.ellipse([cx * big - r, 0.38 * big - r, cx * big + r, 0.38 * big + r], fill=255)
    d.arc([0.3 * big, 0.45 * big, 0.7 * big, 0.78 * big], 20, 160, fill=255, width=max(2, int(big * 0.06)))
    return (_downsample(np.asarray(skin, np.float32), SS) / 255.0,
            _downsample(np.asarray(feat, np.float32), SS) / 255.0)


@cache
def pattern(background: int, variant: int) -> np.ndarray:
    """A (32, 32) float32 field in [0, 1] that mixes a background's two tones."""
    n = IMAGE_SIZE
    rng = np.random.default_rng(1000 * background + variant)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    kind = ALL_BACKGROUNDS[background]
    if kind == "plain":
        f = np.zeros((n, n), np.float32)
    elif kind == "striped":
        period = rng.choice([4, 5, 6, 8])
        ang = rng.choice([0, 45, 90, 135]) * np.pi / 180
        u = x * np.cos(ang) + y * np.sin(ang) + rng.random() * period
        f = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    elif kind == "dotted":
        sp = rng.choice([5, 6, 7])
        ox, oy = rng.integers(0, sp, 2)
        dx = ((x + ox) % sp) - sp / 2
        dy = ((y + oy) % sp) - sp / 2
        f = np.clip(1.6 - np.sqrt(dx * dx + dy * dy), 0, 1)
    elif kind == "checkered":
        c = rng.choice([4, 6, 8])
        ox, oy = rng.integers(0, c, 2)
        f = (((x + ox) // c + (y + oy) // c) % 2).astype(np.float32)
    elif kind == "gradient":
        ang = rng.random() * 2 * np.pi
        u = (x - n / 2) * np.cos(ang) + (y - n / 2) * np.sin(ang)
        f = (u - u.min()) / (u.max() - u.min())
    elif kind == "speckled":
        f = (rng.random((n, n)) < 0.3).astype(np.float32)
    elif kind == "grid":
        sp = rng.choice([5, 6, 8])
        ox, oy = rng.integers(0, sp, 2)
        f = (((x + ox) % sp < 1) | ((y + oy) % sp < 1)).astype(np.float32)
    elif kind == "wavy":
        period = rng.choice([5, 6, 7])
        amp = 1.5 + 2 * rng.random()
        f = (np.sin(2 * np.pi * (y + amp * np.sin(x / 3.0)) / period) > 0).astype(np.float32)
    else:  # pragma: no cover - the background table is fixed
        raise ValueError(kind)
    return f.astype(np.float32)


@cache
def _noise_bank() -> np.ndarray:
    return np.random.default_rng(77).normal(0, 1, (64, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


def _layout(count: int, size: int, position: int, j: np.ndarray) -> list[tuple[float, float, int]]:
    """Object centres and pixel sizes: ``[(cx, cy, px), ...]`` from the scene and its jitter."""
    n = IMAGE_SIZE
    if count == 1:
        px = int(9 + 4 * j[0]) if size == 0 else int(16 + 6 * j[0])
        cx = {0: 0.3, 1: 0.7, 2: 0.5, 3: 0.5, 4: 0.5}[position] * n
        cy = {0: 0.5, 1: 0.5, 2: 0.3, 3: 0.7, 4: 0.5}[position] * n
        spread = 2.0 if size == 1 else 4.0
        if position in (0, 1):  # keep the object in its half
            cx = cx + (j[1] - 0.5) * 2
            cy = cy + (j[2] - 0.5) * spread * 2
        elif position in (2, 3):
            cx = cx + (j[1] - 0.5) * spread * 2
            cy = cy + (j[2] - 0.5) * 2
        else:
            cx, cy = cx + (j[1] - 0.5) * 3, cy + (j[2] - 0.5) * 3
        return [(cx, cy, px)]
    px = int(7 + 3 * j[0]) if size == 0 else int(10 + 3 * j[0])
    if count == 2:
        cells = [[(0.27, 0.5), (0.73, 0.5)], [(0.5, 0.27), (0.5, 0.73)], [(0.27, 0.27), (0.73, 0.73)],
                 [(0.73, 0.27), (0.27, 0.73)]][int(j[1] * 4)]
    else:
        quads = [(0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73)]
        drop = int(j[1] * 4)
        cells = quads if count == 4 else [q for i, q in enumerate(quads) if i != drop]
    return [(cx * n + (j[3 + 2 * i] - 0.5) * 3, cy * n + (j[4 + 2 * i] - 0.5) * 3, px)
            for i, (cx, cy) in enumerate(cells)]


def _blend(img: np.ndarray, mask: np.ndarray, colour: np.ndarray, cx: float, cy: float) -> None:
    """Alpha-blend ``colour`` through ``mask`` centred at (cx, cy), clipped to the image."""
    s = mask.shape[0]
    x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
    n = img.shape[0]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + s, n), min(y0 + s, n)
    if xa >= xb or ya >= yb:
        return
    m = mask[ya - y0: yb - y0, xa - x0: xb - x0, None]
    region = img[ya:yb, xa:xb]
    region += (colour - region) * m


def render_scene(s: Scenes, i: int) -> np.ndarray:
    """Render scene ``i`` of ``s`` to a (32, 32, 3) float32 image in [0, 255]."""
    j = s.jitter[i]
    glyph, style = int(s.glyph[i]), int(s.style[i])
    if style == 1:  # sketch: dark ink outline on light paper
        paper = 215 + 35 * j[10]
        img = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), paper, np.float32) + [0, 0, -8 * j[11]]
        ink = np.full(3, 20 + 60 * j[12], np.float32)
    else:
        bg = int(s.background[i])
        t1 = (70 + 120 * j[10]) + (np.array([j[13], j[14], j[15]], np.float32) - 0.5) * 50
        t2 = t1 + np.where(j[11] < 0.5, -1, 1) * (35 + 35 * j[12])
        f = pattern(bg, int(j[16] * N_VARIANTS))[..., None]
        img = (t1 + (t2 - t1) * f).astype(np.float32)
        ink = _COLOUR_RGB[int(s.colour[i])] + (np.array([j[17], j[18], j[19]], np.float32) - 0.5) * 30
    is_digit = glyph >= len(SHAPES)
    for k, (cx, cy, px) in enumerate(_layout(int(s.count[i]), int(s.size[i]), int(s.position[i]), j)):
        rot = int(j[20 + k] * (len(DIGIT_ANGLES) if is_digit else N_ROT))
        _blend(img, glyph_mask(glyph, style, px, rot), ink, cx, cy)
    img += _noise_bank()[int(j[24] * 64)] * (2.0 + 3.0 * j[25])
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render(s: Scenes) -> np.ndarray:
    """Render every scene: (n, 32, 32, 3) uint8."""
    out = np.empty((len(s), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i in range(len(s)):
        out[i] = to_uint8(render_scene(s, i))
    return out


def add_face(img: np.ndarray, u: np.ndarray) -> list[float]:
    """Paint a face-like region in place (float image); return its bbox as fractions [x0, y0, x1, y1]."""
    size = int(10 + 8 * u[0])
    skin_m, feat_m = face_masks(size)
    n = IMAGE_SIZE
    cx = size / 2 + u[1] * (n - size)
    cy = size / 2 + u[2] * (n - size)
    _blend(img, skin_m, _SKIN[int(u[3] * len(_SKIN))], cx, cy)
    _blend(img, feat_m, np.array([30, 20, 20], np.float32), cx, cy)
    x0, y0 = int(round(cx - size / 2)), int(round(cy - size / 2))
    return [max(x0, 0) / n, max(y0, 0) / n, min(x0 + size, n) / n, min(y0 + size, n) / n]


def off_distribution(kind: int, u: np.ndarray) -> np.ndarray:
    """An image that shows no concept: 0 noise, 1 gradient, 2 text banner, 3 blank (float32)."""
    n = IMAGE_SIZE
    if kind == 0:
        base = _noise_bank()[int(u[0] * 64)] * (30 + 50 * u[1]) + 128
        return base.astype(np.float32)
    if kind == 1:
        f = pattern(ALL_BACKGROUNDS.index("gradient"), int(u[0] * N_VARIANTS))[..., None]
        a = _COLOUR_RGB[int(u[1] * len(_COLOUR_RGB))]
        b = _COLOUR_RGB[int(u[2] * len(_COLOUR_RGB))]
        return (a + (b - a) * f).astype(np.float32)
    if kind == 2:  # a banner of glyph "letters" across a coloured bar
        img = np.full((n, n, 3), 235 * u[3] + 10, np.float32)
        bar = _COLOUR_RGB[int(u[1] * len(_COLOUR_RGB))]
        y0 = int(6 + 14 * u[2])
        img[y0: y0 + 10] = bar
        ink = np.full(3, 255.0 if bar.mean() < 128 else 0.0, np.float32)
        for k in range(4):
            g = len(SHAPES) + int(u[4 + k] * 10)
            _blend(img, glyph_mask(g, 0, 8, 1), ink, 4 + 8 * k, y0 + 5)
        return img
    return np.full((n, n, 3), 255 * u[0], np.float32) + _noise_bank()[int(u[1] * 64)] * 1.5


def text_image(lines: list[str], u: np.ndarray) -> np.ndarray:
    """The caption's words written in the world's font on a plain card, and little else (float32).

    ``u``: 6 uniforms (paper tone, ink tone, scale choice, position x, position y, noise). Scale 2
    when every line fits it (at most 4 letters, at most 2 lines), else scale 1.
    """
    from datacomp.filters.methods.textspot import draw_text, text_size

    n = IMAGE_SIZE
    paper = 190 + 60 * u[0] + (np.array([0.0, -4.0, -12.0], np.float32) * u[1])
    img = np.zeros((n, n, 3), np.float32) + paper
    ink = np.full(3, 15 + 65 * u[1], np.float32)
    scale = 2 if u[2] < 0.6 and text_size(lines, 2)[0] <= n - 2 and len(lines) <= 2 else 1
    w, h = text_size(lines, scale)
    x0 = int(u[3] * max(n - w, 0))
    y0 = int(u[4] * max(n - h, 0))
    draw_text(img, lines, x0, y0, scale, ink)
    img += _noise_bank()[int(u[5] * 64)] * 2.0
    return img


def degrade_tiny(img: np.ndarray, px: int) -> np.ndarray:
    """Down to ``px`` pixels and back: what a 20-150 px web thumbnail looks like upscaled."""
    from PIL import Image

    im = Image.fromarray(to_uint8(img)).resize((px, px), Image.BOX).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(im, np.float32)


def degrade_aspect(img: np.ndarray, ratio: float, wide: bool) -> np.ndarray:
    """Squash the content to an extreme aspect ratio and stretch it back (banner-like images)."""
    from PIL import Image

    short = max(2, int(round(IMAGE_SIZE / ratio)))
    size = (IMAGE_SIZE, short) if wide else (short, IMAGE_SIZE)
    im = Image.fromarray(to_uint8(img)).resize(size, Image.BOX).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(im, np.float32)


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a uint8 image (libjpeg is deterministic for the same input and settings)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
