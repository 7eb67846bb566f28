"""Scorers: the toy world's signal, PSNR/SSIM against a reference, CLIP's plumbing, callables, bad input."""

from __future__ import annotations

import json
import math
import random
import sys

import numpy as np
import pytest
import torch

from flexcache.errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidDeviceError,
    ScorerError,
)
from flexcache.quality.scorers import (
    PSNR_CAP_DB,
    SCORERS,
    CallableScorer,
    ClipScorer,
    ReferenceScorer,
    Scorer,
    ToyWorldScorer,
    build_scorer,
    from_toyworld,
    to_toyworld,
)
from flexcache.toyworld.world import (
    ClipSpec,
    parse_prompt,
    prompt_for,
    render,
    render_batch,
)

RED_CIRCLE = ClipSpec("circle", "red", "left", "white", "plain")
# Differs from RED_CIRCLE in every attribute.
BLUE_TRIANGLE = ClipSpec("triangle", "blue", "down", "purple", "checker")


def smooth_video(batch=2, frames=3, size=32, seed=0):
    """Videos with structure at several scales (SSIM on white noise says little)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch * frames, 3, size // 8, size // 8, generator=generator)
    fine = torch.rand(batch * frames, 3, size, size, generator=generator)
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * up + 0.2 * fine).reshape(batch, frames, 3, size, size)


def noisy(video, sigma, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return (video + sigma * torch.randn(video.shape, generator=generator)).clamp(0, 1)


# ----------------------------------------------------------------------------- layout


def test_from_toyworld_layout_range_and_inverse():
    clips = render_batch([RED_CIRCLE, BLUE_TRIANGLE], frames=5)  # (2, 3, 5, 16, 16) in [-1, 1]
    videos = from_toyworld(clips)
    assert videos.shape == (2, 5, 3, 16, 16) and videos.dtype == torch.float32
    assert float(videos.min()) >= 0.0 and float(videos.max()) <= 1.0
    assert torch.allclose(videos[1, 4], (clips[1, :, 4] + 1) / 2)
    assert torch.allclose(to_toyworld(videos), clips, atol=1e-6)


def test_from_toyworld_refuses_another_layout():
    with pytest.raises(ScorerError, match=r"\(B, 3, F, H, W\)"):
        from_toyworld(torch.zeros(2, 5, 3, 16, 16))


# ----------------------------------------------------------------------------- toy world


def test_toyworld_scores_own_prompts_high_and_other_prompts_lower():
    specs = [RED_CIRCLE, BLUE_TRIANGLE, RED_CIRCLE.replace(color="green"), BLUE_TRIANGLE.replace(pattern="stripes")]
    rng = random.Random(0)
    prompts = [prompt_for(spec, rng) for spec in specs]
    assert [parse_prompt(p) for p in prompts] == specs
    videos = from_toyworld(render_batch(specs))
    scorer = build_scorer("toyworld")
    own = scorer.score(videos, prompts)
    assert own.shape == (4,) and own.dtype == torch.float32
    assert torch.allclose(own, torch.ones(4))
    # Against the next spec's prompt, which differs in all five attributes: nothing matches.
    assert torch.allclose(scorer.score(videos, prompts[1:] + prompts[:1]), torch.zeros(4))
    # Against a prompt that differs in one attribute (0/2: colour, 1/3: pattern): four of five.
    assert torch.allclose(scorer.score(videos[:2], prompts[2:]), torch.tensor([0.8, 0.8]))


def test_toyworld_unreadable_prompt_names_it_truncated():
    videos = from_toyworld(render(RED_CIRCLE).unsqueeze(0))
    prompt = "a cinematic shot of a lighthouse " + "z" * 200
    with pytest.raises(ScorerError, match="cannot read the prompt") as caught:
        ToyWorldScorer().score(videos, [prompt])
    assert prompt[:80] in str(caught.value) and prompt[:81] not in str(caught.value)


# ----------------------------------------------------------------------------- reference


def test_reference_identical_video_scores_one_and_capped_psnr():
    video = smooth_video()
    scorer = build_scorer("reference")
    assert scorer.needs_reference and scorer.name == "reference"
    assert torch.allclose(scorer.score(video, ["a", "b"], references=video.clone()), torch.ones(2), atol=1e-5)
    assert torch.equal(scorer.metrics(video, video.clone())["psnr"], torch.full((2,), PSNR_CAP_DB))


def test_reference_more_noise_scores_lower():
    video = smooth_video()
    scorer = ReferenceScorer()
    light, heavy = scorer.metrics(noisy(video, 0.03), video), scorer.metrics(noisy(video, 0.15), video)
    assert (light["ssim"] < 0.999).all() and (heavy["ssim"] < light["ssim"]).all()
    assert (heavy["psnr"] < light["psnr"]).all() and (light["psnr"] < PSNR_CAP_DB).all()
    assert torch.isfinite(heavy["psnr"]).all()
    assert torch.allclose(scorer.score(noisy(video, 0.15), ["a", "b"], references=video), heavy["ssim"])


def test_reference_psnr_is_the_frame_mean_of_10_log10_one_over_mse():
    video = smooth_video(batch=1, frames=4)
    other = noisy(video, 0.1)
    mse = ((other - video) ** 2).flatten(2).mean(2)  # (1, F)
    expected = (10 * torch.log10(1 / mse)).mean(1)
    assert torch.allclose(ReferenceScorer(frame_batch_size=3).metrics(other, video)["psnr"], expected, atol=1e-3)


def test_reference_frame_chunks_do_not_change_scores():
    video, reference = noisy(smooth_video(frames=5), 0.1), smooth_video(frames=5)
    whole = ReferenceScorer(frame_batch_size=16).metrics(video, reference)
    chunked = ReferenceScorer(frame_batch_size=2).metrics(video, reference)
    for name in ("ssim", "psnr"):
        assert torch.allclose(whole[name], chunked[name], atol=1e-5)


def test_reference_refuses_frames_smaller_than_the_window():
    video = smooth_video(size=8)
    with pytest.raises(ScorerError, match="smaller than SSIM"):
        ReferenceScorer().score(video, ["a", "b"], references=video)


def test_reference_without_torchmetrics_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics.functional.image", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install flexcache\[quality\]"):
        build_scorer("reference")


@pytest.mark.parametrize("references, message", [
    (None, "pass references"),
    (torch.rand(2, 3, 3, 32, 24), "must have the shape of the videos"),
    (torch.full((2, 3, 3, 32, 32), float("nan")), "non-finite"),
])
def test_reference_bad_references(references, message):
    with pytest.raises(ScorerError, match=message):
        ReferenceScorer().score(smooth_video(), ["a", "b"], references=references)


# ----------------------------------------------------------------------------- callables


def test_callable_scorer_sees_each_video_with_its_prompt():
    seen = []

    def brightness(video, prompt):
        seen.append((tuple(video.shape), prompt))
        return video.mean()  # a 0-d tensor is a number too

    videos = torch.stack([torch.full((2, 3, 4, 4), 0.25), torch.full((2, 3, 4, 4), 0.75)])
    scorer = build_scorer(brightness)
    assert isinstance(scorer, CallableScorer) and scorer.name == "brightness"
    assert torch.allclose(scorer.score(videos, ["dim", "bright"]), torch.tensor([0.25, 0.75]))
    assert seen == [((2, 3, 4, 4), "dim"), ((2, 3, 4, 4), "bright")]
    assert build_scorer(lambda video, prompt: np.float32(2.5)).score(videos, ["a", "b"]).tolist() == [2.5, 2.5]


def test_callable_that_raises_names_the_item_and_chains():
    def picky(video, prompt):
        if prompt == "bad":
            raise RuntimeError("cannot judge this one")
        return 1.0

    with pytest.raises(ScorerError, match=r"'picky' failed on item 1 .*cannot judge this one") as caught:
        build_scorer(picky).score(torch.zeros(3, 1, 3, 4, 4), ["ok", "bad", "ok"])
    assert isinstance(caught.value.__cause__, RuntimeError)


@pytest.mark.parametrize("value, message", [
    ("high", "returned str"),
    (None, "returned NoneType"),
    (float("nan"), "returned nan"),
    (math.inf, "returned inf"),
    (torch.ones(2), "shape"),
])
def test_callable_returning_no_finite_number_is_refused(value, message):
    with pytest.raises(ScorerError, match=message):
        CallableScorer(lambda video, prompt: value).score(torch.zeros(1, 1, 3, 4, 4), ["a"])


def test_a_scorer_subclass_cannot_return_nan_or_the_wrong_count():
    class Broken(Scorer):
        name = "broken"

        def __init__(self, scores):
            self.scores = scores

        def _score(self, videos, prompts, references):
            return self.scores

    videos = torch.zeros(2, 1, 3, 4, 4)
    with pytest.raises(ScorerError, match=r"non-finite scores to items \[1\]"):
        Broken(torch.tensor([0.5, float("nan")])).score(videos, ["a", "b"])
    with pytest.raises(ScorerError, match="returned 3 scores for 2 videos"):
        Broken(torch.tensor([0.5, 0.5, 0.5])).score(videos, ["a", "b"])
    assert Broken(torch.tensor([0.5, 0.25])).score(videos, ["a", "b"]).tolist() == [0.5, 0.25]


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("videos, prompts, message", [
    ([[0.0]], ["a"], "must be a torch.Tensor"),
    (torch.zeros(1, 3, 4, 4), ["a"], r"shaped \(B, F, 3, H, W\)"),
    (torch.zeros(1, 3, 2, 4, 4), ["a"], "convert them with from_toyworld"),
    (torch.zeros(1, 0, 3, 4, 4), ["a"], "empty"),
    (torch.zeros(1, 1, 3, 4, 4, dtype=torch.uint8), ["a"], "floating point"),
    (torch.full((1, 1, 3, 4, 4), float("inf")), ["a"], "non-finite values in 1 of 1"),
    (-torch.ones(1, 1, 3, 4, 4), ["a"], r"in \[0, 1\]"),
    (torch.zeros(1, 1, 3, 4, 4), "a", "list of strings"),
    (torch.zeros(2, 1, 3, 4, 4), ["a"], "2 videos but 1 prompts"),
    (torch.zeros(1, 1, 3, 4, 4), [7], "prompt 0 must be a str"),
])
def test_malformed_input_is_refused(videos, prompts, message):
    with pytest.raises(ScorerError, match=message):
        CallableScorer(lambda video, prompt: 1.0).score(videos, prompts)


def test_build_scorer_refusals(tmp_path):
    with pytest.raises(ConfigError) as caught:
        build_scorer("vbench")
    assert all(name in str(caught.value) for name in SCORERS)
    with pytest.raises(ConfigError, match="--scorer-model PATH"):
        build_scorer("clip")
    with pytest.raises(ConfigError, match="clip scorer only"):
        build_scorer("toyworld", model_path=tmp_path)
    with pytest.raises(ConfigError, match="got int"):
        build_scorer(42)
    with pytest.raises(InvalidDeviceError):
        build_scorer("toyworld", device="cdua")
    with pytest.raises(ConfigError, match="frame_batch_size must be a positive int"):
        ReferenceScorer(frame_batch_size=0)


def test_build_scorer_passes_a_scorer_through():
    scorer = ToyWorldScorer()
    assert build_scorer(scorer) is scorer
    assert isinstance(build_scorer(" ToyWorld "), ToyWorldScorer)


@pytest.mark.parametrize("make_dir", [lambda root: root / "missing", lambda root: root])
def test_clip_load_failure_names_the_path(tmp_path, make_dir):
    path = make_dir(tmp_path)
    with pytest.raises(ScorerError) as caught:
        build_scorer("clip", model_path=path)
    assert str(path) in str(caught.value)


# ----------------------------------------------------------------------------- CLIP plumbing

IMAGE_SIZE = 32
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def tiny_clip_path(tmp_path_factory):
    """A random-weight CLIP with a byte-level tokenizer (one token per byte), saved as a checkpoint directory."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    path = tmp_path_factory.mktemp("tiny-clip")
    alphabet = sorted(ByteLevel.alphabet())
    tokens = alphabet + [char + "</w>" for char in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer.from_pretrained(str(path), model_max_length=MAX_TOKENS).save_pretrained(str(path))
    specials = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
                "pad_token_id": vocab["<|endoftext|>"]}
    layers = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**layers, "vocab_size": len(vocab), "max_position_embeddings": MAX_TOKENS, **specials},
        vision_config={**layers, "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(str(path))
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_path):
    return build_scorer("clip", model_path=tiny_clip_path)


