"""The one table of pipeline adapters: `enable_flexcache` serves exactly these classes."""

from __future__ import annotations

from typing import Any

from flexcache.core.errors import UnsupportedPipelineError
from flexcache.integrations.adapters import (
    AllegroAdapter,
    CogVideoXAdapter,
    HunyuanVideo15Adapter,
    HunyuanVideoAdapter,
    Kandinsky5Adapter,
    LTXAdapter,
    MochiAdapter,
    PipelineAdapter,
    SkyReelsV2Adapter,
    WanAdapter,
)
from flexcache.integrations.image_adapters import (
    CogVideoXImageToVideoAdapter,
    LTXImageToVideoAdapter,
    WanImageToVideoAdapter,
)
from flexcache.integrations.ltx2_adapter import LTX2Adapter

ADAPTERS: dict[str, PipelineAdapter] = {
    adapter.pipeline_class_name: adapter
    for adapter in (WanAdapter(), WanImageToVideoAdapter(), CogVideoXAdapter(), CogVideoXImageToVideoAdapter(),
                    LTXAdapter(), LTXImageToVideoAdapter(), LTX2Adapter(), HunyuanVideoAdapter(), HunyuanVideo15Adapter(),
                    MochiAdapter(), SkyReelsV2Adapter(), AllegroAdapter(), Kandinsky5Adapter())
}

PLANNED_PIPELINES = ("LTX2ImageToVideoPipeline", "LTX2ConditionPipeline", "HunyuanVideo15ImageToVideoPipeline",
                     "SkyReelsV2DiffusionForcingPipeline", "SkyReelsV2ImageToVideoPipeline")


def adapter_for(pipe: Any) -> PipelineAdapter:
    """The adapter of `pipe`'s class, searched along its MRO (a subclass of a served pipeline is served)."""
    for cls in type(pipe).__mro__:
        if cls.__name__ in ADAPTERS:
            return ADAPTERS[cls.__name__]
    raise UnsupportedPipelineError(
        f"FlexCache has no adapter for {type(pipe).__name__}; supported pipelines: "
        f"{', '.join(sorted(ADAPTERS))} (planned: {', '.join(PLANNED_PIPELINES)}). Without the cache, call the "
        "pipeline as it is; to cache it, an adapter in flexcache.integrations.adapter_table.ADAPTERS names its latent"
    )
