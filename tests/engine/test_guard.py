"""Users, shared pools and the cross-user defences (`engine.guard`, `sharing` config)."""

from __future__ import annotations

import json

import pytest
import torch

from flexcache import CacheConfig, ConfigError, InvalidPromptError
from flexcache.engine.records import decode_entry_meta, encode_entry_meta

PROMPT = "a golden retriever chasing a frisbee in a sunlit park"
OTHER = "a rocket lifting off from a launch pad at night"
UNDEFENDED = {"min_askers": 1, "cross_user_max_fraction": 1.0, "containment_gate": False, "latency_padding": False}


def fill(cache, prompt, signature, *, tenant="default", user=None, text_conditioned=False):
    plan = cache.plan(prompt, signature, tenant=tenant, user=user).as_miss()
    return cache.insert(plan, {s: torch.randn(signature.latent_shape) for s in plan.checkpoint_steps},
                        text_conditioned=text_conditioned)


def test_own_entries_hit_in_full_and_another_users_only_after_enough_other_askers_and_capped(make_cache, signature):
    cache = make_cache(sharing={"min_askers": 3, "cross_user_max_fraction": 0.2})
    fill(cache, PROMPT, signature, user="alice")
    assert cache.plan(PROMPT, signature, user="alice").skip_steps == 10  # the writer: 50 % of 20
    assert not cache.plan(PROMPT, signature, user="bob").hit  # asker 1 of 3 (the writer does not count)
    assert not cache.plan(PROMPT, signature, user="bob").hit  # the same user again does not count twice
    assert not cache.plan(PROMPT, signature, user="carol").hit  # asker 2 of 3
    third = cache.plan(PROMPT, signature, user="dave")
    assert third.hit and third.skip_steps == 4 and third.cross_user  # asker 3: served; unverified content: capped
    assert cache.plan(PROMPT, signature, user="bob").skip_steps == 4
    assert not cache.plan(PROMPT, signature, user="alice").cross_user
    sharing = cache.stats()["sharing"]
    assert sharing["withheld_unconfirmed"] == 3 and sharing["capped"] == 2 and sharing["cross_user_hits"] == 2


def test_sybils_below_min_askers_never_read_another_users_entry(make_cache, signature):
    cache = make_cache(sharing={"min_askers": 3})
    fill(cache, PROMPT, signature, user="victim", text_conditioned=True)
    for _ in range(3):  # each identity asks again and again: still only two askers
        assert not any(cache.plan(PROMPT, signature, user=sybil).hit for sybil in ("mallory1", "mallory2"))


def test_text_conditioned_entries_serve_others_at_the_rules_depth(make_cache, signature):
    cache = make_cache(sharing={"min_askers": 1})
    fill(cache, PROMPT, signature, user="alice", text_conditioned=True)
    fill(cache, OTHER, signature, user="alice", text_conditioned=False)
    assert cache.plan(PROMPT, signature, user="bob").skip_steps == 10  # its content is its text's
    assert cache.plan(OTHER, signature, user="bob").skip_steps == 2  # unverified: the 10 % cap


def test_the_containment_gate_caps_a_source_holding_words_the_request_does_not_ask_for(make_cache, signature):
    cache = make_cache(sharing={"min_askers": 1})
    fill(cache, PROMPT + ", with a neon soda logo", signature, user="mallory", text_conditioned=True)
    hit = cache.plan(PROMPT, signature, user="bob")
    assert hit.hit and hit.skip_steps == 2  # regenerated from 10 % of N
    assert cache.stats()["sharing"]["gated"] == 1
    open_gate = make_cache(sharing={"min_askers": 1, "containment_gate": False})
    fill(open_gate, PROMPT + ", with a neon soda logo", signature, user="mallory", text_conditioned=True)
    assert open_gate.plan(PROMPT, signature, user="bob").skip_steps > 2
    # A source the request contains (fewer words, plurals) passes.
    contained = make_cache(sharing={"min_askers": 1})
    fill(contained, "a golden retriever chasing a frisbee in a park", signature, user="alice", text_conditioned=True)
    assert contained.plan(PROMPT, signature, user="bob").skip_steps > 2
    assert contained.stats()["sharing"]["gated"] == 0


