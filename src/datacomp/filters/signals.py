"""Per-sample signals, computed lazily per signal group and per metadata parquet, cached as files.

A filter names the columns it needs; each column comes from one *provider*:

- ``meta``: read from the metadata parquet itself (``uid``, ``text``, sizes, CLIP scores), plus
  cheap derived columns (``min_side``, ``aspect``, ``uid_f0``/``uid_f1``) computed on the fly;
- cached groups, one parquet per metadata file under ``<signals_dir>/<group>/<stem>.parquet``:
  ``lang`` (fastText language and confidence, distinct captions in batched ``predict`` calls;
  row-lazy: possibly only for the rows a rule reached, null elsewhere), ``caption``
  (character and ``str.split()`` word counts) and ``ft_tokens`` (``fasttext.tokenize`` counts),
  ``cld3`` (CLD3 language; only where ``clip_b32_similarity_score >= 0.28``, the rows the LAION-2B
  rule can keep — null elsewhere), ``concepts-<hash>`` / ``concepts_compat-<hash>`` (ImageNet-21k
  word match, fixed / original rule), ``clusters-<hash>`` / ``clusters_dot-<hash>`` (nearest
  centroid by L2 / by dot product).

Groups are small on purpose: a run computes only the groups its columns need (basic_filter never
runs CLD3 or WordNet), and a later rule that needs more computes only the groups still missing
for each file and reads the rest. So a new combination of rules reads small cached columns
instead of re-running language ID.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
    "lang": ("lang", "lang_score"),
    "caption": ("text_chars", "text_words"),
    "ft_tokens": ("ft_tokens",),
    "cld3": ("cld3_lang",),
    "concepts": ("in21k",),
    "concepts_compat": ("in21k_compat",),
    "clusters": ("cluster_l2",),
    "clusters_dot": ("cluster_dot",),
}
# Metadata columns each group is computed from (read once per file for all the groups computed).
GROUP_INPUTS = {"lang": ("text",), "caption": ("text",), "ft_tokens": ("text",),
                "cld3": ("text", "clip_b32_similarity_score"), "concepts": ("text",), "concepts_compat": ("text",),
                "clusters": (), "clusters_dot": ()}
# Groups that can be computed for some rows only (null elsewhere; ``datacomp_partial`` in the file's
# metadata): a rule that reads them is evaluated last, on the rows the other rules keep, and a later
# need for more rows computes just the rows still null.
ROW_LAZY_GROUPS = ("lang",)
# Groups whose folder name carries the hash of an input file (the entity list, the centroids).
SYNSET_GROUPS = ("concepts", "concepts_compat")
CENTROID_GROUPS = ("clusters", "clusters_dot")
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
        if group in SYNSET_GROUPS:
            if not self.synsets_file:
                raise DataCompError("the concept signals need a synset list (--synsets FILE)")
            return root / f"{group}-{_file_hash(self.synsets_file)}"
        if group in CENTROID_GROUPS:
            if not self.centroids_file:
                raise DataCompError("the cluster signals need centroids (--centroids FILE)")
            return root / f"{group}-{self.embedding_key}-{_file_hash(self.centroids_file)}"
        return root / group


@functools.lru_cache(maxsize=16)
def _file_hash_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:12]


def _file_hash(path: str) -> str:
    """Content hash naming a parameterised group's folder (memoised per path, size and mtime)."""
    p = Path(path)
    if not p.is_file():
        raise DataCompError(f"{p}: file not found")
    st = p.stat()
    return _file_hash_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


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


def _state(path: Path, parquet: Path, group: str | None = None) -> str:
    """``"full"``, ``"partial"`` (a row-lazy group with rows not computed yet) or ``"missing"``.

    Missing also covers a file computed from another version of ``parquet`` (path, size, mtime),
    a torn or foreign file, and one of an older cache layout (without the group's columns).
    """
    if not path.is_file():
        return "missing"
    try:
        schema = pq.read_schema(path)
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply recomputed
        return "missing"
    meta = schema.metadata or {}
    if meta.get(b"datacomp_source", b"").decode() != _source_tag(parquet):
        return "missing"
    if group is not None and not set(GROUP_COLUMNS[group]) <= set(schema.names):
        return "missing"
    return "partial" if meta.get(b"datacomp_partial") == b"1" else "full"


def _is_current(path: Path, parquet: Path, group: str | None = None) -> bool:
    """The cached file holds the group for every row of this version of ``parquet``."""
    return _state(path, parquet, group) == "full"


