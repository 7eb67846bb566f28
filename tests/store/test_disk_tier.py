"""Tests for flexcache.store.disk: the crash-safe, checksummed DiskTier."""

from __future__ import annotations

import errno
import gc
import hashlib
import inspect
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from flexcache.core.types import make_key
from flexcache.errors import ConfigError, DirectoryInUseError, InvalidPlanError, TierUnavailableError
from flexcache.store import disk as disk_module
from flexcache.store.base import Tier
from flexcache.store.disk import DiskTier
from flexcache.store.integrity import ChecksummedTier, frame
from flexcache.store.readonly import read_disk_entries

REPO_ROOT = Path(__file__).resolve().parents[2]
CAPACITY = 1 << 30
DEADLINE_S = 60  # generous: only a hung test ever waits this long


def blob_for(key: str, version: int, max_size: int = 200_000) -> bytes:
    """Deterministic, non-constant content of `key` at `version` (also run by the crash child)."""
    import hashlib as _hashlib

    seed = _hashlib.sha256(f"{key}/{version}".encode()).digest()
    size = 1 + int.from_bytes(seed[:4], "little") % max_size
    return (seed * (size // len(seed) + 1))[:size]


def key_for(i: int, tenant: str = "t") -> str:
    return make_key(tenant, f"{i:016x}")


def entry_path(directory: Path, key: str) -> Path:
    tenant, digest = key.rsplit(".", 1)
    return directory / "data" / tenant / f"{digest}.fxc"


def quarantined(directory: Path, key: str) -> list[Path]:
    return sorted((directory / "quarantine").glob(f"{key}.*"))


def temp_files(directory: Path) -> list[Path]:
    return sorted((directory / "data").rglob("*.tmp"))


def files_on_disk(directory: Path) -> dict[str, int]:
    """``{key: blob length}`` read straight from the committed files' headers."""
    found = {}
    for path in (directory / "data").glob("*/*.fxc"):
        head = path.read_bytes()[:disk_module.HEADER_SIZE]
        blob_len = struct.unpack_from("<4sHHIQ", head)[4]
        found[f"{path.parent.name}.{path.name[:-4]}"] = blob_len
    return found


@pytest.fixture
def tier(tmp_path) -> DiskTier:
    tier = DiskTier(tmp_path, CAPACITY)
    yield tier
    tier.close()


@pytest.fixture
def checked(tmp_path) -> ChecksummedTier:
    """The disk tier as `build_tier` makes it: behind the integrity layer."""
    tier = ChecksummedTier(DiskTier(tmp_path, CAPACITY))
    yield tier
    tier.close()


# -- the basic contract ---------------------------------------------------------------


def test_flags_and_layout(tmp_path):
    t = DiskTier(tmp_path / "new" / "dir", 1234)
    assert isinstance(t, Tier)
    assert (t.name, t.persistent, t.shared, t.device_resident) == ("disk", True, False, False)
    assert t.capacity_bytes == 1234
    assert (tmp_path / "new" / "dir" / "data").is_dir()
    assert (tmp_path / "new" / "dir" / "quarantine").is_dir()
    assert t.bytes_used == 0 and list(t.keys()) == [] and list(t.scan()) == []


def test_round_trip_blob_and_meta(tier, tmp_path):
    key = key_for(1)
    blob = blob_for(key, 0)
    tier.put(key, blob, meta=b'{"steps": 20}')
    got = tier.get(key)
    assert got == blob and type(got) is bytes
    assert tier.get_meta(key) == b'{"steps": 20}'
    assert tier.bytes_used == len(blob)
    assert entry_path(tmp_path, key).is_file()
    assert temp_files(tmp_path) == []


def test_put_accepts_bytes_like_and_stores_a_copy(tier):
    source = bytearray(b"abcdef")
    tier.put(key_for(1), source)
    source[0] = ord("z")
    assert tier.get(key_for(1)) == b"abcdef"
    tier.put(key_for(2), memoryview(b"0123456789")[2:7], meta=bytearray(b"m"))
    assert tier.get(key_for(2)) == b"23456"
    assert tier.get_meta(key_for(2)) == b"m"
    assert tier.bytes_used == 11


def test_empty_blob_and_empty_meta_are_entries(tier):
    tier.put(key_for(1), b"")
    assert tier.contains(key_for(1))
    assert tier.get(key_for(1)) == b""
    assert tier.get_meta(key_for(1)) == b""
    assert tier.stats().get_misses == 0


@pytest.mark.parametrize(("first", "second"), [(10, 4), (4, 10), (7, 7), (5, 0), (0, 6)])
def test_replacing_a_key_updates_bytes_used_exactly(tier, first, second):
    tier.put(key_for(9), b"o" * 3)
    tier.put(key_for(1), b"a" * first, meta=b"first")
    assert tier.bytes_used == 3 + first
    tier.put(key_for(1), b"b" * second, meta=b"second")
    assert tier.bytes_used == 3 + second
    assert tier.get(key_for(1)) == b"b" * second
    assert tier.get_meta(key_for(1)) == b"second"
    assert sorted(tier.keys()) == sorted([key_for(1), key_for(9)])
    assert tier.remove(key_for(1)) is True
    assert tier.bytes_used == 3


def test_remove_keys_contains(tier, tmp_path):
    a, b = key_for(1), key_for(2, tenant="other")
    tier.put(a, b"12345")
    tier.put(b, b"678")
    assert tier.contains(a) and tier.contains(b) and not tier.contains(key_for(3))
    assert sorted(tier.keys()) == sorted([a, b])
    assert tier.remove(a) is True
    assert tier.remove(a) is False
    assert not entry_path(tmp_path, a).exists()
    assert tier.get(a) is None and tier.get_meta(a) is None and not tier.contains(a)
    assert list(tier.keys()) == [b]
    assert tier.bytes_used == 3


def test_keys_is_a_snapshot(tier):
    tier.put(key_for(1), b"1")
    tier.put(key_for(2), b"2")
    keys = tier.keys()
    tier.remove(key_for(1))
    tier.put(key_for(3), b"3")
    assert sorted(keys) == [key_for(1), key_for(2)]


def test_scan_returns_every_committed_entry_with_its_meta(tier):
    expected = {}
    for i in range(12):
        key = key_for(i, tenant=f"tenant{i % 3}")
        tier.put(key, blob_for(key, 0, 500), meta=f"meta-{i}".encode())
        expected[key] = f"meta-{i}".encode()
    tier.put(key_for(0, "tenant0"), b"x", meta=b"replaced")
    expected[key_for(0, "tenant0")] = b"replaced"
    tier.remove(key_for(4, "tenant1"))
    del expected[key_for(4, "tenant1")]
    assert dict(tier.scan()) == expected
    assert len(list(tier.scan())) == len(expected)


def test_stats_counts(tier):
    a, b = key_for(1), key_for(2)
    tier.put(a, b"1234")
    tier.put(b, b"56")
    tier.put(a, b"7")
    tier.get(a)
    tier.get(key_for(3))
    tier.get(b)
    tier.remove(b)
    tier.remove(b)
    stats = tier.stats()
    assert (stats.name, stats.entries, stats.bytes_used, stats.capacity_bytes) == ("disk", 1, 1, CAPACITY)
    assert (stats.puts, stats.gets, stats.get_misses, stats.removes, stats.corrupt, stats.errors) == (3, 3, 1, 1, 0, 0)
    stats.puts = 999
    assert tier.stats().puts == 3


def test_capacity_is_reported_not_enforced(tmp_path):
    t = DiskTier(tmp_path, 100)
    assert t.fits(100) and not t.fits(101)
    t.put(key_for(1), b"x" * 150)
    assert t.get(key_for(1)) == b"x" * 150
    assert t.bytes_used == 150 and not t.fits(0)


@pytest.mark.parametrize("bad", ["../etc.00000000", "a", "t.xyz12345", "t/x.00000000", "t.0000"])
def test_malformed_keys_never_reach_the_filesystem(tier, tmp_path, bad):
    with pytest.raises(InvalidPlanError):
        tier.put(bad, b"x")
    assert tier.get(bad) is None and tier.get_meta(bad) is None
    assert tier.contains(bad) is False and tier.remove(bad) is False
    assert list((tmp_path / "data").rglob("*")) == []


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True, "1GiB"])
def test_bad_capacity_is_a_config_error(tmp_path, capacity):
    with pytest.raises(ConfigError):
        DiskTier(tmp_path, capacity)


