"""The submission package in the original's layout, a hash manifest, and the optional Hugging Face upload.

Layout (spec §3.10), under the output directory::

    <scale>_scale/results.jsonl
    <scale>_scale/samples/<subset basename>...
    <scale>_scale/checkpoint.pt          (only with a checkpoint)
    manifest.json                        (sha256 + bytes of every file above, plus the run's facts)

Only Hugging Face is ever contacted (the original also PUT to Firebase and Slack; we do not), and
only when a repo is named. The token comes from the standard ``huggingface_hub`` login and is
never read, printed or logged by this module.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datacomp.errors import DataCompError, MissingDependencyError
from datacomp.io import atomic_path, sha256_file, write_json_atomic
from datacomp.report.experiments import aggregate_results, main_metrics, read_eval_results
from datacomp.scales import get_scale
from datacomp.uids import read_subset

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class SubmissionInfo:
    """The facts the original submitted beside the files (its Firebase body, spec §3.10)."""

    method_name: str = ""
    author: str = ""
    email: str = ""
    track: str = "filtering"  # filtering | byod
    writeup: str = ""
    dataset_size: int | None = None  # defaults to the subset size


def package_submission(
    output_dir: str | Path,
    scale: str,
    results: str | Path,
    samples: list[str | Path],
    checkpoint: str | Path | None = None,
    info: SubmissionInfo | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy results, subset file(s) and optional checkpoint into the layout; write the manifest last."""
    sc = get_scale(scale)
    info = info or SubmissionInfo()
    results = Path(results)
    rows = read_eval_results(results)
    sizes = []
    for s in samples:
        sizes.append(int(read_subset(s).shape[0]))  # validates every subset before anything is copied
    names = [Path(s).name for s in samples]
    if len(set(names)) != len(names):
        raise DataCompError(f"--samples: two files share a basename ({', '.join(names)}); rename one")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise DataCompError(f"{checkpoint}: checkpoint file not found")
    out = Path(output_dir)
    if (out / MANIFEST).exists() and not overwrite:
        raise DataCompError(f"{out}: already holds a submission; pass --overwrite or choose another -o")

    with atomic_path(out) as tmp:
        base = tmp / f"{scale}_scale"
        (base / "samples").mkdir(parents=True)
        shutil.copyfile(results, base / "results.jsonl")
        for s in samples:
            shutil.copyfile(s, base / "samples" / Path(s).name)
        if checkpoint is not None:
            shutil.copyfile(checkpoint, base / "checkpoint.pt")
        files = {}
        for p in sorted(q for q in base.rglob("*") if q.is_file()):
            rel = p.relative_to(tmp).as_posix()
            files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        try:
            aggregates = aggregate_results(rows)
        except (DataCompError, KeyError, ValueError) as e:  # a partial task set still packages
            log.warning("%s: no DataComp aggregates (%s)", results, e)
            aggregates = {}
        manifest: dict[str, Any] = {
            "format": "datacomp-submission/1",
            "scale": scale,
            "model": sc.model,
            "dataset_size": info.dataset_size if info.dataset_size is not None else sum(sizes),
            "batch_size": sc.batch_size,
            "learning_rate": sc.learning_rate,
            "train_num_samples": sc.train_num_samples,
            "method_name": info.method_name,
            "author": info.author,
            "email": info.email,
            "track": info.track,
            "writeup": info.writeup,
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "aggregates": {k: (None if v != v else v) for k, v in aggregates.items()},
            "main_metrics": main_metrics(rows),
            "files": files,
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        if out.exists():  # --overwrite: the old package goes only once the new one is complete
            shutil.rmtree(out)
    log.info("packaged %d file(s) under %s", len(files), out)
    return out


def verify_submission(submission_dir: str | Path) -> dict[str, Any]:
    """Re-read the manifest and check every file's size and sha256; returns the manifest."""
    import json

    d = Path(submission_dir)
    mpath = d / MANIFEST
    if not mpath.is_file():
        raise DataCompError(f"{d}: no {MANIFEST}; create the package with `datacomp submit`")
    manifest = json.loads(mpath.read_text())
    scale_dir = f"{manifest['scale']}_scale/"
    if f"{scale_dir}results.jsonl" not in manifest["files"]:
        raise DataCompError(f"{mpath}: lists no {scale_dir}results.jsonl")
    for rel, want in manifest["files"].items():
        p = d / rel
        if not p.is_file():
            raise DataCompError(f"{p}: listed in {MANIFEST} but missing")
        if p.stat().st_size != want["bytes"] or sha256_file(p) != want["sha256"]:
            raise DataCompError(f"{p}: sha256 differs from {MANIFEST}; the file changed after packaging")
    listed = set(manifest["files"])
    extra = [q.relative_to(d).as_posix() for q in (d / scale_dir).rglob("*") if q.is_file()]
    unlisted = sorted(set(extra) - listed)
    if unlisted:
        raise DataCompError(f"{d}: files not in {MANIFEST}: {', '.join(unlisted)}; re-run `datacomp submit`")
    read_eval_results(d / scale_dir / "results.jsonl")
    for rel in listed:
        if rel.startswith(f"{scale_dir}samples/"):
            read_subset(d / rel)
    return manifest


def upload_submission(submission_dir: str | Path, hf_repo: str, revision: str | None = None) -> str:
    """One commit to the Hugging Face model repo ``hf_repo`` adding the verified package; returns its URL.

    Authentication is whatever ``huggingface_hub`` finds (``huggingface-cli login`` / ``HF_TOKEN``);
    error messages never include the token or request headers.
    """
    try:
        from huggingface_hub import CommitOperationAdd, HfApi
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        raise MissingDependencyError("huggingface_hub", why="to upload a submission") from None
    if hf_repo.count("/") != 1:
        raise DataCompError(f"--hf-repo {hf_repo!r}: expected <user or org>/<repo name>")
    d = Path(submission_dir)
    manifest = verify_submission(d)
    ops = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(d / rel)) for rel in manifest["files"]]
    ops.append(CommitOperationAdd(path_in_repo=f"{manifest['scale']}_scale/{MANIFEST}",
                                  path_or_fileobj=str(d / MANIFEST)))
    try:
        info = HfApi().create_commit(repo_id=hf_repo, operations=ops, repo_type="model", revision=revision,
                                     commit_message=f"Upload artifacts ({manifest['scale']} scale)")
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "?")
        raise DataCompError(
            f"upload to {hf_repo} failed (HTTP {status}): check that the repo exists and that "
            "`huggingface-cli login` was run with a write token"
        ) from None
    except OSError as e:
        raise DataCompError(f"upload to {hf_repo} failed: cannot reach the Hub ({type(e).__name__})") from None
    except ValueError as e:  # no token found, or an invalid repo id
        raise DataCompError(f"upload to {hf_repo} failed: {type(e).__name__}; log in with "
                            "`huggingface-cli login`") from None
    url = str(getattr(info, "commit_url", "") or f"https://huggingface.co/{hf_repo}")
    log.info("uploaded %d file(s) to %s", len(ops), url)
    return url
