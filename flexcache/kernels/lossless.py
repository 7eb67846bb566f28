"""Lossless (entropy) stage: chunked standard bitstreams in a checksummed container.

A lossy latent codec runs this stage over its quantized bytes. The raw bytes
are cut into chunks of `chunk_bytes` (the last one shorter) and each chunk is
compressed on its own as a *standard* stream, so that a blob written on a GPU
(nvCOMP, bitstream kind RAW) decodes on a CPU and the other way round:

- ``zstd``: one Zstandard frame (RFC 8878) per chunk, content size recorded;
- ``deflate``: raw DEFLATE (RFC 1951, no zlib/gzip wrapper), what nvCOMP's
  Deflate RAW bitstream reads and writes;
- ``lz4``: one LZ4 block (no frame, no stored size) per chunk;
- ``none``: the chunks as they are;
- ``ans`` and ``bitcomp``: nvCOMP's own formats, GPU only.

The container (docs/format.md, "Lossless stage container") records the chunk
sizes and CRC-32s of its header and of its payload, so that damage is reported
as `CorruptBlobError` and never decoded into wrong bytes.

Nothing here imports nvCOMP, zstandard or lz4 until a call needs them, and
nothing initialises CUDA unless a CUDA tensor or device is passed in.
"""

from __future__ import annotations

import functools
import os
import struct
import threading
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Union

import torch

from flexcache.errors import BackendUnavailableError, ConfigError, CorruptBlobError

ALGORITHMS: tuple[str, ...] = ("none", "zstd", "deflate", "lz4", "ans", "bitcomp")
PORTABLE_ALGORITHMS: tuple[str, ...] = ("none", "zstd", "deflate", "lz4")
GPU_ONLY_ALGORITHMS: tuple[str, ...] = ("ans", "bitcomp")
ALGORITHM_IDS: dict[str, int] = {name: code for code, name in enumerate(ALGORITHMS)}
_ALGORITHMS_BY_ID = dict(enumerate(ALGORITHMS))
_NVCOMP_NAMES = {"zstd": "Zstd", "deflate": "Deflate", "lz4": "LZ4", "ans": "ANS", "bitcomp": "Bitcomp"}

MAGIC = b"FXLZ"
FORMAT_VERSION = 1
DEFAULT_CHUNK_BYTES = 1 << 20
MIN_CHUNK_BYTES = 1 << 10
# nvCOMP's RAW LZ4, ANS and Bitcomp take at most 16 MiB per buffer.
MAX_CHUNK_BYTES = 1 << 24
# The most restrictive buffer alignment nvCOMP asks of any format (its documented safe default).
_NVCOMP_ALIGNMENT = 16

# magic, version, algorithm id, reserved, chunk bytes, raw bytes, chunk count, payload crc32
_FIXED = struct.Struct("<4sBB2sIQII")
_U32 = struct.Struct("<I")
_RESERVED = b"\0\0"

_ZSTD_LEVELS = (-(1 << 17), 22)
_DEFLATE_LEVELS = (0, 9)
_LZ4_LEVELS = (0, 12)  # 0..3: LZ4 fast mode; 4..12: LZ4HC at that level
_LZ4_HC_FROM = 4

BytesLike = Union[bytes, bytearray, memoryview]
_NVCOMP_HINT = "pip install nvidia-nvcomp-cu12 (CUDA 12) or nvidia-nvcomp-cu13 (CUDA 13)"


@dataclass(frozen=True)
class LosslessHeader:
    """The verified header of a lossless-stage container."""

    algorithm: str
    chunk_bytes: int
    raw_nbytes: int
    chunk_sizes: tuple[int, ...]
    payload_crc32: int
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


# ---------------------------------------------------------------- container