def test_file_format(tier, tmp_path):
    key = key_for(7)
    tier.put(key, b"BLOB-BYTES", meta=b"META")
    raw = entry_path(tmp_path, key).read_bytes()
    magic, version, key_len, meta_len, blob_len = struct.unpack_from("<4sHHIQ", raw)
    assert (magic, version, key_len, meta_len, blob_len) == (b"FXDK", 2, len(key), 4, 10)
    assert raw[20:] == key.encode() + b"META" + b"BLOB-BYTES"


# -- restart ----------------------------------------------------------------------------


def test_restart_sees_every_committed_entry(tmp_path):
    first = DiskTier(tmp_path, CAPACITY)
    expected = {}
    for i in range(20):
        key = key_for(i, tenant=f"tn{i % 4}")
        first.put(key, blob_for(key, 0), meta=f"m{i}".encode())
        expected[key] = (blob_for(key, 0), f"m{i}".encode())
    for i in (3, 8):
        key = key_for(i, tenant=f"tn{i % 4}")
        first.put(key, blob_for(key, 1), meta=b"v1")
        expected[key] = (blob_for(key, 1), b"v1")
    first.remove(key_for(5, "tn1"))
    del expected[key_for(5, "tn1")]
    tenant_dir = tmp_path / "data" / "tn0"
    strays = [
        tenant_dir / f".{0:016x}.4242.abcdef.tmp",  # a complete but uncommitted write
        tenant_dir / f".{99:016x}.4242.000000.tmp",  # a half-written one
        tmp_path / "data" / ".probe.4242.0000.tmp",
    ]
    strays[0].write_bytes(entry_path(tmp_path, key_for(0, "tn0")).read_bytes())
    strays[1].write_bytes(b"FXDK\x01\x00 half")
    strays[2].write_bytes(b"probe")
    first.close()  # one owner per directory: the restart comes after

    second = DiskTier(tmp_path, CAPACITY)
    assert not any(p.exists() for p in strays)
    assert temp_files(tmp_path) == []
    assert sorted(second.keys()) == sorted(expected)
    assert second.bytes_used == first.bytes_used == sum(len(b) for b, _ in expected.values())
    assert dict(second.scan()) == {k: m for k, (_, m) in expected.items()}
    for key, (blob, meta) in expected.items():
        assert second.get(key) == blob
        assert second.get_meta(key) == meta
    assert second.stats().corrupt == 0
    assert list((tmp_path / "quarantine").iterdir()) == []