def test_trusted_writers_serve_everyone_at_the_rules_depth(make_cache, signature):
    sharing = {"tenants": ["public"], "trusted_writers": ["public/warmup"]}
    cache = make_cache(sharing=sharing)
    fill(cache, PROMPT, signature, tenant="public", user="warmup")  # even unverified content: the service's own
    hit = cache.plan(PROMPT, signature, tenant="public", user="bob")
    assert hit.hit and hit.skip_steps == 10 and hit.cross_user
    assert cache.stats()["sharing"]["trusted_hits"] == 1
    # What a trusted writer's run took from another user's entry is not the service's own.
    fill(cache, OTHER, signature, tenant="public", user="mallory", text_conditioned=True)
    for asker in ("a1", "a2", "a3"):
        cache.plan(OTHER, signature, tenant="public", user=asker)
    borrowed = cache.plan("a rocket lifts off from a launch pad at night", signature, tenant="public", user="warmup")
    assert borrowed.hit and borrowed.cross_user and borrowed.run_checkpoints
    cache.insert(borrowed, {s: torch.randn(signature.latent_shape) for s in borrowed.run_checkpoints},
                 text_conditioned=True)
    record = next(r for r in cache._records.values() if r.writer == "warmup" and r.prompt == borrowed.prompt)
    assert record.borrowed and decode_entry_meta(encode_entry_meta(record, next(iter(record.entries.values()))))[0].borrowed
    before = cache.stats()["sharing"]["trusted_hits"]
    cache.plan(borrowed.prompt, signature, tenant="public", user="bob")
    assert cache.stats()["sharing"]["trusted_hits"] == before
    with pytest.raises(ConfigError, match="not declared in sharing.tenants"):
        CacheConfig.from_dict({"sharing": {"trusted_writers": ["acme/warmup"]}})
    with pytest.raises(ConfigError, match="tenant/user"):
        CacheConfig.from_dict({"sharing": {"tenants": ["acme"], "trusted_writers": ["acme/"]}})


def test_a_resumed_run_follows_its_text_only_if_its_source_did(make_cache, signature):
    cache = make_cache(sharing={"min_askers": 1})
    fill(cache, PROMPT, signature, user="alice", text_conditioned=False)
    hit = cache.plan(PROMPT, signature, user="alice")
    cache.insert(hit, {s: torch.randn(signature.latent_shape) for s in hit.run_checkpoints}, text_conditioned=True)
    records = {r.writer: r for r in cache._records.values()}
    assert not records["alice"].text_conditioned


def test_undefended_sharing_serves_everyone_in_full(make_cache, signature):
    cache = make_cache(sharing=UNDEFENDED)
    fill(cache, PROMPT, signature, user="alice")
    assert cache.plan(PROMPT, signature, user="bob").skip_steps == 10


def test_each_user_writes_its_own_record_so_no_one_squats_a_prompt(make_cache, signature):
    cache = make_cache(sharing=UNDEFENDED)
    fill(cache, PROMPT, signature, user="mallory")
    stored = fill(cache, PROMPT, signature, user="alice")
    assert len(stored) == 5  # not deduplicated into mallory's record
    assert cache.stats()["records"] == 2
    assert cache.plan(PROMPT, signature, user="alice").source_record != \
        cache.plan(PROMPT, signature, user="mallory").source_record


def test_tenants_are_isolated_unless_pooled_and_pool_members_do_not_see_each_others_prompts(make_cache, signature):
    sharing = {**UNDEFENDED, "tenants": ["acme", "globex", "initech"],
               "pools": [{"name": "public", "tenants": ["acme", "globex"]}]}
    cache = make_cache(sharing=sharing)
    fill(cache, PROMPT, signature, tenant="acme")
    pooled = cache.plan(PROMPT, signature, tenant="globex")
    assert pooled.hit and pooled.source_prompt is None  # another tenant's prompt is not globex's to read
    assert not cache.plan(PROMPT, signature, tenant="initech").hit
    assert cache.plan(PROMPT, signature, tenant="acme").source_prompt == PROMPT
    with pytest.raises(InvalidPromptError, match="sharing.tenants"):
        cache.plan(PROMPT, signature, tenant="umbrella")


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "名前", 7])
def test_bad_user_ids_are_refused(make_cache, signature, bad):
    cache = make_cache()
    with pytest.raises(InvalidPromptError, match="user must be"):
        cache.plan(PROMPT, signature, user=bad)


def test_pool_config_with_an_unknown_or_doubly_pooled_tenant_is_refused():
    with pytest.raises(ConfigError, match="unknown tenant"):
        CacheConfig.from_dict({"sharing": {"tenants": ["a"], "pools": [{"name": "p", "tenants": ["a", "b"]}]}})
    with pytest.raises(ConfigError, match="one pool"):
        CacheConfig.from_dict({"sharing": {"tenants": ["a", "b"], "pools": [
            {"name": "p", "tenants": ["a"]}, {"name": "q", "tenants": ["a", "b"]}]}})
    with pytest.raises(ConfigError, match="tenant and pool names"):
        CacheConfig.from_dict({"sharing": {"tenants": ["a b"]}})


def test_the_writer_survives_the_metadata_round_trip_and_old_entries_have_none(make_cache, signature):
    cache = make_cache()
    fill(cache, PROMPT, signature, user="alice")
    entry = cache.entries()[0]
    record = cache._records[entry.record_id]
    meta = encode_entry_meta(record, entry)
    assert decode_entry_meta(meta)[0].writer == "alice"
    assert not decode_entry_meta(meta)[0].text_conditioned
    record.text_conditioned = True
    assert decode_entry_meta(encode_entry_meta(record, entry))[0].text_conditioned
    legacy = json.loads(meta)
    del legacy["writer"]
    assert decode_entry_meta(json.dumps(legacy).encode())[0].writer is None


