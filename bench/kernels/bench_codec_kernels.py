"""Encode/decode throughput of the codec kernels, in GB/s of fp32 latent processed.

TORCH backend on CPU; TRITON on CUDA when present. A plain copy of the same
latent (``clone``) is timed in the same run as the bandwidth baseline.

    python -m pytest bench/kernels --benchmark-only --benchmark-group-by=group
"""

from __future__ import annotations

import pytest
import torch

from flexcache.kernels import ops

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKEND = "triton" if DEVICE == "cuda" else "torch"
SHAPE = (16, 21, 60, 104)  # Wan2.1 480p, 81 frames
NBYTES = 16 * 21 * 60 * 104 * 4


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def latent():
    eps = ops.randn(7, SHAPE, DEVICE)
    smooth = torch.randn(SHAPE, device=DEVICE).cumsum(-1) / 20
    return 0.8 * eps + 0.2 * smooth


def _record(benchmark, label):
    benchmark.group = f"codec kernels {DEVICE}"
    benchmark.extra_info["device"] = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    benchmark.extra_info["backend"] = BACKEND
    benchmark.extra_info["what"] = label


def test_copy_baseline(benchmark, latent):
    _record(benchmark, "clone of the latent (bandwidth baseline)")

    def run():
        out = latent.clone()
        _sync()
        return out

    benchmark(run)
    benchmark.extra_info["gb_per_s"] = NBYTES / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("residual", [False, True])
def test_encode(benchmark, latent, bits, residual):
    _record(benchmark, f"encode {bits} bits, residual={residual}")

    def run():
        out = ops.encode(latent, seed=7 if residual else None, noise_scale=0.8 if residual else 0.0, bits=bits,
                         block=256, backend=BACKEND)
        _sync()
        return out

    benchmark(run)
    benchmark.extra_info["gb_per_s"] = NBYTES / benchmark.stats.stats.median / 1e9


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("residual", [False, True])
def test_decode(benchmark, latent, bits, residual):
    kwargs = dict(seed=7 if residual else None, noise_scale=0.8 if residual else 0.0, bits=bits, block=256,
                  backend=BACKEND)
    packed, scales = ops.encode(latent, **kwargs)
    _record(benchmark, f"decode {bits} bits, residual={residual}")

    def run():
        out = ops.decode(packed, scales, SHAPE, **kwargs)
        _sync()
        return out

    benchmark(run)
    benchmark.extra_info["gb_per_s"] = NBYTES / benchmark.stats.stats.median / 1e9
