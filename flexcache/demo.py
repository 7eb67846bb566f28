"""The `flexcache demo` workload: a toy-world prompt stream through a cached pipeline.

The pipeline is the trained toy-world model (`flexcache.toyworld`, shipped
weights, no downloads), so the demo shows both what the cache saves and what
it costs in quality: every request is also generated without the cache (same
seed, full steps) and both clips are judged by the toy world's attribute reader.
"""

from __future__ import annotations

import platform
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from flexcache.core import CacheConfig
from flexcache.toyworld.cases import CASES, Request, related_request, request_for
from flexcache.toyworld.world import all_specs

NEW_SHARE = 0.35  # share of requests after the first few that start a new topic


@dataclass(frozen=True)
class DemoRequest:
    prompt: str
    spec: Any  # ClipSpec
    relation: str  # "new" or one of `toyworld.cases.CASES`, relative to an earlier request


def demo_stream(count: int = 36, seed: int = 0) -> list[DemoRequest]:
    """A deterministic stream: new prompts mixed with repeats, paraphrases and part edits of earlier ones."""
    rng = random.Random(seed)
    specs = all_specs()
    seen: list[Request] = []
    stream: list[DemoRequest] = []
    for index in range(count):
        if index < 6 or rng.random() < NEW_SHARE:
            request = request_for(rng.choice(specs), rng)
            relation = "new"
        else:
            relation = rng.choice(CASES)
            request = related_request(rng.choice(seen), relation, rng)
        seen.append(request)
        stream.append(DemoRequest(request.prompt, request.spec, relation))
    return stream


def demo_prompts(count: int = 36, seed: int = 0) -> list[str]:
    return [request.prompt for request in demo_stream(count, seed)]


@dataclass
class DemoRow:
    index: int
    prompt: str
    relation: str
    hit: bool
    similarity: float | None
    skip_steps: int
    num_steps: int
    seconds: float
    source_prompt: str | None
    via_parts: bool  # decoupled: the object/background look-up gave this hit (or its depth)
    adherence: float  # of the clip the cache served
    adherence_uncached: float  # of the full-step clip from the same seed, without the cache


def run_demo(*, requests: int = 36, steps: int = 20, guidance: float = 3.0, seed: int = 0,
             config: CacheConfig | None = None, progress: bool = True, on_row=None,
             weights=None) -> tuple[dict[str, Any], torch.Tensor]:
    """Serve the demo stream; returns the JSON-ready summary and the served clips (N, 3, F, H, W)."""
    from tqdm.auto import tqdm

    from flexcache.engine import FlexCache
    from flexcache.integrations.diffusers import enable_flexcache, last_call_report
    from flexcache.toyworld.model import (
        MODEL_ID,
        WEIGHTS,
        PromptEncoder,
        initial_noise,
        pipeline_kwargs,
        toyworld_pipeline,
    )
    from flexcache.toyworld.reader import adherence

    config = config or CacheConfig.load()
    cache = FlexCache(config)
    cache.embedder.embed(["warm-up"])  # load the embedder before timing requests
    encoder = PromptEncoder()
    pipe = toyworld_pipeline(weights or WEIGHTS)
    pipe.set_progress_bar_config(disable=True)
    enable_flexcache(pipe, cache, model_id=MODEL_ID)
    rows: list[DemoRow] = []
    served: list[torch.Tensor] = []
    stream = demo_stream(requests, seed)
    cached_seconds = 0.0
    started = time.perf_counter()
    for index, request in enumerate(tqdm(stream, desc="requests", unit="req", disable=not progress)):
        run_seed = seed * 100_003 + index
        kwargs = pipeline_kwargs(encoder([request.prompt]), steps=steps, guidance=guidance)
        with torch.inference_mode():
            # The demo seeds runs to be repeatable; its users did not choose the seeds: any entry may serve.
            clip = pipe(prompt=request.prompt, negative_prompt="", generator=torch.Generator().manual_seed(run_seed),
                        flexcache_any_seed=True,
                        **kwargs).frames[0].clamp(-1, 1)
            report = last_call_report(pipe)
            # The same request from the same seed without the cache: the quality baseline.
            uncached = pipe(latents=initial_noise([run_seed]), flexcache_enabled=False,
                            **kwargs).frames[0].clamp(-1, 1)
        cached_seconds += report.seconds
        row = DemoRow(index, request.prompt, request.relation, report.hit, report.similarity, report.skip_steps,
                      steps, report.seconds, report.source_prompt, report.via_parts, adherence(clip, request.spec),
                      adherence(uncached, request.spec))
        rows.append(row)
        served.append(clip)
        if on_row is not None:
            on_row(row)
    stats = cache.stats()
    cache.close()
    summary = {
        "requests": stats["requests"],
        "hits": stats["hits"],
        "hit_rate": stats["hit_rate"],
        "lookup": stats["lookup"],
        "decoupled_hits": stats["decoupled_hits"],
        "steps_total": stats["steps_total"],
        "steps_saved": stats["steps_saved"],
        "adherence": sum(r.adherence for r in rows) / len(rows),
        "adherence_uncached": sum(r.adherence_uncached for r in rows) / len(rows),
        "bytes_stored": stats["bytes_stored"],
        "entries": stats["entries"],
        "records": stats["records"],
        "evictions": stats["evictions"],
        "cached_seconds": cached_seconds,
        "wall_seconds": time.perf_counter() - started,
        "model": f"{MODEL_ID}: toy-world WanPipeline on 3x8x16x16 pixel clips",
        "generation": {"steps": steps, "guidance": guidance, "seed": seed},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available()},
        "config": config.to_dict(),
        "rows": [asdict(row) for row in rows],
    }
    return summary, torch.stack(served)


