"""Prompt text before a model sees it: validation, the device a model runs on, and whether an
embedder can read a prompt at all (`readable`; one it cannot gets an `exact_only_vector`).

Shared by every embedder (`engine.embedder`, `engine.packaged_embedders`, `engine.pooled_embedder`).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

import torch

from flexcache.core.errors import BackendUnavailableError, InvalidPromptError

# Letters that belong to every script ("ʼ" is a MODIFIER LETTER) never make a prompt unreadable.
_NEUTRAL_SCRIPTS = frozenset({"MODIFIER"})


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
