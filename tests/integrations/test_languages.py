"""Pipeline calls in any language: a tiny Wan pipeline with a real (tiny, random) umT5 text encoder.

The text encoder reads the prompt and the negative prompt as Wan's does
(`WanPipeline.encode_prompt`), so Chinese text and Wan's Chinese default
negative prompt go the whole way: binding, signature, plan, run, insert, hit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.engine.pooled_embedder import PooledTextEncoderEmbedder
from flexcache.integrations.tiny import TEXT_DIM, tiny_wan_pipeline

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "multilingual-dev.jsonl"
PROMPT = "一只熊猫在竹林里吃竹子，阳光透过树叶"
CALL = dict(height=32, width=32, num_frames=5, num_inference_steps=10, output_type="latent")


def wan_default_negative_prompt() -> str:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    (negative,) = [row["prompt"] for row in rows if row["group"] == "wan-negative"]
    return negative


@pytest.fixture
def pipe():
    """The tiny Wan pipeline with a 1-layer random umT5 encoder over the packaged MiniLM tokenizer's vocabulary."""
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    from flexcache.engine.embedder import SentenceTransformerEmbedder

    pipeline = tiny_wan_pipeline(seed=0)
    tokenizer = AutoTokenizer.from_pretrained(SentenceTransformerEmbedder.packaged_model_path())
    torch.manual_seed(0)
    encoder = UMT5EncoderModel(UMT5Config(vocab_size=tokenizer.vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=64,
                                          num_layers=1, num_heads=4)).eval()
    pipeline.register_modules(tokenizer=tokenizer, text_encoder=encoder)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def test_a_chinese_prompt_runs_is_inserted_and_its_repeat_hits(pipe, make_cache):
    enable_flexcache(pipe, make_cache(), model_id="tiny-wan")  # the default config: decoupled look-up, MiniLM
    first = pipe(prompt=PROMPT, guidance_scale=1.0, generator=torch.Generator().manual_seed(3), **CALL).frames
    report = last_call_report(pipe)
    assert not report.hit and report.inserted and report.bypass_reason is None and report.cache_error is None
    assert torch.isfinite(first).all()
    pipe(prompt=PROMPT, guidance_scale=1.0, generator=torch.Generator().manual_seed(3), **CALL)
    report = last_call_report(pipe)
    assert report.hit and report.source_prompt == PROMPT and not report.via_parts


def test_wans_chinese_default_negative_prompt_works(pipe, make_cache):
    negative = wan_default_negative_prompt()
    enable_flexcache(pipe, make_cache(), model_id="tiny-wan")
    kwargs = dict(guidance_scale=5.0, negative_prompt=negative, generator=torch.Generator().manual_seed(5), **CALL)
    out = pipe(prompt=PROMPT, **kwargs).frames  # classifier-free guidance: the encoder reads the negative prompt
    report = last_call_report(pipe)
    assert not report.hit and report.inserted and torch.isfinite(out).all()
    pipe(prompt=PROMPT, **{**kwargs, "generator": torch.Generator().manual_seed(5)})
    assert last_call_report(pipe).hit
    pipe(prompt=PROMPT, **{**kwargs, "negative_prompt": "", "generator": torch.Generator().manual_seed(5)})
    assert not last_call_report(pipe).hit  # the negative prompt is part of the signature
    pipe(prompt=negative, guidance_scale=1.0, generator=torch.Generator().manual_seed(5), **CALL)
    assert last_call_report(pipe).inserted  # as a prompt, too


def test_the_pooled_embedder_pools_what_the_pipeline_encodes(pipe):
    embedder = PooledTextEncoderEmbedder.from_pipeline(pipe, identity="pooled:tiny-umt5-random")
    with torch.inference_mode():
        states = pipe.encode_prompt(prompt=[PROMPT], do_classifier_free_guidance=False)[0]
    vector = embedder.embed([PROMPT])[0]
    assert abs(float(vector.norm()) - 1) < 1e-5 and embedder.dim == TEXT_DIM
    tokens = (states[0] != 0).any(dim=-1)
    assert 0 < int(tokens.sum()) < states.shape[1]  # zero-padded, as the pooling assumes
    expected = states[0][tokens].mean(dim=0)
    torch.testing.assert_close(vector, expected / expected.norm(), rtol=1e-5, atol=1e-6)
    offered = PooledTextEncoderEmbedder(lambda texts: pytest.fail("offer() must spare the encoder pass"),
                                        identity="pooled:tiny-umt5-random")
    offered.offer(PROMPT, states)
    torch.testing.assert_close(offered.embed([PROMPT])[0], vector, rtol=1e-5, atol=1e-6)


def test_a_cache_on_the_pooled_embedder_serves_a_chinese_repeat(pipe, make_cache):
    from flexcache import CacheConfig, FlexCache

    embedder = PooledTextEncoderEmbedder.from_pipeline(pipe, identity="pooled:tiny-umt5-random")
    cache = FlexCache(CacheConfig.from_dict({"index": {"device": "cpu"}, "planner": {"lookup": "full"}}),
                      embedder=embedder)
    enable_flexcache(pipe, cache, model_id="tiny-wan")
    for expect_hit in (False, True):
        pipe(prompt=PROMPT, guidance_scale=1.0, generator=torch.Generator().manual_seed(9), **CALL)
        assert last_call_report(pipe).hit is expect_hit
