"""The generation signature names the weights: adapters (real LoRAs through peft), in-place changes, identity."""

from __future__ import annotations

import warnings

import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.core.errors import UncacheableCallError
from flexcache.integrations.adapter_table import ADAPTERS
from flexcache.integrations.model_identity import (
    SAMPLES_PER_TENSOR,
    weights_fingerprint,
)
from flexcache.integrations.tiny import tiny_prompt_embeds, tiny_wan_pipeline

peft = pytest.importorskip("peft")

PROMPT = "a red fox running through fresh snow in a pine forest"
CALL = dict(height=32, width=32, num_frames=5, num_inference_steps=10, guidance_scale=1.0, output_type="latent")


def run(pipe, **overrides):
    return pipe(prompt=PROMPT, prompt_embeds=tiny_prompt_embeds(PROMPT), **{**CALL, **overrides}).frames


def signature(pipe, **overrides):
    return ADAPTERS["WanPipeline"].signature(pipe, {**CALL, **overrides}, "tiny-wan")


def assert_miss_inserted(pipe):
    report = last_call_report(pipe)
    assert not report.hit and report.bypass_reason is None
    assert report.inserted  # the miss filled the cache: a later hit is not vacuous


def assert_hit(pipe):
    report = last_call_report(pipe)
    assert report.hit, report


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory):
    """Two LoRAs for the tiny Wan transformer, saved as diffusers LoRA files (peft state dicts)."""
    from diffusers import WanPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder = tmp_path_factory.mktemp("loras")
    files = {}
    for name, seed in (("one", 1), ("two", 2)):
        donor = tiny_wan_pipeline(seed=0)
        torch.manual_seed(seed)
        # init_lora_weights=False: B is not zero, so the LoRA changes the output as a trained one does.
        donor.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"],
                                                 init_lora_weights=False))
        WanPipeline.save_lora_weights(str(folder), transformer_lora_layers=get_peft_model_state_dict(donor.transformer),
                                      weight_name=f"{name}.safetensors")
        files[name] = str(folder / f"{name}.safetensors")
    return files


@pytest.fixture
def pipe(make_cache):
    pipeline = tiny_wan_pipeline(seed=0)
    pipeline.set_progress_bar_config(disable=True)
    return enable_flexcache(pipeline, make_cache(codec={"name": "lossless"}), model_id="tiny-wan")


def test_a_loaded_lora_misses_the_base_entries_and_unloading_it_hits_them_again(pipe, lora_files):
    run(pipe)
    assert_miss_inserted(pipe)
    run(pipe)
    assert_hit(pipe)
    pipe.load_lora_weights(lora_files["one"], adapter_name="one")
    run(pipe)
    assert_miss_inserted(pipe)
    run(pipe)
    assert_hit(pipe)  # the LoRA's own entries serve it
    pipe.unload_lora_weights()
    run(pipe)
    assert_hit(pipe)
    assert signature(pipe).adapters == ()


def test_another_adapter_scale_misses(pipe, lora_files):
    pipe.load_lora_weights(lora_files["one"], adapter_name="one")
    run(pipe)
    assert_miss_inserted(pipe)
    pipe.set_adapters(["one"], [0.5])
    run(pipe)
    assert_miss_inserted(pipe)
    assert dict(signature(pipe).adapters)["one"].endswith("scale=0.5")
    pipe.set_adapters(["one"], [1.0])
    run(pipe)
    assert_hit(pipe)


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")  # peft, on a second adapter
def test_set_adapters_to_another_set_misses(pipe, lora_files):
    pipe.load_lora_weights(lora_files["one"], adapter_name="one")
    pipe.load_lora_weights(lora_files["two"], adapter_name="two")
    pipe.set_adapters(["one"])
    run(pipe)
    assert_miss_inserted(pipe)
    pipe.set_adapters(["two"])
    run(pipe)
    assert_miss_inserted(pipe)
    pipe.set_adapters(["one", "two"])
    run(pipe)
    assert_miss_inserted(pipe)
    pipe.set_adapters(["one"])
    run(pipe)
    assert_hit(pipe)


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
def test_an_idle_adapters_scale_does_not_split_entries(lora_files):
    """An adapter neither active nor fused changes nothing, so its scale is not in the signature."""
    def loaded():
        pipe = tiny_wan_pipeline(seed=0)
        pipe.load_lora_weights(lora_files["one"], adapter_name="one")
        pipe.load_lora_weights(lora_files["two"], adapter_name="two")
        return pipe

    rescaled, plain = loaded(), loaded()
    rescaled.set_adapters(["one"], [0.5])
    rescaled.set_adapters(["two"])
    plain.set_adapters(["two"])
    assert dict(signature(plain).adapters)["one"].endswith("scale=unused")
    assert signature(rescaled).key() == signature(plain).key()


