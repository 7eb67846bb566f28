"""Where a run's object lives, read from the model's own cross-attention.

A region hit (`engine.regions`) needs to know which part of a cached latent
holds the object. The model says so itself: the video tokens that attend to
the object-part words of the prompt. `ObjectAttentionProbe` wraps the
cross-attention processors of a transformer; it leaves their output untouched
(the run is bit-identical) and, while a recorder is active, adds up each video
token's attention mass on the object tokens, averaged over heads and layers.
`ObjectMaskRecorder` turns the per-step maps into one soft mask per
checkpoint: the running mean over the steps so far of the conditional pass,
scaled to [0, 1].

`object_token_weights` finds the object tokens: the prompt is tokenized with
the pipeline's own tokenizer (offsets mapping), and a token belongs to the
object when its characters fall inside a word of the object part.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import torch

_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019\-][A-Za-z0-9]+)*")


def object_word_spans(prompt: str, object_part: str) -> list[tuple[int, int]]:
    """Character spans of the prompt's words that make up `object_part` (in order, case-insensitive).

    >>> object_word_spans("A red fox running in the snow", "red fox running")
    [(2, 5), (6, 9), (10, 17)]
    """
    wanted = [w.lower() for w in _WORD.findall(object_part)]
    spans: list[tuple[int, int]] = []
    position = 0
    words = [(m.group(0).lower(), m.span()) for m in _WORD.finditer(prompt)]
    for word in wanted:
        for index in range(position, len(words)):
            if words[index][0] == word:
                spans.append(words[index][1])
                position = index + 1
                break
    return spans


def object_token_weights(tokenizer: Any, prompt: str, object_part: str, length: int) -> torch.Tensor | None:
    """A (length,) 0/1 vector marking the text tokens of `object_part`; None when none can be found.

    `tokenizer` is a Hugging Face fast tokenizer (it must give offsets); the
    token positions are those of the prompt embeddings the pipeline builds
    with it (special tokens included, cut or padded to `length`).
    """
    spans = object_word_spans(prompt, object_part)
    if not spans or tokenizer is None:
        return None
    try:
        encoded = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=True, truncation=True,
                            max_length=length)
    except (TypeError, ValueError, NotImplementedError):  # a slow tokenizer gives no offsets
        return None
    weights = torch.zeros(length)
    for index, (start, end) in enumerate(encoded["offset_mapping"][:length]):
        if end > start and any(start < span_end and end > span_start for span_start, span_end in spans):
            weights[index] = 1.0
    return weights if bool(weights.any()) else None


class ObjectMaskRecorder:
    """Collects object-attention maps during one generation (one thread at a time).

    `begin_call` / `end_call` bracket each transformer forward; `step_done`
    closes a denoising step and folds the step's conditional map into the
    running mean (`conditional_call`: which forward of a step is the
    conditional one; 0 for Wan, which runs the prompt first, then the negative).
    """

    def __init__(self, token_weights: torch.Tensor, grid: tuple[int, int, int], *, conditional_call: int = 0) -> None:
        self.token_weights = token_weights
        self.grid = tuple(int(g) for g in grid)
        self.conditional_call = conditional_call
        self._call_maps: list[torch.Tensor] = []
        self._layers: list[torch.Tensor] = []
        self._sum: torch.Tensor | None = None
        self._steps = 0
        self.failed: BaseException | None = None  # the error that stopped recording (no more masks this run)

    def fail(self, exc: BaseException) -> None:
        """Stop recording after an error: the run goes on, its entries carry no mask from here."""
        if self.failed is None:
            self.failed = exc
        self._sum, self._layers, self._call_maps = None, [], []

    def begin_call(self) -> None:
        self._layers = []

    @property
    def wants_layers(self) -> bool:
        """Whether the forward under way is the step's conditional one (the others' maps are not used)."""
        return self.failed is None and len(self._call_maps) == self.conditional_call

    def add_layer(self, mass: torch.Tensor) -> None:
        self._layers.append(mass)

    def end_call(self) -> None:
        if self.failed is not None:
            return
        # Every forward takes its place in the step, recorded or not, so the conditional one is found.
        self._call_maps.append(torch.stack(self._layers).mean(0) if self._layers else torch.empty(0))
        self._layers = []

    def step_done(self) -> None:
        if self.failed is not None:
            return
        if len(self._call_maps) > self.conditional_call and self._call_maps[self.conditional_call].numel():
            current = self._call_maps[self.conditional_call].float()
            self._sum = current if self._sum is None else self._sum + current
            self._steps += 1
        self._call_maps = []

    def masks(self) -> torch.Tensor | None:
        """The soft masks so far, (batch, *grid), each scaled to [0, 1]; None before the first step."""
        if self.failed is not None:
            return None
        cells = self.grid[0] * self.grid[1] * self.grid[2]
        if self._sum is None or self._sum.shape[-1] != cells:
            return None
        mean = (self._sum / self._steps).reshape(-1, *self.grid)
        flat = mean.flatten(1)
        low = flat.min(1).values.view(-1, 1, 1, 1)
        high = flat.max(1).values.view(-1, 1, 1, 1)
        return ((mean - low) / (high - low).clamp(min=1e-12)).cpu()

    def mask(self) -> torch.Tensor | None:
        """The first batch item's soft mask, shaped `grid`; None before the first step or when flat."""
        masks = self.masks()
        if masks is None or float(masks[0].max()) <= 0.0:
            return None  # a flat map says nothing about where the object is
        return masks[0]


