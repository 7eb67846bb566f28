import json
from collections import Counter

import pytest

from flexcache.cli import main
from flexcache.demo import demo_prompts, demo_stream
from flexcache.toyworld.cases import CASES
from flexcache.toyworld.world import parse_prompt


def test_demo_writes_summary_grid_and_report(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "demo.json"
    assert main(["demo", "--json", str(out), "--requests", "16", "--steps", "6", "--no-progress"]) == 0
    summary = json.loads(out.read_text())
    assert summary["requests"] == 16 and summary["steps_total"] == 96
    assert summary["hit_rate"] > 0 and summary["steps_saved"] > 0
    assert summary["hits"] == sum(row["hit"] for row in summary["rows"])
    assert summary["steps_saved"] == sum(row["skip_steps"] for row in summary["rows"])
    assert summary["bytes_stored"] > 0 and summary["entries"] > 0
    for row in summary["rows"]:
        assert 0 <= row["adherence"] <= 1 and 0 <= row["adherence_uncached"] <= 1
        if not row["hit"]:  # a miss draws the noise an uncached run from the same seed draws
            assert row["adherence"] == row["adherence_uncached"]
    assert summary["adherence"] == pytest.approx(sum(r["adherence"] for r in summary["rows"]) / 16)
    grid = Image.open(out.with_suffix(".gif"))
    assert grid.n_frames == 8 and grid.size[0] > 6 * 64
    report = out.with_suffix(".md").read_text()
    assert "adherence (cache)" in report and report.count("| hit |") == summary["hits"]
    table = capsys.readouterr().out
    assert "hit" in table and "miss" in table and "K/N" in table


def test_demo_stream_mixes_new_prompts_with_related_ones():
    stream = demo_stream(36)
    assert stream == demo_stream(36) and stream != demo_stream(36, seed=1)
    relations = Counter(request.relation for request in stream)
    assert relations["new"] >= 6 and set(relations) == {"new", *CASES}
    prompts = demo_prompts(36)
    assert len(set(prompts)) < len(prompts)  # exact repeats
    assert all(parse_prompt(r.prompt) == r.spec for r in stream)


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
    for name, numel in (("correlated-proxy", 16 * 3 * 8 * 16), ("wan-random", 16 * 3 * 8 * 16),
                        ("toy-world", 24 * 8 * 16 * 16)):
        entry = sets[name]
        assert [row["step"] for row in entry["checkpoints"]] == [1, 2, 3, 4, 5]
        for row in entry["checkpoints"]:
            assert row["ratio_vs_fp32"] == pytest.approx(numel * 4 / row["stored_bytes"])
            assert row["rms_error_over_sigma"] <= 0.02 + 1e-6  # the default budget holds
        stages = [row["stages"] for row in entry["ablation"]]
        assert stages[0] == "quantization only" and stages[-1] == "default config" and len(stages) == 5
    assert "correlated-proxy" in capsys.readouterr().out


def test_bench_codec_rejects_a_bad_shape(capsys):
    assert main(["bench", "codec", "--shape", "16,3,8", "--no-wan"]) == 2
    assert "--shape" in capsys.readouterr().err


def test_bench_quality_quick_rows(tmp_path, capsys):
    out = tmp_path / "quality.json"
    assert main(["bench", "quality", "--pairs", "2", "--skips", "0,5", "--budgets", "exact,0.05", "--steps", "8",
                 "--held-out-prompts", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert 0 <= result["adherence_full_steps"] <= 1 and result["held_out_combinations"] == 97
    keys = [(row["case"], row["skip_steps"], row["budget"]) for row in result["rows"]]
    assert keys == [(case, k, b) for case in CASES for k, b in ((0, None), (5, None), (5, 0.05))]
    for row in result["rows"]:
        assert 0 <= row["adherence"] <= 1 and row["pixel_distance"] >= 0
        if row["skip_steps"] == 0 or (row["case"] == "identical" and row["budget"] is None):
            assert row["pixel_distance"] == 0  # K = 0 and exact identical resumes reproduce the full run
        if row["budget"] is not None:
            assert row["bytes_per_entry"] < 3 * 8 * 16 * 16 * 4
    identical = [row for row in result["rows"] if row["case"] == "identical"]
    assert all(row["similarity_mean"] == pytest.approx(1.0, abs=1e-5) for row in identical)
    assert "| identical | 5/8 | exact |" in capsys.readouterr().out


def test_bench_quality_rejects_bad_lists(capsys):
    assert main(["bench", "quality", "--skips", "0,30"]) == 2
    assert main(["bench", "quality", "--budgets", "exact,-1"]) == 2
    assert main(["bench", "quality", "--skips", "a,b"]) == 2


SERVE_YAML = """\
name: served
store:
  tiers:
    - {kind: memory, capacity_bytes: 64MiB}
    - {kind: disk, capacity_bytes: 1GiB, path: PATH}
    - {kind: redis, capacity_bytes: 2GiB, url: "redis://cache.internal:6379/3", prefix: prod}
"""


@pytest.fixture
def serve_config(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(SERVE_YAML.replace("PATH", str(tmp_path / "disk")))
    return path


def test_serve_runs_its_workers_over_the_configs_store(serve_config, monkeypatch, capsys):
    import flexcache.serving as serving
    from flexcache.core import FlexCacheError

    seen = []

    class NoWorkers:  # stands in for the worker processes: records what they would be built from
        def __init__(self, config, workers):
            seen.append((config, workers))
            raise FlexCacheError("stopped before any worker started")

    monkeypatch.setattr(serving, "JobManager", NoWorkers)
    assert main(["--config", str(serve_config), "serve", "--workers", "2"]) == 2
    assert "stopped before any worker started" in capsys.readouterr().err
    (config, workers), = seen
    tiers = config.cache["store"]["tiers"]
    assert workers == 2 and config.cache["name"] == "served"
    assert [(t["kind"], t["capacity_bytes"]) for t in tiers] == [("memory", 64 << 20), ("disk", 1 << 29),
                                                                 ("redis", 2 << 30)]
    assert (tiers[2]["url"], tiers[2]["prefix"]) == ("redis://cache.internal:6379/3", "prod")


def test_serve_refuses_a_redis_url_that_disagrees_with_the_config_before_starting_anything(serve_config, monkeypatch,
                                                                                             capsys):
    import flexcache.serving as serving

    monkeypatch.setattr(serving, "JobManager", None)  # calling it would fail the test with a TypeError
    assert main(["--config", str(serve_config), "serve", "--redis-url", "redis://127.0.0.1:6379/0"]) == 2
    err = capsys.readouterr().err
    assert "--redis-url 'redis://127.0.0.1:6379/0' disagrees with the config's redis tier" in err and "drop" in err
    assert main(["--config", str(serve_config), "serve", "--memory", "1GiB"]) == 2
    assert "--memory" in capsys.readouterr().err