PROMPTS = ["a red circle", "a blue triangle drifting down", "grey", "stripes on purple"]


def test_clip_scores_are_deterministic_finite_cosines(tiny_clip):
    videos = smooth_video(batch=4, frames=3, size=IMAGE_SIZE)
    scores = tiny_clip.score(videos, PROMPTS)
    assert isinstance(tiny_clip, ClipScorer) and tiny_clip.name == "clip" and not tiny_clip.needs_reference
    assert scores.shape == (4,) and scores.dtype == torch.float32 and scores.device.type == "cpu"
    assert torch.isfinite(scores).all() and (scores.abs() <= 1).all()
    assert scores.unique().numel() == 4  # each video scored on its own content and prompt
    assert torch.allclose(tiny_clip.score(videos, PROMPTS), scores, atol=1e-6)


def test_clip_score_is_the_frame_mean_of_text_image_cosines(tiny_clip, tiny_clip_path):
    from transformers import CLIPModel, CLIPTokenizer

    # Frames already at the model's size: no resize or crop, only the processor's normalization.
    videos = smooth_video(batch=2, frames=3, size=IMAGE_SIZE)
    model = CLIPModel.from_pretrained(str(tiny_clip_path)).eval()
    tokens = CLIPTokenizer.from_pretrained(str(tiny_clip_path))(PROMPTS[:2], padding=True, truncation=True,
                                                                    max_length=MAX_TOKENS, return_tensors="pt")
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        output = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                       pixel_values=(videos.reshape(6, 3, IMAGE_SIZE, IMAGE_SIZE) - mean) / std)
    cosines = output.logits_per_text / model.logit_scale.exp()  # (2 prompts, 6 frames)
    expected = torch.stack([cosines[0, :3].mean(), cosines[1, 3:].mean()])
    assert torch.allclose(tiny_clip.score(videos, PROMPTS[:2]), expected, atol=1e-5)