def test_disabling_the_lora_misses_its_entries(pipe, lora_files):
    pipe.load_lora_weights(lora_files["one"], adapter_name="one")
    run(pipe)
    assert_miss_inserted(pipe)
    pipe.disable_lora()
    assert dict(signature(pipe).adapters)["one"].startswith("weights=") and "active=0" in signature(pipe).adapters[0][1]
    run(pipe)
    assert_miss_inserted(pipe)


def test_fuse_lora_misses(pipe, lora_files):
    """peft's default merge writes ``weight.data += delta``: no parameter's _version or data_ptr changes."""
    pipe.load_lora_weights(lora_files["one"], adapter_name="one")
    run(pipe)
    assert_miss_inserted(pipe)
    before = signature(pipe)
    pipe.fuse_lora()
    after = signature(pipe)
    assert after.weights != before.weights and "fused=1" in dict(after.adapters)["one"]
    run(pipe)
    assert_miss_inserted(pipe)


def test_attention_kwargs_scale_is_in_the_signature(pipe, lora_files):
    pipe.load_lora_weights(lora_files["one"], adapter_name="one")
    assert ("attention_kwargs", '{"scale":0.5}') in signature(pipe, attention_kwargs={"scale": 0.5}).extra
    run(pipe, attention_kwargs={"scale": 0.5})
    assert_miss_inserted(pipe)
    run(pipe, attention_kwargs={"scale": 0.25})
    assert_miss_inserted(pipe)
    run(pipe, attention_kwargs={"scale": 0.5})
    assert_hit(pipe)
    # None and {} change nothing: both key as a call without attention kwargs.
    assert signature(pipe, attention_kwargs={}).key() == signature(pipe, attention_kwargs=None).key()


def test_attention_kwargs_that_cannot_be_digested_run_uncached_with_the_reason(pipe):
    class Hook:
        pass

    out = run(pipe, attention_kwargs={"hook": Hook()})
    report = last_call_report(pipe)
    assert out.shape[0] == 1 and not report.hit and not report.inserted
    assert report.bypass_reason.startswith("attention_kwargs['hook'] is a Hook, which the cache cannot digest")
    with pytest.raises(UncacheableCallError, match="cannot digest"):
        signature(pipe, attention_kwargs={"hook": Hook()})
    with pytest.raises(UncacheableCallError, match="string keys"):
        signature(pipe, attention_kwargs={1: 0.5})


def test_attention_kwargs_tensors_key_by_content():
    pipe = tiny_wan_pipeline(seed=0)
    mask = torch.ones(4)
    same = signature(pipe, attention_kwargs={"mask": mask.clone()})
    assert signature(pipe, attention_kwargs={"mask": mask}) == same
    assert signature(pipe, attention_kwargs={"mask": mask * 2}).key() != same.key()


def test_pipelines_of_one_architecture_with_other_weights_get_other_signatures():
    first, again, other = tiny_wan_pipeline(seed=0), tiny_wan_pipeline(seed=0), tiny_wan_pipeline(seed=1)
    assert signature(first).key() == signature(again).key()
    assert signature(first).key() != signature(other).key()


def test_a_second_expert_is_fingerprinted_too():
    one, other = tiny_wan_pipeline(seed=0, boundary_ratio=0.875), tiny_wan_pipeline(seed=0, boundary_ratio=0.875)
    assert signature(one).weights == signature(other).weights
    with torch.no_grad():
        other.transformer_2.proj_out.weight.data.mul_(1.5)
    assert signature(one).weights != signature(other).weights


@pytest.mark.parametrize("change", ["data_copy", "load_state_dict", "data_add"])
def test_weights_changed_in_place_change_the_fingerprint_and_back(change):
    pipe, donor = tiny_wan_pipeline(seed=0), tiny_wan_pipeline(seed=1)
    original = {name: value.clone() for name, value in pipe.transformer.state_dict().items()}
    base = signature(pipe)
    with torch.no_grad():
        if change == "data_copy":
            pipe.transformer.proj_out.weight.data.copy_(donor.transformer.proj_out.weight)
        elif change == "load_state_dict":
            pipe.transformer.load_state_dict(donor.transformer.state_dict())
        else:
            pipe.transformer.blocks[0].attn1.to_q.weight.data += 0.01
    changed = signature(pipe)
    assert changed.weights != base.weights and changed.key() != base.key()
    pipe.transformer.load_state_dict(original)
    assert signature(pipe).key() == base.key()  # the fingerprint follows the values, not the objects


