"""The lossless-stage container, version 2: chunk sizes in front of standard compressed chunks.

Layout (docs/format.md, "Lossless stage container"), little-endian::

    magic "FXLZ" | version u8 (2) | algorithm id u8 | reserved 2 | chunk bytes u32
    | raw bytes u64 | chunk count u32 | chunk sizes u32 x count | chunks, concatenated

No checksums of its own: the container sits inside a codec blob, and blobs
that leave process memory are framed by the store's integrity layer. The
structural checks here still refuse a container that contradicts itself, so a
truncated or foreign stream is a `CorruptBlobError`, never wrong bytes of the
right length.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

from flexcache.core.errors import ConfigError, CorruptBlobError
from flexcache.core.names import LOSSLESS_ALGORITHMS

ALGORITHMS: tuple[str, ...] = LOSSLESS_ALGORITHMS
PORTABLE_ALGORITHMS: tuple[str, ...] = ("none", "zstd", "deflate", "lz4")
GPU_ONLY_ALGORITHMS: tuple[str, ...] = ("ans", "bitcomp")
# Wire ids: fixed forever, whatever order the names are listed in.
ALGORITHM_IDS: dict[str, int] = {"none": 0, "zstd": 1, "deflate": 2, "lz4": 3, "ans": 4, "bitcomp": 5}
_ALGORITHMS_BY_ID = {code: name for name, code in ALGORITHM_IDS.items()}

MAGIC = b"FXLZ"
FORMAT_VERSION = 2  # 1 carried CRC-32s of its header and payload; the integrity layer checks now
DEFAULT_CHUNK_BYTES = 1 << 20
MIN_CHUNK_BYTES = 1 << 10
# nvCOMP's RAW LZ4, ANS and Bitcomp take at most 16 MiB per buffer.
MAX_CHUNK_BYTES = 1 << 24

# magic, version, algorithm id, reserved, chunk bytes, raw bytes, chunk count
FIXED = struct.Struct("<4sBB2sIQI")
_RESERVED = b"\0\0"

BytesLike = Union[bytes, bytearray, memoryview]


@dataclass(frozen=True)
class LosslessHeader:
    """The checked header of a lossless-stage container."""

    algorithm: str
    chunk_bytes: int
    raw_nbytes: int
    chunk_sizes: tuple[int, ...]
    header_nbytes: int

    @property
    def n_chunks(self) -> int:
        return len(self.chunk_sizes)

    @property
    def payload_nbytes(self) -> int:
        return sum(self.chunk_sizes)

    def raw_chunk_nbytes(self, index: int) -> int:
        """Uncompressed size of chunk `index` (all `chunk_bytes` but the last)."""
        return min(self.chunk_bytes, self.raw_nbytes - index * self.chunk_bytes)


def ceil_div(value: int, divisor: int) -> int:
    return -(-value // divisor)


def byte_view(data: BytesLike, what: str) -> memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ConfigError(f"{what} must be bytes-like; got {type(data).__name__}")
    view = memoryview(data)
    if not view.c_contiguous:
        raise ConfigError(f"{what} given as a memoryview must be C-contiguous")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def pack_header(algorithm: str, chunk_bytes: int, raw_nbytes: int, sizes: Sequence[int]) -> bytes:
    """The container's header and chunk table, for chunks of these compressed `sizes`."""
    return FIXED.pack(MAGIC, FORMAT_VERSION, ALGORITHM_IDS[algorithm], _RESERVED, chunk_bytes, raw_nbytes,
                      len(sizes)) + struct.pack(f"<{len(sizes)}I", *sizes)


def pack(algorithm: str, chunk_bytes: int, raw_nbytes: int, parts: Sequence[BytesLike]) -> bytes:
    return b"".join([pack_header(algorithm, chunk_bytes, raw_nbytes, [len(part) for part in parts]), *parts])


def header_nbytes(prefix: BytesLike) -> int:
    """How many leading bytes `read_header` needs, from the first `FIXED.size` of them."""
    view = byte_view(prefix, "a lossless container")
    if len(view) < FIXED.size:
        raise CorruptBlobError(f"lossless container is {len(view)} bytes, shorter than its {FIXED.size}-byte header")
    return FIXED.size + 4 * FIXED.unpack_from(view)[6]


def read_header(blob: BytesLike, total_nbytes: int | None = None) -> LosslessHeader:
    """Parse and check a container's header and chunk table.

    Args:
        blob: the container, or at least its first `header_nbytes` bytes.
        total_nbytes: the container's whole length, when `blob` is only a
            prefix (a device blob's host copy of its head); checked against
            the chunk table.

    Returns:
        The header; `header_nbytes` is where the payload starts.

    Raises:
        CorruptBlobError: bad magic, unknown version or algorithm, a header
            that contradicts itself, or a length that disagrees with the table.
        ConfigError: `blob` is not bytes-like.

    Example:
        >>> from flexcache.codec.lossless import compress
        >>> read_header(compress(b"abc" * 1000, "zstd")).raw_nbytes
        3000
    """
    view = byte_view(blob, "a lossless container")
    if len(view) < FIXED.size:
        raise CorruptBlobError(f"lossless container is {len(view)} bytes, shorter than its {FIXED.size}-byte header")
    magic, version, algorithm_id, reserved, chunk_bytes, raw_nbytes, n_chunks = FIXED.unpack_from(view)
    if magic != MAGIC:
        raise CorruptBlobError("lossless container does not start with its magic bytes")
    if version != FORMAT_VERSION:
        raise CorruptBlobError(f"lossless container version {version} is not readable here (reads {FORMAT_VERSION})")
    table_end = FIXED.size + 4 * n_chunks
    if len(view) < table_end:
        raise CorruptBlobError(f"lossless container is truncated inside its table of {n_chunks} chunk sizes")
    if algorithm_id not in _ALGORITHMS_BY_ID:
        raise CorruptBlobError(f"lossless container names unknown algorithm id {algorithm_id}")
    if reserved != _RESERVED:
        raise CorruptBlobError("lossless container has non-zero reserved bytes")
    if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise CorruptBlobError(f"lossless container chunk size {chunk_bytes} is outside 1 .. {MAX_CHUNK_BYTES}")
    if n_chunks != ceil_div(raw_nbytes, chunk_bytes):
        raise CorruptBlobError(
            f"lossless container holds {n_chunks} chunks; {raw_nbytes} bytes in chunks of {chunk_bytes} need "
            f"{ceil_div(raw_nbytes, chunk_bytes)}"
        )
    sizes = struct.unpack_from(f"<{n_chunks}I", view, FIXED.size)
    header = LosslessHeader(algorithm=_ALGORITHMS_BY_ID[algorithm_id], chunk_bytes=chunk_bytes,
                            raw_nbytes=raw_nbytes, chunk_sizes=sizes, header_nbytes=table_end)
    stored = header.algorithm == "none"
    for index, size in enumerate(sizes):
        if size == 0 or (stored and size != header.raw_chunk_nbytes(index)):
            raise CorruptBlobError(f"lossless container chunk {index} has an impossible size {size}")
    total = len(view) if total_nbytes is None else total_nbytes
    if total - header.header_nbytes != header.payload_nbytes:
        raise CorruptBlobError(f"lossless payload is {total - header.header_nbytes} bytes; its chunk table says "
                               f"{header.payload_nbytes}")
    return header


def chunk_bounds(header: LosslessHeader) -> list[tuple[int, int]]:
    """``(start, stop)`` of each compressed chunk, relative to the payload."""
    bounds, start = [], 0
    for size in header.chunk_sizes:
        bounds.append((start, start + size))
        start += size
    return bounds
