"""Rules files: written, read back, refused when truncated, edited or for another signature."""

from __future__ import annotations

import pytest

from flexcache import GenerationSignature
from flexcache.errors import RulesFileError, RulesSignatureError
from flexcache.quality.rules import CalibratedRules, load_rules, save_rules

SIGNATURE = GenerationSignature(model_id="acme/video-1", scheduler="UniPCMultistepScheduler:ab12", num_steps=30,
                                height=480, width=832, num_frames=33, latent_shape=(16, 9, 60, 104),
                                extra=(("guidance_scale", "5.0"),))


def rules(**changes) -> CalibratedRules:
    fields = dict(signature=SIGNATURE.to_dict(), scorer="clip", tolerance=0.02, confidence=0.9,
                  embedder="use-multilingual-v3", created="2026-12-08T02:00:00Z",
                  similarity_table=((0.9, 0.2), (0.9999, 0.5)), part_table=((0.85, -1.0, 0.1),),
                  region_table=(("background", 0.88, 0.3),), region_method="restart",
                  checkpoint_fractions=(0.1, 0.2, 0.3, 0.5), report={"full": {"bands": [{"pairs": 12}]}})
    fields.update(changes)
    return CalibratedRules(**fields)


def test_a_saved_file_reads_back_equal_and_matches_only_its_signature(tmp_path):
    path = save_rules(rules(), tmp_path / "rules.yaml")
    loaded = load_rules(path)
    assert loaded == rules() and loaded.report == rules().report
    assert loaded.matches(SIGNATURE)
    other = GenerationSignature(**{**SIGNATURE.__dict__, "num_steps": 50})
    assert not loaded.matches(other)
    with pytest.raises(RulesSignatureError) as caught:
        loaded.check_signature(other)
    message = str(caught.value)
    assert "30 steps" in message and "50 steps" in message and "num_steps" in message


def test_an_edited_value_fails_the_checksum(tmp_path):
    path = save_rules(rules(), tmp_path / "rules.yaml")
    text = path.read_text()
    assert "- 0.2" in text
    path.write_text(text.replace("- 0.2", "- 0.4", 1))
    with pytest.raises(RulesFileError, match="checksum"):
        load_rules(path)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_a_truncated_file_is_refused(tmp_path, keep):
    path = save_rules(rules(), tmp_path / "rules.yaml")
    text = path.read_text()
    path.write_text(text[: int(len(text) * keep)])
    with pytest.raises(RulesFileError):
        load_rules(path)


def test_missing_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(RulesFileError, match="cannot read"):
        load_rules(tmp_path / "absent.yaml")
    (tmp_path / "config.yaml").write_text("planner:\n  lookup: full\n")
    with pytest.raises(RulesFileError, match="not a FlexCache rules file"):
        load_rules(tmp_path / "config.yaml")


@pytest.mark.parametrize("changes", [dict(similarity_table=((0.9, 1.2),)), dict(region_table=(("sky", 0.9, 0.2),)),
                                     dict(confidence=1.0), dict(region_method=None)])
def test_malformed_rules_are_refused(changes):
    with pytest.raises(RulesFileError):
        rules(**changes)


def test_tables_give_the_planner_fields():
    tables = rules().tables()
    assert tables["regions"] and tables["region_method"] == "restart"
    assert not rules(region_table=(), region_method=None).tables()["regions"]