def compute_group(group: str, parquet: Path, cfg: SignalConfig, meta: pa.Table | None = None,
                  rows: np.ndarray | None = None) -> pa.Table:
    """Compute one signal group for one metadata file (vectorised; see module docstring).

    ``meta``: the file's metadata columns when the caller has read them already (``GROUP_INPUTS``).
    ``rows``: for a row-lazy group, the rows to compute (a mask); the others are null.
    """
    if group not in GROUP_COLUMNS:
        raise DataCompError(f"unknown signal group {group!r}")
    need = list(GROUP_INPUTS[group])
    if need and (meta is None or not set(need) <= set(meta.column_names)):
        meta = md.read_columns(parquet, need)
    if group == "lang":
        text = tx.as_text(meta.column("text"))  # type: ignore[union-attr]
        if rows is None:
            lang, score = tx.fasttext_language(text)
            return pa.table({"lang": lang, "lang_score": score})
        idx = np.flatnonzero(rows)
        lang, score = tx.fasttext_language(text.take(pa.array(idx, pa.int64())))
        return _scatter({"lang": lang.cast(pa.string()), "lang_score": pa.array(score)}, idx, len(text))
    if group == "caption":
        text = tx.as_text(meta.column("text"))  # type: ignore[union-attr]
        return pa.table({"text_chars": tx.char_count(text), "text_words": tx.word_count(text)})
    if group == "ft_tokens":
        return pa.table({"ft_tokens": tx.fasttext_token_count(meta.column("text"))})  # type: ignore[union-attr]
    if group == "cld3":
        b32 = meta.column("clip_b32_similarity_score").to_numpy(zero_copy_only=False).astype(np.float64)  # type: ignore[union-attr]
        with np.errstate(invalid="ignore"):
            laion_rows = b32 >= LAION_CLD3_MIN_B32
        return pa.table({"cld3_lang": tx.cld3_language(meta.column("text"), laion_rows)})  # type: ignore[union-attr]
    if group in SYNSET_GROUPS:
        m = tx.entity_matcher(str(Path(cfg.synsets_file).resolve()))  # type: ignore[arg-type]
        col = GROUP_COLUMNS[group][0]
        return pa.table({col: m.match(meta.column("text"), compat=group == "concepts_compat")})  # type: ignore[union-attr]
    from datacomp.filters.clusters import assign

    n = md.num_rows(parquet)
    cents = _centroids(cfg.centroids_file)  # type: ignore[arg-type]
    emb = md.read_embeddings(parquet, cfg.embedding_key, rows=n, dim=cents.shape[1],
                             dim_source=f"centroids {Path(cfg.centroids_file).name}")  # type: ignore[arg-type]
    metric = "dot" if group == "clusters_dot" else "l2"
    return pa.table({GROUP_COLUMNS[group][0]: assign(emb, cents, metric)})


_CENTROIDS: dict[str, np.ndarray] = {}


def _centroids(path: str) -> np.ndarray:
    from datacomp.filters.clusters import load_matrix

    if path not in _CENTROIDS:
        _CENTROIDS.clear()
        _CENTROIDS[path] = load_matrix(path, "centroids")
    return _CENTROIDS[path]


