"""The one storage layer: every step reads and writes through a :class:`Location`.

A ``Location`` is an fsspec filesystem plus a path on it, so a step never needs to know whether it
runs on a local disk or in a bucket: ``as_location("s3://bucket/pool/metadata")``,
``as_location("gs://...")``, ``as_location("hf://datasets/org/name/...")``, ``as_location("memory://x")``,
``as_location("file:///data/pool")`` and ``as_location("/data/pool")`` all give the same methods.

Local locations (plain paths and ``file://``) go straight to ``os``/``pathlib`` — ``local_path``
gives the :class:`~pathlib.Path` the fast paths need (memory-mapped tar scans, ``copy_file_range``,
memory-mapped subset files), which callers choose only when ``is_local``. Remote locations stream
through fsspec file objects in bounded memory.

Atomic writes (nothing half-written ever sits under a final name):

- local: write ``.<name>.<pid>.tmp`` beside the target, then ``os.replace`` (a rename);
- ``s3://`` and ``gs://`` (``OBJECT_PUT_PROTOCOLS``): write the final key directly. An object store
  makes an object visible only when its single PUT or multipart upload completes, so readers never
  see part of it; on failure the upload is aborted (``discard``) and nothing appears;
- any other filesystem (``memory://``, ``hf://``, ...): write a temporary key beside the target,
  then ``mv`` it (copy + delete where the filesystem has no rename).

A URL whose filesystem package is missing, a missing bucket, missing credentials and a denied access
each raise :class:`~datacomp.errors.DataCompError` with one line naming the URL and the fix.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from datacomp.errors import DataCompError

log = logging.getLogger(__name__)

LOCAL_PROTOCOLS = ("file", "local")
# Filesystem package and install command per protocol.
EXTRAS: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "pip install 'datacomp[remote]'"),
    "s3a": ("s3fs", "pip install 'datacomp[remote]'"),
    "gs": ("gcsfs", "pip install 'datacomp[remote]'"),
    "gcs": ("gcsfs", "pip install 'datacomp[remote]'"),
    "hf": ("huggingface_hub", "pip install huggingface_hub (a core dependency: reinstall datacomp)"),
}
# Object stores where an object appears only when its upload completes (see the module docstring).
OBJECT_PUT_PROTOCOLS = ("s3", "s3a", "gs", "gcs")
# Listings are not cached for these: other processes (the engine's workers) write beside us.
_NO_LISTINGS_CACHE = ("s3", "s3a", "gs", "gcs")
_CREDENTIALS_FIX = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE); for an S3-compatible "
          "server also AWS_ENDPOINT_URL",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or run `gcloud auth "
          "application-default login`)",
    "hf": "set HF_TOKEN (or run `huggingface-cli login`)",
}


def split_protocol(url: str | os.PathLike[str]) -> tuple[str | None, str]:
    """``("s3", "bucket/key")`` for a URL, ``(None, path)`` for a plain path (``file://`` -> None)."""
    s = os.fspath(url)
    if "://" in s:
        proto, rest = s.split("://", 1)
        if proto and proto.replace("+", "").replace("-", "").isalnum() and not proto[0].isdigit():
            return (None, rest) if proto in LOCAL_PROTOCOLS else (proto.lower(), rest)
    return None, s


def is_url(x: str | os.PathLike[str] | Location) -> bool:
    """True for a remote location (anything with a protocol other than ``file://``)."""
    if isinstance(x, Location):
        return not x.is_local
    return split_protocol(x)[0] is not None


def _filesystem(proto: str, url: str) -> Any:
    import fsspec

    opts: dict[str, Any] = {}
    if proto in _NO_LISTINGS_CACHE:
        opts["use_listings_cache"] = False
    try:
        return fsspec.filesystem(proto, **opts)
    except ImportError:
        pkg, fix = EXTRAS.get(proto, (_known_package(proto), ""))
        fix = fix or f"pip install {pkg}"
        raise DataCompError(f"{url}: {proto}:// locations need the {pkg} package; install it: {fix}") from None
    except ValueError:
        raise DataCompError(
            f"{url}: unknown storage protocol {proto}://; use a local path, file://, s3://, gs://, hf:// or memory://"
        ) from None
    except Exception as e:  # noqa: BLE001 - e.g. gcsfs resolving credentials when it is created
        msg = describe_error(e, url, proto, "open")
        if msg is None:
            raise
        raise DataCompError(msg) from None


def _known_package(proto: str) -> str:
    """The package fsspec names for a protocol (``"Install adlfs to ..."``), else a generic phrase."""
    from fsspec.registry import known_implementations

    err = known_implementations.get(proto, {}).get("err", "")
    words = err.split()
    return words[1] if len(words) > 1 and words[0] == "Install" else f"the fsspec implementation of {proto}://"


class Location:
    """A path on a filesystem: local (``fs`` is None, ``path`` as given) or any fsspec filesystem."""

    __slots__ = ("fs", "path", "protocol")

    def __init__(self, path: str, fs: Any = None, protocol: str | None = None):
        self.fs = fs
        self.protocol = protocol
        self.path = path.rstrip("/") if fs is not None and len(path) > 1 else path

    # --- identity ------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.fs is None

    @property
    def local_path(self) -> Path | None:
        """The local :class:`Path` (for the local-only fast paths), or None for a remote location."""
        return Path(self.path) if self.fs is None else None

    @property
    def native(self) -> Path | Location:
        """A :class:`Path` for a local location (what local callers have always had), else itself."""
        return Path(self.path) if self.fs is None else self

    @property
    def url(self) -> str:
        """The location as a string: the path for local ones, ``proto://path`` otherwise."""
        return self.path if self.fs is None else f"{self.protocol}://{self.path}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Location({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and self.url == other.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __fspath__(self) -> str:
        """Local locations are path-like (``open``, numpy and pyarrow accept them); remote ones are not."""
        if self.fs is not None:
            raise TypeError(f"{self.url} is a remote location; open it with Location.open()")
        return self.path

    def __truediv__(self, part: str) -> Location:
        return self.join(part)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1] if self.fs is not None else Path(self.path).name

    @property
    def stem(self) -> str:
        n = self.name
        return n.rsplit(".", 1)[0] if "." in n.lstrip(".") else n

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def parent(self) -> Location:
        if self.fs is None:
            return Location(str(Path(self.path).parent))
        head = self.path.rsplit("/", 1)[0] if "/" in self.path else self.path
        return Location(head, self.fs, self.protocol)

    def join(self, *parts: str) -> Location:
        if self.fs is None:
            return Location(str(Path(self.path).joinpath(*parts)))
        p = "/".join([self.path.rstrip("/"), *(s.strip("/") for s in parts)])
        return Location(p, self.fs, self.protocol)

    def with_name(self, name: str) -> Location:
        return self.parent.join(name)

    def with_suffix(self, suffix: str) -> Location:
        return self.with_name(str(Path(self.name).with_suffix(suffix)))

    def resolve(self) -> Location:
        """Absolute for local paths (as ``Path.resolve``), unchanged for URLs."""
        return Location(str(Path(self.path).expanduser().resolve())) if self.fs is None else self

    def is_relative_to(self, other: Location) -> bool:
        if self.is_local != other.is_local or self.protocol != other.protocol:
            return False
        if self.fs is None:
            return Path(self.path).is_relative_to(other.path)
        return self.path == other.path or self.path.startswith(other.path.rstrip("/") + "/")

    # --- queries -------------------------------------------------------------------------------
    def _ask(self, local: Any, remote: str, op: str) -> Any:
        """A query answered by ``local(path)`` on disk or by the filesystem's ``remote`` method."""
        if self.fs is None:
            return local(self.path)
        with self._errors(op):
            return getattr(self.fs, remote)(self.path)

    def exists(self) -> bool:
        return bool(self._ask(os.path.exists, "exists", "check"))

    def isdir(self) -> bool:
        return bool(self._ask(os.path.isdir, "isdir", "list"))

    def isfile(self) -> bool:
        return bool(self._ask(os.path.isfile, "isfile", "check"))

    def size(self) -> int:
        return int(self._ask(lambda p: os.stat(p).st_size, "size", "stat"))

    def info(self) -> dict[str, Any]:
        """``{"bytes", "mtime"}`` (mtime: seconds, or None where the store gives none)."""
        if self.fs is None:
            st = os.stat(self.path)
            return {"bytes": st.st_size, "mtime": st.st_mtime, "mtime_ns": st.st_mtime_ns}
        with self._errors("stat"):
            i = self.fs.info(self.path)
        m = i.get("LastModified") or i.get("mtime") or i.get("updated") or i.get("created")
        if hasattr(m, "timestamp"):
            m = m.timestamp()
        elif isinstance(m, str):
            from datetime import datetime

            with contextlib.suppress(ValueError):
                m = datetime.fromisoformat(m.replace("Z", "+00:00")).timestamp()
        mtime = float(m) if isinstance(m, int | float) else None
        tag = i.get("ETag") or i.get("etag") or i.get("md5Hash") or i.get("crc32c")
        return {"bytes": int(i.get("size") or 0), "mtime": mtime,
                "mtime_ns": int(mtime * 1e9) if mtime is not None else 0, "etag": tag}

    def ls(self, pattern: str | None = None, dirs: bool = False) -> list[Location]:
        """Direct children, sorted by name (files only unless ``dirs``); ``pattern`` is a name glob."""
        if self.fs is None:
            with os.scandir(self.path) as it:
                names = sorted(e.name for e in it if (e.is_dir() if dirs else not e.is_dir()))
            base = Path(self.path)
            out = [Location(str(base / n)) for n in names]
        else:
            with self._errors("list"):
                entries = self.fs.ls(self.path, detail=True)
            want = "directory" if dirs else "file"
            paths = sorted(e["name"].rstrip("/") for e in entries if e.get("type") == want)
            out = [Location(p, self.fs, self.protocol) for p in paths if p.rstrip("/") != self.path]
        if pattern is not None:
            out = [x for x in out if fnmatch.fnmatchcase(x.name, pattern)]
        return out

    def glob(self, pattern: str) -> list[Location]:
        """Children whose name matches ``pattern`` (files), sorted by name."""
        return self.ls(pattern)

    def check_bucket(self) -> None:
        """Raise one clear line when the bucket of an object-store URL is missing or unreachable."""
        if self.fs is None or self.protocol not in OBJECT_PUT_PROTOCOLS:
            return
        bucket = self.path.split("/", 1)[0]
        with self._errors("access"):
            ok = self.fs.exists(bucket)
        if not ok:
            raise DataCompError(
                f"{self.url}: bucket {bucket!r} does not exist or is not visible with these credentials; "
                f"create it or fix the URL"
            )

    # --- reading -------------------------------------------------------------------------------
    def open(self, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        """An open file (read modes; write through :meth:`atomic_open`). Remote reads stream."""
        if self.fs is None:
            return open(self.path, mode, **kwargs)  # noqa: SIM115 - the caller closes it
        with self._errors("read" if "r" in mode else "write"):
            return self.fs.open(self.path, mode, **kwargs)

    def read_bytes(self) -> bytes:
        if self.fs is None:
            return Path(self.path).read_bytes()
        with self._errors("read"):
            return bytes(self.fs.cat_file(self.path))

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def read_json(self) -> Any:
        return json.loads(self.read_bytes())

    @contextlib.contextmanager
    def local_copy(self) -> Iterator[Path]:
        """A local path with this file's bytes: the file itself when local, else a temporary download."""
        if self.fs is None:
            yield Path(self.path)
            return
        with tempfile.TemporaryDirectory(prefix="datacomp-") as d:
            p = Path(d) / self.name
            with self._errors("read"):
                self.fs.get_file(self.path, str(p))
            yield p

    # --- writing -------------------------------------------------------------------------------
    def mkdirs(self) -> None:
        """Create the directory (and parents) locally; a no-op on object stores (no directories)."""
        if self.fs is None:
            os.makedirs(self.path, exist_ok=True)
        elif self.protocol not in OBJECT_PUT_PROTOCOLS:
            with self._errors("write"):
                self.fs.makedirs(self.path, exist_ok=True)

    @contextlib.contextmanager
    def atomic_open(self, mode: str = "wb", buffering: int = -1) -> Iterator[IO[Any]]:
        """A file to write; it appears under this name only if the block completes (module docstring)."""
        if "r" in mode or "a" in mode:
            raise ValueError(f"atomic_open writes a new file; mode {mode!r} is not supported")
        if self.fs is None:
            with self.atomic_path() as tmp, open(tmp, mode, buffering=buffering) as f:
                yield f
            return
        direct = self.protocol in OBJECT_PUT_PROTOCOLS
        target = self if direct else self.with_name(_tmp_basename(self.name))
        self.parent.mkdirs()
        with self._errors("write"):
            f = self.fs.open(target.path, "wb")
        text = "b" not in mode
        fh: Any = io.TextIOWrapper(f, encoding="utf-8", write_through=True) if text else f
        try:
            yield fh
        except BaseException as e:
            _discard(f, committed=not direct, fs=self.fs, path=target.path)
            msg = describe_error(e, self.url, self.protocol or "", "write") if isinstance(e, Exception) else None
            if msg is None:
                raise
            raise DataCompError(msg) from None  # (an upload failed part-way: nothing was published)
        with self._errors("write"):
            if text:
                fh.flush()
                fh.detach()
            f.close()
            if not direct:
                self.fs.mv(target.path, self.path)

    @contextlib.contextmanager
    def atomic_path(self) -> Iterator[Path]:
        """A local temporary path to write (a file or a directory); published here on success.

        Local: renamed into place. Remote: a local spool file (disk, not memory) uploaded on success.
        """
        if self.fs is None:
            final = Path(self.path)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(_tmp_basename(final.name))
            try:
                yield tmp
                os.replace(tmp, final)
            except BaseException:
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
                raise
            return
        with tempfile.TemporaryDirectory(prefix="datacomp-spool-") as d:
            tmp = Path(d) / self.name
            yield tmp
            if tmp.is_dir():
                raise DataCompError(f"{self.url}: cannot publish a directory atomically to {self.protocol}://")
            self.upload(tmp)

    def upload(self, local: str | os.PathLike[str]) -> None:
        """Publish a complete local file here (atomically, as :meth:`atomic_open`)."""
        if self.fs is None:
            with self.atomic_path() as tmp:
                shutil.copyfile(local, tmp)
            return
        with open(local, "rb") as src, self.atomic_open("wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)

    def write_bytes(self, data: bytes | memoryview) -> None:
        """Write atomically."""
        with self.atomic_open("wb") as f:
            f.write(data)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def rm(self, recursive: bool = False, missing_ok: bool = True) -> None:
        if self.fs is None:
            p = Path(self.path)
            if p.is_dir() and not p.is_symlink():
                if recursive:
                    shutil.rmtree(p, ignore_errors=missing_ok)
                else:
                    p.rmdir()
            else:
                p.unlink(missing_ok=missing_ok)
            return
        with self._errors("delete"):
            try:
                self.fs.rm(self.path, recursive=recursive)
            except FileNotFoundError:
                if not missing_ok:
                    raise

    # --- errors --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        """Turn a storage service's exceptions into one line naming the URL and the fix."""
        try:
            yield
        except DataCompError:
            raise
        except Exception as e:  # noqa: BLE001 - boto/gcs/hf raise their own types
            msg = describe_error(e, self.url, self.protocol or "file", op)
            if msg is None:
                raise
            raise DataCompError(msg) from None


def _tmp_basename(name: str) -> str:
    return f".{name}.{os.getpid()}.tmp"


def _discard(f: Any, committed: bool, fs: Any, path: str) -> None:
    """Abandon a remote file being written: abort the upload, never publish a part of it."""
    with contextlib.suppress(Exception):
        f.discard()  # s3fs: abort the multipart upload; gcsfs: cancel the resumable upload
    if committed:  # a temporary key: let the file close (some filesystems store it then), delete it
        with contextlib.suppress(Exception):
            f.close()
        with contextlib.suppress(Exception):
            fs.rm(path)
    else:
        f.closed = True  # so that garbage collection does not close (= publish) it


def describe_error(e: BaseException, url: str, protocol: str, op: str) -> str | None:
    """One line for a storage failure (None when ``e`` is not one: the caller re-raises it)."""
    name = type(e).__name__
    text = str(e).splitlines()[0] if str(e) else name
    proto = {"s3a": "s3", "gcs": "gs"}.get(protocol, protocol)
    creds = _CREDENTIALS_FIX.get(proto, "check the credentials for this storage service")
    low = text.lower()
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                "DefaultCredentialsError", "LocalTokenNotFoundError") or "unable to locate credentials" in low:
        return f"{url}: no credentials to {op} {proto}:// locations; {creds}"
    if "nosuchbucket" in low or "specified bucket does not exist" in low or ("bucket" in low and "not found" in low):
        bucket = url.split("://", 1)[-1].split("/", 1)[0]
        return f"{url}: bucket {bucket!r} does not exist; create it or fix the URL"
    if isinstance(e, PermissionError) or "accessdenied" in low or "access denied" in low or "forbidden" in low \
            or "invalidaccesskeyid" in low or "signaturedoesnotmatch" in low:
        return f"{url}: access denied ({op}: {text}); {creds}, with permission to {op} this location"
    if isinstance(e, FileNotFoundError):
        return f"{url}: not found"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError",
                "ServerDisconnectedError") or isinstance(e, ConnectionError):
        return (f"{url}: cannot reach the storage service ({name}: {text}); check the network"
                + (" and AWS_ENDPOINT_URL" if proto == "s3" else ""))
    if isinstance(e, OSError) and protocol not in LOCAL_PROTOCOLS:
        return f"{url}: {op} failed ({name}: {text})"
    return None


