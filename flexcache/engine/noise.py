"""Seeded initial noise, so a stored seed regenerates a run's starting point."""

from __future__ import annotations

import torch

SEED_LIMIT = 2**64  # seeds are unsigned 64-bit, as torch.Generator.initial_seed() returns them


def is_valid_seed(seed: object) -> bool:
    """Whether `seed` is an int a run's noise can be drawn from (0 .. 2**64-1)."""
    return isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < SEED_LIMIT


def seeded_noise(shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise determined by `seed` alone: ``tl.randn(seed, arange(numel))``.

    Counter-based Philox (as Triton implements it), so the codec can
    regenerate exactly this noise in-kernel and store only x_K - c * eps.
    On CUDA it runs as a Triton kernel; elsewhere as its torch reference (the
    two agree to about 1e-6: log and cos differ in the last bit).
    """
    from flexcache.kernels import ops  # the kernels package imports this module

    return ops.randn(int(seed), tuple(shape), device).to(dtype)
