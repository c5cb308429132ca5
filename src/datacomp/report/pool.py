"""What the report reads from the pool: CLIP scores from the metadata, thumbnails from the shards."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datacomp.errors import DataCompError
from datacomp.pool.shards import iter_tar_samples, list_shards
from datacomp.uids import hex_to_uids, isin

log = logging.getLogger(__name__)

SCORE_COLUMNS = ["clip_b32_similarity_score", "clip_l14_similarity_score"]


def resolve_pool(pool: str | Path) -> tuple[Path | None, Path | None]:
    """``(metadata_dir, shards_dir)`` from a pool root (holding ``metadata/`` and ``shards/``) or either dir."""
    pool = Path(pool)
    if not pool.is_dir():
        raise DataCompError(f"{pool}: pool directory not found (pass the folder holding metadata/ and shards/)")
    meta = pool / "metadata" if (pool / "metadata").is_dir() else None
    shards = pool / "shards" if (pool / "shards").is_dir() else None
    if meta is None and any(pool.glob("*.npz")):
        meta = pool
    if shards is None and any(pool.glob("*.tar")):
        shards = pool
    if meta is None and shards is None:
        raise DataCompError(f"{pool}: holds neither metadata parquet+npz nor image shards")
    return meta, shards


@dataclass
class PoolScores:
    uids: np.ndarray  # u8,u8 in metadata order
    scores: dict[str, np.ndarray]  # column -> float32, row-aligned with uids

    def kept_mask(self, subset: np.ndarray) -> np.ndarray:
        return isin(self.uids, subset)


def read_scores(metadata_dir: Path) -> PoolScores:
    """The uid and CLIP-score columns of every metadata parquet (a few columns: cheap at any pool size)."""
    import pyarrow.parquet as pq

    files = sorted(Path(metadata_dir).glob("*.parquet"))
    if not files:
        raise DataCompError(f"{metadata_dir}: no metadata parquet files")
    uids, cols = [], {c: [] for c in SCORE_COLUMNS}
    for f in files:
        names = pq.read_schema(f).names
        want = ["uid"] + [c for c in SCORE_COLUMNS if c in names]
        t = pq.read_table(f, columns=want)
        uids.append(hex_to_uids(t.column("uid")))
        for c in SCORE_COLUMNS:
            arr = t.column(c).to_numpy().astype(np.float32) if c in names else np.full(t.num_rows, np.nan, "f4")
            cols[c].append(arr)
    return PoolScores(np.concatenate(uids), {c: np.concatenate(v) for c, v in cols.items()})


@dataclass
class Sample:
    uid: str
    caption: str
    image_uri: str  # data: URI of the image bytes as stored in the shard


_MIME = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def read_samples(shards_dir: Path, max_samples: int = 2000) -> list[Sample]:
    """Up to ``max_samples`` downloaded samples from the first shards (bounded: not the whole pool)."""
    out: list[Sample] = []
    for tar in list_shards(shards_dir):
        for _key, members in iter_tar_samples(tar):
            ext = next((e for e in _MIME if e in members), None)
            if ext is None or "json" not in members:
                continue
            meta = json.loads(members["json"])
            caption = members["txt"].decode("utf-8", "replace") if "txt" in members else meta.get("caption") or ""
            uri = f"data:{_MIME[ext]};base64," + base64.b64encode(members[ext]).decode()
            out.append(Sample(str(meta.get("uid", "")), caption, uri))
            if len(out) >= max_samples:
                return out
    return out


def pick_gallery(samples: list[Sample], subset: np.ndarray, n: int, seed: int = 0
                 ) -> tuple[list[Sample], list[Sample]]:
    """``n`` random kept and ``n`` random dropped samples (seeded, so the report is reproducible)."""
    good = [s for s in samples if len(s.uid) == 32]
    if not good:
        return [], []
    kept = isin(hex_to_uids([s.uid for s in good]), subset)
    rng = np.random.default_rng(seed)
    idx_k, idx_d = np.flatnonzero(kept), np.flatnonzero(~kept)
    pick_k = rng.choice(idx_k, size=min(n, idx_k.size), replace=False) if idx_k.size else []
    pick_d = rng.choice(idx_d, size=min(n, idx_d.size), replace=False) if idx_d.size else []
    return [good[i] for i in pick_k], [good[i] for i in pick_d]
