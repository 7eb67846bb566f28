"""Serving-benchmark workloads: the JSONL trace format, the synthetic generator, the model profiles."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict

import pytest

from flexcache.benchmarks.serve.profiles import PROFILES, get_profile
from flexcache.benchmarks.serve.workload import (
    SyntheticWorkload,
    TraceRequest,
    generate_trace,
    read_trace,
    write_trace,
)
from flexcache.errors import ConfigError, InvalidTraceError


def test_trace_round_trips(tmp_path):
    requests = [TraceRequest(0.0, "default", "a red fox"),
                TraceRequest(1.5, "acme", "a red fox in snow", user="u1", seed=7, height=480, width=832,
                             frames=81, steps=50)]
    path = tmp_path / "trace.jsonl"
    write_trace(path, requests)
    assert read_trace(path) == requests
    assert json.loads(path.read_text().splitlines()[0]) == {"t": 0.0, "tenant": "default", "prompt": "a red fox"}


@pytest.mark.parametrize(("line", "message"), [
    ('{"t": -1, "tenant": "a", "prompt": "x"}', "'t'"),
    ('{"t": 1, "tenant": "a b", "prompt": "x"}', "'tenant'"),
    ('{"t": 1, "tenant": "a", "prompt": "  "}', "'prompt'"),
    ('{"t": 1, "tenant": "a", "prompt": "x", "steps": 0}', "'steps'"),
    ('{"t": 1, "tenant": "a", "prompt": "x", "colour": "red"}', "unknown fields"),
    ('[1, 2]', "JSON object"),
    ('{"t": 1,', "not JSON"),
])
def test_bad_trace_lines_name_the_line_and_the_field(tmp_path, line, message):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"t": 0, "tenant": "a", "prompt": "ok"}\n' + line + "\n")
    with pytest.raises(InvalidTraceError, match=message) as info:
        read_trace(path)
    assert f"{path}:2" in str(info.value)


def test_traces_must_be_sorted_and_not_empty(tmp_path):
    path = tmp_path / "trace.jsonl"
    path.write_text('{"t": 5, "tenant": "a", "prompt": "x"}\n{"t": 4, "tenant": "a", "prompt": "y"}\n')
    with pytest.raises(InvalidTraceError, match="sort the trace"):
        read_trace(path)
    path.write_text("\n")
    with pytest.raises(InvalidTraceError, match="no requests"):
        read_trace(path)
    with pytest.raises(InvalidTraceError, match="cannot read"):
        read_trace(tmp_path / "missing.jsonl")


def test_synthetic_trace_is_deterministic_and_has_repeats_edits_and_sessions():
    spec = SyntheticWorkload(requests=1500, seed=3)
    trace = generate_trace(spec)
    assert trace == generate_trace(spec) and trace != generate_trace(SyntheticWorkload(requests=1500, seed=4))
    assert len(trace) == 1500 and all(a.t <= b.t for a, b in zip(trace, trace[1:]))
    prompts = [r.prompt for r in trace]
    assert len(set(prompts)) < 0.9 * len(prompts)  # exact repeats
    by_user = defaultdict(list)
    for r in trace:
        by_user[r.user].append(r.prompt)
    # Edits: consecutive prompts of a user that share a subject or a setting but differ.
    shared = sum(1 for ps in by_user.values() for a, b in zip(ps, ps[1:])
                 if a != b and (a.split(" ")[:2] == b.split(" ")[:2] or a.split(" in ")[-1:] == b.split(" in ")[-1:]))
    assert shared > 0.2 * len(trace)


def test_synthetic_arrivals_follow_the_rate_and_the_daily_wave():
    spec = SyntheticWorkload(requests=20_000, requests_per_hour=600, trough_to_peak=0.5, seed=1)
    times = [r.t for r in generate_trace(spec)]
    hours = Counter(int(t // 3600) % 24 for t in times if t < 86_400)
    # sin peaks at hour 6, troughs at hour 18; the ratio of those hours' counts is about 0.5.
    assert 0.35 < hours[18] / hours[6] < 0.7
    assert 550 < len([t for t in times if t < 86_400]) / 24 < 650


def test_session_lengths_have_the_configured_median():
    import random

    from flexcache.benchmarks.serve.workload import _session_length

    rng = random.Random(0)
    spec = SyntheticWorkload()
    lengths = [_session_length(rng, spec) for _ in range(20_000)]
    assert statistics.median(lengths) == 5
    assert 10 < statistics.mean(lengths) < 14


def test_bad_synthetic_parameters_are_refused():
    with pytest.raises(InvalidTraceError, match="edit_share"):
        SyntheticWorkload(edit_share=0.95, repeat_share=0.1)
    with pytest.raises(InvalidTraceError, match="trough_to_peak"):
        SyntheticWorkload(trough_to_peak=0)


def test_profiles_name_their_source_and_derive_costs():
    for name in ("wan2.1-1.3b-480p", "wan2.1-14b-720p", "hunyuanvideo-720p", "cogvideox-5b", "ltx-video"):
        profile = get_profile(name)
        assert profile.source and profile.gpu == "H100"
        assert profile.seconds_full == pytest.approx(profile.steps * profile.seconds_per_step)
    assert get_profile("wan2.1-14b-720p").seconds_full == pytest.approx(1837.9)
    assert get_profile("wan2.1-1.3b-480p").latent_bytes == 16 * 21 * 60 * 104 * 4
    assert len(PROFILES) == 5
    with pytest.raises(ConfigError, match="unknown model profile"):
        get_profile("sora")


def test_near_duplicate_share_counts_unique_prompts_with_a_close_neighbour(embedder):
    from flexcache.benchmarks.serve.workload import near_duplicate_share

    prompts = ["a red fox running through fresh snow", "a red fox runs through fresh snow",
               "a red fox running through fresh snow", "stock market numbers scrolling on a screen"]
    assert near_duplicate_share(prompts, embedder, threshold=0.9) == pytest.approx(2 / 3)
    assert near_duplicate_share(["only one"], embedder) == 0.0
