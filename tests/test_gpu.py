"""GPU paths: run only where CUDA exists (marked `gpu`, skipped otherwise)."""

from __future__ import annotations

import pytest
import torch

from flexcache.codec.latent import LosslessCodec
from flexcache.engine.index import FaissFlatIndex, TorchFlatIndex
from flexcache.kernels.noise import seeded_noise

pytestmark = pytest.mark.gpu


def _unit(n: int, dim: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


def test_torch_index_on_cuda_matches_cpu_faiss():
    vectors, queries = _unit(5000, 384, 0), _unit(16, 384, 1)
    ids = torch.randperm(10**6, generator=torch.Generator().manual_seed(2))[:5000]
    gpu, cpu = TorchFlatIndex(384, "cuda"), FaissFlatIndex(384)
    gpu.add(ids, vectors)
    cpu.add(ids, vectors)
    removed = ids[::7]
    gpu.remove(removed)
    cpu.remove(removed)
    gpu_sims, gpu_ids = gpu.search(queries.cuda(), 8)
    cpu_sims, cpu_ids = cpu.search(queries, 8)
    assert gpu_sims.device.type == "cuda"
    assert torch.equal(gpu_ids.cpu(), cpu_ids)
    torch.testing.assert_close(gpu_sims.cpu(), cpu_sims, atol=1e-4, rtol=0)


def test_seeded_noise_on_cuda_matches_the_cpu_reference():
    # Philox is bit-identical; log/cos in Box-Muller may differ in the last float32 bit.
    gpu = seeded_noise((4, 3, 8, 8), 77, "cuda").cpu()
    assert (gpu - seeded_noise((4, 3, 8, 8), 77)).abs().max() <= 1e-6


def test_codec_round_trip_from_and_to_cuda():
    x = torch.randn(16, 3, 8, 8, device="cuda", dtype=torch.bfloat16)
    codec = LosslessCodec()
    y = codec.decode(codec.encode(x, seed=3), device="cuda")
    assert y.device.type == "cuda" and torch.equal(x, y)
