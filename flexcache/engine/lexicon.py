"""The splitter's lexicon: word lists loaded from data/splitter_lexicon.json, and the word tests built on them.

Sets are stored as space-separated words, phrases as lists of words (tried in
order). Edit the JSON to teach the splitter a word; `flexcache bench splitter`
measures what it changes.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any


def _load() -> dict[str, Any]:
    return json.loads(resources.files("flexcache.engine").joinpath("data/splitter_lexicon.json").read_text("utf-8"))


LEXICON = _load()


def _words(name: str) -> frozenset[str]:
    return frozenset(LEXICON[name].split())


def _phrases(name: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(phrase) for phrase in LEXICON[name])


PLACES = _words("places")
TIMES = _words("times")
WEATHER = _words("weather")
LIGHT = _words("light")
BACKDROPS = _words("backdrops")
# Heads that only make a background after or beside one (the toy world's pattern words).
PATTERNS = _words("patterns")
SETTING_NOUNS = PLACES | TIMES | WEATHER | LIGHT | BACKDROPS
TIME_WEATHER = TIMES | WEATHER
SETTING_ADVERBS = _words("setting_adverbs")
SETTING_PREPS = _words("setting_preps")
COMPOUND_PREPS = _phrases("compound_preps")
# Words that end a noun phrase (besides punctuation).
OTHER_PREPS = _words("other_preps")
ALL_PREPS = SETTING_PREPS | OTHER_PREPS
PLACE_NAME_PREPS = _words("place_name_preps")
CONJUNCTIONS = _words("conjunctions")
DETERMINERS = _words("determiners")
POSSESSIVES = _words("possessives")
# Continue a setting: "filled with neon", "surrounded by fog", "overlooking a valley".
ATTACH = _phrases("attach")
STYLE_WORDS = _words("style_words")
STYLE_HEADS = _words("style_heads")
STYLE_TOKEN = re.compile(r"^\d+(?:k|p|fps|mm)$")
FRAMING_HEADS = _words("framing_heads")
# "-ing" words that are nouns, not verbs.
ING_NOUNS = _words("ing_nouns")
# Tell "the misty woods" (adjective) from "a trench coat lights" (noun, then a verb).
ADJECTIVE_SUFFIXES = tuple(LEXICON["adjective_suffixes"])
ADJECTIVES = _words("adjectives")


def in_lexicon(word: str, lexicon: frozenset[str]) -> bool:
    if word in lexicon:
        return True
    if word.endswith("es") and word[:-2] in lexicon:
        return True
    return word.endswith("s") and word[:-1] in lexicon


def looks_like_noun(word: str) -> bool:
    return word not in ADJECTIVES and not word.endswith(ADJECTIVE_SUFFIXES)


def is_ing(word: str) -> bool:
    return word.endswith("ing") and len(word) > 4 and word not in ING_NOUNS


# The open-vocabulary stage (engine.setting_classifier): thresholds per preposition and context.
_OPEN = LEXICON["open_vocab"]
OPEN_PREPS: dict[str, float] = dict(_OPEN["preps"])
OPEN_TIME_PREPS: dict[str, float] = dict(_OPEN["time_preps"])
OPEN_BARE = float(_OPEN["bare"])
OPEN_BEHIND = float(_OPEN["behind"])
OPEN_STYLE = float(_OPEN["style"])
