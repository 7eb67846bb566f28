"""Entry metadata: what the cache knows about each stored latent.

A *record* is one earlier generation (one prompt, one seed, one signature)
and owns the vector in the index; an *entry* is one latent of that record,
captured after `step` of its `signature.num_steps` denoising steps. Entries are
evicted one by one; a record leaves the index when its last entry goes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from flexcache.core.errors import CorruptBlobError, FlexCacheError, InvalidLatentError
from flexcache.core.types import dtype_from_name


@dataclass(frozen=True)
class GenerationSignature:
    """Everything that must match for a cached latent to be reusable.

    An entry only serves requests with an equal signature: same model and
    weights (a sampled fingerprint, loaded adapters and their scales), same
    scheduler and its config, same step count, resolution, frame count and
    latent shape/dtype, same guidance and attention kwargs. A mismatch is a
    miss, never a wrongly shaped latent (README, "Using it", on the generation signature).

    Args:
        model_id: the model's name or path (any stable string).
        scheduler: scheduler class name plus a digest of its config.
        num_steps: N, the number of denoising steps.
        height, width, num_frames: output size in pixels and frames.
        latent_shape: the latent's shape without the batch dimension.
        latent_dtype: the latent's dtype name, e.g. ``"float32"``.
        extra: other settings that change the trajectory (guidance scale,
            negative prompt, attention kwargs), as sorted ``(name, value)``
            string pairs.
        frame_axis: which latent dimension indexes frames (1 for Wan's
            (C, T, H, W), 0 for CogVideoX's (T, C, H, W)); the codec's
            temporal delta runs along it.
        weights: a fingerprint of the denoisers' weights
            (`integrations.model_identity.weights_fingerprint`); ``""`` where
            the caller builds signatures itself (the engine API).
        adapters: the loaded adapters as sorted ``(name, description)``
            string pairs (weights digest, active, fused, scale).

    Signatures without `weights` and `adapters` serialize (and so key) as
    they did before those fields existed.
    """

    model_id: str
    scheduler: str
    num_steps: int
    height: int
    width: int
    num_frames: int
    latent_shape: tuple[int, ...]
    latent_dtype: str = "float32"
    extra: tuple[tuple[str, str], ...] = ()
    frame_axis: int = 1
    weights: str = ""
    adapters: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.num_steps < 2:
            raise InvalidLatentError(f"num_steps must be >= 2 to skip anything; got {self.num_steps}")
        if not self.latent_shape or any(int(d) <= 0 for d in self.latent_shape):
            raise InvalidLatentError(f"latent_shape must be positive sizes; got {self.latent_shape}")
        object.__setattr__(self, "latent_shape", tuple(int(d) for d in self.latent_shape))
        dtype_from_name(self.latent_dtype)
        if not 0 <= self.frame_axis < len(self.latent_shape):
            raise InvalidLatentError(f"frame_axis {self.frame_axis} is not a dimension of {self.latent_shape}")
        if not isinstance(self.weights, str):
            raise InvalidLatentError(f"weights must be a fingerprint string; got {type(self.weights).__name__}")
        object.__setattr__(self, "adapters", _string_pairs(self.adapters, "adapters"))

    def key(self) -> str:
        """A stable hex digest (never Python's salted ``hash()``)."""
        payload = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    @property
    def torch_dtype(self) -> torch.dtype:
        return dtype_from_name(self.latent_dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "scheduler": self.scheduler,
            "num_steps": self.num_steps,
            "height": self.height,
            "width": self.width,
            "num_frames": self.num_frames,
            "latent_shape": list(self.latent_shape),
            "latent_dtype": self.latent_dtype,
            "extra": [list(pair) for pair in self.extra],
            "frame_axis": self.frame_axis,
            # Only when set: signatures that have neither keep the keys (and entries) they had before.
            **({"weights": self.weights} if self.weights else {}),
            **({"adapters": [list(pair) for pair in self.adapters]} if self.adapters else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationSignature":
        fields = dict(data)
        fields["latent_shape"] = tuple(fields["latent_shape"])
        fields["extra"] = tuple(tuple(pair) for pair in fields.get("extra", ()))
        fields["adapters"] = tuple(tuple(pair) for pair in fields.get("adapters", ()))
        return cls(**fields)


def _string_pairs(pairs: Any, name: str) -> tuple[tuple[str, str], ...]:
    """`pairs` as a tuple of ``(str, str)``; a signature field of another shape is refused."""
    try:
        out = tuple((first, second) for first, second in pairs)
    except (TypeError, ValueError):
        out = None
    if out is None or not all(isinstance(part, str) for pair in out for part in pair):
        raise InvalidLatentError(f"{name} must be (name, value) string pairs; got {pairs!r:.200}")
    return out


@dataclass
class SolverState:
    """A multistep solver's state after one step: what its next step reads from earlier ones.

    Captured by the pipeline integration (`integrations.solver_state`) and
    stored with the checkpoint's latent (an FXSS bundle, `engine.solver_bundle`).

    Attributes:
        solver: the scheduler class it was captured from.
        scalars: counters and timesteps, JSON values; a tensor slot is
            ``{"tensor": name}``, a list attribute a list of slots.
        tensors: the latent-sized tensors by name (model outputs, last
            sample), each of the signature's latent shape; the latent's
            codec codes them, at the latent's own error budget.
        noisy: the names of tensors that are points of the trajectory (they
            carry the run's seed noise, like x_K: UniPC's last sample), coded
            against the seed's noise as x_K is; the others (model outputs)
            are not.
    """

    solver: str
    scalars: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    noisy: frozenset[str] = frozenset()


@dataclass
class CacheEntry:
    """One cached latent: record `record_id` after `step` denoising steps.

    What the engine knows of an entry: that it exists, its size and how it
    was used. Where it lives (which tiers hold it) is the store's alone.

    Attributes:
        store_key: the key in the store (``<tenant>.<digest>``, see `entry_store_key`).
        hits: fetches that served it.
        ready: False while its first write to the store is in flight; plans
            never choose an entry that is not ready.
        mask: the run's object mask at this step (an FXMK blob, `engine.regions`),
            or None (entries of earlier versions, pipelines without a probe):
            such an entry serves whole-latent hits only.
        sigma: the latent's noise level, where the run knew it.
    """

    record_id: int
    step: int
    num_steps: int
    nbytes: int
    store_key: str
    created_at: float = field(default_factory=time.monotonic)
    last_access: float = field(default_factory=time.monotonic)
    hits: int = 0
    ready: bool = True
    mask: bytes | None = field(default=None, repr=False)
    sigma: float | None = None

    @property
    def key(self) -> str:
        return self.store_key


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()


def stable_record_id(tenant: str, signature_key: str, prompt: str, writer: str | None = None) -> int:
    """A record id that every process derives alike for the same (tenant, signature, prompt, writer).

    Each user's run of a prompt is its own record (no user can squat another's
    prompt); the tenant's default user (`writer` None or the tenant) keeps the
    ids of earlier versions.
    """
    parts = ("record", tenant, signature_key, prompt) + (() if writer in (None, tenant) else ("writer", writer))
    return int(_digest(*parts)[:15], 16)  # 60 bits: an int64 index id


def entry_store_key(tenant: str, record_id: int, step: int) -> str:
    """The store key of one entry: stable across processes and restarts."""
    return f"{tenant}.{_digest('entry', record_id, step)[:32]}"


META_VERSION = 1


def encode_entry_meta(record: "PromptRecord", entry: CacheEntry) -> bytes:
    """What a persistent or shared tier stores beside a blob, to rebuild the index from it."""
    def b64(vector: torch.Tensor) -> str:
        return base64.b64encode(vector.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()).decode()

    parts = {}
    if record.parts is not None and record.object_embedding is not None:
        parts = {"object": record.parts[0], "background": record.parts[1],
                 "object_embedding": b64(record.object_embedding)}
        if record.background_embedding is not None:
            parts["background_embedding"] = b64(record.background_embedding)
    return json.dumps({
        "v": META_VERSION,
        "tenant": record.tenant,
        **({"writer": record.writer} if record.writer is not None else {}),
        **({"text_conditioned": True} if record.text_conditioned else {}),
        **({"borrowed": True} if record.borrowed else {}),
        "prompt": record.prompt,
        "signature": record.signature.to_dict(),
        "seed": record.seed,
        "record_id": record.record_id,
        "step": entry.step,
        "nbytes": entry.nbytes,
        "created": round(time.time(), 3),  # wall clock: an entry's age for `flexcache inspect`
        "embedding": b64(record.embedding),
        **parts,
        **({"mask": base64.b64encode(entry.mask).decode()} if entry.mask is not None else {}),
        **({"sigma": entry.sigma} if entry.sigma is not None else {}),
        **({"embedder": record.embedder} if record.embedder is not None else {}),
    }, separators=(",", ":")).encode()


def decode_entry_meta(meta: bytes, dim: int | None = None,
                      embedder: str | None = None) -> tuple["PromptRecord", CacheEntry]:
    """Inverse of `encode_entry_meta` (a record holding just this entry).

    Vectors must have `dim` values only when the entry was written under the identity `embedder`
    (when given): another embedder's vectors are to be replaced (`embedder.reembed_record`), not used.

    Raises:
        CorruptBlobError: metadata that is not what `encode_entry_meta` wrote.
    """
    try:
        data = json.loads(bytes(meta))
        if data.get("v") != META_VERSION:
            raise ValueError(f"metadata version {data.get('v')!r}")
        if embedder is not None and data.get("embedder") != embedder:
            dim = None
        signature = GenerationSignature.from_dict(data["signature"])

        def vector(name: str) -> torch.Tensor:
            raw = base64.b64decode(data[name], validate=True)
            value = torch.frombuffer(bytearray(raw), dtype=torch.float32).clone()
            if dim is not None and value.numel() != dim:
                raise ValueError(f"{name} has {value.numel()} values, the index {dim}")
            return value

        record = PromptRecord(int(data["record_id"]), str(data["tenant"]), str(data["prompt"]), signature,
                              int(data["seed"]), vector("embedding"))
        if data.get("writer") is not None:  # entries of earlier versions have none
            record.writer = str(data["writer"])
        record.text_conditioned = data.get("text_conditioned") is True  # absent (earlier versions): unverified
        record.borrowed = data.get("borrowed") is True
        if data.get("embedder") is not None:
            record.embedder = str(data["embedder"])
        if "object_embedding" in data:  # written under decoupled look-up
            record.parts = (str(data["object"]), str(data["background"]))
            record.object_embedding = vector("object_embedding")
            if "background_embedding" in data:
                record.background_embedding = vector("background_embedding")
        step = int(data["step"])
        entry = CacheEntry(record.record_id, step, signature.num_steps, int(data["nbytes"]),
                           entry_store_key(record.tenant, record.record_id, step))
        if "mask" in data:  # checked (FXMK checksum) when a region hit uses it
            entry.mask = base64.b64decode(data["mask"], validate=True)
        if data.get("sigma") is not None:
            entry.sigma = float(data["sigma"])
    except (ValueError, KeyError, TypeError, FlexCacheError) as exc:
        raise CorruptBlobError(f"entry metadata is unreadable: {exc}") from None
    return record, entry


@dataclass
class PromptRecord:
    """One earlier generation: its prompt, seed and the entries captured from it."""

    record_id: int
    tenant: str
    prompt: str
    signature: GenerationSignature
    seed: int
    embedding: torch.Tensor
    entries: dict[int, CacheEntry] = field(default_factory=dict)
    # Decoupled look-up: (object part, background part) and their vectors (background None when empty).
    parts: tuple[str, str] | None = None
    object_embedding: torch.Tensor | None = None
    background_embedding: torch.Tensor | None = None
    # The user who wrote it (None: an entry of an earlier version), and the users who asked for it (`engine.guard`).
    writer: str | None = None
    askers: set[str] = field(default_factory=set, repr=False)
    # Askers of each part ("object", "background"): users whose region hit would keep that part.
    part_askers: dict[str, set[str]] = field(default_factory=dict, repr=False)
    # Every run stored here was conditioned on its prompt text alone (`FlexCache.insert`): its content is its
    # text's. False: unverified (caller-supplied conditioning, or an entry of an earlier version).
    text_conditioned: bool = False
    # A run stored here resumed from another writer's entry: part of its content is not its writer's own
    # (a trusted writer's such record is not trusted, `engine.guard`).
    borrowed: bool = False
    # Other users whose runs resumed from it agreed / disagreed with its latents (`engine.guard`).
    vouches: set[str] = field(default_factory=set, repr=False)
    accusations: set[str] = field(default_factory=set, repr=False)
    # `embedder.embedder_identity` of what made the vectors (None: an entry of an earlier version).
    embedder: str | None = None

    def deepest_step_at_most(self, step: int) -> int | None:
        """The deepest stored (ready) step not beyond `step`, or None."""
        candidates = [s for s, entry in self.entries.items() if s <= step and entry.ready]
        return max(candidates) if candidates else None

    def deepest_masked_step_at_most(self, step: int) -> int | None:
        """The deepest ready step not beyond `step` whose entry carries an object mask, or None."""
        candidates = [s for s, entry in self.entries.items() if s <= step and entry.ready and entry.mask is not None]
        return max(candidates) if candidates else None
