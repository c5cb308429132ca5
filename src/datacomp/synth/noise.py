"""Web noise: which samples of a pool are clean and how the others went wrong, plus their captions.

Every noise kind is a named share in :class:`NoiseMix`. The defaults were calibrated (see
``docs/synth.md``) so that, as on the real web for an English-evaluated model, what each DataComp
baseline removes is harmful: non-English captions do not describe their image, junk text says
nothing, tiny and banner-shaped images are degraded, and the basic filter keeps 25-60% of the pool.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from datacomp.errors import DataCompError
from datacomp.synth import concepts as C
from datacomp.synth.render import Scenes, sample_scenes

# Exclusive kinds, in this order; "clean" takes what the shares leave.
KINDS: tuple[str, ...] = (
    "clean", "misaligned", "wrong_attributes", "non_english", "junk", "tiny", "extreme_aspect",
    "off_distribution", "near_duplicate", "text_in_image",
)


@dataclass(frozen=True)
class NoiseMix:
    """Shares of each noise kind in the pool (exclusive; ``clean`` is the remainder).

    Defaults and why each resembles CommonPool:

    - ``misaligned`` 0.10: alt-text of another image (templated pages, galleries, wrong <img>).
    - ``wrong_attributes`` 0.04: the right object with a wrong colour, count or shape word.
    - ``non_english`` 0.22: captions in es/de/fr/it. Roughly half of CommonPool is not English;
      for an English-evaluated model they carry no usable description, so they describe a random
      other scene (``non_english_aligned`` sets the fraction that does describe its image).
    - ``junk`` 0.10: file names, "image", numbers, keyword spam, empty strings.
    - ``tiny`` 0.10: thumbnails under 200 px (content rendered at 4-9 px and upscaled).
    - ``extreme_aspect`` 0.04: banners with aspect ratio > 3 (content squashed to match).
    - ``off_distribution`` 0.03: noise, gradients, text banners, blanks with a plausible caption.
    - ``near_duplicate`` 0.02: re-encoded, slightly shifted copies of clean samples.
    - ``text_in_image`` 0.10: the caption's words written on a plain card and little else (T-MARS:
      nearly 40% of LAION's images carry text that overlaps their caption). A CLIP model that
      learned to read scores them high although they show nothing of what they name.
    - ``faces`` 0.04: independent of the kind, a face-like region with its ``face_bboxes``.
    - ``sketch`` / ``digits``: shares of outline-style scenes and rendered digits among all scenes.
    """

    misaligned: float = 0.10
    wrong_attributes: float = 0.04
    non_english: float = 0.22
    junk: float = 0.10
    tiny: float = 0.10
    extreme_aspect: float = 0.04
    off_distribution: float = 0.03
    near_duplicate: float = 0.02
    text_in_image: float = 0.10
    faces: float = 0.04
    non_english_aligned: float = 0.0
    sketch: float = 0.10
    digits: float = 0.08

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not 0.0 <= v <= 1.0:
                raise DataCompError(f"noise share {f.name}={v}: must be between 0 and 1")
        if self.clean < -1e-9:
            raise DataCompError(f"noise shares add up to {1 - self.clean:.3f} > 1: lower some of them")

    @property
    def clean(self) -> float:
        return 1.0 - sum(getattr(self, k) for k in KINDS[1:])

    def shares(self) -> np.ndarray:
        p = np.array([max(self.clean, 0.0)] + [getattr(self, k) for k in KINDS[1:]], dtype=np.float64)
        return p / p.sum()

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "clean": round(self.clean, 6)}


@dataclass
class PlannedSamples:
    """Everything needed to render and describe one shard's samples."""

    scenes: Scenes
    kind: np.ndarray  # index into KINDS
    captions: list[str]
    language: np.ndarray  # "en" or a LANGUAGES code
    off_kind: np.ndarray  # off-distribution image kind, -1 otherwise
    shown_text: list[str]  # text written in the image ("" for none; lines joined by "/")
    dup_of: np.ndarray  # source row of a near-duplicate, -1 otherwise
    width: np.ndarray
    height: np.ndarray
    face: np.ndarray  # bool
    aux: np.ndarray  # (n, 8) uniforms for degradations and faces


