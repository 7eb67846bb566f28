"""Seeded initial noise, so a stored seed regenerates a run's starting point."""

from __future__ import annotations

import torch

SEED_LIMIT = 2**64  # seeds are unsigned 64-bit, as torch.Generator.initial_seed() returns them


def is_valid_seed(seed: object) -> bool:
    """Whether `seed` is an int a run's noise can be drawn from (0 .. 2**64-1)."""
    return isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < SEED_LIMIT


def seeded_noise(shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise determined by `seed` alone, identical on every device.

    Drawn on the CPU with torch's generator and then moved, so the same seed
    gives the same noise on CPU and GPU. (The compressing codec issue replaces
    this with a counter-based Philox generator that Triton can regenerate
    in-kernel.)
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
