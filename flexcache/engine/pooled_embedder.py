"""An embedder that mean-pools a pipeline's own text-encoder output.

Wan is conditioned on umT5-XXL, a multilingual encoder, and every Wan call
computes ``prompt_embeds`` anyway, so pooling them gives a prompt vector in any
of umT5's languages at no extra encoder pass. `PooledTextEncoderEmbedder`
does that: for each text it takes the encoder's per-token output (rows that
are all zero are padding, as Wan's ``encode_prompt`` pads), averages the token
rows and scales the mean to unit length.

Status: the mechanism is tested (tests/engine/test_pooled_embedder.py, on a
tiny random-weight umT5); its matching quality is UNMEASURED. No real umT5
weights can be fetched on the machines this was built on, and a random
encoder says nothing about how pooled umT5 states separate paraphrases and
translations from edits (T5 encoders are not trained for sentence similarity,
so mean pooling may cluster prompts by language or length). Before relying on
it, run `flexcache bench languages --embedders pooled:<pipeline>` on real
weights, and calibrate the similarity tables on its cosines: no shipped table
was calibrated on them.

Re-using the pipeline's own pass needs the diffusers binding to encode the
prompt before `FlexCache.plan` and hand the result to `offer` (then to the
pipeline as ``prompt_embeds=``); without that, `embed` runs the encoder
itself, a second umT5-XXL pass per call.

Example:
    >>> import torch
    >>> table = torch.nn.Embedding(100, 8)
    >>> def encode(texts):  # a stand-in encoder: one row per character, zero-padded to 12
    ...     ids = [torch.tensor([ord(c) % 100 for c in t][:12]) for t in texts]
    ...     out = torch.zeros(len(texts), 12, 8)
    ...     for i, row in enumerate(ids):
    ...         out[i, :len(row)] = table(row).detach()
    ...     return out
    >>> emb = PooledTextEncoderEmbedder(encode, identity="pooled:demo")
    >>> v = emb.embed(["一只猫", "a cat"])
    >>> tuple(v.shape), round(float(v[0].norm()), 4)
    ((2, 8), 1.0)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch

from flexcache.core.errors import InvalidPromptError
from flexcache.engine.prompt_text import exact_only_unreadable, validate_prompts

Encode = Callable[[list[str]], torch.Tensor]


def mean_pool(token_states: torch.Tensor) -> torch.Tensor:
    """(B, L, D) zero-padded token states -> (B, D) unit vectors: the mean of each text's non-zero rows.

    Example:
        >>> states = torch.tensor([[[3.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
        >>> mean_pool(states)
        tensor([[1., 0.]])
    """
    if token_states.dim() != 3:
        raise InvalidPromptError(f"token states must be (batch, tokens, dim); got shape {tuple(token_states.shape)}")
    states = token_states.float()
    mask = (states != 0).any(dim=-1, keepdim=True).float()
    mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
    return mean / mean.norm(dim=1, keepdim=True).clamp_min(1e-12)


class PooledTextEncoderEmbedder:
    """Prompt vectors from a text encoder's token states, mean-pooled (see the module doc).

    Args:
        encode: texts -> (B, L, D) token states, zero rows for padding (Wan's
            ``pipe.encode_prompt(texts, do_classifier_free_guidance=False)[0]``).
        identity: names the encoder and its weights; entries made under another
            identity are never compared with these vectors.
        device: where the vectors go (the index's device); the encoder's own by default.
        memo_size: pooled vectors kept per text, for what `offer` hands in and repeats.
    """

    def __init__(self, encode: Encode, *, identity: str, device: str | torch.device | None = None,
                 memo_size: int = 1024) -> None:
        if not isinstance(identity, str) or not identity:
            raise InvalidPromptError("a pooled embedder needs a non-empty identity naming its encoder and weights")
        self._encode = encode
        self.identity = identity
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._memo: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._memo_size = memo_size
        self._lock = threading.Lock()
        self._dim: int | None = None

    @classmethod
    def from_pipeline(cls, pipe: Any, *, identity: str | None = None, **kwargs) -> "PooledTextEncoderEmbedder":
        """Pool the text encoder of a pipeline whose ``encode_prompt`` zero-pads (WanPipeline, SkyReels-V2).

        The identity defaults to the encoder's class and ``name_or_path``; give
        one that also names its weights when the path does not.
        """
        encoder = getattr(pipe, "text_encoder", None)
        if encoder is None or getattr(pipe, "tokenizer", None) is None:
            raise InvalidPromptError(f"{type(pipe).__name__} has no text encoder and tokenizer to pool")
        if identity is None:
            path = getattr(getattr(encoder, "config", None), "name_or_path", "") or ""
            identity = f"pooled:{type(encoder).__name__}:{path or 'unnamed'}"

        def encode(texts: list[str]) -> torch.Tensor:
            with torch.inference_mode():
                return pipe.encode_prompt(prompt=texts, do_classifier_free_guidance=False)[0]

        device = kwargs.pop("device", None) or getattr(encoder, "device", None)
        return cls(encode, identity=identity, device=device, **kwargs)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        return self._dim  # type: ignore[return-value]

    def offer(self, text: str, token_states: torch.Tensor) -> None:
        """Remember the pooled vector of `text` from states its pipeline computed ((L, D) or (1, L, D))."""
        (text,) = validate_prompts([text])
        states = token_states.unsqueeze(0) if token_states.dim() == 2 else token_states
        self._remember(text, mean_pool(states[:1].detach())[0])

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        prompts = validate_prompts(texts)
        with self._lock:
            missing = list(dict.fromkeys(t for t in prompts if t not in self._memo))
        if missing:
            pooled = mean_pool(self._encode(missing))
            for text, vector in zip(missing, pooled):
                self._remember(text, vector)
        with self._lock:
            vectors = [self._memo[t] if t in self._memo else None for t in prompts]
        if any(v is None for v in vectors):  # evicted by a concurrent caller: encode those again
            again = mean_pool(self._encode([t for t, v in zip(prompts, vectors) if v is None]))
            fill = iter(again)
            vectors = [v if v is not None else next(fill) for v in vectors]
        # umT5 reads every script; a prompt with no letter at all (emoji, "!!!") still matches only itself.
        return exact_only_unreadable(prompts, torch.stack([v.to(self.device) for v in vectors]), None)

    def _remember(self, text: str, vector: torch.Tensor) -> None:
        with self._lock:
            self._dim = int(vector.shape[-1])
            self._memo[text] = vector.float()
            self._memo.move_to_end(text)
            while len(self._memo) > self._memo_size:
                self._memo.popitem(last=False)