def _ceil_div(value: int, divisor: int) -> int:
    return -(-value // divisor)


def _pack(algorithm: str, chunk_bytes: int, raw_nbytes: int, parts: Sequence[BytesLike]) -> bytes:
    payload_crc = 0
    for part in parts:
        payload_crc = zlib.crc32(part, payload_crc)
    head = _FIXED.pack(
        MAGIC, FORMAT_VERSION, ALGORITHM_IDS[algorithm], _RESERVED, chunk_bytes, raw_nbytes, len(parts), payload_crc,
    ) + struct.pack(f"<{len(parts)}I", *(len(part) for part in parts))
    return b"".join([head, _U32.pack(zlib.crc32(head)), *parts])


def _byte_view(data: BytesLike, what: str) -> memoryview:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ConfigError(f"{what} must be bytes-like; got {type(data).__name__}")
    view = memoryview(data)
    if not view.c_contiguous:
        raise ConfigError(f"{what} given as a memoryview must be C-contiguous")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def read_header(blob: BytesLike) -> LosslessHeader:
    """Parse and verify a container's header and chunk table (not its payload).

    Args:
        blob: a container written by `compress`.

    Returns:
        The header; `header_nbytes` is where the payload starts.

    Raises:
        CorruptBlobError: bad magic, unknown version or algorithm, a header that
            contradicts itself, a failed header checksum, or a blob too short
            for its chunk table.
        ConfigError: `blob` is not bytes-like.

    Example:
        >>> read_header(compress(b"abc" * 1000, "zstd")).raw_nbytes
        3000
    """
    view = _byte_view(blob, "a lossless container")
    if len(view) < _FIXED.size:
        raise CorruptBlobError(f"lossless container is {len(view)} bytes, shorter than its {_FIXED.size}-byte header")
    magic, version, algorithm_id, reserved, chunk_bytes, raw_nbytes, n_chunks, payload_crc = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise CorruptBlobError("lossless container does not start with its magic bytes")
    if version != FORMAT_VERSION:
        raise CorruptBlobError(f"lossless container version {version} is not readable here (reads {FORMAT_VERSION})")
    table_end = _FIXED.size + 4 * n_chunks
    if len(view) < table_end + _U32.size:
        raise CorruptBlobError(f"lossless container is truncated inside its table of {n_chunks} chunk sizes")
    (header_crc,) = _U32.unpack_from(view, table_end)
    if zlib.crc32(view[:table_end]) != header_crc:
        raise CorruptBlobError("lossless container header checksum mismatch")
    # Checked after the CRC: a header that passes it yet says these things was written wrongly.
    if algorithm_id not in _ALGORITHMS_BY_ID:
        raise CorruptBlobError(f"lossless container names unknown algorithm id {algorithm_id}")
    if reserved != _RESERVED:
        raise CorruptBlobError("lossless container has non-zero reserved bytes")
    if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise CorruptBlobError(f"lossless container chunk size {chunk_bytes} is outside 1 .. {MAX_CHUNK_BYTES}")
    if n_chunks != _ceil_div(raw_nbytes, chunk_bytes):
        raise CorruptBlobError(
            f"lossless container holds {n_chunks} chunks; {raw_nbytes} bytes in chunks of {chunk_bytes} need "
            f"{_ceil_div(raw_nbytes, chunk_bytes)}"
        )
    sizes = struct.unpack_from(f"<{n_chunks}I", view, _FIXED.size)
    header = LosslessHeader(
        algorithm=_ALGORITHMS_BY_ID[algorithm_id], chunk_bytes=chunk_bytes, raw_nbytes=raw_nbytes,
        chunk_sizes=sizes, payload_crc32=payload_crc, header_nbytes=table_end + _U32.size,
    )
    stored = header.algorithm == "none"
    for index, size in enumerate(sizes):
        if size == 0 or (stored and size != header.raw_chunk_nbytes(index)):
            raise CorruptBlobError(f"lossless container chunk {index} has an impossible size {size}")
    return header


def _verified_payload(blob: memoryview, header: LosslessHeader) -> memoryview:
    payload = blob[header.header_nbytes:]
    if len(payload) != header.payload_nbytes:
        raise CorruptBlobError(
            f"lossless payload is {len(payload)} bytes; its chunk table says {header.payload_nbytes}"
        )
    if zlib.crc32(payload) != header.payload_crc32:
        raise CorruptBlobError("lossless payload checksum mismatch")
    return payload


def _chunk_views(payload: memoryview, sizes: Sequence[int]) -> list[memoryview]:
    views, start = [], 0
    for size in sizes:
        views.append(payload[start:start + size])
        start += size
    return views


# ---------------------------------------------------------------- argument checks


def _check_algorithm(algorithm: object) -> str:
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown lossless algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    return algorithm  # type: ignore[return-value]


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an int in {low} .. {high}; got {value!r}")
    return value


def _check_level(algorithm: str, level: object) -> int:
    ranges = {"zstd": _ZSTD_LEVELS, "deflate": _DEFLATE_LEVELS, "lz4": _LZ4_LEVELS}
    low, high = ranges.get(algorithm, (-(1 << 31), (1 << 31) - 1))
    return _check_int(f"level for {algorithm}", level, low, high)


def _worker_count(threads: int, n_tasks: int) -> int:
    if threads < 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(threads, n_tasks))


