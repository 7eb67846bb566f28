"""Prompt splitter speed on the labelled set (it runs on every request under decoupled look-up).

Two groups: the splitter as shipped after warm-up (the open-vocabulary classifier's model loaded
and every phrase of the set in its verdict cache), and the lexicon-only rules (classifier off).
A phrase the cache has not seen costs one forward pass of the 3-layer MiniLM on top.
"""

from __future__ import annotations

import json
from pathlib import Path

from flexcache.engine import setting_classifier
from flexcache.engine.splitter import split_prompt

LABELS = Path(__file__).resolve().parents[2] / "tests" / "data" / "prompt_splits.jsonl"


def _prompts() -> list[str]:
    return [json.loads(line)["prompt"] for line in LABELS.read_text().splitlines() if line.strip()]


def test_split_every_labelled_prompt(benchmark):
    prompts = _prompts()
    for prompt in prompts:  # warm-up: model loaded, verdicts cached
        split_prompt(prompt)
    benchmark.group = "splitter"
    benchmark.extra_info["prompts"] = len(prompts)
    parts = benchmark(lambda: [split_prompt(p) for p in prompts])
    assert len(parts) == len(prompts)


def test_split_every_labelled_prompt_lexicon_only(benchmark):
    prompts = _prompts()
    previous = setting_classifier.set_classifier(None)
    try:
        benchmark.group = "splitter"
        benchmark.extra_info["prompts"] = len(prompts)
        parts = benchmark(lambda: [split_prompt(p) for p in prompts])
    finally:
        setting_classifier.set_classifier(previous)
    assert len(parts) == len(prompts)
