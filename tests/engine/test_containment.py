"""The containment gate (`engine.containment`): source words a request does not ask for."""

from __future__ import annotations

import pytest

from flexcache.engine.containment import ContainmentGate, content_words


def test_content_words_drop_function_words_and_split_ideographs():
    assert content_words("The cat and THE dog, in a park!") == ["cat", "dog", "park"]
    assert content_words("un gato en la playa") == ["gato", "playa"]
    assert content_words("一只猫在沙发上") == ["猫", "沙", "发"]  # 一, 只, 在, 上: function words
    assert content_words("a, the; of") == []


@pytest.fixture(scope="module")
def gate(embedder):
    return ContainmentGate(embedder.embed, 0.8)


def test_a_source_the_request_contains_passes(gate):
    assert gate.unasked("a fox running in snow", "a red fox runs through deep snow at dawn") == []
    assert gate.unasked("red foxes", "a red fox") == []  # plurals and verb forms are the same word


def test_added_content_and_a_swapped_attribute_are_unasked(gate):
    assert gate.unasked("a red fox in snow with a soda logo", "a red fox in snow") == ["soda", "logo"]
    assert gate.unasked("a circle drifting right", "a circle drifting left") == ["right"]


def test_a_close_synonym_stands_for_the_source_word(gate):
    assert gate.unasked("a cat on a couch", "a cat on a sofa") == []


def test_an_empty_request_asks_for_nothing(gate):
    assert gate.unasked("a red fox", "the") == ["red", "fox"]