def test_restart_ignores_files_that_are_not_entries(tmp_path):
    first = DiskTier(tmp_path, CAPACITY)
    first.put(key_for(1), b"abc")
    (tmp_path / "data" / "t" / "notes.txt").write_text("keep me")
    (tmp_path / "data" / "not a tenant").mkdir()
    first.close()
    second = DiskTier(tmp_path, CAPACITY)
    assert list(second.keys()) == [key_for(1)]
    assert (tmp_path / "data" / "t" / "notes.txt").read_text() == "keep me"


# -- crash safety -------------------------------------------------------------------------

_CHILD_MAIN = '''
import os, sys, time
from flexcache.store import disk
from flexcache.core.types import make_key

directory, mode, base = sys.argv[1], sys.argv[2], int(sys.argv[3])
tier = disk.DiskTier(directory, 1 << 40)
keys = [make_key("crash", f"{i:016x}") for i in range(40)]

def committed(key, version):
    print(key, version, flush=True)

def pause_forever(where):
    print("PAUSED", where, flush=True)
    while True:
        time.sleep(60)

if mode == "loop":
    # overwrite 40 keys again and again with large blobs, until killed
    for i in range(10**9):
        key, version = keys[i % 40], base + i // 40
        tier.put(key, blob_for(key, version, 2_000_000), str(version).encode())
        committed(key, version)
else:
    for i in range(10):
        tier.put(keys[i], blob_for(keys[i], 0, 2_000_000), b"0")
        committed(keys[i], 0)
    real_write, real_replace = os.write, os.replace
    if mode == "mid-write":
        def write(fd, data):
            real_write(fd, bytes(data)[: len(data) // 2])
            pause_forever("mid-write")
        os.write = write
    elif mode == "before-rename":
        def replace(src, dst):
            pause_forever("before-rename")
        os.replace = replace
    elif mode == "after-rename":
        def replace(src, dst):
            real_replace(src, dst)
            pause_forever("after-rename")
        os.replace = replace
    tier.put(keys[3], blob_for(keys[3], 1, 2_000_000), b"1")
    committed(keys[3], 1)
'''


def _child_script() -> str:
    return textwrap.dedent(inspect.getsource(blob_for)) + _CHILD_MAIN


