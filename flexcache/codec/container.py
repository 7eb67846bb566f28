"""The version-2 blob container every codec writes (docs/format.md, "Blob container").

A blob is a fixed little-endian header (codec, dtype, shape, seed, payload
length) and a payload whose layout belongs to the codec. It carries no
checksum: blobs that leave process memory are framed with a CRC-32 by the
store's integrity layer, and the reading rules here refuse a blob that
contradicts itself (a truncated or extended blob, an unknown codec or dtype).
The header is read from a host prefix, so a `DeviceBlob` is parsed from its
head without touching the device.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import torch

from flexcache.core.errors import CorruptBlobError

MAGIC = b"FXLC"
FORMAT_VERSION = 2  # 1 carried CRC-32s of header and payload; the integrity layer checks now
_FLAG_HAS_SEED = 1

CODEC_IDS = {"lossless": 1, "flexcache": 2}
_DTYPE_CODES = {torch.float32: 1, torch.float16: 2, torch.bfloat16: 3, torch.float64: 4}
_DTYPES_BY_CODE = {code: dtype for dtype, code in _DTYPE_CODES.items()}

# magic, version, codec id, dtype code, ndim, flags, (2 reserved), seed, payload bytes
_FIXED = struct.Struct("<4sHBBBBxxQQ")
MAX_NDIM = 8


@dataclass(frozen=True)
class BlobHeader:
    version: int
    codec: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    seed: int | None
    payload_nbytes: int
    header_nbytes: int


def pack_header(codec: str, dtype: torch.dtype, shape: tuple[int, ...], seed: int | None,
                payload_nbytes: int) -> bytes:
    """The header of a blob whose payload is `payload_nbytes` long."""
    flags = 0 if seed is None else _FLAG_HAS_SEED
    fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, CODEC_IDS[codec], _DTYPE_CODES[dtype], len(shape), flags,
                        0 if seed is None else seed, payload_nbytes)
    return fixed + struct.pack(f"<{len(shape)}I", *shape)


def pack_blob(codec: str, dtype: torch.dtype, shape: tuple[int, ...], seed: int | None, payload: bytes) -> bytes:
    """Header (codec, dtype, shape, seed, payload length) + payload."""
    return pack_header(codec, dtype, shape, seed, len(payload)) + payload


HEADER_PREFIX = _FIXED.size + 4 * MAX_NDIM  # enough leading bytes to read any header


def read_header(blob: bytes | bytearray | memoryview, total_nbytes: int | None = None) -> BlobHeader:
    """Parse and check a blob's header.

    Args:
        blob: the blob, or at least its first `HEADER_PREFIX` bytes.
        total_nbytes: the blob's whole length when `blob` is only a prefix;
            the payload must fill it exactly.

    Raises:
        CorruptBlobError: bad magic, unknown version, codec or dtype, or a blob
            shorter or longer than its header says.
    """
    view = memoryview(blob)
    total = len(view) if total_nbytes is None else total_nbytes
    if len(view) < _FIXED.size:
        raise CorruptBlobError(f"blob is {len(view)} bytes, shorter than the {_FIXED.size}-byte header")
    magic, version, codec_id, dtype_code, ndim, flags, seed, payload_nbytes = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise CorruptBlobError("blob does not start with the FlexCache magic bytes")
    if version != FORMAT_VERSION:
        raise CorruptBlobError(f"blob format version {version} is not readable by this FlexCache (reads "
                               f"{FORMAT_VERSION}); it was written by another release")
    if ndim > MAX_NDIM:
        raise CorruptBlobError(f"blob header claims {ndim} dimensions (at most {MAX_NDIM})")
    head_end = _FIXED.size + 4 * ndim
    if len(view) < head_end:
        raise CorruptBlobError("blob is truncated inside its header")
    codecs = {v: k for k, v in CODEC_IDS.items()}
    if codec_id not in codecs or dtype_code not in _DTYPES_BY_CODE:
        raise CorruptBlobError(f"blob names unknown codec {codec_id} or dtype {dtype_code}")
    if total - head_end != payload_nbytes:
        raise CorruptBlobError(f"blob payload is {total - head_end} bytes, header says {payload_nbytes}")
    shape = struct.unpack_from(f"<{ndim}I", view, _FIXED.size)
    return BlobHeader(
        version=version, codec=codecs[codec_id], dtype=_DTYPES_BY_CODE[dtype_code], shape=tuple(shape),
        seed=seed if flags & _FLAG_HAS_SEED else None, payload_nbytes=payload_nbytes, header_nbytes=head_end,
    )


def blob_payload(blob: bytes | bytearray | memoryview, header: BlobHeader) -> memoryview:
    """The payload of a host blob whose header `read_header` returned."""
    return memoryview(blob)[header.header_nbytes:]
