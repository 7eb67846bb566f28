"""`flexcache warm`: a trusted writer's warm-up fills a persistent tier that serves other users at depth."""

from __future__ import annotations

import contextlib
import io
import re
import shutil

import pytest
import torch
import yaml

from flexcache import CacheConfig, FlexCache
from flexcache.cli import main
from flexcache.core import ConfigError
from flexcache.integrations.diffusers import enable_flexcache, last_call_report
from flexcache.serving import warm as warm_module
from flexcache.serving.warm import (
    PromptsFileError,
    call_signature,
    check_warm_config,
    read_prompts,
    warm,
)

STEPS = 8
POPULAR = ("a red ball bouncing on green grass", "a blue cube sliding across yellow sand")


def config_data(disk, *, trusted=("default/warmup",), **sharing) -> dict:
    return {"embedder": {"model": "all-MiniLM-L6-v2", "device": "cpu"}, "index": {"device": "cpu"},
            "store": {"tiers": [{"kind": "disk", "path": str(disk), "capacity_bytes": "1GiB"}]},
            "sharing": {"tenants": ["default"], "trusted_writers": list(trusted), **sharing}}


def write_config(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def served():
    """The toy world as `flexcache serve` builds it: (pipe, prompt -> call arguments)."""
    from flexcache.serving.worker import WorkerConfig, _build_pipeline

    pipe, kwargs_for, _ = _build_pipeline(WorkerConfig({}, model="toyworld", steps=STEPS))
    return pipe, lambda prompt: kwargs_for(prompt, STEPS)


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    """A disk tier `flexcache warm` filled with POPULAR (the command's own pipeline loading)."""
    root = tmp_path_factory.mktemp("warmed")
    prompts = root / "popular.txt"
    prompts.write_text(f"# trending today\n{POPULAR[0]}\n\n{POPULAR[1]}\n{POPULAR[0]}\n", encoding="utf-8")
    config = write_config(root / "config.yaml", config_data(root / "disk"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["warm", str(prompts), "--config", config, "--steps", str(STEPS), "--no-progress"])
    return code, out.getvalue(), root / "disk"


@pytest.fixture
def disk_copy(warmed, tmp_path):
    """A copy of the warmed tier's directory for one test (reads add entries; tests stay independent)."""
    _, _, disk = warmed
    target = tmp_path / "disk"
    shutil.copytree(disk, target, ignore=shutil.ignore_patterns("lock"))
    return target


def ask(pipe, kwargs_for, prompt, user, seed=7):
    with torch.inference_mode():
        pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), flexcache_user=user,
             flexcache_any_seed=True, **kwargs_for(prompt))  # as a serve job without a client seed
    return last_call_report(pipe)


# -- the warm-up serves other users --------------------------------------------------


def test_warm_command_runs_each_prompt_once(warmed):
    code, out, _ = warmed
    assert code == 0
    summary = re.search(r"warmed 3 prompts: 2 run, 1 skipped \(already cached\), 0 failed; (\d+) entries stored, "
                        r"(\d+\.\d+) MiB", out)
    assert summary is not None, out
    assert int(summary[1]) >= 2 and float(summary[2]) > 0  # a checkpoint or more of each prompt run


def test_warmed_entry_serves_another_user_at_full_depth(served, disk_copy):
    pipe, kwargs_for = served
    with FlexCache(CacheConfig.from_dict(config_data(disk_copy))) as cache:  # default defences, writer trusted
        enable_flexcache(pipe, cache, model_id="toyworld")
        report = ask(pipe, kwargs_for, POPULAR[0], "alice")
        assert report.hit and report.source_prompt == POPULAR[0]
        assert cache.stats()["sharing"]["trusted_hits"] == 1
        # Full depth: as deep as the writer's own request would resume.
        signature = call_signature(pipe, "toyworld", {"prompt": POPULAR[0], **kwargs_for(POPULAR[0])})
        own = cache.plan(POPULAR[0], signature, user="warmup", any_seed=True)
        assert not own.cross_user and report.skip_steps == own.skip_steps > 0


def test_untrusted_writers_entry_is_not_served_to_another_user(served, disk_copy):
    # The same entries, read by a cache whose config does not trust their writer: with the default
    # corroboration one user alone gets none of them (README, "Threat model").
    pipe, kwargs_for = served
    with FlexCache(CacheConfig.from_dict(config_data(disk_copy, trusted=()))) as cache:
        enable_flexcache(pipe, cache, model_id="toyworld")
        report = ask(pipe, kwargs_for, POPULAR[0], "bob")
        sharing = cache.stats()["sharing"]
    assert not report.hit
    assert sharing["withheld_unconfirmed"] >= 1 and sharing["trusted_hits"] == 0