def _run_and_kill(
    directory: Path, mode: str, committed_before_kill: int, base_version: int = 0,
) -> tuple[dict[str, int], list[str]]:
    """Start the writer, SIGKILL it after `committed_before_kill` reports (or at its pause).

    Returns ``{key: last version reported committed}`` and the pause points reached.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", _child_script(), str(directory), mode, str(base_version)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )
    watchdog = threading.Timer(30, proc.kill)  # a hung child must not hang the suite
    watchdog.start()
    committed: dict[str, int] = {}
    pauses: list[str] = []
    reports = 0
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early ({proc.wait()}): {proc.stderr.read()}")
            if line.startswith("PAUSED"):
                pauses.append(line.split()[1])
                break
            key, version = line.split()
            committed[key] = int(version)
            reports += 1
            if mode == "loop" and reports >= committed_before_kill:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # lines printed before the kill landed are commitments too
        for line in proc.stdout.read().splitlines():
            if line and not line.startswith("PAUSED"):
                key, version = line.split()
                committed[key] = max(committed.get(key, -1), int(version))
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return committed, pauses


def _check_recovered(directory: Path, committed: dict[str, int]) -> DiskTier:
    tier = DiskTier(directory, CAPACITY)
    assert temp_files(directory) == []
    assert list((directory / "quarantine").iterdir()) == [], "a crash must never leave a damaged committed file"
    for key, version in committed.items():
        meta = tier.get_meta(key)
        assert meta is not None, f"{key} was reported committed but is gone"
        served = int(meta)
        # the child may have committed one more version before it could report it
        assert served in (version, version + 1)
        assert tier.get(key) == blob_for(key, served, 2_000_000)
    total = 0
    for key in tier.keys():  # entries never reported are intact too (or absent)
        blob = tier.get(key)
        assert blob == blob_for(key, int(tier.get_meta(key)), 2_000_000)
        total += len(blob)
    assert tier.bytes_used == total
    assert tier.stats().corrupt == 0
    # the tier keeps working
    tier.put(key_for(1), b"after the crash", meta=b"x")
    assert tier.get(key_for(1)) == b"after the crash"
    any_key = next(iter(committed))
    tier.put(any_key, b"replaced after the crash")
    assert tier.get(any_key) == b"replaced after the crash"
    return tier


@pytest.mark.parametrize("reports", [1, 25, 70])  # 70: while overwriting the first 40 keys
def test_crash_at_a_random_moment_keeps_every_committed_entry(tmp_path, reports):
    directory = tmp_path / "tier"
    committed, _ = _run_and_kill(directory, "loop", reports)
    assert len(committed) >= 1
    _check_recovered(directory, committed)


def test_repeated_crashes_on_the_same_directory(tmp_path):
    directory = tmp_path / "tier"
    first, _ = _run_and_kill(directory, "loop", 50)
    DiskTier(directory, CAPACITY).close()  # recover once in between
    second, _ = _run_and_kill(directory, "loop", 12, base_version=100)
    tier = _check_recovered(directory, second)
    for key, version in first.items():
        if key in second:
            continue  # checked (and one of them overwritten) by _check_recovered
        served = int(tier.get_meta(key))
        # untouched by the second run, or overwritten by its one unreported put
        assert served in (version, version + 1) or served >= 100
        assert tier.get(key) == blob_for(key, served, 2_000_000)


@pytest.mark.parametrize(
    ("mode", "new_version_served", "temp_left_by_crash"),
    [("mid-write", False, True), ("before-rename", False, True), ("after-rename", True, False)],
)
def test_crash_at_each_step_of_a_replacing_put(tmp_path, mode, new_version_served, temp_left_by_crash):
    directory = tmp_path / "tier"
    committed, pauses = _run_and_kill(directory, mode, 0)
    assert pauses == [mode]
    assert len(committed) == 10 and set(committed.values()) == {0}
    assert bool(temp_files(directory)) is temp_left_by_crash
    tier = _check_recovered(directory, committed)
    replaced = make_key("crash", f"{3:016x}")
    expected_version = 1 if new_version_served else 0
    assert tier.get_meta(replaced) == str(expected_version).encode()
    assert tier.get(replaced) == blob_for(replaced, expected_version, 2_000_000)


# -- corruption -------------------------------------------------------------------------


def _flip(offset_of):
    def damage(path: Path) -> None:
        raw = bytearray(path.read_bytes())
        raw[offset_of(len(raw))] ^= 0x5A
        path.write_bytes(bytes(raw))
    return damage


def _truncate_to(size_of):
    def damage(path: Path) -> None:
        raw = path.read_bytes()
        path.write_bytes(raw[: size_of(len(raw))])
    return damage


def _append(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"garbage")


KEY_LEN = len(key_for(1))
HEADER = disk_module.HEADER_SIZE
DAMAGE = {
    "blob-byte": _flip(lambda n: n - 5),
    "first-blob-byte": _flip(lambda n: n - 1000),
    "meta-byte": _flip(lambda n: HEADER + KEY_LEN + 1),
    "header-magic": _flip(lambda n: 0),
    "header-length": _flip(lambda n: 16),
    "key-last-byte": _flip(lambda n: HEADER + KEY_LEN - 1),
    "key-byte": _flip(lambda n: HEADER + 3),
    "truncate-blob": _truncate_to(lambda n: n - 7),
    "truncate-header": _truncate_to(lambda n: 10),
    "truncate-all": _truncate_to(lambda n: 0),
    "append": _append,
}


# Metadata damage is found where metadata is read (get_meta, the restart scan: next test), not on every hit.
@pytest.mark.parametrize("damage", sorted(set(DAMAGE) - {"meta-byte"}))
def test_damaged_file_is_a_quarantined_miss(checked, tmp_path, damage):
    tier = checked
    key, other = key_for(1), key_for(2)
    tier.put(key, blob_for(key, 0, 5000) + b"x" * 1000, meta=b"meta!")
    tier.put(other, b"untouched", meta=b"o")
    path = entry_path(tmp_path, key)
    DAMAGE[damage](path)
    damaged_bytes = path.read_bytes()

    assert tier.get(key) is None
    stats = tier.stats()
    assert (stats.corrupt, stats.gets, stats.entries) == (1, 1, 1)  # the tier or its frame found it
    assert not path.exists()
    [moved] = quarantined(tmp_path, key)
    assert moved.read_bytes() == damaged_bytes  # kept for inspection, not rewritten
    assert list(tier.keys()) == [other] and not tier.contains(key)
    assert tier.bytes_used == len(frame(b"untouched"))
    assert tier.get(key) is None and tier.stats().corrupt == 1  # a miss now, not a second corruption
    assert tier.get(other) == b"untouched"

    tier.put(key, b"fresh", meta=b"new")
    assert tier.get(key) == b"fresh" and tier.get_meta(key) == b"new"
    assert tier.bytes_used == len(frame(b"untouched")) + len(frame(b"fresh"))


@pytest.mark.parametrize("damage", ["header-length", "truncate-blob", "append", "key-byte"])
def test_the_bare_tier_refuses_structural_damage_itself(tier, tmp_path, damage):
    key = key_for(1)
    tier.put(key, b"blob" * 300, meta=b"m")
    DAMAGE[damage](entry_path(tmp_path, key))
    assert tier.get(key) is None
    assert (tier.stats().corrupt, tier.stats().get_misses) == (1, 1)
    assert len(quarantined(tmp_path, key)) == 1 and not tier.contains(key)


@pytest.mark.parametrize("damage", ["meta-byte", "header-length", "truncate-header", "append"])
def test_get_meta_detects_damage_in_what_it_reads(checked, tmp_path, damage):
    tier = checked
    key = key_for(1)
    tier.put(key, b"blob" * 300, meta=b"meta!")
    DAMAGE[damage](entry_path(tmp_path, key))
    assert tier.get_meta(key) is None
    assert tier.stats().corrupt == 1
    assert len(quarantined(tmp_path, key)) == 1 and not tier.contains(key)
    assert list(tier.scan()) == []


def test_get_meta_reads_only_header_and_meta(checked, tmp_path):
    tier = checked
    key = key_for(1)
    tier.put(key, b"blob" * 300, meta=b"meta!")
    DAMAGE["blob-byte"](entry_path(tmp_path, key))
    assert tier.get_meta(key) == b"meta!"  # the blob is not read, so its damage is not seen...
    assert tier.get(key) is None  # ...until the blob is
    assert tier.stats().corrupt == 1


def test_damage_found_at_start_up_is_quarantined(tmp_path):
    first = DiskTier(tmp_path, CAPACITY)
    good, bad_header, truncated, appended = (key_for(i) for i in range(4))
    for key in (good, bad_header, truncated, appended):
        first.put(key, blob_for(key, 0, 3000), meta=b"m")
    DAMAGE["header-length"](entry_path(tmp_path, bad_header))
    DAMAGE["truncate-blob"](entry_path(tmp_path, truncated))
    DAMAGE["append"](entry_path(tmp_path, appended))
    first.close()

    second = DiskTier(tmp_path, CAPACITY)
    assert list(second.keys()) == [good]
    assert second.bytes_used == len(blob_for(good, 0, 3000))
    assert second.stats().corrupt == 3
    for key in (bad_header, truncated, appended):
        assert len(quarantined(tmp_path, key)) == 1
        assert not entry_path(tmp_path, key).exists()
        assert second.get(key) is None
    assert second.get(good) == blob_for(good, 0, 3000)


def test_quarantine_moves_the_file_aside(tier, tmp_path):
    key = key_for(1)
    tier.put(key, b"suspect")
    tier.quarantine(key)
    assert not tier.contains(key) and tier.bytes_used == 0
    assert [p.read_bytes()[-7:] for p in quarantined(tmp_path, key)] == [b"suspect"]
    assert tier.stats().corrupt == 0  # whoever found the damage counts it
    tier.quarantine(key)  # absent: nothing to do
    tier.put(key, b"again")
    tier.quarantine(key)
    assert len(quarantined(tmp_path, key)) == 2  # earlier evidence is not overwritten


# -- one owner per directory ----------------------------------------------------------------


def test_a_second_tier_on_the_same_directory_is_refused_and_changes_nothing(tier, tmp_path):
    tier.put(key_for(1), b"owned")
    stray = tmp_path / "data" / "t" / f".{7:016x}.4242.abcdef.tmp"  # what an owner's scan would delete
    stray.write_bytes(b"a write in flight")
    with pytest.raises(DirectoryInUseError) as info:
        DiskTier(tmp_path, CAPACITY)
    message = str(info.value)
    assert str(tmp_path) in message and f"pid {os.getpid()}" in message
    assert "its own store.tiers[disk].path" in message and "redis tier" in message
    assert isinstance(info.value, ConfigError)
    assert stray.exists()  # refused before its start-up scan
    assert tier.get(key_for(1)) == b"owned"  # the owner is undisturbed
    tier.put(key_for(2), b"still writing")
    assert sorted(tier.keys()) == [key_for(1), key_for(2)]


def test_close_gives_the_directory_up(tmp_path):
    first = DiskTier(tmp_path, CAPACITY)
    first.put(key_for(1), b"kept")
    first.close()
    first.close()  # idempotent
    second = DiskTier(tmp_path, CAPACITY)
    assert second.get(key_for(1)) == b"kept"
    with pytest.raises(DirectoryInUseError):
        ChecksummedTier(DiskTier(tmp_path, CAPACITY))
    ChecksummedTier(second).close()  # closing the integrity layer closes the tier
    DiskTier(tmp_path, CAPACITY).close()


def test_a_dropped_tier_gives_the_directory_up(tmp_path):
    DiskTier(tmp_path, CAPACITY).put(key_for(1), b"x")  # never closed, never referenced again
    gc.collect()
    tier = DiskTier(tmp_path, CAPACITY)
    assert tier.get(key_for(1)) == b"x"
    tier.close()


def test_a_tier_that_fails_to_start_holds_no_lock(tmp_path, monkeypatch):
    def failing_scan(self):
        raise TierUnavailableError("listing failed")

    with monkeypatch.context() as patch:
        patch.setattr(DiskTier, "_load", failing_scan)
        with pytest.raises(TierUnavailableError, match="listing failed"):
            DiskTier(tmp_path, CAPACITY)
    DiskTier(tmp_path, CAPACITY).close()


def test_the_read_only_reader_works_while_a_tier_owns_the_directory(tier, tmp_path):
    tier.put(key_for(1), b"blob", meta=b"meta")
    [entry] = read_disk_entries(str(tmp_path))
    assert (entry.key, entry.meta, entry.blob, entry.problem) == (key_for(1), b"meta", b"blob", None)


_HOLDER = """
import sys
from flexcache.errors import DirectoryInUseError
from flexcache.store.disk import DiskTier
try:
    tier = DiskTier(sys.argv[1], 1 << 30)
