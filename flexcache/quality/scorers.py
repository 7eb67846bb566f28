"""How a video is judged: one small interface over the toy world's reader, CLIP, PSNR/SSIM and any callable.

A scorer maps a batch of videos and their prompts to one number per video, higher is better.
Calibration compares the scores of a resumed run with those of the target's own full run, so a
scorer only has to rank videos consistently; its scale is its own.

Videos are float tensors (B, F, 3, H, W) with values in [0, 1] (diffusers' ``output_type="pt"``
layout). The toy world's clips are (B, 3, F, H, W) in [-1, 1]: `from_toyworld` converts them.

* ``toyworld``: the fraction of the prompt's five attributes the toy world's pixel reader finds.
* ``clip``: the mean over frames of the cosine between CLIP's text and frame embeddings, from a
  local checkpoint the operator supplies.
* ``reference`` (needs the target's own full run): SSIM against it, averaged over frames;
  `ReferenceScorer.metrics` adds PSNR.
* any callable ``(video (F, 3, H, W) in [0, 1], prompt) -> float``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from flexcache.errors import BackendUnavailableError, ConfigError, InvalidDeviceError, ScorerError

SCORERS: tuple[str, ...] = ("toyworld", "clip", "reference")
# PSNR of two identical frames is +inf; it is capped here so that means and JSON reports stay finite.
# 100 dB is a mean squared error of 1e-10 on [0, 1] pixels: far below what any eye or codec resolves.
PSNR_CAP_DB = 100.0
# SSIM's Gaussian window (Wang et al. 2004, sigma 1.5: an 11-pixel window); smaller frames cannot be scored.
SSIM_SIGMA = 1.5
SSIM_MIN_SIDE = 11
_RANGE_SLACK = 1e-3  # rounding in a VAE decode may step just outside [0, 1]
_PROMPT_SHOWN = 80


def _shown(prompt: str) -> str:
    return prompt if len(prompt) <= _PROMPT_SHOWN else prompt[:_PROMPT_SHOWN] + "..."


def _check_frame_batch_size(frame_batch_size: Any) -> None:
    if not isinstance(frame_batch_size, int) or frame_batch_size < 1:
        raise ConfigError(f"frame_batch_size must be a positive int; got {frame_batch_size!r}")


def _check_device(device: str | torch.device) -> torch.device:
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InvalidDeviceError(f"device {device!r} is not a device name torch knows; pass 'cpu' or 'cuda:0'") from None
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise InvalidDeviceError(f"device {str(parsed)!r} was asked for, but this machine has "
                                 f"{torch.cuda.device_count()} CUDA device(s); pass 'cpu' or one it has")
    return parsed


def from_toyworld(clips: torch.Tensor) -> torch.Tensor:
    """Toy-world clips (B, 3, F, H, W) in [-1, 1] as scorer videos (B, F, 3, H, W) in [0, 1].

    Args:
        clips: a batch of toy-world clips (`flexcache.toyworld.render_batch`).

    Returns:
        A float32 tensor (B, F, 3, H, W), clamped to [0, 1].

    Raises:
        ScorerError: `clips` is not a 5-D tensor with 3 channels in dimension 1.

    Example:
        >>> from_toyworld(torch.zeros(2, 3, 8, 16, 16)).shape
        torch.Size([2, 8, 3, 16, 16])
        >>> float(from_toyworld(-torch.ones(1, 3, 1, 2, 2)).max())
        0.0
    """
    if not isinstance(clips, torch.Tensor) or clips.dim() != 5 or clips.shape[1] != 3:
        shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
        raise ScorerError(f"toy-world clips must be a tensor (B, 3, F, H, W) in [-1, 1]; got {shape}")
    return ((clips.float() + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4).contiguous()


def to_toyworld(videos: torch.Tensor) -> torch.Tensor:
    """The inverse of `from_toyworld`: videos (B, F, 3, H, W) in [0, 1] as clips (B, 3, F, H, W) in [-1, 1]."""
    return (videos.float() * 2 - 1).permute(0, 2, 1, 3, 4).contiguous()


def _check_videos(videos: Any, what: str = "videos") -> None:
    if not isinstance(videos, torch.Tensor):
        raise ScorerError(f"{what} must be a torch.Tensor (B, F, 3, H, W) in [0, 1]; got {type(videos).__name__}")
    if videos.dim() != 5 or videos.shape[2] != 3:
        hint = ("; it looks like toy-world clips (B, 3, F, H, W): convert them with from_toyworld"
                if videos.dim() == 5 and videos.shape[1] == 3 else "")
        raise ScorerError(f"{what} must be shaped (B, F, 3, H, W); got {tuple(videos.shape)}{hint}")
    if videos.numel() == 0:
        raise ScorerError(f"{what} is empty {tuple(videos.shape)}: pass at least one frame of one video")
    if not videos.is_floating_point():
        raise ScorerError(f"{what} must be floating point in [0, 1]; got {videos.dtype} (divide uint8 by 255)")
    if not bool(torch.isfinite(videos).all()):
        bad = int((~torch.isfinite(videos)).flatten(1).any(1).sum())
        raise ScorerError(f"{what} hold non-finite values in {bad} of {videos.shape[0]} videos; "
                          "a video with NaN or inf cannot be scored")
    if float(videos.min()) < -_RANGE_SLACK or float(videos.max()) > 1 + _RANGE_SLACK:
        raise ScorerError(f"{what} must hold values in [0, 1]; some are outside (a [-1, 1] VAE output: "
                          "map it with (x + 1) / 2, or from_toyworld for toy-world clips)")


def _check_prompts(prompts: Any, count: int) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise ScorerError(f"prompts must be a list of strings, one per video; got {type(prompts).__name__}")
    if len(prompts) != count:
        raise ScorerError(f"got {count} videos but {len(prompts)} prompts: pass one prompt per video")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ScorerError(f"prompt {index} must be a str; got {type(prompt).__name__}")
    return list(prompts)


def _check_references(videos: torch.Tensor, references: Any, name: str) -> None:
    if references is None:
        raise ScorerError(f"scorer {name!r} compares each video with the target's own full run: pass "
                          "references (B, F, 3, H, W), one per video")
    _check_videos(references, "references")
    if references.shape != videos.shape:
        raise ScorerError(f"references {tuple(references.shape)} must have the shape of the videos "
                          f"{tuple(videos.shape)}: one full run per video, same frames and size")


class Scorer:
    """A quality judge: one score per video, higher is better.

    Subclasses set `name` and `needs_reference` and implement `_score`; `score` checks the inputs
    before and the scores after, so no subclass returns NaN or a wrong shape.

    Attributes:
        name: how reports and rules files name the scorer.
        needs_reference: True when `score` needs ``references`` (the target's own full run).
    """

    name: str = "scorer"
    needs_reference: bool = False

    def score(self, videos: torch.Tensor, prompts: Sequence[str],
              references: torch.Tensor | None = None) -> torch.Tensor:
        """Score each video against its prompt (and its reference when `needs_reference`).

        Args:
            videos: float tensor (B, F, 3, H, W) in [0, 1].
            prompts: B prompts, one per video.
            references: (B, F, 3, H, W) in [0, 1], the target's own full runs; read only when
                `needs_reference`.

        Returns:
            A float32 CPU tensor (B,) of finite scores.

        Raises:
            ScorerError: malformed videos, prompts or references, a video the scorer cannot score,
                or a non-finite score.
        """
        _check_videos(videos)
        prompts = _check_prompts(prompts, videos.shape[0])
        if self.needs_reference:
            _check_references(videos, references, self.name)
        with torch.inference_mode():
            scores = self._score(videos, prompts, references)
        scores = torch.as_tensor(scores).detach().to("cpu", torch.float32).reshape(-1)
        if scores.shape[0] != videos.shape[0]:
            raise ScorerError(f"scorer {self.name!r} returned {scores.shape[0]} scores for {videos.shape[0]} videos")
        bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
        if bad:
            raise ScorerError(f"scorer {self.name!r} gave non-finite scores to items {bad[:10]}; "
                              "a video it cannot judge must raise, not score NaN")
        return scores

    def _score(self, videos: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _score")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ToyWorldScorer(Scorer):
    """Prompt adherence as the toy world's pixel reader measures it: 0.0 to 1.0 in steps of 0.2.

    Example:
        >>> from flexcache.toyworld import ClipSpec, render
        >>> spec = ClipSpec("circle", "red", "left", "white", "plain")
        >>> video = from_toyworld(render(spec).unsqueeze(0))
        >>> ToyWorldScorer().score(video, ["a red circle drifting left over a white plain background"])
        tensor([1.])
    """

    name = "toyworld"

    def __init__(self) -> None:
        # Imported here, not at module level: the toy world is an app, loaded only by those who score with it.
        from flexcache.toyworld import adherence, parse_prompt

        self._adherence, self._parse_prompt = adherence, parse_prompt

    def _score(self, videos: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        specs = []
        for index, prompt in enumerate(prompts):
            spec = self._parse_prompt(prompt)
            if spec is None:
                raise ScorerError(f"item {index}: the toy world cannot read the prompt {_shown(prompt)!r}: it must "
                                  "name one shape, colour, direction, background and pattern (as "
                                  "flexcache.toyworld.prompt_for writes them); score other prompts with clip")
            specs.append(spec)
        clips = to_toyworld(videos.cpu())
        return torch.tensor([self._adherence(clip, spec) for clip, spec in zip(clips, specs)])


def _size_field(size: Any, key: str) -> int | None:
    # transformers 4 keeps sizes in dicts, 5 in SizeDicts; old configs hold a bare int (the shortest edge).
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=size, mode="bicubic", align_corners=False, antialias=True)


class ClipScorer(Scorer):
    """Mean over frames of the cosine between CLIP's text embedding of the prompt and each frame's.

    Loads transformers' `CLIPModel`, `CLIPTokenizer` and `CLIPImageProcessor` from a local directory
    (``save_pretrained`` layout) with ``local_files_only=True``: nothing is downloaded. Frames are
    resized and center-cropped to the model's image size and normalized with the processor's mean
    and std, in torch, batched. Prompts longer than CLIP's context (77 tokens for OpenAI's models)
    are truncated: only their first tokens count. Scores are cosines, in [-1, 1].

    Args:
        model_path: local directory of a CLIP checkpoint (e.g. a saved ``openai/clip-vit-large-patch14``).
        device: where the model runs.
        frame_batch_size: frames embedded per forward pass.

    Raises:
        ScorerError: the checkpoint cannot be loaded from `model_path`.
        BackendUnavailableError: transformers is not installed.
    """

    name = "clip"

    def __init__(self, model_path: str | Path, *, device: str | torch.device = "cpu", frame_batch_size: int = 32):
        try:
            from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer
        except ImportError as exc:
            raise BackendUnavailableError("the clip scorer needs transformers: pip install flexcache") from exc
        _check_frame_batch_size(frame_batch_size)
        self.model_path, self.frame_batch_size = Path(model_path), frame_batch_size
        self.device = _check_device(device)
        if not self.model_path.is_dir():
            raise ScorerError(f"no CLIP checkpoint directory at {self.model_path}: pass the local directory "
                              "of a CLIP model saved with save_pretrained (--scorer-model PATH)")
        try:
            model = CLIPModel.from_pretrained(str(self.model_path), local_files_only=True)
            self._tokenizer = CLIPTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
            processor = CLIPImageProcessor.from_pretrained(str(self.model_path), local_files_only=True)
        except Exception as exc:  # any loading failure: missing files, bad config, wrong model type
            raise ScorerError(f"could not load a CLIP model, tokenizer and image processor from {self.model_path}: "
                              f"{type(exc).__name__}: {exc}") from exc
        if self.device.type == "cpu":
            model = model.float()  # half-precision checkpoints are slow or unsupported on CPU
        self._model = model.to(self.device).eval()
        self._max_tokens = min(int(self._tokenizer.model_max_length),
                               int(model.config.text_config.max_position_embeddings))
        self._image_size = int(model.config.vision_config.image_size)
        size = processor.size if getattr(processor, "do_resize", True) else None
        self._shortest_edge = size if isinstance(size, int) else _size_field(size, "shortest_edge")
        self._resize_to = _size_field(size, "height"), _size_field(size, "width")
        crop = processor.crop_size if getattr(processor, "do_center_crop", False) else None
        self._crop_to = _size_field(crop, "height"), _size_field(crop, "width")
        normalize = getattr(processor, "do_normalize", True)
        self._mean = torch.tensor(processor.image_mean if normalize else (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
        self._std = torch.tensor(processor.image_std if normalize else (1.0, 1.0, 1.0)).view(1, 3, 1, 1)

    def _pixels(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, H, W) in [0, 1] as CLIP pixel values, as the checkpoint's processor prepares them."""
        height, width = frames.shape[-2:]
        target = (height, width)
        if self._shortest_edge:  # the shorter side to shortest_edge, aspect kept (the processor's rule)
            edge, scale = self._shortest_edge, self._shortest_edge / min(height, width)
            target = (edge, int(width * scale)) if height <= width else (int(height * scale), edge)
        elif all(self._resize_to):
            target = self._resize_to
        frames = _resize(frames, target)
        crop_height, crop_width = self._crop_to
        if crop_height and crop_width and target[0] >= crop_height and target[1] >= crop_width:
            top, left = (target[0] - crop_height) // 2, (target[1] - crop_width) // 2
            frames = frames[..., top:top + crop_height, left:left + crop_width]
        frames = _resize(frames, (self._image_size,) * 2)  # the vision tower takes no other size
        frames = frames.clamp(0, 1)  # bicubic overshoots; the processor's uint8 round trip clips too
        return (frames - self._mean.to(frames.device)) / self._std.to(frames.device)

    @staticmethod
    def _embedding(output: Any) -> torch.Tensor:
        # transformers 4 returns the projected features; 5 returns an output whose pooler_output holds them.
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def _score(self, videos: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        dtype = next(self._model.parameters()).dtype
        tokens = self._tokenizer(prompts, padding=True, truncation=True, max_length=self._max_tokens,
                                 return_tensors="pt")
        text = self._embedding(self._model.get_text_features(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)))
        text = F.normalize(text.float(), dim=-1)
        batch, frame_count = videos.shape[:2]
        frames = videos.reshape(batch * frame_count, *videos.shape[2:])
        image = []
        for start in range(0, frames.shape[0], self.frame_batch_size):
            pixels = self._pixels(frames[start:start + self.frame_batch_size].to(self.device, torch.float32))
            features = self._embedding(self._model.get_image_features(pixel_values=pixels.to(dtype)))
            image.append(F.normalize(features.float(), dim=-1))
        image = torch.cat(image).reshape(batch, frame_count, -1)
        return (image * text[:, None, :]).sum(-1).mean(1).clamp(-1, 1).cpu()