def as_location(x: str | os.PathLike[str] | Location) -> Location:
    """A :class:`Location` for a local path, a ``file://`` URL or any fsspec URL."""
    if isinstance(x, Location):
        return x
    s = os.fspath(x)
    proto, rest = split_protocol(s)
    if proto is None:
        return Location(str(Path(rest)))
    fs = _filesystem(proto, s)
    return Location(fs._strip_protocol(s), fs, proto)


def location_str(x: str | os.PathLike[str] | Location) -> str:
    """``x`` as a string for records and messages (a URL stays a URL; a local path stays as given)."""
    return x.url if isinstance(x, Location) else os.fspath(x)


# --- module-level helpers used by datacomp.io and the steps ------------------------------------


@contextlib.contextmanager
def parquet_file(path: str | os.PathLike[str] | Location) -> Iterator[Any]:
    """A ``pyarrow.parquet.ParquetFile``: a local file directly (pyarrow's own reader), a remote
    one through a streamed, seekable fsspec file (only the footer and the columns read are fetched)."""
    import pyarrow.parquet as pq

    loc = as_location(path)
    if loc.is_local:
        with pq.ParquetFile(loc.path) as f:
            yield f
        return
    with loc.open("rb") as fh, pq.ParquetFile(fh) as f:
        yield f


