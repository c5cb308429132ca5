"""Measure a generated pool against its ground truth: is the noise mix right for the baselines?

Reports what ``docs/synth.md`` quotes: the AUC of ``clip_l14_similarity_score`` for clean vs
misaligned samples, how the top 30% by that score splits into noise kinds, the basic filter's keep
fraction (the original rules: fastText language == en, >2 words, >5 characters, min side >= 200,
aspect <= 3), and how often fastText language ID marks the non-English captions as not English.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def read_pool_with_truth(pool_dir: str | os.PathLike[str]) -> Any:
    """One pyarrow table: the metadata columns joined (row-aligned, per stem) with the ground truth."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = Path(pool_dir)
    tables = []
    for f in sorted((pool / "metadata").glob("*.parquet")):
        m = pq.read_table(f, columns=["uid", "text", "original_width", "original_height",
                                      "clip_b32_similarity_score", "clip_l14_similarity_score"])
        t = pq.read_table(pool / "truth" / f.name)
        if m["uid"] != t["uid"]:
            raise ValueError(f"{f}: ground truth rows are not aligned with the metadata")
        for c in ("kind", "language", "glyph"):
            m = m.append_column(c, t[c])
        tables.append(m)
    return pa.concat_tables(tables)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted half."""
    from scipy.stats import rankdata

    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def pool_quality(pool_dir: str | os.PathLike[str], fraction: float = 0.3) -> dict[str, Any]:
    """The calibration figures of a pool (see the module docstring)."""
    from datacomp.filters.text import fasttext_language

    t = read_pool_with_truth(pool_dir)
    kind = np.asarray(t["kind"].to_pylist(), dtype=object)
    language = np.asarray(t["language"].to_pylist(), dtype=object)
    text = t["text"]
    l14 = t["clip_l14_similarity_score"].to_numpy()
    b32 = t["clip_b32_similarity_score"].to_numpy()
    clean = kind == "clean"
    noisy = ~clean & (kind != "near_duplicate")
    lang, _ = fasttext_language(text)
    lid = np.asarray(lang.to_pylist(), dtype=object)
    words = np.array([len(s.split()) for s in text.to_pylist()])
    chars = np.array([len(s) for s in text.to_pylist()])
    w = t["original_width"].to_numpy()
    h = t["original_height"].to_numpy()
    basic = (lid == "en") & (words > 2) & (chars > 5) & (np.minimum(w, h) >= 200) & (
        np.maximum(w, h) / np.minimum(w, h) <= 3.0)
    n_top = int(len(l14) * fraction)
    top = np.argsort(-l14, kind="stable")[:n_top]
    top_kinds = {k: round(float(np.mean(kind[top] == k)), 4) for k in sorted(set(kind))}
    foreign = language != "en"
    english_templates = ~foreign & ~np.isin(kind, ["junk"])
    return {
        "samples": int(len(kind)),
        "kinds": {k: int(np.sum(kind == k)) for k in sorted(set(kind))},
        "auc_l14_clean_vs_misaligned": auc(l14[clean], l14[kind == "misaligned"]),
        "auc_l14_clean_vs_all_noise": auc(l14[clean], l14[noisy]),
        "auc_b32_clean_vs_misaligned": auc(b32[clean], b32[kind == "misaligned"]),
        f"l14_top{int(fraction * 100)}_kinds": top_kinds,
        "basic_keep_fraction": round(float(basic.mean()), 4),
        "basic_kept_kinds": {k: round(float(np.mean(kind[basic] == k)), 4) for k in sorted(set(kind))},
        "lid_non_english_marked": round(float(np.mean(lid[foreign] != "en")), 4) if foreign.any() else None,
        "lid_non_english_exact": round(float(np.mean(lid[foreign] == language[foreign])), 4)
        if foreign.any() else None,
        "lid_english_marked_en": round(float(np.mean(lid[english_templates] == "en")), 4),
    }
