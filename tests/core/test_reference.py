"""docs/config.md is generated from the config classes and the one list of names, and kept equal to them."""

from __future__ import annotations

from pathlib import Path

from flexcache.cli import main
from flexcache.core import names
from flexcache.core.reference import CHOICES, config_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_docs_config_md_is_what_the_code_generates():
    assert DOC.read_text() == config_reference() + "\n", (
        "docs/config.md is stale: run `flexcache config --reference > docs/config.md`")


def test_the_cli_prints_the_reference(capsys):
    assert main(["config", "--reference"]) == 0
    assert capsys.readouterr().out == config_reference() + "\n"


def test_every_name_list_is_in_the_reference():
    text = config_reference()
    for key, choices in CHOICES.items():
        assert all(f"`{choice}`" in text for choice in choices), key
    for listed in names.ALL_NAMES.values():
        assert any(listed == choices for choices in CHOICES.values())


def test_every_registry_implements_exactly_its_list_of_names():
    from flexcache.codec import CODEC_REGISTRY
    from flexcache.codec.lossless import ALGORITHM_IDS
    from flexcache.core.tiers import TIER_CONFIGS
    from flexcache.kernels import Backend
    from flexcache.store import POLICY_REGISTRY
    from flexcache.store.factory import TIER_BUILDERS

    assert set(POLICY_REGISTRY) == set(names.POLICIES)
    assert set(CODEC_REGISTRY) == set(names.CODECS)
    assert set(ALGORITHM_IDS) == set(names.LOSSLESS_ALGORITHMS)
    assert {b.value for b in Backend} == set(names.KERNEL_BACKENDS)
    assert set(TIER_CONFIGS) == set(names.TIER_KINDS) == {cls.kind for cls in TIER_BUILDERS}