def copy(src: str | os.PathLike[str] | Location, dst: str | os.PathLike[str] | Location) -> None:
    """Copy one file between any two locations, atomically at ``dst`` (streamed, bounded memory)."""
    s, d = as_location(src), as_location(dst)
    if s.is_local:
        d.upload(s.path)
        return
    with s.open("rb") as fin, d.atomic_open("wb") as fout:
        shutil.copyfileobj(fin, fout, 8 << 20)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str] | Location) -> Iterator[Path]:
    """See :meth:`Location.atomic_path`."""
    with as_location(final).atomic_path() as tmp:
        yield tmp


@contextlib.contextmanager
def atomic_open(final: str | os.PathLike[str] | Location, mode: str = "wb", buffering: int = -1) -> Iterator[IO[Any]]:
    """See :meth:`Location.atomic_open`."""
    with as_location(final).atomic_open(mode, buffering) as f:
        yield f


# --- staged directories: local working copies of remote run folders -----------------------------

SYNC_MANIFEST = ".datacomp_sync.json"  # in a staged copy: what was last pulled or pushed (size, mtime)


def staging_root() -> Path:
    """Where staged copies of remote directories live: ``$DATACOMP_STAGING`` or ``~/.cache/datacomp/staging``."""
    return Path(os.environ.get("DATACOMP_STAGING") or Path.home() / ".cache" / "datacomp" / "staging")


