"""Reading pool metadata (parquet + row-aligned npz) with one-line errors for malformed files."""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa

from datacomp.errors import DataCompError
from datacomp.storage import Location, as_location, parquet_file

PathLike = str | os.PathLike[str] | Location

# Column -> predicate on its Arrow type, and the type the spec (§3.1) gives it.
EXPECTED: dict[str, tuple[str, object]] = {
    "uid": ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    "url": ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    "text": ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)),
    "original_width": ("integer", pa.types.is_integer),
    "original_height": ("integer", pa.types.is_integer),
    "clip_b32_similarity_score": ("float", pa.types.is_floating),
    "clip_l14_similarity_score": ("float", pa.types.is_floating),
}


def list_parquets(metadata_dir: PathLike) -> list[Path | Location]:
    """The pool's metadata parquet files (local or at a storage URL), sorted by name (one task each)."""
    d = as_location(metadata_dir)
    if not d.isdir():
        d.check_bucket()
        raise DataCompError(f"{d}: metadata directory not found")
    files = [p.native for p in d.ls("*.parquet") if not p.name.startswith(".")]
    if not files:
        raise DataCompError(f"{d}: no .parquet files; point --metadata-dir at the pool's metadata folder")
    return files


def read_schema(path: PathLike) -> pa.Schema:
    try:
        with parquet_file(path) as f:
            return f.schema_arrow
    except DataCompError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for unreadable files
        raise DataCompError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None


def check_columns(path: PathLike, schema: pa.Schema, columns: Iterable[str]) -> None:
    """Raise if a needed column is missing or has the wrong type."""
    for col in columns:
        if col not in schema.names:
            raise DataCompError(
                f"{path}: missing column {col!r} (has: {', '.join(schema.names)}); "
                "the metadata must follow the CommonPool schema"
            )
        want = EXPECTED.get(col)
        if want is not None and not want[1](schema.field(col).type):  # type: ignore[operator]
            raise DataCompError(
                f"{path}: column {col!r} has type {schema.field(col).type}, expected {want[0]}"
            )


def read_parquet(path: PathLike, columns: list[str]) -> pa.Table:
    """The columns of one parquet file, via ``ParquetFile``.

    ``pq.read_table`` goes through ``pyarrow.dataset``, whose import pulls in pandas when it is
    installed (about 0.4 s per process); a filter task needs neither.
    """
    with parquet_file(path) as f:
        return f.read(columns=columns)


def read_columns(path: PathLike, columns: list[str]) -> pa.Table:
    """Read (and check) the given columns of one metadata parquet."""
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(parquet_file(path))
        except DataCompError:
            raise
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for unreadable files
            raise DataCompError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
        check_columns(path, f.schema_arrow, columns)
        try:
            return f.read(columns=columns)
        except Exception as e:  # noqa: BLE001
            raise DataCompError(f"{path}: cannot read columns {columns} ({type(e).__name__}: {e})") from None
    raise AssertionError("unreachable")


def num_rows(path: PathLike) -> int:
    try:
        with parquet_file(path) as f:
            return f.metadata.num_rows
    except DataCompError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DataCompError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None


def npz_path(parquet: PathLike) -> Path | Location:
    return as_location(parquet).with_suffix(".npz").native


def read_embeddings(parquet: PathLike, key: str, rows: int | None = None, dtype: type = np.float32,
                    dim: int | None = None, dim_source: str = "") -> np.ndarray:
    """One embedding array of the npz beside ``parquet``, checked: numbers, row-aligned with the
    parquet, all finite, and ``dim`` columns when given (``dim_source`` names what sets it)."""
    parquet = as_location(parquet)
    path = as_location(npz_path(parquet))
    if not path.isfile():
        raise DataCompError(
            f"{path}: embeddings file not found; compute it with `datacomp embed --metadata-dir {parquet.parent}`"
        )
    try:
        with contextlib.ExitStack() as stack:  # a remote npz is read through a seekable stream
            src = path.local_path if path.is_local else stack.enter_context(path.open("rb"))
            with np.load(src, allow_pickle=False) as z:
                if key not in z.files:
                    raise DataCompError(f"{path}: no array {key!r} (has: {', '.join(z.files)})")
                arr = z[key]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataCompError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    if arr.ndim != 2:
        raise DataCompError(f"{path}: array {key!r} has shape {arr.shape}, expected (rows, dim)")
    n = num_rows(parquet) if rows is None else rows
    if arr.shape[0] != n:
        raise DataCompError(
            f"{path}: array {key!r} has {arr.shape[0]} rows but {parquet.name} has {n}; "
            "npz and parquet must be row-aligned"
        )
    if arr.dtype.kind not in "fiu":
        raise DataCompError(f"{path}: array {key!r} has dtype {arr.dtype}, expected floating-point embeddings")
    if dim is not None and arr.shape[1] != dim:
        raise DataCompError(
            f"{path}: array {key!r} has dimension {arr.shape[1]} but {dim_source or 'the other inputs'} has {dim}; "
            "use embeddings and centroids of one model and key"
        )
    out = arr.astype(dtype, copy=False)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataCompError(
            f"{path}: array {key!r} has {int(bad.sum())} row(s) with non-finite values (NaN or inf; first at "
            f"row {first}, {parquet.name} row {first}); recompute the embeddings of this file"
        )
    return out
