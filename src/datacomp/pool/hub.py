"""Pool metadata from the Hugging Face Hub, as ``download_upstream.py`` fetches it.

``huggingface_hub.snapshot_download`` with the scale's dataset repo and ``*.parquet`` (``*/*.parquet``
for xlarge, whose repo keeps files in ``part_*`` folders, flattened afterwards), and ``.npz`` with
``download_npz``. Unlike the original, an existing metadata dir is completed, not deleted: files
already there are skipped, so npz can be added later without re-fetching the parquets.
``endpoint`` (or ``HF_ENDPOINT``) points at a mirror or at ``datacomp synth serve --hub``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from datacomp.errors import DataCompError
from datacomp.scales import get_scale

log = logging.getLogger(__name__)

HUB_SCALES = ("small", "medium", "large", "xlarge", "datacomp_1b")


def hub_repo(scale: str) -> str:
    """The Hugging Face dataset repo holding a scale's metadata."""
    if scale == "datacomp_1b":
        return "mlfoundations/datacomp_1b"
    s = get_scale(scale)
    if s.hf_repo is None:
        raise DataCompError(f"scale {scale!r} has no Hub metadata: choose one of {', '.join(HUB_SCALES)}")
    return s.hf_repo


def _patterns(scale: str, ext: str) -> str:
    return f"*/*.{ext}" if scale == "xlarge" else f"*.{ext}"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def remote_size(scale: str, download_npz: bool = False, endpoint: str | None = None) -> dict[str, Any]:
    """Number and bytes of the metadata files the download would fetch (one tree listing)."""
    import fnmatch

    from huggingface_hub import HfApi

    pats = [_patterns(scale, "parquet")] + ([_patterns(scale, "npz")] if download_npz else [])
    api = HfApi(endpoint=endpoint)
    files = nbytes = 0
    try:
        for f in api.list_repo_tree(hub_repo(scale), repo_type="dataset", recursive=True):
            size = getattr(f, "size", None)
            if size is not None and any(fnmatch.fnmatch(f.path, p) for p in pats):
                files += 1
                nbytes += size
    except Exception as e:  # noqa: BLE001 - network/hub errors become one user-facing line
        raise _hub_error(scale, endpoint, e) from None
    return {"files": files, "bytes": nbytes}


def _hub_error(scale: str, endpoint: str | None, e: Exception) -> DataCompError:
    where = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    hint = " (HF_HUB_OFFLINE is set: unset it)" if _offline() else ""
    return DataCompError(
        f"cannot fetch {hub_repo(scale)} from {where}{hint}: {type(e).__name__}: {str(e).splitlines()[0][:200]}; "
        "check the network, or pass --metadata-dir with parquets you already have"
    )


def fetch_metadata(
    scale: str,
    metadata_dir: str | Path,
    download_npz: bool = False,
    overwrite: bool = False,
    endpoint: str | None = None,
) -> list[Path]:
    """Fetch (or complete) the scale's metadata into ``metadata_dir``; return the parquet paths."""
    from huggingface_hub import snapshot_download

    mdir = Path(metadata_dir)
    if overwrite and mdir.exists():
        shutil.rmtree(mdir)
    mdir.mkdir(parents=True, exist_ok=True)
    repo = hub_repo(scale)
    exts = ["parquet"] + (["npz"] if download_npz else [])
    for ext in exts:
        have = list(mdir.glob(f"*.{ext}"))
        if have and not overwrite and scale == "xlarge":
            log.info("%s: %d .%s file(s) present, skipping the hub", mdir, len(have), ext)
            continue
        log.info("fetching %s/%s into %s", repo, _patterns(scale, ext), mdir)
        try:
            snapshot_download(repo, repo_type="dataset", allow_patterns=_patterns(scale, ext), local_dir=mdir,
                              endpoint=endpoint, max_workers=8)
        except Exception as e:  # noqa: BLE001
            raise _hub_error(scale, endpoint, e) from None
    if scale == "xlarge":
        for part in sorted(p for p in mdir.iterdir() if p.is_dir() and p.name.startswith("part")):
            for f in part.iterdir():
                os.replace(f, mdir / f.name)
            part.rmdir()
    files = sorted(mdir.glob("*.parquet"))
    if not files:
        raise DataCompError(f"{repo}: no parquet files were fetched into {mdir}")
    return files
