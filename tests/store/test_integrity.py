"""The one integrity layer (flexcache.store.integrity) and what a cache does with what it finds.

A stored blob with a flipped byte, a truncated file or a foreign value is a
miss, is quarantined (kept for inspection, not deleted), and is counted once
in ``stats()["corrupt_blobs"]``; no other entry is touched. Disk always;
Redis with the ``redis`` marker (a real server).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
import redis
import torch

from flexcache import CacheConfig, FlexCache
from flexcache.core.types import make_key
from flexcache.errors import CorruptBlobError
from flexcache.store.disk import DiskTier
from flexcache.store.integrity import FRAME, ChecksummedTier, checked, frame, unframe
from flexcache.store.memory import MemoryTier

CAPACITY = 1 << 30
PROMPTS = ["a paper boat drifting down a rain-soaked city street",
           "a hummingbird hovering over bright pink flowers"]


def key_for(i: int, tenant: str = "t") -> str:
    return make_key(tenant, f"{i:016x}")


def entry_path(directory: Path, key: str) -> Path:
    tenant, digest = key.rsplit(".", 1)
    return directory / "data" / tenant / f"{digest}.fxc"


def quarantined(directory: Path) -> list[Path]:
    return sorted((directory / "quarantine").iterdir())


# -- the frame ------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"x", bytes(range(256)) * 7])
def test_frame_round_trip_and_layout(body):
    framed = frame(body)
    assert framed[:FRAME.size] == struct.pack("<4sIQ", b"FXTK", zlib.crc32(body), len(body))
    for given in (framed, bytearray(framed), memoryview(framed)):
        assert unframe(given).tobytes() == body


def test_every_flipped_bit_of_a_frame_is_refused():
    framed = frame(b"latent bytes, framed")
    for position in range(len(framed)):
        for mask in (0x01, 0x80):
            damaged = bytearray(framed)
            damaged[position] ^= mask
            with pytest.raises(CorruptBlobError):
                unframe(bytes(damaged))


@pytest.mark.parametrize("stored", [
    b"", b"FXTK", frame(b"body")[:-1], frame(b"body") + b"!", b"a value FlexCache never wrote" * 3,
], ids=["empty", "magic-only", "truncated", "extended", "foreign"])
def test_truncated_extended_and_foreign_values_are_refused(stored):
    with pytest.raises(CorruptBlobError):
        unframe(stored)


def test_only_tiers_whose_bytes_leave_the_process_are_framed(tmp_path):
    memory = MemoryTier(1 << 20)
    assert checked(memory) is memory
    disk = checked(DiskTier(tmp_path, CAPACITY))
    assert isinstance(disk, ChecksummedTier) and checked(disk) is disk
    disk.close()


# -- the layer over a disk tier ---------------------------------------------------------------------


@pytest.fixture
def disk(tmp_path) -> ChecksummedTier:
    tier = ChecksummedTier(DiskTier(tmp_path, CAPACITY))
    yield tier
    tier.close()


def test_file_format_behind_the_integrity_layer(disk, tmp_path):
    key = key_for(7)
    disk.put(key, b"BLOB-BYTES", meta=b"META")
    raw = entry_path(tmp_path, key).read_bytes()
    meta_len, blob_len = struct.unpack_from("<4sHHIQ", raw)[3:]
    assert (meta_len, blob_len) == (16 + 4, 16 + 10)
    body = raw[20 + len(key):]
    assert body == frame(b"META") + frame(b"BLOB-BYTES")
    assert body[:16] == struct.pack("<4sIQ", b"FXTK", zlib.crc32(b"META"), 4)


def test_checksummed_disk_tier(disk, tmp_path):
    inner = disk.inner
    assert (disk.name, disk.persistent) == ("disk", True)
    key = key_for(1)
    disk.put(key, b"latent", meta=b"m")
    assert disk.get(key) == b"latent" and disk.get_meta(key) == b"m"
    assert inner.get(key) == frame(b"latent") and inner.get_meta(key) == frame(b"m")

    # one flipped bit anywhere in what was stored: the frame catches it, the file is quarantined
    framed = bytearray(frame(b"latent"))
    framed[-1] ^= 0x01
    inner.put(key, bytes(framed), meta=frame(b"m"))
    assert disk.get(key) is None
    assert disk.stats().corrupt == 1
    assert len(quarantined(tmp_path)) == 1 and not disk.contains(key)
    disk.put(key, b"latent again")
    assert disk.get(key) == b"latent again"


def test_damage_found_by_a_get_does_not_quarantine_a_newer_file(disk, tmp_path, monkeypatch):
    """A put that commits while a get checks the old, damaged blob keeps its new file."""
    from flexcache.store import integrity

    key = key_for(1)
    disk.put(key, b"old value")
    path = entry_path(tmp_path, key)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x5A
    path.write_bytes(bytes(raw))
    real_unframe, swapped = integrity.unframe, []

    def unframe_racing_a_put(framed):
        if not swapped:
            swapped.append(True)
            disk.put(key, b"new value")  # the racing put commits just before the damage is handled
        return real_unframe(framed)

    monkeypatch.setattr(integrity, "unframe", unframe_racing_a_put)
    assert disk.get(key) is None  # what it read was damaged
    monkeypatch.undo()
    assert swapped
    assert disk.stats().corrupt == 1
    assert quarantined(tmp_path) == []
    assert disk.get(key) == b"new value"


# -- through a cache: a miss, quarantined, counted once, nothing else touched ------------------------


def fill(cache: FlexCache, signature) -> None:
    for prompt in PROMPTS:
        plan = cache.plan(prompt, signature).as_miss()
        latents = {step: torch.randn(signature.latent_shape) for step in plan.checkpoint_steps}
        cache.insert(plan, latents, {step: 0.8 for step in latents})
    cache.store.drain()


def hit_and_its_key(cache: FlexCache, signature):
    plan = cache.plan(PROMPTS[0], signature)
    assert plan.hit
    [key] = [e.key for e in cache.entries() if e.record_id == plan.source_record and e.step == plan.skip_steps]
    return plan, key


def assert_a_counted_miss_that_spares_the_rest(cache: FlexCache, signature, plan, entries_before: int) -> None:
    """`plan`'s entry is damaged: its fetch is a miss counted once, the next plan resumes from another entry."""
    assert cache.fetch(plan) is None
    stats = cache.stats()
    assert (stats["corrupt_blobs"], stats["fetch_misses"], stats["hits"]) == (1, 1, 0)
    assert stats["entries"] == entries_before - 1
    again = cache.plan(PROMPTS[0], signature)
    assert again.hit and again.skip_steps < plan.skip_steps  # the next deepest, intact entry
    assert cache.fetch(again) is not None
    other = cache.plan(PROMPTS[1], signature)
    assert other.hit and other.skip_steps == plan.skip_steps and cache.fetch(other) is not None
    stats = cache.stats()
    assert stats["corrupt_blobs"] == 1 and stats["entries"] == entries_before - 1  # counted once, not per read


