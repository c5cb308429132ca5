"""A local web server for a pool's images, with fault injection: the embedded world's "internet".

``GET /images/<uid>.jpg`` returns the JPEG bytes stored in the pool's shards (the metadata's url
column is ``{base_url}/{uid}.jpg``). Faults make the download step meet what the real web does:
per-uid (``faults={uid: kind}``) or by path (``/fault/<kind>/<uid>.jpg``). With ``hub_repos`` it also
speaks the part of the Hugging Face Hub API that ``huggingface_hub.snapshot_download`` uses, serving a
local directory as a dataset repo (``HF_ENDPOINT=http://127.0.0.1:PORT``).

Fault kinds: ``404``/``500``/``503`` (any HTTP status), ``timeout`` (no answer for ``hang_seconds``),
``reset`` (TCP RST), ``truncate`` (half the announced body), ``corrupt`` (JPEG with garbage after the
header), ``not-image`` (an HTML page), ``redirect`` (one hop to the image), ``redirect-loop``,
``optout:<X-Robots-Tag value>``, ``oversize`` (``oversize_bytes`` announced in Content-Length),
``oversize-stream`` (same, without Content-Length), ``bomb`` (a PNG header claiming 40000x40000).
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from datacomp.artifacts import IMAGE_EXTS
from datacomp.errors import DataCompError
from datacomp.pool.tario import iter_members, mapped

log = logging.getLogger(__name__)

FAULT_KINDS = ("404", "500", "503", "timeout", "reset", "truncate", "corrupt", "not-image", "redirect",
               "redirect-loop", "optout:noai", "oversize", "oversize-stream", "bomb")


def _shards_dir(pool_dir: Path) -> Path:
    return pool_dir / "shards" if (pool_dir / "shards").is_dir() else pool_dir


def index_pool(pool_dir: str | Path) -> dict[str, tuple[str, int, int]]:
    """uid -> (tar path, byte offset, size) of each sample's image member, from the shards."""
    shards = _shards_dir(Path(pool_dir))
    tars = sorted(shards.glob("*.tar"))
    if not tars:
        raise DataCompError(f"{pool_dir}: no shards (*.tar) found; give a pool dir or its shards/ dir")
    index: dict[str, tuple[str, int, int]] = {}
    for tar in tars:
        images: dict[str, tuple[int, int]] = {}
        uids: dict[str, str] = {}
        with mapped(tar) as buf:
            for key, ext, off, size, _ in iter_members(buf, tar):
                if ext in IMAGE_EXTS:
                    images[key] = (off, size)
                elif ext == "json":
                    uids[key] = json.loads(bytes(buf[off : off + size]))["uid"]
        for key, (off, size) in images.items():
            if key in uids:
                index[uids[key]] = (str(tar), off, size)
    return index


def _png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (the data is a stub)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(
        b"IEND", b"")


