"""One output shard = one task: copy its planned samples' member bytes from the input tars."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from datacomp.errors import DataCompError
from datacomp.io import write_json_atomic
from datacomp.pool.shards import iter_stream_members, shard_name
from datacomp.pool.tario import TarOut, iter_members, mapped
from datacomp.reshard.fastcopy import fast_plan, fast_write, missing_error
from datacomp.reshard.plan import Piece
from datacomp.storage import as_location, is_url

IMAGE_EXTS = ("jpg", "jpeg")


def write_output_shard(
    out_dir: str,
    index: int,
    pieces: list[Piece],
    shuffle_bufsize: int = 0,
    seed: int = 0,
    blur: bool = False,
    boxes: dict[str, list[list[float]]] | None = None,
    blur_quality: int = 95,
    fast: bool = True,
    kernel_copy: bool = True,
) -> dict[str, Any]:
    """Write ``NNNNNNNN.tar`` then ``NNNNNNNN_stats.json``; both appear under final names only when complete.

    Members are copied byte for byte (renamed ``<uid>-<j>.<ext>``); with ``blur`` the ``jpg`` of a sample
    with face boxes (from ``boxes`` or its json's ``face_bboxes``) is decoded, blurred and re-encoded.
    Plain ustar inputs take the vectorised block path (``fast``: kernel copies where the platform has
    them, else assembled in memory); every path writes identical bytes (``st["path"]`` says which ran).
    An input or output at a storage URL streams: remote inputs take the general path (one member in
    memory at a time), a remote output is uploaded as it is written (kernel copies are local-only).
    """
    out = as_location(out_dir)
    name = shard_name(index)
    planned = sum(int(p.n.sum()) for p in pieces)
    rng = random.Random(f"{seed}-{index}")
    st: dict[str, Any] = {"samples": 0, "bytes": 0, "blurred": 0, "blur_seconds": 0.0, "input_shards": len(pieces)}
    local_in = not any(is_url(p.tar) for p in pieces)
    with (out / f"{name}.tar").atomic_open("w+b" if out.is_local else "wb", buffering=1 << 20) as f:
        done = None
        if fast and not blur and local_in:
            fp = fast_plan(pieces)
            done = (fast_write(f, pieces, fp, shuffle_bufsize, rng, kernel=kernel_copy and out.is_local)
                    if fp is not None else None)
        if done is None:  # the general path replays the same shuffle from a fresh generator
            rng = random.Random(f"{seed}-{index}")
            done = (*_general_write(f, pieces, shuffle_bufsize, rng, blur, boxes, blur_quality, st), "general")
        st["samples"], st["bytes"], st["path"] = done
        if st["samples"] != planned:  # checked before the rename: a wrong tar never gets the final name
            raise DataCompError(f"{out / name}.tar: wrote {st['samples']} samples, planned {planned}; "
                                "an input shard holds a sample key twice")
    write_json_atomic(out / f"{name}_stats.json", {"successes": st["samples"]}, indent=4)
    st["blur_seconds"] = round(st["blur_seconds"], 3)
    return st


def _flush(tar, key, members, want, done, emit, buffer, bufsize, rng, blur, boxes, quality, st) -> None:  # noqa: ANN001, PLR0913
    """Emit one selected sample ``n`` times (through the shuffle buffer when one is set)."""
    uid, j0, n = want[key]
    if key in done:
        raise DataCompError(f"{tar}: sample key {key} appears twice, apart (ambiguous: which one is {uid}?); "
                            "re-create this shard")
    done.add(key)
    if blur:
        members = _blurred(uid, members, boxes, quality, st)
    if bufsize > 0:
        members = [(ext, bytes(data), mtime) for ext, data, mtime in members]
    for j in range(j0, j0 + n):
        item = (f"{uid}-{j}", members)
        if bufsize <= 0:
            emit(*item)
            continue
        if len(buffer) < bufsize:
            buffer.append(item)
            continue
        i = rng.randrange(bufsize)
        buffer[i], item = item, buffer[i]
        emit(*item)


def _blurred(uid: str, members: list, boxes: dict | None, quality: int, st: dict) -> list:  # noqa: ANN001
    from datacomp.pool.blur import blur_jpeg

    if boxes is not None:
        bb = boxes.get(uid)
    else:
        meta = next((d for ext, d, _ in members if ext == "json"), None)
        bb = json.loads(bytes(meta)).get("face_bboxes") if meta is not None else None
    if not bb:
        return members
    t0 = time.perf_counter()
    out = []
    for ext, data, mtime in members:
        if ext in IMAGE_EXTS:
            data = blur_jpeg(bytes(data), bb, quality=quality)
            st["blurred"] += 1
        out.append((ext, data, mtime))
    st["blur_seconds"] += time.perf_counter() - t0
    return out


def _general_write(f: BinaryIO, pieces: list[Piece], shuffle_bufsize: int, rng: random.Random, blur: bool,
                   boxes: dict[str, list[list[float]]] | None, blur_quality: int, st: dict[str, Any]
                   ) -> tuple[int, int]:
    """Member-by-member copy through the general tar parser (pax, long names, blurring)."""
    tar = TarOut(f)
    buffer: list[tuple[str, list[tuple[str, bytes, int]]]] = []
    count = 0

    def emit(key: str, members: list[tuple[str, Any, int]]) -> None:
        nonlocal count
        for ext, data, mtime in members:
            tar.add(f"{key}.{ext}", data, mtime)
        count += 1

    for piece in pieces:
        keys = [k.decode("utf-8", "surrogateescape") for k in piece.keys.tolist()]
        want = {k: (u, j, n) for k, u, j, n in zip(keys, piece.uids.astype("U32").tolist(),
                                                    piece.j0.tolist(), piece.n.tolist(), strict=True)}
        done: set[str] = set()
        with _members(piece.tar, want) as it:
            cur: str | None = None
            members: list[tuple[str, Any, int]] = []
            for key, ext, data, mtime in it:
                if key != cur:
                    if members:
                        _flush(piece.tar, cur, members, want, done, emit, buffer, shuffle_bufsize, rng, blur, boxes,
                               blur_quality, st)
                    cur, members = key, []
                if key in want:
                    members.append((ext, data, mtime))
            if members:
                _flush(piece.tar, cur, members, want, done, emit, buffer, shuffle_bufsize, rng, blur, boxes,
                       blur_quality, st)
            members = []
        if len(done) != len(want):
            raise missing_error(piece.tar, next(k for k in want if k not in done), len(want) - len(done))
    rng.shuffle(buffer)
    for key, members in buffer:
        emit(key, members)
    tar.finish()
    return count, tar.pos


@contextlib.contextmanager
def _members(tar: str, want: dict[str, Any]) -> Iterator[Iterator[tuple[str, str, Any, int]]]:
    """``(key, ext, data, mtime)`` per member: views of a memory-mapped local tar, or bytes streamed
    from a storage URL (only the wanted samples' bytes are kept)."""
    loc = as_location(tar)
    if not loc.is_local:
        with loc.open("rb", cache_type="readahead") as f:
            yield iter_stream_members(f, tar, want.__contains__)
        return
    with mapped(loc.path) as buf, memoryview(buf) as mv:
        yield ((key, ext, mv[off : off + size], mtime) for key, ext, off, size, mtime in iter_members(buf, tar))
