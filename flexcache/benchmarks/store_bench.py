"""`flexcache bench store`: put/get throughput and latency per tier.

For blobs of 1, 8 and 32 MB (by default) and each tier that can be built on
this machine (memory, host, disk in a temporary directory or `--disk-path`,
redis when a URL is given, hbm on CUDA), it times `put` and `get` through
the same checksummed interface the cache uses, and reports median and p99
latency and the throughput at the median. On a CUDA machine it adds pinned
host <-> HBM copy bandwidth, against a plain `torch` copy of the same bytes
measured in the same run.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from flexcache.core import (
    DiskTierConfig,
    FlexCacheError,
    HBMTierConfig,
    HostTierConfig,
    MemoryTierConfig,
    RedisTierConfig,
)
from flexcache.store import Tier, build_tier

MB = 10**6


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _time_tier(tier: Tier, size: int, repeats: int) -> dict[str, Any]:
    payload = os.urandom(size)
    puts, gets = [], []
    for i in range(repeats):
        key = f"bench.{i:032x}"
        started = time.perf_counter()
        tier.put(key, payload, b"{}")
        puts.append(time.perf_counter() - started)
        started = time.perf_counter()
        got = tier.get(key)
        gets.append(time.perf_counter() - started)
        if got != payload:
            raise FlexCacheError(f"{tier.name} tier returned different bytes for a {size}-byte blob")
        tier.remove(key)
    row: dict[str, Any] = {"tier": tier.name, "blob_mb": size / MB, "repeats": repeats}
    for op, samples in (("put", puts), ("get", gets)):
        median = statistics.median(samples)
        row[f"{op}_median_ms"] = median * 1000
        row[f"{op}_p99_ms"] = _percentile(samples, 0.99) * 1000
        row[f"{op}_mb_per_s"] = size / MB / median
    return row


def _cuda_rows(sizes: list[int], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        device = torch.empty(size, dtype=torch.uint8, device="cuda")
        pageable = torch.empty(size, dtype=torch.uint8)

        def timed(fn: Callable[[], None]) -> float:
            fn()
            torch.cuda.synchronize()
            samples = []
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                samples.append(start.elapsed_time(end) / 1000)
            return statistics.median(samples)

        h2d = timed(lambda: device.copy_(host, non_blocking=True))
        d2h = timed(lambda: host.copy_(device, non_blocking=True))
        pageable_h2d = timed(lambda: device.copy_(pageable))
        rows.append({"blob_mb": size / MB, "pinned_h2d_gb_s": size / h2d / 1e9, "pinned_d2h_gb_s": size / d2h / 1e9,
                     "pageable_h2d_gb_s": size / pageable_h2d / 1e9})
    return rows


def run_store_bench(*, sizes_mb: tuple[int, ...] = (1, 8, 32), repeats: int = 20, disk_path: str | None = None,
                    redis_url: str | None = None) -> dict[str, Any]:
    sizes = [int(mb * MB) for mb in sizes_mb]
    capacity = 4 * max(sizes)
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="flexcache-bench-") as tmp:
        configs = [MemoryTierConfig(capacity), HostTierConfig(capacity),
                   DiskTierConfig(capacity, path=disk_path or os.path.join(tmp, "disk"))]
        if redis_url:
            configs.append(RedisTierConfig(capacity, url=redis_url))
        else:
            skipped["redis"] = "no --redis-url given"
        if torch.cuda.is_available():
            configs.insert(0, HBMTierConfig(capacity))
        else:
            skipped["hbm"] = "no CUDA device"
        for config in configs:
            try:
                tier = build_tier(config, cache_name="bench")
            except (FlexCacheError, ImportError) as exc:
                skipped[config.kind] = str(exc)
                continue
            try:
                for size in sizes:
                    rows.append(_time_tier(tier, size, repeats))
            except FlexCacheError as exc:
                skipped[config.kind] = str(exc)
            finally:
                tier.close()
    return {
        "benchmark": "store",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "note": "latency of one call through the checksummed tier interface; disk puts include fsync",
        "tiers": rows,
        "skipped": skipped,
        "pcie": _cuda_rows(sizes, repeats) if torch.cuda.is_available() else None,
    }


def format_store_table(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [f"store benchmark on {machine['processor']} ({machine['cpus']} cpus, cuda: {machine['cuda']})",
             f"{'tier':<8} {'MB':>4} {'put med ms':>10} {'put p99':>8} {'put MB/s':>9} "
             f"{'get med ms':>10} {'get p99':>8} {'get MB/s':>9}"]
    for row in result["tiers"]:
        lines.append(f"{row['tier']:<8} {row['blob_mb']:>4.0f} {row['put_median_ms']:>10.2f} {row['put_p99_ms']:>8.2f} "
                     f"{row['put_mb_per_s']:>9.0f} {row['get_median_ms']:>10.2f} {row['get_p99_ms']:>8.2f} "
                     f"{row['get_mb_per_s']:>9.0f}")
    for kind, reason in result["skipped"].items():
        lines.append(f"{kind}: skipped ({reason})")
    for row in result["pcie"] or []:
        lines.append(f"PCIe {row['blob_mb']:.0f} MB: pinned H2D {row['pinned_h2d_gb_s']:.1f} GB/s, D2H "
                     f"{row['pinned_d2h_gb_s']:.1f} GB/s, pageable H2D {row['pageable_h2d_gb_s']:.1f} GB/s")
    return "\n".join(lines)