def _gpu_only_error(algorithm: str, target: torch.device) -> BackendUnavailableError:
    if target.type != "cuda":
        why = f"the work was asked of device {target.type!r}"
    elif not torch.cuda.is_available():
        why = "CUDA is not available"
    else:
        why = "nvCOMP is not importable"
    return BackendUnavailableError(
        f"lossless algorithm {algorithm!r} has no CPU implementation and needs nvCOMP on a CUDA GPU ({why}); "
        f"{_NVCOMP_HINT}, or choose a portable algorithm: {', '.join(PORTABLE_ALGORITHMS)}"
    )


# ---------------------------------------------------------------- optional backends


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise BackendUnavailableError(
            "the zstd lossless algorithm needs zstandard: pip install 'zstandard>=0.22'"
        ) from None
    return zstandard


def _lz4_block() -> Any:
    try:
        import lz4.block
    except ImportError:
        raise BackendUnavailableError("the lz4 lossless algorithm needs lz4: pip install 'lz4>=4'") from None
    return lz4.block


@functools.lru_cache(maxsize=1)
def _nvcomp() -> Any | None:
    """nvCOMP's Python module, or None where it is not installed or cannot load."""
    try:
        from nvidia import nvcomp
    except (ImportError, OSError):
        return None
    return nvcomp


