"""Fuzz every reader of a user-supplied file: a valid result or one one-line ``DataCompError``, in bounded time.

Each reader starts from real, valid files (written by the project's own writers, ``tarfile`` or the
embedded world) and hypothesis mutates one of them: truncation, byte flips, inserted or overwritten
runs, garbage, and format-aware edits (tar size fields, pax record lengths of 0 / negative / huge,
GNU long-name blocks, JSON values of the wrong type). Every call runs under a ``SIGALRM`` timer, so
a reader that loops forever is reported as a hang instead of stalling the suite.

The CI set is bounded (``CI_EXAMPLES`` per reader, derandomized); ``scripts/fuzz.py --examples 200``
runs the same readers longer and prints a table of outcomes per reader.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import signal
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (dev requirements)")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from datacomp.errors import DataCompError  # noqa: E402

CI_EXAMPLES = 25
TIME_LIMIT = 10.0  # seconds per reader call; every valid seed reads in well under 1 s
MODEL = "datacomp-tiny-rn"


# --------------------------------------------------------------------------------------------------
# outcomes


class Hang(BaseException):
    """Raised by the alarm in a reader that ran past the time bound (BaseException: no reader swallows it)."""


@dataclass
class Outcome:
    kind: str  # "valid", "error" (one-line DataCompError), "traceback", "hang"
    detail: str = ""
    seconds: float = 0.0


def run_bounded(fn: Callable[[], Any], limit: float = TIME_LIMIT) -> Outcome:
    """Run ``fn`` with a wall-clock bound; classify what happened."""

    def alarm(_signum: int, _frame: Any) -> None:
        raise Hang()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    t0 = time.perf_counter()
    try:
        fn()
        out = Outcome("valid")
    except Hang:
        out = Outcome("hang", f"no result within {limit:.0f} s:\n" + traceback.format_exc(limit=-6))
    except DataCompError as e:
        msg = str(e)
        ok = bool(msg.strip()) and "\n" not in msg and "\r" not in msg
        out = Outcome("error" if ok else "traceback", msg if ok else f"multi-line or empty DataCompError: {msg!r}")
    except Exception:  # noqa: BLE001 - exactly what the fuzzer looks for
        out = Outcome("traceback", traceback.format_exc())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    out.seconds = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------------
# mutations


def _octal(width: int) -> st.SearchStrategy[bytes]:
    """Values for a tar numeric field: valid, huge, negative, base-256, garbage, empty."""
    return st.one_of(
        st.integers(0, 8**(width - 1) - 1).map(lambda v: f"{v:0{width - 1}o}".encode() + b"\0"),
        st.just(b"7" * width), st.just(b"-1".ljust(width, b"\0")), st.just(b"\0" * width),
        st.binary(min_size=width, max_size=width),
        st.integers(0, 2**62).map(lambda v: b"\x80" + v.to_bytes(width - 1, "big")),
        st.just(b"\xff" * width),
    )


def _tar_headers(seed: bytes) -> list[int]:
    """Offsets of every header block (members and their pax / GNU extension headers) of a valid tar."""
    offs, off = [], 0
    while off + 512 <= len(seed) and seed[off : off + 512].count(0) != 512:
        offs.append(off)
        size = int(seed[off + 124 : off + 136].rstrip(b"\0 ") or b"0", 8)
        off += 512 + (size + 511) // 512 * 512
    return offs


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, kinds: tuple[str, ...]) -> bytes:
    """One mutation of ``seed``: a generic byte edit or, for the formats in ``kinds``, a structural one."""
    ops = ["truncate", "flip", "insert", "overwrite", "garbage", "empty", "duplicate"]
    if "tar" in kinds:
        ops += ["tar_size", "tar_size", "tar_field", "tar_zero_block", "tar_type"]
    if "pax" in kinds:
        ops += ["pax_len", "pax_len", "pax_record"]
    if "json" in kinds:
        ops += ["json_value", "json_value", "json_doc"]
    if "jsonl" in kinds:
        ops += ["jsonl_line", "jsonl_line", "json_doc"]
    if "text" in kinds:
        ops += ["text_line", "text_line"]
    op = draw(st.sampled_from(ops))
    b = bytearray(seed)
    n = len(b)
    if op == "truncate":
        return bytes(b[: draw(st.integers(0, max(n - 1, 0)))])
    if op == "flip":
        for _ in range(draw(st.integers(1, 8))):
            if n:
                b[draw(st.integers(0, n - 1))] ^= draw(st.integers(1, 255))
        return bytes(b)
    if op == "insert":
        at = draw(st.integers(0, n))
        return bytes(b[:at] + draw(st.binary(min_size=1, max_size=600)) + b[at:])
    if op == "overwrite":
        at = draw(st.integers(0, max(n - 1, 0)))
        chunk = draw(st.binary(min_size=1, max_size=64))
        b[at : at + len(chunk)] = chunk
        return bytes(b)
    if op == "garbage":
        return draw(st.binary(min_size=1, max_size=4096))
    if op == "empty":
        return b""
    if op == "duplicate":
        a = draw(st.integers(0, n))
        c = draw(st.integers(a, n))
        return bytes(b[:c] + b[a:c] + b[c:])
    if op.startswith("tar_"):
        heads = _tar_headers(seed) or [0]
        h = draw(st.sampled_from(heads))
        if op == "tar_size":
            b[h + 124 : h + 136] = draw(_octal(12))
        elif op == "tar_field":
            start, width = draw(st.sampled_from([(100, 8), (108, 8), (116, 8), (136, 12), (148, 8), (345, 155),
                                                 (0, 100), (257, 8)]))
            b[h + start : h + start + width] = draw(st.binary(min_size=width, max_size=width))
        elif op == "tar_zero_block":
            b[h : h + 512] = bytes(512)
        else:
            b[h + 156] = draw(st.sampled_from(b"xgLK12345670\0Z"))
        return bytes(b)
    if op.startswith("pax_"):
        heads = [h for h in _tar_headers(seed) if seed[h + 156 : h + 157] in (b"x", b"g")] or [0]
        h = draw(st.sampled_from(heads))
        data = h + 512
        if op == "pax_len":
            sp = seed.find(b" ", data, data + 32)
            sp = sp if sp > 0 else data + 2
            value = draw(st.sampled_from([b"0", b"-1", b"-100", b"1", b"2", b"99999999999", b"abc", b"", b"00",
                                          b"+5", b" 7", b"1e3"]))
            return bytes(b[:data] + value + b[sp:])
        rec = draw(st.sampled_from([b"0 \n", b"-5 x=y\n", b"3 =\n", b"12 size=-1\n", b"16 size=99999999\n",
                                    b"13 path=\xff\xfe\n", b"9 nospace", b"30 path=a\n"]))
        return bytes(b[:data] + rec + b[data + len(rec):])
    if op in ("json_value", "json_doc"):
        value = draw(JSON)
        if op == "json_doc":
            doc: Any = value
        else:
            try:
                doc = json.loads(seed)
            except ValueError:
                doc = {}
            doc = _replace_somewhere(draw, doc, value)
        text = json.dumps(doc, allow_nan=True)
        if "jsonl" in kinds and op == "json_doc":
            return (text + "\n").encode()
        return text.encode()
    if op == "jsonl_line":
        lines = seed.split(b"\n")
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        try:
            row = json.loads(lines[i])
        except ValueError:
            row = {}
        new = json.dumps(_replace_somewhere(draw, row, draw(JSON)), allow_nan=True).encode()
        if draw(st.booleans()):
            lines[i] = new
        else:
            lines.insert(i, new)
        return b"\n".join(lines)
    if op == "text_line":
        lines = seed.split(b"\n")
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        lines[i] = draw(st.sampled_from([b"", b"abc", b"-1", b"1e9", b"99999999999999999999", b"\xff\xfe",
                                         b"0x10", b" 3 ", b"\0", b"NaN", b"1.5"]))
        return b"\n".join(lines)
    raise AssertionError(op)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20) | st.sampled_from(["/nonexistent/x.pt", "datacomp-tiny-rn", "../x", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)


def _replace_somewhere(draw: st.DrawFn, doc: Any, value: Any) -> Any:
    """``doc`` with one value (at any depth) replaced by ``value``, or deleted, or a key added."""
    if isinstance(doc, dict) and doc:
        k = draw(st.sampled_from(sorted(doc)))
        action = draw(st.sampled_from(["replace", "recurse", "delete", "add"]))
        doc = dict(doc)
        if action == "replace":
            doc[k] = value
        elif action == "recurse":
            doc[k] = _replace_somewhere(draw, doc[k], value)
        elif action == "delete":
            del doc[k]
        else:
            doc[draw(st.text(max_size=8))] = value
        return doc
    if isinstance(doc, list) and doc:
        i = draw(st.integers(0, len(doc) - 1))
        doc = list(doc)
        doc[i] = _replace_somewhere(draw, doc[i], value) if draw(st.booleans()) else value
        return doc
    return value


# --------------------------------------------------------------------------------------------------
# seeds: real, valid inputs


def _uids(n: int = 40, seed: int = 0) -> np.ndarray:
    from datacomp import uids as U

    rng = np.random.default_rng(seed)
    return U.hex_to_uids([f"{int(v):032x}" for v in rng.integers(1, 2**62, n)])


def _jpeg(rng: np.random.Generator, size: int = 24) -> bytes:
    from PIL import Image

    b = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(b, "JPEG", quality=80)
    return b.getvalue()


def seed_subset_npy(d: Path, world: Any) -> None:
    from datacomp import uids as U

    U.write_subset(d / "s.npy", _uids())


def seed_subset_raw(d: Path, world: Any) -> None:
    from datacomp import uids as U

    U.write_subset(d / "s.bin", _uids(), raw=True)


def seed_subset_text(d: Path, world: Any) -> None:
    from datacomp import uids as U

    (d / "s.txt").write_text("".join(h + "\n" for h in U.uids_to_hex(_uids())))


def seed_metadata(d: Path, world: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datacomp import uids as U

    rng = np.random.default_rng(0)
    n = 30
    (d / "metadata").mkdir()
    t = pa.table({
        "uid": list(U.uids_to_hex(_uids(n))),
        "url": [f"http://127.0.0.1/{i}.jpg" for i in range(n)],
        "text": [f"a photo of thing {i}" for i in range(n)],
        "original_width": rng.integers(50, 900, n).astype(np.int64),
        "original_height": rng.integers(50, 900, n).astype(np.int64),
        "clip_b32_similarity_score": rng.random(n).astype(np.float32),
        "clip_l14_similarity_score": rng.random(n).astype(np.float32),
        "face_bboxes": [[[0.1, 0.1, 0.3, 0.3]] if i % 5 == 0 else [] for i in range(n)],
        "sha256": [f"{i:064x}" for i in range(n)],
    })
    pq.write_table(t, d / "metadata" / "0000.parquet", row_group_size=10)
    np.savez(d / "metadata" / "0000.npz", b32_img=rng.standard_normal((n, 8)).astype(np.float16),
             l14_img=rng.standard_normal((n, 12)).astype(np.float16),
             l14_txt=rng.standard_normal((n, 12)).astype(np.float16))


def _samples(n: int, long_names: bool = False) -> list[tuple[str, dict[str, bytes]]]:
    from datacomp import uids as U

    rng = np.random.default_rng(1)
    hexes = U.uids_to_hex(_uids(n, seed=2))
    out = []
    for i in range(n):
        key = f"{i:09d}" if not long_names else f"{'deep/' * 20}{i:09d}_{'n' * 40}"
        meta = {"uid": str(hexes[i]), "caption": f"thing {i}", "key": key, "url": "u", "face_bboxes": []}
        out.append((key, {"jpg": _jpeg(rng), "txt": f"thing {i}".encode(), "json": json.dumps(meta).encode()}))
    return out


def _write_tar(path: Path, fmt: int, long_names: bool = False, pax_extra: bool = False) -> None:
    with tarfile.open(path, "w", format=fmt) as tf:
        for key, members in _samples(6, long_names):
            for ext, data in members.items():
                ti = tarfile.TarInfo(f"{key}.{ext}")
                ti.size, ti.mtime, ti.mode = len(data), 0, 0o444
                if pax_extra:
                    ti.pax_headers = {"comment": "x" * 30, "datacomp.key": key}
                tf.addfile(ti, io.BytesIO(data))


def seed_tar_ustar(d: Path, world: Any) -> None:
    from datacomp.pool.shards import ShardWriter

    w = ShardWriter(d, 0, mtime=0)
    for _key, m in _samples(6):
        w.add_success(json.loads(m["json"]), m["jpg"])
    w.close()
    (d / "00000000.parquet").unlink()  # index from the tar itself
    (d / "00000000_stats.json").unlink()


def seed_tar_pax(d: Path, world: Any) -> None:
    _write_tar(d / "00000000.tar", tarfile.PAX_FORMAT, long_names=True, pax_extra=True)


def seed_tar_gnu(d: Path, world: Any) -> None:
    _write_tar(d / "00000000.tar", tarfile.GNU_FORMAT, long_names=True)


def read_tar(d: Path) -> None:
    from datacomp.pool.shards import iter_tar_samples
    from datacomp.reshard.index import index_shard

    tar = d / "00000000.tar"
    n = sum(len(m) for _k, m in iter_tar_samples(tar))
    idx = index_shard(tar)
    assert n >= len(idx.keys)


def read_reshard(d: Path) -> None:
    """The reshard step end to end on a (mutated) input shard, with a subset of every seed uid."""
    from datacomp import uids as U
    from datacomp.reshard import reshard

    sub = d.parent / "sub.npy"
    U.write_subset(sub, _uids(6, seed=2))
    reshard(d, d.parent / "out", sub, shard_size=4, workers=1, progress=False)


def seed_eval(d: Path, world: Any) -> None:
    shutil.copy(world.eval_suite / "eval_tasks.json", d / "eval_tasks.json")
    shutil.copytree(world.eval_suite / "embedded-count", d / "embedded-count")


def read_eval(d: Path) -> None:
    from datacomp.evaluate.data import iter_samples, locate
    from datacomp.evaluate.registry import select_tasks

    task = select_tasks("embedded", ["embedded/count"], tasks_file=d / "eval_tasks.json")[0]
    data = locate(task, d)
    assert sum(1 for _ in iter_samples(data, lambda im: im.size)) > 0


def seed_results(d: Path, world: Any) -> None:
    rows = [{"key": f"embedded/t{i}", "dataset": f"t{i}", "metrics": {"acc1": 0.25 * i, "main_metric": 0.25 * i}}
            for i in range(4)]
    (d / "eval_results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_results(d: Path) -> None:
    from datacomp.evaluate.results import read_results as rr

    rows = rr(d / "eval_results.jsonl")
    assert isinstance(rows, list)


def _train_dir(d: Path) -> Path:
    exp = d / "exp"
    (exp / "checkpoints").mkdir(parents=True)
    (exp / "checkpoints" / "epoch_latest.pt").write_bytes(b"weights")
    return exp


def seed_train_record(d: Path, world: Any) -> None:
    exp = _train_dir(d)
    rec = {"step": "train", "config": {"model": MODEL, "scale": "tiny", "seed": 0},
           "checkpoint": "checkpoints/epoch_latest.pt", "counts": {"steps": 8}}
    (exp / "train_record.json").write_text(json.dumps(rec))


def seed_info_pkl(d: Path, world: Any) -> None:
    exp = _train_dir(d)
    info = {"scale": "tiny", "checkpoint": exp / "checkpoints" / "epoch_latest.pt",
            "scale_config": {"model": MODEL}, "data_dir": Path("/data")}
    (exp / "info.pkl").write_bytes(pickle.dumps(info))


def read_train_dir(d: Path) -> None:
    from datacomp.evaluate.model import resolve_model

    spec = resolve_model(train_output_dir=d / "exp")
    assert spec.name


def seed_meta(d: Path, world: Any) -> None:
    from datacomp import uids as U
    from datacomp.reshard import reshard

    pool = d / "pool"
    pool.mkdir()
    seed_tar_ustar(pool, world)
    U.write_subset(d / "sub.npy", _uids(4, seed=2))
    reshard(pool, d / "nc", d / "sub.npy", no_copy=True, workers=1, progress=False)


def read_meta(d: Path) -> None:
    from datacomp.reshard import load_uid_filter
    from datacomp.train.data import resolve_sources

    filt = load_uid_filter(d / "nc")
    if filt is not None:
        filt[1].contains(np.asarray(["0" * 32], dtype="U32"))
    resolve_sources(str(d / "nc"))


def seed_stats(d: Path, world: Any) -> None:
    """A finished real download (4 images from a local server) whose ``_stats.json`` is then fuzzed."""
    from datacomp.pool.download import DownloadOptions, download
    from datacomp.pool.http import FetchConfig
    from datacomp.synth.serve import PoolServer, make_image_pool, rebase_urls

    make_image_pool(d / "src", n=4)
    with PoolServer(d / "src" / "pool") as server:
        rebase_urls(d / "src" / "pool" / "metadata", d / "meta", server.base_url)
        download(d / "meta", d / "shards", _dl_options(), progress=False)
    shutil.rmtree(d / "src")
    assert (d / "shards" / "00000000_stats.json").is_file(), (DownloadOptions, FetchConfig)


def _dl_options() -> Any:
    from datacomp.pool.download import DownloadOptions
    from datacomp.pool.http import FetchConfig

    return DownloadOptions(fetch=FetchConfig(allowed_networks=("127.0.0.0/8",)), thread_count=2,
                           samples_per_shard=4)


def read_stats(d: Path) -> None:
    from datacomp.pool.download import download

    # as img2dataset leaves a finished shard: its _stats.json is the only sign it is done, and is read back
    shutil.rmtree(d / "shards" / ".download_state", ignore_errors=True)
    download(d / "meta", d / "shards", _dl_options(), progress=False)


def seed_suite(d: Path, world: Any) -> None:
    seed_eval(d, world)


def read_suite(d: Path) -> None:
    from datacomp.evaluate.registry import select_tasks

    select_tasks("embedded", None, tasks_file=d / "eval_tasks.json")


# --------------------------------------------------------------------------------------------------
# the readers


@dataclass(frozen=True)
class Reader:
    name: str
    seed: Callable[[Path, Any], None]
    read: Callable[[Path], None]
    targets: tuple[str, ...]  # files (relative to the seed dir) one of which is mutated per input
    kinds: tuple[str, ...] = ()
    needs_world: bool = False
    notes: str = field(default="", compare=False)


READERS: tuple[Reader, ...] = (
    Reader("subset .npy", seed_subset_npy, lambda d: _read_subset(d / "s.npy"), ("s.npy",)),
    Reader("subset raw", seed_subset_raw, lambda d: _read_subset(d / "s.bin"), ("s.bin",)),
    Reader("subset text", seed_subset_text, lambda d: _from_text(d / "s.txt"), ("s.txt",), ("text",)),
    Reader("metadata parquet", seed_metadata, lambda d: _read_metadata(d, "parquet"), ("metadata/0000.parquet",)),
    Reader("metadata npz", seed_metadata, lambda d: _read_metadata(d, "npz"), ("metadata/0000.npz",)),
    Reader("shard tar ustar", seed_tar_ustar, read_tar, ("00000000.tar",), ("tar",)),
    Reader("shard tar pax", seed_tar_pax, read_tar, ("00000000.tar",), ("tar", "pax")),
    Reader("shard tar GNU", seed_tar_gnu, read_tar, ("00000000.tar",), ("tar",)),
    Reader("reshard on a shard", seed_tar_pax, read_reshard, ("00000000.tar",), ("tar", "pax")),
    Reader("eval-set tar", seed_eval, read_eval, ("embedded-count/test/0.tar",), ("tar",), needs_world=True),
    Reader("eval-set side files", seed_eval, read_eval,
           ("embedded-count/test/nshards.txt", "embedded-count/classnames.txt",
            "embedded-count/zeroshot_classification_templates.txt"), ("text",), needs_world=True),
    Reader("eval_results.jsonl", seed_results, read_results, ("eval_results.jsonl",), ("jsonl",)),
    Reader("train_record.json", seed_train_record, read_train_dir, ("exp/train_record.json",), ("json",)),
    Reader("info.pkl", seed_info_pkl, read_train_dir, ("exp/info.pkl",)),
    Reader("reshard meta.json", seed_meta, read_meta, ("nc/meta.json",), ("json",)),
    Reader("download _stats.json", seed_stats, read_stats, ("shards/00000000_stats.json",), ("json",)),
    Reader("suite config eval_tasks.json", seed_suite, read_suite, ("eval_tasks.json",), ("json",),
           needs_world=True),
)


def _read_subset(p: Path) -> None:
    from datacomp.uids import read_subset

    read_subset(p)


def _from_text(p: Path) -> None:
    from datacomp.uids import uids_from_text

    uids_from_text(p)


def _read_metadata(d: Path, which: str) -> None:
    from datacomp.filters import metadata as md

    for p in md.list_parquets(d / "metadata"):
        if which == "parquet":
            schema = md.read_schema(p)
            md.check_columns(p, schema, ["uid", "text", "original_width", "clip_l14_similarity_score"])
            t = md.read_columns(p, ["uid", "text", "original_width", "clip_l14_similarity_score"])
            from datacomp.uids import hex_to_uids

            hex_to_uids(t.column("uid"))
        else:
            md.read_embeddings(p, "l14_img", rows=md.num_rows(p))


# --------------------------------------------------------------------------------------------------
# running one input


class Fuzzer:
    """Seeds built once per reader; each input is a fresh copy with one file replaced by mutated bytes."""

    def __init__(self, root: Path, world: Any = None):
        self.root = Path(root)
        self.world = world
        self.seeds: dict[str, Path] = {}

    def seed_dir(self, r: Reader) -> Path:
        if r.name not in self.seeds:
            d = self.root / "seeds" / f"{len(self.seeds):02d}"
            d.mkdir(parents=True)
            r.seed(d, self.world)
            out = run_bounded(lambda: r.read(d), 120)
            assert out.kind == "valid", f"{r.name}: the unmutated seed must read cleanly: {out.detail}"
            self.seeds[r.name] = d
        return self.seeds[r.name]

    def original(self, r: Reader, target: str) -> bytes:
        return (self.seed_dir(r) / target).read_bytes()

    def run(self, r: Reader, target: str, data: bytes) -> Outcome:
        work = Path(tempfile.mkdtemp(dir=self.root, prefix="case_"))
        try:
            d = work / "in"
            shutil.copytree(self.seed_dir(r), d, symlinks=True)
            (d / target).write_bytes(data)
            return run_bounded(lambda: r.read(d))
        finally:
            shutil.rmtree(work, ignore_errors=True)


def inputs(fz: Fuzzer, r: Reader) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.sampled_from(r.targets).flatmap(
        lambda t: mutated(fz.original(r, t), r.kinds + (("text",) if t.endswith(".txt") else ())).map(
            lambda b: (t, b)))


def fuzz_settings(examples: int, derandomize: bool = True) -> settings:
    return settings(max_examples=examples, derandomize=derandomize, deadline=None, database=None,
                    phases=(Phase.explicit, Phase.generate), print_blob=False,
                    suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------------------------------
# the CI set


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory, request) -> Fuzzer:
    world = request.getfixturevalue("world") if any(r.needs_world for r in READERS) else None
    return Fuzzer(tmp_path_factory.mktemp("fuzz"), world)


@pytest.mark.fuzz
@pytest.mark.parametrize("reader", READERS, ids=[r.name for r in READERS])
def test_reader_gives_result_or_one_line_error(reader: Reader, fuzzer: Fuzzer):
    fuzzer.seed_dir(reader)
    seen: dict[str, int] = {}

    @fuzz_settings(CI_EXAMPLES)
    @given(case=inputs(fuzzer, reader))
    def prop(case: tuple[str, bytes]) -> None:
        target, data = case
        out = fuzzer.run(reader, target, data)
        seen[out.kind] = seen.get(out.kind, 0) + 1
        assert out.kind in ("valid", "error"), \
            f"{reader.name}: {target} ({len(data)} bytes) -> {out.kind}\n{out.detail}"

    prop()
    assert sum(seen.values()) >= CI_EXAMPLES * 0.8


@pytest.mark.fuzz
def test_the_fuzzer_can_fail():
    """The bound and the classification themselves: a hang, a traceback and a multi-line error are caught."""
    assert run_bounded(lambda: time.sleep(5), 0.2).kind == "hang"
    assert run_bounded(lambda: [][1]).kind == "traceback"
    assert run_bounded(lambda: (_ for _ in ()).throw(DataCompError("a\nb"))).kind in ("traceback", "error")
    assert run_bounded(lambda: (_ for _ in ()).throw(DataCompError("bad file: fix it"))).kind == "error"

    def loop() -> None:
        while True:
            pass

    assert run_bounded(loop, 0.2).kind == "hang"


@pytest.mark.fuzz
def test_pax_length_zero_is_bounded(fuzzer: Fuzzer):
    """The known hang (a pax record of length 0), as a fixed input: a one-line error, well within the bound."""
    r = next(r for r in READERS if r.name == "shard tar pax")
    seed = fuzzer.original(r, "00000000.tar")
    h = next(h for h in _tar_headers(seed) if seed[h + 156 : h + 157] == b"x")
    sp = seed.index(b" ", h + 512)
    for length in (b"0", b"-3"):
        out = fuzzer.run(r, "00000000.tar", seed[: h + 512] + length + seed[sp:])
        assert out.kind == "error", out.detail
        assert out.seconds < 2.0
