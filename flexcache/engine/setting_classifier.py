"""Open-vocabulary setting classifier: does a noun phrase name a setting, when the lexicon does not know its head?

The prompt splitter (`engine.splitter`) knows setting nouns from a word list
(``data/splitter_lexicon.json``). A phrase whose head is not listed ("a dusty
attic", "a green leaf", "its cage") goes to this classifier: the phrase is
embedded on the CPU by the packaged all-MiniLM-L6-v2 cut to its first three
transformer layers (`PhraseEncoder`: mean-pooled, unit length; as accurate as
all six on this task at half the cost) and a softmax regression over the
384-d vector (``data/setting_classifier.json``, trained by
`engine.train_splitter` on ``data/setting_phrases.json``) gives the
probability of four kinds (a phrase that ends with one of the hand-written
training phrases, "wheelchair", "old frying pan", takes that phrase's class
instead: the model does not fit every training phrase, the memory does):

- ``place``: somewhere a subject is in, on or at: rooms, buildings,
  landscapes, surfaces and containers ("green leaf", "cardboard box"),
  habitats ("cage", "nest"), place names, occasions ("wedding reception");
- ``time``: time of day, season, era, weather and scene light;
- ``style``: camera, lens, medium and quality tags ("tilt-shift", "pixel art");
- ``other``: subjects, props, clothing, body parts, tools, food, colours,
  materials, manners ("red coat", "frying pan", "yellow", "unison").

Decisions are cached per phrase (an LRU of `cache_size` phrases), so a phrase
costs one forward pass the first time (about 5 ms on one busy CPU thread; the
phrases of one prompt go in one batch) and microseconds after. The model
(about 4 s) loads on the first phrase that needs it. If it cannot load (no
sentence-transformers, no packaged model, a bad weights file) or an embedding
fails, the classifier says so once in a RuntimeWarning, answers `None` and the
splitter keeps its lexicon-only rules; it tries again after a back-off that
doubles with each failure in a row (5 s, 10 s, ... up to 5 min), and a success
ends the outage. `state()` reports it (failures counted, the last error, when
the next try is due), and `FlexCache.health()` is degraded while it fails.

`get_classifier` is the process-wide instance the splitter uses;
`set_classifier(None)` turns the open-vocabulary stage off (lexicon-only
splits); `set_classifier(SettingClassifier(embedder=..., weights=...))`
installs another encoder with weights trained on its vectors.

Example:
    >>> Verdict(0.7, 0.1, 0.05, 0.15).label
    'place'
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch

from flexcache.core.config import EmbedderConfig
from flexcache.engine.embedder import PACKAGED_MODEL, SentenceTransformerEmbedder, TextEmbedder

CLASSES = ("place", "time", "style", "other")
WEIGHTS_RESOURCE = "data/setting_classifier.json"
PHRASES_RESOURCE = "data/setting_phrases.json"
DEFAULT_CACHE_SIZE = 4096
DEFAULT_LAYERS = 3
RETRY_INITIAL_S = 5.0  # the first retry after a failure; each failure in a row doubles it
RETRY_MAX_S = 300.0  # the back-off stops growing here: a classifier that keeps failing is retried every 5 min

logger = logging.getLogger(__name__)


class PhraseEncoder:
    """Short phrases -> unit vectors: a sentence-transformers BERT model (default: the packaged
    MiniLM) cut to its first `layers` layers, mean-pooled over tokens, on the CPU.

    The cut model is this encoder's own copy; the cache's embedder is never touched.
    """

    def __init__(self, layers: int = DEFAULT_LAYERS, model: str = PACKAGED_MODEL) -> None:
        self.layers = int(layers)
        self.model = model
        self.device = torch.device("cpu")
        self._parts: tuple[Any, Any] | None = None
        self._lock = threading.Lock()  # HF fast tokenizers are not thread-safe

    def _load(self) -> tuple[Any, Any]:
        if self._parts is None:
            st = SentenceTransformerEmbedder(EmbedderConfig(model=self.model, device="cpu")).load()
            bert = st[0].auto_model
            stack = bert.encoder.layer
            if not 1 <= self.layers <= len(stack):
                raise ValueError(f"the model has {len(stack)} layers; cannot keep {self.layers}")
            bert.encoder.layer = stack[: self.layers]
            self._parts = (st.tokenizer, bert.eval())
        return self._parts

    @property
    def dim(self) -> int:
        return int(self._load()[1].config.hidden_size)

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        with self._lock:
            tokenizer, bert = self._load()
            with torch.inference_mode():
                batch = tokenizer(list(texts), padding=True, truncation=True, max_length=32, return_tensors="pt")
                hidden = bert(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                return torch.nn.functional.normalize(pooled, dim=-1).float()


@dataclass(frozen=True)
class Verdict:
    """Class probabilities for one phrase (they sum to 1)."""

    place: float
    time: float
    style: float
    other: float

    @property
    def label(self) -> str:
        """The most probable class."""
        return max(CLASSES, key=lambda name: getattr(self, name))

    @property
    def setting(self) -> float:
        """Probability that the phrase is a setting of any kind (place or time)."""
        return self.place + self.time


def phrase_key(text: str) -> str:
    """The cache key of a phrase: lowercase, single spaces.

    Example:
        >>> phrase_key("  Dusty   Attic ")
        'dusty attic'
    """
    return " ".join(text.lower().split())


def load_memory(text: str | None = None) -> dict[str, str]:
    """Hand-written training phrase -> class, from ``data/setting_phrases.json`` (or JSON `text`);
    the adjective pool comes under the key ``""`` (space-separated)."""
    if text is None:
        text = resources.files("flexcache.engine").joinpath(PHRASES_RESOURCE).read_text("utf-8")
    data = json.loads(text)
    memory: dict[str, str] = {"": " ".join(data.get("adjectives", ()))}
    for name in CLASSES:
        for phrase in data.get(name, ()):
            memory.setdefault(phrase_key(phrase), name)
    return memory


_MODIFIER_SUFFIXES = ("ed", "ful", "ous", "ic", "ish", "less", "ive", "en")


def _remembered(memory: Mapping[str, str], key: str, adjectives: frozenset[str] = frozenset()) -> Verdict | None:
    """The class of the training phrase `key` is, or is behind adjectives ("rusty old" in the
    pool, or ending -ed, -ful, -ous, ...); the head part before "of", plurals too."""
    words = key.split()
    if "of" in words[1:]:
        words = words[: words.index("of", 1)]
    if not words:
        return None
    last = words[-1]
    stems = [last]
    if last.endswith("es") and len(last) > 4:
        stems.append(last[:-2])
    if last.endswith("s") and len(last) > 3:
        stems.append(last[:-1])
    for start in range(len(words)):
        if start and not (words[start - 1] in adjectives or words[start - 1].endswith(_MODIFIER_SUFFIXES)):
            return None
        for stem in stems:
            name = memory.get(" ".join(words[start:-1] + [stem]))
            if name is not None:
                return Verdict(*(0.97 if c == name else 0.01 for c in CLASSES))
    return None


def load_weights(text: str | None = None) -> dict[str, Any]:
    """The packaged classifier weights (or those in JSON `text`), checked for shape.

    Raises:
        ValueError: the classes, the weight matrix or the bias do not fit together.
    """
    if text is None:
        text = resources.files("flexcache.engine").joinpath(WEIGHTS_RESOURCE).read_text("utf-8")
    data = json.loads(text)
    classes = tuple(data.get("classes", ()))
    weights, bias = data.get("weights"), data.get("bias")
    if classes != CLASSES:
        raise ValueError(f"setting classifier classes must be {CLASSES}, got {classes}")
    if not isinstance(weights, list) or len(weights) != len(CLASSES) or not isinstance(bias, list) \
            or len(bias) != len(CLASSES):
        raise ValueError("setting classifier weights must be one row and one bias per class")
    dims = {len(row) for row in weights}
    if len(dims) != 1 or dims.pop() != int(data.get("dim", -1)):
        raise ValueError("setting classifier weight rows must all have length `dim`")
    return data


class SettingClassifier:
    """Setting / not-setting probabilities for noun phrases, cached, with a lazy embedder.

    Args:
        embedder: anything with ``embed(texts) -> (n, dim)`` and ``dim`` for the phrases, matching
            the weights; default: the `PhraseEncoder` the weights name (model and layers), built
            on first use.
        weights: the classifier, as `load_weights` returns it; default: the packaged one.
        memory: training phrase -> class, as `load_memory` returns it; default: the packaged
            phrases (pass ``{}`` for the model alone).
        cache_size: phrases whose verdicts are kept (least recently used go first).
        retry_initial_s: seconds to wait after a failure before trying the model again; doubled
            for each failure in a row.
        retry_max_s: the longest wait between tries.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        embedder: TextEmbedder | PhraseEncoder | None = None,
        weights: Mapping[str, Any] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        memory: Mapping[str, str] | None = None,
        *,
        retry_initial_s: float = RETRY_INITIAL_S,
        retry_max_s: float = RETRY_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._embedder = embedder
        self._memory = dict(memory) if memory is not None else None
        self._weights = dict(weights) if weights is not None else None
        self._matrix: torch.Tensor | None = None
        self._bias: torch.Tensor | None = None
        self.cache_size = max(0, int(cache_size))
        self._cache: OrderedDict[str, Verdict] = OrderedDict()
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self.failure: str | None = None  # the last error while the classifier is failing; None when it works
        self.failures = 0  # every failed load or embedding since the start
        self.consecutive_failures = 0
        self.retry_initial_s, self.retry_max_s = float(retry_initial_s), float(retry_max_s)
        self._clock = clock
        self._retry_at = 0.0
        self.hits = 0
        self.misses = 0

    @property
    def available(self) -> bool:
        """False while the classifier is failing and its next try is not yet due (the splitter then
        uses its lexicon only)."""
        return self.failure is None or self._clock() >= self._retry_at

    @property
    def failing(self) -> bool:
        """True from a failed load or embedding until a later try succeeds."""
        return self.failure is not None

    def state(self) -> dict[str, Any]:
        """Health of the classifier (JSON-safe): whether it is failing, the failures counted, the
        last error and the seconds until the next try.

        Example:
            >>> SettingClassifier().state()["failing"]
            False
        """
        with self._lock:
            failing = self.failure is not None
            return {"failing": failing, "failures": self.failures,
                    "consecutive_failures": self.consecutive_failures, "last_error": self.failure,
                    "retry_in_s": max(0.0, self._retry_at - self._clock()) if failing else None}

    def cached(self, phrase: str) -> Verdict | None:
        """The verdict for `phrase` if it is cached; never embeds."""
        key = phrase_key(phrase)
        with self._lock:
            verdict = self._cache.get(key)
            if verdict is not None:
                self._cache.move_to_end(key)
                self.hits += 1
            return verdict

    def verdict(self, phrase: str) -> Verdict | None:
        """The verdict for one phrase (embedding it if needed); None when unavailable."""
        return self.classify([phrase])[0]

    def classify(self, phrases: Sequence[str]) -> list[Verdict | None]:
        """Verdicts for `phrases`, embedding the uncached ones in one batch; all None when unavailable."""
        keys = [phrase_key(p) for p in phrases]
        out: list[Verdict | None] = [self.cached(k) if k else None for k in keys]
        todo = sorted({k for k, v in zip(keys, out) if v is None and k})
        if not todo or not self._ready():
            return out
        memory = self._memory or {}
        pool = frozenset(memory.get("", "").split())
        fresh = {k: v for k in todo if (v := _remembered(memory, k, pool)) is not None}
        todo = [k for k in todo if k not in fresh]
        if todo:
            try:
                vectors = self._embed(todo)
            except Exception as exc:  # noqa: BLE001 - any failure means: use the lexicon only, retry later
                self._fail(f"embedding failed: {exc}")
                return out
            self._succeeded()
            probs = torch.softmax(vectors @ self._matrix.T + self._bias, dim=-1).tolist()  # type: ignore[union-attr]
            fresh.update((key, Verdict(*row)) for key, row in zip(todo, probs))
        with self._lock:
            self.misses += len(fresh)
            for key, verdict in fresh.items():
                self._cache[key] = verdict
                self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [v if v is not None else fresh.get(k) for k, v in zip(keys, out)]

    def _embed(self, keys: list[str]) -> torch.Tensor:
        return self._embedder.embed(keys).to(device="cpu", dtype=torch.float32)  # type: ignore[union-attr]

    def clear(self) -> None:
        """Forget every cached verdict."""
        with self._lock:
            self._cache.clear()
            self.hits = self.misses = 0

    def _ready(self) -> bool:
        if not self.available:  # failing, and the back-off has not run out
            return False
        if self._matrix is not None:
            return True
        with self._load_lock:
            if self._matrix is not None:
                return True
            if not self.available:  # another thread's try just failed
                return False
            try:
                weights = self._weights if self._weights is not None else load_weights()
                memory = self._memory if self._memory is not None else load_memory()
                matrix = torch.tensor(weights["weights"], dtype=torch.float32)
                bias = torch.tensor(weights["bias"], dtype=torch.float32)
                if self._embedder is None:
                    self._embedder = PhraseEncoder(int(weights.get("layers", DEFAULT_LAYERS)),
                                                   weights.get("model", PACKAGED_MODEL))
                dim = int(self._embedder.dim)
                if dim != matrix.shape[1]:
                    raise ValueError(f"the embedder gives {dim}-d vectors, the weights want {matrix.shape[1]}")
            except Exception as exc:  # noqa: BLE001 - missing package, model or file: lexicon only
                self._fail(str(exc))
                return False
            self._memory, self._bias, self._matrix = memory, bias, matrix
        self._succeeded()
        return True

    def _fail(self, reason: str) -> None:
        """Count a failure and wait before the next try: `retry_initial_s`, doubled per failure in a row."""
        with self._lock:
            first = self.failure is None
            self.failure = reason
            self.failures += 1
            self.consecutive_failures += 1
            delay = min(self.retry_max_s, self.retry_initial_s * 2 ** min(self.consecutive_failures - 1, 30))
            self._retry_at = self._clock() + delay
        if first:  # once per outage: a classifier that keeps failing must not flood the log
            warnings.warn(
                f"the splitter's setting classifier is unavailable ({reason}); "
                f"splitting with the lexicon only, trying again in {delay:.0f} s",
                RuntimeWarning,
                stacklevel=3,
            )
        else:
            logger.info("flexcache: the setting classifier failed again (%s); next try in %.0f s", reason, delay)

    def _succeeded(self) -> None:
        with self._lock:
            recovered, self.failure, self.consecutive_failures = self.failure is not None, None, 0
        if recovered:
            logger.warning("flexcache: the splitter's setting classifier works again")


_UNSET: Any = object()
_current: SettingClassifier | None | Any = _UNSET
_current_lock = threading.Lock()


def get_classifier() -> SettingClassifier | None:
    """The classifier `split_prompt` uses: built on first call (cheap; the model loads later), or
    whatever `set_classifier` installed; None means the open-vocabulary stage is off."""
    global _current
    if _current is _UNSET:
        with _current_lock:
            if _current is _UNSET:
                _current = SettingClassifier()
    return _current


def set_classifier(classifier: SettingClassifier | None) -> SettingClassifier | None:
    """Install `classifier` for `split_prompt` (None: lexicon-only splits); returns the previous one.

    Example:
        >>> previous = set_classifier(None)   # lexicon only
        >>> _ = set_classifier(previous)      # back as it was
    """
    global _current
    with _current_lock:
        previous = SettingClassifier() if _current is _UNSET else _current
        _current = classifier
    return previous