def _cuda_ready(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available()


def available(algorithm: str, device: torch.device | str | None = "cpu") -> bool:
    """Whether `algorithm` can code natively on `device`.

    On a CUDA device that means nvCOMP is importable (``none`` only needs CUDA).
    The portable algorithms still work there without nvCOMP, through the CPU.

    Raises:
        ConfigError: `algorithm` is not one of `ALGORITHMS`.

    Example:
        >>> available("zstd", "cpu"), available("ans", "cpu")
        (True, False)
    """
    _check_algorithm(algorithm)
    target = torch.device("cpu" if device is None else device)
    if target.type == "cuda":
        return _cuda_ready(target) and (algorithm == "none" or _nvcomp() is not None)
    try:
        _require_cpu_backend(algorithm)
    except BackendUnavailableError:
        return False
    return algorithm not in GPU_ONLY_ALGORITHMS


# ---------------------------------------------------------------- CPU path

_local = threading.local()  # zstandard contexts are not thread-safe: one per thread and level


def _zstd_compressor(level: int) -> Any:
    cache = _local.__dict__.setdefault("zstd_compressors", {})
    if level not in cache:
        cache[level] = _zstandard().ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return cache[level]


def _zstd_decompressor() -> Any:
    if not hasattr(_local, "zstd_decompressor"):
        _local.zstd_decompressor = _zstandard().ZstdDecompressor()
    return _local.zstd_decompressor


def _require_cpu_backend(algorithm: str) -> None:
    """Raise BackendUnavailableError up front, not from inside a chunk worker."""
    if algorithm == "zstd":
        _zstandard()
    elif algorithm == "lz4":
        _lz4_block()


def _cpu_chunk_compressor(algorithm: str, level: int) -> Callable[[memoryview], bytes]:
    """One chunk's compressor for zstd, deflate or lz4."""
    if algorithm == "zstd":
        return lambda chunk: _zstd_compressor(level).compress(chunk)
    if algorithm == "deflate":
        def deflate(chunk: memoryview) -> bytes:
            compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
            return compressor.compress(chunk) + compressor.flush()
        return deflate
    block = _lz4_block()
    if level >= _LZ4_HC_FROM:
        return lambda chunk: block.compress(chunk, mode="high_compression", compression=level, store_size=False)
    return lambda chunk: block.compress(chunk, store_size=False)


def _decode_zstd(chunk: memoryview, expected: int) -> bytes:
    zstandard = _zstandard()
    declared = zstandard.frame_content_size(chunk)  # -1 when the frame does not record it
    if declared not in (-1, expected):
        raise CorruptBlobError(f"zstd frame declares {declared} bytes, not {expected}")
    return _zstd_decompressor().decompress(chunk, max_output_size=expected, allow_extra_data=False)


def _decode_deflate(chunk: memoryview, expected: int) -> bytes:
    inflater = zlib.decompressobj(-15)
    out = inflater.decompress(chunk, expected + 1)  # one spare byte: an overlong stream shows as a wrong size
    if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise CorruptBlobError("raw deflate stream is truncated or followed by extra bytes")
    return out


def _decode_lz4(chunk: memoryview, expected: int) -> bytes:
    return _lz4_block().decompress(chunk, uncompressed_size=expected)


_CPU_DECODERS: dict[str, Callable[[memoryview, int], bytes]] = {
    "zstd": _decode_zstd, "deflate": _decode_deflate, "lz4": _decode_lz4,
}


def _map(fn: Callable[[Any], Any], items: Sequence[Any], threads: int) -> list[Any]:
    """`fn` over `items`, on a pool when asked; the codecs release the GIL while they work."""
    workers = _worker_count(threads, len(items))
    if workers == 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flexcache-lossless") as pool:
        return list(pool.map(fn, items))


def _cpu_compress(raw: memoryview, algorithm: str, level: int, chunk_bytes: int, threads: int) -> list[BytesLike]:
    chunks = [raw[start:start + chunk_bytes] for start in range(0, len(raw), chunk_bytes)]
    if algorithm == "none":
        return chunks
    _require_cpu_backend(algorithm)
    return _map(_cpu_chunk_compressor(algorithm, level), chunks, threads)


def _cpu_decompress(header: LosslessHeader, payload: memoryview, threads: int) -> torch.Tensor:
    out = torch.empty(header.raw_nbytes, dtype=torch.uint8)
    if header.algorithm == "none" or header.raw_nbytes == 0:
        memoryview(out.numpy())[:] = payload
        return out
    _require_cpu_backend(header.algorithm)
    decode = _CPU_DECODERS[header.algorithm]
    target = memoryview(out.numpy())
    chunks = _chunk_views(payload, header.chunk_sizes)

    def decode_into(index: int) -> None:
        expected = header.raw_chunk_nbytes(index)
        try:
            data = decode(chunks[index], expected)
        except CorruptBlobError as exc:
            raise CorruptBlobError(f"chunk {index}: {exc}") from None
        except MemoryError:
            raise
        except Exception as exc:  # zstd/zlib/lz4 each raise their own error types on bad input
            raise CorruptBlobError(f"chunk {index} failed to decode as {header.algorithm}: {exc}") from exc
        if len(data) != expected:
            raise CorruptBlobError(f"chunk {index} decoded to {len(data)} bytes, not {expected}")
        start = index * header.chunk_bytes
        target[start:start + expected] = data

    _map(decode_into, range(header.n_chunks), threads)
    return out


# ---------------------------------------------------------------- GPU path (nvCOMP, bitstream kind RAW)


def _nvcomp_codec(nvcomp: Any, algorithm: str, device: torch.device) -> Any:
    """A RAW-bitstream Codec on the current torch stream, cached per thread (Codecs are not thread-safe)."""
    stream = torch.cuda.current_stream(device).cuda_stream
    cache = _local.__dict__.setdefault("nvcomp_codecs", {})
    key = (algorithm, device.index, stream)
    if key not in cache:
        if len(cache) >= 32:
            cache.clear()
        cache[key] = nvcomp.Codec(
            algorithm=_NVCOMP_NAMES[algorithm], device_id=device.index, cuda_stream=stream,
            bitstream_kind=nvcomp.BitstreamKind.RAW,
        )
    return cache[key]


def _nvcomp_to_tensor(array: Any, device: torch.device) -> torch.Tensor:
    """A flat uint8 torch view of an nvCOMP Array (DLPack, else the CUDA array interface)."""
    try:
        tensor = torch.from_dlpack(array)
    except (TypeError, ValueError, RuntimeError, BufferError, AttributeError):
        tensor = torch.as_tensor(array, device=device)
    tensor = tensor.reshape(-1)
    return tensor if tensor.dtype == torch.uint8 else tensor.view(torch.uint8)


def _batch_items(batch: Any) -> list[Any]:
    # nvCOMP 6 returns a BatchArray, 4.x/5.x a list; both index and len() alike.
    return [batch[index] for index in range(len(batch))]


def _aligned_device_chunks(flat: torch.Tensor, chunk_bytes: int) -> list[torch.Tensor]:
    bounds = [(start, min(start + chunk_bytes, flat.numel())) for start in range(0, flat.numel(), chunk_bytes)]
    if flat.data_ptr() % _NVCOMP_ALIGNMENT == 0 and chunk_bytes % _NVCOMP_ALIGNMENT == 0:
        return [flat[start:end] for start, end in bounds]
    stride = _ceil_div(chunk_bytes, _NVCOMP_ALIGNMENT) * _NVCOMP_ALIGNMENT
    staging = torch.empty(len(bounds) * stride, dtype=torch.uint8, device=flat.device)
    chunks = []
    for index, (start, end) in enumerate(bounds):
        chunk = staging[index * stride:index * stride + end - start]
        chunk.copy_(flat[start:end])
        chunks.append(chunk)
    return chunks


def _gpu_compress(nvcomp: Any, flat: torch.Tensor, algorithm: str, chunk_bytes: int) -> list[BytesLike]:
    device = flat.device
    with torch.cuda.device(device):
        device = torch.device("cuda", torch.cuda.current_device())
        stream = torch.cuda.current_stream(device).cuda_stream
        codec = _nvcomp_codec(nvcomp, algorithm, device)
        chunks = _aligned_device_chunks(flat, chunk_bytes)
        encoded = codec.encode(nvcomp.as_arrays(chunks, cuda_stream=stream))
        # Indexing waits for the encode; the views point into `encoded`, which must outlive the copy below.
        parts = [_nvcomp_to_tensor(item, device) for item in _batch_items(encoded)]
        sizes = [part.numel() for part in parts]
        host = torch.cat(parts).cpu()
        del parts, encoded
    payload = memoryview(host.numpy())
    return _chunk_views(payload, sizes)


def _gpu_decompress(nvcomp: Any, header: LosslessHeader, payload: memoryview, device: torch.device) -> torch.Tensor:
    if header.raw_nbytes == 0:
        return torch.empty(0, dtype=torch.uint8, device=device)
    # One host-to-device copy, each chunk starting at an nvCOMP-aligned offset.
    offsets, end = [], 0
    for size in header.chunk_sizes:
        offsets.append(end)
        end += _ceil_div(size, _NVCOMP_ALIGNMENT) * _NVCOMP_ALIGNMENT
    staging = torch.zeros(end, dtype=torch.uint8)
    staged = memoryview(staging.numpy())
    for offset, chunk in zip(offsets, _chunk_views(payload, header.chunk_sizes)):
        staged[offset:offset + len(chunk)] = chunk
    with torch.cuda.device(device):
        device = torch.device("cuda", torch.cuda.current_device())
        stream = torch.cuda.current_stream(device)
        on_device = staging.to(device)
        chunks = [on_device[offset:offset + size] for offset, size in zip(offsets, header.chunk_sizes)]
        codec = _nvcomp_codec(nvcomp, header.algorithm, device)
        try:
            decoded = codec.decode(nvcomp.as_arrays(chunks, cuda_stream=stream.cuda_stream))
            items = _batch_items(decoded)  # indexing waits for the decode, so its errors surface here
        except torch.cuda.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError) as exc:
            raise CorruptBlobError(f"nvCOMP could not decode the {header.algorithm} chunks: {exc}") from exc
        parts = [_nvcomp_to_tensor(item, device) for item in items]
        for index, part in enumerate(parts):
            if part.numel() != header.raw_chunk_nbytes(index):
                raise CorruptBlobError(
                    f"chunk {index} decoded to {part.numel()} bytes, not {header.raw_chunk_nbytes(index)}"
                )
        out = torch.cat(parts)
        # `parts` view nvCOMP-owned memory: let the copy finish before that memory is released.
        stream.synchronize()
        del parts, items, decoded
    return out


