"""Seeded initial noise, so a stored seed regenerates a run's starting point."""

from __future__ import annotations

import torch

from flexcache.kernels import ops


def seeded_noise(shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise determined by `seed` alone: ``tl.randn(seed, arange(numel))``.

    Counter-based Philox (as Triton implements it), so the codec can
    regenerate exactly this noise in-kernel and store only x_K - c * eps.
    On CUDA it runs as a Triton kernel; elsewhere as its torch reference (the
    two agree to about 1e-6: log and cos differ in the last bit).

    Example:
        >>> torch.equal(seeded_noise((2, 3), seed=7), seeded_noise((2, 3), seed=7))
        True
    """
    return ops.randn(int(seed), tuple(shape), device).to(dtype)
