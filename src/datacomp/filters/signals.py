"""Per-sample signals, computed once per metadata parquet and cached as columnar files.

A filter names the columns it needs; each column comes from one *provider*:

- ``meta``: read from the metadata parquet itself (``uid``, ``text``, sizes, CLIP scores), plus
  cheap derived columns (``min_side``, ``aspect``, ``uid_f0``/``uid_f1``) computed on the fly;
- cached groups, one parquet per metadata file under ``<signals_dir>/<group>/<stem>.parquet``:
  ``caption`` (fastText language and confidence, character/word/fastText-token counts),
  ``cld3`` (CLD3 language; only where ``clip_b32_similarity_score >= 0.28``, the rows the LAION-2B
  rule can keep — null elsewhere), ``concepts-<hash>`` (ImageNet-21k word match, fixed and compat),
  ``clusters-<hash>`` (nearest centroid by L2 and by dot product).

So a new combination of rules reads small cached columns instead of re-running language ID.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from datacomp.errors import DataCompError
from datacomp.filters import metadata as md
from datacomp.filters import text as tx
from datacomp.io import atomic_path
from datacomp.uids import hex_to_uids

log = logging.getLogger(__name__)

LAION_CLD3_MIN_B32 = 0.28
META_COLUMNS = ("uid", "url", "text", "original_width", "original_height",
                "clip_b32_similarity_score", "clip_l14_similarity_score")
DERIVED = {"min_side": ("original_width", "original_height"), "aspect": ("original_width", "original_height"),
           "uid_f0": ("uid",), "uid_f1": ("uid",)}
GROUP_COLUMNS = {
    "caption": ("lang", "lang_score", "text_chars", "text_words", "ft_tokens"),
    "cld3": ("cld3_lang",),
    "concepts": ("in21k", "in21k_compat"),
    "clusters": ("cluster_l2", "cluster_dot"),
}
COLUMN_GROUP = {c: g for g, cols in GROUP_COLUMNS.items() for c in cols}
ALL_COLUMNS = (*META_COLUMNS, *DERIVED, *COLUMN_GROUP)


@dataclass(frozen=True)
class SignalConfig:
    """Where the cache lives and the inputs that parameterise the cached groups."""

    signals_dir: str
    synsets_file: str | None = None  # entity list for ``concepts`` (wnids or concept names)
    centroids_file: str | None = None  # (k, d) centroids for ``clusters``
    embedding_key: str = "l14_img"
    extra: dict[str, str] = field(default_factory=dict)

    def group_dir(self, group: str) -> Path:
        root = Path(self.signals_dir)
        if group == "concepts":
            if not self.synsets_file:
                raise DataCompError("the concept signals need a synset list (--synsets FILE)")
            return root / f"concepts-{_file_hash(self.synsets_file)}"
        if group == "clusters":
            if not self.centroids_file:
                raise DataCompError("the cluster signals need centroids (--centroids FILE)")
            return root / f"clusters-{self.embedding_key}-{_file_hash(self.centroids_file)}"
        return root / group


def _file_hash(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataCompError(f"{p}: file not found")
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:12]


def groups_for(columns: list[str] | tuple[str, ...]) -> list[str]:
    """Cached groups needed for ``columns`` (in a stable order)."""
    out = []
    for c in columns:
        g = COLUMN_GROUP.get(c)
        if g and g not in out:
            out.append(g)
    return out


def meta_columns_for(columns: list[str] | tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for c in columns:
        for src in DERIVED.get(c, (c,) if c in META_COLUMNS else ()):
            if src not in out:
                out.append(src)
    return out


def _signal_path(cfg: SignalConfig, group: str, parquet: Path) -> Path:
    return cfg.group_dir(group) / f"{parquet.stem}.parquet"


def _source_tag(parquet: Path) -> str:
    """Identity of the metadata file a signal file was computed from (path, size, mtime)."""
    st = parquet.stat()
    return f"{parquet.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _is_current(path: Path, parquet: Path) -> bool:
    if not path.is_file():
        return False
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply recomputed
        return False
    return meta.get(b"datacomp_source", b"").decode() == _source_tag(parquet)


def compute_group(group: str, parquet: Path, cfg: SignalConfig) -> pa.Table:
    """Compute one signal group for one metadata file (vectorised; see module docstring)."""
    if group == "caption":
        text = tx.as_text(md.read_columns(parquet, ["text"]).column("text"))
        lang, score = tx.fasttext_language(text)
        return pa.table({
            "lang": lang, "lang_score": score, "text_chars": tx.char_count(text),
            "text_words": tx.word_count(text), "ft_tokens": tx.fasttext_token_count(text),
        })
    if group == "cld3":
        t = md.read_columns(parquet, ["text", "clip_b32_similarity_score"])
        b32 = t.column("clip_b32_similarity_score").to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore"):
            rows = b32 >= LAION_CLD3_MIN_B32
        return pa.table({"cld3_lang": tx.cld3_language(t.column("text"), rows)})
    if group == "concepts":
        text = md.read_columns(parquet, ["text"]).column("text")
        m = tx.entity_matcher(str(Path(cfg.synsets_file).resolve()))  # type: ignore[arg-type]
        return pa.table({"in21k": m.match(text, compat=False), "in21k_compat": m.match(text, compat=True)})
    if group == "clusters":
        from datacomp.filters.clusters import assign

        n = md.num_rows(parquet)
        emb = md.read_embeddings(parquet, cfg.embedding_key, rows=n)
        cents = _centroids(cfg.centroids_file)  # type: ignore[arg-type]
        return pa.table({"cluster_l2": assign(emb, cents, "l2"), "cluster_dot": assign(emb, cents, "dot")})
    raise DataCompError(f"unknown signal group {group!r}")


_CENTROIDS: dict[str, np.ndarray] = {}


def _centroids(path: str) -> np.ndarray:
    from datacomp.filters.clusters import load_matrix

    if path not in _CENTROIDS:
        _CENTROIDS.clear()
        _CENTROIDS[path] = load_matrix(path, "centroids")
    return _CENTROIDS[path]


def ensure_signals(parquet: Path, groups: list[str], cfg: SignalConfig) -> dict[str, int]:
    """Compute and cache the missing groups for one file; return rows computed per group."""
    rows = md.num_rows(parquet)
    done: dict[str, int] = {}
    for g in groups:
        path = _signal_path(cfg, g, parquet)
        if _is_current(path, parquet):
            continue
        table = compute_group(g, parquet, cfg)
        if table.num_rows != rows:
            raise DataCompError(f"{parquet}: signal group {g} produced {table.num_rows} rows, expected {rows}")
        table = table.replace_schema_metadata({"datacomp_source": _source_tag(parquet)})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        done[g] = rows
    return done


def missing_groups(parquet: Path, groups: list[str], cfg: SignalConfig) -> list[str]:
    return [g for g in groups if not _is_current(_signal_path(cfg, g, parquet), parquet)]


def signals_task(parquet: str, groups: list[str], cfg: SignalConfig) -> dict[str, object]:
    """Engine task: make one file's cached signals current."""
    computed = ensure_signals(Path(parquet), groups, cfg)
    return {"rows": md.num_rows(Path(parquet)), "computed": computed}