# ---------------------------------------------------------------- public API


def _flat_uint8(data: object) -> torch.Tensor | memoryview:
    """`data` as a flat contiguous uint8 tensor (any device) or a flat byte memoryview."""
    if isinstance(data, torch.Tensor):
        if data.dtype != torch.uint8:
            raise ConfigError(
                f"lossless data must be a torch.uint8 tensor or bytes-like; got a {data.dtype} tensor "
                "(reinterpret it with .view(torch.uint8) first)"
            )
        return data.detach().contiguous().reshape(-1)
    return _byte_view(data, "lossless data (when not a torch.uint8 tensor)")


def _host_view(flat: torch.Tensor | memoryview) -> memoryview:
    if isinstance(flat, memoryview):
        return flat
    return memoryview(flat.cpu().numpy())


def compress(
    data: BytesLike | torch.Tensor,
    algorithm: str = "zstd",
    *,
    level: int = 3,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    device: torch.device | str | None = None,
    threads: int = 0,
) -> bytes:
    """Compress bytes into a lossless-stage container.

    Args:
        data: bytes, bytearray or a C-contiguous memoryview, or a torch.uint8
            tensor of any shape on CPU or CUDA (read in C order).
        algorithm: one of `ALGORITHMS`. ``ans`` and ``bitcomp`` need nvCOMP on
            a CUDA device.
        level: compression level for the CPU codecs: zstd -131072 .. 22,
            deflate 0 .. 9, lz4 0 .. 12 (0-3 fast LZ4, 4-12 LZ4HC). nvCOMP uses
            its own defaults and ignores it.
        chunk_bytes: uncompressed bytes per independently coded chunk,
            1 KiB .. 16 MiB. Many small chunks keep a GPU busy; on a CPU the
            size barely changes the ratio.
        device: where to compress; default: the tensor's device, else CPU.
            On CUDA the work runs in nvCOMP when it is importable, otherwise the
            bytes go to the host and the CPU path writes the same format.
        threads: CPU worker threads over the chunks: 0 or 1 for one, -1 for
            all cores. The output is the same for any thread count.

    Returns:
        The container bytes (docs/format.md, "Lossless stage container").

    Raises:
        ConfigError: unknown algorithm, bad level, chunk size or threads, or
            data that is neither bytes-like nor a uint8 tensor.
        BackendUnavailableError: a GPU-only algorithm without nvCOMP and CUDA,
            or a CPU library (zstandard, lz4) that is not installed.

    Example:
        >>> blob = compress(bytes(100_000), "zstd", chunk_bytes=1 << 16)
        >>> len(blob) < 1000 and decompress(blob).numel() == 100_000
        True
    """
    _check_algorithm(algorithm)
    level = _check_level(algorithm, level)
    chunk_bytes = _check_int("chunk_bytes", chunk_bytes, MIN_CHUNK_BYTES, MAX_CHUNK_BYTES)
    threads = _check_int("threads", threads, -1, 1 << 10)
    flat = _flat_uint8(data)
    raw_nbytes = flat.numel() if isinstance(flat, torch.Tensor) else len(flat)
    if _ceil_div(raw_nbytes, chunk_bytes) > 0xFFFFFFFF:
        raise ConfigError(f"{raw_nbytes} bytes in chunks of {chunk_bytes} exceed the container's 2**32-1 chunks")
    held_on = flat.device if isinstance(flat, torch.Tensor) else torch.device("cpu")
    target = held_on if device is None else torch.device(device)
    if target.type == "cuda" and target.index is None and held_on.type == "cuda":
        target = held_on  # "cuda" means the GPU the data is on, not a copy to the current one
    nvcomp = _nvcomp() if _cuda_ready(target) and algorithm != "none" else None
    if nvcomp is not None and raw_nbytes == 0:
        parts: list[BytesLike] = []
    elif nvcomp is not None:
        flat = flat if isinstance(flat, torch.Tensor) else torch.frombuffer(bytearray(flat), dtype=torch.uint8)
        parts = _gpu_compress(nvcomp, flat.to(target), algorithm, chunk_bytes)
    elif algorithm in GPU_ONLY_ALGORITHMS:
        raise _gpu_only_error(algorithm, target)
    else:
        parts = _cpu_compress(_host_view(flat), algorithm, level, chunk_bytes, threads)
    return _pack(algorithm, chunk_bytes, raw_nbytes, parts)


