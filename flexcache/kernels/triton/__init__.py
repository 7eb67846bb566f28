"""Triton kernels (``@triton.jit`` code only); launched from `flexcache.kernels.ops`."""
