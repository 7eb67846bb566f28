"""What identifies a pipeline's weights in the generation signature: a sampled fingerprint and its adapters.

`model_id` names a model, but weights change under one name: a LoRA loaded,
fused, switched (``set_adapters``) or rescaled, a ``load_state_dict``, a
parameter written in place. Two pipelines built in code share a name (none)
whatever their weights. So every signature also carries

* `weights_fingerprint` of the denoisers (``transformer``, ``transformer_2``):
  a fixed number of elements sampled from every parameter and buffer, read
  on every call. Reading them is the only way to see an in-place write:
  peft's default ``fuse_lora`` (``weight.data += delta``) and a
  ``.data.copy_`` bump neither a parameter's ``_version`` nor its
  ``data_ptr``, so a fingerprint memoized on those would go stale. The cost
  is O(number of tensors), never O(bytes): 16 elements of each tensor,
  gathered on the tensor's own device and copied to the host in one small
  transfer per device and dtype (~1,100 tensors, ~140 KB, on a Wan 14B).
* `adapter_state`: every loaded peft adapter of every component (text
  encoders too), by name, with a sampled digest of its weights, whether it
  is active, fused, and its scales (peft layers' ``scaling``).
* the call's attention kwargs (diffusers hands ``attention_kwargs["scale"]``
  to LoRA layers), digested by `call_kwargs_entries`; what cannot be
  digested makes the call unkeyable (`UncacheableCallError`): it runs
  uncached, with that reason.

A change that touches no sampled element goes unseen (one element of a 14B
model); LoRA deltas, fine-tunes and loaded checkpoints change every element.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sys
import warnings
import weakref
from collections.abc import Iterable
from typing import Any

import torch

from flexcache.core.errors import UncacheableCallError
from flexcache.engine.records import GenerationSignature

# Elements read from each tensor: enough that a dense change (a LoRA delta, another checkpoint) cannot hide.
SAMPLES_PER_TENSOR = 16
# The call arguments diffusers pipelines hand to attention processors (LoRA scale among them).
ATTENTION_KWARGS_NAMES = ("attention_kwargs", "joint_attention_kwargs", "cross_attention_kwargs")


def _sample(tensor: torch.Tensor) -> torch.Tensor | None:
    """`SAMPLES_PER_TENSOR` evenly spaced elements of `tensor`, on its device; None where it cannot be read.

    Meta tensors (sequential CPU offload) and tensor subclasses without views
    (some quantized weights) are not read: they enter the fingerprint by name,
    shape and dtype only.
    """
    if tensor.is_meta:
        return None
    try:
        numel = tensor.numel()
        step = max(1, numel // SAMPLES_PER_TENSOR)
        count = min(SAMPLES_PER_TENSOR, -(-numel // step))
        if tensor.is_contiguous():  # one strided view: a call per tensor is what a 14B model's ~1,100 cost
            return tensor.as_strided((count,), (step,))
        positions = torch.arange(0, numel, step)[:count]
        index = torch.unravel_index(positions, tensor.shape)
        return tensor[tuple(i.to(tensor.device) for i in index)]
    except (RuntimeError, TypeError, NotImplementedError):
        return None


def _update_with_samples(digest: Any, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Feed each tensor's name, shape, dtype and sampled bytes to `digest`, in order, whatever its device.

    The samples are gathered per device and dtype (one small host copy each,
    no bulk move) and hashed back in the tensors' order, so that weights
    split over devices, or offloaded to the CPU between calls, fingerprint as
    they do in one place.
    """
    described: list[str] = []
    groups: dict[tuple[torch.device, torch.dtype], list[tuple[int, torch.Tensor]]] = {}
    with torch.no_grad():
        for name, tensor in named_tensors:
            sample = _sample(tensor)
            if sample is not None:
                groups.setdefault((sample.device, sample.dtype), []).append((len(described), sample))
            described.append(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}:{'-' if sample is None else '+'}")
        ordered: list[torch.Tensor | None] = [None] * len(described)
        for members in groups.values():
            values = torch.cat([sample for _, sample in members]).to("cpu").view(torch.uint8)
            sizes = [int(sample.numel()) * sample.element_size() for _, sample in members]
            for (position, _), part in zip(members, values.split(sizes)):
                ordered[position] = part
        present = [part for part in ordered if part is not None]
    digest.update(";".join(described).encode())
    if present:
        digest.update(torch.cat(present).numpy().tobytes())  # each tensor's bytes, in the tensors' order


