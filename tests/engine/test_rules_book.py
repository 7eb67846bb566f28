"""Which tables plan a call: a rules file for its signature, the shipped toy-world calibration, the
operator's tables, or the conservative default (`engine.rules_book`)."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from flexcache import GenerationSignature
from flexcache.core.tables import TOYWORLD_CALIBRATED_AT, UNCALIBRATED_SIMILARITY_TABLE
from flexcache.errors import RulesFileError, RulesSignatureError
from flexcache.quality.rules import CalibratedRules, save_rules

TOYWORLD = GenerationSignature(
    model_id=TOYWORLD_CALIBRATED_AT["model_id"], scheduler=TOYWORLD_CALIBRATED_AT["scheduler"], num_steps=20,
    height=16, width=16, num_frames=8, latent_shape=(3, 8, 16, 16), extra=(("guidance_scale", "3.0"),))
PROMPT = "a red fox running through snow in a pine forest"
EDIT = "a red fox running through snow in a pine forest at dusk"


def fill(cache, signature, prompt=PROMPT):
    plan = cache.plan(prompt, signature)
    cache.insert(plan, {step: torch.randn(signature.latent_shape) for step in plan.checkpoint_steps})
    return plan


def rules_for(signature, tmp_path, *, embedder="all-MiniLM-L6-v2", table=((0.5, 0.3),), name="r.yaml"):
    rules = CalibratedRules(signature=signature.to_dict(), scorer="toyworld", tolerance=0.02, confidence=0.9,
                            embedder=embedder, created="2026-12-08T00:00:00Z", similarity_table=table,
                            checkpoint_fractions=(0.1, 0.3))
    return str(save_rules(rules, tmp_path / name))


def test_an_uncalibrated_model_gets_the_conservative_table_and_no_part_or_region_hits(make_cache, signature):
    cache = make_cache(planner={"uncalibrated": "auto"})
    fill(cache, signature)
    similarity = cache.plan(EDIT, signature).similarity
    plan = cache.plan(EDIT, signature)
    assert plan.rules == "uncalibrated"
    expected = max((f for t, f in UNCALIBRATED_SIMILARITY_TABLE if similarity >= t), default=0.0)
    assert plan.skip_steps <= round(expected * signature.num_steps) and plan.hit == (expected > 0)
    assert plan.region is None and not plan.via_parts
    # another object in the same setting: a region or part hit under the toy world's tables, none here
    other = cache.plan("a grey wolf standing still in snow in a pine forest", signature, regions=True)
    assert other.region is None and not other.via_parts
    assert cache.stats()["rules_served"]["uncalibrated"] == 4


def test_the_toy_world_at_its_shipped_settings_keeps_its_tables(make_cache):
    cache = make_cache(planner={"uncalibrated": "auto"})
    fill(cache, TOYWORLD)
    plan = cache.plan(EDIT, TOYWORLD)
    assert plan.rules == "toyworld" and plan.hit and plan.rule.startswith("full@")
    other_steps = dataclasses.replace(TOYWORLD, num_steps=30)
    assert cache.plan(EDIT, other_steps).rules == "uncalibrated"  # the toy world at other settings: not measured


def test_tables_the_operator_wrote_serve_every_model(make_cache, signature):
    cache = make_cache(planner={"uncalibrated": "auto", "similarity_table": [[0.5, 0.4]]})
    fill(cache, signature)
    plan = cache.plan(EDIT, signature)
    assert plan.rules == "configured" and plan.skip_steps == round(0.4 * signature.num_steps)
    assert plan.rule == "full@0.5"


def test_conservative_mode_overrides_even_the_operator_tables(make_cache, signature):
    cache = make_cache(planner={"uncalibrated": "conservative", "similarity_table": [[0.5, 0.4]]})
    fill(cache, signature)
    assert cache.plan(EDIT, signature).rules == "uncalibrated"


def test_a_rules_file_serves_its_signature_only(make_cache, signature, tmp_path, caplog):
    path = rules_for(signature, tmp_path)
    cache = make_cache(planner={"uncalibrated": "auto", "rules_file": path})
    plan = fill(cache, signature)
    assert 6 in plan.checkpoint_steps  # the rules' 0.3 of N is captured
    hit = cache.plan(EDIT, signature)
    assert hit.rules == "rules file r.yaml" and hit.rule == "full@0.5" and hit.skip_steps == 6
    other = dataclasses.replace(signature, num_steps=40)
    with caplog.at_level(logging.WARNING, logger="flexcache.rules"):
        assert cache.plan(EDIT, other).rules == "uncalibrated"
    assert "not what rules file r.yaml was calibrated for" in caplog.text
    assert cache.stats()["rules_served"] == {"rules file r.yaml": 2, "uncalibrated": 1}


def test_rules_files_are_checked_when_the_cache_is_built(make_cache, signature, tmp_path):
    with pytest.raises(RulesFileError, match="embedder"):
        make_cache(planner={"rules_file": rules_for(signature, tmp_path, embedder="use-multilingual-v3")})
    path = tmp_path / "cut.yaml"
    path.write_text(open(rules_for(signature, tmp_path)).read()[:200])
    with pytest.raises(RulesFileError):
        make_cache(planner={"rules_file": str(path)})
    first = rules_for(signature, tmp_path, name="a.yaml")
    second = rules_for(signature, tmp_path, name="b.yaml", table=((0.6, 0.1),))
    with pytest.raises(RulesFileError, match="same signature"):
        make_cache(planner={"rules_file": [first, second]})


def test_a_pipeline_of_another_model_is_refused_naming_both(make_cache, signature, tmp_path):
    cache = make_cache(planner={"rules_file": rules_for(signature, tmp_path)})
    cache.planners.check_model(signature.model_id)  # its own model: fine
    with pytest.raises(RulesSignatureError) as caught:
        cache.planners.check_model("acme/other-video")
    assert "acme/other-video" in str(caught.value) and signature.model_id in str(caught.value)


def test_step_down_lowers_one_rule_by_one_checkpoint(make_cache, signature):
    cache = make_cache(planner={"uncalibrated": "tables", "lookup": "full",
                                "similarity_table": [[0.5, 0.4], [0.9999, 0.5]]})
    fill(cache, signature)
    assert cache.plan(EDIT, signature).skip_steps == 8
    planner = cache.planners.configured
    assert planner.step_down("full@0.5") == pytest.approx(0.3)
    plan = cache.plan(EDIT, signature)
    assert plan.skip_steps == 6 and plan.rule == "full@0.5"
    assert cache.plan(PROMPT, signature).skip_steps == 10  # the other rule is untouched
    for _ in range(4):
        planner.step_down("full@0.5")
    assert not cache.plan(EDIT, signature).hit  # stepped down to nothing: off
    assert cache.stats()["rule_caps"] == {"configured": {"full@0.5": 0.0}}
    with pytest.raises(KeyError):
        planner.step_down("full@0.123")
