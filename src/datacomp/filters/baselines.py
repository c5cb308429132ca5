"""The DataComp baselines (spec §4) as columnar rules; ``params.compat`` selects the original's.

Rules are listed in the order the summary counts removals (each rule counts the rows it removes
among those the earlier rules kept). Language ID comes last: it is the expensive rule, computed
only for the rows the others keep (the selection is the same AND of all rules in any order).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datacomp.artifacts import BASELINE_RUNS
from datacomp.errors import DataCompError
from datacomp.filters.registry import FilterParams, Mask, register_filter

LAION_B32_THRESHOLD = 0.28

# The baseline filter names (spec section 4).
BASELINES: tuple[str, ...] = tuple(dict.fromkeys(f for f, _ in BASELINE_RUNS.values()))


def _np(col: pa.ChunkedArray | pa.Array | np.ndarray) -> np.ndarray:
    if isinstance(col, np.ndarray):
        return col
    return col.to_numpy(zero_copy_only=False)


def _is(col: pa.ChunkedArray | pa.Array, value: str) -> Mask:
    """``col == value`` with nulls False, on dictionary or plain strings."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        codes = np.flatnonzero(np.asarray(col.dictionary.to_pylist(), dtype=object) == value)
        idx = pc.fill_null(col.indices, -1).to_numpy(zero_copy_only=False)
        return np.isin(idx, codes)
    return pc.fill_null(pc.equal(col, value), False).to_numpy(zero_copy_only=False)


def at_least(scores: np.ndarray, threshold: float) -> Mask:
    """``scores >= threshold`` in the column's own precision, as the original (pandas on a float32
    column; numpy 2 alike, NEP 50): a float32 column is compared with ``float32(threshold)``, so a row at
    exactly ``float32(0.32)`` (0.3199999928) passes ``--threshold 0.32``. NaN never passes."""
    s = np.asarray(scores)
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    t = s.dtype.type(threshold)
    with np.errstate(invalid="ignore"):
        return s >= t


def score_column(arch: str | None) -> str:
    if arch not in ("b32", "l14"):
        raise DataCompError(f"--arch must be 'b32' or 'l14', got {arch!r}")
    return f"clip_{arch}_similarity_score"


def _score_needs(p: FilterParams) -> tuple[str, ...]:
    cols = (score_column(p.arch),)
    if p.cut is not None and p.cut.tie_uid is not None:
        cols += ("uid_f0", "uid_f1")
    return cols


def score_rule(t: pa.Table, p: FilterParams) -> tuple[str, Mask]:
    col = score_column(p.arch)
    scores = _np(t[col])
    if p.cut is not None:
        uids = None
        if p.cut.tie_uid is not None:
            uids = np.empty(t.num_rows, dtype="u8,u8")
            uids["f0"], uids["f1"] = _np(t["uid_f0"]), _np(t["uid_f1"])
        return f"{p.arch}>=threshold", p.cut.mask(scores, uids)
    if p.threshold is None:
        raise DataCompError("clip-score filters need --threshold or --fraction")
    return f"{p.arch}>={p.threshold:g}", at_least(scores, p.threshold)


@register_filter("no_filter", needs=(), description="every sample of the pool")
def no_filter(t: pa.Table, p: FilterParams) -> dict[str, Mask]:
    return {"all": np.ones(t.num_rows, bool)}


# Language ID is the one expensive rule: it is listed (and counted) last and runs only on the rows
# the cheaper rules keep (``late_rules``).
ENGLISH = {"english": ("lang",)}


@register_filter("basic_filter", needs=("lang", "text_words", "text_chars", "min_side", "aspect"),
                 late_rules=ENGLISH,
                 description=">2 words, >5 chars, min side >=200, aspect <=3, English (fastText)")
def basic_filter(t: pa.Table, p: FilterParams) -> dict[str, Mask]:
    with np.errstate(invalid="ignore"):
        return {
            "words>2": _np(t["text_words"]) > 2,
            "chars>5": _np(t["text_chars"]) > 5,
            "min_side>=200": _np(t["min_side"]) >= 200,
            "aspect<=3": _np(t["aspect"]) <= 3.0,
            "english": _is(t["lang"], "en"),
        }


@register_filter("text_based", needs=lambda p: ("lang", "in21k_compat" if p.compat else "in21k"),
                 needs_synsets=True, late_rules=ENGLISH,
                 description="a caption word naming an ImageNet-21k synset, English")
def text_based(t: pa.Table, p: FilterParams) -> dict[str, Mask]:
    return {
        "in21k_word": _np(t["in21k_compat" if p.compat else "in21k"]).astype(bool),
        "english": _is(t["lang"], "en"),
    }


@register_filter("clip_score", needs=_score_needs, uses_score=True,
                 description="CLIP score (b32 or l14) above a threshold or in the top fraction")
def clip_score(t: pa.Table, p: FilterParams) -> dict[str, Mask]:
    name, m = score_rule(t, p)
    return {name: m}


def _caption_prefilter(t: pa.Table) -> dict[str, Mask]:
    """Spec §4.5: English, >1 fastText token, >5 characters."""
    return {
        "tokens>1": _np(t["ft_tokens"]) > 1,
        "chars>5": _np(t["text_chars"]) > 5,
        "english": _is(t["lang"], "en"),
    }


def _cluster_rule(t: pa.Table, p: FilterParams) -> Mask:
    if p.targets is None:
        raise DataCompError("image-based filters need target clusters")
    ids = _np(t["cluster_dot" if p.compat else "cluster_l2"])
    return np.isin(ids, p.targets)


def _image_needs(p: FilterParams) -> tuple[str, ...]:
    return ("lang", "ft_tokens", "text_chars", "cluster_dot" if p.compat else "cluster_l2")


@register_filter("image_based", needs=_image_needs, image_based=True, late_rules=ENGLISH,
                 description="caption pre-filter, then images in k-means clusters holding ImageNet images")
def image_based(t: pa.Table, p: FilterParams) -> dict[str, Mask]:
    return {**_caption_prefilter(t), "target_cluster": _cluster_rule(t, p)}


@register_filter("image_based_intersect_clip_score", needs=lambda p: _score_needs(p) + _image_needs(p),
                 uses_score=True, image_based=True, late_rules=ENGLISH, description="clip_score AND image_based")
def image_based_intersect_clip_score(t: pa.Table, p: FilterParams) -> dict[str, Mask]:
    name, m = score_rule(t, p)
    return {name: m, **_caption_prefilter(t), "target_cluster": _cluster_rule(t, p)}


@register_filter("laion2b", needs=("clip_b32_similarity_score", "cld3_lang"),
                 description="LAION-2B-en: b32 score >= 0.28 and CLD3 language 'en'")
def laion2b(t: pa.Table, p: FilterParams) -> dict[str, Mask]:
    b32 = at_least(_np(t["clip_b32_similarity_score"]), LAION_B32_THRESHOLD)
    return {"b32>=0.28": b32, "cld3_english": _is(t["cld3_lang"], "en")}