def ensure_signals(parquet: Path, groups: list[str], cfg: SignalConfig,
                   rows: np.ndarray | None = None) -> dict[str, int]:
    """Compute and cache what is missing of ``groups`` for one file; return rows computed per group.

    Groups already cached are left as they are. ``rows`` (a mask) limits the row-lazy groups
    (``ROW_LAZY_GROUPS``) to those rows; a row-lazy group computed for some rows before is
    completed with just the rows still null. Each group is its own file, written atomically, so a
    killed run keeps the groups it finished and a later run computes only what is still missing.
    """
    n = md.num_rows(parquet)
    done: dict[str, int] = {}
    todo: list[tuple[str, pa.Table | None, np.ndarray | None]] = []
    for g in groups:
        path = _signal_path(cfg, g, parquet)
        state = _state(path, parquet, g)
        if state == "full":
            continue
        if g not in ROW_LAZY_GROUPS:
            todo.append((g, None, None))
            continue
        old = md.read_parquet(path, list(GROUP_COLUMNS[g])) if state == "partial" else None
        have = np.zeros(n, bool) if old is None else pc.is_valid(old.column(GROUP_COLUMNS[g][0])).to_numpy(
            zero_copy_only=False)
        want = np.ones(n, bool) if rows is None else np.asarray(rows, bool)
        need = want & ~have
        if need.any() or state == "missing":  # (a file even when no row is wanted: readers expect one)
            todo.append((g, old, need))
    inputs = list(dict.fromkeys(c for g, _, _ in todo for c in GROUP_INPUTS.get(g, ())))
    meta = md.read_columns(parquet, inputs) if inputs else None
    for g, old, need in todo:
        if need is None:
            table, partial = compute_group(g, parquet, cfg, meta), False
        else:
            every = old is None and bool(need.all())
            table = compute_group(g, parquet, cfg, meta, rows=None if every else need)
            if old is not None:
                table = _merge(old, table, need)
            partial = not every and table.column(GROUP_COLUMNS[g][0]).null_count > 0
        if table.num_rows != n:
            raise DataCompError(f"{parquet}: signal group {g} produced {table.num_rows} rows, expected {n}")
        tags = {"datacomp_source": _source_tag(parquet)}
        if partial:
            tags["datacomp_partial"] = "1"
        with atomic_path(_signal_path(cfg, g, parquet)) as tmp:
            pq.write_table(table.replace_schema_metadata(tags), tmp, compression="zstd")
        done[g] = n if need is None else int(need.sum())
    return done


def _scatter(cols: dict[str, pa.Array], idx: np.ndarray, n: int) -> pa.Table:
    """Columns of ``len(idx)`` values placed at rows ``idx`` of ``n`` rows, null elsewhere."""
    pos = np.full(n, -1, np.int64)
    pos[idx] = np.arange(idx.size)
    take = pa.array(pos, pa.int64(), mask=pos < 0)
    return pa.table({k: v.take(take) for k, v in cols.items()})


def _merge(old: pa.Table, new: pa.Table, rows: np.ndarray) -> pa.Table:
    """``old`` with ``rows`` replaced by ``new``'s values there."""
    mask = pa.array(rows)
    out = {}
    for c in old.column_names:
        a = old.column(c).combine_chunks()
        b = new.column(c).combine_chunks()
        if pa.types.is_dictionary(a.type):
            a = a.cast(a.type.value_type)
        if pa.types.is_dictionary(b.type):
            b = b.cast(b.type.value_type)
        out[c] = pc.if_else(mask, b.cast(a.type), a)
    return pa.table(out)


def signal_state(parquet: Path, group: str, cfg: SignalConfig) -> str:
    """``"full"``, ``"partial"`` or ``"missing"``: how much of ``group`` is cached for ``parquet``."""
    return _state(_signal_path(cfg, group, parquet), parquet, group)


def missing_groups(parquet: Path, groups: list[str], cfg: SignalConfig) -> list[str]:
    """The groups among ``groups`` not cached for every row of ``parquet`` (partial counts as missing)."""
    return [g for g in groups if not _is_current(_signal_path(cfg, g, parquet), parquet, g)]


def signals_task(parquet: str, groups: list[str], cfg: SignalConfig) -> dict[str, object]:
    """Engine task: make one file's cached signals current (only the missing groups are computed)."""
    computed = ensure_signals(Path(parquet), groups, cfg)
    return {"rows": md.num_rows(Path(parquet)), "computed": computed}


def load_columns(parquet: Path, columns: list[str] | tuple[str, ...], cfg: SignalConfig | None,
                 rows: np.ndarray | None = None) -> pa.Table:
    """The named columns for one metadata file, from the parquet, derived on the fly, or the cache.

    Missing cached groups are computed first. ``rows`` (a mask): the rows whose values of row-lazy
    groups are needed; those are computed if missing, and other rows may come back null.
    """
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
                if not _is_current(path, parquet, g):
                    ensure_signals(parquet, [g], cfg, rows if g in ROW_LAZY_GROUPS else None)
                cached[g] = md.read_parquet(path, list(GROUP_COLUMNS[g]))
                if cached[g].num_rows != n:
                    raise DataCompError(f"{path}: {cached[g].num_rows} rows, {parquet.name} has {n}")
            out[c] = cached[g].column(c)
    return pa.table({c: out[c] for c in columns})


def default_signals_dir(output: str | os.PathLike[str]) -> Path:
    """Beside the output: ``<output dir>/signals``."""
    return Path(output).resolve().parent / "signals"