def test_rerun_skips_what_the_writer_has_and_a_failing_prompt_stops_nothing(served, disk_copy, tmp_path, monkeypatch,
                                                                           capsys):
    pipe, kwargs_for = served
    broken = "a prompt whose run fails"

    def pipeline(name, *, steps, guidance):
        assert (name, steps) == ("toyworld", STEPS)

        def call_kwargs(prompt):
            if prompt == broken:
                raise RuntimeError("the pipeline ran out of memory")
            return kwargs_for(prompt)

        return pipe, call_kwargs, True

    monkeypatch.setattr(warm_module, "load_pipeline", pipeline)
    prompts = tmp_path / "prompts.txt"
    new = "a green pyramid spinning above water"
    prompts.write_text("\n".join([*POPULAR, broken, new]) + "\n", encoding="utf-8")
    config = write_config(tmp_path / "config.yaml", config_data(disk_copy))
    capsys.readouterr()
    assert main(["warm", str(prompts), "--config", config, "--steps", str(STEPS), "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert "warmed 4 prompts: 1 run, 2 skipped (already cached), 1 failed" in out
    assert f"failed: {broken!r}: RuntimeError: the pipeline ran out of memory" in err
    with FlexCache(CacheConfig.from_dict(config_data(disk_copy))) as cache:  # the prompt after it was stored
        assert {cache.plan(new, call_signature(pipe, "toyworld", {"prompt": new, **kwargs_for(new)}),
                           user="warmup", any_seed=True).source_prompt} == {new}


def test_warm_never_resumes_from_another_writers_entry(served, tmp_path):
    # Another user's entry of the same prompt and seed, open to everyone (no corroboration): resuming
    # from it would store its content as the trusted writer's. The warm-up runs from a fresh seed.
    pipe, kwargs_for = served
    with FlexCache(CacheConfig.from_dict(config_data(tmp_path / "disk", min_askers=1))) as cache:
        enable_flexcache(pipe, cache, model_id="toyworld")
        with torch.inference_mode():
            pipe(prompt=POPULAR[0], generator=torch.Generator().manual_seed(0), flexcache_user="mallory",
                 flexcache_text_conditioned=True, **kwargs_for(POPULAR[0]))
        assert last_call_report(pipe).inserted
        report = warm(pipe, cache, [POPULAR[0]], model_id="toyworld", call_kwargs=kwargs_for, seed=0,
                      text_conditioned=True)
        assert (report.ran, report.reseeded, report.failed) == (1, 1, [])
        assert not last_call_report(pipe).hit and report.entries_stored > 0


@pytest.mark.redis
def test_warm_into_redis_serves_another_process(served, redis_url, redis_prefix):
    # The tier a `flexcache serve` fleet shares: a later cache (another worker) finds the entries there.
    pipe, kwargs_for = served
    data = config_data("unused")
    data["store"] = {"tiers": [{"kind": "redis", "url": redis_url, "prefix": redis_prefix,
                                "capacity_bytes": "256MiB"}]}
    with FlexCache(CacheConfig.from_dict(data)) as cache:
        report = warm(pipe, cache, [POPULAR[1]], model_id="toyworld", call_kwargs=kwargs_for, text_conditioned=True)
    assert (report.ran, report.failed) == (1, []) and report.entries_stored > 0
    with FlexCache(CacheConfig.from_dict(data)) as cache:
        enable_flexcache(pipe, cache, model_id="toyworld")
        served_report = ask(pipe, kwargs_for, POPULAR[1], "carol")
        assert served_report.hit and served_report.source_prompt == POPULAR[1] and served_report.skip_steps > 0
        assert cache.stats()["sharing"]["trusted_hits"] == 1


# -- refusals ------------------------------------------------------------------------------


def test_writer_must_be_trusted_and_store_persistent(tmp_path):
    check_warm_config(CacheConfig.from_dict(config_data(tmp_path)))
    check_warm_config(CacheConfig.from_dict(config_data(tmp_path, trusted=("ops",), tenants=["default", "ops"])),
                       "ops", "ops")  # bare tenant
    untrusted = CacheConfig.from_dict(config_data(tmp_path, trusted=()))
    with pytest.raises(ConfigError, match=r"add 'default/warmup' to sharing.trusted_writers"):
        check_warm_config(untrusted)
    other_user = CacheConfig.from_dict(config_data(tmp_path))
    with pytest.raises(ConfigError, match=r"add 'default/intern' to sharing.trusted_writers"):
        check_warm_config(other_user, "default", "intern")
    memory = config_data(tmp_path)
    memory["store"] = {"tiers": [{"kind": "memory", "capacity_bytes": "1GiB"}]}
    with pytest.raises(ConfigError, match="needs a persistent tier.*only memory.*disk tier.*redis tier"):
        check_warm_config(CacheConfig.from_dict(memory))
    shorthand = config_data(tmp_path)
    del shorthand["store"]
    with pytest.raises(ConfigError, match="needs a persistent tier"):
        check_warm_config(CacheConfig.from_dict(shorthand))


def test_warm_refuses_a_cache_without_persistent_tier(make_cache):
    cache = make_cache(sharing={"tenants": ["default"], "trusted_writers": ["default/warmup"]})
    with pytest.raises(ConfigError, match="persistent tier"):
        warm(object(), cache, ["a red ball"])


@pytest.mark.parametrize("trusted, tiers, message", [
    ((), None, "sharing.trusted_writers does not name"),
    (("default/warmup",), [{"kind": "memory", "capacity_bytes": "1GiB"}], "needs a persistent tier"),
])
def test_command_config_errors_exit_2(tmp_path, capsys, trusted, tiers, message):
    data = config_data(tmp_path / "disk", trusted=trusted)
    if tiers:
        data["store"] = {"tiers": tiers}
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red ball\n", encoding="utf-8")
    assert main(["warm", str(prompts), "--config", write_config(tmp_path / "c.yaml", data)]) == 2
    assert message in capsys.readouterr().err


def test_read_prompts_skips_blank_and_comment_lines(tmp_path):
    text = tmp_path / "p.txt"
    text.write_bytes("\ufeff# trending\n  a red ball  \n\n# more\nun chat qui dort \u00e0 Paris\n".encode("utf-8"))
    assert read_prompts(text) == ["a red ball", "un chat qui dort \u00e0 Paris"]
    rows = tmp_path / "p.jsonl"
    rows.write_text('{"prompt": "a red ball", "count": 9}\n\n{"prompt": "a blue cube"}\n', encoding="utf-8")
    assert read_prompts(rows) == ["a red ball", "a blue cube"]


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the prompts file"),
    (b"", "holds no prompt"),
    (b"# only a comment\n\n", "holds no prompt"),
    (b"a red ball\nun caf\xe9\n", r":2 is not UTF-8 \(byte 0xe9\); save the file as UTF-8"),
])
def test_bad_prompts_files(tmp_path, content, message):
    path = tmp_path / "prompts.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PromptsFileError, match=message):
        read_prompts(path)


