"""Bounded everything: hostile tar headers, undecodable training data, slow-drip servers, huge blur boxes.

Each case runs under a wall-clock alarm, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import io
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from datacomp.errors import DataCompError


class Hang(BaseException):
    """Not an OSError/Exception, so no ``except`` in the code under test can swallow it."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (a hang becomes a failure)."""

    def fire(*_):
        raise Hang(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --- tar: pax records ------------------------------------------------------------------------------


def _rec(key: str, value: str) -> bytes:
    """A well-formed pax record (its length field counts itself)."""
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n).encode() + body) != n:
        n += 1
    return str(n).encode() + body


def _pax_tar(path: Path, records: bytes, member: bytes = b"hello") -> Path:
    """A tar whose first member carries a hand-written pax header block (``records`` verbatim)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        ti = tarfile.TarInfo("000000000000.txt")
        ti.size = len(member)
        tf.addfile(ti, io.BytesIO(member))
    plain = buf.getvalue()
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = len(records)
    hdr = pax.tobuf(format=tarfile.USTAR_FORMAT)
    body = records + b"\0" * (-len(records) % 512)
    path.write_bytes(hdr + body + plain)
    return path


@pytest.mark.parametrize("records", [
    b"0 path=x\n",  # length 0: never advances
    b"-20 path=x\n",  # negative: walks backwards
    b"3 a\n",  # shorter than its own length field
    b"99 path=x\n",  # longer than the block
    b"abc path=x\n",  # not a number
    b"12path=xxxx\n",  # no space
    _rec("size", "-99999"),  # negative member size
    _rec("size", "99999999"),  # size past the end of the file
    _rec("size", "1x2"),  # non-numeric size
    _rec("path", "x") + b"0 \n",  # a good record, then one of length 0
    b"\xff\xfe\n",
])
def test_hostile_pax_records_are_one_line_errors(tmp_path, records):
    """The general parser refuses every malformed record; the shard reader never hangs on one.

    (The vectorised path skips pax blocks that name neither path nor size, so there a record it never
    interprets may also read fine.)"""
    from datacomp.pool.shards import iter_tar_samples
    from datacomp.pool.tario import iter_members, mapped

    path = _pax_tar(tmp_path / "bad.tar", records)
    with deadline(5), pytest.raises(DataCompError) as e, mapped(path) as buf:
        list(iter_members(buf, path))
    msg = str(e.value)
    assert "\n" not in msg and "bad.tar" in msg and "re-create" in msg
    with deadline(5):
        try:
            got = list(iter_tar_samples(path))
        except DataCompError as e2:
            assert "\n" not in str(e2) and "bad.tar" in str(e2)
        else:
            assert got == [("000000000000", {"txt": b"hello"})]


def test_valid_pax_records_still_read(tmp_path):
    from datacomp.pool.shards import iter_tar_samples

    path = _pax_tar(tmp_path / "ok.tar", _rec("path", "sub/k1.txt") + _rec("comment", "a b=c"))
    with deadline(5):
        got = list(iter_tar_samples(path))
    assert got == [("sub/k1", {"txt": b"hello"})]


# --- train: nothing decodes -------------------------------------------------------------------------


def _garbage_shards(out: Path, n: int = 2, per: int = 40) -> Path:
    from datacomp.pool.shards import ShardWriter, sample_key

    out.mkdir(parents=True)
    for s in range(n):
        w = ShardWriter(out, s, mtime=0)
        for i in range(per):
            w.add_success({"uid": f"{s:016x}{i:016x}", "caption": "a red square", "key": sample_key(s, i),
                           "url": "u", "face_bboxes": []}, b"\xff\xd8 this is not a jpeg " + bytes([i]) * 50)
        w.close()
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_train_on_undecodable_data_stops_with_one_line(tmp_path, workers):
    from dataclasses import replace

    from datacomp.train import train
    from test_train import SMALL

    data = _garbage_shards(tmp_path / "shards")
    with deadline(120), pytest.raises(DataCompError) as e:
        train(str(data), tmp_path / "out", "x", replace(SMALL, workers=workers), progress=False, threads=1)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert "could be decoded" in msg and "UnidentifiedImageError" in msg
    assert "Traceback" not in msg and "DataLoader" not in msg


def test_train_decoder_has_a_pixel_cap():
    from PIL import Image

    from datacomp.pool.resize import open_image
    from datacomp.pool.shards import encode_member  # noqa: F401 - module import sanity

    b = io.BytesIO()
    Image.new("RGB", (300, 200)).save(b, "PNG")
    assert open_image(b.getvalue(), max_pixels=60_000).size == (300, 200)
    with pytest.raises(Exception, match="pixel cap"):
        open_image(b.getvalue(), max_pixels=59_999)


# --- http: slow drip ---------------------------------------------------------------------------------


class _Drip(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.5)
        except OSError:
            pass

    def log_message(self, *a):
        pass


@pytest.fixture
def drip_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/img.jpg"
    finally:
        srv.shutdown()
        srv.server_close()


def test_slow_drip_body_is_cut_at_the_deadline(drip_server):
    from datacomp.pool.http import FetchConfig, Fetcher, FetchError

    f = Fetcher(FetchConfig(timeout=1, allow_private=True))  # default retries: a slow body is not retried
    t0 = time.monotonic()
    with deadline(20), pytest.raises(FetchError) as e:
        f.fetch(drip_server)
    took = time.monotonic() - t0
    assert e.value.kind == "slow_body" and "1 s" in e.value.message
    assert took < 2.0, took


# --- blur: huge and bad boxes -------------------------------------------------------------------------


def _jpeg(w: int = 512, h: int = 384) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(b, "JPEG")
    return b.getvalue()


def test_huge_box_is_clipped_and_fast():
    from datacomp.pool.blur import blur_array
    from datacomp.pool.resize import ImageConfig, process_image

    data = _jpeg()
    t0 = time.monotonic()
    with deadline(30):
        huge = process_image(data, ImageConfig(), [[-500.0, -500.0, 1e6, 1e6]])
    assert time.monotonic() - t0 < 5
    whole = process_image(data, ImageConfig(), [[0.0, 0.0, 1.0, 1.0]])
    assert huge.data == whole.data  # the box is the whole image once clipped
    # boxes inside the image are untouched by clipping: same pixels as before the change
    img = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    a = blur_array(img, [[0.1, 0.2, 0.5, 0.6]])
    assert not np.array_equal(a, img)
    assert np.array_equal(a, blur_array(img, np.array([[0.1, 0.2, 0.5, 0.6]])))


@pytest.mark.parametrize("boxes", [
    [[0.1, 0.1, float("nan"), 0.5]], [[0.1, 0.1, float("inf"), 0.5]], [[0.1, 0.2, 0.3]], [[0.1, 0.2, 0.3, 0.4, 0.5]],
    [["a", 0.1, 0.2, 0.3]], [0.1, 0.2, 0.3, 0.4], "0.1 0.2",
])
def test_bad_box_fails_the_sample_with_a_status(boxes):
    from datacomp.pool.resize import ImageConfig, ImageError, process_image

    with pytest.raises(ImageError) as e:
        process_image(_jpeg(64, 48), ImageConfig(), boxes)
    assert e.value.kind == "bad_face_bboxes" and "\n" not in e.value.message


def test_eval_and_embed_decoders_have_the_pixel_cap():
    """A header claiming 10000x10000 (over the 89.5M-pixel cap, under PIL's own error limit) is refused
    before any pixel is decoded, in one line."""
    from datacomp.evaluate.data import decode_image
    from datacomp.filters.embed import embed_images
    from datacomp.synth.serve import _png_bomb

    bomb = _png_bomb(10_000, 10_000)
    with deadline(10), pytest.raises(DataCompError, match="pixel cap") as e:
        decode_image(bomb)
    assert "\n" not in str(e.value)
    with deadline(10), pytest.raises(DataCompError, match="image 0 .*pixel cap"):
        embed_images(SimpleNamespace(preprocess_val=lambda im: im, device="cpu"), [bomb])  # fails before any model call


def test_reshard_blur_clips_huge_boxes_and_refuses_bad_ones_in_one_line():
    from datacomp.pool.blur import blur_jpeg

    data = _jpeg()
    with deadline(30):
        assert blur_jpeg(data, [[-500.0, -500.0, 1e6, 1e6]]) == blur_jpeg(data, [[0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(DataCompError, match="face_bboxes.*NaN") as e:
        blur_jpeg(data, [[0.1, float("nan"), 0.2, 0.3]])
    assert "\n" not in str(e.value)


def test_non_utf8_member_names_read_the_same_on_both_tar_paths(tmp_path):
    """A member name that is not UTF-8 (found by fuzzing: UnicodeDecodeError on the vectorised path)."""
    from datacomp.pool.shards import iter_tar_samples
    from datacomp.pool.tario import iter_members, mapped

    path = tmp_path / "n.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
        for name in ("000000000000.tx\udcfc", "000000000000.jpg"):
            ti = tarfile.TarInfo(name)
            ti.size = 3
            tf.addfile(ti, io.BytesIO(b"abc"))
    got = list(iter_tar_samples(path))
    assert got == [("000000000000", {"tx\udcfc": b"abc", "jpg": b"abc"})]
    with mapped(path) as buf:
        assert [(k, e) for k, e, *_ in iter_members(buf, path)] == [("000000000000", "tx\udcfc"),
                                                                     ("000000000000", "jpg")]
