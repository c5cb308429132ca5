"""Tar shards read and written without ``tarfile``: headers parsed by hand, data never decoded.

``tarfile`` spends tens of microseconds of Python per member; shards hold small members (a few KB),
so that would bound reading (training) and copying (reshard) far below disk speed. Here a shard is
memory-mapped and its member table parsed vectorised (:func:`scan_layout`, plain ustar and
img2dataset's pax-mtime shards) or member by member (:func:`iter_members`: pax ``path``/``size``
records and GNU long names too); writers emit fresh ustar headers byte-identical to :func:`header`.
"""

from __future__ import annotations

import mmap
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from datacomp.errors import DataCompError

BLOCK = 512
RECORD = 20 * BLOCK  # tarfile pads archives to whole 10 KiB records
_ZEROS = bytes(RECORD)
_REGULAR = (b"0", b"\0", b"7")


def _number(field: bytes, path: str | os.PathLike[str], offset: int) -> int:
    if field[0] & 0x80:  # GNU base-256 for values that do not fit in octal
        return int.from_bytes(field[1:], "big")
    s = field.rstrip(b"\0 ").lstrip(b" ")
    try:
        return int(s, 8) if s else 0
    except ValueError:
        raise DataCompError(
            f"{path}: damaged tar header at byte {offset}; re-download or re-create this shard"
        ) from None


def _pax_records(data: bytes, path: str | os.PathLike[str], offset: int) -> dict[bytes, bytes]:
    """``"<len> <key>=<value>\\n"`` records; every record must advance, so a hostile length cannot loop."""
    out: dict[bytes, bytes] = {}
    pos = 0
    end = len(data.rstrip(b"\0"))  # the block is NUL-padded after the last record
    while pos < end:
        sp = data.find(b" ", pos, pos + 21)
        field = data[pos:sp] if sp > pos else b""
        length = int(field) if field.isdigit() else -1
        if length <= sp - pos + 1 or pos + length > end or data[pos + length - 1] != 0x0A:
            raise DataCompError(
                f"{path}: damaged pax header at byte {offset} (bad record at {pos}); re-create this shard"
            )
        key, eq, value = data[sp + 1 : pos + length - 1].partition(b"=")
        if not eq:
            raise DataCompError(
                f"{path}: damaged pax header at byte {offset} (record without '='); re-create this shard"
            )
        out[key] = value
        pos += length
    return out


def _pax_size(value: bytes, path: str | os.PathLike[str], offset: int) -> int:
    if not value.isdigit():
        raise DataCompError(f"{path}: damaged pax header at byte {offset} (size {value[:20]!r}); re-create this shard")
    return int(value)


