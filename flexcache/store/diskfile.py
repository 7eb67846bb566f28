"""The disk tier's entry file, version 2 (docs/format.md, "Disk entry file"): its header and its reads.

``header | key | meta | blob``; the 20-byte header is little-endian ``magic
"FXDK", version u16, key length u16, meta length u32, blob length u64``. No
checksum here: the integrity layer frames meta and blob.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from flexcache.core.errors import CorruptBlobError

MAGIC = b"FXDK"
VERSION = 2  # 1 had CRCs of its own; the integrity layer frames meta and blob now
_FIXED = struct.Struct("<4sHHIQ")  # magic, version, key_len, meta_len, blob_len
HEADER_SIZE = _FIXED.size  # 20


@dataclass(frozen=True)
class _Header:
    key_len: int
    meta_len: int
    blob_len: int

    @property
    def blob_offset(self) -> int:
        return HEADER_SIZE + self.key_len + self.meta_len

    @property
    def file_size(self) -> int:
        return self.blob_offset + self.blob_len


def encode_header(key: bytes, meta: bytes, blob: bytes | memoryview) -> bytes:
    """Header plus key bytes of an entry file (what precedes meta and blob)."""
    return _FIXED.pack(MAGIC, VERSION, len(key), len(meta), len(blob)) + key


def decode_header(head: bytes, key: bytes) -> _Header:
    """Parse and check the first ``HEADER_SIZE + len(key)`` bytes of an entry file.

    Raises:
        CorruptBlobError: short read, wrong magic or version, or the file
            belongs to another key.
    """
    if len(head) < HEADER_SIZE:
        raise CorruptBlobError(f"entry header is {len(head)} bytes, expected {HEADER_SIZE}")
    magic, version, key_len, meta_len, blob_len = _FIXED.unpack_from(head)
    if magic != MAGIC:
        raise CorruptBlobError("entry file does not start with the disk tier magic")
    if version != VERSION:
        raise CorruptBlobError(f"entry file has format version {version} (written by another FlexCache "
                               f"release); this tier reads {VERSION}")
    if key_len != len(key):
        raise CorruptBlobError(f"entry header says its key is {key_len} bytes, expected {len(key)}")
    if len(head) < HEADER_SIZE + key_len:
        raise CorruptBlobError("entry file ends inside its key")
    stored_key = head[HEADER_SIZE:HEADER_SIZE + key_len]
    if stored_key != key:
        raise CorruptBlobError(f"entry file holds key {stored_key!r}, expected {key!r}")
    return _Header(key_len, meta_len, blob_len)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_exact(fd: int, size: int) -> bytes:
    """Up to `size` bytes from `fd` (fewer only at end of file)."""
    chunks = []
    while size > 0:
        chunk = os.read(fd, size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def file_identity(fd: int) -> tuple[int, int]:
    """(device, inode) of an open file: tells the file read from one a put renamed over it since."""
    stat = os.fstat(fd)
    return stat.st_dev, stat.st_ino


def read_body(fd: int, key: str, *, want_blob: bool) -> bytes:
    """The meta (or the blob) of the entry file open at `fd`, read from its start, lengths checked.

    Raises:
        CorruptBlobError: a header, a size or a length that is not what the file says.
        OSError: the file could not be read.
    """
    size = os.fstat(fd).st_size
    key_bytes = key.encode("ascii")
    header = decode_header(read_exact(fd, HEADER_SIZE + len(key_bytes)), key_bytes)
    if size != header.file_size:
        raise CorruptBlobError(f"entry file is {size} bytes, its header says {header.file_size}")
    meta = read_exact(fd, header.meta_len)
    if len(meta) != header.meta_len:
        raise CorruptBlobError(f"entry metadata is {len(meta)} bytes, its header says {header.meta_len}")
    if not want_blob:
        return meta
    blob = read_exact(fd, header.blob_len)
    if len(blob) != header.blob_len:
        raise CorruptBlobError(f"entry blob is {len(blob)} bytes, its header says {header.blob_len}")
    return blob


def blob_view(blob: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(blob)
    if view.c_contiguous and view.ndim == 1 and view.itemsize == 1:
        return view.cast("B") if view.format != "B" else view
    return memoryview(view.tobytes())
