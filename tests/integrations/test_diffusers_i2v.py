"""Image-to-video on tiny random-weight pipelines (CPU): Wan (Wan2.2 I2V and TI2V-5B-shaped), LTX and CogVideoX.

The conditioning image's content joins the generation signature: an entry
made for one image never serves another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import PIL.Image
import pytest
import torch

from flexcache import enable_flexcache, last_call_report
from flexcache.integrations.tiny import (
    tiny_cogvideox_i2v_pipeline,
    tiny_ltx_i2v_pipeline,
    tiny_prompt_embeds,
    tiny_wan_i2v_pipeline,
)
from flexcache.kernels.noise import seeded_noise

PROMPT = "a red fox running through fresh snow in a pine forest"
STEPS = 10
pytestmark = pytest.mark.filterwarnings("ignore:.*CLIPImageProcessor.*")


@dataclass(frozen=True)
class Family:
    build: Callable[..., Any]
    call: dict[str, Any]
    latent: tuple[int, ...]
    size: int
    misses: tuple[dict[str, Any], ...]  # call settings (beside another image) that must not share an entry
    masked: bool = False  # prompt embeddings travel with an attention mask
    own_noise: bool = False  # on a miss the pipeline draws its initial latents (seeded by FlexCache)


FAMILIES = {
    "wan": Family(tiny_wan_i2v_pipeline, dict(height=32, width=32, num_frames=5), (16, 2, 4, 4), 32,
                  ({"height": 48}, {"num_frames": 9}, {"last_image": "other"})),
    "wan-ti2v": Family(lambda seed: tiny_wan_i2v_pipeline(seed, expand_timesteps=True),
                       dict(height=32, width=32, num_frames=5), (16, 2, 4, 4), 32, ({"height": 48},)),
    "ltx": Family(tiny_ltx_i2v_pipeline, dict(height=32, width=32, num_frames=9), (192, 8), 32,
                  ({"height": 64}, {"num_frames": 17}, {"frame_rate": 30}), masked=True, own_noise=True),
    "cogvideox": Family(tiny_cogvideox_i2v_pipeline, dict(height=16, width=16, num_frames=9), (3, 4, 2, 2), 16,
                        ({"guidance_scale": 3.0, "negative_prompt_embeds": tiny_prompt_embeds("")},)),
}


@pytest.fixture(params=sorted(FAMILIES))
def family(request):
    spec = FAMILIES[request.param]
    pipe = spec.build(seed=0)
    pipe.set_progress_bar_config(disable=True)
    return spec, pipe


def image(spec, seed: int) -> torch.Tensor:
    return torch.rand(1, 3, spec.size, spec.size, generator=torch.Generator().manual_seed(seed))


def embeds(spec) -> dict[str, torch.Tensor]:
    e = tiny_prompt_embeds(PROMPT)
    return dict(prompt_embeds=e, **({"prompt_attention_mask": torch.ones(1, e.shape[1])} if spec.masked else {}))


def run(family, picture, **overrides):
    spec, pipe = family
    if overrides.get("last_image") == "other":
        overrides["last_image"] = image(spec, 3)
    return pipe(image=picture, prompt=PROMPT, **embeds(spec),
                **{**spec.call, "num_inference_steps": STEPS, "guidance_scale": 1.0, "output_type": "latent",
                   **overrides}).frames


def _cache(make_cache, fraction=0.3):
    return make_cache(codec={"name": "lossless"}, planner={"lookup": "full", "similarity_table": [[0.99, fraction]]})


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_resume_reproduces_the_uninterrupted_run(family, make_cache, fraction):
    spec, pipe = family
    # CogVideoX samples the image latent with the call's generator: the same seed, the same conditioning.
    start = {} if spec.own_noise else {"latents": seeded_noise(spec.latent, 77).unsqueeze(0)}
    reference = pipe(image=image(spec, 1), **embeds(spec), **start, generator=torch.Generator().manual_seed(77),
                     num_inference_steps=STEPS, guidance_scale=1.0, output_type="latent", **spec.call).frames
    enable_flexcache(pipe, _cache(make_cache, fraction))
    first = run(family, image(spec, 1), generator=torch.Generator().manual_seed(77))
    assert not last_call_report(pipe).hit
    torch.testing.assert_close(first, reference, rtol=0, atol=0)
    second = run(family, image(spec, 1).clone(), generator=torch.Generator().manual_seed(77))  # equal content
    report = last_call_report(pipe)
    assert report.hit and report.skip_steps == round(fraction * STEPS)
    assert float((second - reference).norm() / reference.norm()) < 1e-5


def test_another_image_or_setting_misses(family, make_cache):
    spec, pipe = family
    enable_flexcache(pipe, _cache(make_cache))
    run(family, image(spec, 1))
    for picture, overrides in ((image(spec, 2), {}),) + tuple((image(spec, 1), dict(m)) for m in spec.misses):
        run(family, picture, **overrides)
        assert not last_call_report(pipe).hit, overrides
    run(family, image(spec, 1))
    assert last_call_report(pipe).hit


def test_pil_images_are_keyed_by_their_pixels(family, make_cache):
    spec, pipe = family
    pixels = (np.random.default_rng(0).random((spec.size, spec.size, 3)) * 255).astype(np.uint8)
    enable_flexcache(pipe, _cache(make_cache))
    run(family, PIL.Image.fromarray(pixels))
    run(family, PIL.Image.fromarray(pixels.copy()))
    assert last_call_report(pipe).hit
    pixels[0, 0] ^= 1
    run(family, PIL.Image.fromarray(pixels))
    assert not last_call_report(pipe).hit


def test_several_images_run_uncached_and_the_report_says_why(make_cache):
    spec = FAMILIES["wan"]
    pipe = spec.build(seed=0)
    pipe.set_progress_bar_config(disable=True)
    cache = _cache(make_cache)
    enable_flexcache(pipe, cache)
    with pytest.raises(RuntimeError):  # the pipeline's own error for two images and one prompt, unchanged
        run((spec, pipe), torch.cat([image(spec, 1), image(spec, 2)]))
    assert "several conditioning images" in last_call_report(pipe).bypass_reason
    assert not cache._entries
