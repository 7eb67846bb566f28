"""The settings the shipped tables were measured at are the toy world's own (`core.tables`)."""

from __future__ import annotations

import torch

from flexcache import CacheConfig, FlexCache
from flexcache.core.tables import measured_at_shipped_settings
from flexcache.integrations.diffusers import enable_flexcache, last_call_report
from flexcache.toyworld.model import MODEL_ID, WEIGHTS, PromptEncoder, pipeline_kwargs, toyworld_pipeline


def test_a_default_toy_world_call_is_planned_by_the_shipped_tables_and_another_shift_is_not():
    cache = FlexCache(CacheConfig.from_dict({"embedder": {"device": "cpu"}, "index": {"device": "cpu"}}))
    pipe = toyworld_pipeline(WEIGHTS)
    pipe.set_progress_bar_config(disable=True)
    enable_flexcache(pipe, cache, model_id=MODEL_ID)
    prompt = "a red circle moving left on a white plain background"
    kwargs = pipeline_kwargs(PromptEncoder()([prompt]), steps=20, guidance=3.0)
    pipe(prompt=prompt, generator=torch.Generator().manual_seed(1), **kwargs)
    assert last_call_report(pipe).rules == "toyworld"
    (record,) = cache._records.values()
    assert measured_at_shipped_settings(record.signature.to_dict())
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=3.0)
    pipe(prompt=prompt, generator=torch.Generator().manual_seed(1), **kwargs)
    assert last_call_report(pipe).rules == "uncalibrated"
    cache.close()