except DirectoryInUseError as exc:
    print("REFUSED", exc, flush=True)
    sys.exit(3)
print("HOLDING", flush=True)
sys.stdin.read()  # until the test kills it or closes stdin
"""


def _start_holder(directory: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)


def test_another_process_is_refused_and_a_killed_holder_never_blocks(tmp_path):
    holder = _start_holder(tmp_path)
    watchdog = threading.Timer(DEADLINE_S, holder.kill)  # a hung child must not hang the suite
    watchdog.start()
    try:
        assert holder.stdout.readline().strip() == "HOLDING", holder.stderr.read()
        with pytest.raises(DirectoryInUseError, match=f"pid {holder.pid}"):
            DiskTier(tmp_path, CAPACITY)
        os.kill(holder.pid, signal.SIGKILL)
        assert holder.wait() == -signal.SIGKILL
    finally:
        watchdog.cancel()
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        for stream in (holder.stdin, holder.stdout, holder.stderr):
            stream.close()
    assert (tmp_path / "lock").exists()  # the killed holder's lock file is left behind...
    tier = DiskTier(tmp_path, CAPACITY)  # ...and does not block: the kernel released its flock
    tier.put(key_for(1), b"after the kill")

    refused = _start_holder(tmp_path)  # and now this process is the owner another one is refused by
    out, err = refused.communicate(timeout=DEADLINE_S)
    assert refused.returncode == 3, err
    assert out.startswith("REFUSED") and f"pid {os.getpid()}" in out and str(tmp_path) in out
    assert tier.get(key_for(1)) == b"after the kill"
    tier.close()


# -- errors -------------------------------------------------------------------------------


def test_directory_under_a_regular_file_is_unavailable(tmp_path):
    (tmp_path / "plain").write_text("x")
    target = tmp_path / "plain" / "tier"
    with pytest.raises(TierUnavailableError) as info:
        DiskTier(target, CAPACITY)
    assert str(target) in str(info.value) and "Not a directory" in str(info.value)


def test_directory_that_is_a_regular_file_is_unavailable(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(TierUnavailableError, match="plain"):
        DiskTier(tmp_path / "plain", CAPACITY)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o500")
def test_read_only_directory_is_unavailable(tmp_path):
    target = tmp_path / "ro"
    target.mkdir(mode=0o500)
    try:
        with pytest.raises(TierUnavailableError, match="Permission denied"):
            DiskTier(target, CAPACITY)
    finally:
        target.chmod(0o700)


def test_unwritable_existing_directory_is_unavailable(tmp_path, monkeypatch):
    # The directory exists and can be listed but writes fail (a read-only mount):
    # only writing a file can tell, and root bypasses chmod, so fake the mount.
    DiskTier(tmp_path, CAPACITY).put(key_for(1), b"old")
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(tmp_path)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    with pytest.raises(TierUnavailableError) as info:
        DiskTier(tmp_path, CAPACITY)
    assert str(tmp_path) in str(info.value) and "Read-only file system" in str(info.value)


def _failing_write_after_half(exc_errno):
    real_write = os.write
    calls = []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) == 1:  # a short write, then the disk fills up
            return real_write(fd, bytes(data)[: max(1, len(data) // 2)])
        raise OSError(exc_errno, os.strerror(exc_errno))
    return write


def _fail_with(exc_errno, only_if=lambda *args: True, real=None):
    def fail(*args, **kwargs):
        if only_if(*args):
            raise OSError(exc_errno, os.strerror(exc_errno))
        return real(*args, **kwargs)
    return fail


RUNTIME_FAILURES = {
    "write-ENOSPC": lambda: ("write", _failing_write_after_half(errno.ENOSPC), "No space left"),
    "write-EIO": lambda: ("write", _fail_with(errno.EIO), "Input/output error"),
    "open-EACCES": lambda: (
        "open", _fail_with(errno.EACCES, lambda p, *a: str(p).endswith(".tmp"), os.open), "Permission denied",
    ),
    "fsync-EIO": lambda: ("fsync", _fail_with(errno.EIO), "Input/output error"),
    "replace-EACCES": lambda: ("replace", _fail_with(errno.EACCES), "Permission denied"),
}


@pytest.mark.parametrize("failure", sorted(RUNTIME_FAILURES))
@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "new-key"])
def test_failing_write_keeps_the_previous_entry(tier, tmp_path, monkeypatch, failure, existing):
    key, other = key_for(1), key_for(2)
    tier.put(other, b"bystander")
    if existing:
        tier.put(key, b"committed value", meta=b"old")
    before = tier.stats()
    attr, fake, reason = RUNTIME_FAILURES[failure]()
    with monkeypatch.context() as patch:
        patch.setattr(os, attr, fake)
        with pytest.raises(TierUnavailableError) as info:
            tier.put(key, blob_for(key, 1, 100_000) + b"!" * 100_000, meta=b"new")
    assert reason in str(info.value) and key in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert temp_files(tmp_path) == []
    stats = tier.stats()
    assert stats.errors == before.errors + 1 and stats.puts == before.puts
    if existing:
        assert tier.get(key) == b"committed value" and tier.get_meta(key) == b"old"
        assert tier.bytes_used == len(b"bystander") + len(b"committed value")
    else:
        assert tier.get(key) is None and not tier.contains(key)
        assert not entry_path(tmp_path, key).exists()
        assert tier.bytes_used == len(b"bystander")
    # a restart agrees, and the tier works again once the disk does
    tier.close()
    restarted = DiskTier(tmp_path, CAPACITY)
    assert restarted.bytes_used == tier.bytes_used
    restarted.put(key, b"later")
    assert restarted.get(key) == b"later"
    restarted.close()


def test_failing_read_is_unavailable_not_corrupt(tier, tmp_path, monkeypatch):
    key = key_for(1)
    tier.put(key, b"value")
    with monkeypatch.context() as patch:
        patch.setattr(os, "read", _fail_with(errno.EIO))
        with pytest.raises(TierUnavailableError, match="Input/output error"):
            tier.get(key)
        with pytest.raises(TierUnavailableError):
            tier.get_meta(key)
    stats = tier.stats()
    assert stats.errors == 2 and stats.corrupt == 0
    assert quarantined(tmp_path, key) == []
    assert tier.get(key) == b"value"


def test_failing_remove_keeps_the_entry(tier, monkeypatch):
    key = key_for(1)
    tier.put(key, b"value")
    with monkeypatch.context() as patch:
        patch.setattr(os, "unlink", _fail_with(errno.EACCES))
        with pytest.raises(TierUnavailableError, match="Permission denied"):
            tier.remove(key)
    assert tier.contains(key) and tier.get(key) == b"value" and tier.bytes_used == 5
    assert tier.stats().errors == 1 and tier.stats().removes == 0
    assert tier.remove(key) is True


def test_file_removed_behind_the_tiers_back_is_a_miss(tier, tmp_path):
    key = key_for(1)
    tier.put(key, b"value")
    entry_path(tmp_path, key).unlink()
    assert tier.get(key) is None  # not FileNotFoundError
    assert not tier.contains(key) and tier.bytes_used == 0
    assert tier.stats().corrupt == 0


# -- concurrency --------------------------------------------------------------------------


def _slowed(real):
    """`real`, then a short sleep: widens the window between a file operation and the index update."""
    def slow(*args, **kwargs):
        result = real(*args, **kwargs)
        time.sleep(random.random() * 0.0005)
        return result
    return slow


def test_concurrent_puts_gets_removes(tmp_path, monkeypatch):
    tier = DiskTier(tmp_path, CAPACITY)
    monkeypatch.setattr(os, "replace", _slowed(os.replace))
    monkeypatch.setattr(os, "unlink", _slowed(os.unlink))
    keys = [key_for(i, tenant=f"c{i % 2}") for i in range(6)]
    written: dict[str, set[bytes]] = {key: set() for key in keys}
    written_lock = threading.Lock()
    failures: list[BaseException] = []
    seen_values = [0]
    start = threading.Barrier(8)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait()
            for n in range(150):
                key = rng.choice(keys)
                op = rng.random()
                if op < 0.4:
                    value = hashlib.sha256(f"{seed}/{n}".encode()).digest() * rng.randint(0, 3000)
                    with written_lock:  # registered before it can be read
                        written[key].add(value)
                    tier.put(key, value, meta=f"{seed}/{n}".encode())
                elif op < 0.85:
                    got = tier.get(key)
                    if got is not None:
                        with written_lock:
                            assert got in written[key], f"get({key}) returned bytes never written"
                            seen_values[0] += 1
                else:
                    tier.remove(key)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    assert seen_values[0] > 0  # the gets did overlap with data
    monkeypatch.undo()

    on_disk = files_on_disk(tmp_path)
    assert set(tier.keys()) == set(on_disk)
    assert tier.bytes_used == sum(on_disk.values())
    for key in tier.keys():
        assert tier.get(key) in written[key]
    assert temp_files(tmp_path) == []
    assert list((tmp_path / "quarantine").iterdir()) == []
    stats = tier.stats()
    assert stats.corrupt == 0 and stats.errors == 0
    tier.close()
    assert DiskTier(tmp_path, CAPACITY).bytes_used == tier.bytes_used


def test_get_racing_put_and_remove_of_one_key(tmp_path):
    """Readers see an old or a new whole blob, or None; never a partial one nor an exception."""
    tier = DiskTier(tmp_path, CAPACITY)
    key = key_for(1)
    values = [bytes([v]) * (50_000 + v) for v in range(4)]
    tier.put(key, values[0])
    stop = threading.Event()
    results: list[bytes | None] = []
    failures: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                results.append(tier.get(key))
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(60):
            tier.put(key, values[round_ % 4])
            if round_ % 5 == 4:
                tier.remove(key)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures
    assert results and all(r is None or r in values for r in results)
    assert any(r is not None for r in results)
    assert tier.stats().corrupt == 0


class _ContendedLock:
    """The tier's lock, saying when a thread has to wait for it (what a correct tier makes the racer do)."""

    def __init__(self, real) -> None:
        self._real = real
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._real.acquire(False):
            return True
        self.contended.set()
        return self._real.acquire(blocking, timeout)

    def release(self) -> None:
        self._real.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _until_either(first: threading.Event, second: threading.Event) -> None:
    """Wait until one of the events is set; fail after `DEADLINE_S`."""
    deadline = time.monotonic() + DEADLINE_S
    while not (first.is_set() or second.is_set()):
        assert time.monotonic() < deadline, "neither event came: the racing thread is stuck"
        first.wait(0.01)