def disk_config(path: Path) -> CacheConfig:
    return CacheConfig.from_dict({
        "embedder": {"device": "cpu"}, "index": {"device": "cpu"},
        "store": {"tiers": [{"kind": "disk", "capacity_bytes": "64MiB", "path": str(path)}]},
    })


def _flip_blob_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x5A  # inside the framed blob: only the CRC can tell
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _foreign(path: Path) -> None:
    path.write_bytes(b"a file FlexCache never wrote " * 40)


def _another_entrys_file(path: Path) -> None:
    neighbour = next(p for p in sorted(path.parent.iterdir()) if p != path and p.suffix == ".fxc")
    path.write_bytes(neighbour.read_bytes())  # well formed, but another key's


DISK_DAMAGE = {"flipped-byte": _flip_blob_byte, "truncated": _truncate, "foreign": _foreign,
               "another-entry": _another_entrys_file}


@pytest.mark.parametrize("damage", sorted(DISK_DAMAGE))
def test_damage_on_disk_is_a_quarantined_miss_counted_once(tmp_path, embedder, signature, damage):
    with FlexCache(disk_config(tmp_path), embedder=embedder) as cache:
        fill(cache, signature)
        entries_before = cache.stats()["entries"]
        plan, key = hit_and_its_key(cache, signature)
        victim = entry_path(tmp_path, key)
        DISK_DAMAGE[damage](victim)
        damaged = victim.read_bytes()
        others = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.fxc") if p != victim}

        assert_a_counted_miss_that_spares_the_rest(cache, signature, plan, entries_before)
        [moved] = quarantined(tmp_path)
        assert moved.name.startswith(key) and moved.read_bytes() == damaged  # kept as found
        assert not victim.exists()
        assert {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.fxc")} == others


def test_damage_found_by_the_restart_scan_is_counted_once(tmp_path, embedder, signature):
    with FlexCache(disk_config(tmp_path), embedder=embedder) as cache:
        fill(cache, signature)
        entries_before = cache.stats()["entries"]
    files = sorted((tmp_path / "data").rglob("*.fxc"))
    _truncate(files[0])  # the tier's own scan sees a wrong size
    raw = bytearray(files[1].read_bytes())
    raw[20 + len(files[1].parent.name) + 1 + len(files[1].stem) + FRAME.size + 2] ^= 0x01  # a metadata byte
    files[1].write_bytes(bytes(raw))  # the integrity layer's scan sees a bad metadata frame
    others = {p: p.read_bytes() for p in files[2:]}
    with FlexCache(disk_config(tmp_path), embedder=embedder) as cache:
        stats = cache.stats()
        assert stats["corrupt_blobs"] == 2 and stats["entries"] == entries_before - 2
        assert len(quarantined(tmp_path)) == 2
        assert {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.fxc")} == others
        assert all(cache.fetch(cache.plan(prompt, signature)) is not None for prompt in PROMPTS)
        assert cache.stats()["corrupt_blobs"] == 2


def test_a_blob_that_passes_its_frame_but_not_the_codec_is_quarantined_counted_once(tmp_path, embedder, signature):
    # Written damaged (by a bug, another release): the frame is fine, the codec's own checks refuse it.
    with FlexCache(disk_config(tmp_path), embedder=embedder) as cache:
        fill(cache, signature)
        entries_before = cache.stats()["entries"]
        plan, key = hit_and_its_key(cache, signature)
        [tier] = cache.store.tiers
        garbage = b"not a latent blob" * 10
        tier.put(key, garbage, tier.get_meta(key))
        others = {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.fxc") if p != entry_path(tmp_path, key)}

        assert_a_counted_miss_that_spares_the_rest(cache, signature, plan, entries_before)
        [moved] = quarantined(tmp_path)  # set aside for inspection, not deleted
        assert moved.read_bytes().endswith(frame(garbage))
        assert {p: p.read_bytes() for p in (tmp_path / "data").rglob("*.fxc")} == others


def test_an_unframed_tier_drops_a_blob_the_codec_refuses_counted_once(make_cache, signature):
    cache = make_cache(store={"capacity_bytes": 1 << 20})
    fill(cache, signature)
    entries_before = cache.stats()["entries"]
    plan, key = hit_and_its_key(cache, signature)
    [tier] = cache.store.tiers
    blob = bytearray(tier.get(key))
    blob[-3] ^= 0xFF  # inside the entropy-coded stream: the codec refuses it
    tier.put(key, bytes(blob))
    assert_a_counted_miss_that_spares_the_rest(cache, signature, plan, entries_before)
    assert not tier.contains(key)
    cache.close()


# -- through a cache on Redis ------------------------------------------------------------------------


def _blob_name(prefix: str, cache_name: str, key: str) -> str:
    tenant, digest = key.rsplit(".", 1)
    return f"{{{prefix}:{cache_name}}}:{tenant}:{digest}:blob"


def _quarantine_name(prefix: str, cache_name: str, key: str) -> str:
    tenant, digest = key.rsplit(".", 1)
    return f"{{{prefix}:{cache_name}}}:quarantine:{tenant}:{digest}:blob"


REDIS_DAMAGE = {
    "flipped-byte": lambda raw, name: raw.setrange(name, raw.strlen(name) - 5, bytes([raw.getrange(
        name, -5, -5)[0] ^ 0x5A])),
    "truncated": lambda raw, name: raw.set(name, raw.get(name)[:-7]),
    "foreign": lambda raw, name: raw.set(name, b"x" * raw.strlen(name)),  # same length: only the frame can tell
    "wrong-type": lambda raw, name: (raw.delete(name), raw.rpush(name, b"a list, not a blob")),
}


@pytest.mark.redis
@pytest.mark.parametrize("damage", sorted(REDIS_DAMAGE))
def test_damage_in_redis_is_a_quarantined_miss_counted_once(redis_url, redis_prefix, embedder, signature, damage):
    from flexcache.store.redis import RedisTier

    config = CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"}})
    tier = RedisTier(redis_url, 64 << 20, prefix=redis_prefix, cache_name="integrity", socket_timeout=5.0)
    raw = redis.Redis.from_url(redis_url)
    try:
        with FlexCache(config, embedder=embedder, tiers=[tier]) as cache:  # framed by the cache itself
            fill(cache, signature)
            entries_before = cache.stats()["entries"]
            plan, key = hit_and_its_key(cache, signature)
            name = _blob_name(redis_prefix, "integrity", key)
            REDIS_DAMAGE[damage](raw, name)
            damaged = raw.dump(name)
            others = {e.key: raw.get(_blob_name(redis_prefix, "integrity", e.key))
                      for e in cache.entries() if e.key != key}

            assert_a_counted_miss_that_spares_the_rest(cache, signature, plan, entries_before)
            held = _quarantine_name(redis_prefix, "integrity", key)
            assert raw.exists(name) == 0 and raw.dump(held) == damaged  # kept as found, for a day
            assert raw.ttl(held) > 0
            assert {k: raw.get(_blob_name(redis_prefix, "integrity", k)) for k in others} == others
    finally:
        raw.close()