def _is_temporary(name: str) -> bool:
    return name == SYNC_MANIFEST or (name.startswith(".") and (name.endswith(".tmp") or name.endswith(".lock")))


def _local_state(root: Path) -> dict[str, list[int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not _is_temporary(p.name):
            st = p.stat()
            out[p.relative_to(root).as_posix()] = [st.st_size, st.st_mtime_ns]
    return out


def pull_dir(remote: Location, local: Path) -> int:
    """Copy the files under ``remote`` that the local copy lacks (or holds at another size); returns the count."""
    n = 0
    if not remote.isdir():
        return 0
    with remote._errors("list"):
        found = remote.fs.find(remote.path)
    base = remote.path.rstrip("/") + "/"
    for rpath in sorted(found):
        rel = rpath[len(base):] if rpath.startswith(base) else os.path.basename(rpath)
        if not rel or _is_temporary(os.path.basename(rel)):
            continue
        dst = local / rel
        size = Location(rpath, remote.fs, remote.protocol).size()
        if dst.is_file() and dst.stat().st_size == size:
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(_tmp_basename(dst.name))
        with remote._errors("read"):
            remote.fs.get_file(rpath, str(tmp))
        os.replace(tmp, dst)
        n += 1
    return n


def push_dir(local: Path, remote: Location) -> int:
    """Upload the local files changed since the last pull or push (each one atomically); returns the count."""
    manifest = local / SYNC_MANIFEST
    synced = json.loads(manifest.read_text()) if manifest.is_file() else {}
    now = _local_state(local)
    n = 0
    for rel, state in now.items():
        if synced.get(rel) != state:
            remote.join(*rel.split("/")).upload(local / rel)
            n += 1
    tmp = manifest.with_name(_tmp_basename(manifest.name))
    tmp.write_text(json.dumps(now))
    os.replace(tmp, manifest)
    return n


@contextlib.contextmanager
def staged_dir(url: str | os.PathLike[str] | Location, upload: bool = True) -> Iterator[Path]:
    """A local working directory for ``url``: the path itself when local; for a remote folder, a copy
    under :func:`staging_root` filled from the URL first (so a run resumes from what it uploaded) and
    uploaded back file by file when the block ends, also when it fails (every file written through
    the project's atomic writes is complete, so a killed job's finished checkpoints are kept).

    For tools that need a POSIX directory (training checkpoints, evaluation results). Processes that
    share a node share the copy (a lock serialises the pull); only callers with ``upload`` push.
    """
    import fcntl
    import hashlib

    loc = as_location(url)
    if loc.is_local:
        p = Path(loc.path)
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    local = staging_root() / hashlib.sha256(loc.url.encode()).hexdigest()[:16] / (loc.name or "root")
    local.mkdir(parents=True, exist_ok=True)
    with open(local.parent / ".pull.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pulled = pull_dir(loc, local)
        if pulled:
            push_state = local / SYNC_MANIFEST  # what was just pulled need not be pushed back
            push_state.write_text(json.dumps(_local_state(local)))
    log.info("%s: working in the staged copy %s (%d file(s) pulled)", loc.url, local, pulled)
    try:
        yield local
    finally:
        if upload:
            n = push_dir(local, loc)
            log.info("%s: %d file(s) uploaded from %s", loc.url, n, local)


def load_numpy(x: str | os.PathLike[str] | Location, mmap: bool = False) -> Any:
    """``np.load`` (no pickles) of a ``.npy``/``.npz`` at any location: memory-mapped when local and
    ``mmap``, read whole into memory when remote."""
    import numpy as np

    loc = as_location(x)
    if loc.is_local:
        return np.load(loc.local_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    return np.load(io.BytesIO(loc.read_bytes()), allow_pickle=False)
