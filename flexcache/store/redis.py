"""Redis tier: blobs every process (and node) pointing at one Redis shares.

Layout of one cache (``prefix`` and ``cache_name`` together form a Redis
Cluster hash tag, so every key of a cache lives in one slot and the
transactions below work on a cluster too)::

    {prefix:cache_name}:<tenant>:<digest>:blob    the blob (a string)
    {prefix:cache_name}:<tenant>:<digest>:meta    its metadata (a string)
    {prefix:cache_name}:sizes                     hash: store key -> blob length
    {prefix:cache_name}:bytes                     sum of the lengths in `sizes`
    {prefix:cache_name}:events                    stream of JSON events (sharing)
    {prefix:cache_name}:quarantine:<tenant>:<digest>:blob
                                                  a malformed blob, kept for a day

Every write is one MULTI/EXEC transaction that changes the blob, its metadata,
`sizes` and `bytes` together, so `keys()`, `bytes_used` and `scan()` are the
same for every process at every moment. Key names come only from the store key
(never from Python's salted ``hash()``). The one-slot layout keeps a cache on
one cluster shard; caches with different names spread over the shards.

Failures never escape as redis-py exceptions: reads become misses and writes
raise `TierUnavailableError`, behind a circuit breaker (`CircuitBreaker`) that
stops calling a server that keeps failing and lets one trial call through after
a cool-down. Configure the server with ``maxmemory-policy noeviction``:
capacity is the tiered store's business, and keys Redis evicts on its own are
only noticed (and dropped from the index) when they are read.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flexcache.core.blob import Blob, host_bytes
from flexcache.core.errors import (
    BackendUnavailableError,
    ConfigError,
    TierUnavailableError,
)
from flexcache.core.types import KEY_PATTERN, split_key
from flexcache.store.base import Tier, TierStats
from flexcache.store.breaker import CircuitBreaker

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - the test environment has redis-py
    raise BackendUnavailableError(
        "the redis tier needs the redis client: pip install 'redis>=5'"
    ) from exc

logger = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMES = ("redis", "rediss", "unix")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,128}")
EVENT_ID_PATTERN = re.compile(r"\d+-\d+")
QUARANTINE_TTL_S = 24 * 3600
_SCAN_BATCH = 256

# Keeps `sizes` and `bytes` in step: the counter needs the old length, which a
# plain MULTI cannot read. It runs inside the MULTI of the blob write, so the
# whole change is still one transaction. ARGV[2] absent means "removed".
# Returns the old length, or -1 when the key was not indexed.
_INDEX_LUA = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local new = 0
if ARGV[2] then
  new = tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
elseif old then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('INCRBY', KEYS[2], new - (tonumber(old) or 0))
if old then return tonumber(old) end
return -1
"""

# The server (or the cluster) cannot serve: these count toward opening the breaker.
_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError,
                      redis.exceptions.RedisClusterException, OSError)
_FAILED = object()  # what `_call` returns when a read could not be served
_RAISE = object()  # `_call` default meaning "raise TierUnavailableError instead"


@dataclass
class RedisTierStats(TierStats):
    """`TierStats` plus the circuit breaker's state (`errors` counts failed calls)."""

    available: bool = True
    breaker_state: str = CircuitBreaker.CLOSED
    breaker_opens: int = 0
    consecutive_failures: int = 0
    calls_refused: int = 0


@dataclass(frozen=True)
class _EntryKeys:
    blob: str
    meta: str
    quarantine: str


