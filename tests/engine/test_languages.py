"""Prompts in any script through the engine: plan and insert never fail on them, unsplittable
prompts use the full-prompt rule alone, and the odd inputs of the multilingual data sets pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flexcache.engine.splitter import parts_from, split_prompt
from flexcache.errors import InvalidPromptError

DATA = Path(__file__).resolve().parents[2] / "bench" / "data"
DATA_FILES = [DATA / "multilingual-dev.jsonl", DATA / "multilingual-heldout.jsonl"]

UNSPLITTABLE = [
    "一只熊猫在竹林里吃竹子，阳光透过树叶",
    "猫",
    "森の中を走る赤いキツネ",
    "Кошка спит на диване у окна",
    "قطة تنام على الأريكة",
    "🐼🎋🌞",
    "!!!",
    "a panda 在竹林里 eating bamboo",
]


def _latents(plan):
    return {step: torch.randn(4, 3, 8, 8) for step in plan.checkpoint_steps}


def _data_rows() -> list[dict]:
    rows = []
    for path in DATA_FILES:
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


@pytest.mark.parametrize("prompt", UNSPLITTABLE)
def test_an_unsplittable_prompt_is_planned_inserted_and_hit_by_the_full_prompt(make_cache, signature, prompt):
    cache = make_cache()
    assert cache.config.planner.lookup == "decoupled"  # the default: parts would be looked up if there were any
    plan = cache.plan(prompt, signature)
    assert not plan.hit
    assert plan.parts is None and plan.part_embeddings is None  # no part look-up for it
    assert cache.insert(plan, _latents(plan))
    again = cache.plan(prompt, signature)
    assert again.hit and again.source_prompt == prompt and not again.via_parts
    assert again.skip_steps == max(plan.checkpoint_steps)


def test_an_unsplittable_prompt_never_hits_through_an_english_entrys_parts(make_cache, signature):
    cache = make_cache()
    english = cache.plan("a red fox running through snow in a pine forest", signature)
    cache.insert(english, _latents(english))
    for prompt in UNSPLITTABLE:
        plan = cache.plan(prompt, signature)
        assert not plan.via_parts and plan.region is None


@pytest.mark.parametrize("prompt", ["", "  ", "\u3000\t", None, 42, b"\xe7\x8c\xab"])
def test_only_empty_and_non_string_prompts_are_refused(make_cache, signature, prompt):
    with pytest.raises(InvalidPromptError):
        make_cache().plan(prompt, signature)


def test_every_odd_input_of_the_data_sets_splits_and_plans_without_error(make_cache, signature):
    rows = _data_rows()
    odd = list(dict.fromkeys(row["prompt"] for row in rows if row["kind"] == "odd"))
    assert len(odd) >= 20  # both files are in the repository
    cache = make_cache()
    refused = 0
    for prompt in odd:
        if not prompt.strip():  # the one kind of odd input that is an error
            with pytest.raises(InvalidPromptError):
                cache.plan(prompt, signature)
            refused += 1
            continue
        assert split_prompt(prompt).object
        plan = cache.plan(prompt, signature)
        assert (plan.parts is None) == (parts_from(prompt) is None)
        assert cache.insert(plan, _latents(plan))
        assert cache.plan(prompt, signature).hit
    assert refused <= 2


def test_the_wan_default_negative_prompt_is_unsplittable_and_plans(make_cache, signature):
    (negative,) = [row["prompt"] for row in _data_rows() if row["group"] == "wan-negative"][:1]
    assert parts_from(negative) is None
    plan = make_cache().plan(negative, signature)
    assert plan.parts is None and not plan.hit


@pytest.mark.parametrize(("stored", "asked"), [
    ("龙", "猫"),                          # dragon, cat: MiniLM reads both as one [UNK]
    ("🐼🎋☀️", "🐱🏃\u200d♂️🌊🌅✨"),        # emoji only
    ("1234567890", "1234567891"),          # no letter to read
    ("一只熊猫在竹林里吃竹子", "一只老虎在竹林里吃竹子"),  # a CJK edit MiniLM cannot read
])
def test_a_prompt_the_embedder_cannot_read_matches_only_itself(make_cache, signature, stored, asked):
    cache = make_cache(planner={"lookup": "full"})  # the full-prompt rule alone, as unsplittable prompts get
    plan = cache.plan(stored, signature)
    cache.insert(plan, _latents(plan))
    assert cache.plan(stored, signature).hit
    other = cache.plan(asked, signature)
    assert not other.hit
    assert other.similarity is not None and other.similarity < 0.5
