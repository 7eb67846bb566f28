"""Typed tier configs: one frozen dataclass per tier kind, looked up by kind.

A YAML or dict config names a tier by ``kind`` and gives that kind's fields::

    store:
      tiers:
        - {kind: host, capacity_bytes: 64GiB, slab_bytes: 4MiB}
        - {kind: disk, capacity_bytes: 1TB, path: /nvme/flexcache}
        - {kind: redis, capacity_bytes: 256GiB, url: "redis://cache:6379/0", socket_timeout_s: 1.0}

`TierConfig.from_dict` picks the class from `TIER_CONFIGS` (keyed by the
names in `flexcache.core.names.TIER_KINDS`); `flexcache.store.factory` builds
each class's tier from a registry keyed by config type.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from flexcache.core.errors import ConfigError
from flexcache.core.names import TIER_KINDS
from flexcache.core.sections import build_section
from flexcache.core.sections import require as _require
from flexcache.core.units import parse_bytes

PINNING = ("auto", "required", "never")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass(frozen=True)
class TierConfig:
    """What every tier has: a capacity. Use one of the subclasses (or `from_dict`).

    Args:
        capacity_bytes: blob bytes this tier may hold (``"64GiB"`` style accepted).
    """

    kind: ClassVar[str] = ""
    capacity_bytes: int

    def __post_init__(self) -> None:
        if not self.kind:
            raise ConfigError("TierConfig is the base class; use MemoryTierConfig, HostTierConfig, HBMTierConfig, "
                              "DiskTierConfig or RedisTierConfig, or TierConfig.from_dict({'kind': ...})")
        try:
            object.__setattr__(self, "capacity_bytes", parse_bytes(self.capacity_bytes))
        except ConfigError as exc:
            raise ConfigError(f"{self.kind} tier capacity_bytes: {exc}") from None
        _require(self.capacity_bytes > 0, f"{self.kind} tier capacity_bytes must be > 0; got {self.capacity_bytes}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @staticmethod
    def from_dict(data: Mapping[str, Any], where: str = "store.tiers[]") -> TierConfig:
        """The typed config a ``{kind: ..., ...}`` mapping describes.

        A mapping written by FlexCache 0.1's flat tier config (``path: ""``
        and ``url: ""`` on every kind) is read with those empty fields dropped.

        Raises:
            ConfigError: no or an unknown kind, keys that kind does not take,
                or values out of range.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a mapping with a kind; got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in TIER_CONFIGS:
            raise ConfigError(f"{where}.kind must be one of {', '.join(TIER_KINDS)}; got {kind!r}")
        cls = TIER_CONFIGS[kind]
        fields = {f.name for f in dataclasses.fields(cls)}
        body = {key: value for key, value in data.items() if key != "kind"
                and not (key in ("path", "url") and key not in fields and value == "")}
        return build_section(cls, body, f"{where}({kind}).")

    @staticmethod
    def from_config_dict(data: Mapping[str, Any], where: str) -> TierConfig:
        return TierConfig.from_dict(data, where)


@dataclass(frozen=True)
class MemoryTierConfig(TierConfig):
    """Plain host memory (a dict of bytes)."""

    kind: ClassVar[str] = "memory"


@dataclass(frozen=True)
class HostTierConfig(TierConfig):
    """One pre-allocated host buffer cut into slabs, page-locked for fast copies to the GPU.

    Args:
        pinned: ``"auto"`` (page-lock when CUDA is present, plain memory if
            that fails), ``"required"`` (fail without it) or ``"never"``.
        slab_bytes: allocation unit; small tiers use smaller slabs.
    """

    kind: ClassVar[str] = "host"
    pinned: str = "auto"
    slab_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.pinned in PINNING, f"host tier pinned must be one of {', '.join(PINNING)}; got {self.pinned!r}")
        object.__setattr__(self, "slab_bytes", parse_bytes(self.slab_bytes))
        _require(self.slab_bytes > 0, f"host tier slab_bytes must be > 0; got {self.slab_bytes}")


@dataclass(frozen=True)
class HBMTierConfig(TierConfig):
    """GPU memory.

    Args:
        device: the CUDA device, e.g. ``"cuda:1"``; ``"cuda"`` is the current one.
    """

    kind: ClassVar[str] = "hbm"
    device: str = "cuda"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(re.fullmatch(r"cuda(:\d+)?", self.device) is not None,
                 f"hbm tier device must be 'cuda' or 'cuda:<index>'; got {self.device!r}")


@dataclass(frozen=True)
class DiskTierConfig(TierConfig):
    """One file per entry under a directory (one owning process).

    Args:
        path: the directory; created if missing.
    """

    kind: ClassVar[str] = "disk"
    path: str

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(bool(self.path), "a disk tier needs path: the directory to keep blobs in")


@dataclass(frozen=True)
class RedisTierConfig(TierConfig):
    """A Redis / Valkey server (or cluster) every process of a fleet shares.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL.
        prefix: first part of every key name (one server can hold many deployments).
        socket_timeout_s: seconds a connect or a reply may take.
        breaker_failures: consecutive failures that turn the tier off.
        breaker_cooldown_s: seconds it stays off before a trial call.
        cluster: connect as a Redis Cluster client (`url` names any node).
        events_maxlen: about how many sharing events the stream keeps.
    """

    kind: ClassVar[str] = "redis"
    url: str
    prefix: str = "flexcache"
    socket_timeout_s: float = 2.0
    breaker_failures: int = 3
    breaker_cooldown_s: float = 5.0
    cluster: bool = False
    events_maxlen: int = 100_000

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.url.startswith(("redis://", "rediss://", "unix://")),
                 f"a redis tier needs url: redis://, rediss:// or unix://; got {self.url!r}")
        _require(_NAME.fullmatch(self.prefix) is not None,
                 f"redis tier prefix must be 1-128 of [A-Za-z0-9_.-]; got {self.prefix!r}")
        _require(self.socket_timeout_s > 0, f"redis tier socket_timeout_s must be > 0; got {self.socket_timeout_s}")
        _require(self.breaker_failures >= 1, f"redis tier breaker_failures must be >= 1; got {self.breaker_failures}")
        _require(self.breaker_cooldown_s >= 0,
                 f"redis tier breaker_cooldown_s must be >= 0; got {self.breaker_cooldown_s}")
        _require(self.events_maxlen >= 1, f"redis tier events_maxlen must be >= 1; got {self.events_maxlen}")


TIER_CONFIGS: dict[str, type[TierConfig]] = {
    cls.kind: cls for cls in (MemoryTierConfig, HostTierConfig, HBMTierConfig, DiskTierConfig, RedisTierConfig)
}
if tuple(sorted(TIER_CONFIGS)) != tuple(sorted(TIER_KINDS)):  # pragma: no cover - a programming error
    raise ImportError(f"tier configs {sorted(TIER_CONFIGS)} do not match core.names.TIER_KINDS {sorted(TIER_KINDS)}")