def weights_fingerprint(modules: Iterable[tuple[str, torch.nn.Module]]) -> str:
    """A digest of the named modules' parameters and persistent buffers: names, shapes, dtypes, sampled values.

    Equal weights give equal fingerprints in every process, on any device
    (values in the same dtype); any dense change to the weights (another checkpoint, a fused or
    loaded LoRA, an in-place write) gives another.

    Args:
        modules: ``(name, module)`` pairs, e.g. ``[("transformer", pipe.transformer)]``.

    Returns:
        32 hex digits.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(4, 4)
        >>> before = weights_fingerprint([("layer", layer)])
        >>> with torch.no_grad():
        ...     _ = layer.weight.data.mul_(2)  # in place: neither _version nor data_ptr changes
        >>> weights_fingerprint([("layer", layer)]) != before
        True
    """
    digest = hashlib.sha256(b"flexcache-weights-v1;")
    for prefix, module in modules:
        # By name: the order modules were registered in is not the weights (cache-dit re-registers the
        # blocks it wraps on its first call, and the same weights must keep their fingerprint).
        named = sorted(itertools.chain(module.named_parameters(prefix=prefix), _persistent_buffers(module, prefix)),
                       key=lambda item: item[0])
        _update_with_samples(digest, named)
    return digest.hexdigest()[:32]


def _persistent_buffers(module: torch.nn.Module, prefix: str) -> Iterable[tuple[str, torch.Tensor]]:
    """The buffers a checkpoint holds. Non-persistent ones (rotary tables) follow from the config, and are
    computed on whatever device built the model, so they could differ in the last bit between machines."""
    for name, submodule in module.named_modules(prefix=prefix):
        for buffer_name, buffer in submodule._buffers.items():
            if buffer is not None and buffer_name not in submodule._non_persistent_buffers_set:
                yield f"{name}.{buffer_name}", buffer


def _tuner_layers(pipe: Any) -> list[tuple[str, Any]]:
    """Every peft tuner layer (a LoRA-wrapped linear, ...) of every module component, by qualified name."""
    tuners = sys.modules.get("peft.tuners.tuners_utils")
    if tuners is None:  # peft never imported: no adapter can be loaded
        return []
    layers = []
    for component_name, component in sorted(getattr(pipe, "components", {}).items()):
        if isinstance(component, torch.nn.Module):
            layers.extend((f"{component_name}.{name}", module) for name, module in component.named_modules()
                          if isinstance(module, tuners.BaseTunerLayer))
    return layers


def _adapter_tensors(layer: Any, adapter: str) -> Iterable[tuple[str, torch.Tensor]]:
    """One adapter's weights in one peft layer (``lora_A[adapter]``, ``lora_B[adapter]``, ...)."""
    for attribute in getattr(layer, "adapter_layer_names", ()):
        container = getattr(layer, attribute, None)
        if container is None or adapter not in container:
            continue
        item = container[adapter]
        if isinstance(item, torch.nn.Module):
            yield from item.named_parameters(prefix=attribute)
        elif isinstance(item, torch.Tensor):
            yield attribute, item


def adapter_state(pipe: Any) -> tuple[tuple[str, str], ...]:
    """The loaded peft adapters of `pipe`'s components, as sorted ``(name, description)`` pairs.

    A description names a sampled digest of the adapter's weights, whether it
    is active (in a layer's active set, adapters not disabled), fused (merged
    into the base weights) and its scale (``scale=<value>`` when every layer
    has the same, else ``scales=<digest>`` of each layer's; ``scale=unused``
    for an adapter neither active nor fused). Read from peft's
    layers, which is what the forward pass reads; ``()`` with no adapter.
    """
    per_adapter: dict[str, dict[str, Any]] = {}
    for layer_name, layer in _tuner_layers(pipe):
        scaling = getattr(layer, "scaling", {}) or {}
        active = set() if layer.disable_adapters else set(layer.active_adapters)
        merged = set(getattr(layer, "merged_adapters", ()))
        names = {name for attribute in getattr(layer, "adapter_layer_names", ())
                 for name in (getattr(layer, attribute, None) or {})}
        for adapter in sorted(names):
            state = per_adapter.setdefault(adapter, {"tensors": [], "scales": [], "active": False, "fused": False})
            state["tensors"].extend((f"{layer_name}.{name}", tensor)
                                    for name, tensor in _adapter_tensors(layer, adapter))
            state["scales"].append((layer_name, repr(scaling.get(adapter))))
            state["active"] |= adapter in active
            state["fused"] |= adapter in merged
    out = []
    for adapter, state in sorted(per_adapter.items()):
        digest = hashlib.sha256(b"flexcache-adapter-v1;")
        _update_with_samples(digest, state["tensors"])
        scales = {scale for _, scale in state["scales"]}
        if not (state["active"] or state["fused"]):
            scale = "scale=unused"  # an idle adapter's scale changes nothing: entries are not split by it
        elif len(scales) == 1:
            scale = f"scale={scales.pop()}"
        else:
            scale = f"scales={hashlib.sha256(json.dumps(state['scales']).encode()).hexdigest()[:16]}"
        description = f"weights={digest.hexdigest()[:16]};active={int(state['active'])};fused={int(state['fused'])}"
        out.append((adapter, f"{description};{scale}"))
    return tuple(out)


