"""The `flexcache` command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from flexcache import __version__
from flexcache.config import CacheConfig
from flexcache.errors import FlexCacheError


def _config(args: argparse.Namespace) -> CacheConfig:
    config = CacheConfig.load(args.config)
    overrides = config.to_dict()
    if getattr(args, "policy", None):
        overrides["policy"] = args.policy
    if getattr(args, "capacity", None):
        overrides["store"]["capacity_bytes"] = args.capacity
    return CacheConfig.from_dict(overrides)


def _write_json(path: str | None, data: dict, label: str) -> None:
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2) + "\n")
        print(f"{label} written to {target}")


def _demo(args: argparse.Namespace) -> int:
    from flexcache.demo import run_demo

    if args.requests < 1 or args.steps < 2:
        raise FlexCacheError("--requests must be >= 1 and --steps >= 2")
    header = f"{'#':>3}  {'prompt':<58} {'result':<6} {'sim':>5} {'K/N':>7} {'ms':>7}"
    lines = [header, "-" * len(header)]

    def on_row(row) -> None:
        sim = "-" if row.similarity is None else f"{row.similarity:.2f}"
        prompt = row.prompt if len(row.prompt) <= 58 else row.prompt[:55] + "..."
        result = "hit" if row.hit else "miss"
        lines.append(f"{row.index:>3}  {prompt:<58} {result:<6} {sim:>5} "
                     f"{f'{row.skip_steps}/{row.num_steps}':>7} {row.seconds * 1000:>7.1f}")

    summary = run_demo(requests=args.requests, steps=args.steps, height=args.height, width=args.width,
                       frames=args.frames, seed=args.seed, config=_config(args),
                       progress=not args.no_progress, on_row=on_row)
    print("\n".join(lines))
    print(
        f"\n{summary['requests']} requests, {summary['hits']} hits (hit rate {summary['hit_rate']:.0%}), "
        f"{summary['steps_saved']} of {summary['steps_total']} denoising steps skipped "
        f"({summary['steps_saved'] / max(1, summary['steps_total']):.0%}); "
        f"{summary['entries']} entries, {summary['bytes_stored'] / 2**20:.2f} MiB stored"
    )
    _write_json(args.json, summary, "summary")
    return 0


def _bench_codec(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.codec_bench import format_table, run_codec_bench

    try:
        shape = tuple(int(v) for v in args.shape.split(","))
    except ValueError:
        raise FlexCacheError(f"--shape takes C,T,H,W integers such as 16,21,60,104; got {args.shape!r}") from None
    if len(shape) != 4 or min(shape) < 1 or args.steps < 2:
        raise FlexCacheError("--shape needs four positive sizes (C,T,H,W) and --steps must be >= 2")
    result = run_codec_bench(shape=shape, num_steps=args.steps, seed=args.seed, config=_config(args).codec,
                             include_wan=not args.no_wan,
                             progress=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_table(result))
    _write_json(args.json, result, "results")
    return 0


def _bench_store(args: argparse.Namespace) -> int:
    from flexcache.benchmarks.store_bench import format_store_table, run_store_bench

    try:
        sizes = tuple(int(v) for v in args.sizes_mb.split(","))
    except ValueError:
        raise FlexCacheError(f"--sizes-mb takes integers such as 1,8,32; got {args.sizes_mb!r}") from None
    if not sizes or min(sizes) < 1 or args.repeats < 1:
        raise FlexCacheError("--sizes-mb needs positive sizes and --repeats must be >= 1")
    result = run_store_bench(sizes_mb=sizes, repeats=args.repeats, disk_path=args.disk_path,
                             redis_url=args.redis_url)
    print(format_store_table(result))
    _write_json(args.json, result, "results")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    sys.stdout.write(_config(args).to_yaml())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flexcache", description="Approximate latent cache for video diffusion.")
    parser.add_argument("--version", action="version", version=f"flexcache {__version__}")
    parser.add_argument("--config", help="YAML config file (default: $FLEXCACHE_CONFIG, then built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="serve a prompt stream through a cached tiny Wan pipeline")
    demo.add_argument("--json", metavar="PATH", help="write the summary as JSON here")
    demo.add_argument("--requests", type=int, default=36, help="prompts to serve (default 36)")
    demo.add_argument("--steps", type=int, default=20, help="denoising steps per request (default 20)")
    demo.add_argument("--height", type=int, default=64)
    demo.add_argument("--width", type=int, default=64)
    demo.add_argument("--frames", type=int, default=9)
    demo.add_argument("--seed", type=int, default=0, help="seed of the prompt order and the noise")
    demo.add_argument("--policy", choices=["lru", "lcbfu"], help="replacement policy (overrides config)")
    demo.add_argument("--capacity", help="store capacity, e.g. 64MiB (overrides config)")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(run=_demo)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench", required=True)
    codec = bench.add_parser("codec", help="compression ratio, error and speed of the latent codec")
    codec.add_argument("--json", metavar="PATH", help="write the full results as JSON here")
    codec.add_argument("--shape", default="16,21,60,104", help="latent C,T,H,W (default: Wan2.1 480p, 81 frames)")
    codec.add_argument("--steps", type=int, default=10, help="denoising steps of the trajectories (default 10)")
    codec.add_argument("--seed", type=int, default=1234)
    codec.add_argument("--no-wan", action="store_true",
                       help="skip the tiny-Wan trajectory set (minutes of CPU at the default shape)")
    codec.set_defaults(run=_bench_codec)

    store = bench.add_parser("store", help="put/get throughput and latency per storage tier")
    store.add_argument("--json", metavar="PATH", help="write the full results as JSON here")
    store.add_argument("--sizes-mb", default="1,8,32", help="blob sizes in MB (default 1,8,32)")
    store.add_argument("--repeats", type=int, default=20, help="puts and gets per tier and size (default 20)")
    store.add_argument("--disk-path", help="directory for the disk tier (default: a temporary directory)")
    store.add_argument("--redis-url", help="benchmark a redis tier at this URL too (keys under 'flexcache:bench')")
    store.set_defaults(run=_bench_store)

    config = commands.add_parser("config", help="print the effective configuration as YAML")
    config.set_defaults(run=_config_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FlexCacheError as exc:
        print(f"flexcache: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
