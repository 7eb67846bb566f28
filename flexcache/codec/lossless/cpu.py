"""The lossless stage on the CPU: zstd (zstandard), raw deflate (zlib) and LZ4 blocks (lz4).

Each chunk is one standard stream, so nvCOMP on a GPU reads what this writes
and the other way round. The codecs release the GIL while they work, so a
pool of threads over the chunks runs them in parallel.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from flexcache.codec.lossless.container import BytesLike, LosslessHeader, chunk_bounds
from flexcache.core.errors import BackendUnavailableError, CorruptBlobError

_LZ4_HC_FROM = 4


def worker_count(threads: int, n_tasks: int) -> int:
    if threads < 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(threads, n_tasks))


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


def require_backend(algorithm: str) -> None:
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


def _stream_errors(algorithm: str) -> tuple[type[BaseException], ...]:
    """What each library raises for a stream it cannot decode: only these mean a damaged chunk.

    Anything else (MemoryError, a missing module, a bug) is not damage in the
    blob and must not get it quarantined, so it propagates as it is.
    """
    if algorithm == "zstd":
        return (_zstandard().ZstdError,)
    if algorithm == "lz4":
        return (_lz4_block().LZ4BlockError,)
    return (zlib.error,)


def _map(fn: Callable[[Any], Any], items: Sequence[Any], threads: int) -> list[Any]:
    """`fn` over `items`, on a pool when asked; the codecs release the GIL while they work."""
    workers = worker_count(threads, len(items))
    if workers == 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flexcache-lossless") as pool:
        return list(pool.map(fn, items))


def compress_chunks(raw: memoryview, algorithm: str, level: int, chunk_bytes: int, threads: int) -> list[BytesLike]:
    chunks = [raw[start:start + chunk_bytes] for start in range(0, len(raw), chunk_bytes)]
    if algorithm == "none":
        return chunks
    require_backend(algorithm)
    return _map(_cpu_chunk_compressor(algorithm, level), chunks, threads)


def decompress_chunks(header: LosslessHeader, payload: memoryview, threads: int) -> torch.Tensor:
    out = torch.empty(header.raw_nbytes, dtype=torch.uint8)
    if header.algorithm == "none" or header.raw_nbytes == 0:
        memoryview(out.numpy())[:] = payload
        return out
    require_backend(header.algorithm)
    decode = _CPU_DECODERS[header.algorithm]
    target = memoryview(out.numpy())
    chunks = [payload[start:stop] for start, stop in chunk_bounds(header)]

    def decode_into(index: int) -> None:
        expected = header.raw_chunk_nbytes(index)
        try:
            data = decode(chunks[index], expected)
        except CorruptBlobError as exc:
            raise CorruptBlobError(f"chunk {index}: {exc}") from None
        except _stream_errors(header.algorithm) as exc:  # the library's own "this stream is bad"; nothing else
            raise CorruptBlobError(f"chunk {index} failed to decode as {header.algorithm}: {exc}") from exc
        if len(data) != expected:
            raise CorruptBlobError(f"chunk {index} decoded to {len(data)} bytes, not {expected}")
        start = index * header.chunk_bytes
        target[start:start + expected] = data

    _map(decode_into, range(header.n_chunks), threads)
    return out
