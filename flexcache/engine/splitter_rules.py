"""The splitter's rules: word roles (object, background, dropped) for one tokenised prompt.

`engine.splitter` documents the rules and owns the public API; this module is
the machinery. `label` takes an optional `Oracle`, a callable from a noun
phrase to a `setting_classifier.Verdict` (or None when it cannot tell): the
open-vocabulary stage. It is asked only about phrases whose head the lexicon
does not know, in the places listed in the splitter's rules; without it the
rules use the lexicon alone.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from flexcache.engine import lexicon as lx
from flexcache.engine.setting_classifier import Verdict

OBJ, BG, DROP = 0, 1, 2
Oracle = Callable[[str], "Verdict | None"]

# Latin letters with their diacritics ("café", "Ålesund"): the rules are English, their words Latin-script.
LATIN_LETTERS = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff"
_WORD = re.compile(rf"[{LATIN_LETTERS}0-9]+(?:['\u2019\-][{LATIN_LETTERS}0-9]+)*|[,;:.!?()\[\]\"]")
_SETTING_KINDS = ("place", "time")
_TRAILING_ADVERBS = frozenset({"outside", "overhead", "above", "below", "everywhere", "around", "nearby"})


def tokenise(text: str) -> tuple[list[str], list[list[int]]]:
    """Words (original case) and segments (lists of word indices) split at punctuation.

    The text is NFKC-normalised first, so full-width letters and punctuation ("ｃａｔ，") and
    decomposed accents read as their plain forms."""
    words: list[str] = []
    segments: list[list[int]] = [[]]
    for match in _WORD.finditer(unicodedata.normalize("NFKC", text)):
        token = match.group()
        if token[0].isalnum():
            segments[-1].append(len(words))
            words.append(token)
        elif segments[-1]:
            segments.append([])
    return words, [s for s in segments if s]


class Scanner:
    """Rule matching over one prompt's lowercased words, with an optional open-vocabulary oracle."""

    def __init__(self, words: list[str], oracle: Oracle | None = None) -> None:
        self.orig = words
        self.low = [w.lower() for w in words]
        self.oracle = oracle

    def phrase(self, j: int, k: int, end: int) -> str:
        """The classifier's text for the noun phrase j..k: articles and a leading possessive
        dropped, and a following "of <noun phrase>" kept ("pile of gold coins")."""
        text = [w for w in self.low[j:k] if w not in lx.DETERMINERS]
        if text and text[0] in lx.POSSESSIVES:
            text = text[1:]
        if k < end and self.low[k] == "of":
            m = self.np_end(k + 1, end)
            text += ["of"] + [w for w in self.low[k + 1 : m] if w not in lx.DETERMINERS | lx.POSSESSIVES]
            if m == k + 1:
                text.pop()
        return " ".join(text)

    def plain_np(self, j: int, k: int) -> bool:
        """No verb-like word inside j..k: no -ing word after the first content word ("a raincoat
        walking"), no -s word between nouns ("an old librarian stacks books")."""
        content = [i for i in range(j, k) if self.low[i] not in lx.DETERMINERS | lx.POSSESSIVES]
        for n, i in enumerate(content[1:], 1):
            w = self.low[i]
            if lx.is_ing(w):
                return False
            verb_s = w.endswith("s") and not w.endswith("ss") and i + 1 < k
            if verb_s and lx.looks_like_noun(self.low[content[n - 1]]):
                return False
        return True

    def ask(self, j: int, k: int, end: int, threshold: float, kinds: tuple[str, ...] = _SETTING_KINDS) -> bool:
        """Whether the oracle puts the noun phrase j..k in `kinds` with at least `threshold` probability."""
        if self.oracle is None or k <= j or not self.plain_np(j, k):
            return False
        text = self.phrase(j, k, end)
        verdict = self.oracle(text) if text else None
        return verdict is not None and sum(getattr(verdict, kind) for kind in kinds) >= threshold

    def prep_at(self, i: int, end: int) -> tuple[str, ...] | None:
        """The (possibly multi-word) setting preposition starting at word i."""
        for compound in lx.COMPOUND_PREPS:
            if tuple(self.low[i : i + len(compound)]) == compound and i + len(compound) <= end:
                return compound
        return (self.low[i],) if self.low[i] in lx.SETTING_PREPS else None

    def np_end(self, j: int, end: int, allow_and: bool = False) -> int:
        """End (exclusive) of the noun phrase starting at j."""
        k, content, seen_setting = j, 0, False
        while k < end:
            w = self.low[k]
            if w in lx.ALL_PREPS or w in lx.CONJUNCTIONS or self.attach_at(k, end):
                if not (allow_and and w == "and" and content):
                    break
            elif (w in lx.DETERMINERS or w in lx.POSSESSIVES) and content:
                break
            elif lx.is_ing(w) and seen_setting:
                break
            if w not in lx.DETERMINERS:
                content += 1
            seen_setting = lx.in_lexicon(w, lx.SETTING_NOUNS)
            k += 1
        # "a trench coat lights a cigarette": after a noun, an -s word followed by a
        # determiner is a verb ("the misty woods the ..." keeps "woods": "misty" is no noun).
        if content >= 2 and k < end and self.low[k] in lx.DETERMINERS | lx.POSSESSIVES:
            verb, before = self.low[k - 1], self.low[k - 2]
            if verb.endswith("s") and not verb.endswith("ss") and lx.looks_like_noun(before):
                k -= 1
        return k if content else j

    def head_ok(self, prep: tuple[str, ...], j: int, k: int, end: int, open_vocab: bool = False) -> bool:
        """Whether the noun phrase j..k (head: word k - 1) is a setting after `prep`: by the
        lexicon, or with `open_vocab` by the classifier."""
        word, last, head = self.low[k - 1], prep[-1], k - 1
        if open_vocab:
            if last in ("during", "after", "before"):
                threshold = lx.OPEN_TIME_PREPS.get(last)
                return threshold is not None and self.ask(j, k, end, threshold, ("time",))
            return last in lx.OPEN_PREPS and self.ask(j, k, end, lx.OPEN_PREPS[last])
        if last == "against":
            return lx.in_lexicon(word, lx.BACKDROPS)
        if last in ("during", "after", "before"):
            return lx.in_lexicon(word, lx.TIME_WEATHER)
        if lx.in_lexicon(word, lx.SETTING_NOUNS):
            return True
        # A capitalised word after "in Paris", "on Mars", "through Central Park".
        return (
            last in lx.PLACE_NAME_PREPS
            and head > 0
            and self.orig[head][0].isupper()
            and not self.orig[head].isupper()
        )

    def setting_pp(self, i: int, end: int) -> int:
        """End of a setting prepositional phrase starting at i, or i if there is none."""
        prep = self.prep_at(i, end)
        if prep is None:
            return i
        j = i + len(prep)
        k = self.np_end(j, end)
        if k == j:
            return i
        verb = self.low[k - 1]
        is_verb = k - 1 > j and verb.endswith("s") and not verb.endswith("ss")
        for open_vocab in (False, True) if self.oracle is not None else (False,):
            if self.head_ok(prep, j, k, end, open_vocab):
                return k
            # "in the living room plays with yarn": a setting noun then an -s verb.
            if is_verb and self.head_ok(prep, j, k - 1, end, open_vocab):
                return k - 1
        # "in a cardboard box waiting": an unknown head, then an -ing verb.
        if self.oracle is not None:
            for t in range(j + 1, k):
                if lx.is_ing(self.low[t]) and self.low[t - 1] not in lx.DETERMINERS | lx.POSSESSIVES:
                    return t if self.head_ok(prep, j, t, end, True) else i
        return i

    def attach_at(self, k: int, end: int) -> tuple[str, ...] | None:
        for words in lx.ATTACH:
            if tuple(self.low[k : k + len(words)]) == words and k + len(words) <= end:
                return words
        return None

    def chain(self, k: int, end: int) -> int:
        """Extend a setting that ends at k through further settings and attachments."""
        while k < end:
            nxt = self.setting_pp(k, end)
            if nxt > k:
                k = nxt
                continue
            attach = self.attach_at(k, end)
            if attach is not None:
                j = k + len(attach)
                if attach == ("with",) and j < end and self.low[j] in lx.POSSESSIVES:
                    break
                m = self.np_end(j, end, allow_and=True)
                if m == j:
                    break
                k = m
                continue
            if self.low[k] == "and":
                m = self.np_end(k + 1, end)
                if m > k + 1 and lx.in_lexicon(self.low[m - 1], lx.SETTING_NOUNS):
                    k = m
                    continue
            break
        return k

    def bare_setting(self, seg: list[int], after_background: bool, first: bool = False) -> bool:
        """Whether a segment is only a setting noun phrase ("neon lights", "sunset over sea",
        "blurred garden behind"); a `first` segment's unknown head may not take "of" ("a bowl
        of ramen on a table, ..." names the subject)."""
        start, end = seg[0], seg[-1] + 1
        while start < end and self.low[start] in ("just", "only", "no", "with"):
            start += 1
        k = self.np_end(start, end)
        if k == start:
            return False
        heads = lx.SETTING_NOUNS | lx.PATTERNS if after_background else lx.SETTING_NOUNS
        known = lx.in_lexicon(self.low[k - 1], heads)
        if not known:  # "lanterns glowing": the noun phrase of an unknown head ends at an -ing verb
            k = next((t for t in range(start + 1, k) if lx.is_ing(self.low[t])), k)
        head = self.low[k - 1]
        m = self.chain(k, end)
        whole = m == end or (m + 1 == end and self.low[m] == "behind")
        # "wind blowing", "rain falling", "snow falling outside": weather doing something is weather.
        trail = 2 if m + 2 == end and self.low[m + 1] in _TRAILING_ADVERBS else 1
        doing = m + trail == end and lx.is_ing(self.low[m])
        if known:
            return whole or (doing and lx.in_lexicon(head, lx.WEATHER | lx.LIGHT | {"snow"}))
        if not (whole or doing) or sum(w not in lx.DETERMINERS | lx.POSSESSIVES for w in self.low[start:k]) > 4:
            return False
        if first and k < end and self.low[k] == "of":
            return False
        if doing:  # only when the classifier is sure: "steam rising" is the dish's
            return self.ask(start, k, end, lx.OPEN_STYLE, ("time",))
        return self.ask(start, k, end, lx.OPEN_BEHIND if m < end else lx.OPEN_BARE)

    def style_tag(self, seg: list[int]) -> bool:
        """Whether the oracle takes a short verbless segment ("tilt-shift lens") for a style tag."""
        low = [self.low[i] for i in seg]
        if len(low) > 5 or any(lx.is_ing(w) or lx.in_lexicon(w, lx.SETTING_NOUNS) for w in low):
            return False
        if any(w in lx.ALL_PREPS and w != "of" for w in low):
            return False
        verdict = self.oracle(" ".join(low)) if self.oracle is not None else None
        return verdict is not None and verdict.style >= lx.OPEN_STYLE

    def is_style(self, seg: list[int]) -> bool:
        words = [self.low[i] for i in seg]
        if words[:4] == ["in", "the", "style", "of"] or words[:2] == ["style", "of"]:
            return True
        if words[0] == "by" and self.setting_pp(seg[0], seg[-1] + 1) == seg[0]:
            return True  # "by <artist>"
        content = [w for w in words if w not in lx.DETERMINERS and w not in ("and", "of")]
        if all(w in lx.STYLE_WORDS or lx.STYLE_TOKEN.match(w) for w in content):
            return True
        return (
            len(words) <= 4
            and words[-1] in lx.STYLE_HEADS
            and not any(lx.is_ing(w) for w in words)
            and not any(lx.in_lexicon(w, lx.SETTING_NOUNS) for w in words[:-1])
        )