class RedisTier(Tier):
    """A tier in a Redis (or Valkey, or Redis Cluster) server, shared and persistent.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS)
            or ``unix:///path/to.sock?db=0``.
        capacity_bytes: blob bytes this tier may hold (enforced by the tiered store).
        cache_name: the cache's name; caches with different names never see
            each other's entries.
        prefix: first part of every key name (one Redis can serve many deployments).
        socket_timeout: seconds a connect or a reply may take before the call fails.
        breaker_failures: consecutive failures that open the circuit breaker.
        breaker_cooldown_s: seconds the breaker stays open before a trial call.
        client: a ready redis-py client to use instead of one built from `url`
            (the tier closes it on `close()`).
        cluster: connect with ``redis.cluster.RedisCluster`` (`url` names any node).
        events_maxlen: about how many events the stream keeps.

    Raises:
        ConfigError: an unsupported URL scheme or an invalid name or number.
        TierUnavailableError: `cluster=True` and no node answers.

    Example:
        >>> from flexcache.core.types import make_key
        >>> from flexcache.store.integrity import ChecksummedTier
        >>> tier = ChecksummedTier(RedisTier("redis://127.0.0.1:6390/0", 2**30))  # doctest: +SKIP
        >>> tier.put(make_key("acme", "0123abcd"), b"blob", b"meta")  # doctest: +SKIP
        >>> tier.get(make_key("acme", "0123abcd"))  # doctest: +SKIP
        b'blob'
    """

    name = "redis"
    persistent = True
    shared = True

    def __init__(self, url: str, capacity_bytes: int, *, cache_name: str = "flexcache",
                 prefix: str = "flexcache", socket_timeout: float = 2.0, breaker_failures: int = 3,
                 breaker_cooldown_s: float = 5.0, client: Any = None, cluster: bool = False,
                 events_maxlen: int = 100_000) -> None:
        super().__init__(capacity_bytes)
        self.where = _check_url(url, cluster)
        for what, value in (("cache_name", cache_name), ("prefix", prefix)):
            if not isinstance(value, str) or NAME_PATTERN.fullmatch(value) is None:
                raise ConfigError(f"redis tier {what} must be 1-128 of [A-Za-z0-9_.-]; got {value!r}")
        for what, value in (("capacity_bytes", capacity_bytes), ("breaker_failures", breaker_failures),
                            ("events_maxlen", events_maxlen)):
            _require(isinstance(value, int) and value >= 1, f"redis tier {what} must be an int >= 1; got {value!r}")
        _require(socket_timeout > 0, f"redis tier socket_timeout must be > 0; got {socket_timeout}")
        _require(breaker_cooldown_s >= 0, f"redis tier breaker_cooldown_s must be >= 0; got {breaker_cooldown_s}")
        self.cache_name, self.prefix = cache_name, prefix
        self.socket_timeout, self.events_maxlen = socket_timeout, events_maxlen
        self._breaker = CircuitBreaker(breaker_failures, breaker_cooldown_s, f"redis tier {self.where}")
        self._client = client if client is not None else _connect(url, socket_timeout, cluster, self.where)
        # The hash tag: every key of this cache hashes to one cluster slot.
        self._base = f"{{{prefix}:{cache_name}}}"
        self._sizes = f"{self._base}:sizes"
        self._total = f"{self._base}:bytes"
        self._events = f"{self._base}:events"
        self._lock = threading.Lock()
        self._stats = RedisTierStats(self.name, 0, 0, capacity_bytes)
        self._last_server_error = ""
        self._warned_vanished = False

    # -- the Tier interface ------------------------------------------------------------

    def put(self, key: str, blob: Blob, meta: bytes = b"") -> None:
        names = self._entry_keys(key)
        blob, meta = bytes(host_bytes(blob)), bytes(meta)

        def write() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.set(names.blob, blob)
            pipe.set(names.meta, meta)
            self._queue_index(pipe, key, len(blob))
            pipe.execute()

        self._call("put", write, _RAISE)
        with self._lock:
            self._stats.puts += 1

    def get(self, key: str, device: Any = None) -> bytes | None:
        names = self._entry_keys(key)

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=True)
            pipe.get(names.blob)
            pipe.hget(self._sizes, key)
            return pipe.execute(raise_on_error=False)

        replies = self._call("get", read, _FAILED)
        blob = None if replies is _FAILED else self._checked_blob(key, *replies)
        with self._lock:
            self._stats.gets += 1
            self._stats.get_misses += blob is None
        return blob

    def get_meta(self, key: str) -> bytes | None:
        names = self._entry_keys(key)

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=True)
            pipe.get(names.meta)
            pipe.hexists(self._sizes, key)
            return pipe.execute(raise_on_error=False)

        replies = self._call("get_meta", read, _FAILED)
        if replies is _FAILED:
            return None
        meta, indexed = replies
        if not indexed or isinstance(indexed, Exception):
            return None
        if not isinstance(meta, bytes):  # a put always writes metadata, possibly empty
            return self._malformed(key, f"its metadata is {_describe(meta)}")
        return meta

    def contains(self, key: str) -> bool:
        self._entry_keys(key)
        return bool(self._call("contains", lambda: self._client.hexists(self._sizes, key), False))

    def remove(self, key: str) -> bool:
        names = self._entry_keys(key)

        def write() -> bool:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(names.blob, names.meta)
            self._queue_index(pipe, key)
            deleted, old_size = pipe.execute()
            return deleted > 0 or old_size >= 0

        removed = self._call("remove", write, _RAISE)
        if removed:
            with self._lock:
                self._stats.removes += 1
        return removed

    def quarantine(self, key: str, expected: Any = None) -> None:
        """Move a blob that failed its check aside (kept a day) and drop its entry.

        Best effort: when the server cannot be reached the blob stays, and is
        checked again on its next read. With `expected` (the damaged blob as
        read), a blob another process replaced meanwhile is left alone.
        """
        names = self._entry_keys(key)

        def write() -> None:
            if expected is not None and self._client.get(names.blob) not in (None, bytes(expected)):
                return  # replaced since it was read: the new blob is not the damaged one
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(names.meta)
            self._queue_index(pipe, key)
            # Fails (harmlessly) when the blob is gone; a cluster pipeline has no rename().
            pipe.execute_command("RENAME", names.blob, names.quarantine)
            pipe.expire(names.quarantine, QUARANTINE_TTL_S)
            pipe.execute(raise_on_error=False)

        self._call("quarantine", write, None)

    def keys(self) -> Iterator[str]:
        def listing() -> list[str]:
            fields = (field.decode("ascii", "replace") for field, _ in
                      self._client.hscan_iter(self._sizes, count=1000))
            return [field for field in fields if KEY_PATTERN.fullmatch(field)]

        return iter(self._call("keys", listing, []))

    def scan(self) -> Iterator[tuple[str, bytes]]:
        keys = list(self.keys())
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = keys[start:start + _SCAN_BATCH]
            metas = self._call("scan", lambda: self._client.mget([self._entry_keys(k).meta for k in batch]), _FAILED)
            if metas is _FAILED:
                return
            for key, meta in zip(batch, metas):
                if isinstance(meta, bytes):
                    yield key, meta

    def read_raw(self, keys: list[str], *, blobs: bool = True) -> list[tuple[str, bytes | None, bytes | None]]:
        """``(key, meta, blob)`` as stored (framed, unchecked), None where missing; no side effects (inspect)."""
        out = []
        for start in range(0, len(keys), _SCAN_BATCH):
            batch = keys[start:start + _SCAN_BATCH]
            names = [self._entry_keys(k).meta for k in batch] + ([self._entry_keys(k).blob for k in batch] if blobs
                                                                 else [])
            values = self._client.mget(names)
            metas, found = values[:len(batch)], values[len(batch):] if blobs else [None] * len(batch)
            out += [(k, m if isinstance(m, bytes) else None, b if isinstance(b, bytes) else None)
                    for k, m, b in zip(batch, metas, found)]
        return out

    @property
    def bytes_used(self) -> int:
        total = self._call("bytes_used", lambda: self._client.get(self._total), _FAILED)
        with self._lock:
            if total is not _FAILED:
                self._stats.bytes_used = _to_int(total)
            return self._stats.bytes_used  # the last value read when the server is down

    @property
    def available(self) -> bool:
        """Whether a call now would reach the server (False while the breaker is open)."""
        return self._breaker.would_allow()

    def stats(self) -> RedisTierStats:
        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=True)
            pipe.hlen(self._sizes)
            pipe.get(self._total)
            return pipe.execute()

        replies = self._call("stats", read, _FAILED)
        breaker = self._breaker
        with self._lock:
            if replies is not _FAILED:
                self._stats.entries, self._stats.bytes_used = int(replies[0]), _to_int(replies[1])
            stats = RedisTierStats(**vars(self._stats))
        stats.latency_ms = {}
        stats.available = self.available
        stats.breaker_state, stats.breaker_opens = breaker.state, breaker.opens
        stats.consecutive_failures, stats.calls_refused = breaker.consecutive_failures, breaker.refused
        return stats

    def close(self) -> None:
        try:
            self._client.close()
        except redis.RedisError as exc:
            logger.debug("flexcache: closing redis tier %s: %s", self.where, exc)

    # -- events: how processes sharing this cache follow each other ----------------------

    def publish(self, event: dict) -> str:
        """Append `event` (a JSON-serialisable dict) to the cache's event stream.

        Returns:
            The event's stream id.

        Raises:
            ConfigError: `event` is not a dict that JSON can encode.
            TierUnavailableError: the server cannot be reached (or the breaker is open).
        """
        if not isinstance(event, dict):
            raise ConfigError(f"an event must be a dict; got {type(event).__name__}")
        try:
            payload = json.dumps(event, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"an event must be JSON-serialisable: {exc}") from None
        event_id = self._call("publish", lambda: self._client.xadd(
            self._events, {"event": payload}, maxlen=self.events_maxlen, approximate=True), _RAISE)
        return _text(event_id)

    def read_events(self, after_id: str = "0-0", count: int = 1000,
                    block_ms: int | None = None) -> list[tuple[str, dict]]:
        """Events published after `after_id`, oldest first: ``[(id, event), ...]``.

        An entry that is not a JSON object comes back as ``{}`` (and is counted
        corrupt) so the caller's position still moves past it.

        Args:
            after_id: a stream id (``"0-0"``: from the start).
            count: at most this many events.
            block_ms: wait up to this long (> 0) for an event when there is
                none yet; None returns at once. When the server is down the
                call still takes up to `block_ms`, so polling loops do not spin.

        Returns:
            The events, or [] when there are none or the server is down.

        Raises:
            ConfigError: `after_id` is not a stream id, or `count`/`block_ms` is out of range.
        """
        if not isinstance(after_id, str) or EVENT_ID_PATTERN.fullmatch(after_id) is None:
            raise ConfigError(f"after_id must be a stream id like '0-0'; got {after_id!r}")
        _require(isinstance(count, int) and count >= 1, f"count must be an int >= 1; got {count!r}")
        _require(block_ms is None or (isinstance(block_ms, int) and block_ms > 0),
                 f"block_ms must be None or an int > 0; got {block_ms!r}")
        deadline = None if block_ms is None else time.monotonic() + block_ms / 1000
        # A blocked XREAD must answer within socket_timeout, so long waits go in slices.
        slice_ms = max(1, int(self.socket_timeout * 500))
        while True:
            wait_ms = None if deadline is None else max(1, min(slice_ms, int((deadline - time.monotonic()) * 1000)))
            reply = self._call("read_events", lambda: self._client.xread(
                {self._events: after_id}, count=count, block=wait_ms), _FAILED)
            if reply is _FAILED:
                if deadline is not None:
                    time.sleep(max(0.0, deadline - time.monotonic()))
                return []
            events = self._decode_events(reply)
            if events or deadline is None or time.monotonic() >= deadline:
                return events

    def last_event_id(self) -> str:
        """Id of the newest event (``"0-0"`` when there is none).

        Raises:
            TierUnavailableError: the server cannot be reached; "0-0" would
                make a follower replay the whole stream.
        """
        newest = self._call("last_event_id", lambda: self._client.xrevrange(self._events, count=1), _RAISE)
        return _text(newest[0][0]) if newest else "0-0"

    # -- internals ---------------------------------------------------------------------

    def _entry_keys(self, key: str) -> _EntryKeys:
        tenant, digest = split_key(key)
        entry = f"{tenant}:{digest}"
        return _EntryKeys(f"{self._base}:{entry}:blob", f"{self._base}:{entry}:meta",
                          f"{self._base}:quarantine:{entry}:blob")

    def _queue_index(self, pipe: Any, key: str, size: int | None = None) -> None:
        """Queue the `sizes`/`bytes` update of `key` (`size` None: removed) on a MULTI."""
        # execute_command, since a cluster pipeline has no eval().
        pipe.execute_command("EVAL", _INDEX_LUA, 2, self._sizes, self._total, key, *(() if size is None else (size,)))

    def _call(self, op: str, fn: Callable[[], T], default: Any) -> T | Any:
        """Run `fn` behind the breaker; a failure returns `default` (or raises, for `_RAISE`)."""
        if not self._breaker.allow():
            if default is _RAISE:
                raise TierUnavailableError(
                    f"redis tier {self.where} is unavailable: {op} refused while its circuit is open "
                    f"(it failed {self._breaker.failures} times in a row; a trial follows the cool-down)")
            return default
        try:
            result = fn()
        except _CONNECTION_ERRORS as exc:
            self._breaker.failed(exc)
            return self._failed(op, exc, default)
        except redis.RedisError as exc:  # the server answered, with an error
            self._breaker.succeeded()
            if str(exc) != self._last_server_error:
                self._last_server_error = str(exc)
                logger.warning("flexcache: redis tier %s: %s failed: %s", self.where, op, exc)
            return self._failed(op, exc, default)
        except BaseException:
            self._breaker.abandon()
            raise
        self._breaker.succeeded()
        return result

    def _failed(self, op: str, exc: Exception, default: Any) -> Any:
        with self._lock:
            self._stats.errors += 1
        if default is _RAISE:
            raise TierUnavailableError(f"redis tier {self.where}: {op} failed: {type(exc).__name__}: {exc}") from exc
        logger.debug("flexcache: redis tier %s: %s failed: %s", self.where, op, exc)
        return default

    def _checked_blob(self, key: str, blob: Any, size: Any) -> bytes | None:
        """The blob of a GET+HGET pair, or None (a miss) after dealing with what is wrong."""
        if isinstance(blob, Exception) or isinstance(size, Exception):
            return self._malformed(key, f"its blob key holds {_describe(blob)}")
        if blob is None:
            if size is not None:  # indexed but gone: Redis evicted it, or someone deleted it
                if not self._warned_vanished:
                    self._warned_vanished = True
                    logger.warning("flexcache: redis tier %s lost blobs it had indexed (is maxmemory-policy "
                                   "noeviction?); dropping them from the index as they are read", self.where)
                self.quarantine(key)  # only drops the index entry and the metadata: no blob is left
            return None
        if size is None or _to_int(size) != len(blob):
            return self._malformed(key, f"its blob is {len(blob)} bytes, the index says {_text(size)}")
        return blob

    def _malformed(self, key: str, why: str) -> None:
        with self._lock:
            self._stats.corrupt += 1
        logger.warning("flexcache: redis tier %s: entry %s is malformed (%s); quarantined, served as a miss",
                       self.where, key, why)
        self.quarantine(key)
        return None

    def _decode_events(self, reply: Any) -> list[tuple[str, dict]]:
        if isinstance(reply, dict):  # RESP3
            reply = list(reply.items())
        events = []
        for _stream, entries in reply or ():
            for event_id, fields in entries:
                try:
                    event = json.loads(fields[b"event"])
                    if not isinstance(event, dict):
                        raise ValueError(f"an event is a JSON object, not {type(event).__name__}")
                except (KeyError, TypeError, ValueError) as exc:
                    with self._lock:
                        self._stats.corrupt += 1
                    logger.warning("flexcache: redis tier %s: event %s is malformed (%s); skipped",
                                   self.where, _text(event_id), exc)
                    event = {}
                events.append((_text(event_id), event))
        return events


