"""flexcache's simulated throughput under variants of the `sharing` defences, on a trace or the synthetic workload.

Usage (each variant is one `simulate` run of the `flexcache` system, 16 GB; cost = 1 - throughput / undefended):
    python bench/e2e/defence_variants.py synthetic:20000 wan2.1-14b-720p 2000 undefended,defaults
    python bench/e2e/defence_variants.py synthetic:120 wan2.1-1.3b-480p 200      # the --quick preset
    python bench/e2e/defence_variants.py bench/data/sessions-a.jsonl             # a trace, Wan2.1-14B profile
Variants: undefended, defaults, no_gate (containment_gate off), no_askers (min_askers 1); undefended must come first.
"""
import dataclasses
import sys
import time
from flexcache.benchmarks.serve.profiles import get_profile
from flexcache.benchmarks.serve.simulate import SYSTEMS, MemoizedEmbedder, simulate, summarize
from flexcache.benchmarks.serve.sized import measure_entry_sizes
from flexcache.benchmarks.serve.workload import read_trace, SyntheticWorkload, generate_trace
from flexcache.core import EmbedderConfig, PlannerConfig, SharingConfig
from flexcache.engine import build_embedder

source = sys.argv[1]
if source.startswith("synthetic:"):
    n = int(source.split(":")[1])
    profile = get_profile(sys.argv[2] if len(sys.argv) > 2 else "wan2.1-14b-720p")
    workers = 8 if n > 500 else 2
    users = int(sys.argv[3]) if len(sys.argv) > 3 else n // 10
    trace = generate_trace(SyntheticWorkload(requests=n, users=users,
                                             requests_per_hour=0.8 * workers * 3600 / profile.seconds_full))
else:
    trace = read_trace(source)
    profile = get_profile("wan2.1-14b-720p")
    workers = 8
embedder = MemoizedEmbedder(build_embedder(EmbedderConfig(device="cpu")))
embedder.prefill(r.prompt for r in trace)
sizes = measure_entry_sizes(profile, PlannerConfig().checkpoint_fractions, solver_state=PlannerConfig().solver_state)
variants = {
    "undefended": SharingConfig.undefended(),
    "defaults": SharingConfig(),
    "no_gate": SharingConfig(containment_gate=False),
    "no_askers": SharingConfig(min_askers=1),
}
names = sys.argv[4].split(",") if len(sys.argv) > 4 else list(variants)
rows = {}
for name in names:
    started = time.time()
    spec = dataclasses.replace(SYSTEMS["flexcache"], sharing=variants[name])
    result = simulate(trace, profile, spec, budget_bytes=16 * 10**9, workers=workers, embedder=embedder, entry_sizes=sizes)
    row = summarize(result, workers=workers, gpu_price_per_hour=3.0, storage_price_per_gb_month=0.11, offered_rph=0)
    rows[name] = row
    sharing = getattr(result, "sharing", None) or {}
    print(f"{name}: {row['throughput_rph']:.2f} req/h hit {row['hit_rate']:.3f} saved {row['steps_saved_frac']:.3f} "
          f"cost {1 - row['throughput_rph'] / rows['undefended']['throughput_rph'] if 'undefended' in rows else 0:.3f} "
          f"{ {k: sharing.get(k) for k in ('withheld_unconfirmed', 'gated', 'capped', 'cross_user_hits')} } ({time.time() - started:.0f} s)", flush=True)