def _torchmetrics() -> tuple[Callable, Callable]:
    try:
        from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
    except ImportError as exc:
        raise BackendUnavailableError("the reference scorer needs torchmetrics: pip install flexcache[quality]") from exc
    return structural_similarity_index_measure, peak_signal_noise_ratio


class ReferenceScorer(Scorer):
    """SSIM of each video against the target's own full run, averaged over frames (1.0: identical).

    SSIM and PSNR come from torchmetrics (``pip install flexcache[quality]``), frame by frame with
    data range 1 and SSIM's Gaussian window (sigma 1.5, 11 pixels): frames need both sides >= 11.

    Args:
        device: where the metrics are computed.
        frame_batch_size: frames compared per call, to bound memory on long videos.

    Example:
        >>> video = torch.rand(1, 2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> scorer = ReferenceScorer()
        >>> scorer.score(video, ["any"], references=video)
        tensor([1.])
        >>> scorer.metrics(video, video)["psnr"]  # identical: capped at PSNR_CAP_DB
        tensor([100.])
    """

    name = "reference"
    needs_reference = True

    def __init__(self, *, device: str | torch.device = "cpu", frame_batch_size: int = 16):
        _check_frame_batch_size(frame_batch_size)
        self._ssim, self._psnr = _torchmetrics()
        self.device = _check_device(device)
        self.frame_batch_size = frame_batch_size

    def metrics(self, videos: torch.Tensor, references: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per video, the frame-averaged SSIM and PSNR against its reference.

        Args:
            videos: float tensor (B, F, 3, H, W) in [0, 1].
            references: the target's own full runs, same shape.

        Returns:
            ``{"ssim": (B,), "psnr": (B,)}``, float32 on CPU. PSNR is in dB, each frame's capped at
            `PSNR_CAP_DB` (identical frames have infinite PSNR).

        Raises:
            ScorerError: malformed videos or references, or frames smaller than SSIM's window.
        """
        _check_videos(videos)
        _check_references(videos, references, self.name)
        if min(videos.shape[-2:]) < SSIM_MIN_SIDE:
            raise ScorerError(f"frames of {videos.shape[-2]}x{videos.shape[-1]} are smaller than SSIM's "
                              f"{SSIM_MIN_SIDE}-pixel window: score such videos with another scorer")
        frames, targets = videos.flatten(0, 1), references.flatten(0, 1)  # every frame of every video
        ssim, psnr = [], []
        with torch.inference_mode():
            for start in range(0, frames.shape[0], self.frame_batch_size):
                preds = frames[start:start + self.frame_batch_size].to(self.device, torch.float32)
                target = targets[start:start + self.frame_batch_size].to(self.device, torch.float32)
                ssim.append(self._ssim(preds, target, data_range=1.0, gaussian_kernel=True, sigma=SSIM_SIGMA,
                                       reduction="none").cpu())
                psnr.append(self._psnr(preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3)).cpu())
        shape = videos.shape[:2]
        return {"ssim": torch.cat(ssim).float().reshape(shape).mean(1),
                "psnr": torch.cat(psnr).float().clamp(max=PSNR_CAP_DB).reshape(shape).mean(1)}

    def _score(self, videos: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        return self.metrics(videos, references)["ssim"]


def _as_score(value: Any, name: str, index: int) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ScorerError(f"scorer {name!r} returned a tensor of shape {tuple(value.shape)} for item {index}; "
                              "it must return one number")
        value = value.item()
    elif getattr(value, "shape", None) == () and hasattr(value, "item"):  # numpy scalars and 0-d arrays
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise ScorerError(f"scorer {name!r} returned {type(value).__name__} for item {index}; it must return a number")
    if not math.isfinite(float(value)):
        raise ScorerError(f"scorer {name!r} returned {float(value)} for item {index}; scores must be finite "
                          "(raise for a video it cannot judge)")
    return float(value)


class CallableScorer(Scorer):
    """Wraps ``fn(video (F, 3, H, W) in [0, 1], prompt) -> float`` as a Scorer named after `fn`.

    Example:
        >>> def brightness(video, prompt):
        ...     return float(video.mean())
        >>> scorer = CallableScorer(brightness)
        >>> scorer.name, scorer.score(torch.ones(2, 1, 3, 4, 4), ["a", "b"])
        ('brightness', tensor([1., 1.]))
    """

    def __init__(self, fn: Callable[[torch.Tensor, str], float], name: str | None = None):
        if not callable(fn):
            raise ConfigError(f"a scorer callable must be callable; got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", None) or type(fn).__name__

    def _score(self, videos: torch.Tensor, prompts: list[str], references: torch.Tensor | None) -> torch.Tensor:
        scores = []
        for index, (video, prompt) in enumerate(zip(videos, prompts)):
            try:
                value = self.fn(video, prompt)
            except Exception as exc:  # a user's scorer: whatever it raises is reported with the item it failed on
                raise ScorerError(f"scorer {self.name!r} failed on item {index} (prompt {_shown(prompt)!r}): "
                                  f"{type(exc).__name__}: {exc}") from exc
            scores.append(_as_score(value, self.name, index))
        return torch.tensor(scores, dtype=torch.float64)


def build_scorer(spec: str | Scorer | Callable[[torch.Tensor, str], float], *,
                 model_path: str | Path | None = None, device: str | torch.device = "cpu") -> Scorer:
    """The scorer `spec` names.

    Args:
        spec: one of `SCORERS`, a `Scorer` (returned as is), or a callable
            ``(video (F, 3, H, W) in [0, 1], prompt) -> float``.
        model_path: local CLIP checkpoint directory; required by ``"clip"``, refused by the others.
        device: where the clip and reference scorers compute.

    Returns:
        A `Scorer`.

    Raises:
        ConfigError: an unknown name, ``"clip"`` without `model_path`, or `model_path` for another scorer.
        InvalidDeviceError: a device this machine does not have.
        ScorerError: the CLIP checkpoint cannot be loaded.
        BackendUnavailableError: the scorer's library is not installed.

    Example:
        >>> build_scorer("toyworld").name
        'toyworld'
        >>> try:
        ...     build_scorer("vbench")
        ... except ConfigError as exc:
        ...     print(exc)
        unknown scorer 'vbench'; choose one of toyworld, clip, reference, or pass a Scorer or a callable (video, prompt) -> float
    """
    _check_device(device)
    name = spec.strip().lower() if isinstance(spec, str) else None
    if model_path is not None and name != "clip":
        raise ConfigError(f"model_path (--scorer-model) is read by the clip scorer only, not by {spec!r}: drop it "
                          "or use --scorer clip")
    if isinstance(spec, Scorer):
        return spec
    if name is not None:
        if name == "toyworld":
            return ToyWorldScorer()
        if name == "reference":
            return ReferenceScorer(device=device)
        if name == "clip":
            if model_path is None:
                raise ConfigError("the clip scorer needs a local CLIP checkpoint: pass model_path "
                                  "(--scorer-model PATH), a directory saved with save_pretrained")
            return ClipScorer(model_path, device=device)
        raise ConfigError(f"unknown scorer {spec!r}; choose one of {', '.join(SCORERS)}, "
                          "or pass a Scorer or a callable (video, prompt) -> float")
    if callable(spec):
        return CallableScorer(spec)
    raise ConfigError(f"a scorer must be one of {', '.join(SCORERS)}, a Scorer or a callable "
                      f"(video, prompt) -> float; got {type(spec).__name__}")


__all__ = ["PSNR_CAP_DB", "SCORERS", "CallableScorer", "ClipScorer", "ReferenceScorer", "Scorer", "ToyWorldScorer",
           "build_scorer", "from_toyworld", "to_toyworld"]