def test_the_fingerprint_reads_a_fixed_number_of_elements_per_tensor(monkeypatch):
    """Cheap on a 14B model: the samples gathered per call are O(tensors), whatever their size."""
    gathered = []
    real_cat = torch.cat

    def spy(tensors, *args, **kwargs):
        out = real_cat(tensors, *args, **kwargs)
        if out.dtype == torch.float32:  # the gather of the weights' samples (then hashed as bytes)
            gathered.append(out.numel())
        return out

    module = torch.nn.ModuleDict({"big": torch.nn.Linear(1024, 1024), "small": torch.nn.Linear(4, 4)})
    monkeypatch.setattr(torch, "cat", spy)
    weights_fingerprint([("denoiser", module)])
    # 1,048,576 + 1,024 + 16 + 4 elements: the big weight and bias give 16 each, the small ones all they have.
    assert sum(gathered) == 16 + 16 + 16 + 4 and SAMPLES_PER_TENSOR == 16


def test_the_fingerprint_follows_values_not_memory_layout():
    """A parameter stored transposed is sampled at the same logical positions as its contiguous copy."""
    values = torch.randn(64, 8)
    strided = torch.nn.Module()
    strided.weight = torch.nn.Parameter(values.t())  # (8, 64), not contiguous
    contiguous = torch.nn.Module()
    contiguous.weight = torch.nn.Parameter(values.t().contiguous())
    assert not strided.weight.is_contiguous()
    assert weights_fingerprint([("m", strided)]) == weights_fingerprint([("m", contiguous)])
    with torch.no_grad():
        strided.weight.data.mul_(2)
    assert weights_fingerprint([("m", strided)]) != weights_fingerprint([("m", contiguous)])


def test_the_fingerprint_covers_what_a_checkpoint_holds():
    """Persistent buffers are weights; non-persistent ones (rotary tables) follow from the config."""
    def module():
        out = torch.nn.Module()
        out.register_buffer("running_mean", torch.zeros(4))
        out.register_buffer("rotary", torch.ones(4), persistent=False)
        return out

    base, stats, table = module(), module(), module()
    stats.running_mean += 1
    table.rotary += 1e-7  # as a table computed on another device could differ
    assert weights_fingerprint([("m", stats)]) != weights_fingerprint([("m", base)])
    assert weights_fingerprint([("m", table)]) == weights_fingerprint([("m", base)])


@pytest.mark.gpu
def test_the_fingerprint_is_the_same_on_any_device():
    """Model CPU offload moves the transformer between calls, device maps split it: neither changes the weights."""
    pipe = tiny_wan_pipeline(seed=0)
    on_cpu = signature(pipe).weights
    pipe.transformer.blocks[0].to("cuda")
    split = signature(pipe).weights
    pipe.transformer.to("cuda")
    assert on_cpu == split == signature(pipe).weights


def test_weights_that_cannot_be_read_enter_by_name_and_shape():
    """Meta tensors (sequential CPU offload) are not read: the signature still builds (the cache fails open)."""
    meta = torch.nn.Linear(4, 4, device="meta")
    assert weights_fingerprint([("m", meta)]) == weights_fingerprint([("m", torch.nn.Linear(4, 4, device="meta"))])
    assert weights_fingerprint([("m", meta)]) != weights_fingerprint([("m", torch.nn.Linear(4, 5, device="meta"))])


@pytest.mark.filterwarnings("ignore:this WanPipeline has no name_or_path")
def test_a_restarted_cache_serves_the_same_lora_and_not_the_base(tmp_path, embedder, lora_files):
    from flexcache import CacheConfig, FlexCache

    config = CacheConfig.from_dict({
        "embedder": {"device": "cpu"}, "index": {"device": "cpu"}, "codec": {"name": "lossless"},
        "store": {"tiers": [{"kind": "memory", "capacity_bytes": "1MiB"},
                            {"kind": "disk", "capacity_bytes": "64MiB", "path": str(tmp_path)}]},
    })

    def pipeline(cache, lora):
        pipe = tiny_wan_pipeline(seed=0)
        pipe.set_progress_bar_config(disable=True)
        if lora:
            pipe.load_lora_weights(lora_files["one"], adapter_name="one")
        return enable_flexcache(pipe, cache, model_id="tiny-wan")

    with FlexCache(config, embedder=embedder) as first:
        pipe = pipeline(first, lora=True)
        run(pipe, attention_kwargs={"scale": 0.5})
        assert_miss_inserted(pipe)
        first.store.drain()
    with FlexCache(config, embedder=embedder) as second:
        pipe = pipeline(second, lora=True)
        run(pipe, attention_kwargs={"scale": 0.5})
        assert_hit(pipe)  # weights, adapters and attention kwargs came back from the entry's metadata
        base = pipeline(second, lora=False)
        run(base, attention_kwargs={"scale": 0.5})
        assert_miss_inserted(base)


