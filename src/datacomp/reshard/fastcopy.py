"""Vectorised output-shard assembly: gather 512-byte blocks of selected members, rewrite only headers.

In a tar each member is a header block followed by its data blocks (padded to 512 bytes); an output
member is the same run of blocks with a new header (``<uid>-<j>.<ext>``; pax blocks before it are
dropped). So an output shard is built with numpy fancy indexing over block rows, in bounded chunks,
with no Python work per member.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from datacomp.errors import DataCompError
from datacomp.pool.tario import BLOCK, end_blocks, headers, mapped, ranges_to_index, scan_layout
from datacomp.reshard.plan import Piece

CHUNK_BLOCKS = 1 << 17  # 64 MiB of output assembled at a time


@dataclass
class FastPlan:
    """Selected samples of a task's pieces (tar order per piece) and their members."""

    piece: np.ndarray  # per sample
    out_len: np.ndarray  # output blocks of one copy of the sample
    mem_start: np.ndarray  # into the member arrays below
    mem_count: np.ndarray
    uid: np.ndarray  # S32
    j0: np.ndarray
    n: np.ndarray
    src_hdr: np.ndarray  # per member: its header block in the input
    mlen: np.ndarray  # 1 + data blocks
    rel_hdr: np.ndarray  # its header block relative to the sample's first output block
    ext: np.ndarray
    size: np.ndarray
    mtime: np.ndarray


def missing_error(tar: str, lost: str, count: int) -> DataCompError:
    return DataCompError(
        f"{tar}: sample {lost} is listed as a success in its parquet but is not in the tar "
        f"({count} missing); re-download this shard or delete its parquet"
    )


def fast_plan(pieces: list[Piece]) -> FastPlan | None:
    """Locate every planned sample's block run; None when some input needs the general parser."""
    parts: list[tuple[np.ndarray, ...]] = []
    n_members = 0
    for pi, piece in enumerate(pieces):
        with mapped(piece.tar) as buf:
            lay = scan_layout(buf, piece.tar)
            if lay is None:
                return None
            want = piece.keys
            order = np.argsort(want)
            sk = want[order]
            pos = np.minimum(np.searchsorted(sk, lay.key), sk.size - 1)
            m_idx = np.flatnonzero(sk[pos] == lay.key)
            w = order[pos[m_idx]]
            starts = np.flatnonzero(np.r_[True, (w[1:] != w[:-1]) | (m_idx[1:] != m_idx[:-1] + 1)])
            if np.unique(w).size != starts.size:
                return None  # a sample's members are not consecutive: general path
            if starts.size != piece.keys.size:
                found = set(w[starts].tolist())
                lost = next(k for i, k in enumerate(piece.keys.tolist()) if i not in found).decode()
                raise missing_error(piece.tar, lost, piece.keys.size - starts.size)
            cnt = np.diff(np.r_[starts, m_idx.size])
            mlen = 1 + lay.nblk[m_idx]
            ends = np.cumsum(mlen)
            sample_end = ends[starts + cnt - 1]
            sample_len = sample_end - np.r_[0, sample_end[:-1]]
            rel = ends - mlen - np.repeat(sample_end - sample_len, cnt)
            ws = w[starts]
            parts.append((
                np.full(starts.size, pi), sample_len, n_members + starts, cnt,
                piece.uids[ws], piece.j0[ws], piece.n[ws], lay.hdr[m_idx], mlen, rel, lay.ext[m_idx], lay.size[m_idx],
                lay.mtime[m_idx],
            ))
            n_members += m_idx.size
    if not parts:
        return None
    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    return FastPlan(*cols)


def buffer_order(n: int, bufsize: int, rng: random.Random) -> list[int]:
    """Emission order of a webdataset-style shuffle buffer (the same rng calls as the general path)."""
    if bufsize <= 0:
        return list(range(n))
    out: list[int] = []
    buf: list[int] = []
    for i in range(n):
        if len(buf) < bufsize:
            buf.append(i)
            continue
        k = rng.randrange(bufsize)
        out.append(buf[k])
        buf[k] = i
    rng.shuffle(buf)
    out.extend(buf)
    return out


