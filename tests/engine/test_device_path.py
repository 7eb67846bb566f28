"""A hit in device memory stays on the device: store -> codec -> latent with no host copy of the blob.

Driven on CPU through `CpuHBMTier`, an HBM tier whose device is the CPU and
which records every crossing between host and "device" (tests/devicefake.py).
On a GPU, bench/gpu/check.py proves the same with the torch profiler.
"""

from __future__ import annotations

import pytest
import torch

from flexcache import CacheConfig, FlexCache, GenerationSignature
from flexcache.core.blob import DeviceBlob
from flexcache.errors import BackendUnavailableError
from tests.devicefake import CpuHBMTier

PROMPT = "a red fox running through snow"


@pytest.fixture
def hbm(monkeypatch) -> CpuHBMTier:
    with monkeypatch.context() as patched:  # only the constructor asks for CUDA
        patched.setattr(torch.cuda, "is_available", lambda: True)
        tier = CpuHBMTier(64 << 20)
    return tier


def cached(embedder, hbm: CpuHBMTier, lossless: str) -> tuple[FlexCache, GenerationSignature, torch.Tensor]:
    config = CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"},
                                    "codec": {"lossless": lossless}})
    cache = FlexCache(config, embedder=embedder, tiers=[hbm])
    signature = GenerationSignature("tiny", "Euler", num_steps=10, height=64, width=64, num_frames=9,
                                    latent_shape=(4, 3, 8, 8))
    plan = cache.plan(PROMPT, signature, seed=7)
    latent = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    cache.insert(plan, {step: latent for step in plan.checkpoint_steps}, {step: 0.5 for step in plan.checkpoint_steps})
    return cache, signature, latent


@pytest.mark.parametrize("lossless", ["zstd", "none"])
def test_an_hbm_hit_copies_nothing_between_host_and_device(embedder, hbm, lossless):
    cache, signature, latent = cached(embedder, hbm, lossless)
    assert [kind for kind, _ in hbm.copies] == ["h2d"] * len(hbm.copies)  # the CPU-encoded blobs went up
    hbm.copies.clear()
    plan = cache.plan(PROMPT, signature)
    assert plan.hit
    decoded = cache.fetch(plan, device=hbm.device)
    assert hbm.copies == []  # the blob's headers came from its head; its payload never left the device
    assert decoded.device == hbm.device and decoded.shape == latent.shape
    assert float((decoded - latent).pow(2).mean().sqrt()) <= 0.02 * 0.5 * 1.0001  # within the codec budget
    cache.close()


def test_the_recorder_sees_a_copy_when_a_hit_is_asked_for_on_the_host(embedder, hbm):
    cache, signature, latent = cached(embedder, hbm, "zstd")
    hbm.copies.clear()
    decoded = cache.fetch(cache.plan(PROMPT, signature))  # no device: host bytes, one download
    assert [kind for kind, _ in hbm.copies] == ["d2h"]
    assert torch.allclose(decoded, latent, atol=0.05)
    cache.close()


def test_a_head_too_short_for_the_headers_is_a_recorded_copy(hbm):
    from flexcache.codec import QuantizedCodec

    blob = QuantizedCodec().encode(torch.randn(4, 3, 8, 8), seed=3, sigma=0.5)
    full = hbm._blob_class(torch.frombuffer(bytearray(blob), dtype=torch.uint8))
    short = hbm._blob_class(full.tensor, full.head[:20])  # a device blob whose host head misses the header
    assert torch.equal(QuantizedCodec().decode(full), QuantizedCodec().decode(short))
    assert [kind for kind, _ in hbm.copies] == ["d2h"] * len(hbm.copies) and hbm.copies
    assert isinstance(short, DeviceBlob)


# -- a device= the machine lacks is the caller's mistake, not damage: typed, raised first, deletes nothing --


def _memory_and_disk_cache(embedder, path):
    config = CacheConfig.from_dict({
        "embedder": {"device": "cpu"}, "index": {"device": "cpu"},
        "store": {"tiers": [{"kind": "memory", "capacity_bytes": "1MiB"},
                            {"kind": "disk", "capacity_bytes": "64MiB", "path": str(path)}]},
    })
    cache = FlexCache(config, embedder=embedder)
    signature = GenerationSignature("tiny", "Euler", num_steps=10, height=64, width=64, num_frames=9,
                                    latent_shape=(4, 3, 8, 8))
    plan = cache.plan(PROMPT, signature, seed=7)
    latents = {step: torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(step))
               for step in plan.checkpoint_steps}
    cache.insert(plan, latents, {step: 0.5 for step in plan.checkpoint_steps})
    cache.store.drain()
    return cache, signature


def _disk_files(path) -> dict:
    return {p: p.read_bytes() for p in (path / "data").rglob("*.fxc")}


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:99", "cdua", "meta", 7])
def test_a_device_this_machine_lacks_is_a_typed_error_and_deletes_nothing(embedder, tmp_path, monkeypatch, device):
    from flexcache.errors import InvalidDeviceError

    cache, signature = _memory_and_disk_cache(embedder, tmp_path)
    entries, files = {e.key for e in cache.entries()}, _disk_files(tmp_path)
    assert len(entries) == len(files) >= 2
    reads = []
    real_get = cache.store.get
    monkeypatch.setattr(cache.store, "get", lambda *a, **k: reads.append(a) or real_get(*a, **k))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the machine, on any machine
    for _ in range(3):  # each retry deleted another entry
        plan = cache.plan(PROMPT, signature)
        assert plan.hit
        with pytest.raises(InvalidDeviceError, match="pass None") as info:
            cache.fetch(plan, device=device)
        assert isinstance(info.value, ValueError)
        with pytest.raises(InvalidDeviceError):
            cache.fetch_start(plan, device=device)
    assert reads == []  # refused before the store was asked for anything
    stats = cache.stats()
    assert (stats["corrupt_blobs"], stats["fetch_misses"], stats["hits"]) == (0, 0, 0)
    assert {e.key for e in cache.entries()} == entries and _disk_files(tmp_path) == files
    assert list((tmp_path / "quarantine").iterdir()) == []
    monkeypatch.undo()
    assert cache.fetch(cache.plan(PROMPT, signature), device="cpu") is not None  # the entry still serves
    cache.close()


@pytest.mark.parametrize("error", [
    BackendUnavailableError("nvCOMP is not importable"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("an unexpected failure inside the decoder"),
], ids=["backend", "oom", "bug"])
def test_an_error_while_decoding_that_is_not_damage_propagates_and_keeps_the_entry(embedder, tmp_path,
                                                                                   monkeypatch, error):
    from flexcache.codec import latent

    cache, signature = _memory_and_disk_cache(embedder, tmp_path)
    entries, files = {e.key for e in cache.entries()}, _disk_files(tmp_path)

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(latent.lossless, "decompress", failing)
    for _ in range(2):
        with pytest.raises(type(error)) as info:
            cache.fetch(cache.plan(PROMPT, signature))
        assert info.value is error  # as it was raised: never turned into a corrupt blob
    stats = cache.stats()
    assert (stats["corrupt_blobs"], stats["hits"]) == (0, 0)
    assert {e.key for e in cache.entries()} == entries and _disk_files(tmp_path) == files
    assert list((tmp_path / "quarantine").iterdir()) == []
    monkeypatch.undo()
    assert cache.fetch(cache.plan(PROMPT, signature)) is not None
    cache.close()
