"""The concepts of the embedded world and the words that describe them (English and a small lexicon).

Everything a caption, a class name or an evaluation task says about an image comes from the tables
here, so the pool, the reference models' training set and the evaluation suite speak one language.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "heart",
    "hexagon", "pentagon", "diamond", "arrow", "ring", "crescent",
)
SHAPE_PLURALS: dict[str, str] = {s: s + ("es" if s.endswith("s") else "s") for s in SHAPES}

# Saturated object colours (RGB); backgrounds use muted tones so every colour stays visible.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 84, 220),
    "yellow": (240, 215, 30),
    "orange": (255, 127, 14),
    "purple": (128, 50, 180),
    "pink": (240, 110, 190),
    "cyan": (20, 200, 220),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# Backgrounds/textures seen in the pool, and ones held out for the "unseen backgrounds" shift.
BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered", "gradient", "speckled")
UNSEEN_BACKGROUNDS: tuple[str, ...] = ("grid", "wavy")
ALL_BACKGROUNDS: tuple[str, ...] = BACKGROUNDS + UNSEEN_BACKGROUNDS

COUNT_WORDS: tuple[str, ...] = ("one", "two", "three", "four")  # index + 1 = count
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
POSITION_PHRASES: dict[str, str] = {
    "left": "on the left", "right": "on the right", "top": "at the top",
    "bottom": "at the bottom", "center": "in the center",
}
DIGITS: tuple[str, ...] = tuple(str(i) for i in range(10))
DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
STYLES: tuple[str, ...] = ("photo", "sketch")

# --- a small real lexicon for non-English captions (so language ID can tell them apart) ----------
LANGUAGES: tuple[str, ...] = ("es", "de", "fr", "it")

_SHAPE_LEX: dict[str, tuple[str, ...]] = {
    # en: es, de, fr, it
    "circle": ("círculo", "Kreis", "cercle", "cerchio"),
    "square": ("cuadrado", "Quadrat", "carré", "quadrato"),
    "triangle": ("triángulo", "Dreieck", "triangle", "triangolo"),
    "star": ("estrella", "Stern", "étoile", "stella"),
    "cross": ("cruz", "Kreuz", "croix", "croce"),
    "heart": ("corazón", "Herz", "cœur", "cuore"),
    "hexagon": ("hexágono", "Sechseck", "hexagone", "esagono"),
    "pentagon": ("pentágono", "Fünfeck", "pentagone", "pentagono"),
    "diamond": ("rombo", "Raute", "losange", "rombo"),
    "arrow": ("flecha", "Pfeil", "flèche", "freccia"),
    "ring": ("anillo", "Ring", "anneau", "anello"),
    "crescent": ("media luna", "Halbmond", "croissant de lune", "mezzaluna"),
}
_COLOUR_LEX: dict[str, tuple[str, ...]] = {
    "red": ("rojo", "roter", "rouge", "rosso"),
    "green": ("verde", "grüner", "vert", "verde"),
    "blue": ("azul", "blauer", "bleu", "blu"),
    "yellow": ("amarillo", "gelber", "jaune", "giallo"),
    "orange": ("naranja", "oranger", "orange", "arancione"),
    "purple": ("morado", "violetter", "violet", "viola"),
    "pink": ("rosa", "rosa", "rose", "rosa"),
    "cyan": ("celeste", "türkiser", "turquoise", "azzurro"),
    "white": ("blanco", "weißer", "blanc", "bianco"),
    "black": ("negro", "schwarzer", "noir", "nero"),
}
_BG_LEX: dict[str, tuple[str, ...]] = {
    "plain": ("liso", "einfarbigem", "uni", "semplice"),
    "striped": ("rayado", "gestreiftem", "rayé", "a righe"),
    "dotted": ("de puntos", "gepunktetem", "à pois", "a pois"),
    "checkered": ("a cuadros", "kariertem", "à carreaux", "a quadretti"),
    "gradient": ("degradado", "verlaufendem", "dégradé", "sfumato"),
    "speckled": ("moteado", "gesprenkeltem", "moucheté", "maculato"),
    "grid": ("cuadriculado", "gerastertem", "quadrillé", "a griglia"),
    "wavy": ("ondulado", "welligem", "ondulé", "ondulato"),
}
_COUNT_LEX: tuple[tuple[str, ...], ...] = (
    ("un", "ein", "un", "un"),
    ("dos", "zwei", "deux", "due"),
    ("tres", "drei", "trois", "tre"),
    ("cuatro", "vier", "quatre", "quattro"),
)
# Templates per language: {n} count word, {s} shape word, {c} colour word, {b} background word.
_FOREIGN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "es": (
        "una foto de {n} {s} de color {c} sobre un fondo {b}",
        "imagen de {n} {s} {c} con fondo {b}, ideal para decorar",
        "dibujo de {n} {s} {c} para niños, descarga gratis",
        "el {s} {c} que compré ayer en la tienda",
        "nuestro nuevo diseño: {s} {c} sobre fondo {b}",
    ),
    "de": (
        "ein Foto von {n} {c} {s} auf {b} Hintergrund",
        "Bild mit {n} {c} {s} und {b} Hintergrund, jetzt kaufen",
        "Zeichnung von einem {c} {s} für Kinder, kostenlos herunterladen",
        "der {c} {s}, den ich gestern im Laden gekauft habe",
        "unser neues Design: {c} {s} auf {b} Hintergrund",
    ),
    "fr": (
        "une photo de {n} {s} {c} sur un fond {b}",
        "image de {n} {s} {c} avec un fond {b}, idéal pour décorer",
        "dessin d'un {s} {c} pour les enfants, à télécharger gratuitement",
        "le {s} {c} que j'ai acheté hier au magasin",
        "notre nouveau modèle : {s} {c} sur fond {b}",
    ),
    "it": (
        "una foto di {n} {s} di colore {c} su uno sfondo {b}",
        "immagine di {n} {s} {c} con sfondo {b}, perfetta per decorare",
        "disegno di un {s} {c} per bambini, da scaricare gratis",
        "il {s} {c} che ho comprato ieri al negozio",
        "il nostro nuovo design: {s} {c} su sfondo {b}",
    ),
}

# --- English alt-text templates ------------------------------------------------------------------
# {d} is the full description ("two red stars"), {D} the same capitalised, {b} the background word,
# {p} a position phrase ("" when there is none). Shares of templates are what a web crawl gives:
# mostly descriptive, some shop/blog phrasing around the description, a few terse ones.
EN_TEMPLATES: tuple[str, ...] = (
    "a photo of {d}",
    "{d} on a {b} background",
    "{D} on {b} background{p}",
    "picture of {d}",
    "close-up photo of {d}",
    "{D}, stock image",
    "{d} clipart isolated on a {b} background",
    "an image showing {d}{p}",
    "{D} - free download",
    "my favourite {d}",
    "{d} for sale, best price",
    "{d}",
)
SKETCH_TEMPLATES: tuple[str, ...] = (
    "a sketch of {d}",
    "a pencil drawing of {d}",
    "line drawing of {d}, outline art",
    "{D} sketch",
    "hand-drawn doodle of {d}",
)
DIGIT_TEMPLATES: tuple[str, ...] = (
    'the number "{n}" in {c}',
    "a {c} digit {n}",
    "the digit {n} on a {b} background",
    "number {n} sign, {c} on {b}",
    "house number {n}",
)

# Junk alt-text: what crawls carry when the page has nothing to say about the image.
JUNK_WORDS: tuple[str, ...] = (
    "free", "shipping", "best", "price", "buy", "now", "sale", "cheap", "discount", "online", "shop",
    "deal", "top", "new", "hot", "offer", "quality", "store", "order", "today", "official", "click",
)

# Classification templates (zero-shot), per evaluation family.
SHAPE_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c}.", "a {c}.", "a picture of a {c}.", "a close-up photo of a {c}.",
    "an image showing a {c}.", "a drawing of a {c}.", "a sketch of a {c}.",
)
COLOUR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} shape.", "something {c}.", "a {c} object.", "an image of a {c} thing.",
)
COUNT_TEMPLATES: tuple[str, ...] = (
    "a photo of {c} shapes.", "{c} objects.", "an image showing {c} things.",
)
BACKGROUND_TEMPLATES: tuple[str, ...] = (
    "a shape on a {c} background.", "a photo of an object on a {c} background.", "{c} background.",
)
POSITION_TEMPLATES: tuple[str, ...] = (
    "a shape {c}.", "an object {c}.", "a photo of a shape {c}.",
)
DIGIT_CLASS_TEMPLATES: tuple[str, ...] = (
    'a photo of the number: "{c}".', "the digit {c}.", "the number {c}.", "a {c}.",
)
SIZE_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} shape.", "a {c} object.",
)


def describe(glyph: int, colour: int, count: int, size: int, sketch: bool) -> str:
    """The plain English description of a scene: "two small red stars", "a sketch-style circle"."""
    name = SHAPES[glyph]
    noun = name if count == 1 else SHAPE_PLURALS[name]
    words: list[str] = []
    words.append(("an" if _vowel(_first(size, colour, name, sketch)) else "a") if count == 1
                 else COUNT_WORDS[count - 1])
    if size >= 0:
        words.append(SIZES[size])
    if not sketch and colour >= 0:
        words.append(COLOUR_NAMES[colour])
    words.append(noun)
    return " ".join(words)


def _first(size: int, colour: int, name: str, sketch: bool) -> str:
    if size >= 0:
        return SIZES[size]
    if not sketch and colour >= 0:
        return COLOUR_NAMES[colour]
    return name


def _vowel(word: str) -> bool:
    return word[:1] in "aeiou"


def foreign_caption(lang: int, tmpl: int, glyph: int, colour: int, count: int, bg: int) -> str:
    """A caption in language ``LANGUAGES[lang]`` built from the lexicon (grammar kept simple)."""
    t = _FOREIGN_TEMPLATES[LANGUAGES[lang]]
    return t[tmpl % len(t)].format(
        n=_COUNT_LEX[count - 1][lang], s=_SHAPE_LEX[SHAPES[glyph]][lang],
        c=_COLOUR_LEX[COLOUR_NAMES[colour]][lang], b=_BG_LEX[ALL_BACKGROUNDS[bg]][lang],
    )


def concept_names() -> list[str]:
    """The concept list standing in for ImageNet-21k's synsets (text-based filter asset)."""
    words = list(SHAPES) + [SHAPE_PLURALS[s] for s in SHAPES] + ["digit", "digits", "number", "numbers"]
    return words
