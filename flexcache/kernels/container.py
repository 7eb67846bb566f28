"""The version-1 blob container every codec writes (docs/format.md).

A blob is a fixed little-endian header, the latent's shape, and a payload,
each part covered by CRC-32 so that a truncated or altered blob is detected
and treated as a miss instead of becoming garbage latents. Codecs own their
payload's layout; the container knows only its length and checksum.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import torch

from flexcache.errors import CorruptBlobError

MAGIC = b"FXLC"
FORMAT_VERSION = 1
_FLAG_HAS_SEED = 1

CODEC_IDS = {"lossless": 1, "flexcache": 2}
_DTYPE_CODES = {torch.float32: 1, torch.float16: 2, torch.bfloat16: 3, torch.float64: 4}
_DTYPES_BY_CODE = {code: dtype for dtype, code in _DTYPE_CODES.items()}

# magic, version, codec id, dtype code, ndim, flags, (2 reserved), seed, payload bytes, payload crc32
_FIXED = struct.Struct("<4sHBBBBxxQQI")
_CRC = struct.Struct("<I")
MAX_NDIM = 8


@dataclass(frozen=True)
class BlobHeader:
    version: int
    codec: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    seed: int | None
    payload_nbytes: int
    payload_crc32: int
    header_nbytes: int


def pack_blob(codec: str, dtype: torch.dtype, shape: tuple[int, ...], seed: int | None, payload: bytes) -> bytes:
    """Header (codec, dtype, shape, seed, payload checksum) + payload."""
    flags = 0 if seed is None else _FLAG_HAS_SEED
    fixed = _FIXED.pack(
        MAGIC, FORMAT_VERSION, CODEC_IDS[codec], _DTYPE_CODES[dtype], len(shape),
        flags, 0 if seed is None else seed, len(payload), zlib.crc32(payload),
    )
    shape = struct.pack(f"<{len(shape)}I", *shape)
    head = fixed + shape
    return head + _CRC.pack(zlib.crc32(head)) + payload


def read_header(blob: bytes | bytearray | memoryview) -> BlobHeader:
    """Parse and verify a blob's header (not its payload).

    Raises:
        CorruptBlobError: bad magic, unknown version or codec, failed header
            checksum, or a blob shorter than its header says.
    """
    view = memoryview(blob)
    if len(view) < _FIXED.size:
        raise CorruptBlobError(f"blob is {len(view)} bytes, shorter than the {_FIXED.size}-byte header")
    magic, version, codec_id, dtype_code, ndim, flags, seed, payload_nbytes, payload_crc = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise CorruptBlobError("blob does not start with the FlexCache magic bytes")
    if version != FORMAT_VERSION:
        raise CorruptBlobError(f"blob format version {version} is not readable by this FlexCache (reads {FORMAT_VERSION})")
    if ndim > MAX_NDIM:
        raise CorruptBlobError(f"blob header claims {ndim} dimensions (at most {MAX_NDIM})")
    head_end = _FIXED.size + 4 * ndim
    if len(view) < head_end + _CRC.size:
        raise CorruptBlobError("blob is truncated inside its header")
    (header_crc,) = _CRC.unpack_from(view, head_end)
    if zlib.crc32(view[:head_end]) != header_crc:
        raise CorruptBlobError("blob header checksum mismatch")
    codecs = {v: k for k, v in CODEC_IDS.items()}
    if codec_id not in codecs or dtype_code not in _DTYPES_BY_CODE:
        raise CorruptBlobError(f"blob names unknown codec {codec_id} or dtype {dtype_code}")
    shape = struct.unpack_from(f"<{ndim}I", view, _FIXED.size)
    return BlobHeader(
        version=version, codec=codecs[codec_id], dtype=_DTYPES_BY_CODE[dtype_code], shape=tuple(shape),
        seed=seed if flags & _FLAG_HAS_SEED else None, payload_nbytes=payload_nbytes,
        payload_crc32=payload_crc, header_nbytes=head_end + _CRC.size,
    )


def blob_payload(blob: bytes | bytearray | memoryview, header: BlobHeader) -> memoryview:
    view = memoryview(blob)[header.header_nbytes:]
    if len(view) != header.payload_nbytes:
        raise CorruptBlobError(f"blob payload is {len(view)} bytes, header says {header.payload_nbytes}")
    if zlib.crc32(view) != header.payload_crc32:
        raise CorruptBlobError("blob payload checksum mismatch")
    return view
