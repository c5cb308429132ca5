"""Download against a real HTTP server on 127.0.0.1 serving a pool's images, with injected faults."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from datacomp.errors import DataCompError
from datacomp.pool.download import DownloadOptions, download, estimate_bytes, list_metadata, plan_shards
from datacomp.pool.http import OPT_OUT_MESSAGE, FetchConfig, Fetcher, FetchError, is_disallowed
from datacomp.pool.resize import ImageConfig, ImageError, process_image
from datacomp.pool.shards import completed_shards, iter_tar_samples
from datacomp.synth.serve import PoolServer, make_image_pool, rebase_urls

LOCAL = ("127.0.0.0/8",)


@contextlib.contextmanager
def served(pool_dir: Path, tmp_path: Path, **server_kwargs) -> Iterator[tuple[PoolServer, Path]]:
    """A running server for the pool and a copy of its metadata whose urls point at it."""
    with PoolServer(pool_dir, **server_kwargs) as server:
        meta = tmp_path / "meta"
        rebase_urls(Path(pool_dir) / "metadata", meta, server.base_url)
        yield server, meta


def read_output(shards: Path) -> tuple[pa.Table, dict[str, dict[str, bytes]]]:
    """All shard parquets concatenated, and uid -> tar members of every stored sample."""
    tables = [pq.read_table(p) for p in sorted(shards.glob("*.parquet"))]
    samples = {}
    for tar in sorted(shards.glob("*.tar")):
        for _key, members in iter_tar_samples(tar):
            samples[json.loads(members["json"])["uid"]] = members
    return pa.concat_tables(tables), samples


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("dlpool")
    return root / "pool", make_image_pool(root)


FAULTS = {
    0: "404", 1: "500", 2: "503", 3: "timeout", 4: "reset", 5: "truncate", 9: "corrupt", 10: "not-image",
    11: "redirect-loop", 12: "optout:noai", 13: "optout:NoImageIndex, nofollow", 14: "optout:noml",
    15: "optout:otherbot: noai", 16: "oversize", 17: "oversize-stream", 18: "bomb", 19: "redirect",
}
EXPECTED = {  # fault -> (status, failure kind, text in error_message)
    "404": ("failed_to_download", "http_error", "HTTP Error 404"),
    "500": ("failed_to_download", "http_5xx", "HTTP Error 500"),
    "503": ("failed_to_download", "http_5xx", "HTTP Error 503"),
    "timeout": ("failed_to_download", "timeout", "timed out"),
    "reset": ("failed_to_download", "connection_error", "connection"),
    "truncate": ("failed_to_download", "truncated", "incomplete body"),
    "corrupt": ("failed_to_resize", "decode_error", "cannot decode"),
    "not-image": ("failed_to_resize", "decode_error", "cannot decode"),
    "redirect-loop": ("failed_to_download", "too_many_redirects", "redirects"),
    "optout:noai": ("failed_to_download", "opt_out", OPT_OUT_MESSAGE),
    "optout:NoImageIndex, nofollow": ("failed_to_download", "opt_out", OPT_OUT_MESSAGE),
    "optout:noml": ("failed_to_download", "opt_out", OPT_OUT_MESSAGE),
    "oversize": ("failed_to_download", "too_large", "cap"),
    "oversize-stream": ("failed_to_download", "too_large", "cap"),
    "bomb": ("failed_to_resize", "too_many_pixels", "pixel"),
}


def test_faults_statuses_counts_and_bytes(pool, tmp_path):
    pool_dir, images = pool
    uids = list(images)
    faults = {uids[i]: f for i, f in FAULTS.items()}
    with served(pool_dir, tmp_path, faults=faults, hang_seconds=3, oversize_bytes=300_000) as (server, meta):
        # two extra rows: a private address and a non-http scheme, refused before any connection
        t = pq.read_table(meta / "0000.parquet")
        extra = t.slice(0, 2).set_column(1, "url", pa.array(["http://10.1.2.3/a.jpg", "file:///etc/passwd"]))
        extra = extra.set_column(0, "uid", pa.array(["f" * 32, "e" * 32]))
        pq.write_table(pa.concat_tables([t, extra]), meta / "0000.parquet")
        opts = DownloadOptions(
            fetch=FetchConfig(timeout=1.0, retries=1, backoff=0.01, max_bytes=200_000, allowed_networks=LOCAL),
            image=ImageConfig(reencode="auto", max_pixels=5_000_000), thread_count=8, samples_per_shard=20)
        summary = download(meta, tmp_path / "shards", opts, processes=1, progress=False)
        retried = server.requests[f"/images/{uids[1]}.jpg"]
    table, samples = read_output(tmp_path / "shards")
    by_uid = {r["uid"]: r for r in table.to_pylist()}
    assert len(by_uid) == len(images) + 2 == table.num_rows  # every input row is accounted for
    for i, fault in FAULTS.items():
        row = by_uid[uids[i]]
        if fault in ("optout:otherbot: noai", "redirect"):  # UA-scoped to another bot / one redirect hop: allowed
            assert row["status"] == "success", (fault, row["error_message"])
            continue
        status, _kind, text = EXPECTED[fault]
        assert row["status"] == status, (fault, row)
        assert text.lower() in row["error_message"].lower(), (fault, row["error_message"])
        assert uids[i] not in samples
    assert "non-public address 10.1.2.3" in by_uid["f" * 32]["error_message"]
    assert "refused scheme 'file'" in by_uid["e" * 32]["error_message"]
    assert retried == 2  # a 500 is transient: one retry
    # successes: byte-identical to what the server holds, recorded sha256 matches
    ok = [u for u, r in by_uid.items() if r["status"] == "success"]
    assert len(ok) == len(images) - len(FAULTS) + 2
    for u in ok:
        assert by_uid[u]["sha256"] == hashlib.sha256(images[u]).hexdigest()
        js = json.loads(samples[u]["json"])
        assert js["sha256"] == by_uid[u]["sha256"] and js["status"] == "success" and js["key"] == by_uid[u]["key"]
        small = max(js["original_width"], js["original_height"]) <= 512
        if small and not js["face_bboxes"]:
            assert samples[u]["jpg"] == images[u]
        elif not small:
            assert max(js["width"], js["height"]) == 512
            assert Image.open(io.BytesIO(samples[u]["jpg"])).size == (js["width"], js["height"])
    # counts add up, per shard and in the summary
    expected_kinds: dict[str, int] = {}
    for fault in FAULTS.values():
        if fault in EXPECTED:
            expected_kinds[EXPECTED[fault][1]] = expected_kinds.get(EXPECTED[fault][1], 0) + 1
    expected_kinds["blocked_address"] = 1
    expected_kinds["bad_scheme"] = 1
    assert summary["failure_kinds"] == dict(sorted(expected_kinds.items(), key=lambda kv: -kv[1])) or (
        summary["failure_kinds"] == expected_kinds)
    stats = [json.loads(p.read_text()) for p in sorted((tmp_path / "shards").glob("*_stats.json"))]
    assert len(stats) == 3 == len(completed_shards(tmp_path / "shards"))
    for s in stats:
        assert s["count"] == s["successes"] + s["failed_to_download"] + s["failed_to_resize"]
        assert sum(s["status_dict"].values()) == s["count"]
        assert sum(s["failure_kinds"].values()) == s["count"] - s["successes"]
    assert summary["count"] == len(images) + 2 and summary["successes"] == len(ok)
    assert summary["success_rate"] == round(len(ok) / (len(images) + 2), 4)
    assert summary["bytes_written"] == sum(len(samples[u]["jpg"]) for u in ok)


def test_private_addresses_refused_by_default(pool, tmp_path):
    pool_dir, images = pool
    with served(pool_dir, tmp_path) as (server, meta):
        opts = DownloadOptions(fetch=FetchConfig(timeout=1), thread_count=4)
        summary = download(meta, tmp_path / "shards", opts, progress=False)
        assert sum(server.requests.values()) == 0  # refused before connecting
    assert summary["successes"] == 0 and summary["failure_kinds"] == {"blocked_address": len(images)}


def test_resize_blur_keys_and_reencode(pool, tmp_path):
    """Default settings (re-encode q95, blur on): sizes, keys and blurred pixels as img2dataset."""
    pool_dir, images = pool
    with served(pool_dir, tmp_path) as (server, meta):
        opts = DownloadOptions(fetch=FetchConfig(allowed_networks=LOCAL), thread_count=4, samples_per_shard=16)
        summary = download(meta, tmp_path / "shards", opts, progress=False)
    assert summary["successes"] == len(images)
    table, samples = read_output(tmp_path / "shards")
    uids = list(images)
    keys = dict(zip(table["uid"].to_pylist(), table["key"].to_pylist()))
    for i, u in enumerate(uids):
        assert keys[u] == f"{(i // 16) * 100 + i % 16:012d}"  # shard_id * 10**ceil(log10(16)) + index
        js = json.loads(samples[u]["json"])
        orig = Image.open(io.BytesIO(images[u]))
        got = Image.open(io.BytesIO(samples[u]["jpg"]))
        assert (js["original_width"], js["original_height"]) == orig.size
        s = 512 / max(orig.size)
        want = orig.size if s >= 1 else (round(orig.size[0] * s), round(orig.size[1] * s))
        assert got.size == want == (js["width"], js["height"])
        assert samples[u]["txt"].decode() == js["caption"]
        if js["face_bboxes"] and s >= 1:  # blurred inside the box: much smoother than the original there
            a, b = np.asarray(orig.convert("L"), float), np.asarray(got.convert("L"), float)
            h, w = a.shape
            box = (slice(int(0.3 * h), int(0.6 * h)), slice(int(0.3 * w), int(0.5 * w)))
            assert np.abs(np.diff(b[box], axis=1)).mean() < 0.7 * np.abs(np.diff(a[box], axis=1)).mean()
    # webdataset (1.0.2) reads the shards
    import webdataset as wds

    ds = wds.WebDataset([str(p) for p in sorted((tmp_path / "shards").glob("*.tar"))], shardshuffle=False)
    got = list(ds.decode("pil").to_tuple("__key__", "jpg", "json"))
    assert len(got) == len(images)
    assert all(img.size == (js["width"], js["height"]) for _, img, js in got)


def test_verify_hash_flags_mismatches(pool, tmp_path):
    pool_dir, images = pool
    with served(pool_dir, tmp_path) as (server, meta):
        t = pq.read_table(meta / "0000.parquet")
        sha = t["sha256"].to_pylist()
        for i in (1, 4, 7):
            sha[i] = "0" * 64
        pq.write_table(t.set_column(t.schema.get_field_index("sha256"), "sha256", pa.array(sha)), meta / "0000.parquet")
        opts = DownloadOptions(fetch=FetchConfig(allowed_networks=LOCAL), verify_hash=True, thread_count=4)
        summary = download(meta, tmp_path / "shards", opts, progress=False)
    assert summary["successes"] == len(images)  # mismatches stay successes
    assert summary["sha256_mismatches"] == 3
    assert summary["sha256_mismatch_rate"] == round(3 / len(images), 4)
    table, samples = read_output(tmp_path / "shards")
    flagged = {r["uid"] for r in table.to_pylist() if r["sha256_mismatch"]}
    assert flagged == {list(images)[i] for i in (1, 4, 7)}
    assert all(json.loads(samples[u]["json"])["sha256_mismatch"] for u in flagged)


def test_resume_skips_completed_shards_and_cleans_temporaries(pool, tmp_path):
    pool_dir, images = pool
    with served(pool_dir, tmp_path) as (server, meta):
        opts = DownloadOptions(fetch=FetchConfig(allowed_networks=LOCAL), thread_count=4, samples_per_shard=16)
        out = tmp_path / "shards"
        download(meta, out, opts, progress=False, skip_shards=(1, 2))
        assert [p.name for p in completed_shards(out)] == ["00000000.tar"]
        # a killed run's leftovers: a half-written tar under a temporary name, a tar without stats
        (out / ".00000001.tar.99999.tmp").write_bytes(b"partial")
        (out / "00000002.tar").write_bytes(b"half a tar")
        before = server.requests.copy()
        summary = download(meta, out, opts, progress=False)
        fetched = sum((server.requests - before).values())
    assert fetched == len(images) - 16  # shard 0 was not downloaded again
    assert summary["this_run"]["shards"] == 2 and summary["shards"] == 3
    assert summary["successes"] == len(images)
    assert not list(out.glob(".*.tmp"))
    table, samples = read_output(out)
    assert set(samples) == set(images)


def test_fetcher_redirect_bounds_and_schemes(pool):
    pool_dir, images = pool
    uid = next(iter(images))
    with PoolServer(pool_dir) as server:
        f = Fetcher(FetchConfig(allowed_networks=LOCAL, max_redirects=0))
        with pytest.raises(FetchError) as e:
            f.fetch(f"{server.url}/fault/redirect/{uid}.jpg")
        assert e.value.kind == "too_many_redirects"
        f = Fetcher(FetchConfig(allowed_networks=LOCAL, max_redirects=1))
        assert f.fetch(f"{server.url}/fault/redirect/{uid}.jpg").data == images[uid]
        for url, kind in [("ftp://example.com/a.jpg", "bad_scheme"),
                          ("http://169.254.169.254/latest", "blocked_address"),
                          ("http://[::1]:1/a.jpg", "blocked_address"), ("http://localhost:1/a", "blocked_address")]:
            with pytest.raises(FetchError) as e:
                Fetcher(FetchConfig()).fetch(url)
            assert e.value.kind == kind, url
    with socket.socket() as sock:  # a port nobody listens on: refused, not a timeout
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(FetchError) as e:
        Fetcher(FetchConfig(allowed_networks=LOCAL, retries=0)).fetch(f"http://127.0.0.1:{closed}/a.jpg")
    assert e.value.kind == "connection_error" and "refused" in e.value.message.lower()


def test_x_robots_tag_rules():
    d = ("noai", "noimageai", "noindex", "noimageindex", "noml")
    assert is_disallowed(["noai"], d, None)
    assert is_disallowed(["nofollow, NoImageAI"], d, None)
    assert not is_disallowed(["nofollow, noarchive"], d, None)
    assert not is_disallowed(["otherbot: noai"], d, None)  # scoped to another user agent
    assert is_disallowed(["mybot: noai"], d, "MyBot")
    assert not is_disallowed(["otherbot: noai"], d, "mybot")
    assert is_disallowed(["otherbot: noai", "noml"], d, "mybot")


def test_process_image_modes():
    im = Image.fromarray(np.full((300, 600, 3), 120, np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    data = buf.getvalue()
    size = lambda cfg: Image.open(io.BytesIO(process_image(data, cfg).data)).size  # noqa: E731
    assert size(ImageConfig(image_size=100)) == (100, 50)
    assert size(ImageConfig(image_size=100, resize_mode="keep_ratio")) == (200, 100)
    assert size(ImageConfig(image_size=100, resize_mode="center_crop")) == (100, 100)
    assert size(ImageConfig(image_size=100, resize_mode="border")) == (100, 100)
    assert size(ImageConfig(image_size=100, resize_mode="no")) == (600, 300)
    assert size(ImageConfig(image_size=1000)) == (600, 300)  # only if bigger
    assert size(ImageConfig(image_size=1000, resize_only_if_bigger=False)) == (1000, 500)
    p = process_image(data, ImageConfig(image_size=1000, encode_format="png", reencode="auto"))
    assert p.data == data and p.ext == "png"
    rgba = Image.fromarray(np.zeros((10, 10, 4), np.uint8))  # fully transparent -> white
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    out = Image.open(io.BytesIO(process_image(buf.getvalue(), ImageConfig(encode_format="png")).data))
    assert np.asarray(out).min() == 255
    with pytest.raises(ImageError) as e:
        process_image(data, ImageConfig(max_pixels=1000))
    assert e.value.kind == "too_many_pixels"


def test_bad_metadata_is_one_line_error(pool, tmp_path):
    pool_dir, _ = pool
    t = pq.read_table(pool_dir / "metadata" / "0000.parquet").drop(["face_bboxes"])
    pq.write_table(t, tmp_path / "x.parquet")
    with pytest.raises(DataCompError, match=r"x\.parquet: missing column\(s\) face_bboxes .*--skip-bbox-blurring"):
        plan_shards(list_metadata(tmp_path), DownloadOptions())
    assert len(plan_shards(list_metadata(tmp_path), DownloadOptions(bbox_col=None))) == 1
    (tmp_path / "y.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataCompError, match="y.parquet: not a readable parquet"):
        plan_shards(list_metadata(tmp_path), DownloadOptions(bbox_col=None))
    with pytest.raises(DataCompError, match="not found"):
        list_metadata(tmp_path / "nope")


def test_estimate_bytes(pool):
    pool_dir, images = pool
    files = list_metadata(pool_dir / "metadata")
    est = estimate_bytes(files, ImageConfig())
    assert est["rows"] == len(images)
    written = sum(len(v) for v in images.values())
    assert 0.3 * written < est["bytes"] < 10 * written


def test_one_download_per_shard_dir(pool, tmp_path):
    import fcntl

    pool_dir, _ = pool
    out = tmp_path / "shards"
    out.mkdir()
    with open(out / ".download.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DataCompError, match="another run holds this output"):
            download(pool_dir / "metadata", out, progress=False)


def test_fsspec_metadata_location(pool, tmp_path):
    """BYOD parquets from any fsspec location (here the in-memory filesystem) plan and download alike."""
    import fsspec

    pool_dir, images = pool
    with served(pool_dir, tmp_path) as (_server, meta):
        fs = fsspec.filesystem("memory")
        fs.pipe("/byod/b.parquet", (meta / "0000.parquet").read_bytes())
        fs.pipe("/byod/notes.txt", b"ignored")
        files = list_metadata("memory://byod")
        assert files == ["memory:///byod/b.parquet"]
        summary = download("memory://byod", tmp_path / "shards", DownloadOptions(
            fetch=FetchConfig(allowed_networks=LOCAL), thread_count=4), progress=False)
    assert summary["successes"] == len(images)
