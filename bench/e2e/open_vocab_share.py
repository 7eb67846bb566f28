"""Measure the open-vocabulary workload's near-duplicate share with the cache's default embedder.

What `SHARE_CALIBRATION` in flexcache/benchmarks/serve/open_vocab.py comes from, and how to check it:

    .venv/bin/python bench/e2e/open_vocab_share.py --edit-closeness 0 0.5 1 --seeds 0 1
    .venv/bin/python bench/e2e/open_vocab_share.py --near-duplicate-share 0.2 0.38 0.59

Each point generates one trace (3,000 requests by default) and embeds its unique prompts on the CPU
(about 50 s per point on 2 cores); one line of JSON per point.
"""

from __future__ import annotations

import argparse
import json
import time

from flexcache.benchmarks.serve.open_vocab import OpenVocabularyWorkload, generate_open_vocabulary_trace
from flexcache.benchmarks.serve.workload import near_duplicate_share
from flexcache.core import EmbedderConfig
from flexcache.engine import build_embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    knob = parser.add_mutually_exclusive_group(required=True)
    knob.add_argument("--edit-closeness", type=float, nargs="+", help="the generator's internal mix (tuning)")
    knob.add_argument("--near-duplicate-share", type=float, nargs="+", help="the workload's knob (checking)")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    embedder = build_embedder(EmbedderConfig(device="cpu"))
    for value in args.edit_closeness or args.near_duplicate_share:
        for seed in args.seeds:
            started = time.perf_counter()
            if args.edit_closeness:
                spec = OpenVocabularyWorkload(requests=args.requests, seed=seed)
                trace = generate_open_vocabulary_trace(spec, edit_closeness=value)
            else:
                spec = OpenVocabularyWorkload(requests=args.requests, seed=seed, near_duplicate_share=value)
                trace = generate_open_vocabulary_trace(spec)
            prompts = [request.prompt for request in trace]
            share = near_duplicate_share(prompts, embedder)
            print(json.dumps({"edit_closeness" if args.edit_closeness else "near_duplicate_share": value,
                              "seed": seed, "requests": len(trace), "unique_prompts": len(set(prompts)),
                              "measured_near_duplicate_share": round(share, 4),
                              "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
