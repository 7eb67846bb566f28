"""Tests for flexcache.codec.latent and .container: the lossless codec and the v2 blob container."""

from __future__ import annotations

import pytest
import torch

from flexcache.codec.container import (
    _FIXED,
    FORMAT_VERSION,
    MAGIC,
    MAX_NDIM,
    BlobHeader,
    read_header,
)
from flexcache.codec.latent import (
    LatentCodec,
    LosslessCodec,
    QuantizedCodec,
    build_codec,
)
from flexcache.errors import (
    ConfigError,
    CorruptBlobError,
    FlexCacheError,
    InvalidLatentError,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 5, 7, 11), (1, 4, 3, 8, 8), (13, 1, 1), (2,) * MAX_NDIM]


def latent(shape, dtype=torch.float32, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(dtype)


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8)) if a.dim() else \
        torch.equal(a.reshape(1).view(torch.uint8), b.reshape(1).view(torch.uint8))


def reheader(blob: bytes, **changes) -> bytes:
    """Rewrite fixed header fields, keeping the shape and the payload."""
    fields = list(_FIXED.unpack_from(blob))
    names = ["magic", "version", "codec", "dtype", "ndim", "flags", "seed", "payload_nbytes"]
    for name, value in changes.items():
        fields[names.index(name)] = value
    return _FIXED.pack(*fields) + blob[_FIXED.size:]


@pytest.fixture
def codec() -> LosslessCodec:
    return LosslessCodec()