def test_a_random_weight_pipeline_without_model_id_misses_the_toy_world_entries(make_cache):
    from flexcache.integrations.diffusers import _default_model_id
    from flexcache.toyworld.model import WEIGHTS, toyworld_pipeline

    trained, random_weights = toyworld_pipeline(WEIGHTS), toyworld_pipeline(None)
    assert _default_model_id(trained) == _default_model_id(random_weights)  # one architecture: one fallback id
    cache = make_cache(codec={"name": "lossless"})
    for pipeline in (trained, random_weights):
        pipeline.set_progress_bar_config(disable=True)
        with pytest.warns(UserWarning, match="model_id"):
            enable_flexcache(pipeline, cache)
    text = torch.randn(1, 24, 384, generator=torch.Generator().manual_seed(1))
    kwargs = dict(prompt="a red circle drifting left over a white striped background", prompt_embeds=text,
                  num_frames=7, height=16, width=16, num_inference_steps=6, guidance_scale=1.0, output_type="latent")
    trained(**kwargs)
    assert_miss_inserted(trained)
    trained(**kwargs)
    assert_hit(trained)
    random_weights(**kwargs)
    assert_miss_inserted(random_weights)


def test_a_pipeline_without_identity_warns_once(make_cache):
    cache = make_cache()
    anonymous, named, given = tiny_wan_pipeline(), tiny_wan_pipeline(), tiny_wan_pipeline()
    named.register_to_config(_name_or_path="org/tiny-wan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enable_flexcache(anonymous, cache)
        enable_flexcache(anonymous, cache)  # enabled again: not warned again
        enable_flexcache(named, cache)
        enable_flexcache(given, cache, model_id="tiny-wan")
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning) and "model_id" in str(w.message)]
    assert len(messages) == 1
    assert "has no name_or_path" in messages[0] and "enable_flexcache(pipe, cache, model_id=" in messages[0]


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
def test_the_signature_with_a_lora_is_the_same_in_every_process(lora_files):
    """Fleet workers loading one model and LoRA must agree on the signature, whatever their hash seed."""
    import os
    import subprocess
    import sys

    def load(pipe):
        pipe.load_lora_weights(lora_files["one"], adapter_name="one")
        pipe.load_lora_weights(lora_files["two"], adapter_name="two")
        pipe.set_adapters(["one", "two"], [0.5, 0.75])
        return pipe

    code = ("import warnings; warnings.simplefilter('ignore')\n"
            "from flexcache.integrations.adapter_table import ADAPTERS\n"
            "from flexcache.integrations.tiny import tiny_wan_pipeline\n"
            "pipe = tiny_wan_pipeline()\n"
            f"pipe.load_lora_weights({lora_files['one']!r}, adapter_name='one')\n"
            f"pipe.load_lora_weights({lora_files['two']!r}, adapter_name='two')\n"
            "pipe.set_adapters(['one', 'two'], [0.5, 0.75])\n"
            f"print(ADAPTERS['WanPipeline'].signature(pipe, {CALL!r}, 'tiny-wan').key())\n")
    other_seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"  # not this process's hash seed
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": other_seed}).stdout.strip().splitlines()[-1]
    assert child == signature(load(tiny_wan_pipeline())).key()


def test_the_fingerprint_does_not_depend_on_the_order_modules_were_registered_in():
    """cache-dit re-registers the blocks it wraps on its first call: the same weights must keep their fingerprint."""
    from flexcache.integrations.model_identity import weights_fingerprint

    torch.manual_seed(0)
    first, second = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
    model = torch.nn.Module()
    model.a, model.b = first, second
    before = weights_fingerprint([("m", model)])
    del model.a
    model.a = first  # registered again: now after b
    assert [name for name, _ in model.named_parameters()][0].startswith("b.")
    assert weights_fingerprint([("m", model)]) == before
