"""LatentCodec interface and the version-1 blob container (docs/format.md).

A blob is a fixed little-endian header, the latent's shape, and a payload,
each part covered by CRC-32 so that a truncated or altered blob is detected
and treated as a miss instead of becoming garbage latents.

Only the lossless codec exists today: the payload is the latent's raw bytes.
The compressing codec (quantization, seed-noise residual, nvCOMP) replaces it
as the default in its own issue and adds codec ids to the same container.
"""

from __future__ import annotations

import abc
import struct
import zlib
from dataclasses import dataclass

import torch

from flexcache.engine.noise import is_valid_seed
from flexcache.errors import ConfigError, CorruptBlobError, InvalidLatentError

MAGIC = b"FXLC"
FORMAT_VERSION = 1
_FLAG_HAS_SEED = 1

CODEC_IDS = {"lossless": 1}
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


def _pack(codec: str, latent: torch.Tensor, seed: int | None, payload: bytes) -> bytes:
    flags = 0 if seed is None else _FLAG_HAS_SEED
    fixed = _FIXED.pack(
        MAGIC, FORMAT_VERSION, CODEC_IDS[codec], _DTYPE_CODES[latent.dtype], latent.dim(),
        flags, 0 if seed is None else seed, len(payload), zlib.crc32(payload),
    )
    shape = struct.pack(f"<{latent.dim()}I", *latent.shape)
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


def _payload(blob: bytes | bytearray | memoryview, header: BlobHeader) -> memoryview:
    view = memoryview(blob)[header.header_nbytes:]
    if len(view) != header.payload_nbytes:
        raise CorruptBlobError(f"blob payload is {len(view)} bytes, header says {header.payload_nbytes}")
    if zlib.crc32(view) != header.payload_crc32:
        raise CorruptBlobError("blob payload checksum mismatch")
    return view


class LatentCodec(abc.ABC):
    """Turns a latent tensor into a self-describing blob and back.

    `encode` may use `seed` (the seed of the run's initial noise) and `sigma`
    (the noise level of the captured step) to code less; a lossless codec
    ignores both but records the seed.
    """

    name: str

    @abc.abstractmethod
    def encode(self, latent: torch.Tensor, *, seed: int | None = None, sigma: float | None = None) -> bytes: ...

    @abc.abstractmethod
    def decode(self, blob: bytes | bytearray | memoryview, device: torch.device | str | None = None) -> torch.Tensor:
        """Raises `CorruptBlobError` when the blob fails its checks."""


class LosslessCodec(LatentCodec):
    """Raw latent bytes in the checksummed container; bit-exact round trip.

    Example:
        >>> codec = LosslessCodec()
        >>> x = torch.randn(2, 3, 4)
        >>> torch.equal(codec.decode(codec.encode(x, seed=7)), x)
        True
    """

    name = "lossless"

    def encode(self, latent: torch.Tensor, *, seed: int | None = None, sigma: float | None = None) -> bytes:
        if not isinstance(latent, torch.Tensor):
            raise InvalidLatentError(f"a latent must be a torch.Tensor; got {type(latent).__name__}")
        if latent.dtype not in _DTYPE_CODES:
            raise InvalidLatentError(
                f"latent dtype {latent.dtype} is not supported; use float32, float16, bfloat16 or float64"
            )
        if latent.dim() > MAX_NDIM:
            raise InvalidLatentError(f"latent has {latent.dim()} dimensions; at most {MAX_NDIM} are supported")
        if seed is not None and not is_valid_seed(seed):
            raise InvalidLatentError(f"seed must be an int in 0 .. 2**64-1 or None; got {seed!r}")
        host = latent.detach().to("cpu").contiguous()
        payload = host.reshape(-1).view(torch.uint8).numpy().tobytes()
        return _pack(self.name, host, seed, payload)

    def decode(self, blob: bytes | bytearray | memoryview, device: torch.device | str | None = None) -> torch.Tensor:
        header = read_header(blob)
        if header.codec != self.name:
            raise CorruptBlobError(f"blob was written by codec {header.codec!r}, not {self.name!r}")
        payload = _payload(blob, header)
        expected = header.dtype.itemsize
        for size in header.shape:
            expected *= size
        if len(payload) != expected:
            raise CorruptBlobError(f"payload holds {len(payload)} bytes; shape {header.shape} needs {expected}")
        if expected == 0:  # torch.frombuffer refuses an empty buffer
            return torch.empty(header.shape, dtype=header.dtype, device=device)
        raw = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        latent = raw.view(header.dtype).reshape(header.shape)
        return latent if device is None else latent.to(device)


CODEC_REGISTRY: dict[str, type[LatentCodec]] = {LosslessCodec.name: LosslessCodec}


def build_codec(name: str) -> LatentCodec:
    try:
        return CODEC_REGISTRY[name]()
    except KeyError:
        raise ConfigError(f"unknown codec {name!r}; choose one of {', '.join(CODEC_REGISTRY)}") from None
