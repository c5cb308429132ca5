"""Vectorised output-shard assembly: gather 512-byte blocks of selected members, rewrite only headers.

In a tar each member is a header block followed by its data blocks (padded to 512 bytes); an output
member is the same run of blocks with a new header (``<uid>-<j>.<ext>``; pax blocks before it are
dropped). So an output shard is built with numpy fancy indexing over block rows, in bounded chunks,
with no Python work per member.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from datacomp.errors import DataCompError
from datacomp.reshard.plan import Piece
from datacomp.reshard.tarcopy import BLOCK, end_blocks, headers, mapped, ranges_to_index, scan_layout

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
            want = np.char.encode(piece.keys, "utf-8")
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
                lost = next(k for i, k in enumerate(piece.keys.tolist()) if i not in found)
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


def fast_write(f: BinaryIO, pieces: list[Piece], fp: FastPlan, bufsize: int, rng: random.Random
               ) -> tuple[int, int] | None:
    """Write the planned samples as a tar to ``f``; (samples, bytes), or None (nothing written) when
    a header needs more than plain ustar (the general path then writes pax headers)."""
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
    names = np.char.add(np.char.add(np.char.add(np.char.add(fp.uid[e_sample][oe], b"-"), e_j[oe].astype("S20")),
                                    b"."), fp.ext[om])
    hdrs = headers(names, fp.size[om], fp.mtime[om])
    if hdrs is None:
        return None
    hdr_at = e_off[oe] + fp.rel_hdr[om]
    total = 0
    a = 0
    work = np.empty((min(CHUNK_BLOCKS, int(e_off[-1] + e_len[-1])) if e_len.size else 0, BLOCK), np.uint8)
    m_piece = fp.piece[e_sample][oe]
    while a < e_sample.size:
        base = int(e_off[a])
        b = max(int(np.searchsorted(e_off, base + CHUNK_BLOCKS, "left")), a + 1)
        nblocks = int(e_off[b - 1] + e_len[b - 1]) - base
        out = work[:nblocks] if nblocks <= work.shape[0] else np.empty((nblocks, BLOCK), np.uint8)
        ma, mb = np.searchsorted(oe, [a, b])  # output members of emissions a..b-1
        for pi in np.unique(m_piece[ma:mb]).tolist():
            sel = ma + np.flatnonzero(m_piece[ma:mb] == pi)
            s0, ln, d0 = fp.src_hdr[om[sel]], fp.mlen[om[sel]], hdr_at[sel] - base
            # merge members adjacent in both input and output into runs: one slice copy per run
            brk = np.flatnonzero((s0[1:] != s0[:-1] + ln[:-1]) | (d0[1:] != d0[:-1] + ln[:-1])) + 1
            starts = np.r_[0, brk]
            run_len = np.add.reduceat(ln, starts)
            with mapped(pieces[pi].tar) as buf:
                arr = np.frombuffer(buf, dtype=np.uint8)
                blocks = arr[: arr.size // BLOCK * BLOCK].reshape(-1, BLOCK)
                for src, dst, n in zip(s0[starts].tolist(), d0[starts].tolist(), run_len.tolist(), strict=True):
                    out[dst : dst + n] = blocks[src : src + n]
                del arr, blocks
        out[hdr_at[ma:mb] - base] = hdrs[ma:mb]
        f.write(memoryview(out).cast("B"))
        total += out.nbytes
        a = b
    tail = end_blocks(total)
    f.write(tail)
    return int(e_sample.size), total + len(tail)

