"""How far two float32 computations of the same formula may drift apart: the test slack.

A compiled Triton kernel and the torch reference do the same arithmetic, but
may round it differently (a fused multiply-add, another division, another math
library's log and cos). Tests compare them within these bounds, never bit for bit.
"""

from __future__ import annotations

import torch

FLOAT32_SLACK = 2.0**-20  # 16 float32 roundings (unit roundoff 2^-24), relative to the magnitudes involved
FLOAT16_STEP = 2.0**-10  # one float16 step is at most this much of a normal value
BOX_MULLER_RADIUS = 5.7  # sqrt(-2 ln u) for u >= 1e-7: the largest factor on cos's rounding error


def assert_noise_close(noise: torch.Tensor, oracle: torch.Tensor) -> None:
    """Philox normals from two backends: the same up to log/cos rounding.

    Philox is integer arithmetic and bit-identical everywhere; Box-Muller's log
    and cos come from different math libraries (numpy, torch, CUDA), each a few
    float32 units off, and cos's error is scaled by the radius.
    """
    noise, oracle = noise.double().cpu(), oracle.double().cpu()
    bound = FLOAT32_SLACK * (BOX_MULLER_RADIUS + oracle.abs())
    worst = float(((noise - oracle).abs() - bound).max())
    assert worst <= 0, f"noise differs beyond log/cos rounding (by {worst:.3g} past the bound)"
