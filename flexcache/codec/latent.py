"""Latent codecs: `LatentCodec` and its two implementations.

* `LosslessCodec` (codec id 1): the latent's raw bytes; bit-exact.
* `QuantizedCodec` (codec id 2, config name ``"flexcache"``): seed-noise
  residual, optional closed-loop temporal delta and per-block quantization
  (the kernels in `flexcache.kernels.ops`), at the smallest bit width whose
  measured error meets the budget, then a lossless stage
  (`flexcache.codec.lossless`). The achieved error is recorded in the blob.

Both write the container of `flexcache.codec.container`; docs/format.md
describes every byte. A latent on a CUDA device is encoded into a
`DeviceBlob` where the whole path can stay there (nvCOMP for the lossless
stage), and a `DeviceBlob` is decoded on its device: its headers come from
its host head, its payload never leaves the device.
"""

from __future__ import annotations

import abc
import math
import struct
from dataclasses import dataclass

import numpy as np
import torch

from flexcache.codec import lossless
from flexcache.codec.container import (
    _DTYPE_CODES,
    HEADER_PREFIX,
    MAX_NDIM,
    BlobHeader,
    pack_header,
    read_header,
)
from flexcache.codec.devices import check_device
from flexcache.core.blob import Blob, DeviceBlob
from flexcache.core.config import CodecConfig
from flexcache.core.errors import (
    ConfigError,
    CorruptBlobError,
    InvalidLatentError,
)
from flexcache.core.types import is_valid_seed
from flexcache.kernels import ops, reference


class LatentCodec(abc.ABC):
    """Turns a latent tensor into a self-describing blob and back.

    `encode` may use `seed` (the seed of the run's initial noise) and `sigma`
    (the noise level of the captured step) to code less; a lossless codec
    ignores both but records the seed.
    """

    name: str

    def __init__(self, config: CodecConfig | None = None) -> None:
        self.config = config or CodecConfig(name=self.name)

    @abc.abstractmethod
    def encode(self, latent: torch.Tensor, *, seed: int | None = None, sigma: float | None = None,
               frame_axis: int = 1) -> Blob:
        """A blob: bytes, or a `DeviceBlob` for a latent on a device where the codec stays on it.

        `frame_axis`: the dimension that indexes video frames (Wan: 1 of (C, T, H, W)).
        """

    @abc.abstractmethod
    def decode(self, blob: Blob, device: torch.device | str | None = None) -> torch.Tensor:
        """The latent, on `device` (default: the blob's device; CPU for bytes).

        Raises:
            InvalidDeviceError: `device` is not one this machine has; checked
                before the blob is read.
            CorruptBlobError: the blob fails its own format checks (and only
                then: a missing backend, an out-of-memory error or any other
                failure while decoding propagates as it is, so a caller never
                takes it for damage in the blob).
        """


def _parse(blob: Blob) -> BlobHeader:
    """The header of a host or device blob (a device blob's comes from its host head)."""
    if isinstance(blob, DeviceBlob):
        return read_header(blob.to_host(0, HEADER_PREFIX), total_nbytes=len(blob))
    return read_header(blob)


def _payload_prefix(blob: Blob, header: BlobHeader, nbytes: int) -> bytes | memoryview:
    start = header.header_nbytes
    if isinstance(blob, DeviceBlob):
        return blob.to_host(start, start + nbytes)
    return memoryview(blob)[start:start + nbytes]


def _with_header(header: bytes, body: Blob) -> Blob:
    """`header` in front of `body`; on `body`'s device when it is a device blob (one tiny upload)."""
    if isinstance(body, DeviceBlob):
        return body.prepend(header)
    return header + bytes(body)


