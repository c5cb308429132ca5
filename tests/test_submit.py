"""Submission package: original layout, hash manifest round-trip, and an upload that never leaks the token."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from datacomp.errors import DataCompError
from datacomp.report import SubmissionInfo, package_submission, verify_submission
from datacomp.uids import read_subset
from test_report_fixtures import make_experiment, make_pool


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    root = tmp_path_factory.mktemp("sub")
    _, uids, scores = make_pool(root, n=120)
    e = make_experiment(root / "runs", "clip_score_30", uids, scores, 0.3, 0.3, seeds=1)
    ckpt = e / "seed0" / "checkpoints" / "epoch_latest.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(np.random.default_rng(0).bytes(4096))
    return e


def test_submission_round_trips(exp, tmp_path):
    out = package_submission(tmp_path / "sub", "small", exp / "seed0" / "eval_results.jsonl",
                             [exp / "clip_score_30.npy"], checkpoint=exp / "seed0/checkpoints/epoch_latest.pt",
                             info=SubmissionInfo(method_name="clip30", author="A. Person"))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["manifest.json", "small_scale/checkpoint.pt", "small_scale/results.jsonl",
                     "small_scale/samples/clip_score_30.npy"]
    m = verify_submission(out)
    assert m["scale"] == "small" and m["model"] == "ViT-B-32" and m["method_name"] == "clip30"
    assert m["dataset_size"] == 36 and m["train_num_samples"] == 12_800_000
    assert set(m["files"]) == set(files) - {"manifest.json"}
    assert np.array_equal(read_subset(out / "small_scale/samples/clip_score_30.npy"),
                          read_subset(exp / "clip_score_30.npy"))
    assert (out / "small_scale/results.jsonl").read_bytes() == (exp / "seed0/eval_results.jsonl").read_bytes()
    rows = [json.loads(line) for line in (exp / "seed0/eval_results.jsonl").read_text().splitlines()]
    imagenet = next(r for r in rows if r["dataset"] == "ImageNet 1k")
    assert m["main_metrics"]["ImageNet 1k"] == imagenet["metrics"]["main_metric"]
    assert len(m["main_metrics"]) == sum(r["metrics"]["main_metric"] is not None for r in rows)
    assert 0 < m["aggregates"]["Average"] < 1

    # a changed byte is caught
    ck = out / "small_scale/checkpoint.pt"
    data = bytearray(ck.read_bytes())
    data[100] ^= 1
    ck.write_bytes(bytes(data))
    with pytest.raises(DataCompError, match="checkpoint.pt: sha256 differs"):
        verify_submission(out)
    # an unlisted file is caught
    ck.unlink()
    with pytest.raises(DataCompError, match="missing"):
        verify_submission(out)


def test_submission_refuses_overwrite_and_bad_subsets(exp, tmp_path):
    res = exp / "seed0" / "eval_results.jsonl"
    package_submission(tmp_path / "s", "medium", res, [exp / "clip_score_30.npy"])
    with pytest.raises(DataCompError, match="--overwrite"):
        package_submission(tmp_path / "s", "medium", res, [exp / "clip_score_30.npy"])
    package_submission(tmp_path / "s", "medium", res, [exp / "clip_score_30.npy"], overwrite=True)
    assert verify_submission(tmp_path / "s")["scale"] == "medium"
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"x" * 15)
    with pytest.raises(DataCompError, match="16-byte"):
        package_submission(tmp_path / "t", "small", res, [bad])
    assert not (tmp_path / "t").exists()


class _StandIn(http.server.BaseHTTPRequestHandler):
    """A local stand-in for the Hub: records each request's auth header and refuses it."""

    seen: list[str] = []

    def _refuse(self) -> None:
        self.seen.append(self.headers.get("authorization", ""))
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = json.dumps({"error": "Invalid credentials"}).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _refuse

    def log_message(self, *args) -> None:
        pass


def test_upload_never_prints_the_token(exp, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token = "hf_" + "S3cretTokenValue" * 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_TOKEN=token, HF_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
               HF_HOME=str(tmp_path / "hf"))
    try:
        res = subprocess.run(
            [sys.executable, "-m", "datacomp", "-v", "submit", "--scale", "small",
             "--results", str(exp / "seed0" / "eval_results.jsonl"), "--samples", str(exp / "clip_score_30.npy"),
             "-o", str(tmp_path / "sub"), "--hf-repo", "someone/datacomp-small"],
            capture_output=True, text=True, env=env, timeout=120)
    finally:
        server.shutdown()
    assert res.returncode == 2, res.stderr[-2000:]
    assert "upload to someone/datacomp-small failed (HTTP 401)" in res.stderr
    assert "hashes verified" in res.stdout  # packaged before the upload was tried
    assert _StandIn.seen and any(token in h for h in _StandIn.seen)  # the standard HF login was used...
    assert token not in res.stdout and token not in res.stderr  # ...and never shown
    assert "S3cret" not in res.stdout + res.stderr
