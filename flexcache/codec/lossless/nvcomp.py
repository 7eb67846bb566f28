"""The lossless stage on a CUDA GPU: nvCOMP, bitstream kind RAW (standard zstd/deflate/LZ4 streams).

Input and output stay on the device: `compress_on_device` hands back the
compressed chunks as one device tensor (the host learns only their sizes), and
`decompress_on_device` reads chunks that are device tensors already (a blob
from the HBM tier) or stages host chunks with one upload. Nothing here is
imported until a CUDA path needs it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Any

import torch

from flexcache.codec.lossless.container import LosslessHeader, ceil_div, chunk_bounds
from flexcache.core.blob import DeviceBlob
from flexcache.core.errors import CorruptBlobError

NVCOMP_NAMES = {"zstd": "Zstd", "deflate": "Deflate", "lz4": "LZ4", "ans": "ANS", "bitcomp": "Bitcomp"}
NVCOMP_HINT = "pip install nvidia-nvcomp-cu12 (CUDA 12) or nvidia-nvcomp-cu13 (CUDA 13)"
# The most restrictive buffer alignment nvCOMP asks of any format (its documented safe default).
ALIGNMENT = 16

_local = threading.local()  # nvCOMP Codecs are not thread-safe: one per thread, device and stream
# RuntimeErrors that are about the device, not the stream (AcceleratorError: torch >= 2.8's CUDA errors).
_NOT_DAMAGE = (torch.cuda.OutOfMemoryError,) + ((torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ())


@functools.lru_cache(maxsize=1)
def load() -> Any | None:
    """nvCOMP's Python module, or None where it is not installed or cannot load."""
    try:
        from nvidia import nvcomp
    except (ImportError, OSError):
        return None
    return nvcomp


def _codec(nvcomp: Any, algorithm: str, device: torch.device) -> Any:
    """A RAW-bitstream Codec on the current torch stream, cached per thread."""
    stream = torch.cuda.current_stream(device).cuda_stream
    cache = _local.__dict__.setdefault("codecs", {})
    key = (algorithm, device.index, stream)
    if key not in cache:
        if len(cache) >= 32:
            cache.clear()
        cache[key] = nvcomp.Codec(algorithm=NVCOMP_NAMES[algorithm], device_id=device.index, cuda_stream=stream,
                                  bitstream_kind=nvcomp.BitstreamKind.RAW)
    return cache[key]


def _to_tensor(array: Any, device: torch.device) -> torch.Tensor:
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


def _aligned_offsets(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Offsets that pack chunks of `sizes` back to back, each starting nvCOMP-aligned; and the total."""
    offsets, end = [], 0
    for size in sizes:
        offsets.append(end)
        end += ceil_div(size, ALIGNMENT) * ALIGNMENT
    return offsets, end


def _aligned(flat: torch.Tensor, bounds: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
    """Device views of ``flat[start:stop]`` that each start nvCOMP-aligned (one device copy if needed)."""
    if all((flat.data_ptr() + start) % ALIGNMENT == 0 for start, _ in bounds):
        return [flat[start:stop] for start, stop in bounds]
    offsets, end = _aligned_offsets([stop - start for start, stop in bounds])
    staging = torch.empty(end, dtype=torch.uint8, device=flat.device)
    chunks = []
    for offset, (start, stop) in zip(offsets, bounds):
        chunk = staging[offset:offset + stop - start]
        chunk.copy_(flat[start:stop])
        chunks.append(chunk)
    return chunks


def compress_on_device(nvcomp: Any, flat: torch.Tensor, algorithm: str,
                       chunk_bytes: int) -> tuple[torch.Tensor, list[int]]:
    """The compressed chunks of a device tensor, concatenated on the device, and their sizes."""
    with torch.cuda.device(flat.device):
        device = torch.device("cuda", torch.cuda.current_device())
        stream = torch.cuda.current_stream(device)
        codec = _codec(nvcomp, algorithm, device)
        bounds = [(start, min(start + chunk_bytes, flat.numel())) for start in range(0, flat.numel(), chunk_bytes)]
        encoded = codec.encode(nvcomp.as_arrays(_aligned(flat, bounds), cuda_stream=stream.cuda_stream))
        parts = [_to_tensor(item, device) for item in _batch_items(encoded)]  # indexing waits for the encode
        sizes = [part.numel() for part in parts]
        payload = torch.cat(parts)
        stream.synchronize()  # `parts` view nvCOMP-owned memory: the copy must be done before it is released
        del parts, encoded
    return payload, sizes


def stage_host_chunks(header: LosslessHeader, payload: memoryview, device: torch.device) -> list[torch.Tensor]:
    """Host chunks on the device, each at an aligned offset, with one host-to-device copy."""
    offsets, end = _aligned_offsets(header.chunk_sizes)
    staging = torch.zeros(end, dtype=torch.uint8)
    staged = memoryview(staging.numpy())
    for offset, (start, stop) in zip(offsets, chunk_bounds(header)):
        staged[offset:offset + stop - start] = payload[start:stop]
    on_device = DeviceBlob.from_host(staged, device).tensor
    return [on_device[offset:offset + size] for offset, size in zip(offsets, header.chunk_sizes)]


def device_chunks(header: LosslessHeader, payload: torch.Tensor) -> list[torch.Tensor]:
    """Chunks of a payload that is on the device already, aligned by a device copy where needed."""
    return _aligned(payload, chunk_bounds(header))


def decompress_on_device(nvcomp: Any, header: LosslessHeader, chunks: list[torch.Tensor],
                         device: torch.device) -> torch.Tensor:
    """Decode aligned device chunks into one flat uint8 device tensor of `header.raw_nbytes`."""
    if header.raw_nbytes == 0:
        return torch.empty(0, dtype=torch.uint8, device=device)
    with torch.cuda.device(device):
        device = torch.device("cuda", torch.cuda.current_device())
        stream = torch.cuda.current_stream(device)
        codec = _codec(nvcomp, header.algorithm, device)
        try:
            decoded = codec.decode(nvcomp.as_arrays(chunks, cuda_stream=stream.cuda_stream))
            items = _batch_items(decoded)  # indexing waits for the decode, so its errors surface here
        except _NOT_DAMAGE:  # device memory or a CUDA fault: not the blob's fault, so never quarantined for it
            raise
        except (RuntimeError, ValueError) as exc:
            raise CorruptBlobError(f"nvCOMP could not decode the {header.algorithm} chunks: {exc}") from exc
        parts = [_to_tensor(item, device) for item in items]
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
