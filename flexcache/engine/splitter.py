"""Rule-based split of a text-to-video prompt into an object part and a background part.

`split_prompt("a golden retriever chasing a frisbee in a sunlit park")` gives
object ``"golden retriever chasing a frisbee"`` and background ``"sunlit park"``.
The object part is the subject and what it does; the background part is the
setting: place, scene, backdrop, time of day, season, weather, lighting.
Style, quality and camera words ("cinematic", "4k", "slow motion", "a close-up
of") belong to neither part and are dropped.

Rules, in the order they apply (the machinery is `engine.splitter_rules`; pure
Python and `re`, about 0.1 ms a prompt, plus the classifier of rule 7):

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
   "blue checkered backdrop, ...", ", blurred garden behind") is background; a
   first segment of that kind is background only when a later segment carries
   the object, so a scene prompt ("a busy street in tokyo at night, neon
   lights") keeps its subject ("busy street") as the object.  The grammatical
   subject is never background.
5. "<pattern, backdrop or setting> behind <object>" puts what precedes "behind"
   in the background (the toy world's "horizontal stripes in grey behind a red
   triangle ..."); a clause ending "with <setting> behind" ("smiling with a
   blurred garden behind") puts the setting and "behind" there, "with" dropped.
6. Background pieces are joined in prompt order; the first loses its leading
   preposition, later ones keep theirs ("inside its cage" gives "its cage").
   Both parts are normalised (`normalise`).
7. Open vocabulary (`engine.setting_classifier`): where a rule above finds a
   noun phrase whose head the lexicon does not know, a classifier over MiniLM
   phrase embeddings says whether it is a place (room, landscape, surface or
   container the subject is on or in: "a dusty attic", "a green leaf", "its
   cage", "paris"), a time/weather/light, a style tag or something else (prop,
   clothing, tool, colour, manner: "a red coat", "a frying pan", "yellow",
   "unison").  It is asked after the prepositions listed under ``open_vocab``
   in the lexicon JSON, each with its own threshold ("inside" trusts it most,
   "into" least; "against", "near", "by" never ask), about a bare segment, and
   about the noun phrase before "behind"; a later segment it takes for a style
   tag ("tilt-shift lens") is dropped, and so is "in <style>" ("in pixel
   art").  A phrase's noun phrase ends at an -ing word ("in a cardboard box
   waiting") and may not hold a verb-like -s word.  Verdicts are cached per
   phrase (LRU); the phrases of one prompt are embedded in one batch.  When the
   classifier is off (`setting_classifier.set_classifier(None)`) or cannot load
   its model, the rules use the lexicon alone, exactly as without this stage.

Known limits: no parser, so a setting named as a verb's direct object ("a
submarine exploring the ocean floor", "crossing the street") stays in the
object, and so do settings after prepositions the rules do not treat as
settings ("fishing off a jetty", "launching from a launch pad").  The
classifier sees the phrase, not the sentence: a container the subject acts on
rather than sits in can land in the background ("rummaging through a trash
can", "jumping in puddles", "pouring honey onto a stack of pancakes"), a prop
or garment it mistakes for a place can too ("in a floral sundress"), and a
plate, board or jar it does not know stays in the object; phrases near its
thresholds flip with retraining.  A first-time phrase costs one forward pass
of a 3-layer MiniLM (about 5 ms on one busy CPU thread), and the first one
loads the model (about 5 s).  "with" after a setting is attached to it even
when it describes the subject ("a woman in a park with a red umbrella").
Lighting tags count as setting unless every word is a style word ("warm
lighting" is background, "cinematic lighting" is dropped).

Other languages: the rules are English and read Latin-script words only.  A
prompt they cannot split (`splittable` is False: no Latin-script word, as in
Chinese, Japanese, Cyrillic, Arabic, emoji-only or "!!!", or letters of
another script beside Latin ones) is served by the full-prompt rule alone:
`parts_from` gives None for it, so `FlexCache.plan` makes no part look-up,
and `split_prompt` gives the whole prompt as the object.  Only an empty or
whitespace prompt, or one that is not a string, is an error.  Other
Latin-script languages go through the English rules, which mostly find no
setting in them: the whole prompt is then the object.

Example:
    >>> parts = split_prompt("On a rainy street at night, a man lights a cigarette")
    >>> parts.object, parts.background
    ('man lights a cigarette', 'rainy street at night')
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from flexcache.core.errors import InvalidPromptError
from flexcache.engine import setting_classifier
from flexcache.engine.setting_classifier import Verdict
from flexcache.engine.splitter_rules import BG as _BG
from flexcache.engine.splitter_rules import DROP as _DROP
from flexcache.engine.splitter_rules import LATIN_LETTERS as _LATIN_LETTERS
from flexcache.engine.splitter_rules import OBJ as _OBJ
from flexcache.engine.splitter_rules import Scanner as _Scanner
from flexcache.engine.splitter_rules import label as _rule_label
from flexcache.engine.splitter_rules import runs as _runs
from flexcache.engine.splitter_rules import tokenise as _tokenise

_TOKEN = re.compile(rf"[{_LATIN_LETTERS}0-9]+(?:['\u2019\-][{_LATIN_LETTERS}0-9]+)*")
_LEADING_ARTICLE = re.compile(r"^(?:(?:a|an|the)(?:\s+|$))+")
_SURROUNDING = re.compile(r"^[\s\W_]+|[\s\W_]+$")


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


def splittable(text: str) -> bool:
    """Whether the splitter's rules can split `text`: it has a Latin-script word and no letter of
    another script (after NFKC, so full-width Latin counts as Latin).

    Example:
        >>> splittable("a panda eating bamboo in a forest"), splittable("Un café à Paris")
        (True, True)
        >>> splittable("一只熊猫在竹林里吃竹子"), splittable("a panda 在竹林里"), splittable("!!!")
        (False, False, False)
    """
    if not isinstance(text, str):
        return False
    text = unicodedata.normalize("NFKC", text)
    if any(ch.isalpha() and not _is_latin(ch) for ch in text):
        return False
    return bool(_tokenise(text)[0])


def _is_latin(letter: str) -> bool:
    return letter.isascii() or unicodedata.name(letter, "").startswith("LATIN ")


def _whole(text: str) -> str:
    """The whole prompt as one part: normalised, or only whitespace-collapsed where normalising
    leaves nothing ("!!!", emoji)."""
    return normalise(text) or " ".join(text.split())


def split_prompt(text: str) -> PromptParts:
    """Split a prompt into its object part and its background part (see the module doc).

    Args:
        text: the prompt, any case, any script.

    Returns:
        `PromptParts` with both parts normalised; `background` is "" when the prompt
        names no setting.  `object` is never empty: if the rules leave nothing for
        it, the whole prompt (style words dropped) is the object and background is "".
        A prompt the rules cannot split (`splittable` is False) is the object whole.

    Raises:
        InvalidPromptError: `text` is not a string, or is empty or whitespace.

    Example:
        >>> split_prompt("a man walking his dog in a park at sunset on a rainy day, 4k")
        PromptParts(object='man walking his dog', background='park at sunset on a rainy day')
        >>> split_prompt("一只熊猫在竹林里吃竹子")
        PromptParts(object='一只熊猫在竹林里吃竹子', background='')
    """
    if not isinstance(text, str):
        raise InvalidPromptError(f"a prompt must be a str, not {type(text).__name__}")
    if not text.strip():
        raise InvalidPromptError("the prompt is empty; give a non-empty prompt string")
    if not splittable(text):
        return PromptParts(object=_whole(text), background="")
    words, segments = _tokenise(text)
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


def _label(words: list[str], segments: list[list[int]]) -> list[int]:
    """Roles from the rules, asking the open-vocabulary classifier about unknown heads.

    A first pass answers only from the classifier's cache and notes the phrases it
    lacks; those are embedded in one batch and a second pass uses every verdict."""
    classifier = setting_classifier.get_classifier()
    if classifier is None or not classifier.available:
        return _rule_label(words, segments)
    missing: list[str] = []

    def from_cache(phrase: str) -> Verdict | None:
        verdict = classifier.cached(phrase)
        if verdict is None:
            missing.append(phrase)
        return verdict

    roles = _rule_label(words, segments, from_cache)
    if not missing:
        return roles
    classifier.classify(missing)
    if not classifier.available:  # the model failed to load: the lexicon-only pass stands
        return _rule_label(words, segments)
    return _rule_label(words, segments, classifier.verdict)


def parts_from(value: Any) -> PromptParts | None:
    """Turn a `PromptParts`, an ``(object, background)`` pair or a prompt string into parts.

    Strings are split with `split_prompt`; explicit parts are normalised the same way.

    Returns:
        The parts; None for a prompt string the rules cannot split (`splittable` is
        False): its caller looks up the full prompt alone, no part.

    Raises:
        InvalidPromptError: `value` is none of those, a part is not a string, the
            object part is empty, or the prompt string is empty or whitespace.

    Example:
        >>> parts_from(("A Red Fox", "the snowy forest"))
        PromptParts(object='red fox', background='snowy forest')
        >>> parts_from("一只熊猫在竹林里吃竹子，阳光透过树叶") is None
        True
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
        return split_prompt(value) if splittable(value) else None
    else:
        raise InvalidPromptError(
            "prompt parts must be a PromptParts, an (object, background) tuple of str or a "
            f"prompt str, not {type(value).__name__}"
        )
    obj, background = normalise(obj), normalise(background)
    if not obj:
        raise InvalidPromptError("the object part is empty; name what the video shows")
    return PromptParts(object=obj, background=background)


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
