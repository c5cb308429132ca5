"""Per-sample signals, computed lazily per signal and per metadata parquet, cached as files.

A filter names the columns it needs; each column comes from one *provider*:

- ``meta``: read from the metadata parquet itself (``uid``, ``text``, sizes, CLIP scores), plus
  cheap derived columns (``min_side``, ``aspect``, ``uid_f0``/``uid_f1``) computed on the fly;
- a registered *signal* (:func:`datacomp.filters.registry.register_signal`; the built-ins are in
  :mod:`datacomp.filters.builtin_signals`), cached as one parquet per metadata file under
  ``<signals_dir>/<signal>[-<params>][-<asset hash>...]/<stem>.parquet``. The built-ins: ``lang``
  (fastText language and confidence; row-lazy: possibly only for the rows a rule reached, null
  elsewhere), ``caption``, ``ft_tokens``, ``cld3`` (only where ``clip_b32_similarity_score >= 0.28``),
  ``concepts`` / ``concepts_compat`` (ImageNet-21k word match, fixed / original rule; named by the
  entity list's hash), ``clusters`` / ``clusters_dot`` (nearest centroid by L2 / dot product).

Signals are small on purpose: a run computes only the signals its columns need (basic_filter never
runs CLD3 or WordNet), and a later rule that needs more computes only the signals still missing
for each file and reads the rest. So a new combination of rules reads small cached columns
instead of re-running language ID. A signal reads metadata columns, npz arrays, named asset files
and decoded images from the pool's shards (``SignalInputs``), all declared on its unit.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from datacomp.errors import DataCompError
from datacomp.filters import metadata as md
from datacomp.filters.registry import SignalDef, get_signal, list_signals, signal_of
from datacomp.io import atomic_path
from datacomp.storage import Location, as_location
from datacomp.uids import UID_DTYPE, hex_to_uids

log = logging.getLogger(__name__)

META_COLUMNS = ("uid", "url", "text", "original_width", "original_height",
                "clip_b32_similarity_score", "clip_l14_similarity_score")
DERIVED = {"min_side": ("original_width", "original_height"), "aspect": ("original_width", "original_height"),
           "uid_f0": ("uid",), "uid_f1": ("uid",)}
# How a missing named asset is given (a plug-in's own assets: ``--signal-asset NAME=FILE``).
ASSET_FLAGS = {"synsets": "--synsets FILE", "centroids": "--centroids FILE"}


class _GroupColumns(Mapping[str, tuple[str, ...]]):
    """Live view: signal name -> its column names (plug-ins registered later included)."""

    def __getitem__(self, name: str) -> tuple[str, ...]:
        return {s.name: s.column_names for s in list_signals()}[name]

    def __iter__(self) -> Iterator[str]:
        return iter([s.name for s in list_signals()])

    def __len__(self) -> int:
        return len(list_signals())


class _AllColumns(Sequence[str]):
    """Live list of every column a filter or ``--where`` can name."""

    def _cols(self) -> tuple[str, ...]:
        return (*META_COLUMNS, *DERIVED, *(c for s in list_signals() for c in s.column_names))

    def __getitem__(self, i: Any) -> Any:
        return self._cols()[i]

    def __len__(self) -> int:
        return len(self._cols())

    def __iter__(self) -> Iterator[str]:
        return iter(self._cols())

    def __contains__(self, c: object) -> bool:
        return c in self._cols()


GROUP_COLUMNS: Mapping[str, tuple[str, ...]] = _GroupColumns()
ALL_COLUMNS: Sequence[str] = _AllColumns()


def column_signal(column: str) -> SignalDef | None:
    """The signal providing ``column`` (``None`` for metadata and derived columns)."""
    if column in META_COLUMNS or column in DERIVED:
        return None
    return signal_of(column)


def column_type(column: str) -> pa.DataType:
    """The declared Arrow type of a signal column."""
    s = column_signal(column)
    if s is None:
        raise DataCompError(f"{column!r} is not a signal column")
    return dict(s.columns)[column]


@dataclass(frozen=True)
class SignalConfig:
    """Where the cache lives and the inputs that parameterise the cached signals."""

    signals_dir: str
    synsets_file: str | None = None  # entity list for ``concepts`` (wnids or concept names)
    centroids_file: str | None = None  # (k, d) centroids for ``clusters``
    embedding_key: str = "l14_img"
    extra: dict[str, str] = field(default_factory=dict)  # other named assets (plug-in signals)
    shards_dir: str | None = None  # the pool's shards, for signals that read image pixels
    options: dict[str, str] = field(default_factory=dict)  # method parameters (``--param NAME=VALUE``)

    def option(self, name: str, default: Any, kind: type = str) -> Any:
        """Method parameter ``name`` (e.g. ``semdedup.eps``) as ``kind``, or ``default``; bad values are one line."""
        raw = self.options.get(name)
        if raw is None:
            return default
        try:
            return kind(raw)
        except ValueError:
            raise DataCompError(f"--param {name}={raw}: expected a {kind.__name__}") from None

    def asset(self, name: str, signal: str = "") -> str:
        """Path of the named asset file, or one line saying which flag gives it."""
        path = {"synsets": self.synsets_file, "centroids": self.centroids_file}.get(name) or self.extra.get(name)
        if not path:
            flag = ASSET_FLAGS.get(name, f"--signal-asset {name}=FILE")
            raise DataCompError(f"the {signal or name} signal needs the {name} file ({flag})")
        return path

    def group_dir(self, group: str) -> Location:
        """``<signals_dir>/<signal>[-<params>][-<hash of each asset>]``."""
        sig = get_signal(group)
        parts = [sig.name]
        if sig.params is not None:
            parts.append(str(sig.params(self)))
        parts += [_file_hash(self.asset(a, sig.name)) for a in sig.assets]
        return as_location(self.signals_dir) / "-".join(parts)


@functools.lru_cache(maxsize=16)
def _file_hash_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with as_location(path).open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()[:12]


def _file_hash(path: str) -> str:
    """Content hash naming a parameterised group's folder (memoised per path, size and mtime)."""
    p = as_location(path)
    if not p.isfile():
        raise DataCompError(f"{p}: file not found")
    st = p.info()
    return _file_hash_cached(str(p.resolve()), st["bytes"], st["mtime_ns"])