class PoolServer:
    """Serve a pool's images on 127.0.0.1 from a background thread (``with PoolServer(...) as s``)."""

    def __init__(
        self,
        pool_dir: str | Path | None,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Mapping[str, str] | None = None,
        hub_repos: Mapping[str, str | Path] | None = None,
        hang_seconds: float = 5.0,
        oversize_bytes: int = 4 * 1024 * 1024,
        delay_seconds: float = 0.0,
    ):
        self.index = index_pool(pool_dir) if pool_dir is not None else {}
        self.faults = dict(faults or {})
        self.hub_repos = {k: Path(v) for k, v in (hub_repos or {}).items()}
        self.hang_seconds = hang_seconds
        self.oversize_bytes = oversize_bytes
        self.delay_seconds = delay_seconds  # added before every image response (slow-web knob)
        self.requests: Counter[str] = Counter()  # path -> number of requests (retries show here)
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"owner": self})
        self.httpd = _Server((host, port), handler)
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What the metadata's url column starts with: ``{base_url}/{uid}.jpg``."""
        return f"{self.url}/images"

    def image_bytes(self, uid: str) -> bytes | None:
        entry = self.index.get(uid)
        if entry is None:
            return None
        path, off, size = entry
        with open(path, "rb") as f:
            f.seek(off)
            return f.read(size)

    def start(self) -> PoolServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="pool-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> PoolServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def count(self, path: str) -> None:
        with self._lock:
            self.requests[path] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # faults break sockets on purpose
        log.debug("connection from %s ended with an error", client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: PoolServer
    protocol_version = "HTTP/1.1"
    server_version = "datacomp-serve/1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # ------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream",
              headers: Mapping[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server naming
        self._route(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def _route(self, head: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        self.owner.count(path)
        if path.startswith("/images/") and path.endswith(".jpg"):
            uid = path[len("/images/"):-len(".jpg")]
            return self._image(uid, self.owner.faults.get(uid), head)
        if path.startswith("/fault/"):
            rest = path[len("/fault/"):]
            kind, _, name = rest.rpartition("/")
            return self._image(name.removesuffix(".jpg"), kind, head)
        if path.startswith("/api/datasets/") or path.startswith("/datasets/"):
            return self._hub(path, parse_qs(parts.query), head)
        self._send(404, b"not found", "text/plain", head=head)

    # ------------------------------------------------------------ images and faults
    def _image(self, uid: str, fault: str | None, head: bool) -> None:
        o = self.owner
        if o.delay_seconds:
            time.sleep(o.delay_seconds)
        data = o.image_bytes(uid)
        if data is None:
            return self._send(404, b"File not found", "text/plain", head=head)
        if fault is None or fault == "none":
            return self._send(200, data, "image/jpeg", head=head)
        if fault.isdigit():
            return self._send(int(fault), f"error {fault}".encode(), "text/plain", head=head)
        if fault == "timeout":
            time.sleep(o.hang_seconds)
            self.close_connection = True
            return None
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return None
        if fault == "truncate":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        if fault == "corrupt":
            body = data[:64] + hashlib.sha256(data).digest() * (max(1, len(data) - 64) // 32 + 1)
            return self._send(200, body[: len(data)], "image/jpeg", head=head)
        if fault == "not-image":
            return self._send(200, b"<html><body>Not an image</body></html>", "text/html", head=head)
        if fault == "redirect":
            return self._send(302, b"", "text/plain", {"Location": f"/fault/none/{uid}.jpg"}, head=head)
        if fault == "redirect-loop":
            return self._send(302, b"", "text/plain", {"Location": f"/fault/redirect-loop/{uid}.jpg"}, head=head)
        if fault.startswith("optout:"):
            return self._send(200, data, "image/jpeg", {"X-Robots-Tag": fault[len("optout:"):]}, head=head)
        if fault == "oversize":
            return self._send(200, data + b"\0" * max(0, o.oversize_bytes - len(data)), "image/jpeg", head=head)
        if fault == "oversize-stream":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            block = b"\0" * 65536
            try:
                for _ in range(o.oversize_bytes // len(block) + 1):
                    self.wfile.write(block)
            except OSError:
                pass
            return None
        if fault == "bomb":
            return self._send(200, _png_bomb(), "image/png", head=head)
        return self._send(400, f"unknown fault {fault!r}".encode(), "text/plain", head=head)

    # ------------------------------------------------------------ the Hugging Face Hub subset
    def _hub(self, path: str, query: dict[str, list[str]], head: bool) -> None:
        repos = self.owner.hub_repos
        for repo, root in repos.items():
            api = f"/api/datasets/{repo}/"
            res = f"/datasets/{repo}/resolve/"
            if path.startswith(api):
                rest = path[len(api):]
                if rest.startswith("revision/"):
                    return self._json(_repo_info(repo, root), head)
                if rest.startswith("tree/"):
                    sub = rest[len("tree/"):].partition("/")[2]
                    recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
                    return self._json(_tree(root, sub, recursive), head)
            if path.startswith(res):
                rel = path[len(res):].partition("/")[2]
                f = (root / rel).resolve()
                if root.resolve() not in f.parents or not f.is_file():
                    return self._send(404, b"Entry not found", "text/plain", {"X-Error-Code": "EntryNotFound"},
                                      head=head)
                data = b"" if head else f.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(f.stat().st_size))
                self.send_header("ETag", f'"{_oid(f)}"')
                self.send_header("X-Repo-Commit", _commit(root))
                self.end_headers()
                if not head:
                    self.wfile.write(data)
                return None
        return self._send(404, b"Repository not found", "text/plain", {"X-Error-Code": "RepoNotFound"}, head=head)

    def _json(self, obj: Any, head: bool) -> None:
        self._send(200, json.dumps(obj).encode(), "application/json", head=head)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts[
        len(root.parts):]))


def _oid(f: Path) -> str:
    st = f.stat()
    return hashlib.sha1(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()


def _commit(root: Path) -> str:
    return hashlib.sha1("|".join(_oid(f) for f in _files(root)).encode()).hexdigest()


def _repo_info(repo: str, root: Path) -> dict[str, Any]:
    return {"id": repo, "sha": _commit(root), "private": False,
            "siblings": [{"rfilename": f.relative_to(root).as_posix()} for f in _files(root)]}


def _tree(root: Path, sub: str, recursive: bool) -> list[dict[str, Any]]:
    base = root / sub if sub else root
    out: list[dict[str, Any]] = []
    entries = sorted(base.rglob("*") if recursive else base.iterdir())
    for p in entries:
        rel = p.relative_to(root).as_posix()
        if any(s.startswith(".") for s in p.relative_to(root).parts):
            continue
        if p.is_dir():
            out.append({"type": "directory", "path": rel, "oid": hashlib.sha1(rel.encode()).hexdigest()})
        else:
            out.append({"type": "file", "path": rel, "size": p.stat().st_size, "oid": _oid(p)})
    return out


def rebase_urls(metadata_dir: str | Path, out_dir: str | Path, base_url: str) -> list[Path]:
    """Copy a pool's metadata parquets with every url's directory replaced by ``base_url``.

    The embedded world's urls name the default port; a server on another port (tests, a busy 8765)
    needs its own copy. Columns other than ``url`` are copied unchanged.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in sorted(Path(metadata_dir).glob("*.parquet")):
        t = pq.read_table(f)
        i = t.schema.get_field_index("url")
        url = pc.replace_substring_regex(t["url"], r"^.*/", base_url.rstrip("/") + "/")
        t = t.set_column(i, pa.field("url", t.schema.field(i).type), url)
        pq.write_table(t, out / f.name)
        written.append(out / f.name)
    return written


def make_image_pool(root: str | Path, n: int = 48, seed: int = 0, big_every: int = 8, box_every: int = 6,
                    files: int = 1, base_url: str = "http://127.0.0.1:8765/images") -> dict[str, bytes]:
    """A pool of random JPEGs (shards + metadata) for download tests and benchmarks; uid -> bytes.

    Most images are 24-120 px (kept as they are by the default resize), every ``big_every``-th is
    700-900 px wide (resized to 512), every ``box_every``-th has a face box. Unlike the embedded world it
    takes no model and a fraction of a second; ``files`` splits the metadata into that many parquets.
    """
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from datacomp.pool.shards import ShardWriter

    rng = np.random.default_rng(seed)
    pool = Path(root) / "pool"
    images: dict[str, bytes] = {}
    rows = []
    w = ShardWriter(pool / "shards", 0)
    for i in range(n):
        uid = hashlib.md5(f"{seed}-{i}".encode()).hexdigest()
        big = i % big_every == big_every - 1
        wd, ht = ((int(rng.integers(700, 900)), int(rng.integers(500, 700))) if big
                  else (int(rng.integers(24, 120)), int(rng.integers(24, 120))))
        arr = rng.integers(0, 255, size=(ht // 8 + 1, wd // 8 + 1, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).resize((wd, ht), Image.Resampling.BILINEAR).save(buf, format="JPEG", quality=90)
        data = images[uid] = buf.getvalue()
        row = {"uid": uid, "face_bboxes": [[0.2, 0.2, 0.6, 0.7]] if i % box_every == 0 else [],
               "caption": f"picture {i}", "url": f"{base_url}/{uid}.jpg", "key": f"{i:012d}", "width": wd,
               "height": ht, "original_width": wd, "original_height": ht, "exif": None,
               "sha256": hashlib.sha256(data).hexdigest()}
        w.add_success(row, data)
        rows.append(row)
    w.close()
    t = pa.table({
        "uid": [r["uid"] for r in rows],
        "url": [r["url"] for r in rows],
        "text": [r["caption"] for r in rows],
        "original_width": pa.array([r["width"] for r in rows], pa.int64()),
        "original_height": pa.array([r["height"] for r in rows], pa.int64()),
        "clip_b32_similarity_score": pa.array(rng.random(n), pa.float32()),
        "clip_l14_similarity_score": pa.array(rng.random(n), pa.float32()),
        "face_bboxes": pa.array([r["face_bboxes"] for r in rows], pa.list_(pa.list_(pa.float64()))),
        "sha256": [r["sha256"] for r in rows],
    })
    (pool / "metadata").mkdir(parents=True, exist_ok=True)
    step = -(-n // files)
    for k in range(files):
        pq.write_table(t.slice(k * step, step), pool / "metadata" / f"{k:04d}.parquet", row_group_size=16)
    return images


def random_faults(uids: list[str], share: float, seed: int = 0,
                  kinds: tuple[str, ...] = ("404", "500", "503", "reset", "truncate", "corrupt", "not-image",
                                            "redirect", "optout:noai")) -> dict[str, str]:
    """A reproducible fault map over ``share`` of the uids, kinds drawn uniformly."""
    import numpy as np

    rng = np.random.default_rng(seed)
    chosen = rng.random(len(uids)) < share
    picks = rng.integers(0, len(kinds), size=len(uids))
    return {u: kinds[k] for u, c, k in zip(uids, chosen, picks) if c}
