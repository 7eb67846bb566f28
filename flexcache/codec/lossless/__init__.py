"""Lossless (entropy) stage: chunked standard bitstreams in a small container.

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

The container (`container`, docs/format.md "Lossless stage container") records
the chunk sizes; integrity is the store's business (blobs that leave process
memory are framed with a CRC-32 there). On a GPU the stage stays on the
device: `compress` of a CUDA tensor returns a `DeviceBlob`, and `decompress`
of a `DeviceBlob` decodes its chunks where they are.

Nothing here imports nvCOMP, zstandard or lz4 until a call needs them, and
nothing initialises CUDA unless a CUDA tensor or device is passed in.
"""

from __future__ import annotations

import logging

import torch

from flexcache.codec.lossless import cpu, nvcomp
from flexcache.codec.lossless.container import (
    ALGORITHM_IDS,
    ALGORITHMS,
    DEFAULT_CHUNK_BYTES,
    FORMAT_VERSION,
    GPU_ONLY_ALGORITHMS,
    MAGIC,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    PORTABLE_ALGORITHMS,
    BytesLike,
    LosslessHeader,
    byte_view,
    ceil_div,
    header_nbytes,
    pack,
    pack_header,
    read_header,
)
from flexcache.core.blob import DeviceBlob
from flexcache.core.errors import BackendUnavailableError, ConfigError

logger = logging.getLogger(__name__)

_ZSTD_LEVELS = (-(1 << 17), 22)
_DEFLATE_LEVELS = (0, 9)
_LZ4_LEVELS = (0, 12)  # 0..3: LZ4 fast mode; 4..12: LZ4HC at that level
_warned_host_decode = False


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


def _gpu_only_error(algorithm: str, target: torch.device) -> BackendUnavailableError:
    if target.type != "cuda":
        why = f"the work was asked of device {target.type!r}"
    elif not torch.cuda.is_available():
        why = "CUDA is not available"
    else:
        why = "nvCOMP is not importable"
    return BackendUnavailableError(
        f"lossless algorithm {algorithm!r} has no CPU implementation and needs nvCOMP on a CUDA GPU ({why}); "
        f"{nvcomp.NVCOMP_HINT}, or choose a portable algorithm: {', '.join(PORTABLE_ALGORITHMS)}"
    )


def _nvcomp():
    return nvcomp.load()


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
        cpu.require_backend(algorithm)
    except BackendUnavailableError:
        return False
    return algorithm not in GPU_ONLY_ALGORITHMS


# ---------------------------------------------------------------- compress


def _flat_uint8(data: object) -> torch.Tensor | memoryview:
    """`data` as a flat contiguous uint8 tensor (any device) or a flat byte memoryview."""
    if isinstance(data, torch.Tensor):
        if data.dtype != torch.uint8:
            raise ConfigError(
                f"lossless data must be a torch.uint8 tensor or bytes-like; got a {data.dtype} tensor "
                "(reinterpret it with .view(torch.uint8) first)"
            )
        return data.detach().contiguous().reshape(-1)
    return byte_view(data, "lossless data (when not a torch.uint8 tensor)")


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
) -> bytes | DeviceBlob:
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
        The container (docs/format.md, "Lossless stage container"): a
        `DeviceBlob` when nvCOMP compressed on the GPU (the stream never
        leaves the device), else bytes.

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
    if ceil_div(raw_nbytes, chunk_bytes) > 0xFFFFFFFF:
        raise ConfigError(f"{raw_nbytes} bytes in chunks of {chunk_bytes} exceed the container's 2**32-1 chunks")
    held_on = flat.device if isinstance(flat, torch.Tensor) else torch.device("cpu")
    target = held_on if device is None else torch.device(device)
    if target.type == "cuda" and target.index is None and held_on.type == "cuda":
        target = held_on  # "cuda" means the GPU the data is on, not a copy to the current one
    library = _nvcomp() if _cuda_ready(target) and algorithm != "none" else None
    if library is not None and raw_nbytes == 0:
        return pack(algorithm, chunk_bytes, 0, [])
    if library is not None:
        flat = flat if isinstance(flat, torch.Tensor) else torch.frombuffer(bytearray(flat), dtype=torch.uint8)
        payload, sizes = nvcomp.compress_on_device(library, flat.to(target), algorithm, chunk_bytes)
        return DeviceBlob(payload, b"").prepend(pack_header(algorithm, chunk_bytes, raw_nbytes, sizes))
    if algorithm in GPU_ONLY_ALGORITHMS:
        raise _gpu_only_error(algorithm, target)
    parts = cpu.compress_chunks(_host_view(flat), algorithm, level, chunk_bytes, threads)
    return pack(algorithm, chunk_bytes, raw_nbytes, parts)