# -- helpers -----------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _check_url(url: str, cluster: bool) -> str:
    """Validate `url`; returns it without credentials, for messages."""
    if not isinstance(url, str):
        raise ConfigError(f"redis tier url must be a string; got {type(url).__name__}")
    parts = urlsplit(url)
    schemes = ("redis", "rediss") if cluster else SCHEMES
    if parts.scheme.lower() not in schemes:
        raise ConfigError(
            f"redis tier url must start with {', '.join(s + '://' for s in schemes)}; got {parts.scheme or url!r}")
    if parts.scheme.lower() == "unix":
        return f"unix://{parts.path}"
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"redis tier url has a bad port: {exc}") from None
    return f"{parts.scheme}://{parts.hostname or 'localhost'}:{port or 6379}{parts.path}"


def _connect(url: str, socket_timeout: float, cluster: bool, where: str) -> Any:
    # No client-side retries: the breaker decides when to try again, and a retry
    # with back-off would hold a request for seconds behind a dead server.
    options = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout,
               "retry": Retry(NoBackoff(), 0)}
    try:
        if cluster:
            from redis.cluster import RedisCluster

            return RedisCluster.from_url(url, **options)
        return redis.Redis.from_url(url, **options)
    except ValueError as exc:
        raise ConfigError(f"redis tier url {where}: {exc}") from None
    except redis.RedisError as exc:  # a cluster client asks for the slot map at once
        raise TierUnavailableError(f"redis cluster at {where} cannot be reached: {exc}") from exc


def _to_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return -1  # never a length, so a comparison with one fails


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _describe(value: Any) -> str:
    if value is None:
        return "missing"
    return str(value) if isinstance(value, Exception) else f"a {type(value).__name__}"