def _check_container_inputs(latent: torch.Tensor, seed: int | None) -> None:
    """What every codec's blob container holds: a non-empty tensor of a known dtype, <= 8-d, a 64-bit seed.

    An empty latent is refused: no pipeline makes one, and a generation
    signature cannot describe one, so a cache could never serve it.
    """
    if not isinstance(latent, torch.Tensor):
        raise InvalidLatentError(f"a latent must be a torch.Tensor; got {type(latent).__name__}")
    if latent.numel() == 0:
        raise InvalidLatentError(f"a latent must hold at least one value; got shape {tuple(latent.shape)}")
    if latent.dtype not in _DTYPE_CODES:
        raise InvalidLatentError(
            f"latent dtype {latent.dtype} is not supported; use float32, float16, bfloat16 or float64"
        )
    if latent.dim() > MAX_NDIM:
        raise InvalidLatentError(f"latent has {latent.dim()} dimensions; at most {MAX_NDIM} are supported")
    if seed is not None and not is_valid_seed(seed):
        raise InvalidLatentError(f"seed must be an int in 0 .. 2**64-1 or None; got {seed!r}")


class LosslessCodec(LatentCodec):
    """Raw latent bytes in the blob container; bit-exact round trip.

    Example:
        >>> codec = LosslessCodec()
        >>> x = torch.randn(2, 3, 4)
        >>> torch.equal(codec.decode(codec.encode(x, seed=7)), x)
        True
    """

    name = "lossless"

    def encode(self, latent: torch.Tensor, *, seed: int | None = None, sigma: float | None = None,
               frame_axis: int = 1) -> Blob:
        _check_container_inputs(latent, seed)
        flat = latent.detach().contiguous()
        header = pack_header(self.name, flat.dtype, tuple(flat.shape), seed, flat.numel() * flat.element_size())
        raw = flat.reshape(-1).view(torch.uint8)
        if raw.device.type != "cpu":  # the latent's bytes stay where they are
            return _with_header(header, DeviceBlob(raw, b""))
        return header + raw.numpy().tobytes()

    def decode(self, blob: Blob, device: torch.device | str | None = None) -> torch.Tensor:
        device = check_device(device)
        header = _parse(blob)
        if header.codec != self.name:
            raise CorruptBlobError(f"blob was written by codec {header.codec!r}, not {self.name!r}")
        expected = header.dtype.itemsize
        for size in header.shape:
            expected *= size
        if header.payload_nbytes != expected:
            raise CorruptBlobError(f"payload holds {header.payload_nbytes} bytes; shape {header.shape} needs "
                                   f"{expected}")
        if isinstance(blob, DeviceBlob):
            raw = blob.view(header.header_nbytes)
            if raw.storage_offset() % header.dtype.itemsize:
                raw = raw.clone()  # a device copy, so the bytes can be viewed as the latent's dtype
            latent = raw.view(header.dtype).reshape(header.shape)
        else:
            raw = torch.frombuffer(bytearray(memoryview(blob)[header.header_nbytes:]), dtype=torch.uint8)
            latent = raw.view(header.dtype).reshape(header.shape)
        return latent if device is None else latent.to(device)


# bits, flags, frame axis, budget kind, (4 reserved), block, noise scale c, sigma, budget,
# achieved rms, achieved relative L2, scale bytes, packed bytes
_QUANT_PARAMS = struct.Struct("<BBBBxxxxIfffffQQ")
_FLAG_RESIDUAL = 1
_FLAG_TEMPORAL_DELTA = 2
_BUDGET_KINDS = ("sigma", "relative_l2")


@dataclass(frozen=True)
class QuantizedParams:
    """What a `QuantizedCodec` blob records about how it was made."""

    bits: int
    block: int
    residual: bool
    temporal_delta: bool
    frame_axis: int
    noise_scale: float
    sigma: float | None
    budget_kind: str
    budget: float
    achieved_rms: float
    achieved_relative_l2: float
    scales_nbytes: int
    packed_nbytes: int


def _rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((a.double() - b.double()) ** 2)))


