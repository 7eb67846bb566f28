"""Prompt splitter speed on the labelled set (it runs on every request under decoupled look-up)."""

from __future__ import annotations

import json
from pathlib import Path

from flexcache.engine.splitter import split_prompt

LABELS = Path(__file__).resolve().parents[2] / "tests" / "data" / "prompt_splits.jsonl"


def test_split_every_labelled_prompt(benchmark):
    prompts = [json.loads(line)["prompt"] for line in LABELS.read_text().splitlines() if line.strip()]
    benchmark.group = "splitter"
    benchmark.extra_info["prompts"] = len(prompts)
    parts = benchmark(lambda: [split_prompt(p) for p in prompts])
    assert len(parts) == len(prompts)