def _canonical(value: Any, path: str) -> Any:
    """`value` as JSON data that every process writes alike; raises for what it cannot digest."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise UncacheableCallError(
                    f"{path} has a key of type {type(key).__name__}, which the cache cannot digest into the "
                    "generation signature; the call is served uncached (use string keys)")
        return {key: _canonical(value[key], f"{path}[{key!r}]") for key in sorted(value)}
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    if isinstance(value, torch.Tensor) and not value.is_meta:
        data = value.detach().to("cpu").contiguous()  # attention kwargs' tensors are masks and biases: small
        digest = hashlib.sha256(f"{data.dtype}:{tuple(data.shape)}:".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
        return {"tensor": digest.hexdigest()[:32]}
    raise UncacheableCallError(
        f"{path} is a {type(value).__name__}, which the cache cannot digest into the generation signature; "
        "the call is served uncached (numbers, strings, lists, dicts and tensors can be keyed)")


def call_kwargs_entries(args: dict[str, Any], names: tuple[str, ...] = ATTENTION_KWARGS_NAMES
                        ) -> tuple[tuple[str, str], ...]:
    """Signature entries for the call's attention kwargs: ``(name, canonical JSON)``; None or ``{}`` adds none.

    Raises:
        UncacheableCallError: a value the cache cannot digest (an arbitrary object).

    Example:
        >>> call_kwargs_entries({"attention_kwargs": {"scale": 0.5}, "cross_attention_kwargs": None})
        (('attention_kwargs', '{"scale":0.5}'),)
    """
    entries = []
    for name in names:
        value = args.get(name)
        if value is None or (isinstance(value, dict) and not value):
            continue
        payload = json.dumps(_canonical(value, name), sort_keys=True, separators=(",", ":"))
        entries.append((name, payload))
    return tuple(entries)


def unkeyable_reason(args: dict[str, Any], names: tuple[str, ...] = ATTENTION_KWARGS_NAMES) -> str | None:
    """Why the call's attention kwargs cannot be keyed (the call then runs uncached), or None."""
    try:
        call_kwargs_entries(args, names)
    except UncacheableCallError as exc:
        return str(exc)
    return None


def with_model_identity(signature: GenerationSignature, pipe: Any,
                        denoisers: Iterable[tuple[str, torch.nn.Module]], args: dict[str, Any],
                        names: tuple[str, ...] = ATTENTION_KWARGS_NAMES) -> GenerationSignature:
    """`signature` plus the weights fingerprint of `denoisers`, `pipe`'s adapters and the call's attention kwargs.

    Raises:
        UncacheableCallError: attention kwargs the cache cannot digest.
    """
    extra = signature.extra + call_kwargs_entries(args, names)
    return dataclasses.replace(signature, weights=weights_fingerprint(denoisers),
                               adapters=adapter_state(pipe), extra=tuple(sorted(extra)))


_WARNED_ANONYMOUS: weakref.WeakSet[Any] = weakref.WeakSet()


def warn_if_anonymous(pipe: Any, model_id: str | None) -> bool:
    """Warn once per pipeline when nothing names its model: no ``model_id`` given and no ``name_or_path``.

    Its entries are then told apart from other models' by the architecture
    and the weights fingerprint only. Returns whether it warned.
    """
    if model_id or getattr(pipe, "name_or_path", None) or pipe in _WARNED_ANONYMOUS:
        return False
    _WARNED_ANONYMOUS.add(pipe)
    warnings.warn(
        f"this {type(pipe).__name__} has no name_or_path (it was built in code) and enable_flexcache got no "
        "model_id: its cache entries are identified by its architecture and a sampled fingerprint of its weights "
        "only. Pass enable_flexcache(pipe, cache, model_id='<name and version of the weights>') so that entries "
        "name their model (and every process loading these weights agrees on it).", UserWarning, stacklevel=3)
    return True