def english_caption(s: Scenes, i: int, u: np.ndarray, colour_drop: float = 0.0) -> str:
    """A varied English alt-text for scene ``i`` (``u``: 4 uniforms choosing wording).

    ``colour_drop``: share of captions that leave the colour out (the reference models' clean set
    uses it so that a contrastive batch cannot be solved by colour alone and shape gets learned).
    """
    glyph, colour, count = int(s.glyph[i]), int(s.colour[i]), int(s.count[i])
    if colour_drop and (u[1] * 7919.0) % 1.0 < colour_drop and glyph < len(C.SHAPES):
        colour = -1
    sketch = bool(s.style[i] == 1)
    bg = C.ALL_BACKGROUNDS[int(s.background[i])]
    if glyph >= len(C.SHAPES):
        t = C.DIGIT_TEMPLATES[int(u[0] * len(C.DIGIT_TEMPLATES))]
        return t.format(n=glyph - len(C.SHAPES), c="black" if colour < 0 else C.COLOUR_NAMES[colour], b=bg)
    size = int(s.size[i]) if u[1] < 0.5 else -1
    d = C.describe(glyph, colour, count, size, sketch)
    pos = int(s.position[i])
    p = " " + C.POSITION_PHRASES[C.POSITIONS[pos]] if pos >= 0 else ""
    templates = C.SKETCH_TEMPLATES if sketch else C.EN_TEMPLATES
    t = templates[int(u[2] * len(templates))]
    if u[3] < 0.15 and count > 1 and not sketch and colour >= 0:  # generic nouns teach "N objects" (counting)
        d = f"{C.COUNT_WORDS[count - 1]} {C.COLOUR_NAMES[colour]} {'shapes' if u[3] < 0.08 else 'objects'}"
    return t.format(d=d, D=d[:1].upper() + d[1:], b=bg, p=p)


def text_lines(s: Scenes, i: int, caption: str, keep: np.ndarray | tuple[bool, bool] = (True, True)) -> list[str]:
    """The words of scene ``i``'s ``caption`` that a text image writes: [count] [colour] shape, upper case.

    Count and colour are written when the caption names them and ``keep`` (two booleans) allows it;
    shape names stay singular so every line fits 32 pixels in the 3x5 font.
    """
    words = caption.lower().split()
    lines = []
    count_word = C.COUNT_WORDS[int(s.count[i]) - 1]
    if int(s.count[i]) > 1 and count_word in words and keep[1]:
        lines.append(count_word)
    if int(s.colour[i]) >= 0 and C.COLOUR_NAMES[int(s.colour[i])] in words and keep[0]:
        lines.append(C.COLOUR_NAMES[int(s.colour[i])])
    lines.append(C.SHAPES[int(s.glyph[i]) % len(C.SHAPES)])
    return [w.upper() for w in lines]


def make_text_scene(s: Scenes, i: int, colour: int) -> None:
    """Make scene ``i`` a describable shape scene (no digit, photo style, a colour) for a text image."""
    s.glyph[i] %= len(C.SHAPES)
    s.style[i] = 0
    if s.colour[i] < 0:
        s.colour[i] = colour


def _junk(u: np.ndarray) -> str:
    k = int(u[0] * 8)
    if k == 0:
        return f"IMG_{int(u[1] * 9000) + 1000}.jpg"
    if k == 1:
        return f"DSC{int(u[1] * 90000) + 10000:05d}.JPG"
    if k == 2:
        return ("image", "photo", "picture", "untitled", "thumbnail")[int(u[1] * 5)]
    if k == 3:
        return str(int(u[1] * 10 ** (1 + int(u[2] * 7))))
    if k in (4, 5):  # keyword spam, long enough to pass the length rules
        rng = np.random.default_rng(int(u[1] * 2**31))
        words = rng.choice(np.array(C.JUNK_WORDS), 3 + int(u[2] * 6))
        return " ".join(words)
    if k == 6:
        return ""
    return ("click here", "read more", "logo", "banner", "icon")[int(u[1] * 5)]


