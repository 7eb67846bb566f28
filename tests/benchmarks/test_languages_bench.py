"""`flexcache bench languages`: pairs, metrics and the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flexcache.benchmarks.language_bench import easy_threshold, labelled_pairs, load_rows, roc_auc, score
from flexcache.core import ConfigError


def row(group, lang, kind, prompt):
    return {"group": group, "lang": lang, "kind": kind, "prompt": prompt}


ROWS = [
    row("g1", "en", "original", "a cat sleeping on a sofa"),
    row("g1", "zh", "translation", "一只猫在沙发上睡觉"),
    row("g1", "en", "paraphrase", "a kitten asleep on the couch"),
    row("g1", "en", "edit_subject", "a dog sleeping on a sofa"),
    row("g2", "ja", "original", "森の中を走る赤いキツネ"),
    row("g2", "en", "translation", "a red fox running through a forest"),
    row("u1", "en", "unrelated", "stock prices scrolling on a screen"),
    row("o1", "und", "odd", "!!!"),
]


def test_pairs_are_labelled_by_kind_and_language():
    pairs = {(ROWS[p.first]["prompt"][:6], ROWS[p.second]["prompt"][:6]): (p.kind, p.pair)
             for p in labelled_pairs(ROWS)}
    assert pairs[("a cat ", "一只猫在沙发")] == ("positive", "en-zh")
    assert pairs[("a cat ", "a kitt")] == ("positive", "en-en")
    assert pairs[("a cat ", "a dog ")] == ("hard", "en-en")
    assert pairs[("森の中を走る", "a red ")] == ("positive", "en-other")
    assert pairs[("一只猫在沙发", "森の中を走る")] == ("easy", "other")
    assert pairs[("a cat ", "stock ")] == ("easy", "en-en")
    assert ("一只猫在沙发", "a dog ") not in pairs  # a translation and an edit: neither kind of pair
    assert not any("!!!" in (ROWS[p.first]["prompt"], ROWS[p.second]["prompt"]) for p in labelled_pairs(ROWS))


def test_auc_and_threshold():
    assert roc_auc(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2])) == 1.0
    assert roc_auc(np.array([0.1]), np.array([0.9])) == 0.0
    assert roc_auc(np.array([0.5]), np.array([0.5])) == 0.5
    assert roc_auc(np.array([]), np.array([0.5])) is None
    easy = np.linspace(0, 1, 10_001)
    threshold = easy_threshold(easy, 0.01)
    assert (easy > threshold).mean() <= 0.01 < (easy >= threshold - 1e-3).mean()


def test_a_perfect_embedder_scores_perfectly_and_a_constant_one_at_chance():
    groups = {r["group"] for r in ROWS}
    axes = {g: np.eye(8)[i] for i, g in enumerate(sorted(groups))}
    perfect = np.stack([axes[r["group"]] if r["kind"] != "edit_subject" else np.eye(8)[7] for r in ROWS])
    scores = score(ROWS, perfect)["all"]
    assert scores["auc_easy"] == 1.0 and scores["auc_hard"] == 1.0
    assert scores["at_easy_1pct"]["recall"] == 1.0 and scores["at_easy_1pct"]["hard_above"] == 0.0
    constant = score(ROWS, np.ones((len(ROWS), 8)) / np.sqrt(8))["all"]
    assert constant["auc_easy"] == 0.5 and constant["at_easy_1pct"]["recall"] == 0.0
    assert set(score(ROWS, perfect)["by_language_pair"]) == {"en-en", "en-zh", "en-other", "other"}


def test_load_rows_names_the_bad_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"group": "g", "lang": "en", "kind": "nope",
                                                             "prompt": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rows.jsonl:2: kind 'nope'"):
        load_rows(path)


def test_bench_languages_writes_json_and_markdown(tmp_path, capsys):
    from flexcache.cli import main

    data = tmp_path / "tiny.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    out = tmp_path / "languages.json"
    assert main(["bench", "languages", "--data", f"tiny={data}", "--embedders", "all-MiniLM-L6-v2",
                 "--no-progress", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    minilm = result["scores"]["tiny"]["all-MiniLM-L6-v2"]
    assert result["data"]["tiny"]["pairs"] == {"positive": 3, "hard": 1, "easy": 14}
    assert minilm["by_language_pair"]["en-zh"]["positives"] == 1
    # MiniLM reads no Chinese: the translation's vector is its exact-only one, far from the original.
    assert minilm["by_language_pair"]["en-zh"]["mean_cosine"]["positive"] < 0.3
    assert result["embedders"]["all-MiniLM-L6-v2"]["model_bytes"] > 50 * 2**20
    assert "| all-MiniLM-L6-v2 | all |" in out.with_suffix(".md").read_text()
    assert "| all-MiniLM-L6-v2 |" in capsys.readouterr().out
