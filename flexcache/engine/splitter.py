"""Rule-based split of a text-to-video prompt into an object part and a background part.

`split_prompt("a golden retriever chasing a frisbee in a sunlit park")` gives
object ``"golden retriever chasing a frisbee"`` and background ``"sunlit park"``.
The object part is the subject and what it does; the background part is the
setting: place, scene, backdrop, time of day, season, weather, lighting.
Style, quality and camera words ("cinematic", "4k", "slow motion", "a close-up
of") belong to neither part and are dropped.

Rules, in the order they apply (pure Python and `re`; about 0.1 ms a prompt):

1. The prompt is cut into words and into comma/sentence segments.  A leading
   framing phrase ("a video of", "a drone shot of", "portrait of") is dropped,
   and so are style segments (every word a style word, or a short tag ending in
   "style", "photography", "render", ...) and inline style phrases ("in slow
   motion", "in the style of ...", "4k").
2. A setting is a preposition ("in", "on", "at", "under", "across", "through",
   "in front of", "deep in", ...) followed by a noun phrase whose head (last
   word) is a setting noun from a lexicon (park, street, kitchen, sky,
   background, night, sunset, rain, ...) or a capitalised place name.
   "against" takes only backdrop heads (wall, background, sky), "during",
   "after" and "before" only time and weather heads; "from", "with", "of" and
   "to"/"toward" never open a setting.  So "a man in a red coat", "a cup of
   coffee", "a cat with a hat", "hovering near a red flower" stay in the object.
3. A setting runs on through further settings ("park at sunset on a rainy
   day"), "of ..." ("streets of new york"), "with ..." unless a possessive
   follows ("planet with two suns"), "filled with", "surrounded by",
   "overlooking" and the like.
4. A segment that is only a setting noun phrase (", neon lights", ", rain",
   "blue checkered backdrop, ...") is background; a first segment of that kind
   is background only when a later segment carries the object, so a scene
   prompt ("a busy street in tokyo at night, neon lights") keeps its subject
   ("busy street") as the object.  The grammatical subject is never background.
5. "<pattern or backdrop> behind <object>" puts what precedes "behind" in the
   background (the toy world's "horizontal stripes in grey behind a red
   triangle ...").
6. Background pieces are joined in prompt order; the first loses its leading
   preposition, later ones keep theirs.  Both parts are normalised (`normalise`).

Known limits: no parser, so a setting named as a verb's direct object ("a
submarine exploring the ocean floor", "crossing the street") stays in the
object, as do settings whose head is outside the lexicon ("in a glass bowl",
"from a launch pad") and lowercase place names ("in paris").  Props named with
a setting noun are taken as settings, and "with" after a setting is attached
to it even when it describes the subject ("a woman in a park with a red
umbrella").  Lighting tags count as setting unless every word is a style word
("warm lighting" is background, "cinematic lighting" is dropped).  English only.

Example:
    >>> parts = split_prompt("On a rainy street at night, a man lights a cigarette")
    >>> parts.object, parts.background
    ('man lights a cigarette', 'rainy street at night')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flexcache.core.errors import InvalidPromptError
from flexcache.engine import lexicon as lx

_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019\-][A-Za-z0-9]+)*|[,;:.!?()\[\]\"]")
_TOKEN = re.compile(r"[a-z0-9]+(?:['\u2019\-][a-z0-9]+)*")
_LEADING_ARTICLE = re.compile(r"^(?:(?:a|an|the)(?:\s+|$))+")
_SURROUNDING = re.compile(r"^[\s\W_]+|[\s\W_]+$")

_OBJ, _BG, _DROP = 0, 1, 2


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptParts:
    """A prompt's object part (subject + action) and background part (setting; "" if none).

    Example:
        >>> PromptParts.from_text("a close-up of a blooming rose")
        PromptParts(object='blooming rose', background='')
    """

    object: str
    background: str = ""

    def __post_init__(self) -> None:
        for name in ("object", "background"):
            if not isinstance(getattr(self, name), str):
                raise InvalidPromptError(
                    f"PromptParts.{name} must be a str, not {type(getattr(self, name)).__name__}"
                )

    @classmethod
    def from_text(cls, text: str) -> PromptParts:
        """Split `text` with `split_prompt`."""
        return split_prompt(text)

    def as_dict(self) -> dict[str, str]:
        return {"object": self.object, "background": self.background}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> PromptParts:
        return cls(object=data["object"], background=data.get("background", ""))


def normalise(text: str) -> str:
    """Lowercase, collapse whitespace, strip surrounding punctuation and leading a/an/the.

    Example:
        >>> normalise("  The  Sunlit PARK, ")
        'sunlit park'
    """
    text = " ".join(text.lower().split())
    text = _SURROUNDING.sub("", text)
    text = _LEADING_ARTICLE.sub("", text)
    return _SURROUNDING.sub("", text)


def words(text: str) -> list[str]:
    """The words of `text` as the splitter sees them (normalised, punctuation dropped).

    Example:
        >>> words("A dog's ball, in the park!")
        ["dog's", 'ball', 'in', 'the', 'park']
    """
    return _TOKEN.findall(normalise(text))


def split_prompt(text: str) -> PromptParts:
    """Split a prompt into its object part and its background part (see the module doc).

    Args:
        text: the prompt, any case.

    Returns:
        `PromptParts` with both parts normalised; `background` is "" when the prompt
        names no setting.  `object` is never empty: if the rules leave nothing for
        it, the whole prompt (style words dropped) is the object and background is "".

    Raises:
        InvalidPromptError: `text` is not a string or has no words.

    Example:
        >>> split_prompt("a man walking his dog in a park at sunset on a rainy day, 4k")
        PromptParts(object='man walking his dog', background='park at sunset on a rainy day')
    """
    if not isinstance(text, str):
        raise InvalidPromptError(f"a prompt must be a str, not {type(text).__name__}")
    words, segments = _tokenise(text)
    if not words:
        raise InvalidPromptError("the prompt has no words to split")
    roles = _label(words, segments)
    obj = normalise(_join(words, segments, roles, _OBJ, strip_prep=False))
    background = normalise(_join(words, segments, roles, _BG, strip_prep=True))
    if not obj:
        kept = [_OBJ if r != _DROP else _DROP for r in roles]
        obj = normalise(_join(words, segments, kept, _OBJ, strip_prep=False))
        background = ""
        if not obj:  # only articles and style words, e.g. "the"
            obj = " ".join(words).lower()
    return PromptParts(object=obj, background=background)


def parts_from(value: Any) -> PromptParts:
    """Turn a `PromptParts`, an ``(object, background)`` pair or a prompt string into parts.

    Strings are split with `split_prompt`; explicit parts are normalised the same way.

    Raises:
        InvalidPromptError: `value` is none of those, a part is not a string, or the
            object part is empty.

    Example:
        >>> parts_from(("A Red Fox", "the snowy forest"))
        PromptParts(object='red fox', background='snowy forest')
    """
    if isinstance(value, PromptParts):
        obj, background = value.object, value.background
    elif isinstance(value, tuple):
        if len(value) != 2:
            raise InvalidPromptError(
                "explicit prompt parts must be an (object, background) pair, "
                f"got {len(value)} items"
            )
        obj, background = value
        for name, part in (("object", obj), ("background", background)):
            if not isinstance(part, str):
                raise InvalidPromptError(
                    f"the {name} part must be a str, not {type(part).__name__}"
                )
    elif isinstance(value, str):
        if not value.strip():
            raise InvalidPromptError("the prompt is empty; give a non-empty prompt string")
        return split_prompt(value)
    else:
        raise InvalidPromptError(
            "prompt parts must be a PromptParts, an (object, background) tuple of str or a "
            f"prompt str, not {type(value).__name__}"
        )
    obj, background = normalise(obj), normalise(background)
    if not obj:
        raise InvalidPromptError("the object part is empty; name what the video shows")
    return PromptParts(object=obj, background=background)


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------


def _tokenise(text: str) -> tuple[list[str], list[list[int]]]:
    """Words (original case) and segments (lists of word indices) split at punctuation."""
    words: list[str] = []
    segments: list[list[int]] = [[]]
    for match in _WORD.finditer(text):
        token = match.group()
        if token[0].isalnum():
            segments[-1].append(len(words))
            words.append(token)
        elif segments[-1]:
            segments.append([])
    return words, [s for s in segments if s]


class _Scanner:
    """Rule matching over one prompt's lowercased words."""

    def __init__(self, words: list[str]) -> None:
        self.orig = words
        self.low = [w.lower() for w in words]

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

    def head_ok(self, prep: tuple[str, ...], k: int) -> bool:
        """Whether word k heads a setting after `prep`."""
        word, last = self.low[k], prep[-1]
        if last == "against":
            return lx.in_lexicon(word, lx.BACKDROPS)
        if last in ("during", "after", "before"):
            return lx.in_lexicon(word, lx.TIME_WEATHER)
        if lx.in_lexicon(word, lx.SETTING_NOUNS):
            return True
        # A capitalised word after "in Paris", "on Mars", "through Central Park".
        return (
            last in lx.PLACE_NAME_PREPS
            and k > 0
            and self.orig[k][0].isupper()
            and not self.orig[k].isupper()
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
        if self.head_ok(prep, k - 1):
            return k
        # "in the living room plays with yarn": a setting noun then an -s verb.
        verb = self.low[k - 1]
        is_verb = verb.endswith("s") and not verb.endswith("ss")
        if k - 1 > j and is_verb and self.head_ok(prep, k - 2):
            return k - 1
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

    def bare_setting(self, seg: list[int], after_background: bool) -> bool:
        """Whether a segment is only a setting noun phrase ("neon lights", "sunset over sea")."""
        start, end = seg[0], seg[-1] + 1
        while start < end and self.low[start] in ("just", "only", "no", "with"):
            start += 1
        k = self.np_end(start, end)
        if k == start:
            return False
        head = self.low[k - 1]
        heads = lx.SETTING_NOUNS | lx.PATTERNS if after_background else lx.SETTING_NOUNS
        if not lx.in_lexicon(head, heads):
            return False
        m = self.chain(k, end)
        if m == end:
            return True
        # "wind blowing", "rain falling": weather doing something is still weather.
        return m + 1 == end and lx.is_ing(self.low[m]) and lx.in_lexicon(head, lx.WEATHER | lx.LIGHT)

    def is_style(self, seg: list[int]) -> bool:
        words = [self.low[i] for i in seg]
        if words[:4] == ["in", "the", "style", "of"] or words[:2] == ["style", "of"]:
            return True
        if words[0] == "by" and self.setting_pp(seg[0], seg[-1] + 1) == seg[0]:
            return True  # "by <artist>"
        content = [w for w in words if w not in lx.DETERMINERS and w != "and"]
        if all(w in lx.STYLE_WORDS or lx.STYLE_TOKEN.match(w) for w in content):
            return True
        return (
            len(words) <= 4
            and words[-1] in lx.STYLE_HEADS
            and not any(lx.is_ing(w) for w in words)
            and not any(lx.in_lexicon(w, lx.SETTING_NOUNS) for w in words[:-1])
        )


def _framing_end(scan: _Scanner, seg: list[int]) -> int:
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


def _drop_inline_style(scan: _Scanner, seg: list[int], roles: list[int]) -> None:
    low, end = scan.low, seg[-1] + 1
    for i in seg:
        if lx.STYLE_TOKEN.match(low[i]):
            roles[i] = _DROP
        if low[i] != "in":
            continue
        rest = low[i + 1 : end]
        if rest[:3] == ["the", "style", "of"] or rest[:2] == ["style", "of"]:
            for j in range(i, end):
                roles[j] = _DROP
            return
        for phrase in (["slow", "motion"], ["slow-motion"], ["super", "slow", "motion"]):
            if rest[: len(phrase)] == phrase:
                for j in range(i, i + 1 + len(phrase)):
                    roles[j] = _DROP


def _scan_clause(scan: _Scanner, idx: list[int], roles: list[int]) -> None:
    """Mark setting phrases inside a clause (a run of word indices)."""
    if not idx:
        return
    end = idx[-1] + 1
    i = idx[0]
    while i < end:
        if roles[i] == _DROP:
            i += 1
            continue
        k = scan.setting_pp(i, end)
        if k > i:
            k = scan.chain(k, end)
            for j in range(i, k):
                if roles[j] != _DROP:
                    roles[j] = _BG
            i = k
            continue
        w = scan.low[i]
        alone = i + 1 == end or scan.low[i + 1] in lx.ALL_PREPS | lx.CONJUNCTIONS
        if w in lx.SETTING_ADVERBS and alone:  # "swimming underwater", not "an underwater city"
            roles[i] = _BG
        i += 1


def _behind_split(scan: _Scanner) -> int | None:
    """Index of "behind" in "<backdrop or pattern> behind <object>", else None."""
    low = scan.low
    if "behind" not in low:
        return None
    b = low.index("behind")
    before = low[:b]
    if not before or any(lx.is_ing(w) for w in before):
        return None
    if not any(lx.in_lexicon(w, lx.PATTERNS | lx.BACKDROPS) for w in before):
        return None
    return b


def _label(words: list[str], segments: list[list[int]]) -> list[int]:
    """A role (_OBJ, _BG, _DROP) for every word."""
    scan = _Scanner(words)
    roles = [_OBJ] * len(words)
    first = segments[0]
    for i in range(first[0], _framing_end(scan, first)):
        roles[i] = _DROP

    behind = _behind_split(scan)
    if behind is not None:
        for i in range(behind):
            roles[i] = _BG
        roles[behind] = _DROP
        segments = [[i for i in s if i > behind] for s in segments]
        segments = [s for s in segments if s]

    live: list[list[int]] = []
    for seg in segments:
        seg = [i for i in seg if roles[i] == _OBJ]
        if not seg:
            continue
        if len(segments) > 1 and scan.is_style(seg):
            for i in seg:
                roles[i] = _DROP
            continue
        _drop_inline_style(scan, seg, roles)
        seg = [i for i in seg if roles[i] == _OBJ]
        if seg:
            live.append(seg)
    if not live:
        return roles

    pending_first: list[int] | None = None
    previous_background = behind is not None
    for n, seg in enumerate(live):
        contiguous = _contiguous(seg)
        if n == 0 and scan.prep_at(seg[0], seg[-1] + 1) is None and scan.bare_setting(
            contiguous, previous_background
        ):
            pending_first = seg
            continue
        if n > 0 and scan.bare_setting(contiguous, previous_background):
            for i in seg:
                roles[i] = _BG
            previous_background = True
            continue
        for run in _runs(seg):
            _scan_clause(scan, run, roles)
        previous_background = roles[seg[-1]] == _BG
    if pending_first is not None:
        later_object = any(roles[i] == _OBJ for seg in live[1:] for i in seg)
        if later_object:
            for i in pending_first:
                roles[i] = _BG
        else:
            for run in _runs(pending_first):
                _scan_clause(scan, run, roles)
    return roles


def _runs(seg: list[int]) -> list[list[int]]:
    """Split a list of indices into runs of consecutive ones."""
    runs: list[list[int]] = []
    for i in seg:
        if runs and runs[-1][-1] + 1 == i:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _contiguous(seg: list[int]) -> list[int]:
    return _runs(seg)[0] if seg else seg


def _join(
    words: list[str], segments: list[list[int]], roles: list[int], role: int, *, strip_prep: bool
) -> str:
    """Words with `role`: runs joined by spaces, segments by commas; the first run of the
    background loses its leading preposition."""
    scan = _Scanner(words) if strip_prep else None
    pieces: list[str] = []
    first = True
    for seg in segments:
        parts: list[str] = []
        for run in _runs([i for i in seg if roles[i] == role]):
            if first and scan is not None:
                prep = scan.prep_at(run[0], run[-1] + 1)
                if prep is not None and len(run) > len(prep):
                    run = run[len(prep) :]
            first = False
            parts.append(" ".join(words[i] for i in run))
        if parts:
            pieces.append(" ".join(parts))
    return ", ".join(pieces)