def decompress(blob: BytesLike, *, device: torch.device | str | None = None, threads: int = 0) -> torch.Tensor:
    """Decode a lossless-stage container into its original bytes.

    Args:
        blob: a container written by `compress` (on any device).
        device: where the result goes; default CPU. On CUDA the chunks are
            decoded by nvCOMP when it is importable, otherwise on the CPU and
            copied over (``ans``/``bitcomp`` need nvCOMP).
        threads: CPU worker threads over the chunks, as in `compress`.

    Returns:
        A flat torch.uint8 tensor on `device` holding exactly the bytes given to
        `compress`.

    Raises:
        CorruptBlobError: the container fails any check (see `read_header`),
            its payload checksum fails, or a chunk does not decode to exactly
            its size.
        BackendUnavailableError: a GPU-only algorithm with no usable nvCOMP, a
            CUDA device without CUDA, or a missing CPU library.

    Example:
        >>> decompress(compress(b"hello world", "deflate")).numpy().tobytes()
        b'hello world'
    """
    target = torch.device("cpu" if device is None else device)
    threads = _check_int("threads", threads, -1, 1 << 10)
    view = _byte_view(blob, "a lossless container")
    header = read_header(view)
    payload = _verified_payload(view, header)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"decompress was asked for device {target} but CUDA is not available")
    nvcomp = _nvcomp() if target.type == "cuda" and header.algorithm != "none" else None
    if nvcomp is not None:
        return _gpu_decompress(nvcomp, header, payload, target)
    if header.algorithm in GPU_ONLY_ALGORITHMS:
        raise _gpu_only_error(header.algorithm, target)
    out = _cpu_decompress(header, payload, threads)
    return out if target.type == "cpu" else out.to(target)


__all__ = [
    "ALGORITHMS",
    "PORTABLE_ALGORITHMS",
    "GPU_ONLY_ALGORITHMS",
    "ALGORITHM_IDS",
    "MAGIC",
    "FORMAT_VERSION",
    "DEFAULT_CHUNK_BYTES",
    "MIN_CHUNK_BYTES",
    "MAX_CHUNK_BYTES",
    "LosslessHeader",
    "available",
    "compress",
    "decompress",
    "read_header",
]