class ObjectAttentionProbe:
    """A cross-attention processor that also records attention mass on the object tokens.

    Wraps the processor it replaces and returns exactly its output. It works
    with attention modules that expose ``to_q``, ``to_k``, ``heads`` and
    optional ``norm_q`` / ``norm_k`` (diffusers' `Attention` and `WanAttention`).
    """

    def __init__(self, inner: Any, state: "_ProbeState") -> None:
        self.inner = inner
        self.state = state

    def __getattr__(self, name: str) -> Any:  # backend settings diffusers reads off the processor
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        recorder = self.state.recorder
        if recorder is not None and encoder_hidden_states is not None and recorder.wants_layers:
            try:
                recorder.add_layer(object_attention_mass(attn, hidden_states, encoder_hidden_states,
                                                         recorder.token_weights))
            except Exception as exc:  # the probe never fails the generation (its output is `out` either way)
                recorder.fail(exc)
        return out


class _ProbeState:
    def __init__(self) -> None:
        self.recorder: ObjectMaskRecorder | None = None
        self.lock = threading.Lock()


@torch.no_grad()
def object_attention_mass(attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                          token_weights: torch.Tensor) -> torch.Tensor:
    """(batch, video tokens) attention probability on the weighted text tokens, mean over heads.

    `token_weights` is (text tokens,) or (batch, text tokens).
    """
    weights = token_weights.to(hidden_states.device, torch.float32)
    if weights.dim() == 1:
        weights = weights.unsqueeze(0).expand(hidden_states.shape[0], -1)
    text_length = weights.shape[1]
    context = encoder_hidden_states
    if context.shape[1] > text_length:  # image context first (Wan I2V): the text is the tail
        context = context[:, -text_length:]
    query = attn.to_q(hidden_states)
    key = attn.to_k(context)
    if getattr(attn, "norm_q", None) is not None:
        query = attn.norm_q(query)
    if getattr(attn, "norm_k", None) is not None:
        key = attn.norm_k(key)
    heads = attn.heads
    query = query.unflatten(2, (heads, -1)).transpose(1, 2)  # (B, heads, S, d)
    key = key.unflatten(2, (heads, -1)).transpose(1, 2)  # (B, heads, L, d)
    weights = weights[:, : key.shape[2]].unsqueeze(-1)  # (B, L, 1)
    scale = query.shape[-1] ** -0.5
    total = torch.zeros(query.shape[0], query.shape[2], device=query.device, dtype=torch.float32)
    for head in range(heads):  # one head at a time: (B, S, L) stays small at real video sizes
        probs = torch.softmax((query[:, head].float() @ key[:, head].float().transpose(1, 2)) * scale, dim=-1)
        total += (probs[:, :, : weights.shape[1]] @ weights).squeeze(-1)
    return total / heads


def install_probes(transformer: Any) -> _ProbeState:
    """Wrap every cross-attention processor of `transformer` (idempotent); returns the shared state."""
    state = getattr(transformer, "_flexcache_probe_state", None)
    if state is not None:
        return state
    state = _ProbeState()
    found = 0
    for name, module in transformer.named_modules():
        processor = getattr(module, "processor", None)
        if processor is None or not _is_cross_attention(name, module):
            continue
        module.processor = ObjectAttentionProbe(processor, state)
        found += 1
    if not found:
        return state  # nothing to wrap: the recorder stays empty and no mask is made

    def begin(_module, _args):
        if state.recorder is not None:
            _guarded(state.recorder, state.recorder.begin_call)

    def end(_module, _args, _output):
        if state.recorder is not None:
            _guarded(state.recorder, state.recorder.end_call)

    transformer.register_forward_pre_hook(begin)
    transformer.register_forward_hook(end)
    transformer._flexcache_probe_state = state
    return state


def _guarded(recorder: ObjectMaskRecorder, step: Any) -> None:
    try:
        step()
    except Exception as exc:  # recording stops; the forward goes on
        recorder.fail(exc)


def _is_cross_attention(name: str, module: Any) -> bool:
    flag = getattr(module, "is_cross_attention", None)
    if isinstance(flag, bool):
        return flag
    return name.endswith("attn2")


def token_grid(latent_shape: tuple[int, ...], patch_size: tuple[int, int, int], frame_axis: int) -> tuple[int, int, int]:
    """The (frames, rows, cols) grid of video tokens a patchifying transformer makes of a latent."""
    frames = latent_shape[frame_axis]
    height, width = latent_shape[-2], latent_shape[-1]
    pt, ph, pw = patch_size
    return (frames // pt, height // ph, width // pw)
