"""`flexcache bench index`: what one index partition costs at N entries, per backend.

For each backend (``faiss-flat``, ``torch-flat``, the approximate ``hnsw`` and
``ivf``, and ``torch-cuda`` where CUDA is) it adds N vectors through the
`VectorIndex` interface the cache uses, in batches of `batch` rows, and reports

* build time (all adds; for IVF its training and retrainings included),
* memory per entry: the index's own arrays (`VectorIndex.nbytes` / N) and the
  growth of the process's resident anonymous memory / N over the build, after
  freed heap pages went back to the OS (the id maps and allocator slack too;
  each backend is measured in a fresh process; the input rows are
  memory-mapped and not counted),
* single-query search latency p50 / p99 in ms (the plan path searches one
  query at a time; a torch tensor in, tensors out, as the cache calls it),
* recall@k against exact search (float32 matmul over every row), over all
  queries and over the true neighbours at cosine >= `near_cosine` alone (the
  ones a planner rule could act on: the shipped rules start at 0.81-0.89).

Vectors (unit-norm float32, seeded):

* ``clustered`` resembles prompt embeddings. Every vector shares a common
  direction (weight 0.35: real sentence embeddings are anisotropic; 2,421
  prompts of bench/data gave a mean pairwise cosine of 0.10 with MiniLM and
  0.21 with multilingual USE, a mean vector of norm 0.31 / 0.45). Entries belong
  to N / 1,000 topics of Zipf(0.8) popularity (weight 0.59: same topic, cosine
  about 0.5) and to N / 5 prompt families (weight 0.59: a prompt and its edits,
  cosine 0.8-0.95), plus per-entry noise of weight 0.2-0.6. Half the queries
  are new members of existing families (a near-duplicate request: median top-1
  cosine about 0.87), half start new families (median top-1 about 0.57), so
  the nearest-neighbour cosines span what the 2,421 real prompts show
  (medians 0.78-0.85).
* ``uniform``: independent uniform directions, the hard case for any
  approximate index (no structure to exploit: the true top-1 lies at cosine
  ~0.2 among a million rows at ~0 +- 0.05). No planner rule accepts such
  neighbours, so a miss there changes no plan, but the recall is stated.

Timings depend on the machine and on what else runs on it; the JSON states the
CPU and its core count.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("faiss-flat", "torch-flat", "hnsw", "ivf", "torch-cuda")
DATA_KINDS = ("clustered", "uniform")
COMMON_WEIGHT, TOPIC_WEIGHT, FAMILY_WEIGHT = 0.35, 0.59, 0.59
NOISE_RANGE = (0.2, 0.6)
ROWS_PER_TOPIC, ROWS_PER_FAMILY = 1_000, 5
TOPIC_ZIPF = 0.8
CHUNK = 65_536  # rows generated or scored at a time: bounds temporaries at a million rows


def _unit(array: np.ndarray) -> np.ndarray:
    return (array / np.linalg.norm(array, axis=1, keepdims=True)).astype(np.float32)


def clustered_vectors(entries: int, queries: int, dim: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(entries, queries)`` unit vectors shaped like prompt embeddings (module docstring)."""
    rng = np.random.default_rng(seed)
    common = _unit(rng.standard_normal((1, dim)))
    topics = _unit(rng.standard_normal((max(1, entries // ROWS_PER_TOPIC), dim)))
    popularity = 1.0 / np.arange(1, len(topics) + 1) ** TOPIC_ZIPF
    known_families = max(1, entries // ROWS_PER_FAMILY)
    new_families = max(1, queries)
    family_topic = rng.choice(len(topics), known_families + new_families, p=popularity / popularity.sum())
    family_vectors = _unit(rng.standard_normal((known_families + new_families, dim)))

    def members(families: np.ndarray) -> np.ndarray:
        out = np.empty((len(families), dim), dtype=np.float32)
        for start in range(0, len(families), CHUNK):
            chosen = families[start:start + CHUNK]
            noise = rng.uniform(*NOISE_RANGE, (len(chosen), 1)) * _unit(rng.standard_normal((len(chosen), dim)))
            out[start:start + CHUNK] = _unit(COMMON_WEIGHT * common + TOPIC_WEIGHT * topics[family_topic[chosen]]
                                             + FAMILY_WEIGHT * family_vectors[chosen] + noise)
        return out

    base = members(rng.integers(0, known_families, entries))
    near = members(rng.integers(0, known_families, queries // 2))
    far = members(known_families + rng.integers(0, new_families, queries - queries // 2))
    return base, np.concatenate([near, far])


def uniform_vectors(entries: int, queries: int, dim: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(entries, queries)`` independent uniformly distributed unit vectors."""
    rng = np.random.default_rng(seed)
    base = np.empty((entries, dim), dtype=np.float32)
    for start in range(0, entries, CHUNK):
        base[start:start + CHUNK] = _unit(rng.standard_normal((min(CHUNK, entries - start), dim)))
    return base, _unit(rng.standard_normal((queries, dim)))


def exact_neighbours(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(similarities, rows)`` of the true top-k by inner product, scored in chunks of rows."""
    best_sims = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_rows = np.empty((len(queries), 0), dtype=np.int64)
    for start in range(0, len(base), CHUNK):
        sims = queries @ base[start:start + CHUNK].T
        sims = np.concatenate([best_sims, sims], axis=1)
        rows = np.concatenate([best_rows, np.broadcast_to(np.arange(start, start + sims.shape[1] - best_sims.shape[1]),
                                                          (len(queries), sims.shape[1] - best_sims.shape[1]))], axis=1)
        keep = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        best_sims, best_rows = np.take_along_axis(sims, keep, 1), np.take_along_axis(rows, keep, 1)
    return best_sims, best_rows


def _anonymous_rss_bytes() -> int | None:
    """Resident anonymous memory (heap, not the memory-mapped input vectors); None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc), so RSS shows what the index holds, not build slack."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _faiss_threads() -> int | None:
    try:
        import faiss
    except ImportError:
        return None
    return faiss.omp_get_max_threads()


def available_backends() -> tuple[str, ...]:
    import torch

    return tuple(name for name in BACKENDS if name != "torch-cuda" or torch.cuda.is_available())


def make_backend(name: str, dim: int, config=None):
    """A fresh, empty index of backend `name`; `config` (an `IndexConfig`) gives the approximate parameters."""
    from flexcache.config import IndexConfig
    from flexcache.core import ConfigError
    from flexcache.engine import FaissFlatIndex, TorchFlatIndex, build_approximate_index

    config = config or IndexConfig()
    if name == "faiss-flat":
        return FaissFlatIndex(dim, "cpu")
    if name == "torch-flat":
        return TorchFlatIndex(dim, "cpu")
    if name == "torch-cuda":
        return TorchFlatIndex(dim, "cuda")
    if name in ("hnsw", "ivf"):
        import dataclasses

        return build_approximate_index(dim, dataclasses.replace(config, approximate=name))
    raise ConfigError(f"unknown index backend {name!r}; choose from {', '.join(BACKENDS)}")


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure_backend(name: str, base_path: str, queries_path: str, true_sims: np.ndarray, true_rows: np.ndarray, *,
                    k: int, batch: int, near_cosine: float, config=None) -> dict[str, Any]:
    """Build one backend over the rows saved at `base_path`, then time and score single-query searches.

    Runs in a fresh process (`run_index_bench`), so the RSS growth it reports is
    this backend's alone; the input rows are memory-mapped and not counted.
    """
    import torch

    base = np.load(base_path, mmap_mode="r")
    queries = torch.from_numpy(np.load(queries_path))
    rss_before = _anonymous_rss_bytes()
    index = make_backend(name, base.shape[1], config)
    started = time.perf_counter()
    for start in range(0, len(base), batch):
        rows = torch.from_numpy(np.array(base[start:start + batch]))  # a writable copy of the mapped rows
        index.add(torch.arange(start, start + len(rows), dtype=torch.int64), rows)
    build_seconds = time.perf_counter() - started
    _return_freed_memory()
    rss_after = _anonymous_rss_bytes()
    entries = len(base)
    for query in queries[: min(5, len(queries))]:  # warm caches and lazy initialisation
        index.search(query.unsqueeze(0), k)
    latencies, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, ids = index.search(query.unsqueeze(0), k)
        ids = ids.cpu()
        latencies.append(time.perf_counter() - started)
        found.append(ids[0].tolist())
    hits = [len(set(row) & set(true_rows[i].tolist())) for i, row in enumerate(found)]
    near = true_sims >= near_cosine
    near_hits = sum(len(set(found[i]) & set(true_rows[i][near[i]].tolist())) for i in range(len(found)))
    return {
        "backend": name,
        "approximate": bool(getattr(index, "approximate", False)),
        "build_s": build_seconds,
        "index_bytes_per_entry": index.nbytes / entries,
        "rss_bytes_per_entry": None if rss_before is None else (rss_after - rss_before) / entries,
        "search_p50_ms": 1e3 * _percentile(latencies, 0.5),
        "search_p99_ms": 1e3 * _percentile(latencies, 0.99),
        f"recall_at_{k}": sum(hits) / (k * len(found)),
        "near_neighbours": int(near.sum()),
        f"near_recall_at_{k}": near_hits / int(near.sum()) if near.any() else None,
    }


def run_index_bench(entries: int, *, dim: int = 384, queries: int = 200, k: int = 4,
                    backends: tuple[str, ...] | None = None, data: tuple[str, ...] = ("clustered",),
                    batch: int = 10_000, near_cosine: float = 0.8, seed: int = 0, config=None,
                    isolate: bool = True, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every backend on every data kind; returns the JSON-ready result (module docstring).

    `isolate` measures each backend in a fresh process (the RSS figure needs it;
    off, the RSS growth of later backends is blurred by memory earlier ones freed).

    Example:
        >>> result = run_index_bench(2_000, dim=32, queries=20, backends=("faiss-flat", "hnsw"))
        >>> sorted(row["backend"] for row in result["results"])
        ['faiss-flat', 'hnsw']
    """
    import torch

    from flexcache.config import IndexConfig
    from flexcache.core import ConfigError

    backends = backends or available_backends()
    unknown = [name for name in backends if name not in BACKENDS] + [kind for kind in data if kind not in DATA_KINDS]
    if unknown:
        raise ConfigError(f"unknown index backend or data kind {', '.join(unknown)}; backends: "
                          f"{', '.join(BACKENDS)}; data: {', '.join(DATA_KINDS)}")
    if entries < 1 or queries < 1 or k < 1 or batch < 1:
        raise ConfigError("--entries, --queries, --k and --batch must be >= 1")
    config = config or IndexConfig()
    results = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="flexcache-index-bench-") as folder:
        for kind in data:
            make = clustered_vectors if kind == "clustered" else uniform_vectors
            base, query_vectors = make(entries, queries, dim, seed=seed)
            true_sims, true_rows = exact_neighbours(base, query_vectors, k)
            base_path, queries_path = f"{folder}/{kind}-base.npy", f"{folder}/{kind}-queries.npy"
            np.save(base_path, base)
            np.save(queries_path, query_vectors)
            del base, query_vectors
            for name in backends:
                if progress:
                    progress(f"{kind}: {name} over {entries:,} entries")
                arguments = (name, base_path, queries_path, true_sims, true_rows)
                options = {"k": k, "batch": batch, "near_cosine": near_cosine, "config": config}
                if isolate:  # a fresh interpreter per backend: its RSS growth is its own
                    context = multiprocessing.get_context("spawn")
                    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                        row = pool.submit(measure_backend, *arguments, **options).result()
                else:
                    row = measure_backend(*arguments, **options)
                results.append({"data": kind, **row})
    return {
        "entries": entries, "dim": dim, "queries": queries, "k": k, "batch": batch, "near_cosine": near_cosine,
        "seed": seed, "index_config": {key: getattr(config, key) for key in (
            "approximate_above", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_lists", "ivf_probes")},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "faiss_threads": _faiss_threads(),
                    "load_average_before": load_before[0], "load_average_after": os.getloadavg()[0],
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "results": results,
    }


def format_index_table(result: dict[str, Any]) -> str:
    k = result["k"]
    machine = result["machine"]
    lines = [f"index bench: {result['entries']:,} entries, dim {result['dim']}, {result['queries']} single queries, "
             f"k={k}; {machine['cores']} cores ({machine['cpu']}), load average {machine['load_average_before']:.1f} "
             f"before, {machine['load_average_after']:.1f} after", "",
             f"| data | backend | build s | index B/entry | RSS B/entry | p50 ms | p99 ms | recall@{k} | "
             f"near recall@{k} |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["results"]:
        rss = "-" if row["rss_bytes_per_entry"] is None else f"{row['rss_bytes_per_entry']:.0f}"
        near = row[f"near_recall_at_{k}"]
        lines.append(f"| {row['data']} | {row['backend']} | {row['build_s']:.1f} | {row['index_bytes_per_entry']:.0f} "
                     f"| {rss} | {row['search_p50_ms']:.3f} | {row['search_p99_ms']:.3f} | "
                     f"{row[f'recall_at_{k}']:.3f} | {'-' if near is None else f'{near:.3f}'} |")
    return "\n".join(lines)


def _command(args: argparse.Namespace) -> int:
    from flexcache.config import CacheConfig

    config = CacheConfig.load(args.config).index
    backends = tuple(name.strip() for name in args.backends.split(",") if name.strip()) if args.backends else None
    data = tuple(kind.strip() for kind in args.data.split(",") if kind.strip())
    result = run_index_bench(args.entries, dim=args.dim, queries=args.queries, k=args.k, backends=backends,
                             data=data, batch=args.batch, near_cosine=args.near_cosine, seed=args.seed,
                             config=config, isolate=not args.in_process,
                             progress=None if args.no_progress else print)
    print(format_index_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


def add_index_bench_command(bench) -> None:
    """Register ``flexcache bench index`` on the ``bench`` subcommands."""
    index = bench.add_parser("index", help="index backends at N entries: build time, memory per entry, "
                             "single-query search p50/p99, recall@k against exact search")
    index.add_argument("--entries", type=int, required=True, help="entries in the one partition measured")
    index.add_argument("--dim", type=int, default=384, help="vector dimension (default 384: MiniLM; the default "
                       "multilingual embedder's is 512)")
    index.add_argument("--queries", type=int, default=200, help="single queries timed per backend (default 200)")
    index.add_argument("--k", type=int, default=4, help="neighbours per search (default 4: index.candidates)")
    index.add_argument("--backends", help=f"comma-separated, from {', '.join(BACKENDS)} (default: all; "
                       "torch-cuda only with CUDA). The approximate ones use the config's index.hnsw_* / ivf_*")
    index.add_argument("--data", default="clustered",
                       help="clustered (prompt-like, default) and/or uniform (the hard case): comma-separated")
    index.add_argument("--batch", type=int, default=10_000, help="rows per add call while building (default 10000)")
    index.add_argument("--near-cosine", type=float, default=0.8,
                       help="true neighbours at or above this cosine are scored apart (default 0.8)")
    index.add_argument("--seed", type=int, default=0)
    index.add_argument("--in-process", action="store_true", help="measure every backend in this process "
                       "(saves a process start per backend; the RSS growth of later backends is then blurred)")
    index.add_argument("--no-progress", action="store_true")
    index.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    index.set_defaults(run=_command)
