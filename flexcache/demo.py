"""The `flexcache demo` workload: a prompt stream through a cached tiny Wan pipeline.

The pipeline has random weights (no downloads), so the demo shows the cache's
behaviour (hits, skipped steps, bytes stored), not video quality. The
toy-world model replaces it once that lands.
"""

from __future__ import annotations

import platform
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from flexcache.config import CacheConfig

# Subjects x settings, plus paraphrases, so the stream has exact repeats,
# near-duplicates and unrelated prompts, as real prompt logs do.
BASE_PROMPTS = [
    "a golden retriever chasing a frisbee in a sunlit park",
    "a red sports car driving along a coastal highway at sunset",
    "an astronaut floating inside a space station, earth in the window",
    "a chef flipping pancakes in a busy restaurant kitchen",
    "a paper boat drifting down a rain-soaked city street",
    "a hummingbird hovering over bright pink flowers",
    "waves crashing against a lighthouse during a storm",
    "a time-lapse of clouds rolling over snowy mountains",
    "a cat knocking a glass off a kitchen table in slow motion",
    "a street musician playing violin under neon lights at night",
    "a hot air balloon rising over a desert canyon at dawn",
    "a child building a sandcastle on a tropical beach",
    "a steam train crossing a stone bridge in autumn",
    "a jellyfish pulsing through dark blue water",
    "a skateboarder doing a kickflip in an empty parking lot",
    "fireworks bursting over a harbour at midnight",
]
NEAR_DUPLICATES = [
    "a golden retriever chases a frisbee in a sunny park",
    "a red sports car cruising along a coastal highway at sunset",
    "an astronaut floating in a space station with the earth in the window",
    "a chef flipping pancakes in a busy kitchen of a restaurant",
    "a small paper boat drifting down a rainy city street",
    "waves crash against a lighthouse in a storm",
    "a cat knocks a glass off the kitchen table, slow motion",
    "a street violinist playing under neon lights at night",
    "a hot-air balloon rising over a desert canyon at sunrise",
    "fireworks exploding over a harbour at midnight",
]


def demo_prompts(count: int = 36, seed: int = 0) -> list[str]:
    """A deterministic stream: each base prompt once, then paraphrases and repeats."""
    rng = random.Random(seed)
    stream = list(BASE_PROMPTS)
    rng.shuffle(stream)
    extra = NEAR_DUPLICATES + rng.sample(BASE_PROMPTS, k=min(10, len(BASE_PROMPTS)))
    rng.shuffle(extra)
    stream += extra
    while len(stream) < count:
        stream.append(rng.choice(BASE_PROMPTS + NEAR_DUPLICATES))
    return stream[:count]


@dataclass
class DemoRow:
    index: int
    prompt: str
    hit: bool
    similarity: float | None
    skip_steps: int
    num_steps: int
    seconds: float
    source_prompt: str | None


def run_demo(*, requests: int = 36, steps: int = 20, height: int = 64, width: int = 64, frames: int = 9,
             seed: int = 0, config: CacheConfig | None = None, progress: bool = True,
             on_row=None) -> dict[str, Any]:
    """Serve the demo prompt stream; returns the JSON-ready summary."""
    from tqdm.auto import tqdm

    from flexcache.engine.cache import FlexCache
    from flexcache.integrations.diffusers import enable_flexcache, last_call_report
    from flexcache.integrations.tiny import tiny_prompt_embeds, tiny_wan_pipeline

    config = config or CacheConfig.load()
    cache = FlexCache(config)
    cache.embedder.embed(["warm-up"])  # load the embedder before timing requests
    pipe = tiny_wan_pipeline(seed=seed)
    pipe.set_progress_bar_config(disable=True)
    enable_flexcache(pipe, cache, model_id="flexcache/tiny-wan-random")
    rows: list[DemoRow] = []
    prompts = demo_prompts(requests, seed)
    started = time.perf_counter()
    for index, prompt in enumerate(tqdm(prompts, desc="requests", unit="req", disable=not progress)):
        pipe(prompt=prompt, prompt_embeds=tiny_prompt_embeds(prompt), height=height, width=width,
             num_frames=frames, num_inference_steps=steps, guidance_scale=1.0, output_type="latent",
             generator=torch.Generator().manual_seed(seed * 100_003 + index))
        report = last_call_report(pipe)
        row = DemoRow(index, prompt, report.hit, report.similarity, report.skip_steps, steps,
                      report.seconds, report.source_prompt)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    stats = cache.stats()
    return {
        "requests": stats["requests"],
        "hits": stats["hits"],
        "hit_rate": stats["hit_rate"],
        "steps_total": stats["steps_total"],
        "steps_saved": stats["steps_saved"],
        "bytes_stored": stats["bytes_stored"],
        "entries": stats["entries"],
        "records": stats["records"],
        "evictions": stats["evictions"],
        "wall_seconds": time.perf_counter() - started,
        "model": "tiny random-weight WanPipeline (no text encoder, no VAE)",
        "generation": {"steps": steps, "height": height, "width": width, "frames": frames},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "cuda": torch.cuda.is_available()},
        "config": config.to_dict(),
        "rows": [asdict(row) for row in rows],
    }