# -- the artefacts written next to the JSON summary ------------------------------------


def write_grid_gif(path: Path, clips: torch.Tensor, rows: list[dict], *, columns: int = 6, scale: int = 4) -> None:
    """An animated grid of the served clips, hits framed in green with their K, misses in gray."""
    from PIL import Image, ImageDraw

    count, _, frames, height, width = clips.shape
    cell_w, cell_h, label_h, border = width * scale + 8, height * scale + 8, 12, 2
    grid_rows = -(-count // columns)
    pixels = ((clips.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    images = []
    for t in range(frames):
        canvas = Image.new("RGB", (columns * cell_w, grid_rows * (cell_h + label_h)), (255, 255, 255))
        draw = ImageDraw.Draw(canvas)
        for i in range(count):
            x, y = (i % columns) * cell_w, (i // columns) * (cell_h + label_h)
            row = rows[i]
            colour = (30, 170, 60) if row["hit"] else (150, 150, 150)
            draw.rectangle([x + 2, y + 2, x + cell_w - 3, y + cell_h - 3], fill=colour)
            frame = Image.fromarray(pixels[i, :, t].permute(1, 2, 0).numpy()).resize(
                (width * scale, height * scale), Image.NEAREST)
            canvas.paste(frame, (x + 2 + border, y + 2 + border))
            label = f"#{i} K={row['skip_steps']}" if row["hit"] else f"#{i} miss"
            draw.text((x + 4, y + cell_h), label, fill=(0, 0, 0))
        images.append(canvas)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=160, loop=0)


def format_report(summary: dict[str, Any]) -> str:
    steps_total = max(1, summary["steps_total"])
    lines = [
        "# FlexCache demo report",
        "",
        f"Model: {summary['model']}; {summary['generation']['steps']} steps, guidance "
        f"{summary['generation']['guidance']:g}.",
        "",
        "| look-up | requests | hits | decoupled | hit rate | steps saved | adherence (cache) | adherence (no cache) "
        "| stored |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {summary['lookup']} | {summary['requests']} | {summary['hits']} | {summary['decoupled_hits']} | "
        f"{summary['hit_rate']:.0%} | "
        f"{summary['steps_saved']}/{summary['steps_total']} ({summary['steps_saved'] / steps_total:.0%}) | "
        f"{summary['adherence']:.3f} | {summary['adherence_uncached']:.3f} | "
        f"{summary['bytes_stored'] / 1024:.1f} KiB in {summary['entries']} entries |",
        "",
        "Adherence: the fraction of the five requested attributes (shape, colour, direction, background"
        " colour, pattern) the pixel reader finds. 'No cache' is the same request and seed at full steps."
        " 'Decoupled': hits whose K came from the object/background look-up (more than the full prompt allowed).",
        "",
        "| # | prompt | relation | result | sim | K/N | via | adherence | no cache |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        sim = "-" if row["similarity"] is None else f"{row['similarity']:.2f}"
        lines.append(f"| {row['index']} | {row['prompt']} | {row['relation']} | {'hit' if row['hit'] else 'miss'} | "
                     f"{sim} | {row['skip_steps']}/{row['num_steps']} | "
                     f"{'parts' if row['via_parts'] else ('full' if row['hit'] else '-')} | {row['adherence']:.1f} | "
                     f"{row['adherence_uncached']:.1f} |")
    return "\n".join(lines) + "\n"