def test_clip_batch_order_and_frame_chunks_do_not_change_scores(tiny_clip, tiny_clip_path):
    videos = smooth_video(batch=4, frames=5, size=48)  # larger than the model: resized and cropped
    scores = tiny_clip.score(videos, PROMPTS)
    order = [2, 0, 3, 1]
    assert torch.allclose(tiny_clip.score(videos[order], [PROMPTS[i] for i in order]), scores[order], atol=1e-5)
    chunked = ClipScorer(tiny_clip_path, frame_batch_size=3)
    assert torch.allclose(chunked.score(videos, PROMPTS), scores, atol=1e-5)


def test_clip_prepares_frames_as_the_checkpoints_processor_does(tiny_clip, tiny_clip_path):
    from transformers import CLIPImageProcessor

    # Non-square frames: the shorter side resized to the model's size, then a center crop.
    frames = smooth_video(batch=1, frames=4, size=64)[0][..., 8:56, :]  # (4, 3, 48, 64)
    as_uint8 = [(frame * 255).round().to(torch.uint8) for frame in frames]
    expected = CLIPImageProcessor.from_pretrained(str(tiny_clip_path))(images=as_uint8, return_tensors="pt")
    ours = tiny_clip._pixels(frames)
    # The processor goes through 8-bit PIL images and PIL's bicubic filter; ours stays in float.
    assert ours.shape == expected["pixel_values"].shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
    difference = (ours - expected["pixel_values"]).abs()
    assert float(difference.mean()) < 0.02 and float(difference.max()) < 0.1