def _racing(tier: DiskTier, racer, started: threading.Event):
    """Run `racer` in a thread once `started` is set; returns (thread, done event, failures)."""
    done, failures = threading.Event(), []

    def run() -> None:
        try:
            assert started.wait(DEADLINE_S), "the first operation never reached its pause"
            racer()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done, failures


def test_index_follows_the_last_rename_of_racing_puts(tmp_path, monkeypatch):
    tier = DiskTier(tmp_path, CAPACITY)
    lock = tier._lock = _ContendedLock(tier._lock)
    key = key_for(1)
    first_renamed = threading.Event()
    real_replace, calls = os.replace, []

    def replace(*args, **kwargs):
        calls.append(args)
        result = real_replace(*args, **kwargs)
        if len(calls) == 1:  # the first put renamed: hold it here, before its index update
            first_renamed.set()
            # A correct tier makes the second put wait for this one (the lock is contended);
            # a broken one lets it finish meanwhile, and its index update is then overwritten.
            _until_either(lock.contended, second_done)
        return result

    monkeypatch.setattr(os, "replace", replace)
    thread, second_done, failures = _racing(tier, lambda: tier.put(key, b"second" * 100), first_renamed)
    tier.put(key, b"first")
    thread.join()
    monkeypatch.undo()
    assert not failures, failures
    assert lock.contended.is_set()  # the second put did have to wait: the race was run, not skipped
    assert tier.get(key) == b"second" * 100
    assert tier.bytes_used == 600 == files_on_disk(tmp_path)[key]
    tier.close()


def test_remove_racing_a_put_never_loses_the_new_entry(tmp_path, monkeypatch):
    tier = DiskTier(tmp_path, CAPACITY)
    key = key_for(1)
    tier.put(key, b"old")
    lock = tier._lock = _ContendedLock(tier._lock)
    removing = threading.Event()
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if str(path).endswith(".fxc") and not removing.is_set():
            removing.set()
            _until_either(lock.contended, put_done)  # a correct tier makes the put wait for the remove
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    thread, put_done, failures = _racing(tier, lambda: tier.put(key, b"new value"), removing)
    assert tier.remove(key) is True
    thread.join()
    monkeypatch.undo()
    assert not failures, failures
    assert lock.contended.is_set()
    assert tier.get(key) == b"new value"
    assert set(tier.keys()) == set(files_on_disk(tmp_path)) == {key}
    assert tier.bytes_used == len(b"new value")
    tier.close()
