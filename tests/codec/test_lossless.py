"""Tests for flexcache.codec.lossless: chunked standard bitstreams in the FXLZ container."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import lz4.block as lz4_block
import pytest
import torch
import zstandard

from flexcache.codec import lossless
from flexcache.codec.lossless import (
    ALGORITHM_IDS,
    ALGORITHMS,
    GPU_ONLY_ALGORITHMS,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    available,
    compress,
    decompress,
    read_header,
)
from flexcache.core.blob import DeviceBlob, host_bytes
from flexcache.errors import BackendUnavailableError, ConfigError, CorruptBlobError

CPU_ALGORITHMS = ("none", "zstd", "deflate", "lz4")
CHUNK = 4096
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17]


def random_bytes(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def int8_like(n: int, seed: int = 0) -> torch.Tensor:
    """Low-entropy bytes like quantized residuals: int8 values in -3 .. 3 (2.8 bits each)."""
    values = torch.randint(-3, 4, (n,), dtype=torch.int8, generator=torch.Generator().manual_seed(seed))
    return values.view(torch.uint8)


def as_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


# The container written independently from docs/format.md ("Lossless stage container").
def container(
    algorithm: str | int,
    chunk_bytes: int,
    raw_nbytes: int,
    parts: list[bytes],
    *,
    magic: bytes = b"FXLZ",
    version: int = 2,
    reserved: bytes = b"\0\0",
    n_chunks: int | None = None,
    sizes: list[int] | None = None,
) -> bytes:
    algorithm_id = ALGORITHM_IDS[algorithm] if isinstance(algorithm, str) else algorithm
    payload = b"".join(parts)
    sizes = [len(p) for p in parts] if sizes is None else sizes
    head = struct.pack(
        "<4sBB2sIQI", magic, version, algorithm_id, reserved, chunk_bytes, raw_nbytes,
        len(sizes) if n_chunks is None else n_chunks,
    ) + struct.pack(f"<{len(sizes)}I", *sizes)
    return head + payload


def split_chunks(raw: bytes, chunk_bytes: int) -> list[bytes]:
    return [raw[i:i + chunk_bytes] for i in range(0, len(raw), chunk_bytes)]


def raw_deflate(chunk: bytes, level: int = 6) -> bytes:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(chunk) + compressor.flush()


def payload_chunks(blob: bytes) -> list[bytes]:
    header = read_header(blob)
    out, start = [], header.header_nbytes
    for size in header.chunk_sizes:
        out.append(blob[start:start + size])
        start += size
    return out


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("algorithm", CPU_ALGORITHMS)
@pytest.mark.parametrize("make", [random_bytes, int8_like], ids=["random", "int8-like"])
@pytest.mark.parametrize("n", SIZES)
def test_round_trip_at_chunk_boundaries(algorithm, make, n):
    data = make(n, seed=n)
    blob = compress(data, algorithm, chunk_bytes=CHUNK)
    header = read_header(blob)
    assert header.algorithm == algorithm and header.raw_nbytes == n
    assert header.n_chunks == -(-n // CHUNK)
    out = decompress(blob)
    assert out.dtype == torch.uint8 and out.device.type == "cpu" and out.shape == (n,)
    assert torch.equal(out, data)


@pytest.mark.parametrize("algorithm", CPU_ALGORITHMS)
@pytest.mark.parametrize("threads", [0, 2])
def test_round_trip_of_megabytes_in_small_chunks(algorithm, threads):
    data = int8_like(3 * (1 << 20) + 12345, seed=7)
    blob = compress(data, algorithm, chunk_bytes=1 << 16, threads=threads)
    assert read_header(blob).n_chunks == 49
    assert torch.equal(decompress(blob, threads=threads), data)


@pytest.mark.parametrize("algorithm", CPU_ALGORITHMS)
def test_empty_input_round_trips_to_an_empty_tensor(algorithm):
    for empty in (b"", bytearray(), memoryview(b""), torch.empty(0, dtype=torch.uint8)):
        blob = compress(empty, algorithm)
        assert read_header(blob).chunk_sizes == ()
        out = decompress(blob)
        assert out.dtype == torch.uint8 and out.shape == (0,)


@pytest.mark.parametrize("algorithm, levels", [
    ("zstd", [-5, 1, 3, 9, 19]), ("deflate", [0, 1, 6, 9]), ("lz4", [0, 3, 4, 9, 12]),
])
def test_every_level_round_trips(algorithm, levels):
    data = int8_like(50_000, seed=3)
    blobs = {level: compress(data, algorithm, level=level, chunk_bytes=CHUNK) for level in levels}
    for blob in blobs.values():
        assert torch.equal(decompress(blob), data)
    assert len(set(blobs.values())) > 1  # the level reaches the codec


def test_decompress_to_explicit_cpu_device_returns_flat_uint8():
    data = int8_like(10_000).reshape(10, 25, 40)
    out = decompress(compress(data, "zstd", chunk_bytes=CHUNK), device="cpu")
    assert out.dtype == torch.uint8 and out.device == torch.device("cpu") and out.dim() == 1
    assert torch.equal(out, data.reshape(-1))


# ---------------------------------------------------------------- inputs and determinism


@pytest.mark.parametrize("algorithm", CPU_ALGORITHMS)
def test_tensor_and_bytes_inputs_give_identical_blobs(algorithm):
    data = int8_like(20_000, seed=5)
    raw = as_bytes(data)
    expected = compress(raw, algorithm, chunk_bytes=CHUNK)
    assert compress(data, algorithm, chunk_bytes=CHUNK) == expected
    assert compress(bytearray(raw), algorithm, chunk_bytes=CHUNK) == expected
    assert compress(memoryview(raw), algorithm, chunk_bytes=CHUNK) == expected
    # any shape and layout is read in C order of its values
    grid = data.reshape(100, 200)
    assert compress(grid.t().contiguous().t(), algorithm, chunk_bytes=CHUNK) == expected
    transposed = grid.t()
    assert compress(transposed, algorithm, chunk_bytes=CHUNK) == compress(
        as_bytes(transposed), algorithm, chunk_bytes=CHUNK)
    # a memoryview of another item size is read as its bytes
    assert compress(memoryview(raw).cast("I"), algorithm, chunk_bytes=CHUNK) == expected


@pytest.mark.parametrize("algorithm", ["zstd", "deflate", "lz4"])
def test_output_does_not_depend_on_the_thread_count(algorithm):
    data = int8_like(300_000, seed=11)
    blobs = {threads: compress(data, algorithm, chunk_bytes=1 << 15, threads=threads) for threads in (0, 1, 2, -1)}
    assert len(set(blobs.values())) == 1
    assert torch.equal(decompress(blobs[0], threads=-1), data)


def test_zstd_shrinks_low_entropy_bytes_and_barely_grows_random_ones():
    n = 1 << 20
    low = compress(int8_like(n), "zstd", level=3)
    assert len(low) < n / 2  # 2.8 bits of entropy per byte
    noise = compress(random_bytes(n), "zstd", level=3)
    assert len(noise) < n * 1.01 + 64
    assert len(compress(int8_like(n), "none")) >= n


# ---------------------------------------------------------------- standard bitstreams


def test_hand_made_standard_streams_decode_through_the_container():
    data = as_bytes(int8_like(10_000, seed=2))
    chunks = split_chunks(data, CHUNK)
    made = {
        "zstd": [zstandard.ZstdCompressor().compress(c) for c in chunks],
        "deflate": [raw_deflate(c) for c in chunks],
        "lz4": [lz4_block.compress(c, store_size=False) for c in chunks],
        "none": chunks,
    }
    for algorithm, parts in made.items():
        out = decompress(container(algorithm, CHUNK, len(data), parts))
        assert as_bytes(out) == data, algorithm


def test_standard_zstd_frame_variants_decode():
    data = as_bytes(int8_like(2 * CHUNK, seed=4))
    chunks = split_chunks(data, CHUNK)
    for options in ({"write_content_size": False}, {"write_checksum": True}, {"level": 19}):
        parts = [zstandard.ZstdCompressor(**options).compress(c) for c in chunks]
        assert as_bytes(decompress(container("zstd", CHUNK, len(data), parts))) == data, options


def test_our_chunks_decode_with_the_plain_libraries():
    data = as_bytes(int8_like(3 * CHUNK + 5, seed=6))
    expected = split_chunks(data, CHUNK)
    plain = {
        "zstd": lambda c, n: zstandard.ZstdDecompressor().decompress(c),
        "deflate": lambda c, n: zlib.decompress(c, -15),
        "lz4": lambda c, n: lz4_block.decompress(c, uncompressed_size=n),
    }
    for algorithm, decode in plain.items():
        chunks = payload_chunks(compress(data, algorithm, chunk_bytes=CHUNK))
        assert [decode(c, len(e)) for c, e in zip(chunks, expected)] == expected, algorithm


# ---------------------------------------------------------------- corruption


@pytest.fixture(params=CPU_ALGORITHMS)
def small_blob(request):
    return compress(int8_like(3 * MIN_CHUNK_BYTES + 7, seed=9), request.param, chunk_bytes=MIN_CHUNK_BYTES)


def test_any_flipped_header_byte_is_detected(small_blob):
    header_nbytes = read_header(small_blob).header_nbytes
    for position in range(header_nbytes):
        for mask in (0x01, 0x80):
            bad = bytearray(small_blob)
            bad[position] ^= mask
            with pytest.raises(CorruptBlobError):
                decompress(bytes(bad))


def test_the_container_carries_no_payload_checksum():
    # Stored chunks decode a flipped byte as it is: flipped bits are the store integrity layer's to
    # catch (tests/store/test_integrity.py), so nothing in the blob path checksums twice.
    data = as_bytes(int8_like(2 * CHUNK, seed=3))
    bad = bytearray(compress(data, "none", chunk_bytes=CHUNK))
    bad[-1] ^= 0x10
    assert as_bytes(decompress(bytes(bad))) != data


def test_every_truncation_and_trailing_garbage_are_detected(small_blob):
    for length in range(len(small_blob)):
        with pytest.raises(CorruptBlobError):
            decompress(small_blob[:length])
    for tail in (b"\0", b"x" * 100, small_blob):
        with pytest.raises(CorruptBlobError, match="payload is"):
            decompress(small_blob + tail)
    with pytest.raises(CorruptBlobError, match="payload is"):
        decompress(small_blob[:-1])


@pytest.mark.parametrize("algorithm", CPU_ALGORITHMS)
def test_size_table_edits_are_detected(algorithm):
    data = as_bytes(int8_like(3 * CHUNK, seed=1))
    parts = payload_chunks(compress(data, algorithm, chunk_bytes=CHUNK))
    sizes = [len(p) for p in parts]
    # the same total, but the chunk boundaries moved by one byte
    shifted = [sizes[0] + 1, sizes[1] - 1, sizes[2]]
    with pytest.raises(CorruptBlobError):
        decompress(container(algorithm, CHUNK, len(data), parts, sizes=shifted))
    # a total that no longer matches the payload
    with pytest.raises(CorruptBlobError):
        decompress(container(algorithm, CHUNK, len(data), parts, sizes=[sizes[0] + 1, *sizes[1:]]))


@pytest.mark.parametrize("algorithm", ["zstd", "deflate", "lz4"])
@pytest.mark.parametrize("case", ["garbage", "wrong size", "extra bytes", "truncated", "two streams in one chunk"])
def test_undecodable_chunks_in_a_well_formed_container_are_corrupt(algorithm, case):
    data = as_bytes(int8_like(2 * CHUNK, seed=8))
    good = payload_chunks(compress(data, algorithm, chunk_bytes=CHUNK))
    short = payload_chunks(compress(data[:CHUNK - 1], algorithm, chunk_bytes=CHUNK))[0]
    parts = {
        "garbage": [b"\xff" * 16, good[1]],
        "wrong size": [short, good[1]],
        "extra bytes": [good[0] + b"\0\0\0\0", good[1]],
        "truncated": [good[0][:-1], good[1]],
        "two streams in one chunk": [good[0], short + short],
    }[case]
    with pytest.raises(CorruptBlobError, match="chunk"):
        decompress(container(algorithm, CHUNK, len(data), parts))


def test_zstd_frame_declaring_another_size_is_refused_before_decoding():
    bomb = zstandard.ZstdCompressor().compress(bytes(MAX_CHUNK_BYTES))  # a few hundred bytes
    with pytest.raises(CorruptBlobError, match=f"declares {MAX_CHUNK_BYTES} bytes, not {CHUNK}"):
        decompress(container("zstd", CHUNK, CHUNK, [bomb]))


def test_two_zstd_frames_in_one_chunk_are_corrupt():
    data = as_bytes(int8_like(CHUNK, seed=12))
    half = CHUNK // 2
    frames = zstandard.ZstdCompressor().compress(data[:half]) + zstandard.ZstdCompressor().compress(data[half:])
    with pytest.raises(CorruptBlobError):
        decompress(container("zstd", CHUNK, CHUNK, [frames]))


@pytest.mark.parametrize("field, value, message", [
    ("magic", b"FXLC", "magic"),
    ("version", 1, "version 1"),
    ("algorithm", 99, "unknown algorithm"),
    ("reserved", b"\0\1", "reserved"),
    ("n_chunks", 3, "chunks"),
])
def test_self_consistent_but_invalid_headers_are_corrupt(field, value, message):
    data = as_bytes(int8_like(2 * CHUNK))
    parts = split_chunks(data, CHUNK)
    kwargs = {"algorithm": "none", "chunk_bytes": CHUNK, "raw_nbytes": len(data), "parts": parts}
    if field == "algorithm":
        kwargs["algorithm"] = value
    elif field == "n_chunks":
        kwargs["parts"] = parts + [b"x"]
    else:
        kwargs[field] = value
    with pytest.raises(CorruptBlobError, match=message):
        decompress(container(**kwargs))


def test_impossible_chunk_sizes_are_corrupt():
    with pytest.raises(CorruptBlobError, match="chunk size 0"):
        decompress(container("none", 0, 0, []))
    with pytest.raises(CorruptBlobError, match="chunk size"):
        decompress(container("none", MAX_CHUNK_BYTES + 1, 1, [b"x"]))
    with pytest.raises(CorruptBlobError, match="impossible size"):  # stored chunks must be their raw size
        decompress(container("none", CHUNK, CHUNK, [b"x" * (CHUNK - 1)], sizes=[CHUNK - 1]))
    with pytest.raises(CorruptBlobError, match="impossible size"):
        decompress(container("zstd", CHUNK, 10, [b""]))


@pytest.mark.parametrize("algorithm", ["zstd", "deflate", "lz4"])
@pytest.mark.parametrize("error", [RuntimeError("a bug in a decoder"), MemoryError()], ids=["bug", "memory"])
def test_only_the_librarys_own_stream_error_is_a_corrupt_chunk(monkeypatch, algorithm, error):
    # Anything else is not damage in the blob, so it must not get the entry quarantined: it propagates.
    from flexcache.codec.lossless import cpu

    blob = compress(as_bytes(int8_like(2 * CHUNK)), algorithm, chunk_bytes=CHUNK)

    def failing(chunk, expected):
        raise error

    monkeypatch.setitem(cpu._CPU_DECODERS, algorithm, failing)
    with pytest.raises(type(error)) as info:
        decompress(blob)
    assert info.value is error


def test_corrupt_blob_errors_never_leak_library_exceptions():
    data = as_bytes(int8_like(2 * CHUNK))
    for algorithm in ("zstd", "deflate", "lz4"):
        try:
            decompress(container(algorithm, CHUNK, len(data), [b"\x00" * 8, b"\x01" * 8]))
        except CorruptBlobError as exc:
            assert type(exc) is CorruptBlobError
        else:
            pytest.fail(f"{algorithm}: garbage decoded")


# ---------------------------------------------------------------- configuration and backends


def test_unknown_algorithm_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown lossless algorithm 'brotli'"):
        compress(b"abc", "brotli")
    with pytest.raises(ConfigError, match="zstd"):
        available("ZSTD", "cpu")


@pytest.mark.parametrize("kwargs", [
    {"chunk_bytes": MIN_CHUNK_BYTES - 1}, {"chunk_bytes": MAX_CHUNK_BYTES + 1}, {"chunk_bytes": 4096.0},
    {"level": 23}, {"level": True}, {"threads": -2}, {"threads": "2"},
])
def test_bad_arguments_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        compress(b"abc" * 1000, "zstd", **kwargs)


def test_deflate_and_lz4_levels_are_range_checked():
    with pytest.raises(ConfigError, match="level for deflate"):
        compress(b"abc", "deflate", level=10)
    with pytest.raises(ConfigError, match="level for lz4"):
        compress(b"abc", "lz4", level=13)


@pytest.mark.parametrize("data", [torch.zeros(4), torch.zeros(4, dtype=torch.int8), "text", [1, 2]])
def test_data_that_is_not_bytes_or_uint8_is_a_config_error(data):
    with pytest.raises(ConfigError):
        compress(data, "zstd")


def test_blob_that_is_not_bytes_like_is_a_config_error():
    with pytest.raises(ConfigError):
        decompress("FXLZ")


@pytest.mark.parametrize("algorithm", GPU_ONLY_ALGORITHMS)
def test_gpu_only_algorithms_are_unavailable_on_cpu(algorithm):
    assert not available(algorithm, "cpu")
    for device in (None, "cpu"):
        with pytest.raises(BackendUnavailableError, match="nvCOMP") as info:
            compress(int8_like(5000), algorithm, device=device)
        for portable in ("zstd", "deflate", "lz4"):
            assert portable in str(info.value)
    # a container that a GPU wrote is verified first, then refused on the CPU
    blob = container(algorithm, CHUNK, 5, [b"\x01\x02\x03"])
    with pytest.raises(BackendUnavailableError, match="nvCOMP"):
        decompress(blob)
    with pytest.raises(CorruptBlobError):
        decompress(blob[:-1])


def test_cpu_availability():
    assert [available(a, "cpu") for a in ALGORITHMS] == [True, True, True, True, False, False]
    assert available("zstd", None)


def test_cuda_is_unavailable_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not any(available(a, "cuda") for a in ALGORITHMS)
    blob = compress(b"abc" * 1000, "zstd", device="cuda")  # compresses on the CPU, same format
    assert blob == compress(b"abc" * 1000, "zstd")
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        decompress(blob, device="cuda")
    with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
        compress(b"abc", "ans", device="cuda")


def test_missing_lz4_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lz4", None)
    monkeypatch.setitem(sys.modules, "lz4.block", None)
    assert not available("lz4", "cpu")
    with pytest.raises(BackendUnavailableError, match="pip install 'lz4"):
        compress(b"abc" * 100, "lz4")
    with pytest.raises(BackendUnavailableError, match="pip install 'lz4"):
        decompress(container("lz4", CHUNK, 3, [lz4_block.compress(b"abc", store_size=False)]))


def test_cpu_path_imports_no_nvcomp_and_touches_no_cuda():
    code = (
        "import sys, torch\n"
        "from flexcache.codec import lossless\n"
        "for a in ('none', 'zstd', 'deflate', 'lz4'):\n"
        "    assert lossless.decompress(lossless.compress(b'abc' * 999, a)).numel() == 2997\n"
        "lossless.available('zstd', 'cpu')\n"
        "assert 'nvidia.nvcomp' not in sys.modules, 'nvcomp imported'\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---------------------------------------------------------------- GPU (nvCOMP), skipped without CUDA


def _nvcomp_or_skip():
    if lossless._nvcomp() is None:
        pytest.skip("nvCOMP (nvidia-nvcomp-cu12/cu13) is not installed")


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ["zstd", "deflate", "lz4"])
@pytest.mark.parametrize("n, chunk_bytes", [(1, 1 << 16), (3 * (1 << 16) + 5, 1 << 16), (50_000, 1030)])
def test_gpu_and_cpu_decode_each_others_output(algorithm, n, chunk_bytes):
    _nvcomp_or_skip()
    data = int8_like(n, seed=n)
    on_device = compress(data.cuda(), algorithm, chunk_bytes=chunk_bytes)
    assert isinstance(on_device, DeviceBlob) and on_device.device.type == "cuda"  # the stream stayed there
    assert torch.equal(decompress(on_device).cpu(), data)  # decoded where it is
    gpu_blob = host_bytes(on_device)
    assert read_header(gpu_blob).algorithm == algorithm
    assert torch.equal(decompress(gpu_blob), data)  # nvCOMP wrote, CPU reads
    cpu_blob = compress(data, algorithm, chunk_bytes=chunk_bytes)
    on_gpu = decompress(cpu_blob, device="cuda")  # CPU wrote, nvCOMP reads
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.uint8
    assert torch.equal(on_gpu.cpu(), data)
    assert torch.equal(decompress(gpu_blob, device="cuda").cpu(), data)


@pytest.mark.gpu
def test_gpu_zstd_chunks_are_plain_zstd_frames():
    _nvcomp_or_skip()
    data = int8_like(1 << 18, seed=1)
    chunks = payload_chunks(host_bytes(compress(data.cuda(), "zstd", chunk_bytes=1 << 16)))
    plain = b"".join(zstandard.ZstdDecompressor().decompress(c, max_output_size=1 << 16) for c in chunks)
    assert plain == as_bytes(data)


@pytest.mark.gpu
def test_gpu_compresses_misaligned_views():
    _nvcomp_or_skip()
    base = int8_like(100_001, seed=2).cuda()
    view = base[1:]
    assert torch.equal(decompress(compress(view, "lz4", chunk_bytes=4096), device="cuda"), view)


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", GPU_ONLY_ALGORITHMS)
def test_gpu_only_algorithms_round_trip_on_gpu(algorithm):
    _nvcomp_or_skip()
    assert available(algorithm, "cuda")
    data = int8_like(3 * (1 << 16) + 11, seed=4)
    blob = compress(data.cuda(), algorithm, chunk_bytes=1 << 16)
    assert len(blob) < data.numel()
    out = decompress(blob, device="cuda")
    assert out.device.type == "cuda" and torch.equal(out.cpu(), data)
    with pytest.raises(BackendUnavailableError):
        decompress(host_bytes(blob))


@pytest.mark.gpu
def test_gpu_truncated_container_is_refused_before_decoding():
    _nvcomp_or_skip()
    blob = host_bytes(compress(int8_like(20_000).cuda(), "zstd", chunk_bytes=4096))
    with pytest.raises(CorruptBlobError, match="payload is"):
        decompress(bytes(blob)[:-5], device="cuda")


@pytest.mark.gpu
def test_without_nvcomp_cuda_data_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.setattr(lossless, "_nvcomp", lambda: None)
    data = int8_like(20_000, seed=5)
    blob = compress(data.cuda(), "zstd", chunk_bytes=4096)
    assert blob == compress(data, "zstd", chunk_bytes=4096)
    out = decompress(blob, device="cuda")
    assert out.device.type == "cuda" and torch.equal(out.cpu(), data)
    with pytest.raises(BackendUnavailableError, match="nvCOMP is not importable"):
        compress(data.cuda(), "ans")