def test_clip_takes_non_square_frames(tiny_clip):
    scores = tiny_clip.score(torch.rand(2, 2, 3, 20, 44, generator=torch.Generator().manual_seed(3)), PROMPTS[:2])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_clip_truncates_prompts_past_its_context(tiny_clip):
    # One token per character here (a space folds into the one before it): the tokens after the
    # shared first ~20 characters never reach the model.
    videos = smooth_video(batch=2, frames=2, size=IMAGE_SIZE)
    shared = "a red circle drifting left over a white background "
    long_prompts = [shared + "x" * 100, shared + "y" * 300]
    scores = tiny_clip.score(videos[[0, 0]], long_prompts)
    assert torch.allclose(scores[0], scores[1], atol=1e-6)
    assert not torch.allclose(tiny_clip.score(videos[:1], ["a"]), scores[:1], atol=1e-4)



@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["clip", "reference"])
def test_scores_on_cuda_match_cpu(kind, tiny_clip_path):
    # cuDNN may run the convolutions (CLIP's patch embedding, SSIM's window) in TF32: close, not equal.
    videos = smooth_video(batch=2, frames=3, size=IMAGE_SIZE)
    references = noisy(videos, 0.1)
    model_path = tiny_clip_path if kind == "clip" else None
    expected = build_scorer(kind, model_path=model_path).score(videos, PROMPTS[:2], references=references)
    on_cuda = build_scorer(kind, model_path=model_path, device="cuda")
    scores = on_cuda.score(videos, PROMPTS[:2], references=references)
    assert scores.device.type == "cpu" and scores.dtype == torch.float32
    assert torch.allclose(scores, expected, atol=5e-3)
