import json

import pytest

from flexcache.cli import main
from flexcache.demo import demo_prompts


def test_demo_writes_summary_with_hits(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["demo", "--json", str(out), "--requests", "30", "--steps", "10", "--no-progress"]) == 0
    summary = json.loads(out.read_text())
    for key in ("requests", "hits", "hit_rate", "steps_total", "steps_saved", "bytes_stored", "entries"):
        assert key in summary
    assert summary["requests"] == 30
    assert summary["hit_rate"] > 0 and summary["steps_saved"] > 0
    assert summary["steps_total"] == 300
    assert summary["hits"] == sum(row["hit"] for row in summary["rows"])
    assert summary["steps_saved"] == sum(row["skip_steps"] for row in summary["rows"])
    assert summary["bytes_stored"] > 0 and summary["entries"] > 0
    table = capsys.readouterr().out
    assert "hit" in table and "miss" in table and "K/N" in table


def test_demo_stream_has_repeats_and_near_duplicates():
    prompts = demo_prompts(36)
    assert len(prompts) == 36
    assert len(set(prompts)) < len(prompts)  # exact repeats
    assert len(set(prompts)) > 20


def test_bad_config_is_reported_not_raised(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: mru\n")
    assert main(["--config", str(bad), "config"]) == 2
    assert "policy must be one of" in capsys.readouterr().err


def test_config_show_applies_env(monkeypatch, capsys):
    monkeypatch.setenv("FLEXCACHE_POLICY", "lru")
    assert main(["config"]) == 0
    assert "policy: lru" in capsys.readouterr().out


def test_demo_rejects_bad_arguments(capsys):
    assert main(["demo", "--requests", "0", "--no-progress"]) == 2
    with pytest.raises(SystemExit):
        main(["demo", "--policy", "fifo"])


def test_bench_codec_reports_every_set_separately(tmp_path, capsys):
    out = tmp_path / "codec.json"
    assert main(["bench", "codec", "--shape", "16,3,8,16", "--steps", "10", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    sets = {entry["set"]: entry for entry in result["sets"]}
    assert set(sets) == {"correlated-proxy", "wan-random", "toy-world"}
    assert "not available" in sets["toy-world"]["status"]
    for name in ("correlated-proxy", "wan-random"):
        entry = sets[name]
        assert [row["step"] for row in entry["checkpoints"]] == [1, 2, 3, 4, 5]
        for row in entry["checkpoints"]:
            assert row["ratio_vs_fp32"] == pytest.approx(16 * 3 * 8 * 16 * 4 / row["stored_bytes"])
            assert row["rms_error_over_sigma"] <= 0.02 + 1e-6  # the default budget holds
        stages = [row["stages"] for row in entry["ablation"]]
        assert stages[0] == "quantization only" and stages[-1] == "default config" and len(stages) == 5
    assert "correlated-proxy" in capsys.readouterr().out


def test_bench_codec_rejects_a_bad_shape(capsys):
    assert main(["bench", "codec", "--shape", "16,3,8", "--no-wan"]) == 2
    assert "--shape" in capsys.readouterr().err
