"""A FlexCache restarted on the same disk directory gets back every committed entry."""

from __future__ import annotations

import pytest
import torch

from flexcache import CacheConfig, FlexCache

PROMPTS = ["a paper boat drifting down a rain-soaked city street",
           "a hummingbird hovering over bright pink flowers",
           "fireworks bursting over a harbour at midnight"]


def disk_config(path, memory="1MiB", disk="64MiB", **extra):
    return CacheConfig.from_dict({
        "embedder": {"device": "cpu"}, "index": {"device": "cpu"},
        "store": {"tiers": [{"kind": "memory", "capacity_bytes": memory},
                            {"kind": "disk", "capacity_bytes": disk, "path": str(path)}]},
        **extra,
    })


def fill(cache, signature, tenant="default"):
    stored = {}
    for prompt in PROMPTS:
        plan = cache.plan(prompt, signature, tenant=tenant).as_miss()
        latents = {step: torch.randn(signature.latent_shape) for step in plan.checkpoint_steps}
        cache.insert(plan, latents, {step: 0.8 for step in latents})
        stored[prompt] = latents
    cache.store.drain()
    return stored


def test_restart_restores_entries_and_index(tmp_path, embedder, signature):
    with FlexCache(disk_config(tmp_path), embedder=embedder) as first:
        stored = fill(first, signature)
        before = {e.key for e in first.entries()}
        decoded = {prompt: first.fetch(first.plan(prompt, signature)) for prompt in PROMPTS}
    with FlexCache(disk_config(tmp_path), embedder=embedder) as second:
        assert {e.key for e in second.entries()} == before
        assert second.stats()["records"] == len(PROMPTS)
        for prompt in PROMPTS:
            plan = second.plan(prompt, signature)
            assert plan.hit and plan.skip_steps == 10 and plan.source_prompt == prompt
            latent = second.fetch(plan)
            assert torch.equal(latent, decoded[prompt])  # the same blob, decoded the same way
            assert float(torch.sqrt(torch.mean((latent - stored[prompt][10]) ** 2))) <= 0.02 * 0.8 + 1e-6
        # Tenants survive the restart too.
        assert not second.plan(PROMPTS[0], signature, tenant="other").hit


def test_memory_pressure_demotes_to_disk_and_hits_promote(tmp_path, embedder, signature):
    config = disk_config(tmp_path, memory="4KiB", codec={"name": "lossless"}, policy="lru")
    with FlexCache(config, embedder=embedder) as cache:
        fill(cache, signature)
        tiers = {t["name"]: t for t in cache.stats()["tiers"]}
        assert tiers["memory"]["bytes_used"] <= 4096
        assert tiers["disk"]["entries"] == 15  # write-behind: every entry is committed on disk
        plan = cache.plan(PROMPTS[0], signature)
        assert plan.hit
        assert cache.fetch(plan) is not None  # served from disk
        cache.store.drain()
        assert cache.store.counters["promotions"] >= 1


def test_damaged_file_on_disk_is_a_miss_after_restart(tmp_path, embedder, signature):
    with FlexCache(disk_config(tmp_path), embedder=embedder) as first:
        fill(first, signature)
    files = sorted((tmp_path / "data").rglob("*.fxc"))
    assert len(files) == 15
    for path in files:
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF  # inside the blob
        path.write_bytes(bytes(data))
    with FlexCache(disk_config(tmp_path), embedder=embedder) as second:
        plan = second.plan(PROMPTS[0], signature)
        assert plan.hit
        assert second.fetch(plan) is None  # detected, quarantined, a miss
        assert second.stats()["tiers"][1]["corrupt"] == second.stats()["corrupt_blobs"] == 1
        assert len(list((tmp_path / "quarantine").iterdir())) == 1


def test_unwritable_disk_path_fails_at_start_up(tmp_path, embedder):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    from flexcache import TierUnavailableError

    with pytest.raises(TierUnavailableError, match="a-file"):
        FlexCache(disk_config(blocker / "cache"), embedder=embedder)


def test_a_second_cache_on_the_same_disk_directory_is_refused(tmp_path, embedder, signature):
    from flexcache.errors import DirectoryInUseError

    with FlexCache(disk_config(tmp_path), embedder=embedder) as first:
        fill(first, signature)
        with pytest.raises(DirectoryInUseError, match="its own store.tiers\\[disk\\].path"):
            FlexCache(disk_config(tmp_path), embedder=embedder)
        assert first.stats()["tiers"][1]["entries"] == 15  # the owner keeps the whole directory
    with FlexCache(disk_config(tmp_path), embedder=embedder) as second:  # closed: the next owner may start
        assert second.stats()["tiers"][1]["entries"] == 15
