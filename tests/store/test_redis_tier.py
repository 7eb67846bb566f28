"""Tests for flexcache.store.redis against real redis-servers (never a mock).

`redis`-marked tests use the server `make test` / .ci/run start
(TEST_REDIS_URL) or, for the recovery and cluster tests, ones they start
themselves. The rest need no server: they point a tier at a port where
nothing (or something silent) listens.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from flexcache.core.types import make_key
from flexcache.errors import ConfigError, InvalidPlanError, TierUnavailableError
from flexcache.store.integrity import ChecksummedTier, frame
from flexcache.store.redis import (
    QUARANTINE_TTL_S,
    CircuitBreaker,
    RedisTier,
    RedisTierStats,
)


def key(n: int, tenant: str = "acme") -> str:
    return make_key(tenant, f"{n:016x}")


@pytest.fixture
def make_tier(redis_url, redis_prefix):
    """Factory for RedisTiers under this test's own prefix; closes them afterwards."""
    tiers = []

    def make(cache_name: str = "c1", **options) -> RedisTier:
        options.setdefault("socket_timeout", 1.0)
        tier = RedisTier(redis_url, 2**30, cache_name=cache_name, prefix=redis_prefix, **options)
        tiers.append(tier)
        return tier

    yield make
    for tier in tiers:
        tier.close()


