"""What a disk directory or a Redis tier holds, read without changing it (`flexcache inspect`).

Per entry: tenant, writer, step, sizes, codec parameters and age (from the
metadata's write time, or the file's). Every integrity frame is checked on
the way (`store.integrity`); ``verify`` also decodes every blob. Damaged
entries are listed with the reason, never repaired or moved. Hit counts live
in the serving processes (`stats()`, the metrics), not in the tiers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from flexcache.codec.latent import build_codec, describe_blob
from flexcache.core.errors import CorruptBlobError, FlexCacheError, TierUnavailableError
from flexcache.engine.records import decode_entry_meta
from flexcache.engine.solver_bundle import split_bundle
from flexcache.store.integrity import unframe
from flexcache.store.readonly import RawEntry, read_disk_entries

CODEC_FIELDS = ("codec", "bits", "block", "budget_kind", "budget", "achieved_relative_l2")


def disk_entries(directory: str) -> Iterable[RawEntry]:
    try:
        yield from read_disk_entries(directory)
    except FileNotFoundError as exc:
        raise FlexCacheError(f"{exc}; point --disk at a disk tier's path (store.tiers[disk].path)") from None


def redis_entries(url: str, *, cache_name: str = "flexcache", prefix: str = "flexcache") -> Iterable[RawEntry]:
    """The entries a Redis tier holds, as stored.

    Raises:
        TierUnavailableError: the server cannot be reached, or a read failed on the way
            (an empty listing of a server that did not answer would look like an empty tier).
    """
    import redis

    from flexcache.store.redis import RedisTier

    tier = RedisTier(url, 1, cache_name=cache_name, prefix=prefix, socket_timeout=5.0, breaker_failures=1)
    advice = "check the URL given to --redis and that the server is running"
    try:
        try:
            tier.last_event_id()  # a cheap read that raises, where the tier's listing would answer []
        except TierUnavailableError as exc:
            raise TierUnavailableError(f"cannot read the redis tier at {tier.where}: {exc}; {advice}") from None
        keys = sorted(tier.keys())
        if tier.stats().errors:
            raise TierUnavailableError(f"listing the redis tier at {tier.where} failed (the server stopped "
                                       f"answering); {advice}")
        try:
            rows = tier.read_raw(keys)
        except redis.RedisError as exc:
            raise TierUnavailableError(f"reading the redis tier at {tier.where} failed: {type(exc).__name__}: "
                                       f"{exc}; {advice}") from None
        for key, meta, blob in rows:
            problem = None if meta is not None and blob is not None else "metadata or blob missing"
            yield RawEntry(key, meta, blob, len(blob or b""), None, problem)
    finally:
        tier.close()


def inspect_entries(raw_entries: Iterable[RawEntry], *, verify: bool = False) -> dict[str, Any]:
    """A report of the entries: ``{"entries": [...], "damaged": [...], "tenants": {...}}`` (JSON-safe)."""
    now = time.time()
    entries, damaged = [], []
    for raw in raw_entries:
        if raw.problem is not None:
            damaged.append({"key": raw.key, "problem": raw.problem})
            continue
        try:
            meta = bytes(unframe(raw.meta))
            record, entry = decode_entry_meta(meta)
            if entry.key != raw.key:
                raise CorruptBlobError(f"metadata describes {entry.key}")
            blob, state = split_bundle(bytes(unframe(raw.blob)))
            info = describe_blob(blob)
            if verify:
                latent = build_codec(info["codec"]).decode(blob)
                if tuple(latent.shape) != record.signature.latent_shape:
                    raise CorruptBlobError(f"blob decodes to {tuple(latent.shape)}, the signature says "
                                           f"{record.signature.latent_shape}")
        except (CorruptBlobError, FlexCacheError, ValueError) as exc:
            damaged.append({"key": raw.key, "problem": f"{type(exc).__name__}: {exc}"})
            continue
        created = json.loads(meta).get("created") or raw.modified
        entries.append({
            "key": raw.key, "tenant": record.tenant, "writer": record.writer, "prompt": record.prompt,
            "step": entry.step, "num_steps": entry.num_steps, "stored_bytes": raw.nbytes,
            "raw_bytes": _raw_bytes(record.signature), "solver_state": state is not None,
            "mask": entry.mask is not None, "age_s": None if created is None else max(0.0, now - created),
            **{name: info.get(name) for name in CODEC_FIELDS},
        })
    tenants: dict[str, dict[str, Any]] = {}
    for item in entries:
        tenant = tenants.setdefault(item["tenant"], {"entries": 0, "stored_bytes": 0, "writers": set()})
        tenant["entries"] += 1
        tenant["stored_bytes"] += item["stored_bytes"]
        tenant["writers"].add(item["writer"] or "(none: written before writers were recorded)")
    for tenant in tenants.values():
        tenant["writers"] = sorted(tenant["writers"])
    return {"entries": entries, "damaged": damaged, "tenants": tenants, "verified": verify}


def _raw_bytes(signature) -> int:
    size = 1
    for dim in signature.latent_shape:
        size *= dim
    return size * signature.torch_dtype.itemsize


def format_inspection(report: dict[str, Any]) -> str:
    lines = ["| tenant | entries | stored | writers |", "|---|---|---|---|"]
    for name, tenant in sorted(report["tenants"].items()):
        lines.append(f"| {name} | {tenant['entries']} | {_size(tenant['stored_bytes'])} | "
                     f"{', '.join(tenant['writers'])} |")
    lines += ["", "| key | writer | step | stored | ratio | codec | bits | achieved rel. L2 | age | prompt |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for e in report["entries"]:
        ratio = e["raw_bytes"] / e["stored_bytes"] if e["stored_bytes"] else 0.0
        error = "-" if e["achieved_relative_l2"] is None else f"{e['achieved_relative_l2']:.4f}"
        age = "-" if e["age_s"] is None else _age(e["age_s"])
        prompt = e["prompt"] if len(e["prompt"]) <= 48 else e["prompt"][:45] + "..."
        lines.append(f"| {e['key']} | {e['writer'] or '-'} | {e['step']}/{e['num_steps']} | {_size(e['stored_bytes'])} "
                     f"| {ratio:.1f} | {e['codec']} | {e['bits'] or '-'} | {error} | {age} | {prompt} |")
    lines.append("")
    lines.append(f"{len(report['entries'])} entries readable, {len(report['damaged'])} damaged"
                 + (" (every blob decoded)" if report["verified"] else " (integrity frames checked)")
                 + "; hit counts are the serving processes' (stats(), metrics), not stored in tiers")
    lines += [f"DAMAGED {d['key']}: {d['problem']}" for d in report["damaged"]]
    return "\n".join(lines)


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def _age(seconds: float) -> str:
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds:.0f} s"