def groups_for(columns: list[str] | tuple[str, ...]) -> list[str]:
    """Cached signals needed for ``columns`` (in a stable order)."""
    out = []
    for c in columns:
        sig = column_signal(c)
        if sig is not None and sig.name not in out:
            out.append(sig.name)
    return out


def meta_columns_for(columns: list[str] | tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for c in columns:
        for src in DERIVED.get(c, (c,) if c in META_COLUMNS else ()):
            if src not in out:
                out.append(src)
    return out


def _signal_path(cfg: SignalConfig, group: str, parquet: Path | Location) -> Location:
    return cfg.group_dir(group) / f"{as_location(parquet).stem}.parquet"


def _source_tag(parquet: Path | Location) -> str:
    """Identity of the metadata file a signal file was computed from (path, size, mtime or ETag)."""
    loc = as_location(parquet)
    st = loc.info()
    return f"{loc.resolve()}:{st['bytes']}:{st.get('etag') or st['mtime_ns']}"


def _state(path: Location, parquet: Path | Location, group: str | None = None) -> str:
    """``"full"``, ``"partial"`` (a row-lazy group with rows not computed yet) or ``"missing"``.

    Missing also covers a file computed from another version of ``parquet`` (path, size, mtime),
    a torn or foreign file, and one of an older cache layout (without the group's columns).
    """
    if not path.isfile():
        return "missing"
    try:
        schema = md.read_schema(path)
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply recomputed
        return "missing"
    meta = schema.metadata or {}
    if meta.get(b"datacomp_source", b"").decode() != _source_tag(parquet):
        return "missing"
    if group is not None:
        sig = get_signal(group)
        if not set(sig.column_names) <= set(schema.names):
            return "missing"
        if sig.version and meta.get(b"datacomp_signal_version", b"").decode() != sig.version:
            return "missing"
    return "partial" if meta.get(b"datacomp_partial") == b"1" else "full"


def _is_current(path: Path, parquet: Path, group: str | None = None) -> bool:
    """The cached file holds the group for every row of this version of ``parquet``."""
    return _state(path, parquet, group) == "full"


class SignalInputs:
    """What a signal's ``compute`` reads, for the rows it is asked for (declared on its unit).

    ``column(name)``: a metadata column (declared in ``meta``); ``array(key)``: an npz array
    (declared in ``arrays``); ``asset(name)``: a named input file's path (declared in ``assets``);
    ``uids()``; ``image_bytes()`` / ``iter_images(batch_size)``: the rows' images from the pool's
    shards (``images=True``), ``None`` where the pool holds no image for a row.
    """

    def __init__(self, sig: SignalDef, parquet: Path, cfg: SignalConfig, meta: pa.Table | None,
                 rows: np.ndarray | None, total: int):
        self.signal = sig
        self.parquet = parquet
        self.cfg = cfg
        self.total_rows = total
        self.rows = np.arange(total) if rows is None else rows  # row numbers in the file
        self._all = rows is None
        self._meta = meta

    @property
    def num_rows(self) -> int:
        return int(self.rows.size)

    def _take(self, arr: Any) -> Any:
        return arr if self._all else arr.take(pa.array(self.rows, pa.int64()))

    def column(self, name: str) -> pa.Array:
        if name not in self.signal.meta and not (name == "uid" and self.signal.images):
            raise DataCompError(f"signal {self.signal.name!r} reads metadata column {name!r} without declaring it "
                                f"(register_signal(..., meta=(..., {name!r})))")
        if self._meta is None or name not in self._meta.column_names:
            self._meta = md.read_columns(self.parquet, self._inputs())
        return self._take(self._meta.column(name).combine_chunks())

    def _inputs(self) -> list[str]:
        return list(dict.fromkeys([*self.signal.meta, *(["uid"] if self.signal.images else [])]))

    def array(self, key: str, dim: int | None = None, dim_source: str = "") -> np.ndarray:
        """An npz array's rows (``dim``: the width it must have, ``dim_source`` saying why, for the error)."""
        declared = [a.format(embedding_key=self.cfg.embedding_key) for a in self.signal.arrays]
        key = key.format(embedding_key=self.cfg.embedding_key)
        if key not in declared:
            raise DataCompError(f"signal {self.signal.name!r} reads npz array {key!r} without declaring it")
        arr = md.read_embeddings(self.parquet, key, rows=self.total_rows, dim=dim, dim_source=dim_source)
        return arr if self._all else arr[self.rows]

    def asset(self, name: str) -> str:
        if name not in self.signal.assets:
            raise DataCompError(f"signal {self.signal.name!r} reads asset {name!r} without declaring it")
        return self.cfg.asset(name, self.signal.name)

    def uids(self) -> np.ndarray:
        col = self._meta.column("uid") if self._meta is not None and "uid" in self._meta.column_names else None
        if col is None:
            col = md.read_columns(self.parquet, ["uid"]).column("uid")
        try:
            u = hex_to_uids(self._take(col.combine_chunks()))
        except DataCompError as e:
            raise DataCompError(f"{self.parquet}: {e}") from None
        return np.asarray(u, UID_DTYPE)

    def image_bytes(self) -> list[bytes | None]:
        if not self.signal.images:
            raise DataCompError(f"signal {self.signal.name!r} reads images without declaring images=True")
        from datacomp.filters.pixels import shard_images

        if not self.cfg.shards_dir:
            raise DataCompError(f"the {self.signal.name} signal reads image pixels: pass the pool's --shards-dir")
        return shard_images(self.cfg.shards_dir).image_bytes(self.uids())

    def iter_images(self, batch_size: int = 256) -> Iterator[tuple[np.ndarray, list[np.ndarray | None]]]:
        """``(positions among the rows asked for, uint8 (h, w, 3) pixels or None)`` per batch."""
        from datacomp.filters.pixels import decode_rgb

        data = self.image_bytes()
        for a in range(0, len(data), batch_size):
            yield np.arange(a, min(a + batch_size, len(data))), [decode_rgb(b) for b in data[a: a + batch_size]]


def _as_column(sig: SignalDef, name: str, typ: pa.DataType, values: Any, n: int) -> pa.Array:
    """A compute result column as an Arrow array of the declared type (dictionary-encoded kept)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if pa.types.is_dictionary(values.type) and values.type.value_type == typ:
            arr = values
        else:
            arr = values if values.type == typ else values.cast(typ)
    else:
        try:
            arr = pa.array(values, typ, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
            raise DataCompError(f"signal {sig.name!r} column {name!r}: values are not {typ} ({e})") from None
    if len(arr) != n:
        raise DataCompError(f"signal {sig.name!r} column {name!r}: {len(arr)} values for {n} rows")
    return arr


def compute_group(group: str, parquet: Path, cfg: SignalConfig, meta: pa.Table | None = None,
                  rows: np.ndarray | None = None) -> pa.Table:
    """Compute one signal for one metadata file (a table of the file's rows).

    ``meta``: the file's metadata columns when the caller has read them already (the signal's ``meta``).
    ``rows``: for a row-lazy signal, the rows to compute (a mask); the others are null.
    """
    sig = get_signal(group)
    n = md.num_rows(parquet) if meta is None else meta.num_rows
    idx = None if rows is None else np.flatnonzero(rows)
    inputs = SignalInputs(sig, parquet, cfg, meta, idx, n)
    res = sig.compute(inputs)
    if not isinstance(res, Mapping):
        raise DataCompError(f"signal {sig.name!r}: compute() must return {{column: values}}, "
                            f"got {type(res).__name__}")
    missing = [c for c in sig.column_names if c not in res]
    if missing:
        raise DataCompError(f"signal {sig.name!r}: compute() returned no {missing}")
    cols = {c: _as_column(sig, c, t, res[c], inputs.num_rows) for c, t in sig.columns}
    if idx is None:
        return pa.table(cols)
    return _scatter(cols, idx, n)


def ensure_signals(parquet: Path, groups: list[str], cfg: SignalConfig,
                   rows: np.ndarray | None = None) -> dict[str, int]:
    """Compute and cache what is missing of ``groups`` for one file; return rows computed per group.

    Groups already cached are left as they are. ``rows`` (a mask) limits the row-lazy signals
    (``row_lazy=True``) to those rows; a row-lazy group computed for some rows before is
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
        sig = get_signal(g)
        if not sig.row_lazy:
            todo.append((g, None, None))
            continue
        old = md.read_parquet(path, list(sig.column_names)) if state == "partial" else None
        have = np.zeros(n, bool) if old is None else pc.is_valid(old.column(sig.column_names[0])).to_numpy(
            zero_copy_only=False)
        want = np.ones(n, bool) if rows is None else np.asarray(rows, bool)
        need = want & ~have
        if need.any() or state == "missing":  # (a file even when no row is wanted: readers expect one)
            todo.append((g, old, need))
    inputs = list(dict.fromkeys(c for g, _, _ in todo for c in _meta_inputs(get_signal(g))))
    meta = md.read_columns(parquet, inputs) if inputs else None
    for g, old, need in todo:
        if need is None:
            table, partial = compute_group(g, parquet, cfg, meta), False
        else:
            every = old is None and bool(need.all())
            table = compute_group(g, parquet, cfg, meta, rows=None if every else need)
            if old is not None:
                table = _merge(old, table, need)
            partial = not every and table.column(get_signal(g).column_names[0]).null_count > 0
        if table.num_rows != n:
            raise DataCompError(f"{parquet}: signal group {g} produced {table.num_rows} rows, expected {n}")
        tags = {"datacomp_source": _source_tag(parquet)}
        if partial:
            tags["datacomp_partial"] = "1"
        if get_signal(g).version:
            tags["datacomp_signal_version"] = get_signal(g).version
        with atomic_path(_signal_path(cfg, g, parquet)) as tmp:
            pq.write_table(table.replace_schema_metadata(tags), tmp, compression="zstd")
        done[g] = n if need is None else int(need.sum())
    return done


def _meta_inputs(sig: SignalDef) -> tuple[str, ...]:
    """Metadata columns a signal reads (``uid`` too when it reads images: rows are matched by uid)."""
    return (*sig.meta, "uid") if sig.images and "uid" not in sig.meta else sig.meta


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


def signals_task(parquet: str, groups: list[str], cfg: SignalConfig,
                 plugins: list[str] | tuple[str, ...] = ()) -> dict[str, object]:
    """Engine task: make one file's cached signals current (only the missing groups are computed)."""
    from datacomp.filters.registry import load_plugins

    load_plugins(list(plugins))
    computed = ensure_signals(as_location(parquet), groups, cfg)
    return {"rows": md.num_rows(parquet), "computed": computed}


def load_columns(parquet: Path, columns: list[str] | tuple[str, ...], cfg: SignalConfig | None,
                 rows: np.ndarray | None = None) -> pa.Table:
    """The named columns for one metadata file, from the parquet, derived on the fly, or the cache.

    Missing cached groups are computed first. ``rows`` (a mask): the rows whose values of row-lazy
    groups are needed; those are computed if missing, and other rows may come back null.
    """
    columns = list(dict.fromkeys(columns))
    owner = {c: sig for c in columns if (sig := column_signal(c)) is not None}
    unknown = [c for c in columns if c not in owner and c not in META_COLUMNS and c not in DERIVED]
    if unknown:
        raise DataCompError(f"unknown signal column(s) {unknown}; available: {', '.join(ALL_COLUMNS)} "
                            "(`datacomp filter signals --list`)")
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
            sig = owner[c]
            g = sig.name
            if g not in cached:
                if cfg is None:
                    raise DataCompError(f"column {c!r} needs the signals cache (--signals-dir)")
                path = _signal_path(cfg, g, parquet)
                if not _is_current(path, parquet, g):
                    ensure_signals(parquet, [g], cfg, rows if sig.row_lazy else None)
                cached[g] = md.read_parquet(path, list(sig.column_names))
                if cached[g].num_rows != n:
                    raise DataCompError(f"{path}: {cached[g].num_rows} rows, {parquet.name} has {n}")
            out[c] = cached[g].column(c)
    return pa.table({c: out[c] for c in columns})


def default_signals_dir(output: str | os.PathLike[str] | Location) -> Path | Location:
    """Beside the output: ``<output dir>/signals`` (a local dir or a storage URL)."""
    return (as_location(output).resolve().parent / "signals").native