# -- round trip --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_is_bit_exact(codec, dtype, shape):
    x = latent(shape, dtype, seed=len(shape))
    blob = codec.encode(x, seed=123)
    assert isinstance(blob, bytes)
    y = codec.decode(blob)
    assert y.dtype == dtype
    assert tuple(y.shape) == tuple(shape)
    assert bit_equal(x, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip_special_values(codec, dtype):
    values = [0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf"), 1e-30, -3.5e4]
    x = torch.tensor(values, dtype=torch.float64).to(dtype)
    x = torch.cat([x, torch.tensor([float("nan")], dtype=dtype)])
    y = codec.decode(codec.encode(x))
    assert bit_equal(x, y)  # nan payloads and signed zeros survive


def test_round_trip_non_contiguous_and_grad(codec):
    base = latent((4, 6, 5))
    x = base.transpose(0, 2)[:, ::2]
    assert not x.is_contiguous()
    y = codec.decode(codec.encode(x))
    assert torch.equal(x, y)
    g = latent((3, 3)).requires_grad_()
    assert torch.equal(codec.decode(codec.encode(g)), g.detach())


def test_decoded_tensor_is_independent_of_blob(codec):
    x = latent((4, 4))
    blob = bytearray(codec.encode(x))
    y = codec.decode(blob)
    y.add_(1.0)  # writable, and writing it must not change the blob
    assert torch.equal(codec.decode(blob), x)


def test_decode_accepts_bytes_like_and_device(codec):
    x = latent((2, 3))
    blob = codec.encode(x)
    assert torch.equal(codec.decode(memoryview(blob)), x)
    assert torch.equal(codec.decode(bytearray(blob)), x)
    y = codec.decode(blob, device="cpu")
    assert y.device.type == "cpu"
    assert torch.equal(y, x)


def test_blob_size_is_header_plus_raw_bytes(codec):
    x = latent((3, 4, 5), torch.float16)
    blob = codec.encode(x)
    header = read_header(blob)
    assert header.payload_nbytes == x.numel() * 2
    assert header.header_nbytes == _FIXED.size + 4 * 3
    assert len(blob) == header.header_nbytes + header.payload_nbytes


@pytest.mark.parametrize("seed", [0, 7, 2**31, 2**62, 2**64 - 1])
def test_read_header_records_seed_and_metadata(codec, seed):
    x = latent((2, 3, 4), torch.bfloat16)
    header = read_header(codec.encode(x, seed=seed, sigma=0.5))
    assert isinstance(header, BlobHeader)
    assert header.seed == seed
    assert header.version == FORMAT_VERSION
    assert header.codec == "lossless"
    assert header.dtype == torch.bfloat16
    assert header.shape == (2, 3, 4)


def test_read_header_without_seed(codec):
    assert read_header(codec.encode(latent((2,)))).seed is None


def test_blob_starts_with_magic(codec):
    assert codec.encode(latent((2,))).startswith(MAGIC)


def test_encoding_is_deterministic(codec):
    x = latent((5, 5))
    assert codec.encode(x, seed=3) == codec.encode(x.clone(), seed=3)
    assert codec.encode(x, seed=3) != codec.encode(x, seed=4)


# -- damage the container itself refuses (flipped bits are the integrity layer's: tests/store) ------


def test_the_container_holds_no_checksum_so_one_integrity_layer_does_the_checking(codec):
    # A flipped payload bit of a lossless blob decodes to a different latent: checking is not the
    # codec's job. The store's integrity frame (tests/store/test_integrity.py) catches every flip.
    x = latent((2, 3, 4), seed=5)
    blob = bytearray(codec.encode(x, seed=99))
    blob[read_header(bytes(blob)).header_nbytes] ^= 0x01
    assert not torch.equal(codec.decode(bytes(blob)), x)


def test_truncation_is_detected(codec):
    blob = codec.encode(latent((3, 3)), seed=1)
    for length in [0, 1, 4, _FIXED.size - 1, _FIXED.size, _FIXED.size + 5, read_header(blob).header_nbytes,
                   len(blob) - 1]:
        with pytest.raises(CorruptBlobError):
            codec.decode(blob[:length])


def test_truncated_header_is_detected_by_read_header(codec):
    blob = codec.encode(latent((3, 3)))
    for length in (0, 10, _FIXED.size + 3):
        with pytest.raises(CorruptBlobError):
            read_header(blob[:length])


@pytest.mark.parametrize("extra", [b"\x00", b"junk", bytes(64)])
def test_appended_bytes_are_detected(codec, extra):
    blob = codec.encode(latent((3, 3)))
    with pytest.raises(CorruptBlobError):
        codec.decode(blob + extra)


def test_wrong_magic(codec):
    blob = codec.encode(latent((2, 2)))
    damaged = reheader(blob, magic=b"NOPE")
    with pytest.raises(CorruptBlobError, match="magic"):
        read_header(damaged)
    with pytest.raises(CorruptBlobError, match="magic"):
        codec.decode(damaged)


@pytest.mark.parametrize("version", [0, 1, FORMAT_VERSION + 1, 0xFFFF])
def test_wrong_version(codec, version):
    blob = codec.encode(latent((2, 2)))
    damaged = reheader(blob, version=version)  # a well-formed blob of another version
    with pytest.raises(CorruptBlobError, match="version"):
        codec.decode(damaged)


def test_unknown_codec_and_dtype_ids(codec):
    blob = codec.encode(latent((2, 2)))
    with pytest.raises(CorruptBlobError, match="codec"):
        codec.decode(reheader(blob, codec=9))
    with pytest.raises(CorruptBlobError, match="dtype"):
        codec.decode(reheader(blob, dtype=42))


def test_too_many_dims_in_header(codec):
    blob = codec.encode(latent((2, 2)))
    fields = list(_FIXED.unpack_from(blob))
    fields[4] = MAX_NDIM + 1
    with pytest.raises(CorruptBlobError, match="dimensions"):
        read_header(_FIXED.pack(*fields) + blob[_FIXED.size:])


def test_consistent_header_with_wrong_payload_size(codec):
    # the header agrees with the blob's length, but the shape does not match the payload length
    blob = codec.encode(latent((2, 3)))
    header = read_header(blob)
    payload = blob[header.header_nbytes:] + bytes(4)
    forged = reheader(blob, payload_nbytes=len(payload))[:header.header_nbytes] + payload
    with pytest.raises(CorruptBlobError, match="needs"):
        codec.decode(forged)


def test_a_prefix_and_the_total_length_are_enough_to_read_a_header(codec):
    blob = codec.encode(latent((2, 3, 4)), seed=3)
    header = read_header(blob[:40], total_nbytes=len(blob))
    assert header == read_header(blob)
    with pytest.raises(CorruptBlobError, match="payload"):
        read_header(blob[:40], total_nbytes=len(blob) + 1)


def test_corrupt_blob_error_is_flexcache_error(codec):
    with pytest.raises(FlexCacheError):
        codec.decode(b"not a blob at all, really not")


# -- invalid input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 1.5, [1.0, 2.0], b"bytes"] + [pytest.param("numpy", id="ndarray")],
)
def test_non_tensor_input_is_rejected(codec, value):
    if value == "numpy":
        import numpy as np

        value = np.zeros((2, 2), dtype=np.float32)
    with pytest.raises(InvalidLatentError) as info:
        codec.encode(value)
    assert isinstance(info.value, FlexCacheError)


@pytest.mark.parametrize(
    "dtype", [torch.int32, torch.int64, torch.uint8, torch.int8, torch.bool, torch.complex64], ids=str
)
def test_non_float_tensor_is_rejected(codec, dtype):
    x = torch.zeros((2, 3), dtype=dtype)
    with pytest.raises(InvalidLatentError, match="dtype"):
        codec.encode(x)


def test_too_many_dims_is_rejected(codec):
    with pytest.raises(InvalidLatentError, match="dimensions"):
        codec.encode(torch.zeros((1,) * (MAX_NDIM + 1)))


@pytest.mark.parametrize("shape", [(0,), (0, 3), (4, 0, 2)])
@pytest.mark.parametrize("make", [LosslessCodec, QuantizedCodec], ids=["lossless", "quantized"])
def test_zero_element_latent_is_rejected_by_every_codec(make, shape):
    # No pipeline makes one and no generation signature describes one, so no cache could serve it.
    with pytest.raises(InvalidLatentError, match="at least one value"):
        make().encode(torch.zeros(shape), seed=1, sigma=0.5)


@pytest.mark.parametrize("seed", [2**63, 2**64 - 1])
def test_full_unsigned_64_bit_seed_round_trips(codec, seed):
    assert read_header(codec.encode(latent((2,)), seed=seed)).seed == seed


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "7", True])
def test_seed_outside_unsigned_64_bit_is_refused(codec, seed):
    with pytest.raises(InvalidLatentError, match="seed"):
        codec.encode(latent((2,)), seed=seed)


# -- registry --------------------------------------------------------------------------


def test_build_codec():
    codec = build_codec("lossless")
    assert isinstance(codec, LosslessCodec)
    assert isinstance(codec, LatentCodec)
    assert codec.name == "lossless"


def test_build_codec_unknown_name():
    with pytest.raises(ConfigError) as info:
        build_codec("zzz")
    assert isinstance(info.value, FlexCacheError)
    assert "zzz" in str(info.value)
    assert "lossless" in str(info.value)