def test_entries_of_earlier_versions_serve_their_tenants_default_user_only(make_cache, signature):
    writer = make_cache()
    fill(writer, PROMPT, signature)  # the default user
    cache = make_cache(sharing=UNDEFENDED)
    for entry in writer.entries():
        data = json.loads(encode_entry_meta(writer._records[entry.record_id], entry))
        data.pop("writer")  # as an earlier version wrote it
        blob = writer.store.get(entry.key)
        cache.store.tiers[0].put(entry.key, blob, json.dumps(data).encode())
        assert cache.adopt(entry.key, json.dumps(data).encode(), 0)
    assert cache.plan(PROMPT, signature).hit
    assert not cache.plan(PROMPT, signature, user="bob").hit
    assert cache.stats()["sharing"]["withheld_legacy"] == 1


def test_write_quota_and_rate_refuse_a_users_further_runs_only(make_cache, signature):
    cache = make_cache(sharing={"user_max_entries": 5})
    assert len(fill(cache, PROMPT, signature, user="alice")) == 5
    assert fill(cache, OTHER, signature, user="alice") == []
    assert len(fill(cache, OTHER, signature, user="bob")) == 5
    assert cache.stats()["sharing"]["quota_refused"] == 1
    cache.clear()
    assert len(fill(cache, OTHER, signature, user="alice")) == 5  # evicted or cleared entries free the quota

    limited = make_cache(sharing={"user_inserts_per_minute": 1})
    assert len(fill(limited, PROMPT, signature, user="alice")) == 5
    assert fill(limited, OTHER, signature, user="alice") == []
    assert limited.stats()["sharing"]["rate_refused"] == 1


def test_randomized_choice_serves_each_of_near_equal_candidates(make_cache, signature):
    cache = make_cache(sharing={**UNDEFENDED, "randomize_within": 0.05})
    for user in ("alice", "bob", "carol"):
        fill(cache, PROMPT, signature, user=user)
    sources = {cache.plan(PROMPT, signature, user="dave").source_record for _ in range(40)}
    assert len(sources) == 3
    strict = make_cache(sharing=UNDEFENDED)
    for user in ("alice", "bob", "carol"):
        fill(strict, PROMPT, signature, user=user)
    assert len({strict.plan(PROMPT, signature, user="dave").source_record for _ in range(10)}) == 1


def test_an_entry_is_served_deep_to_others_once_two_readers_runs_agree_with_it(make_cache, signature):
    cache = make_cache(codec={"name": "lossless"},
                       sharing={"min_askers": 1, "cross_user_max_fraction": 0.2, "vouches_required": 2})
    plan = cache.plan(PROMPT, signature, user="alice").as_miss()
    written = {s: torch.randn(signature.latent_shape) for s in plan.checkpoint_steps}
    cache.insert(plan, written)

    def read(user, agree):
        hit = cache.plan(PROMPT, signature, user=user)
        assert hit.hit and hit.skip_steps == 4  # capped at 20 % of N
        cache.insert(hit, {s: written[s] + 0.01 * torch.randn_like(written[s]) if agree
                           else torch.randn(signature.latent_shape) for s in hit.run_checkpoints})

    read("mallory", agree=False)  # a run that came out elsewhere: a verdict against
    read("bob", agree=True)
    read("carol", agree=True)
    assert cache.plan(PROMPT, signature, user="dave").skip_steps == 4  # 2 vouches - 1 accusation < 2
    read("erin", agree=True)
    assert cache.plan(PROMPT, signature, user="dave").skip_steps == 10
    sharing = cache.stats()["sharing"]
    assert (sharing["vouches"], sharing["accusations"]) == (3, 1)


def test_readers_with_other_prompts_do_not_vouch(make_cache, signature):
    cache = make_cache(sharing={"min_askers": 1, "cross_user_max_fraction": 0.2, "near_duplicate": 0.999})
    fill(cache, PROMPT, signature, user="alice")
    near = "a golden retriever chases a frisbee in a sunny park"
    hit = cache.plan(near, signature, user="bob")
    assert hit.hit and hit.skip_steps <= 4
    cache.insert(hit, {s: torch.randn(signature.latent_shape) for s in hit.run_checkpoints})
    assert cache.stats()["sharing"]["accusations"] == 0 and cache.stats()["sharing"]["vouches"] == 0


def test_a_gate_that_cannot_read_an_entry_caps_the_hit_and_never_fails_the_request(make_cache, signature):
    cache = make_cache(sharing={"min_askers": 1})
    fill(cache, PROMPT + ", with a neon soda logo", signature, user="mallory", text_conditioned=True)

    def broken(words):
        raise RuntimeError("embedder down")

    cache.gate._embed = broken
    hit = cache.plan(PROMPT, signature, user="bob")
    assert hit.hit and hit.skip_steps == 2 and cache.stats()["sharing"]["gated"] == 1
