"""The latent codec: latents <-> self-describing blobs (`latent`), their container
(`container`) and the lossless (entropy) stage (`lossless`: zstd, deflate, lz4 on
CPU; nvCOMP on GPU). docs/format.md describes every byte."""

from flexcache.codec.container import BlobHeader, read_header
from flexcache.codec.latent import (
    CODEC_REGISTRY,
    LatentCodec,
    LosslessCodec,
    QuantizedCodec,
    QuantizedParams,
    build_codec,
    describe_blob,
    read_quantized_params,
)

__all__ = [
    "BlobHeader", "CODEC_REGISTRY", "LatentCodec", "LosslessCodec", "QuantizedCodec", "QuantizedParams",
    "build_codec", "describe_blob", "read_header", "read_quantized_params",
]