def _framing_end(scan: Scanner, seg: list[int]) -> int:
    """Index after a leading "a video of" / "a drone shot of" / "close up of", or seg[0]."""
    low, start = scan.low, seg[0]
    i = start + (low[start] in lx.DETERMINERS)
    for length in range(0, 4):
        head = i + length
        if head + 1 > seg[-1]:
            break
        w = low[head]
        is_head = w in lx.FRAMING_HEADS or (w == "up" and head > 0 and low[head - 1] == "close")
        if is_head and low[head + 1] == "of":
            return head + 2
        if w in lx.ALL_PREPS or w in lx.CONJUNCTIONS:
            break
    return start


def _drop_inline_style(scan: Scanner, seg: list[int], roles: list[int]) -> None:
    low, end = scan.low, seg[-1] + 1
    for i in seg:
        if lx.STYLE_TOKEN.match(low[i]):
            roles[i] = DROP
        if low[i] != "in":
            continue
        rest = low[i + 1 : end]
        if rest[:3] == ["the", "style", "of"] or rest[:2] == ["style", "of"]:
            for j in range(i, end):
                roles[j] = DROP
            return
        for phrase in (["slow", "motion"], ["slow-motion"], ["super", "slow", "motion"]):
            if rest[: len(phrase)] == phrase:
                for j in range(i, i + 1 + len(phrase)):
                    roles[j] = DROP