class QuantizedCodec(LatentCodec):
    """The compressing codec (config name ``"flexcache"``).

    Args:
        config: a `CodecConfig`; defaults when omitted.

    `encode(latent, seed=..., sigma=...)`: with a seed (and
    ``seed_residual``) it codes x - c * eps; with sigma (the noise level of the
    captured step) the budget is ``sigma_budget * sigma`` rms, otherwise
    ``relative_l2_budget``. It tries bit widths from the smallest whose
    predicted error fits, decodes to measure the real error, and keeps the
    first that meets the budget; if none does it stores the latent losslessly.

    Example:
        >>> codec = QuantizedCodec()
        >>> x = torch.randn(16, 5, 8, 8)
        >>> y = codec.decode(codec.encode(x, seed=1, sigma=1.0))
        >>> float(torch.sqrt(torch.mean((y - x) ** 2))) <= 0.02
        True
    """

    name = "flexcache"

    def __init__(self, config: CodecConfig | None = None) -> None:
        super().__init__(config)
        self._lossless = LosslessCodec()

    def _rms_limit(self, x: torch.Tensor, sigma: float | None) -> tuple[str, float, float]:
        mode = self.config.budget_mode
        if mode == "sigma" and sigma is None:
            raise InvalidLatentError("codec.budget_mode is 'sigma' but no sigma was given for this latent")
        if sigma is not None and (not math.isfinite(sigma) or sigma < 0):
            raise InvalidLatentError(f"sigma must be a finite non-negative noise level; got {sigma!r}")
        if mode == "sigma" or (mode == "auto" and sigma is not None):
            return "sigma", self.config.sigma_budget, self.config.sigma_budget * float(sigma)
        norm_rms = float(torch.sqrt(torch.mean(x.double() ** 2)))
        return "relative_l2", self.config.relative_l2_budget, self.config.relative_l2_budget * norm_rms

    def _predicted_rms(self, r: torch.Tensor, bits: int, frame_axis: int) -> float:
        # Uniform quantization error ~ scale^2 / 12 per value; the delta is taken open-loop here.
        groups, frames, span = reference.frame_view_shape(tuple(r.shape), frame_axis)
        view = r.reshape(groups, frames, span)
        if self.config.temporal_delta and frames > 1:
            view = torch.cat([view[:, :1], view[:, 1:] - view[:, :-1]], dim=1)
        block = self.config.block_size
        padded = torch.nn.functional.pad(view, (0, -(-span // block) * block - span))
        amax = padded.reshape(groups, frames, -1, block).abs().amax(dim=-1)
        scale = amax / (2 ** (bits - 1) - 1)
        return float(torch.sqrt(torch.mean(scale.double() ** 2) / 12.0))

    def encode(self, latent: torch.Tensor, *, seed: int | None = None, sigma: float | None = None,
               frame_axis: int = 1) -> bytes:
        _check_container_inputs(latent, seed)
        ops.check_latent(latent)
        frame_axis = frame_axis if latent.dim() > 1 else 0
        cfg = self.config
        x = latent.detach().contiguous()
        x32 = x.to(torch.float32)
        budget_kind, budget, limit = self._rms_limit(x32, sigma)
        residual = cfg.seed_residual and seed is not None
        noise_scale = 0.0
        r = x32
        if residual:
            eps = ops.randn(seed, tuple(x.shape), x.device, cfg.backend)
            # Stored as float32: round now so encoder and decoder use the same c.
            noise_scale = float(np.float32(reference.fit_noise_scale(x32, eps)))
            r = x32 - torch.tensor(noise_scale, dtype=torch.float32, device=x.device) * eps
            residual = noise_scale != 0.0
        start = 0
        while start < len(cfg.bit_widths) - 1 and self._predicted_rms(r, cfg.bit_widths[start], frame_axis) > limit:
            start += 1
        for bits in cfg.bit_widths[start:]:
            kwargs = dict(seed=seed if residual else None, noise_scale=noise_scale, bits=bits,
                          block=cfg.block_size, temporal_delta=cfg.temporal_delta, frame_axis=frame_axis,
                          backend=cfg.backend)
            packed, scales = ops.encode(x32, **kwargs)
            decoded = ops.decode(packed, scales, tuple(x.shape), **kwargs).to(x.dtype)
            rms = _rms(decoded, x)
            if rms <= limit:
                break
        else:  # even the widest quantization misses the budget: keep the latent exactly
            return self._lossless.encode(latent, seed=seed, sigma=sigma, frame_axis=frame_axis)
        norm = float(torch.linalg.vector_norm(x.double()))
        relative = rms * math.sqrt(x.numel()) / norm if norm > 0 else 0.0
        scale_bytes = scales.reshape(-1).contiguous().view(torch.uint8)
        stream = lossless.compress(torch.cat([scale_bytes, packed]), cfg.lossless, level=cfg.lossless_level)
        flags = (_FLAG_RESIDUAL if residual else 0) | (_FLAG_TEMPORAL_DELTA if cfg.temporal_delta else 0)
        params = _QUANT_PARAMS.pack(
            bits, flags, frame_axis, _BUDGET_KINDS.index(budget_kind), cfg.block_size, noise_scale,
            float("nan") if sigma is None else float(sigma), budget, rms, relative,
            scale_bytes.numel(), packed.numel(),
        )
        header = pack_header(self.name, x.dtype, tuple(x.shape), seed, len(params) + len(stream))
        return _with_header(header + params, stream)  # a device blob when nvCOMP kept the stream on the GPU

    def decode(self, blob: Blob, device: torch.device | str | None = None) -> torch.Tensor:
        device = check_device(device)
        header = _parse(blob)
        if header.codec == LosslessCodec.name:
            return self._lossless.decode(blob, device)
        if header.codec != self.name:
            raise CorruptBlobError(f"blob was written by codec {header.codec!r}, not {self.name!r}")
        params = read_quantized_params(_payload_prefix(blob, header, _QUANT_PARAMS.size))
        _check_layout(header, params)
        start = header.header_nbytes + _QUANT_PARAMS.size
        if isinstance(blob, DeviceBlob):  # decoded on its device; only the head was read on the host
            stream: Blob = blob.suffix(start)
            target = blob.device if device is None else device
        else:
            stream = memoryview(blob)[start:]
            target = torch.device("cpu") if device is None else device
        # From here on only the lossless stage's own checks speak of damage: whatever else fails
        # (a missing backend, device memory, a bug) is raised as it is, never as a corrupt blob.
        data = lossless.decompress(stream, device=target)
        if data.numel() != params.scales_nbytes + params.packed_nbytes:
            raise CorruptBlobError(f"lossless stage gave {data.numel()} bytes; the blob records "
                                   f"{params.scales_nbytes + params.packed_nbytes}")
        scales = data[:params.scales_nbytes]
        if scales.storage_offset() % 2:
            scales = scales.clone()
        scales = scales.view(torch.float16)
        packed = data[params.scales_nbytes:]
        latent = ops.decode(
            packed, scales, header.shape, seed=header.seed if params.residual else None,
            noise_scale=params.noise_scale, bits=params.bits, block=params.block,
            temporal_delta=params.temporal_delta, frame_axis=params.frame_axis, backend=self.config.backend,
        )
        return latent.to(header.dtype)


def _check_layout(header: BlobHeader, params: QuantizedParams) -> None:
    """Refuse parameters that cannot describe a latent of the header's shape (before any decoding work).

    Raises:
        CorruptBlobError: the bit width, block, frame axis or seed is out of
            range, or the recorded scale or packed byte counts do not fit the shape.
    """
    shape = header.shape
    if not shape:
        raise CorruptBlobError("quantized blob records a 0-dimensional latent; the codec never writes one")
    try:
        ops.check_codec_params(bits=params.bits, block=params.block, frame_axis=params.frame_axis,
                               ndim=len(shape), seed=header.seed if params.residual else None)
    except (ConfigError, InvalidLatentError) as exc:  # here they describe the blob, not a caller's argument
        raise CorruptBlobError(f"blob parameters are inconsistent: {exc}") from None
    groups, frames, span = reference.frame_view_shape(shape, params.frame_axis)
    n_blocks = -(-span // params.block)
    packed = groups * frames * n_blocks * params.block * params.bits // 8
    scales = groups * frames * n_blocks * torch.finfo(torch.float16).bits // 8
    if (params.packed_nbytes, params.scales_nbytes) != (packed, scales):
        raise CorruptBlobError(f"blob records {params.packed_nbytes} packed and {params.scales_nbytes} scale bytes; "
                               f"shape {shape} at {params.bits} bits, block {params.block} needs {packed} and {scales}")


def read_quantized_params(payload: bytes | bytearray | memoryview) -> QuantizedParams:
    """The parameter section of a `QuantizedCodec` payload."""
    if len(payload) < _QUANT_PARAMS.size:
        raise CorruptBlobError("quantized payload is shorter than its parameter section")
    (bits, flags, frame_axis, kind, block, noise_scale, sigma, budget, rms, relative,
     scales_nbytes, packed_nbytes) = _QUANT_PARAMS.unpack_from(payload)
    if bits not in reference.BIT_WIDTHS or kind >= len(_BUDGET_KINDS) or block not in ops.BLOCK_SIZES:
        raise CorruptBlobError(f"quantized payload names bits={bits}, block={block}, budget kind={kind}")
    return QuantizedParams(
        bits=bits, block=block, residual=bool(flags & _FLAG_RESIDUAL),
        temporal_delta=bool(flags & _FLAG_TEMPORAL_DELTA), frame_axis=frame_axis, noise_scale=noise_scale,
        sigma=None if math.isnan(sigma) else sigma, budget_kind=_BUDGET_KINDS[kind], budget=budget,
        achieved_rms=rms, achieved_relative_l2=relative, scales_nbytes=scales_nbytes, packed_nbytes=packed_nbytes,
    )


def describe_blob(blob: Blob) -> dict:
    """Header and codec parameters of a blob as a plain dict (for reports).

    Example:
        >>> info = describe_blob(QuantizedCodec().encode(torch.randn(4, 3, 16, 16), seed=3, sigma=1.0))
        >>> info["codec"], info["shape"], info["bits"] <= 8
        ('flexcache', [4, 3, 16, 16], True)
    """
    header = _parse(blob)
    info = {"codec": header.codec, "dtype": str(header.dtype).replace("torch.", ""), "shape": list(header.shape),
            "seed": header.seed, "nbytes": len(blob)}
    if header.codec == QuantizedCodec.name:
        info.update(vars(read_quantized_params(_payload_prefix(blob, header, _QUANT_PARAMS.size))))
    return info


CODEC_REGISTRY: dict[str, type[LatentCodec]] = {LosslessCodec.name: LosslessCodec, QuantizedCodec.name: QuantizedCodec}


def build_codec(config: CodecConfig | str) -> LatentCodec:
    """The codec a `CodecConfig` (or a bare codec name) asks for, from `CODEC_REGISTRY`.

    Raises:
        ConfigError: a name no codec is registered under.

    Example:
        >>> build_codec("lossless").name
        'lossless'
    """
    if isinstance(config, str):
        if config not in CODEC_REGISTRY:
            raise ConfigError(f"unknown codec {config!r}; choose one of {', '.join(CODEC_REGISTRY)}")
        config = CodecConfig(name=config)
    try:
        cls = CODEC_REGISTRY[config.name]
    except KeyError:
        raise ConfigError(f"unknown codec {config.name!r}; choose one of {', '.join(CODEC_REGISTRY)}") from None
    return cls(config)
