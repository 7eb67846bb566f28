"""The open-vocabulary serving workload: growth, languages, trends, sessions, the near-duplicate knob, the CLI."""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter, defaultdict

import pytest

from flexcache.benchmarks.serve.open_vocab import (
    SHARE_CALIBRATION,
    OpenVocabularyWorkload,
    generate_open_vocabulary_trace,
)
from flexcache.benchmarks.serve.open_vocab_languages import LANGUAGES
from flexcache.errors import InvalidTraceError


@pytest.fixture(scope="module")
def trace():
    """A 20,000-request trace at the default parameters (about a second to generate)."""
    return generate_open_vocabulary_trace(OpenVocabularyWorkload(requests=20_000, seed=0))


def test_the_trace_is_deterministic_per_seed_and_ordered():
    spec = OpenVocabularyWorkload(requests=1500, seed=3)
    first = generate_open_vocabulary_trace(spec)
    assert first == generate_open_vocabulary_trace(spec)
    assert first != generate_open_vocabulary_trace(OpenVocabularyWorkload(requests=1500, seed=4))
    assert len(first) == 1500 and all(a.t <= b.t for a, b in zip(first, first[1:]))
    assert first[0].t >= 0 and {r.tenant for r in first} == {"default"}
    assert all(r.prompt.strip() and r.user.startswith("u") for r in first)


def test_the_vocabulary_keeps_growing(trace):
    """No finite head: ten times the requests bring about ten times the unique prompts."""
    small = generate_open_vocabulary_trace(OpenVocabularyWorkload(requests=2000, seed=0))
    ratio_small = len({r.prompt for r in small}) / len(small)
    ratio_large = len({r.prompt for r in trace}) / len(trace)
    assert ratio_small > 0.7 and ratio_large > 0.7 and ratio_large > 0.9 * ratio_small
    # Subject-action pairs keep appearing too, not only new modifiers on old scenes.
    head = Counter(r.prompt for r in trace).most_common(1)[0][1]
    assert head < 0.01 * len(trace)


def _script(prompt: str) -> str:
    if re.search(r"[\u3040-\u30ff]", prompt):
        return "ja"
    if re.search(r"[\uac00-\ud7af]", prompt):
        return "ko"
    return "zh" if re.search(r"[\u4e00-\u9fff]", prompt) else "latin"


def test_every_language_is_present_at_a_small_share(trace):
    found = {code: sum(1 for r in trace if any(subject in r.prompt for subject in vocabulary.subjects))
             for code, vocabulary in LANGUAGES.items()}
    assert all(found.values()), found
    scripts = Counter(_script(r.prompt) for r in trace)
    assert 0.02 < (scripts["zh"] + scripts["ja"] + scripts["ko"]) / len(trace) < 0.15
    assert 0.02 < sum(found.values()) / len(trace) < 0.25  # mostly English, as public logs are


def test_trending_prompts_are_copied_by_many_users_within_a_window(trace):
    first_seen: dict[str, dict[str, int]] = defaultdict(dict)  # prompt -> user -> index of the user's first copy
    for index, request in enumerate(trace):
        first_seen[request.prompt].setdefault(request.user, index)
    bursts = []
    for prompt, users in first_seen.items():
        starts = sorted(users.values())
        # 10 distinct users within 2,000 requests of traffic (a few hours at the default rate).
        if any(later - early < 2000 for early, later in zip(starts, starts[9:])):
            bursts.append(prompt)
    assert len(bursts) >= 3
    assert any(len(prompt.split()) >= 8 for prompt in bursts)  # long prompts, not "dog" typed by chance