@pytest.mark.parametrize("line, message", [("not json", "not JSON"), ('{"text": "a ball"}', "non-empty text"),
                                           ('["a ball"]', "non-empty text")])
def test_bad_jsonl_prompts(tmp_path, line, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(PromptsFileError, match=f"prompts.jsonl:1: .*{message}"):
        read_prompts(path)


def test_command_bad_input_exits_2(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", config_data(tmp_path / "disk"))
    assert main(["warm", str(tmp_path / "missing.txt"), "--config", config]) == 2
    assert "cannot read the prompts file" in capsys.readouterr().err
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    assert main(["warm", str(tmp_path / "latin1.txt"), "--config", config]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    (tmp_path / "ok.txt").write_text("a red ball\n", encoding="utf-8")
    assert main(["warm", str(tmp_path / "ok.txt"), "--config", config, "--steps", "1"]) == 2
    assert "--steps must be >= 2" in capsys.readouterr().err


def test_unloadable_diffusers_model_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import diffusers

    def from_pretrained(name, **kwargs):
        raise OSError(f"{name} is not a local folder and is not a valid model identifier")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", from_pretrained)
    config = write_config(tmp_path / "c.yaml", config_data(tmp_path / "disk"))
    (tmp_path / "ok.txt").write_text("a red ball\n", encoding="utf-8")
    assert main(["warm", str(tmp_path / "ok.txt"), "--config", config, "--pipeline", "acme/no-such-model",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot load the diffusers pipeline 'acme/no-such-model': OSError" in err
    assert "huggingface-cli download" in err and "--pipeline toyworld" in err


def test_config_given_before_the_command_counts(tmp_path, capsys):
    # `flexcache --config C warm P` and `flexcache warm P --config C` read the same file.
    data = config_data(tmp_path / "disk", trusted=())
    config = write_config(tmp_path / "c.yaml", data)
    (tmp_path / "ok.txt").write_text("a red ball\n", encoding="utf-8")
    assert main(["--config", config, "warm", str(tmp_path / "ok.txt")]) == 2
    assert "trusted_writers does not name" in capsys.readouterr().err