def _scan_clause(scan: Scanner, idx: list[int], roles: list[int]) -> None:
    """Mark setting phrases inside a clause (a run of word indices)."""
    if not idx:
        return
    end = idx[-1] + 1
    i = idx[0]
    while i < end:
        if roles[i] == DROP:
            i += 1
            continue
        k = scan.setting_pp(i, end)
        if k > i:
            k = scan.chain(k, end)
            for j in range(i, k):
                if roles[j] != DROP:
                    roles[j] = BG
            i = k
            continue
        w = scan.low[i]
        if w == "with" and _with_behind(scan, i, end):  # "smiling with a blurred garden behind"
            roles[i] = DROP
            for j in range(i + 1, end):
                roles[j] = BG
            return
        if w == "in" and scan.oracle is not None:  # "a fox in pixel art"
            k = scan.np_end(i + 1, end)
            if k == end and k > i + 1 and scan.ask(i + 1, k, end, lx.OPEN_STYLE, ("style",)):
                for j in range(i, k):
                    roles[j] = DROP
                return
        alone = i + 1 == end or scan.low[i + 1] in lx.ALL_PREPS | lx.CONJUNCTIONS
        if w in lx.SETTING_ADVERBS and alone:  # "swimming underwater", not "an underwater city"
            roles[i] = BG
        i += 1