@pytest.fixture
def raw(redis_url):
    """A plain client for looking at (and damaging) what the tier wrote."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


HANG_GUARD_S = 60  # only turns a hang into a failure; no assertion depends on this machine's speed


def wait_until(condition, what: str, seconds: float = HANG_GUARD_S) -> None:
    """Poll `condition` until it holds; fail with `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} (waited {seconds} s)"
        time.sleep(0.01)


def in_thread_with_hang_guard(fn):
    """`fn()`'s result (or its exception), run on a thread the test gives up on after HANG_GUARD_S."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), f"the call hung (no answer after {HANG_GUARD_S} s)"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


@pytest.fixture
def tcp_connects(monkeypatch):
    """Every TCP connection attempt any redis-py client makes, retries included (a list of ports)."""
    attempts: list[int] = []
    real_connect = redis.connection.Connection._connect

    def connect(self):
        attempts.append(self.port)
        return real_connect(self)

    monkeypatch.setattr(redis.connection.Connection, "_connect", connect)
    return attempts


def spy_on_xread(tier: RedisTier) -> list:
    """The `block` argument of each XREAD the tier sends, in order."""
    blocks: list = []
    real_xread = tier._client.xread

    def xread(*args, **kwargs):
        blocks.append(kwargs.get("block"))
        return real_xread(*args, **kwargs)

    tier._client.xread = xread
    return blocks


# -- configuration (no server) ----------------------------------------------------------


def test_flags_and_lazy_connection():
    tier = RedisTier("redis://127.0.0.1:1/0", 1000)  # nothing listens there; nothing is dialled yet
    assert (tier.name, tier.persistent, tier.shared, tier.device_resident) == ("redis", True, True, False)
    assert tier.capacity_bytes == 1000
    assert tier.available is True
    tier.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "", "127.0.0.1:6379", "redis://host:notaport/0",
                                 "redis://127.0.0.1:6379/0?socket_timeout=soon"])
def test_bad_url_is_a_config_error(url):
    with pytest.raises(ConfigError):
        RedisTier(url, 1000)


def test_other_urls_are_accepted():
    for url in ("rediss://user:secret@example.com:6380/2", "unix:///tmp/redis.sock?db=1"):
        tier = RedisTier(url, 1000)
        assert "secret" not in tier.where
        tier.close()


@pytest.mark.parametrize("options", [
    {"cache_name": "a:b"}, {"cache_name": ""}, {"prefix": "{x}"}, {"breaker_failures": 0},
    {"socket_timeout": 0}, {"breaker_cooldown_s": -1}, {"cluster": True},  # unix:// cannot be a cluster
])
def test_bad_options_are_config_errors(options):
    url = "unix:///tmp/redis.sock" if options.get("cluster") else "redis://127.0.0.1:1/0"
    with pytest.raises(ConfigError):
        RedisTier(url, 1000, **options)


def test_bad_capacity_is_a_config_error():
    with pytest.raises(ConfigError):
        RedisTier("redis://127.0.0.1:1/0", 0)


# -- the Tier contract ------------------------------------------------------------------


@pytest.mark.redis
def test_round_trip(make_tier):
    tier = make_tier()
    assert tier.get(key(1)) is None and tier.get_meta(key(1)) is None and tier.bytes_used == 0
    tier.put(key(1), bytearray(b"hello blob"), memoryview(b"meta-1"))
    got = tier.get(key(1))
    assert got == b"hello blob" and type(got) is bytes
    assert tier.get_meta(key(1)) == b"meta-1"
    tier.put(key(2), b"xy")  # metadata defaults to empty, which is still metadata
    assert tier.get_meta(key(2)) == b""
    assert tier.bytes_used == 12
    stats = tier.stats()
    assert isinstance(stats, RedisTierStats)
    assert (stats.entries, stats.bytes_used, stats.puts, stats.gets, stats.get_misses) == (2, 12, 2, 2, 1)
    assert (stats.corrupt, stats.errors, stats.breaker_state, stats.available) == (0, 0, "closed", True)


@pytest.mark.redis
def test_invalid_key_is_rejected_before_any_call(make_tier):
    with pytest.raises(InvalidPlanError):
        make_tier().put("no-digest", b"x")


@pytest.mark.redis
def test_replace_updates_bytes_used(make_tier):
    tier = make_tier()
    tier.put(key(1), b"0123456789", b"old")
    tier.put(key(2), b"abc")
    tier.put(key(1), b"xyz", b"new")
    assert tier.get(key(1)) == b"xyz" and tier.get_meta(key(1)) == b"new"
    assert tier.bytes_used == 6
    assert tier.stats().entries == 2


@pytest.mark.redis
def test_remove(make_tier):
    tier = make_tier()
    tier.put(key(1), b"12345", b"m")
    tier.put(key(2), b"678")
    assert tier.remove(key(1)) is True
    assert tier.remove(key(1)) is False
    assert tier.get(key(1)) is None and tier.get_meta(key(1)) is None and not tier.contains(key(1))
    assert tier.bytes_used == 3
    assert tier.stats().removes == 1


@pytest.mark.redis
def test_keys_contains_scan(make_tier):
    tier = make_tier()
    wanted = {key(n, tenant): f"meta-{tenant}-{n}".encode() for tenant in ("acme", "zeta") for n in range(150)}
    for k, meta in wanted.items():  # 300 entries: scan reads metadata in more than one batch
        tier.put(k, b"b" * 3, meta)
    assert sorted(tier.keys()) == sorted(wanted)
    assert dict(tier.scan()) == wanted
    assert tier.contains(key(7, "zeta")) and not tier.contains(key(7, "other"))
    assert tier.bytes_used == 900


# -- sharing and layout -----------------------------------------------------------------


@pytest.mark.redis
def test_two_instances_share_one_cache_and_other_caches_see_nothing(make_tier):
    first, second, other = make_tier("shared"), make_tier("shared"), make_tier("other")
    first.put(key(1), b"from first", b"m1")
    assert second.get(key(1)) == b"from first" and second.get_meta(key(1)) == b"m1"
    second.put(key(2), b"from second")
    assert sorted(first.keys()) == [key(1), key(2)]
    assert first.bytes_used == second.bytes_used == 21
    assert first.remove(key(2)) is True
    assert second.get(key(2)) is None and not second.contains(key(2)) and second.bytes_used == 10
    assert list(other.keys()) == [] and other.get(key(1)) is None and other.bytes_used == 0
    assert list(other.scan()) == []


@pytest.mark.redis
def test_layout(make_tier, raw, redis_prefix):
    tier = make_tier("layout")
    tier.put(key(0xABC, "tenant7"), b"blob!", b"meta!")
    tag = f"{{{redis_prefix}:layout}}"
    digest = f"{0xABC:016x}"
    names = {name.decode() for name in raw.scan_iter(match=f"{tag}*")}
    assert names == {f"{tag}:tenant7:{digest}:blob", f"{tag}:tenant7:{digest}:meta", f"{tag}:sizes", f"{tag}:bytes"}
    assert raw.get(f"{tag}:tenant7:{digest}:blob") == b"blob!"
    assert raw.get(f"{tag}:tenant7:{digest}:meta") == b"meta!"
    assert raw.hgetall(f"{tag}:sizes") == {key(0xABC, "tenant7").encode(): b"5"}
    tier.publish({"type": "insert"})
    names.add(f"{tag}:events")
    # One hash tag: a cluster keeps the whole cache, transactions included, in one slot.
    from redis.crc import key_slot

    assert len({key_slot(name.encode()) for name in names}) == 1


# -- malformed values -------------------------------------------------------------------


def _blob_name(prefix: str, cache: str, k: str) -> str:
    tenant, digest = k.rsplit(".", 1)
    return f"{{{prefix}:{cache}}}:{tenant}:{digest}:blob"


@pytest.mark.redis
def test_wrong_type_under_blob_key_is_quarantined_miss(make_tier, raw, redis_prefix):
    tier = make_tier("bad")
    tier.put(key(1), b"good", b"m")
    tier.put(key(2), b"other")
    blob_name = _blob_name(redis_prefix, "bad", key(1))
    raw.delete(blob_name)
    raw.rpush(blob_name, b"not a string")
    assert tier.get(key(1)) is None
    assert tier.stats().corrupt == 1
    assert not tier.contains(key(1)) and tier.get_meta(key(1)) is None
    assert tier.bytes_used == 5 and sorted(tier.keys()) == [key(2)]
    quarantined = f"{{{redis_prefix}:bad}}:quarantine:acme:{1:016x}:blob"
    assert raw.exists(blob_name) == 0 and raw.type(quarantined) == b"list"
    assert 0 < raw.ttl(quarantined) <= QUARANTINE_TTL_S
    assert tier.get(key(2)) == b"other"


@pytest.mark.redis
def test_blob_of_wrong_length_is_corrupt(make_tier, raw, redis_prefix):
    tier = make_tier("bad")
    tier.put(key(1), b"0123456789")
    raw.set(_blob_name(redis_prefix, "bad", key(1)), b"short")
    assert tier.get(key(1)) is None
    assert tier.stats().corrupt == 1 and tier.bytes_used == 0 and list(tier.keys()) == []


@pytest.mark.redis
def test_bad_checksum_through_checksummed_tier(make_tier, raw, redis_prefix):
    tier = ChecksummedTier(make_tier("crc"))
    payload = bytes(random.Random(1).randbytes(1000))
    tier.put(key(1), payload, b"m1")
    tier.put(key(2), payload[::-1], b"m2")
    blob_name = _blob_name(redis_prefix, "crc", key(1))
    stored = raw.get(blob_name)
    assert stored == frame(payload)
    damaged = bytearray(stored)
    damaged[-1] ^= 0xFF  # same length, so only the checksum can tell
    raw.set(blob_name, bytes(damaged))
    assert tier.get(key(1)) is None
    assert tier.stats().corrupt == 1
    assert raw.exists(blob_name) == 0 and not tier.contains(key(1)) and tier.get(key(1)) is None
    assert tier.bytes_used == len(frame(payload)) and tier.get(key(2)) == payload[::-1]


@pytest.mark.redis
def test_blob_deleted_behind_the_tier_is_a_miss_and_leaves_the_index(make_tier, raw, redis_prefix):
    tier = make_tier("gone")
    tier.put(key(1), b"evicted by redis")
    raw.delete(_blob_name(redis_prefix, "gone", key(1)))
    assert tier.get(key(1)) is None
    assert not tier.contains(key(1)) and tier.bytes_used == 0 and tier.stats().corrupt == 0


# -- events -----------------------------------------------------------------------------


@pytest.mark.redis
def test_events_between_instances(make_tier):
    writer, reader = make_tier("ev"), make_tier("ev")
    assert reader.last_event_id() == "0-0" and reader.read_events() == []
    sent = [{"type": "insert", "key": key(n), "n": n} for n in range(3)]
    ids = [writer.publish(event) for event in sent]
    got = reader.read_events()
    assert [event for _, event in got] == sent
    assert [event_id for event_id, _ in got] == ids
    assert reader.read_events(after_id=ids[1]) == [(ids[2], sent[2])]
    assert reader.read_events(after_id=ids[2]) == []
    assert [e for _, e in reader.read_events(count=2)] == sent[:2]
    assert reader.last_event_id() == ids[2]
    assert make_tier("other").read_events() == []


@pytest.mark.redis
def test_blocking_read_waits_for_an_event(make_tier):
    writer, reader = make_tier("ev"), make_tier("ev", socket_timeout=0.4)
    blocks = spy_on_xread(reader)
    started = time.monotonic()
    assert reader.read_events(block_ms=300) == []
    assert time.monotonic() - started >= 0.3  # it waited out block_ms (a slower machine only waits longer)
    # Each XREAD blocks for at most half the socket timeout, so none of them timed out.
    assert blocks and all(0 < block <= 200 for block in blocks), blocks
    assert reader.stats().errors == 0
    blocks.clear()
    outcome = {}
    done = threading.Event()

    def read() -> None:
        outcome["events"] = reader.read_events(block_ms=HANG_GUARD_S * 1000)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    # Three slices have ended empty: the read has already outlasted the 0.4 s socket timeout.
    wait_until(lambda: len(blocks) >= 4, "the blocking read never started its fourth slice")
    writer.publish({"type": "evict"})
    # It returns on the event, long before its own 60 s are up.
    assert done.wait(HANG_GUARD_S / 2), "the blocking read did not return when the event arrived"
    assert [e for _, e in outcome["events"]] == [{"type": "evict"}]
    assert all(0 < block <= 200 for block in blocks) and reader.stats().errors == 0


@pytest.mark.redis
def test_malformed_event_is_skipped_but_passed(make_tier, raw, redis_prefix):
    tier = make_tier("ev")
    raw.xadd(f"{{{redis_prefix}:ev}}:events", {"event": b"not json"})
    tier.publish({"type": "insert"})
    events = tier.read_events()
    assert [e for _, e in events] == [{}, {"type": "insert"}]
    assert tier.stats().corrupt == 1


def test_event_arguments_are_checked():
    client, connection = _counting_client(port=1, timeout=0.5)
    tier = RedisTier("redis://127.0.0.1:1/0", 1000, client=client)
    with pytest.raises(ConfigError):
        tier.publish({"x": object()})
    with pytest.raises(ConfigError):
        tier.publish(["not", "a", "dict"])
    with pytest.raises(ConfigError):
        tier.read_events(after_id="$")
    with pytest.raises(ConfigError):
        tier.read_events(block_ms=0)
    assert connection.attempts == 0  # nothing was sent: the arguments were refused first


# -- circuit breaker (no server) --------------------------------------------------------


def test_breaker_half_open_lets_one_trial_through():
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown_s=5.0, where="test", clock=lambda: now[0])
    breaker.failed(OSError("down"))
    assert breaker.state == "closed" and breaker.allow()
    breaker.failed(OSError("down"))
    assert breaker.state == "open" and not breaker.allow() and not breaker.would_allow()
    now[0] = 5.0
    assert breaker.would_allow()
    assert breaker.allow() and breaker.state == "half-open"
    assert not breaker.allow() and not breaker.would_allow()  # one trial at a time
    breaker.abandon()  # the trial ended without a verdict: the next call is the trial
    assert breaker.allow()
    breaker.failed(OSError("still down"))
    assert breaker.state == "open" and breaker.opens == 2 and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.consecutive_failures == 0 and breaker.allow() and breaker.allow()
    assert breaker.refused == 3


def _counting_client(port: int, timeout: float):
    """A client whose connection attempts are counted: each one is a network attempt."""

    class CountingConnection(redis.Connection):
        attempts = 0

        def connect(self, *args, **kwargs):
            type(self).attempts += 1
            return super().connect(*args, **kwargs)

    pool = redis.ConnectionPool(connection_class=CountingConnection, host="127.0.0.1", port=port,
                                socket_timeout=timeout, socket_connect_timeout=timeout)
    return redis.Redis(connection_pool=pool), CountingConnection


def test_breaker_opens_and_stops_calling_a_dead_server(monkeypatch):
    from flexcache.store import redis as redis_store

    # The breaker's clock is the test's: the cool-down ends when the test moves it, however slow this machine is.
    now = [0.0]
    monkeypatch.setattr(redis_store, "CircuitBreaker", functools.partial(CircuitBreaker, clock=lambda: now[0]))
    client, connection = _counting_client(port=1, timeout=0.5)
    tier = RedisTier("redis://127.0.0.1:1/0", 1000, client=client, breaker_failures=3, breaker_cooldown_s=1.5)
    assert tier.get(key(1)) is None
    assert tier.contains(key(1)) is False
    assert tier.available is True  # two failures: still closed
    assert tier.get_meta(key(1)) is None
    assert connection.attempts == 3 and tier.available is False
    with pytest.raises(TierUnavailableError):
        tier.put(key(1), b"x")
    with pytest.raises(TierUnavailableError):
        tier.remove(key(1))
    with pytest.raises(TierUnavailableError):
        tier.publish({"type": "insert"})
    with pytest.raises(TierUnavailableError):
        tier.last_event_id()
    assert tier.read_events() == [] and list(tier.keys()) == [] and list(tier.scan()) == []
    assert tier.bytes_used == 0 and tier.get(key(1)) is None
    stats = tier.stats()
    assert connection.attempts == 3  # nothing after the breaker opened
    assert (stats.breaker_state, stats.breaker_opens, stats.errors, stats.available) == ("open", 1, 3, False)
    assert stats.calls_refused == 10 and stats.get_misses == 2
    now[0] = 1.49
    assert tier.available is False and tier.get(key(1)) is None and connection.attempts == 3  # still cooling down
    # After the cool-down exactly one trial call goes out; it fails and re-opens the breaker.
    now[0] = 1.5
    assert tier.available is True
    assert tier.get(key(1)) is None
    assert connection.attempts == 4 and tier.available is False
    assert tier.get(key(1)) is None and connection.attempts == 4
    assert tier.stats().breaker_opens == 2
    tier.close()


def test_own_client_fails_fast_without_retries(tcp_connects):
    tier = RedisTier("redis://127.0.0.1:1/0", 1000, socket_timeout=0.5, breaker_failures=2, breaker_cooldown_s=60)
    assert tier.get(key(1)) is None
    with pytest.raises(TierUnavailableError):
        tier.put(key(1), b"x")
    # A client with retries (redis-py's default in some versions, with back-off) would connect again within
    # each call; the tier's own client has them off.
    assert tcp_connects == [1, 1]
    for _ in range(100):
        assert tier.get(key(1)) is None
    assert tcp_connects == [1, 1]  # the open breaker answered all 100 without the network
    assert tier.stats().calls_refused >= 100
    tier.close()


def test_silent_server_times_out_within_socket_timeout(tcp_connects, caplog):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes connects; nobody ever answers
    try:
        port = silent.getsockname()[1]
        tier = RedisTier(f"redis://127.0.0.1:{port}/0", 1000, socket_timeout=0.2, breaker_failures=2)
        # Nobody answers, so a call can only end by the socket timeout: that it ends at all, with a
        # timeout error, is the proof (the hang guard turns a call without one into a failure).
        with caplog.at_level(logging.DEBUG, logger="flexcache.store.redis"):
            assert in_thread_with_hang_guard(lambda: tier.get(key(1))) is None
        assert "get failed: Timeout" in caplog.text
        with pytest.raises(TierUnavailableError, match="TimeoutError"):
            in_thread_with_hang_guard(lambda: tier.put(key(1), b"x"))
        assert tcp_connects == [port, port]  # one connection a call: no retries
        assert tier.contains(key(1)) is False and tier.stats().breaker_state == "open"
        assert tcp_connects == [port, port]  # the open breaker answers without the network
        tier.close()
    finally:
        silent.close()


# -- recovery with a server this test starts and stops ----------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SpareServer:
    """A redis-server on its own port, started and shut down by the test."""

    def __init__(self, directory) -> None:
        self.port = free_port()
        self.directory = directory
        self.pid: int | None = None

    def start(self, *options: str) -> None:
        pidfile = self.directory / "redis.pid"
        subprocess.run(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "yes", "--pidfile", str(pidfile), "--dir", str(self.directory),
             "--logfile", str(self.directory / "redis.log"), *options],
            check=True, timeout=10,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        self.pid = int(pidfile.read_text())

    def shutdown(self) -> None:
        """SHUTDOWN, and wait until the process is gone (a test goes on only once it is down)."""
        self._ask_to_shut_down()
        self._wait_gone(HANG_GUARD_S)
        assert not self._alive(), f"redis-server {self.pid} still runs {HANG_GUARD_S} s after SHUTDOWN"

    def stop(self) -> None:
        """Whatever state the test left it in: shut down, killed if it will not go."""
        if self.pid is not None and self._alive():
            self._ask_to_shut_down()
            self._wait_gone(10)
        if self.pid is not None and self._alive():
            os.kill(self.pid, signal.SIGKILL)
            self._wait_gone(10)

    def _ask_to_shut_down(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True,
                       timeout=HANG_GUARD_S)

    def _alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        try:  # a daemon is not our child: once dead it may linger as a zombie until init reaps it
            with open(f"/proc/{self.pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return True

    def _wait_gone(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.pid is not None and self._alive() and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture
def spare_server(tmp_path):
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed (scripts/redis-test-server.sh start installs it)")
    server = SpareServer(tmp_path)
    yield server
    server.stop()


@pytest.mark.redis
def test_recovers_after_server_restart(spare_server, tcp_connects):
    spare_server.start()
    tier = RedisTier(f"redis://127.0.0.1:{spare_server.port}/0", 2**20, prefix="spare", socket_timeout=0.5,
                     breaker_failures=2, breaker_cooldown_s=0.5)
    tier.put(key(1), b"before", b"m")
    assert tier.get(key(1)) == b"before"

    spare_server.shutdown()
    tcp_connects.clear()
    assert tier.get(key(1)) is None
    with pytest.raises(TierUnavailableError):
        tier.put(key(2), b"during")
    assert len(tcp_connects) <= 2  # two calls, at most one connection attempt each: no retries
    assert tier.stats().breaker_state == "open"
    attempts = len(tcp_connects)
    assert tier.contains(key(1)) is False and tier.read_events() == []
    with pytest.raises(TierUnavailableError):
        tier.put(key(2), b"during")
    assert len(tcp_connects) == attempts  # the open breaker answers without the network

    spare_server.start()  # same port, empty (no persistence)
    wait_until(lambda: tier.available, "the breaker never let a trial call through")  # the 0.5 s cool-down
    tier.put(key(3), b"after", b"m3")  # the trial call
    assert tier.get(key(3)) == b"after" and tier.bytes_used == 5
    stats = tier.stats()
    assert (stats.breaker_state, stats.available, stats.breaker_opens) == ("closed", True, 1)
    event_id = tier.publish({"type": "insert"})
    assert tier.read_events() == [(event_id, {"type": "insert"})]
    tier.close()


@pytest.mark.redis
def test_cluster_round_trip(spare_server):
    # A one-node cluster holding every slot: enough to run the cluster client's
    # transactions, scripts and slot checks for real.
    # The bus port defaults to port + 10000, which need not be free (or even exist).
    spare_server.start("--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                       "--cluster-config-file", str(spare_server.directory / "nodes.conf"))
    admin = redis.Redis(host="127.0.0.1", port=spare_server.port)
    admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    wait_until(lambda: b"cluster_state:ok" in admin.execute_command("CLUSTER", "INFO"),
               "the one-node cluster did not come up")
    tier = RedisTier(f"redis://127.0.0.1:{spare_server.port}/0", 2**20, cluster=True, socket_timeout=1.0)
    tier.put(key(1), b"clustered", b"m1")
    tier.put(key(2, "other"), b"two", b"m2")
    assert tier.get(key(1)) == b"clustered" and tier.get_meta(key(1)) == b"m1"
    assert dict(tier.scan()) == {key(1): b"m1", key(2, "other"): b"m2"} and tier.bytes_used == 12
    event_id = tier.publish({"type": "insert"})
    assert tier.read_events() == [(event_id, {"type": "insert"})] and tier.last_event_id() == event_id
    assert tier.remove(key(2, "other")) is True and tier.bytes_used == 9
    admin.set(f"{{flexcache:flexcache}}:acme:{1:016x}:blob", b"short")  # one node holds every slot
    assert tier.get(key(1)) is None and tier.bytes_used == 0
    stats = tier.stats()
    assert (stats.corrupt, stats.errors, stats.entries) == (1, 0, 0)
    tier.close()
    admin.close()


# -- concurrency ------------------------------------------------------------------------


@pytest.mark.redis
def test_concurrent_puts_and_removes_keep_bytes_used_exact(make_tier, raw, redis_prefix):
    tiers = [make_tier("busy"), make_tier("busy")]  # two clients, as two processes would have
    keys = [key(n, tenant) for tenant in ("a", "b") for n in range(12)]

    def work(seed: int) -> None:
        rng = random.Random(seed)
        tier = tiers[seed % 2]
        for _ in range(150):
            k = rng.choice(keys)
            if rng.random() < 0.6:
                tier.put(k, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))), b"m")
            else:
                tier.remove(k)

    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(work, seed) for seed in range(4)]:
            future.result()
    present = {k: tiers[0].get(k) for k in keys}
    present = {k: blob for k, blob in present.items() if blob is not None}
    assert present  # the mix leaves some entries behind
    assert sorted(tiers[1].keys()) == sorted(present)
    assert tiers[0].bytes_used == tiers[1].bytes_used == sum(map(len, present.values()))
    sizes = raw.hgetall(f"{{{redis_prefix}:busy}}:sizes")
    assert {k.decode(): int(v) for k, v in sizes.items()} == {k: len(b) for k, b in present.items()}
    assert tiers[0].stats().corrupt == 0