@contextmanager
def mapped(path: str | os.PathLike[str]) -> Iterator[mmap.mmap | bytes]:
    """The file's bytes, memory-mapped (empty files give ``b""``)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield b""
            return
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            yield mm
        finally:
            with suppress(BufferError):  # a view still held by an exception's traceback: GC closes it
                mm.close()


def iter_members(buf: mmap.mmap | bytes, path: str | os.PathLike[str]) -> Iterator[tuple[str, str, int, int, int]]:
    """``(key, ext, data_offset, size, mtime)`` per regular file member, in archive order.

    ``key``/``ext`` split the member name at the first dot of its base name (webdataset's rule).
    """
    n = len(buf)
    off = 0
    long_name: bytes | None = None
    pax: dict[bytes, bytes] = {}
    while off + BLOCK <= n:
        hdr = buf[off : off + BLOCK]
        if hdr[0] == 0 and hdr.count(0) == BLOCK:
            return  # end-of-archive marker
        size = _number(hdr[124:136], path, off)
        typ = hdr[156:157]
        data = off + BLOCK
        nxt = data + ((size + BLOCK - 1) & ~(BLOCK - 1))
        if nxt > n:
            raise DataCompError(f"{path}: truncated tar (member at byte {off} runs past the end); re-create this shard")
        if typ == b"x":
            pax = _pax_records(bytes(buf[data : data + size]), path, off)
        elif typ == b"L":
            long_name = bytes(buf[data : data + size]).rstrip(b"\0")
        elif typ in _REGULAR:
            if b"size" in pax:
                size = _pax_size(pax[b"size"], path, off)
                nxt = data + ((size + BLOCK - 1) & ~(BLOCK - 1))
                if nxt > n:
                    raise DataCompError(
                        f"{path}: truncated tar (member at byte {off} runs past the end); re-create this shard"
                    )
            name = pax.get(b"path") or long_name
            if name is None:
                name = hdr[:100].split(b"\0", 1)[0]
                if hdr[257:262] == b"ustar" and hdr[345] != 0:
                    name = hdr[345:500].split(b"\0", 1)[0] + b"/" + name
            text = name.decode("utf-8", "surrogateescape")
            slash = text.rfind("/") + 1
            dot = text.find(".", slash)
            if dot >= 0:
                yield text[:dot], text[dot + 1 :], data, size, _number(hdr[136:148], path, off)
            pax, long_name = {}, None
        else:  # directories, links, global pax headers: nothing to copy
            pax, long_name = {}, None
        off = nxt


# ustar header template: mode 0444, uid/gid 0, type '0', owner names "datacomp".
_TEMPLATE = bytearray(BLOCK)
_TEMPLATE[100:108] = b"0000444\0"
_TEMPLATE[108:116] = b"0000000\0"
_TEMPLATE[116:124] = b"0000000\0"
_TEMPLATE[148:156] = b"        "
_TEMPLATE[156:157] = b"0"
_TEMPLATE[257:265] = b"ustar\x0000"
_TEMPLATE[265:273] = b"datacomp"
_TEMPLATE[297:305] = b"datacomp"
_TEMPLATE_SUM = sum(_TEMPLATE)


def header(name: str, size: int, mtime: int) -> bytes:
    """A ustar header for a regular file (pax via tarfile for names over 100 bytes or huge sizes)."""
    raw = name.encode("utf-8")
    if len(raw) > 100 or size >= 8**11 or not 0 <= mtime < 8**11:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode, ti.uname, ti.gname = size, mtime, 0o444, "datacomp", "datacomp"
        return ti.tobuf(format=tarfile.PAX_FORMAT)
    h = bytearray(_TEMPLATE)
    h[: len(raw)] = raw
    nums = b"%011o\0%011o\0" % (size, mtime)
    h[124:148] = nums
    h[148:156] = b"%06o\0 " % (_TEMPLATE_SUM + sum(raw) + sum(nums))
    return bytes(h)


class TarOut:
    """Append members to an open binary file as a tar; ``finish`` writes the end-of-archive blocks."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.pos = 0

    def add(self, name: str, data: bytes | memoryview, mtime: int) -> None:
        size = len(data)
        hdr = header(name, size, mtime)
        self.f.write(hdr)
        self.f.write(data)
        pad = -size % BLOCK
        if pad:
            self.f.write(_ZEROS[:pad])
        self.pos += len(hdr) + size + pad

    def finish(self) -> None:
        tail = end_blocks(self.pos)
        self.f.write(tail)
        self.pos += len(tail)



# --- vectorised path: whole shards parsed and assembled as (blocks, 512) numpy arrays --------------

_POW8 = 8 ** np.arange(10, -1, -1, dtype=np.int64)
_TEMPLATE_NP = np.frombuffer(bytes(_TEMPLATE), dtype=np.uint8)


@dataclass
class Layout:
    """Regular members of a ustar/pax archive without long names or prefixes, parsed vectorised."""

    blocks: np.ndarray  # (n_blocks, 512) uint8 view of the file
    hdr: np.ndarray  # header block index per member
    nblk: np.ndarray  # data blocks per member
    size: np.ndarray
    mtime: np.ndarray
    key: np.ndarray  # S array
    ext: np.ndarray  # S array


def _octal_fields(h: np.ndarray, start: int) -> np.ndarray | None:
    digits = h[:, start : start + 11].astype(np.int64) - 48
    if digits.size and (digits.min() < 0 or digits.max() > 7 or not np.isin(h[:, start + 11], (0, 32)).all()):
        return None
    return digits @ _POW8


def scan_layout(buf: mmap.mmap | bytes, path: str | os.PathLike[str]) -> Layout | None:
    """The member table of a ustar shard (pax mtime records allowed), or None: use the general parser.

    Candidate headers are the blocks with the ``ustar`` magic; they are accepted only if they chain
    exactly (each header plus its data ends where the next begins), so data that happens to contain
    the magic cannot be mistaken for a header.
    """
    arr = np.frombuffer(buf, dtype=np.uint8)
    nb = arr.size // BLOCK
    blocks = arr[: nb * BLOCK].reshape(nb, BLOCK)
    if nb == 0:
        return None
    cand = np.flatnonzero(blocks[:, 257] == ord("u"))  # one byte per block first, then the full magic
    cand = cand[(blocks[cand, 258:262] == np.frombuffer(b"star", np.uint8)).all(1)]
    if cand.size == 0 or cand[0] != 0:
        return None
    h = blocks[cand, :160]  # name, mode, ids, size, mtime, checksum, type: all this path reads
    typ = h[:, 156]
    if not np.isin(typ, (48, 0, 120)).all() or blocks[cand, 345].any():
        return None  # links, directories, GNU long names, name prefixes: general parser
    size, mtime = _octal_fields(h, 124), _octal_fields(h, 136)
    if size is None or mtime is None:
        return None
    nblk = (size + BLOCK - 1) // BLOCK
    nxt = cand + 1 + nblk
    if not np.array_equal(nxt[:-1], cand[1:]):
        return None
    if nxt[-1] > nb:
        raise DataCompError(f"{path}: truncated tar (last member runs past the end); re-create this shard")
    if nxt[-1] < nb and blocks[nxt[-1]].any():
        return None
    pax = typ == 120
    if pax.any():
        # pax headers (webdataset/img2dataset write one per member for the float mtime) may stay only
        # if each precedes a regular member and overrides neither its path nor its size
        if pax[-1] or (pax[:-1] & pax[1:]).any():
            return None
        records = blocks[ranges_to_index(cand[pax] + 1, nblk[pax])].tobytes()
        if any(k in records for k in (b" path=", b" size=", b" linkpath=", b"GNU.sparse")):
            return None
        keep = ~pax
        cand, h, nblk, size, mtime = cand[keep], h[keep], nblk[keep], size[keep], mtime[keep]
    width = int((h[:, :100] != 0).sum(1).max()) + 1  # longest name (names are NUL-terminated)
    names = h[:, : min(width, 100)]
    if (names == 47).any():  # '/' in a name: keys with directories take the general path
        return None
    isdot = names == 46
    if not isdot.any(1).all():
        return None
    dot = isdot.argmax(1)
    w = names.shape[1]
    d0 = int(dot[0])
    if 0 < d0 < w - 1 and (dot == d0).all():  # fixed-width keys (img2dataset's): two slices
        key = np.ascontiguousarray(names[:, :d0]).view(f"S{d0}").ravel()
        ext = np.ascontiguousarray(names[:, d0 + 1 :]).view(f"S{w - d0 - 1}").ravel()
        return Layout(blocks, cand, nblk, size, mtime, key, ext)
    col = np.arange(w)
    key = np.where(col < dot[:, None], names, 0)
    shifted = np.take_along_axis(names, np.minimum(dot[:, None] + 1 + col, w - 1), axis=1)
    ext = np.where(dot[:, None] + 1 + col < w, shifted, 0)
    return Layout(blocks, cand, nblk, size, mtime,
                  np.ascontiguousarray(key).view(f"S{w}").ravel(), np.ascontiguousarray(ext).view(f"S{w}").ravel())


def headers(names: np.ndarray, size: np.ndarray, mtime: np.ndarray) -> np.ndarray | None:
    """``(m, 512)`` ustar headers, byte-identical to :func:`header`; None if a field does not fit."""
    m = names.size
    width = names.dtype.itemsize
    if m and ((width > 100 and np.char.str_len(names).max() > 100) or size.max() >= 8**11 or mtime.min() < 0
              or mtime.max() >= 8**11):
        return None
    out = np.empty((m, BLOCK), dtype=np.uint8)
    out[:] = _TEMPLATE_NP
    w = min(width, 100)
    name_bytes = np.ascontiguousarray(names).view(np.uint8).reshape(m, width)[:, :w]
    out[:, :w] = name_bytes
    shifts = 3 * np.arange(10, -1, -1, dtype=np.int64)
    size_digits = ((size[:, None] >> shifts) & 7) + 48
    mtime_digits = ((mtime[:, None] >> shifts) & 7) + 48
    out[:, 124:135] = size_digits
    out[:, 135] = 0
    out[:, 136:147] = mtime_digits
    out[:, 147] = 0
    # the checksum is the byte sum with the checksum field as spaces: template + the fields set here
    chk = _TEMPLATE_SUM + name_bytes.sum(1, dtype=np.int64) + size_digits.sum(1) + mtime_digits.sum(1)
    out[:, 148:154] = ((chk[:, None] >> shifts[-6:]) & 7) + 48
    out[:, 154] = 0
    out[:, 155] = 32
    return out


def ranges_to_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` for each pair, vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offs = np.cumsum(lengths) - lengths
    return np.repeat(starts - offs, lengths) + np.arange(total, dtype=np.int64)


def end_blocks(pos: int) -> bytes:
    """End-of-archive marker plus padding to a whole record, for an archive of ``pos`` bytes so far."""
    end = pos + 2 * BLOCK
    return _ZEROS[: 2 * BLOCK + (-end % RECORD)]
