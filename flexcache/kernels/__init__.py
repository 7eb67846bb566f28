"""Latent codecs and (later) their Triton kernels; torch-only on import."""
