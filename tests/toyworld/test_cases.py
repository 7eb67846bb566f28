"""Request pairs for the quality benchmark and the demo: each case relates the two as it says."""

from __future__ import annotations

import random

import pytest

from flexcache.toyworld.cases import CASES, related_request, request_for
from flexcache.toyworld.world import all_specs, parse_prompt

OBJECT = ("shape", "color", "direction")
SETTING = ("background", "pattern")


@pytest.mark.parametrize("case", CASES)
def test_related_requests_keep_and_change_what_the_case_says(case):
    rng = random.Random(case)
    for spec in rng.sample(all_specs(), 60):
        source = request_for(spec, rng)
        target = related_request(source, case, rng)
        assert parse_prompt(target.prompt) == target.spec
        same = {name for name in OBJECT + SETTING if getattr(source.spec, name) == getattr(target.spec, name)}
        if case == "identical":
            assert target == source
        elif case == "near-duplicate":
            assert target.spec == source.spec and target.prompt != source.prompt
            assert target.template != source.template
        elif case == "same-background":
            assert same == set(SETTING) and target.template == source.template
        elif case == "same-object":
            assert same == set(OBJECT) and target.template == source.template
        elif case == "object-edit":
            assert len(same & set(OBJECT)) == 2 and set(SETTING) <= same and target.template == source.template
        else:
            assert len(same & set(SETTING)) == 1 and set(OBJECT) <= same and target.template == source.template


def test_requests_are_reproducible_and_unknown_cases_fail():
    first = request_for(all_specs()[5], random.Random(1))
    assert first == request_for(all_specs()[5], random.Random(1))
    with pytest.raises(ValueError, match="unknown case"):
        related_request(first, "same-everything", random.Random(0))
