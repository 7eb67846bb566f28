"""A picture of region hits on the toy world: cached source, its object mask, the region hit's result.

    python bench/engine/region_picture.py docs/region-hits.png

Each row is one request served by `enable_flexcache` from a cache holding one
earlier request: the source's clip (frame 0 and frame 7), the object mask the
source's run recorded at the hit's step (the model's cross-attention; white is
object), the region that was regenerated, and the hit's clip. Rows: two
same-background hits (the object regenerated) and two same-object hits (the
background regenerated).
"""

from __future__ import annotations

import random
import sys

import torch
from PIL import Image, ImageDraw

from flexcache import FlexCache, enable_flexcache, last_call_report
from flexcache.engine import decode_mask, object_cells
from flexcache.toyworld.cases import related_request, request_for
from flexcache.toyworld.model import PromptEncoder, pipeline_kwargs, toyworld_pipeline
from flexcache.toyworld.world import held_out_specs

SCALE = 6


def frame_image(clip: torch.Tensor, t: int) -> Image.Image:
    pixels = ((clip[:, t].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels).resize((16 * SCALE, 16 * SCALE), Image.NEAREST)


def grid_image(grid: torch.Tensor) -> Image.Image:
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, mode="L").resize((16 * SCALE, 16 * SCALE), Image.NEAREST).convert("RGB")


def main(path: str) -> None:
    torch.set_num_threads(2)
    pipe = toyworld_pipeline()
    pipe.set_progress_bar_config(disable=True)
    encoder = PromptEncoder()
    rng = random.Random(11)
    rows = []
    for case in ("same-background", "same-background", "same-object", "same-object"):
        for _ in range(20):  # a pair the default rules serve as a region hit
            cache = FlexCache()
            enable_flexcache(pipe, cache, model_id="toyworld")
            target = request_for(rng.choice(held_out_specs()), rng)
            source = related_request(target, case, rng)
            source_clip = pipe(prompt=source.prompt, generator=torch.Generator().manual_seed(rng.randrange(10**6)),
                               **pipeline_kwargs(encoder([source.prompt]))).frames[0]
            # What the pipeline call below will be served (the pipeline runs region hits; its seed only repeats it).
            plan = cache.plan(target.prompt, next(iter(cache._records.values())).signature, regions=True)
            if not (plan.hit and plan.region):
                cache.close()
                continue
            entry = cache._records[plan.source_record].entries[plan.skip_steps]
            mask = decode_mask(entry.mask)
            cells = object_cells(mask, threshold=cache.config.planner.region_threshold,
                                 dilation=cache.config.planner.region_dilation).float()
            region = cells if plan.region == "object" else 1 - cells
            out = pipe(prompt=target.prompt, generator=torch.Generator().manual_seed(rng.randrange(10**6)),
                       flexcache_any_seed=True, **pipeline_kwargs(encoder([target.prompt]))).frames[0]
            report = last_call_report(pipe)
            rows.append((source, target, source_clip, mask[0], region[0], out, report))
            cache.close()
            break
    width, height = 6 * (16 * SCALE + 8) + 8, len(rows) * (16 * SCALE + 40) + 8
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (source, target, source_clip, mask, region, out, report) in enumerate(rows):
        y = 8 + r * (16 * SCALE + 40)
        draw.text((8, y), f"cached: {source.prompt}", fill="black")
        draw.text((8, y + 12), f"request: {target.prompt}  (K={report.skip_steps}, {report.region} regenerated)",
                  fill="black")
        tiles = [frame_image(source_clip, 0), frame_image(source_clip, 7), grid_image(mask), grid_image(region),
                 frame_image(out, 0), frame_image(out, 7)]
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (8 + c * (16 * SCALE + 8), y + 30))
    sheet.save(path)
    print(f"wrote {path}: {len(rows)} region hits (columns: source t=0, t=7, mask, regenerated region, result t=0, t=7)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/region-hits.png")
