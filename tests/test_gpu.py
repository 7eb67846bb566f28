"""GPU paths: run only where CUDA exists (marked `gpu`, skipped otherwise)."""

from __future__ import annotations

import pytest
import torch

from flexcache.codec.latent import LosslessCodec
from flexcache.engine.index import FaissFlatIndex, TorchFlatIndex
from flexcache.kernels.noise import seeded_noise
from tests.kernels.rounding import assert_noise_close

pytestmark = pytest.mark.gpu
# A float32 dot product of two 384-d unit vectors is off by at most 384 roundings of 2^-24 (2.3e-5).
SIMILARITY_ROUNDING = 1e-4


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
    # Each GPU result is the true top 8 (float64 on the CPU): two entries whose similarities differ
    # by less than float32 rounding may come in either order on either index, so ids are compared
    # through their similarities, not position by position.
    live = torch.ones(len(ids), dtype=torch.bool)
    live[::7] = False
    exact = queries.double() @ vectors[live].double().T
    true_top = exact.topk(8, dim=1).values
    row_of = {int(i): row for row, i in enumerate(ids[live].tolist())}
    for query, found in enumerate(gpu_ids.cpu().tolist()):
        assert len(set(found)) == 8 and all(i in row_of for i in found)  # eight distinct live entries
        found_sims = exact[query, [row_of[i] for i in found]]
        torch.testing.assert_close(found_sims, true_top[query], atol=SIMILARITY_ROUNDING, rtol=0)
    torch.testing.assert_close(gpu_sims.cpu().double(), true_top, atol=SIMILARITY_ROUNDING, rtol=0)
    torch.testing.assert_close(gpu_sims.cpu(), cpu_sims, atol=SIMILARITY_ROUNDING, rtol=0)


def test_seeded_noise_on_cuda_matches_the_cpu_reference():
    # Philox is bit-identical; log/cos in Box-Muller come from CUDA's math library on the GPU.
    gpu = seeded_noise((4, 3, 8, 8), 77, "cuda").cpu()
    assert_noise_close(gpu, seeded_noise((4, 3, 8, 8), 77))


def test_codec_round_trip_from_and_to_cuda():
    x = torch.randn(16, 3, 8, 8, device="cuda", dtype=torch.bfloat16)
    codec = LosslessCodec()
    y = codec.decode(codec.encode(x, seed=3), device="cuda")
    assert y.device.type == "cuda" and torch.equal(x, y)
