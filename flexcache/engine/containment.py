"""The containment gate: does a source prompt hold content that a request does not ask for?

A hit from another user's entry reuses what that entry's run put into the
latent. Its prompt is a near-duplicate of the request's, yet it may add content
("... with a red logo in the corner", "... drifting right" for "... drifting
left"): what the request did not ask for then reaches its video. The gate reads
both texts word by word. Each content word of the source must be in the request,
or have a word there whose embedding is close (a synonym, a translation). A word
with neither is unasked. `engine.guard` then caps the hit's depth so the
request regenerates it (``sharing.containment_gate``).

Words: NFKC, lower case, runs of letters and digits; CJK ideographs one by one
(written Chinese and Japanese have no spaces); function words of the common
prompt languages dropped (`FUNCTION_WORDS`), as are one-letter Latin tokens.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence

import torch

from flexcache.engine.prompt_text import letter_script

# Words that carry no content in the languages prompts are commonly written in.
FUNCTION_WORDS = frozenset("""
a an the and or but nor of in on at to into onto from by with without for as over under above below
near beside behind through across along around between among within is are was were be been being it its
this that these those there here which who whom whose while during then than very so too also just some
any each every all no not very much many more most few one two three very
de la el los las un una unos unas y o en con sin por para del al sobre bajo entre
le les une des du et ou au aux dans avec sans sur sous pour par
der die das den dem des ein eine einer einem einen und oder im am mit ohne auf unter über für von zu
o a os as um uma e em no na nos nas com sem por para do da dos das
il lo gli i un una e o in con su per di da del della
的 了 着 在 和 与 是 一 个 只 中 上 里 下 有 把 被 很 也 都 及 或
の に は を が で と へ も や な
""".split())

_WORD = re.compile(r"\w+", re.UNICODE)
# Words read of one text: a prompt of thousands of words (an attacker's) costs every reader's plan no more.
MAX_WORDS = 64
# Word vectors kept per gate; a prompt has tens of words, a day's traffic some tens of thousands.
MAX_MEMO_WORDS = 100_000


def content_words(text: str) -> list[str]:
    """The words of `text` that carry content, in order, each once (the first `MAX_WORDS`).

    Example:
        >>> content_words("A red fox runs through the snow, 4K")
        ['red', 'fox', 'runs', 'snow', '4k']
        >>> content_words("一只猫在沙发上睡觉")
        ['猫', '沙', '发', '睡', '觉']
    """
    words: list[str] = []
    for token in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        pieces = [token]
        if any(letter_script(ch) == "CJK" for ch in token if ch.isalpha()):
            pieces = _split_ideographs(token)
        for piece in pieces:
            if piece in FUNCTION_WORDS or piece.replace("_", "") == "":
                continue
            if len(piece) == 1 and piece.isascii() and piece.isalpha():
                continue
            if piece not in words:
                words.append(piece)
                if len(words) == MAX_WORDS:
                    return words
    return words


def _split_ideographs(token: str) -> list[str]:
    """Each CJK ideograph on its own; runs of other letters (kana, Latin) stay together."""
    pieces: list[str] = []
    run = ""
    for ch in token:
        if ch.isalpha() and letter_script(ch) == "CJK":
            if run:
                pieces.append(run)
                run = ""
            pieces.append(ch)
        else:
            run += ch
    if run:
        pieces.append(run)
    return pieces


def _same_word(word: str, other: str) -> bool:
    """Equal, or equal once a plural or a verb's -s / -es / -ing / -ed is taken off."""
    if word == other:
        return True
    return _stem(word) == _stem(other)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            # "running" -> "run", "stopped" -> "stop"
            return stem[:-1] if suffix in ("ing", "ed") and stem[-1] == stem[-2] and stem[-1] not in "aeiou" else stem
    return word


class ContainmentGate:
    """Finds the content words of a source text that a request does not ask for (thread-safe).

    Args:
        embed: texts -> (n, d) unit vectors (the cache's embedder); used word by word, memoized.
        word_similarity: the cosine from which a request word stands for a source word.
    """

    def __init__(self, embed, word_similarity: float) -> None:
        self._embed = embed
        self.word_similarity = word_similarity
        self._vectors: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    def unasked(self, source: str, request: str) -> list[str]:
        """The content words of `source` that `request` does not ask for (empty: contained).

        Example:
            >>> vocabulary = ["red", "fox", "snow", "neon", "logo"]  # one-hot: unrelated words
            >>> gate = ContainmentGate(lambda words: torch.eye(5)[[vocabulary.index(w) for w in words]], 0.8)
            >>> gate.unasked("a red fox in snow", "red foxes in the snow")
            []
            >>> gate.unasked("a red fox in snow, neon logo", "a red fox in snow")
            ['neon', 'logo']
        """
        asked = content_words(request)
        missing = [w for w in content_words(source) if not any(_same_word(w, a) for a in asked)]
        if not missing or not asked:
            return missing
        vectors = self._word_vectors(missing + asked)
        source_vectors = torch.stack([vectors[w] for w in missing])
        request_vectors = torch.stack([vectors[w] for w in asked])
        best = (source_vectors @ request_vectors.T).max(dim=1).values
        return [w for w, similarity in zip(missing, best.tolist()) if similarity < self.word_similarity]

    def _word_vectors(self, words: Sequence[str]) -> dict[str, torch.Tensor]:
        with self._lock:
            known = {w: self._vectors[w] for w in words if w in self._vectors}
        new = [w for w in dict.fromkeys(words) if w not in known]
        if new:
            rows = self._embed(new).detach().to("cpu", torch.float32)
            rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
            fresh = dict(zip(new, rows))
            with self._lock:
                if len(self._vectors) + len(fresh) > MAX_MEMO_WORDS:
                    self._vectors.clear()
                self._vectors.update(fresh)
            known.update(fresh)
        return known
