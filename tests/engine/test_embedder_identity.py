"""A cache never compares vectors of two embedders: entries carry the identity of the embedder that
made their vectors, and a cache restoring entries of another (or of none) re-embeds their text."""

from __future__ import annotations

import json

import torch

from flexcache import CacheConfig, FlexCache
from flexcache.engine.embedder import embedder_identity, exact_only_vector
from flexcache.engine.records import decode_entry_meta

PROMPT = "a paper boat drifting down a rain-soaked city street"


class HashEmbedder:
    """A stand-in embedder of another identity: each text's vector drawn from its hash."""

    def __init__(self, dim: int, identity: str) -> None:
        self.dim, self.identity, self.device = dim, identity, torch.device("cpu")
        self.embedded: list[str] = []

    def embed(self, texts):
        self.embedded += list(texts)
        return torch.stack([exact_only_vector(t, self.dim) for t in texts])


def disk_config(path):
    return CacheConfig.from_dict({
        "embedder": {"device": "cpu"}, "index": {"device": "cpu"},
        "store": {"tiers": [{"kind": "memory", "capacity_bytes": "1MiB"},
                            {"kind": "disk", "capacity_bytes": "64MiB", "path": str(path)}]}})


def fill(cache, signature, prompt=PROMPT):
    plan = cache.plan(prompt, signature)
    cache.insert(plan, {step: torch.randn(signature.latent_shape) for step in plan.checkpoint_steps})
    cache.store.drain()


def test_entries_record_the_embedder_that_made_their_vectors(tmp_path, embedder, signature):
    with FlexCache(disk_config(tmp_path), embedder=embedder) as cache:
        fill(cache, signature)
        metas = [meta for _, meta in cache.store.tiers[1].scan()]
    assert metas and all(json.loads(meta)["embedder"] == "all-MiniLM-L6-v2" for meta in metas)
    record, _ = decode_entry_meta(metas[0], 384, embedder="all-MiniLM-L6-v2")
    assert record.embedder == embedder_identity(embedder) == "all-MiniLM-L6-v2"


def test_another_embedder_re_embeds_restored_entries_instead_of_comparing_them(tmp_path, embedder, signature):
    with FlexCache(disk_config(tmp_path), embedder=embedder) as first:
        fill(first, signature)
        entries = len(first.entries())
    for dim in (384, 512):  # the same dimension (another space all the same) and another
        other = HashEmbedder(dim, f"hash-{dim}")
        with FlexCache(disk_config(tmp_path), embedder=other) as second:
            assert len(second.entries()) == entries and second.stats()["corrupt_blobs"] == 0
            (record,) = second._records.values()
            assert record.embedder == f"hash-{dim}"
            assert torch.equal(record.embedding, exact_only_vector(PROMPT, dim))  # its own vector, not MiniLM's
            assert record.parts is not None and torch.equal(record.object_embedding,
                                                            exact_only_vector(record.parts[0], dim))
            assert second.plan(PROMPT, signature).hit
    with FlexCache(disk_config(tmp_path), embedder=embedder) as back:  # the entries are still whole
        assert len(back.entries()) == entries and back.plan(PROMPT, signature).hit


def test_an_entry_of_the_same_identity_is_trusted_and_one_of_an_earlier_version_re_embedded(
        tmp_path, embedder, signature):
    with FlexCache(disk_config(tmp_path), embedder=embedder) as first:
        fill(first, signature)
        key, meta = next(iter(first.store.tiers[1].scan()))
    data = json.loads(meta)
    del data["embedder"]  # as entries written before identities were recorded
    legacy = json.dumps(data).encode()
    claims = HashEmbedder(384, "all-MiniLM-L6-v2")
    with FlexCache(disk_config(tmp_path), embedder=claims) as second:
        assert second.entries() and PROMPT not in claims.embedded  # restored as written: same identity
        assert second.adopt(key, legacy, 1)
        assert PROMPT in claims.embedded  # the unnamed one was re-embedded
