"""The host tier (slab pool, pinned under CUDA) and the HBM tier.

CPU tests cover the allocator, the host tier on plain memory, its pinning
control flow with the CUDA calls faked, and the HBM tier's bookkeeping with its
device copies replaced by CPU copies. `gpu` tests cover the real CUDA paths.
"""

from __future__ import annotations

import gc
import mmap
import random
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from flexcache.core.blob import DeviceBlob
from flexcache.errors import (
    BackendUnavailableError,
    CapacityError,
    ConfigError,
    TierUnavailableError,
)
from flexcache.store import slabs as slabs_module
from flexcache.store.base import Tier
from flexcache.store.hbm import STAGING_CHUNK_BYTES, HBMTier
from flexcache.store.host import MIN_SLABS, HostTier
from flexcache.store.integrity import ChecksummedTier
from flexcache.store.slabs import SlabAllocator
from tests.devicefake import CpuHBMTier

SLAB = 64


def key(n: int) -> str:
    return f"t.{n:08x}"


def payload(n: int, size: int) -> bytes:
    """Random bytes, different for every (n, size)."""
    return random.Random(n * 1_000_003 + size).randbytes(size)


def ceil_slabs(size: int, slab: int = SLAB) -> int:
    return -(-size // slab)


def check_allocator(tier: HostTier) -> None:
    """Live blobs' extents are disjoint, inside the pool, and account for every used slab."""
    seen: set[int] = set()
    for k in tier.keys():
        extents = tier.extents(k)
        assert sum(count for _, count in extents) == ceil_slabs(len(tier.get(k)), tier.slab_bytes)
        for start, count in extents:
            slabs = set(range(start, start + count))
            assert not slabs & seen, f"{k} shares slabs with another blob"
            assert 0 <= start and start + count <= tier.slab_count
            seen |= slabs
    assert len(seen) == tier.slabs_used


@pytest.fixture
def tier():
    t = HostTier(16 * SLAB, pinned=False, slab_bytes=SLAB)
    yield t
    t.close()


# -- the allocator ---------------------------------------------------------------------


def test_allocator_best_fit_then_coalesces_freed_runs():
    a = SlabAllocator(10)
    first, second, third = a.allocate(3), a.allocate(2), a.allocate(4)
    assert (first, second, third) == ([(0, 3)], [(3, 2)], [(5, 4)])
    a.free(first)
    a.free(third)
    assert a.free_runs == [(0, 3), (5, 5)]
    assert a.allocate(3) == [(0, 3)]  # best fit: the exact run, not the head of the longer one
    a.free([(0, 3)])
    a.free(second)
    assert a.free_runs == [(0, 10)] and a.free_slabs == 10


def test_allocator_gathers_runs_when_none_is_long_enough():
    a = SlabAllocator(8)
    pieces = [a.allocate(1) for _ in range(8)]
    assert a.allocate(1) is None
    for piece in pieces[::2]:
        a.free(piece)
    assert a.largest_free_run == 1 and a.free_slabs == 4
    assert a.allocate(5) is None
    extents = a.allocate(4)
    assert sorted(extents) == [(0, 1), (2, 1), (4, 1), (6, 1)]
    assert a.free_slabs == 0 and a.free_runs == []


def test_allocator_random_operations_never_hand_out_a_slab_twice():
    rng = random.Random(7)
    a = SlabAllocator(97)
    held: list[list[tuple[int, int]]] = []
    for _ in range(3000):
        if held and rng.random() < 0.45:
            a.free(held.pop(rng.randrange(len(held))))
        else:
            count = rng.randint(0, 9)
            extents = a.allocate(count)
            in_use = sum(n for e in held for _, n in e)
            if extents is None:
                assert count > 97 - in_use
                continue
            assert sum(n for _, n in extents) == count
            held.append(extents)
        used = [s for e in held for start, n in e for s in range(start, start + n)]
        assert len(used) == len(set(used)) and all(0 <= s < 97 for s in used)
        assert a.free_slabs == 97 - len(used)
        runs = a.free_runs
        assert all(s1 + n1 < s2 for (s1, n1), (s2, _) in zip(runs, runs[1:])), "adjacent free runs not merged"
        assert sum(n for _, n in runs) == a.free_slabs


def _scanning_allocate(runs: list[tuple[int, int]], count: int) -> list[tuple[int, int]] | None:
    """The allocator's choices made the slow way, by scanning every free run (address order)."""
    if count == 0:
        return []
    if count > sum(n for _, n in runs):
        return None
    fits = [(n, s) for s, n in runs if n >= count]
    if fits:
        return [(min(fits)[1], count)]  # the shortest run that holds it, the lowest of equals
    extents, needed = [], count
    for s, n in sorted(runs, key=lambda run: -run[1]):  # the longest first, the lowest of equals
        extents.append((s, min(needed, n)))
        needed -= extents[-1][1]
        if not needed:
            return extents


def test_allocator_chooses_what_a_scan_of_every_free_run_would():
    rng = random.Random(11)
    a = SlabAllocator(300)
    held: list[list[tuple[int, int]]] = []
    for _ in range(4000):
        if held and rng.random() < 0.5:
            a.free(held.pop(rng.randrange(len(held))))
            continue
        count = rng.choice([1, 1, 2, 3, 5, 8, 13, 40])
        expected = _scanning_allocate(a.free_runs, count)
        extents = a.allocate(count)
        assert extents == expected
        assert a.largest_free_run == max((n for _, n in a.free_runs), default=0)
        if extents:
            held.append(extents)


# -- the host tier on CPU -----------------------------------------------------------------


def test_host_tier_flags_and_geometry():
    t = HostTier(100 * SLAB + 5, pinned=False, slab_bytes=SLAB)
    assert isinstance(t, Tier)
    assert (t.name, t.persistent, t.shared, t.device_resident) == ("host", False, False, False)
    assert t.capacity_bytes == 100 * SLAB + 5
    assert t.slab_bytes == SLAB and t.slab_count == 101 and t.pool_bytes == 101 * SLAB
    assert t.pinned is False
    assert t.slab_stats()["pool_allocated"] is False  # lazily, on the first put
    t.put(key(1), b"x")
    assert t.slab_stats()["pool_allocated"] is True


def test_host_tier_is_unpinned_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert HostTier(1 << 20).pinned is False
    with pytest.raises(BackendUnavailableError, match="pinned"):
        HostTier(1 << 20, pinned=True)


@pytest.mark.parametrize("bad", [0, -1, -(1 << 20), 1.5, True, "1GiB", None])
def test_bad_capacity_or_slab_size_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        HostTier(bad, pinned=False)
    with pytest.raises(ConfigError):
        HostTier(1 << 20, pinned=False, slab_bytes=bad)


def test_small_tiers_use_smaller_slabs():
    t = HostTier(100, pinned=False)  # 1 MiB slabs would make this one slab
    assert t.slab_bytes == 4 and t.slab_count == 25
    for n in range(8):
        t.put(key(n), payload(n, 9))
    assert t.bytes_used == 72 and t.slabs_used == 24
    assert HostTier(MIN_SLABS * (1 << 20), pinned=False).slab_bytes == 1 << 20
    assert HostTier(3, pinned=False).slab_bytes == 1


SIZES = [0, 1, SLAB - 1, SLAB, SLAB + 1, 2 * SLAB, 3 * SLAB - 7, 5 * SLAB + 3]


def test_round_trip_of_many_sizes(tier):
    t = HostTier(64 * SLAB, pinned=False, slab_bytes=SLAB)
    for n, size in enumerate(SIZES):
        t.put(key(n), payload(n, size), b"meta-%d" % n)
    for n, size in enumerate(SIZES):
        got = t.get(key(n))
        assert type(got) is bytes and got == payload(n, size)
        assert t.get_meta(key(n)) == b"meta-%d" % n
        assert sum(c for _, c in t.extents(key(n))) == ceil_slabs(size)
    assert t.bytes_used == sum(SIZES)
    assert t.slabs_used == sum(ceil_slabs(s) for s in SIZES)
    assert sorted(t.keys()) == sorted(key(n) for n in range(len(SIZES)))
    assert dict(t.scan()) == {key(n): b"meta-%d" % n for n in range(len(SIZES))}
    check_allocator(t)


def test_empty_blob_is_stored_and_takes_no_slab(tier):
    tier.put(key(1), b"", b"m")
    assert tier.get(key(1)) == b"" and tier.contains(key(1)) and tier.get_meta(key(1)) == b"m"
    assert tier.extents(key(1)) == [] and tier.slabs_used == 0 and tier.bytes_used == 0
    assert tier.get(key(2)) is None


def test_put_takes_bytes_like_values_and_keeps_a_copy(tier):
    source = bytearray(payload(1, 100))
    tier.put(key(1), source)
    expected = bytes(source)
    source[0] ^= 0xFF
    assert tier.get(key(1)) == expected
    tier.put(key(2), memoryview(payload(2, 70)))
    assert tier.get(key(2)) == payload(2, 70)
    tier.put(key(3), np.arange(5, dtype=np.int32))  # raw bytes of any buffer
    assert tier.get(key(3)) == np.arange(5, dtype=np.int32).tobytes()


def test_remove_frees_slabs_and_a_new_blob_reuses_them(tier):
    tier.put(key(1), payload(1, 3 * SLAB))
    tier.put(key(2), payload(2, 2 * SLAB))
    first = tier.extents(key(1))
    assert tier.slabs_used == 5
    assert tier.remove(key(1)) and not tier.remove(key(1))
    assert tier.slabs_used == 2 and tier.bytes_used == 2 * SLAB and tier.get(key(1)) is None
    tier.put(key(3), payload(3, 3 * SLAB - 1))
    assert tier.extents(key(3)) == first  # best fit lands in the freed run
    assert tier.get(key(3)) == payload(3, 3 * SLAB - 1) and tier.get(key(2)) == payload(2, 2 * SLAB)
    check_allocator(tier)


@pytest.mark.parametrize(("first", "second"), [(3 * SLAB, 10), (10, 3 * SLAB), (SLAB, SLAB), (70, 0), (0, 70)])
def test_replacing_a_key_frees_the_old_slabs(tier, first, second):
    tier.put(key(9), payload(9, 5))
    tier.put(key(1), payload(1, first), b"old")
    tier.put(key(1), payload(2, second), b"new")
    assert tier.get(key(1)) == payload(2, second) and tier.get_meta(key(1)) == b"new"
    assert tier.bytes_used == 5 + second
    assert tier.slabs_used == 1 + ceil_slabs(second)
    assert sorted(tier.keys()) == [key(1), key(9)]
    check_allocator(tier)


def test_fragmented_pool_serves_a_large_blob_from_scattered_slabs(tier):
    for n in range(16):
        tier.put(key(n), payload(n, SLAB))
    for n in range(0, 16, 2):
        tier.remove(key(n))
    stats = tier.slab_stats()
    assert stats["free_runs"] == 8 and stats["largest_free_run"] == 1 and stats["slabs_free"] == 8
    big = payload(100, 8 * SLAB)
    assert tier.fits(len(big))
    tier.put(key(100), big)
    assert len(tier.extents(key(100))) == 8
    assert tier.get(key(100)) == big
    assert tier.get(key(100), device="cpu") == big
    for n in range(1, 16, 2):
        assert tier.get(key(n)) == payload(n, SLAB)
    check_allocator(tier)
    for k in list(tier.keys()):
        tier.remove(k)
    assert tier.slab_stats()["free_runs"] == 1 and tier.slabs_free == 16


def test_slab_rounding_can_exhaust_slabs_before_bytes(tier):
    for n in range(16):
        tier.put(key(n), payload(n, SLAB // 2 + 1))  # one slab each, half of it wasted
    assert tier.bytes_used == 16 * (SLAB // 2 + 1) < tier.capacity_bytes
    assert not tier.fits(1)  # bytes would fit, slabs do not
    with pytest.raises(TierUnavailableError, match="make room"):
        tier.put(key(99), b"z")
    with pytest.raises(TierUnavailableError):
        tier.put(key(0), b"z")  # a replacement needs new slabs before the old ones are freed
    assert tier.get(key(0)) == payload(0, SLAB // 2 + 1) and tier.get(key(99)) is None
    assert tier.bytes_used == 16 * (SLAB // 2 + 1)
    assert tier.stats().errors == 2
    tier.remove(key(3))
    assert tier.fits(SLAB) and not tier.fits(SLAB + 1)
    tier.put(key(99), b"z")
    assert tier.get(key(99)) == b"z"


def test_blob_larger_than_the_tier_is_a_capacity_error_and_bytes_are_enforced(tier):
    with pytest.raises(CapacityError):
        tier.put(key(1), b"x" * (16 * SLAB + 1))
    t = HostTier(32 * 32 - 10, pinned=False, slab_bytes=32)  # 32 slabs, 10 bytes fewer
    t.put(key(1), payload(1, 31 * 32))
    assert t.slabs_free == 1
    assert not t.fits(23) and t.fits(22)  # a slab is free, but not 23 bytes
    with pytest.raises(TierUnavailableError):
        t.put(key(2), payload(2, 23))
    t.put(key(2), payload(2, 22))
    assert t.bytes_used == t.capacity_bytes and t.get(key(2)) == payload(2, 22)


def test_a_blob_being_read_keeps_its_slabs_until_the_reader_is_done(tier, monkeypatch):
    old = payload(1, 4 * SLAB)
    tier.put(key(1), old)
    leased = set(tier.extents(key(1)))
    entered, release = threading.Event(), threading.Event()
    real_copy_out = HostTier._copy_out

    def slow_copy_out(self, held):
        entered.set()
        assert release.wait(120), "the test never released the reader"
        return real_copy_out(self, held)

    monkeypatch.setattr(HostTier, "_copy_out", slow_copy_out)
    results: list = []
    reader = threading.Thread(target=lambda: results.append(tier.get(key(1))))
    reader.start()
    assert entered.wait(60), "the reader never started copying out"
    monkeypatch.setattr(HostTier, "_copy_out", real_copy_out)
    tier.put(key(1), payload(2, 4 * SLAB))  # replaced while being read
    tier.remove(key(1))
    assert tier.bytes_used == 0 and tier.slabs_used == 4  # the reader's slabs are still held
    tier.put(key(3), b"\xff" * (12 * SLAB))  # every other slab
    assert not set(tier.extents(key(3))) & leased
    with pytest.raises(TierUnavailableError):
        tier.put(key(4), b"\xee")
    release.set()
    reader.join(60)
    assert not reader.is_alive() and results == [old]
    assert tier.slabs_used == 12
    tier.put(key(4), b"\xee" * (4 * SLAB))
    check_allocator(tier)


def test_concurrent_puts_gets_removes_keep_accounting_exact_and_values_whole(monkeypatch):
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    # Slabs of 4 KiB: numpy copies of that size release the GIL, so copies truly overlap.
    slab = 4096
    t = HostTier(24 * slab, pinned=False, slab_bytes=slab)
    header = struct.Struct("<HII")

    def value(n: int, version: int) -> bytes:
        size = (version * 3739 + n * 1103) % (4 * slab)
        return header.pack(n, version, size) + payload(n * 7919 + version, size)

    def check(n: int, got: bytes | None) -> None:
        if got is None:
            return
        m, version, size = header.unpack_from(got)
        assert m == n and got == value(n, version), f"torn or foreign value for {key(n)}"

    errors: list[BaseException] = []
    refused = [0]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(1500):
                n, op = rng.randrange(10), rng.random()
                if op < 0.4:
                    try:
                        t.put(key(n), value(n, rng.randrange(1000)), b"%d" % n)
                    except TierUnavailableError:
                        refused[0] += 1
                elif op < 0.7:
                    check(n, t.get(key(n)))
                elif op < 0.8:
                    got = t.get(key(n), device="cpu")
                    check(n, got)
                else:
                    t.remove(key(n))
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
    finally:
        sys.setswitchinterval(old_interval)
    assert not errors, errors
    assert t.stats().puts > 100 and refused[0] > 0  # both paths were exercised
    held = {k: t.get(k) for k in t.keys()}
    for k, got in held.items():
        check(int(k.split(".")[1], 16), got)
        assert t.get_meta(k) == str(int(k.split(".")[1], 16)).encode()
    assert t.bytes_used == sum(len(v) for v in held.values())
    assert t.stats().entries == len(held)
    check_allocator(t)


def test_checksummed_host_tier_round_trip_and_corruption_is_a_miss():
    t = HostTier(16 * SLAB, pinned=False, slab_bytes=SLAB)
    c = ChecksummedTier(t)
    assert c.name == "host"
    blob = payload(1, 3 * SLAB + 5)
    c.put(key(1), blob, b"meta")
    assert c.get(key(1)) == blob and c.get_meta(key(1)) == b"meta"
    assert c.bytes_used == t.bytes_used > len(blob)
    start = t.extents(key(1))[0][0] * SLAB
    t._pool.array[start + 40] ^= 0x01  # flip one stored bit
    assert c.get(key(1)) is None
    assert not c.contains(key(1)) and c.stats().corrupt == 1 and t.slabs_used == 0


def test_a_device_blob_put_is_copied_and_a_device_get_on_cpu_gives_bytes(tier):
    source = torch.randint(1, 256, (185,), dtype=torch.uint8)
    tier.put(key(1), DeviceBlob(source), b"m")
    expected = source.numpy().tobytes()
    source.fill_(0)  # the tier kept its own copy
    assert tier.get(key(1)) == expected and tier.get(key(1), device="cpu") == expected
    assert tier.get_meta(key(1)) == b"m"
    tier.put(key(3), DeviceBlob(torch.empty(0, dtype=torch.uint8)))
    assert tier.get(key(3)) == b"" and tier.get(key(4), device="cpu") is None
    assert tier.bytes_used == 185


def test_stats_count_operations(tier):
    tier.put(key(1), b"abc")
    tier.get(key(1))
    tier.get(key(2))
    tier.get(key(2), device="cpu")
    tier.remove(key(1))
    s = tier.stats()
    assert (s.name, s.entries, s.bytes_used, s.capacity_bytes) == ("host", 0, 0, 16 * SLAB)
    assert (s.puts, s.gets, s.get_misses, s.removes) == (1, 3, 2, 1)


def test_close_drops_everything_and_the_tier_can_be_used_again(tier):
    tier.put(key(1), payload(1, 100))
    tier.close()
    assert tier.bytes_used == 0 and list(tier.keys()) == [] and tier.slabs_used == 0
    assert tier.slab_stats()["pool_allocated"] is False
    tier.put(key(1), payload(2, 100))
    assert tier.get(key(1)) == payload(2, 100)


def test_ensure_pool_allocates_up_front_and_a_failed_allocation_is_tier_unavailable():
    t = HostTier(16 * SLAB, pinned=False, slab_bytes=SLAB)
    t.ensure_pool()
    assert t.slab_stats()["pool_allocated"] is True and t._pool.tensor.numel() == t.pool_bytes
    huge = HostTier(1 << 62, pinned=False)  # no machine has 4 EiB of memory
    with pytest.raises(TierUnavailableError, match="could not allocate"):
        huge.put(key(1), b"abc")
    assert huge.bytes_used == 0 and huge.get(key(1)) is None


def test_the_store_factory_builds_these_tiers(monkeypatch):
    from flexcache.config import HBMTierConfig, HostTierConfig
    from flexcache.store.factory import build_tier

    host = build_tier(HostTierConfig(capacity_bytes="1MiB", slab_bytes="64KiB", pinned="never"))
    assert isinstance(host, HostTier) and host.capacity_bytes == 1 << 20
    assert host.slab_bytes == 64 << 10 and host.pinned is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError):
        build_tier(HostTierConfig(capacity_bytes="1MiB", pinned="required"))
    with pytest.raises(BackendUnavailableError):
        build_tier(HBMTierConfig(capacity_bytes="1MiB", device="cuda:1"))


# -- the pinning control flow, with the CUDA calls faked -------------------------------


@pytest.fixture
def fake_registration(monkeypatch):
    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(slabs_module, "_register_host_memory", lambda ptr, n: calls.append(("register", ptr, n)))
    monkeypatch.setattr(slabs_module, "_unregister_host_memory", lambda ptr, keep: calls.append(("unregister", ptr)))
    return calls


def test_pool_is_registered_once_page_aligned_and_unregistered_on_close(fake_registration):
    t = HostTier(20 * SLAB + 1, slab_bytes=SLAB)
    assert t.pinned is True and fake_registration == []  # nothing before the first put
    t.put(key(1), payload(1, 100))
    t.put(key(2), payload(2, 300))
    assert len(fake_registration) == 1
    _, ptr, nbytes = fake_registration[0]
    page = mmap.PAGESIZE
    assert t.pool_bytes == 21 * SLAB
    assert ptr % page == 0 and nbytes % page == 0 and t.pool_bytes <= nbytes < t.pool_bytes + page
    assert t._pool.tensor.data_ptr() == ptr
    assert t.get(key(2)) == payload(2, 300)
    t.close()
    gc.collect()
    assert fake_registration[1:] == [("unregister", ptr)]


def test_a_pool_that_cannot_be_pinned_warns_or_raises(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def refuse(ptr, nbytes):
        raise RuntimeError("cudaHostRegister failed with CUDA error 2")

    monkeypatch.setattr(slabs_module, "_register_host_memory", refuse)
    auto = HostTier(16 * SLAB, slab_bytes=SLAB)
    with pytest.warns(RuntimeWarning, match="pageable"):
        auto.put(key(1), b"abc")
    assert auto.pinned is False and auto.get(key(1)) == b"abc"
    required = HostTier(16 * SLAB, pinned=True, slab_bytes=SLAB)
    with pytest.raises(BackendUnavailableError, match="pinned=False"):
        required.put(key(1), b"abc")
    assert required.get(key(1)) is None and required.bytes_used == 0


# -- HBM tier on CPU --------------------------------------------------------------------


def test_hbm_tier_without_cuda_is_backend_unavailable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match="remove it from store.tiers or use host"):
        HBMTier(1 << 20)
    with pytest.raises(BackendUnavailableError):
        HBMTier(1 << 20, device="cuda:0")


@pytest.mark.parametrize("capacity", [0, -5, 2.0, True])
def test_hbm_tier_bad_capacity_is_a_config_error(capacity):
    with pytest.raises(ConfigError):
        HBMTier(capacity)


@pytest.mark.parametrize("device", ["cpu", "meta", "not-a-device", torch.device("cpu")])
def test_hbm_tier_on_a_non_cuda_device_is_a_config_error(device):
    with pytest.raises(ConfigError, match="CUDA device"):
        HBMTier(1 << 20, device=device)


@pytest.fixture
def cpu_hbm(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    t = CpuHBMTier(1000)
    yield t
    t.close()


def test_hbm_bookkeeping_round_trip_replace_remove(cpu_hbm):
    t = cpu_hbm
    assert (t.name, t.device_resident, t.persistent) == ("hbm", True, False)
    t.put(key(1), payload(1, 300), b"a")
    kept = torch.tensor([5, 6, 7], dtype=torch.uint8)
    t.put(key(2), DeviceBlob(kept), b"b")
    t.put(key(3), b"")
    assert t.get(key(1)) == payload(1, 300) and t.get_meta(key(1)) == b"a"
    handed = t.get(key(2), device=t.device)
    assert isinstance(handed, DeviceBlob) and handed.tensor.data_ptr() == kept.data_ptr()  # kept, not copied
    assert t.get(key(3)) == b"" and t.get(key(4)) is None and t.get(key(4), device=t.device) is None
    assert t.bytes_used == 303 and sorted(t.keys()) == [key(1), key(2), key(3)]
    t.put(key(1), payload(2, 100), b"c")
    assert t.get(key(1)) == payload(2, 100) and t.bytes_used == 103 and t.get_meta(key(1)) == b"c"
    assert t.remove(key(1)) and not t.remove(key(1)) and t.bytes_used == 3
    s = t.stats()
    assert (s.entries, s.puts, s.removes, s.get_misses) == (2, 4, 1, 2)


def test_hbm_copies_are_the_ones_expected(cpu_hbm):
    t = cpu_hbm
    t.put(key(1), payload(1, 300))  # bytes in: one upload
    t.put(key(2), DeviceBlob(torch.ones(40, dtype=torch.uint8)))  # a device blob in: nothing
    assert t.copies == [("h2d", 300)]
    t.get(key(1), device=t.device)
    t.get(key(2), device=t.device)  # handed out as they are
    assert t.copies == [("h2d", 300)]
    t.get(key(1))  # host bytes out (a demotion, a write-behind): one download
    assert t.copies == [("h2d", 300), ("d2h", 300)]


def test_hbm_capacity_is_enforced(cpu_hbm):
    t = cpu_hbm
    with pytest.raises(CapacityError):
        t.put(key(1), b"x" * 1001)
    t.put(key(1), b"x" * 900)
    assert t.fits(100) and not t.fits(101)
    with pytest.raises(TierUnavailableError, match="make room"):
        t.put(key(2), b"y" * 101)
    t.put(key(1), b"z" * 1000)  # a replacement counts only the difference
    assert t.bytes_used == 1000 and t.get(key(2)) is None and t.stats().errors == 2


def test_hbm_out_of_memory_is_tier_unavailable_and_keeps_the_old_blob(cpu_hbm, monkeypatch):
    t = cpu_hbm
    t.put(key(1), b"old")

    def oom(blob):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(t, "_upload", oom)
    with pytest.raises(TierUnavailableError, match="out of memory"):
        t.put(key(1), b"new")
    assert t.get(key(1)) == b"old" and t.bytes_used == 3 and t.fits(997)


def test_hbm_concurrent_accounting_is_exact(cpu_hbm):
    t = cpu_hbm
    errors: list[BaseException] = []

    def worker(seed):
        rng = random.Random(seed)
        try:
            for _ in range(1500):
                n = rng.randrange(8)
                if rng.random() < 0.5:
                    size = rng.randrange(1, 200)
                    try:
                        t.put(key(n), bytes([n + 1]) * size)
                    except TierUnavailableError:
                        pass
                elif rng.random() < 0.5:
                    got = t.get(key(n))
                    assert got is None or got == bytes([n + 1]) * len(got)
                else:
                    t.remove(key(n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert t.bytes_used == sum(len(t.get(k)) for k in t.keys()) <= t.capacity_bytes
    assert t.fits(t.capacity_bytes - t.bytes_used)  # nothing left reserved


def test_checksummed_hbm_bookkeeping_round_trip(cpu_hbm):
    c = ChecksummedTier(cpu_hbm)
    assert not c.device_resident  # framed bytes are host bytes: what leaves process memory never is device memory
    c.put(key(1), payload(1, 200), b"m")
    assert c.get(key(1)) == payload(1, 200) and c.get_meta(key(1)) == b"m"


# -- import does not initialise CUDA ---------------------------------------------------


def test_importing_and_building_the_tiers_touches_no_cuda():
    code = (
        "import torch\n"
        "calls = []\n"
        "real = torch.cuda._lazy_init\n"
        "torch.cuda._lazy_init = lambda: (calls.append('lazy_init'), real())\n"
        "import flexcache.store.host, flexcache.store.hbm\n"
        "from flexcache.store.host import HostTier\n"
        "from flexcache.store.hbm import HBMTier\n"
        "from flexcache.errors import BackendUnavailableError\n"
        "HostTier(1 << 20)\n"
        "t = HostTier(1 << 20, pinned=False)\n"
        "t.put('t.00c0ffee', b'abc'); assert t.get('t.00c0ffee') == b'abc'\n"
        "try:\n"
        "    HBMTier(1 << 20)\n"
        "except BackendUnavailableError:\n"
        "    pass\n"
        "assert not calls, calls\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# -- CUDA ---------------------------------------------------------------------------


@pytest.fixture
def pinned_host():
    t = HostTier(64 * 4096, slab_bytes=4096)
    yield t
    t.close()


@pytest.mark.gpu
def test_pinned_host_pool_is_page_locked(pinned_host):
    t = pinned_host
    assert t.pinned is True
    t.put(key(1), payload(1, 10_000))
    assert t._pool.tensor.is_pinned()
    assert t.get(key(1)) == payload(1, 10_000)
    assert not HostTier(1 << 16, pinned=False, slab_bytes=4096).pinned


@pytest.mark.gpu
def test_host_tier_takes_a_cuda_device_blob_and_hands_one_out_by_dma(pinned_host):
    t = pinned_host
    for n in range(64):
        t.put(key(n), payload(n, 4096))
    for n in range(0, 64, 4):  # scatter the free slabs
        t.remove(key(n))
    source = torch.randint(1, 256, (3 * 4096 + 11,), dtype=torch.uint8, device="cuda")
    produced = source * 3 + 1  # queued on the current stream: the tier must wait for it
    t.put(key(100), DeviceBlob(produced), b"m")
    assert len(t.extents(key(100))) > 1
    assert t.get(key(100)) == produced.cpu().numpy().tobytes()
    on_device = t.get(key(100), device="cuda")
    assert isinstance(on_device, DeviceBlob) and on_device.device.type == "cuda"
    assert torch.equal(on_device.tensor, produced)
    assert on_device.head == produced.cpu().numpy().tobytes()[:len(on_device.head)] and on_device.head


@pytest.mark.gpu
@pytest.mark.parametrize("size", [0, 1, 4095, STAGING_CHUNK_BYTES, 2 * STAGING_CHUNK_BYTES + 3 * 4096 + 7])
def test_hbm_round_trip_from_bytes(size):
    t = HBMTier(64 << 20)
    blob = payload(size, size)
    t.put(key(1), blob, b"m")
    assert t.get(key(1)) == blob and t.get_meta(key(1)) == b"m" and t.bytes_used == size
    stored = t.get(key(1), device="cuda")
    assert isinstance(stored, DeviceBlob) and stored.device.type == "cuda" and len(stored) == size
    assert t.get(key(1), device="cuda").tensor.data_ptr() == stored.tensor.data_ptr()  # the stored blob, no copy
    assert stored.tensor.cpu().numpy().tobytes() == blob and stored.head == blob[:len(stored.head)]
    t.close()


@pytest.mark.gpu
def test_hbm_keeps_a_device_blob_on_its_device_and_copies_others():
    t = HBMTier(64 << 20, device="cuda:0")
    base = torch.randint(1, 256, (STAGING_CHUNK_BYTES + 99,), dtype=torch.uint8)
    t.put(key(1), DeviceBlob(base))  # a CPU tensor: uploaded
    t.put(key(2), DeviceBlob(base.pin_memory()))
    produced = base.cuda() * 5 + 2
    t.put(key(3), DeviceBlob(produced))  # on this device: kept
    assert t.get(key(3), device="cuda:0").tensor.data_ptr() == produced.data_ptr()
    assert torch.equal(t.get(key(1), device="cuda").tensor.cpu(), base)
    assert torch.equal(t.get(key(2), device="cuda").tensor.cpu(), base)
    assert t.bytes_used == 3 * base.numel()
    with pytest.raises(CapacityError):
        t.put(key(5), b"x" * ((64 << 20) + 1))
    t.close()


@pytest.mark.gpu
def test_hbm_tier_rejects_a_missing_device():
    with pytest.raises(BackendUnavailableError):
        HBMTier(1 << 20, device=f"cuda:{torch.cuda.device_count()}")


@pytest.mark.gpu
def test_transfers_between_host_and_hbm_tiers_as_device_blobs(pinned_host):
    host, hbm = pinned_host, HBMTier(1 << 20)
    blob = payload(7, 5 * 4096 + 3)
    host.put(key(7), blob, b"meta")
    # promote: pinned pool -> device by DMA, and the tier keeps that tensor
    promoted = host.get(key(7), device=hbm.device)
    hbm.put(key(7), promoted, host.get_meta(key(7)))
    assert hbm.get(key(7), device=hbm.device).tensor.data_ptr() == promoted.tensor.data_ptr()
    assert hbm.get(key(7)) == blob and hbm.get_meta(key(7)) == b"meta"
    # demote: device -> pinned pool on the host tier's stream
    host.remove(key(7))
    host.put(key(7), hbm.get(key(7), device=hbm.device), hbm.get_meta(key(7)))
    assert host.get(key(7)) == blob and host.get_meta(key(7)) == b"meta"
    hbm.close()