def plan_samples(seed: int, stream: int, shard: int, n: int, mix: NoiseMix,
                 backgrounds: tuple[int, ...] | None = None) -> PlannedSamples:
    """Draw one shard's scenes, noise kinds, captions and recorded sizes (deterministic)."""
    rng = np.random.default_rng([seed, stream, shard])
    kw = {} if backgrounds is None else {"backgrounds": backgrounds}
    s = sample_scenes(rng, n, sketch_share=mix.sketch, digit_share=mix.digits, **kw)
    kind = rng.choice(len(KINDS), n, p=mix.shares())
    other = sample_scenes(rng, n, sketch_share=mix.sketch, digit_share=mix.digits, **kw)  # for wrong captions
    u = rng.random((n, 8))
    aux = rng.random((n, 8))
    captions: list[str] = []
    language = np.full(n, "en", dtype=object)
    off_kind = np.where(kind == KINDS.index("off_distribution"), (u[:, 5] * 4).astype(np.int64), -1)
    clean_rows = np.flatnonzero(kind == 0)
    dup_of = np.full(n, -1, np.int64)
    shown = [""] * n
    t = rng.random((n, 3))  # text cards: whether colour and count are written, a colour for colourless scenes
    for i in range(n):
        k = KINDS[kind[i]]
        if k == "text_in_image":
            make_text_scene(s, i, int(t[i, 2] * len(C.COLOURS)))
        if k == "near_duplicate" and len(clean_rows):
            src = int(clean_rows[int(u[i, 6] * len(clean_rows))])
            dup_of[i] = src
            _copy_scene(s, src, i)
            s.jitter[i, 1:3] = np.clip(s.jitter[src, 1:3] + (u[i, 7] - 0.5) * 0.1, 0, 0.999)
            s.jitter[i, 24] = u[i, 5]
        if k in ("misaligned", "off_distribution"):
            captions.append(english_caption(other, i, u[i]))
        elif k == "wrong_attributes":
            _copy_scene(other, i, i, src_scenes=s)
            _perturb(other, i, u[i])
            captions.append(english_caption(other, i, u[i]))
        elif k == "non_english":
            lang = int(u[i, 4] * len(C.LANGUAGES))
            language[i] = C.LANGUAGES[lang]
            src = s if u[i, 5] < mix.non_english_aligned else other
            captions.append(C.foreign_caption(lang, int(u[i, 0] * 5), int(src.glyph[i]) % len(C.SHAPES),
                                              max(int(src.colour[i]), 0), int(src.count[i]),
                                              int(src.background[i])))
        elif k == "junk":
            captions.append(_junk(u[i]))
        elif k == "near_duplicate" and dup_of[i] >= 0 and u[i, 3] < 0.5:
            captions.append(captions[dup_of[i]] if dup_of[i] < i else english_caption(s, i, u[i]))
        else:
            captions.append(english_caption(s, i, u[i]))
        if k == "text_in_image":  # the caption's words, the colour or count sometimes left out
            shown[i] = "/".join(text_lines(s, i, captions[i], (t[i, 0] < 0.8, t[i, 1] < 0.8)))
    # recorded original sizes: ordinary photos, thumbnails < 200 px, banners with ratio > 3
    short = np.clip(np.exp(rng.normal(np.log(420), 0.45, n)), 200, 2400).astype(np.int64)
    ratio = 1.0 + np.abs(rng.normal(0, 0.45, n))
    tiny = kind == KINDS.index("tiny")
    short = np.where(tiny, (20 + aux[:, 0] * 130).astype(np.int64), short)
    extreme = kind == KINDS.index("extreme_aspect")
    ratio = np.where(extreme, 3.2 + aux[:, 1] * 5, np.minimum(ratio, 2.6))
    long_ = np.maximum(short, np.round(short * ratio).astype(np.int64))
    wide = aux[:, 2] < 0.6
    width = np.where(wide, long_, short)
    height = np.where(wide, short, long_)
    face = rng.random(n) < mix.faces
    return PlannedSamples(s, kind, captions, language, off_kind, shown, dup_of, width, height, face, aux)


def _copy_scene(s: Scenes, src: int, dst: int, src_scenes: Scenes | None = None) -> None:
    a = src_scenes or s
    for f in ("glyph", "colour", "count", "size", "position", "background", "style"):
        getattr(s, f)[dst] = getattr(a, f)[src]
    s.jitter[dst] = a.jitter[src]


def _perturb(s: Scenes, i: int, u: np.ndarray) -> None:
    """Change one attribute the caption will mention: colour, count or shape."""
    which = int(u[5] * 3)
    if which == 0 and s.colour[i] >= 0:
        s.colour[i] = (s.colour[i] + 1 + int(u[6] * (len(C.COLOURS) - 1))) % len(C.COLOURS)
    elif which == 1 and s.glyph[i] < len(C.SHAPES):
        s.count[i] = s.count[i] % 4 + 1
        s.position[i] = -1 if s.count[i] > 1 else 4
    else:
        base = len(C.SHAPES) if s.glyph[i] >= len(C.SHAPES) else 0
        span = 10 if base else len(C.SHAPES)
        s.glyph[i] = base + (s.glyph[i] - base + 1 + int(u[6] * (span - 1))) % span
