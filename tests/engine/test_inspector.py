"""`flexcache inspect`: what a disk directory or a Redis tier holds, read without changing it."""

from __future__ import annotations

import json
import os

import pytest
import torch

from flexcache import CacheConfig, FlexCache
from flexcache.cli import main

PROMPTS = ["a paper boat drifting down a rain-soaked city street", "a hummingbird hovering over bright pink flowers"]


def fill(cache, signature):
    for index, prompt in enumerate(PROMPTS):
        plan = cache.plan(prompt, signature, tenant="acme", user=f"u{index}").as_miss()
        cache.insert(plan, {s: torch.randn(signature.latent_shape) for s in plan.checkpoint_steps},
                     {s: 0.8 for s in plan.checkpoint_steps})


def snapshot(directory):
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[path] = f.read()
    return out


def test_inspect_lists_a_disk_tier_by_tenant_and_reports_damage_without_touching_it(tmp_path, embedder, signature,
                                                                                 capsys):
    config = CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"},
                                    "store": {"tiers": [{"kind": "disk", "capacity_bytes": "64MiB",
                                                         "path": str(tmp_path)}]}})
    with FlexCache(config, embedder=embedder) as cache:
        fill(cache, signature)
    assert main(["inspect", "--disk", str(tmp_path), "--verify", "--json", str(tmp_path / "report.json")]) == 0
    out = capsys.readouterr().out
    assert "| acme | 10 |" in out and "u0, u1" in out and "10 entries readable, 0 damaged" in out
    report = json.loads((tmp_path / "report.json").read_text())
    (tmp_path / "report.json").unlink()
    entry = report["entries"][0]
    assert entry["codec"] == "flexcache" and entry["bits"] and 0 < entry["achieved_relative_l2"] < 0.5
    assert entry["age_s"] is not None and entry["age_s"] < 600 and entry["writer"] in ("u0", "u1")

    victim = next(p for p in snapshot(tmp_path) if p.endswith(".fxc"))
    with open(victim, "r+b") as f:  # one flipped byte near the end: inside the blob's framed body
        f.seek(-3, os.SEEK_END)
        byte = f.read(1)
        f.seek(-3, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    before = snapshot(tmp_path)
    assert main(["inspect", "--disk", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "9 entries readable, 1 damaged" in out and "DAMAGED acme." in out
    assert snapshot(tmp_path) == before  # nothing moved, removed or rewritten


def test_inspect_of_a_folder_that_is_no_disk_tier_says_so(tmp_path, capsys):
    assert main(["inspect", "--disk", str(tmp_path / "nothing")]) == 2
    assert "no disk tier" in capsys.readouterr().err


@pytest.mark.redis
def test_inspect_reads_a_redis_tier_without_writing(redis_url, redis_prefix, embedder, signature, capsys):
    import redis

    from flexcache.store import ChecksummedTier
    from flexcache.store.redis import RedisTier

    tier = ChecksummedTier(RedisTier(redis_url, 64 << 20, prefix=redis_prefix, cache_name="inspected"))
    config = CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"}})
    with FlexCache(config, embedder=embedder, tiers=[tier]) as cache:
        fill(cache, signature)
    client = redis.Redis.from_url(redis_url)
    blob_key = next(k for k in client.scan_iter(match=f"{{{redis_prefix}:inspected}}:acme:*:blob"))
    damaged = bytearray(client.get(blob_key))
    damaged[-1] ^= 0xFF
    client.set(blob_key, bytes(damaged))
    before = {k: client.dump(k) for k in client.scan_iter(match=f"{{{redis_prefix}:*")}
    code = main(["inspect", "--redis", redis_url, "--prefix", redis_prefix, "--cache-name", "inspected"])
    out = capsys.readouterr().out
    assert code == 1 and "9 entries readable, 1 damaged" in out
    assert {k: client.dump(k) for k in client.scan_iter(match=f"{{{redis_prefix}:*")} == before


def closed_port() -> int:
    import socket

    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_inspect_of_a_redis_that_refuses_the_connection_fails_and_says_where(capsys):
    url = f"redis://127.0.0.1:{closed_port()}/0"
    assert main(["inspect", "--redis", url]) == 2
    captured = capsys.readouterr()
    assert f"cannot read the redis tier at {url}" in captured.err and "--redis" in captured.err
    assert "entries readable" not in captured.out  # no empty, healthy-looking report


@pytest.mark.redis
def test_inspect_fails_when_the_server_stops_answering_midway(redis_url, redis_prefix, monkeypatch, capsys):
    import redis

    from flexcache.store.redis import RedisTier

    def dropped(self, keys, *, blobs=True):
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(RedisTier, "read_raw", dropped)
    assert main(["inspect", "--redis", redis_url, "--prefix", redis_prefix]) == 2
    assert "reading the redis tier" in capsys.readouterr().err
