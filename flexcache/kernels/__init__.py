"""Compute kernels: Triton (`triton/`, @triton.jit only), their wrappers (`ops`) and the torch reference.

Triton is imported only when a Triton kernel is chosen; importing this package needs torch alone.
"""

from flexcache.kernels.noise import seeded_noise
from flexcache.kernels.ops import Backend, all_finite, resolve_backend

__all__ = ["Backend", "all_finite", "resolve_backend", "seeded_noise"]
