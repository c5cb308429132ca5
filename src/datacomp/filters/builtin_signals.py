"""The built-in signals the DataComp baselines read, each one declarative unit (see ``register_signal``).

A user's signal is written the same way in a ``--plugin`` file or an installed package's
``datacomp.plugins`` entry point; ``tests/plugins/brightness.py`` is one that reads image pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datacomp.filters import text as tx
from datacomp.filters.registry import register_signal
from datacomp.filters.signals import SignalInputs

LAION_CLD3_MIN_B32 = 0.28


@register_signal("lang", {"lang": "string", "lang_score": "float32"}, meta=("text",), row_lazy=True,
                 description="fastText language (top-1) and its confidence; for the rows a rule reaches")
def lang(x: SignalInputs) -> dict[str, object]:
    code, score = tx.fasttext_language(tx.as_text(x.column("text")))
    return {"lang": code, "lang_score": score}


@register_signal("caption", {"text_chars": "int32", "text_words": "int32"}, meta=("text",),
                 description="caption characters and str.split() words")
def caption(x: SignalInputs) -> dict[str, object]:
    text = tx.as_text(x.column("text"))
    return {"text_chars": tx.char_count(text), "text_words": tx.word_count(text)}


@register_signal("ft_tokens", {"ft_tokens": "int32"}, meta=("text",), description="fasttext.tokenize token count")
def ft_tokens(x: SignalInputs) -> dict[str, object]:
    return {"ft_tokens": tx.fasttext_token_count(x.column("text"))}


@register_signal("cld3", {"cld3_lang": "string"}, meta=("text", "clip_b32_similarity_score"),
                 description=f"CLD3 language, only where clip_b32_similarity_score >= {LAION_CLD3_MIN_B32} "
                 "(the rows LAION-2B can keep), null elsewhere")
def cld3(x: SignalInputs) -> dict[str, object]:
    b32 = x.column("clip_b32_similarity_score").to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(invalid="ignore"):
        laion_rows = b32 >= LAION_CLD3_MIN_B32
    return {"cld3_lang": tx.cld3_language(x.column("text"), laion_rows)}


def _concepts(x: SignalInputs, compat: bool) -> np.ndarray:
    m = tx.entity_matcher(str(Path(x.asset("synsets")).resolve()))
    return m.match(x.column("text"), compat=compat)


@register_signal("concepts", {"in21k": "bool"}, meta=("text",), assets=("synsets",),
                 description="a caption word names an entity of the synset list (fixed rule)")
def concepts(x: SignalInputs) -> dict[str, object]:
    return {"in21k": _concepts(x, compat=False)}


@register_signal("concepts_compat", {"in21k_compat": "bool"}, meta=("text",), assets=("synsets",),
                 description="the same with the original's rule (--compat)")
def concepts_compat(x: SignalInputs) -> dict[str, object]:
    return {"in21k_compat": _concepts(x, compat=True)}


def _embedding_key(cfg: object) -> str:
    return str(cfg.embedding_key)  # type: ignore[attr-defined]


def _clusters(x: SignalInputs, metric: str) -> np.ndarray:
    from datacomp.filters.clusters import assign

    path = x.asset("centroids")
    cents = _centroids(path)
    emb = x.array("{embedding_key}", dim=cents.shape[1], dim_source=f"centroids {Path(path).name}")
    return assign(emb, cents, metric)


@register_signal("clusters", {"cluster_l2": "int32"}, arrays=("{embedding_key}",), assets=("centroids",),
                 params=_embedding_key, description="nearest centroid of the l14 image embedding, by L2")
def clusters(x: SignalInputs) -> dict[str, object]:
    return {"cluster_l2": _clusters(x, "l2")}


@register_signal("clusters_dot", {"cluster_dot": "int32"}, arrays=("{embedding_key}",), assets=("centroids",),
                 params=_embedding_key, description="nearest centroid by dot product (--compat)")
def clusters_dot(x: SignalInputs) -> dict[str, object]:
    return {"cluster_dot": _clusters(x, "dot")}


_CENTROIDS: dict[str, np.ndarray] = {}


def _centroids(path: str) -> np.ndarray:
    from datacomp.filters.clusters import load_matrix

    if path not in _CENTROIDS:
        _CENTROIDS.clear()
        _CENTROIDS[path] = load_matrix(path, "centroids")
    return _CENTROIDS[path]