def fast_write(f: BinaryIO, pieces: list[Piece], fp: FastPlan, bufsize: int, rng: random.Random,
               kernel: bool = True) -> tuple[int, int, str] | None:
    """Write the planned samples as a tar to ``f`` (a fresh, empty file opened for reading and writing);
    (samples, bytes, "kernel" or "memory"), or None (nothing written) when a header needs more than
    plain ustar (the general path then writes pax). ``kernel=False`` forces the in-memory path.

    Each output member is its input block run (header + data) with a new header, so the output is a
    list of block runs copied from the inputs, merged where adjacent in both, plus the new headers.
    """
    e_sample = np.repeat(np.arange(fp.n.size), fp.n)
    e_j = np.repeat(fp.j0, fp.n) + np.arange(e_sample.size) - np.repeat(np.cumsum(fp.n) - fp.n, fp.n)
    if bufsize > 0:
        perm = np.asarray(buffer_order(e_sample.size, bufsize, rng), dtype=np.int64)
        e_sample, e_j = e_sample[perm], e_j[perm]
    e_len = fp.out_len[e_sample]
    e_off = np.cumsum(e_len) - e_len
    counts = fp.mem_count[e_sample]
    om = ranges_to_index(fp.mem_start[e_sample], counts)
    oe = np.repeat(np.arange(e_sample.size), counts)
    j = e_j[oe]
    j_text = (j + 48).astype(np.uint8).view("S1") if j.size and j.max() < 10 else j.astype("S20")  # 10x faster
    names = np.char.add(np.char.add(np.char.add(np.char.add(fp.uid[e_sample][oe], b"-"), j_text), b"."), fp.ext[om])
    hdrs = headers(names, fp.size[om], fp.mtime[om])
    if hdrs is None:
        return None
    hdr_at = e_off[oe] + fp.rel_hdr[om]
    n_blocks = int(e_off[-1] + e_len[-1]) if e_len.size else 0
    # chunks of whole emissions, about CHUNK_BLOCKS each: the unit of the in-memory path
    cuts = [0]
    while cuts[-1] < e_sample.size:
        cuts.append(max(int(np.searchsorted(e_off, e_off[cuts[-1]] + CHUNK_BLOCKS, "left")), cuts[-1] + 1))
    m_cut = np.searchsorted(oe, cuts[1:-1])
    # block runs: members adjacent in the same input and in the output merge into one copy
    m_piece = fp.piece[e_sample][oe]
    src, ln = fp.src_hdr[om], fp.mlen[om]
    brk = (m_piece[1:] != m_piece[:-1]) | (src[1:] != src[:-1] + ln[:-1]) | (hdr_at[1:] != hdr_at[:-1] + ln[:-1])
    brk[m_cut - 1] = True
    starts = np.r_[0, np.flatnonzero(brk) + 1] if om.size else np.zeros(0, np.int64)
    runs = Runs(m_piece[starts], src[starts], hdr_at[starts], np.add.reduceat(ln, starts) if om.size else starts)
    size = n_blocks * BLOCK + len(end_blocks(n_blocks * BLOCK))
    if kernel and _kernel_copy(f, pieces, runs, hdrs, hdr_at, size):
        return int(e_sample.size), size, "kernel"
    chunk_runs = np.r_[np.searchsorted(runs.dst, e_off[cuts[:-1]]), runs.n.size]
    _gather_write(f, pieces, runs, hdrs, hdr_at, chunk_runs, n_blocks)
    return int(e_sample.size), size, "memory"


@dataclass
class Runs:
    """Block runs to copy, in output order: input piece, first input block, first output block, length."""

    piece: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    n: np.ndarray


def _kernel_copy(f: BinaryIO, pieces: list[Piece], runs: Runs, hdrs: np.ndarray, hdr_at: np.ndarray,
                 size: int) -> bool:
    """Runs copied by ``copy_file_range`` (page cache to page cache, 3-4x faster than ``write`` here),
    then the new headers patched through a memory map. False, having written nothing, where the
    platform or file system cannot (no such call, different file systems): use the in-memory path."""
    if not hasattr(os, "copy_file_range") or size == 0:
        return False
    out = f.fileno()
    fds = [os.open(p.tar, os.O_RDONLY) for p in pieces]
    try:
        for pi, s, d, n in zip(runs.piece.tolist(), (runs.src * BLOCK).tolist(), (runs.dst * BLOCK).tolist(),
                               (runs.n * BLOCK).tolist(), strict=True):
            while n > 0:
                try:
                    done = os.copy_file_range(fds[pi], out, n, s, d)
                except OSError as e:
                    if e.errno in _NO_KERNEL_COPY and d == 0:
                        return False
                    raise
                if done == 0:
                    raise DataCompError(f"{pieces[pi].tar}: shorter than its tar headers say; re-create this shard")
                s, d, n = s + done, d + done, n - done
    finally:
        for fd in fds:
            os.close(fd)
    os.ftruncate(out, size)  # the end-of-archive blocks are zeros: extending the file writes them
    try:
        mm = _writable_map(out, size)
    except OSError:  # a file system without shared writable maps: one pwrite per header
        for at, h in zip((hdr_at * BLOCK).tolist(), hdrs, strict=True):
            os.pwrite(out, h.tobytes(), at)
        return True
    with mm:
        view = np.frombuffer(mm, dtype=np.uint8).reshape(-1, BLOCK)
        view[hdr_at] = hdrs
        del view
    return True


def _writable_map(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size)


_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF, errno.EPERM}


def _gather_write(f: BinaryIO, pieces: list[Piece], runs: Runs, hdrs: np.ndarray, hdr_at: np.ndarray,
                  chunk_runs: np.ndarray, n_blocks: int) -> None:
    """The portable path: assemble each chunk of output blocks in memory, then one ``write``."""
    work = np.empty((min(CHUNK_BLOCKS, n_blocks), BLOCK), np.uint8)
    for ra, rb in zip(chunk_runs[:-1].tolist(), chunk_runs[1:].tolist(), strict=True):
        base = int(runs.dst[ra])
        end = int(runs.dst[rb - 1] + runs.n[rb - 1])
        out = work[: end - base] if end - base <= work.shape[0] else np.empty((end - base, BLOCK), np.uint8)
        for pi in np.unique(runs.piece[ra:rb]).tolist():
            sel = ra + np.flatnonzero(runs.piece[ra:rb] == pi)
            with mapped(pieces[pi].tar) as buf:
                arr = np.frombuffer(buf, dtype=np.uint8)
                blocks = arr[: arr.size // BLOCK * BLOCK].reshape(-1, BLOCK)
                for s, d, n in zip(runs.src[sel].tolist(), (runs.dst[sel] - base).tolist(), runs.n[sel].tolist(),
                                   strict=True):
                    out[d : d + n] = blocks[s : s + n]
                del arr, blocks
        h0, h1 = np.searchsorted(hdr_at, [base, end])
        out[hdr_at[h0:h1] - base] = hdrs[h0:h1]
        f.write(memoryview(out).cast("B"))
    f.write(end_blocks(n_blocks * BLOCK))
