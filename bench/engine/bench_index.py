"""Index search latency: torch flat index vs FAISS flat, and plan() end to end."""

from __future__ import annotations

import pytest
import torch

from flexcache.engine.index import FaissFlatIndex, TorchFlatIndex

DIM = 384
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _unit(n: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("rows", [1_000, 10_000, 100_000])
@pytest.mark.parametrize("backend", ["faiss-cpu", f"torch-{DEVICE}"])
def test_search_one_query(benchmark, rows, backend):
    vectors, ids = _unit(rows, 0), torch.arange(rows)
    index = FaissFlatIndex(DIM) if backend == "faiss-cpu" else TorchFlatIndex(DIM, DEVICE)
    index.add(ids, vectors)
    query = _unit(1, 1).to(index.device)
    benchmark.group = f"search {rows} rows"
    benchmark.extra_info["device"] = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    sims, found = benchmark(index.search, query, 4)
    assert found[0, 0] >= 0


def test_plan_end_to_end(benchmark):
    from flexcache import CacheConfig, FlexCache, GenerationSignature

    cache = FlexCache(CacheConfig())
    signature = GenerationSignature("bench", "Euler", num_steps=50, height=480, width=832, num_frames=81,
                                    latent_shape=(16, 21, 60, 104))
    cache.embedder.embed(["warm-up"])
    benchmark.group = "plan"
    benchmark.extra_info["device"] = str(cache.embedder.device)
    plan = benchmark(cache.plan, "a red fox running through fresh snow at dawn", signature)
    assert not plan.hit