def test_users_work_in_sessions_of_edits_and_resubmissions(trace):
    by_user = defaultdict(list)
    for request in trace:
        by_user[request.user].append(request.prompt)
    pairs = [(a, b) for prompts in by_user.values() for a, b in zip(prompts, prompts[1:])]
    resubmitted = sum(a == b for a, b in pairs)

    def words(text):
        return set(text.lower().replace(",", " ").replace(".", " ").split())

    edited = sum(1 for a, b in pairs if a != b and len(words(a) & words(b)) >= 0.6 * len(words(a) | words(b)))
    assert resubmitted > 0.03 * len(trace) and edited > 0.15 * len(trace)
    activity = sorted(Counter(r.user for r in trace).values(), reverse=True)
    assert len(activity) > 200 and activity[0] > 10 * activity[len(activity) // 2]  # a long tail of users


def test_about_a_tenth_of_requests_pin_a_seed_and_arrivals_follow_the_rate(trace):
    assert 0.05 < sum(r.seed is not None for r in trace) / len(trace) < 0.15
    hours = trace[-1].t / 3600
    assert 0.85 * 600 < len(trace) / hours < 1.15 * 600
    per_hour = Counter(int(r.t // 3600) % 24 for r in trace if r.t < 86_400)
    assert per_hour[18] < per_hour[6]  # the daily trough (sin peaks at hour 6)


class TrigramEmbedder:
    """A cheap stand-in for the cache's embedder: hashed character trigrams, unit length.

    Small edits keep most of a prompt's trigrams and new ideas share few, which is all the
    knob's direction needs; the knob's values themselves are calibrated with the real
    embedder (`bench/e2e/open_vocab_share.py`).
    """

    dim = 4096

    def embed(self, texts):
        import torch

        vectors = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            padded = f"  {text.lower()} "
            for i in range(len(padded) - 2):
                vectors[row, zlib.crc32(padded[i:i + 3].encode()) % self.dim] += 1
        return torch.nn.functional.normalize(vectors, dim=1)


def test_the_knob_moves_the_measured_near_duplicate_share():
    from flexcache.benchmarks.serve.workload import near_duplicate_share

    low, high = SHARE_CALIBRATION[0][0], SHARE_CALIBRATION[-1][0]
    shares = []
    for knob in (low, 0.38, (low + high) / 2):
        trace = generate_open_vocabulary_trace(OpenVocabularyWorkload(requests=1500, seed=1,
                                                                      near_duplicate_share=knob))
        shares.append(near_duplicate_share([r.prompt for r in trace], TrigramEmbedder()))
    assert shares[0] + 0.1 < shares[1] < shares[2] - 0.1, shares


@pytest.mark.parametrize(("field", "value"), [
    ("requests", 0), ("users", 0), ("near_duplicate_share", 0.999), ("near_duplicate_share", 0.0),
    ("repeat_share", 1.5), ("trending_share", -0.1), ("trough_to_peak", 0), ("requests_per_hour", 0),
    ("trend_half_life_requests", 0), ("zipf_exponent", float("nan")), ("tenant", "a b"),
    ("language_shares", (("xx", 0.1),)), ("language_shares", (("zh", 0.7), ("ja", 0.7))), ("seed", 1.5),
])
def test_bad_parameters_are_refused_naming_the_field(field, value):
    with pytest.raises(InvalidTraceError, match=f"open-vocabulary workload: {field} must be"):
        OpenVocabularyWorkload(**{field: value})


def test_bad_parameter_combinations_are_refused():
    with pytest.raises(InvalidTraceError, match="session_mean"):
        OpenVocabularyWorkload(session_mean=3, session_median=5)
    with pytest.raises(InvalidTraceError, match="rare_idea_share \\+ trending_share"):
        OpenVocabularyWorkload(rare_idea_share=0.6, trending_share=0.6)
    with pytest.raises(InvalidTraceError, match="edit_closeness"):
        generate_open_vocabulary_trace(OpenVocabularyWorkload(requests=10), edit_closeness=2)
    assert json.loads(json.dumps(OpenVocabularyWorkload().to_dict()))["language_shares"]["zh"] == 0.03


@pytest.mark.parametrize(("flags", "message"), [
    (["--workload", "topics", "--near-duplicate-share", "0.4"], "--near-duplicate-share applies to --workload"),
    (["--near-duplicate-share", "0.4", "--trace", "t.jsonl"], "--near-duplicate-share shape a synthetic trace"),
    (["--workload", "open-vocabulary", "--trace", "t.jsonl"], "--workload shape a synthetic trace"),
    (["--workload", "topics", "--live"], "apply to the simulated mode"),
    (["--edit-share", "0.5"], "--edit-share applies to --workload topics only"),
    (["--workload", "open-vocabulary", "--edit-share", "0.5"], "--edit-share applies to --workload topics"),
    (["--near-duplicate-share", "0.999", "--profile", "ltx-video"], "near_duplicate_share must be within"),
])
def test_workload_flags_that_do_not_apply_are_refused(flags, message, capsys):
    from flexcache.cli import main

    assert main(["bench", "serve", *flags]) == 2
    assert message in capsys.readouterr().err


def test_bench_serve_names_the_workload_and_its_parameters(tmp_path):
    from flexcache.cli import main

    out = tmp_path / "open.json"
    assert main(["bench", "serve", "--requests", "30", "--profile", "ltx-video", "--systems", "nocache", "--workers",
                 "1", "--sweep-gb", "", "--no-progress", "--json", str(out), "--near-duplicate-share", "0.5",
                 "--session-median", "4"]) == 0
    workload = json.loads(out.read_text())["workload"]
    assert workload["name"] == "open-vocabulary" and workload["requests"] == 30
    assert workload["parameters"]["near_duplicate_share"] == 0.5 and workload["parameters"]["session_median"] == 4
    assert 0 <= workload["near_duplicate_share"] <= 1


def test_the_topics_workload_stays_available_by_name(monkeypatch):
    from flexcache.benchmarks.serve import run
    from flexcache.benchmarks.serve.command import simulated_result
    from flexcache.benchmarks.serve.workload import SyntheticWorkload, generate_trace
    from flexcache.cli import build_parser

    replayed = []

    def fake_bench(trace, profile, **settings):  # the workload block, without simulating
        replayed.append(trace)
        return {"workload": {"requests": len(trace)}}

    monkeypatch.setattr(run, "run_serve_bench", fake_bench)
    args = build_parser().parse_args(["bench", "serve", "--workload", "topics", "--edit-share", "0.5", "--quick"])
    workload = simulated_result(args, None, None, sweep_gb=())["workload"]
    assert workload["name"] == "topics" and workload["parameters"]["edit_share"] == 0.5
    assert workload["parameters"]["users"] == 200 and workload["requests"] == 120
    rate = workload["parameters"]["requests_per_hour"]
    assert replayed[0] == generate_trace(SyntheticWorkload(requests=120, users=200, edit_share=0.5,
                                                           requests_per_hour=rate))
    args = build_parser().parse_args(["bench", "serve", "--quick"])  # the preset's default workload
    assert simulated_result(args, None, None, sweep_gb=())["workload"]["name"] == "open-vocabulary"