def load_columns(parquet: Path, columns: list[str] | tuple[str, ...], cfg: SignalConfig | None) -> pa.Table:
    """The named columns for one metadata file, from the parquet, derived on the fly, or the cache."""
    columns = list(dict.fromkeys(columns))
    unknown = [c for c in columns if c not in ALL_COLUMNS]
    if unknown:
        raise DataCompError(f"unknown signal column(s) {unknown}; available: {', '.join(ALL_COLUMNS)}")
    meta_cols = meta_columns_for(columns)
    meta = md.read_columns(parquet, meta_cols) if meta_cols else None
    n = meta.num_rows if meta is not None else md.num_rows(parquet)
    out: dict[str, pa.Array | np.ndarray] = {}
    cached: dict[str, pa.Table] = {}
    for c in columns:
        if c in META_COLUMNS:
            out[c] = meta.column(c)  # type: ignore[union-attr]
        elif c in ("min_side", "aspect"):
            w = meta.column("original_width").to_numpy(zero_copy_only=False).astype(np.float64)  # type: ignore[union-attr]
            h = meta.column("original_height").to_numpy(zero_copy_only=False).astype(np.float64)  # type: ignore[union-attr]
            if c == "min_side":
                out[c] = np.minimum(w, h)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[c] = np.maximum(w, h) / np.minimum(w, h)
        elif c in ("uid_f0", "uid_f1"):
            if "uid_f0" not in out:
                try:
                    u = hex_to_uids(meta.column("uid"))  # type: ignore[union-attr]
                except DataCompError as e:
                    raise DataCompError(f"{parquet}: {e}") from None
                out["uid_f0"], out["uid_f1"] = u["f0"], u["f1"]
        else:
            g = COLUMN_GROUP[c]
            if g not in cached:
                if cfg is None:
                    raise DataCompError(f"column {c!r} needs the signals cache (--signals-dir)")
                path = _signal_path(cfg, g, parquet)
                if not _is_current(path, parquet):
                    ensure_signals(parquet, [g], cfg)
                cached[g] = pq.read_table(path)
                if cached[g].num_rows != n:
                    raise DataCompError(f"{path}: {cached[g].num_rows} rows, {parquet.name} has {n}")
            out[c] = cached[g].column(c)
    return pa.table({c: out[c] for c in columns})


def default_signals_dir(output: str | os.PathLike[str]) -> Path:
    """Beside the output: ``<output dir>/signals``."""
    return Path(output).resolve().parent / "signals"
