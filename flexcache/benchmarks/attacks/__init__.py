"""`flexcache bench attacks`: attacks on a shared approximate cache (arXiv 2508.20424 and stronger ones).

`bench` runs them under each defence; `timing_attacks` holds the attackers
that read how long requests take, `output_attacks` those that read the videos
too, hold sybils, or poison with honest text; `services` the engine-API and
pipeline-call services they run against; `scoring` the success rates' bounds.
"""

from flexcache.benchmarks.attacks.bench import (
    ATTACKS,
    DEFENCES,
    OUTPUT_ATTACKS,
    PIPELINE_DEFENCES,
    SIZES,
    TIMING_ATTACKS,
    defence_throughput_cost,
    format_attacks_table,
    run_attack,
    run_attacks_bench,
)
from flexcache.benchmarks.attacks.output_attacks import (
    covert_channel_output,
    prompt_stealing_output,
    sybil_count,
    text_poisoning,
)
from flexcache.benchmarks.attacks.scoring import channel_row, lower_bound, upper_bound
from flexcache.benchmarks.attacks.services import (
    UNDEFENDED,
    EngineService,
    PipelineService,
    Request,
    Shadow,
    World,
)
from flexcache.benchmarks.attacks.timing_attacks import (
    covert_channel,
    poisoning,
    prompt_stealing,
)

__all__ = [
    "ATTACKS", "DEFENCES", "OUTPUT_ATTACKS", "PIPELINE_DEFENCES", "SIZES", "TIMING_ATTACKS", "UNDEFENDED",
    "EngineService", "PipelineService", "Request", "Shadow", "World", "channel_row", "covert_channel",
    "covert_channel_output", "defence_throughput_cost", "format_attacks_table", "lower_bound", "poisoning",
    "prompt_stealing", "prompt_stealing_output", "run_attack", "run_attacks_bench", "sybil_count",
    "text_poisoning", "upper_bound",
]
