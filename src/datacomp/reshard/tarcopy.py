"""Tar member copying at close to raw-copy speed: headers parsed by hand, data never decoded.

``tarfile`` spends tens of microseconds of Python per member; shards hold small members (a few KB),
so that would bound a reshard far below disk speed. Here the input is memory-mapped, headers are
parsed with a few slices (ustar, pax ``path``/``size`` records and GNU long names are understood),
and each selected member is written as a fresh ustar header plus the original data bytes.
"""

from __future__ import annotations

import mmap
import os
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO

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


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        sp = data.index(b" ", pos)
        length = int(data[pos:sp])
        key, _, value = data[sp + 1 : pos + length - 1].partition(b"=")
        out[key] = value
        pos += length
    return out


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
            pax = _pax_records(bytes(buf[data : data + size]))
        elif typ == b"L":
            long_name = bytes(buf[data : data + size]).rstrip(b"\0")
        elif typ in _REGULAR:
            if b"size" in pax:
                size = int(pax[b"size"])
                nxt = data + ((size + BLOCK - 1) & ~(BLOCK - 1))
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
        end = self.pos + 2 * BLOCK
        self.f.write(_ZEROS[: 2 * BLOCK + (-end % RECORD)])
        self.pos = end + (-end % RECORD)