# ---------------------------------------------------------------- decompress


def _read_device_header(blob: DeviceBlob) -> LosslessHeader:
    # The chunk table is on the host in the blob's head; a table longer than the head is copied.
    length = header_nbytes(blob.to_host(0, min(len(blob), 64)))
    return read_header(blob.to_host(0, length), total_nbytes=len(blob))


def decompress(blob: BytesLike | DeviceBlob, *, device: torch.device | str | None = None,
               threads: int = 0) -> torch.Tensor:
    """Decode a lossless-stage container into its original bytes.

    Args:
        blob: a container written by `compress` (on any device): bytes, or a
            `DeviceBlob`, whose chunks are then decoded on its device.
        device: where the result goes; default: the blob's device (CPU for
            bytes). On CUDA the chunks are decoded by nvCOMP when it is
            importable, otherwise on the CPU and copied over (``ans``/
            ``bitcomp`` need nvCOMP).
        threads: CPU worker threads over the chunks, as in `compress`.

    Returns:
        A flat torch.uint8 tensor on `device` holding exactly the bytes given to
        `compress`.

    Raises:
        CorruptBlobError: the container fails any check (see `read_header`),
            or a chunk does not decode to exactly its size.
        BackendUnavailableError: a GPU-only algorithm with no usable nvCOMP, a
            CUDA device without CUDA, or a missing CPU library.

    Example:
        >>> decompress(compress(b"hello world", "deflate")).numpy().tobytes()
        b'hello world'
    """
    threads = _check_int("threads", threads, -1, 1 << 10)
    on_device = isinstance(blob, DeviceBlob)
    default = blob.device if on_device else torch.device("cpu")
    target = default if device is None else torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"decompress was asked for device {target} but CUDA is not available")
    if on_device:
        header = _read_device_header(blob)
        on_its_device = blob.view(header.header_nbytes)
        if header.algorithm == "none":
            return on_its_device if on_its_device.device == target else on_its_device.to(target)
        library = _nvcomp() if blob.device.type == "cuda" and target.type == "cuda" else None
        if library is not None:  # decoded where the chunks are
            return nvcomp.decompress_on_device(library, header, nvcomp.device_chunks(header, on_its_device), target)
        if blob.device.type == "cpu":  # CPU memory: the CPU decoders read it where it is
            payload = memoryview(on_its_device.numpy())
        else:
            _warn_host_decode(header.algorithm)
            payload = memoryview(blob.to_host(header.header_nbytes))
    else:
        view = byte_view(blob, "a lossless container")
        header = read_header(view)
        payload = view[header.header_nbytes:]
    library = _nvcomp() if target.type == "cuda" and header.algorithm != "none" else None
    if library is not None:
        return nvcomp.decompress_on_device(library, header, nvcomp.stage_host_chunks(header, payload, target), target)
    if header.algorithm in GPU_ONLY_ALGORITHMS:
        raise _gpu_only_error(header.algorithm, target)
    out = cpu.decompress_chunks(header, payload, threads)
    return out if target.type == "cpu" else out.to(target)


def _warn_host_decode(algorithm: str) -> None:
    global _warned_host_decode
    if not _warned_host_decode:
        _warned_host_decode = True
        logger.warning("flexcache: nvCOMP is not importable, so %s chunks held on the GPU are decoded through the "
                       "host (%s)", algorithm, nvcomp.NVCOMP_HINT)


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