def _with_behind(scan: Scanner, i: int, end: int) -> bool:
    """Whether words i..end are "with <setting noun phrase> behind" closing the clause."""
    if end - i < 3 or scan.low[end - 1] != "behind" or scan.np_end(i + 1, end) != end - 1:
        return False
    head = scan.low[end - 2]
    return lx.in_lexicon(head, lx.SETTING_NOUNS | lx.PATTERNS) or scan.ask(i + 1, end - 1, end, lx.OPEN_BEHIND)


def _behind_split(scan: Scanner) -> int | None:
    """Index of "behind" in "<backdrop or pattern> behind <object>", else None."""
    low = scan.low
    if "behind" not in low:
        return None
    b = low.index("behind")
    before = low[:b]
    if not before or b + 1 == len(low) or any(lx.is_ing(w) for w in before):
        return None
    if any(lx.in_lexicon(w, lx.PATTERNS | lx.BACKDROPS) for w in before):
        return b
    # "a blurred garden behind a smiling woman": one setting noun phrase, then "behind" (with the
    # classifier on: a lexicon head, or an unknown one the classifier takes for a setting).
    if scan.oracle is None or scan.np_end(0, b) != b:
        return None
    if lx.in_lexicon(low[b - 1], lx.SETTING_NOUNS) or scan.ask(0, b, b, lx.OPEN_BARE):
        return b
    return None


def label(words: list[str], segments: list[list[int]], oracle: Oracle | None = None) -> list[int]:
    """A role (OBJ, BG, DROP) for every word; `oracle` judges phrases the lexicon does not know."""
    scan = Scanner(words, oracle)
    roles = [OBJ] * len(words)
    first = segments[0]
    for i in range(first[0], _framing_end(scan, first)):
        roles[i] = DROP

    behind = _behind_split(scan)
    if behind is not None:
        for i in range(behind):
            roles[i] = BG
        roles[behind] = DROP
        segments = [[i for i in s if i > behind] for s in segments]
        segments = [s for s in segments if s]

    live: list[list[int]] = []
    for seg in segments:
        seg = [i for i in seg if roles[i] == OBJ]
        if not seg:
            continue
        if len(segments) > 1 and scan.is_style(seg):
            for i in seg:
                roles[i] = DROP
            continue
        _drop_inline_style(scan, seg, roles)
        seg = [i for i in seg if roles[i] == OBJ]
        if seg:
            live.append(seg)
    if not live:
        return roles

    pending_first: list[int] | None = None
    previous_background = behind is not None
    for n, seg in enumerate(live):
        contiguous = _contiguous(seg)
        if n == 0 and len(live) > 1 and scan.prep_at(seg[0], seg[-1] + 1) is None and scan.bare_setting(
            contiguous, previous_background, first=True
        ):
            pending_first = seg
            continue
        earlier_object = pending_first is not None or any(roles[i] == OBJ for s in live[:n] for i in s)
        if n > 0 and earlier_object and scan.style_tag(seg):  # "tilt-shift lens", never the only object
            for i in seg:
                roles[i] = DROP
            continue
        if n > 0 and scan.bare_setting(contiguous, previous_background):
            for i in seg:
                roles[i] = BG
            previous_background = True
            continue
        for run in runs(seg):
            _scan_clause(scan, run, roles)
        previous_background = roles[seg[-1]] == BG
    if pending_first is not None:
        later_object = any(roles[i] == OBJ for seg in live[1:] for i in seg)
        if later_object:
            for i in pending_first:
                roles[i] = BG
        else:
            for run in runs(pending_first):
                _scan_clause(scan, run, roles)
    return roles


def runs(seg: list[int]) -> list[list[int]]:
    """Split a list of indices into runs of consecutive ones."""
    runs: list[list[int]] = []
    for i in seg:
        if runs and runs[-1][-1] + 1 == i:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _contiguous(seg: list[int]) -> list[int]:
    return runs(seg)[0] if seg else seg


