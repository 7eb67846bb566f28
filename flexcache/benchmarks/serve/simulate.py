"""Simulated serving: GPU compute from a model profile, every cache decision by the real engine.

Each request carries its trace user (`plan(user=)`): flexcache and its
ablations (flexcache-no-*) keep the `sharing` defaults between users, the
others (nirvana, flexcache-undefended) share every entry with everyone. Every
request runs from its prompt text alone (`insert(text_conditioned=True)`), as
a service that encodes the prompt itself does. Each system is a real
`FlexCache` (embedder, index, planner, policy, store accounting) over one
store tier of the same byte budget. What is simulated:

* the model's compute: (N - K) steps at the profile's seconds per step;
* the latents: entries are accounted at the size the real codec gives a
  latent of the profile's shape (`measure_entry_sizes`: the codec run once per
  checkpoint on flow-matching proxy latents of that shape; NIRVANA entries are
  raw latents in the profile's dtype), and only a small header is kept in
  memory (`AccountedTier`, `SizedCodec`), so a 64 GB budget fits on a laptop.

W workers serve the trace first come, first served; a miss inserts its
checkpoints when it completes, so a hit needs its source finished first, and
a hit (where the system caches resumed runs) inserts the checkpoints after K.
With `sharing.latency_padding`, a hit served from another user's entry
(`Plan.cross_user`) is answered no sooner than a full run would have been:
its latency is padded, while its worker takes the next request as soon as
its compute is done, so padding costs latency and never throughput.

Cache-path costs are charged from measured figures, fixed so runs reproduce
(`CachePathCosts`; CPU figures until a GPU run is recorded): every request of
a cached system pays one `plan`, every hit pays the read of its blob from the
host-memory tier at the measured tier throughput, and a hit on a compressed
entry also pays its decode at the measured decode throughput.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from flexcache.benchmarks.serve.profiles import ModelProfile
from flexcache.benchmarks.serve.sized import AccountedTier, SizedCodec
from flexcache.benchmarks.serve.workload import TraceRequest
from flexcache.core import SharingConfig
from flexcache.engine import GenerationSignature


class MemoizedEmbedder:
    """An embedder that computes each distinct text once (systems and budgets replay the same prompts).

    Vectors are kept per text as first computed, so every replay sees the
    very same vectors whatever it batches together. `prefill` also keeps each
    prompt's split (`parts_of`): the engine's splitter (rules and a MiniLM
    setting classifier) would otherwise split a prompt again on every plan of
    every decoupled system.
    """

    def __init__(self, embedder) -> None:
        self.embedder = embedder
        self._vectors: dict[str, torch.Tensor] = {}
        self._parts: dict[str, Any] = {}

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def prefill(self, prompts, batch_size: int = 256, *, words: bool = False, processes: int = 1) -> None:
        """Embed, in batches, every text the engine's `plan` will embed for `prompts` (each, and its parts).

        One text a call would embed a 20,000-request trace one MiniLM call
        per request; in batches it takes a fraction of that. Each prompt is
        split as `plan` would split it (kept for `parts_of`), in order, on one
        torch thread: the setting classifier runs a few phrases at a time,
        where a second thread only waits. With `words`, the content words of
        every prompt too, after them: what the containment gate
        (`sharing.containment_gate`) embeds when it reads a source against a
        request, a few words a call, on every hit from another user's entry.
        With `processes` > 1, forked workers (one thread each, `serve.parallel`)
        embed each batch as soon as the split has filled it; each batch holds
        the texts it would hold here, so every vector is the same.
        """
        from flexcache.benchmarks.serve.parallel import can_fork, forked_calls
        from flexcache.engine import parts_from, validate_prompts

        embedder = self.embedder
        workers = (forked_calls(lambda chunk: embedder.embed(chunk).cpu().numpy(), processes)
                   if processes > 1 and can_fork() else contextlib.nullcontext())
        chunks: list[list[str]] = []
        sent: list[Any] = []  # per chunk, its workers' future (None: embedded here, after the split)
        pending: list[str] = []
        with workers as call:

            def send() -> None:
                if pending:
                    chunks.append(pending.copy())
                    sent.append(None if call is None else call(chunks[-1]))
                    pending.clear()

            def add(text: str, seen: dict[str, None]) -> None:
                if text not in seen:
                    seen[text] = None
                    if text not in self._vectors:
                        pending.append(text)
                        if len(pending) == batch_size:
                            send()

            texts: dict[str, None] = {}
            prompts = [validate_prompts([prompt])[0] for prompt in dict.fromkeys(prompts)]
            with single_threaded():
                for prompt in prompts:
                    if prompt not in self._parts:
                        self._parts[prompt] = parts_from(prompt)  # None: the splitter cannot split it
                    split = self._parts[prompt]
                    parts = [] if split is None else [split.object] + ([split.background] if split.background else [])
                    for text in [prompt, *parts]:
                        add(text, texts)
            send()
            if words:
                gate = dict.fromkeys(w for prompt in prompts for w in gate_words(prompt) if w not in texts)
                for word in gate:
                    add(word, texts)
                send()
            vectors = [torch.from_numpy(future.result()) if future is not None else embedder.embed(chunk)
                       for chunk, future in zip(chunks, sent)]
        for chunk, rows in zip(chunks, vectors):
            for text, vector in zip(chunk, rows):
                self._vectors[text] = vector

    def parts_of(self, prompt: str):
        """`prompt`'s split from `prefill`, as `plan(parts=)` takes it; None: let `plan` split it.

        None for a prompt `prefill` did not see, one the splitter cannot split
        (`plan` finds that out cheaply) and a split that `plan` would not take
        unchanged (explicit parts are normalised once more).
        """
        from flexcache.engine import normalise

        split = self._parts.get(prompt)
        if split is None or normalise(split.object) != split.object or normalise(split.background) != split.background:
            return None
        return split

    def embed(self, texts) -> torch.Tensor:
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            for text, vector in zip(missing, self.embedder.embed(missing)):
                self._vectors[text] = vector
        return torch.stack([self._vectors[t] for t in texts])


_WORD = re.compile(r"\w+")


def gate_words(text: str) -> list[str]:
    """Every word the containment gate (`engine.containment.content_words`) may take from `text`, and a few more.

    Its tokens (NFKC, lower case, runs of letters and digits) and, in a token
    with CJK ideographs, each ideograph and each run between them; function
    words are kept (embedding a word the gate drops only costs time).

    Example:
        >>> gate_words("A red fox, 一只猫")
        ['a', 'red', 'fox', '一只猫', '一', '只', '猫']
    """
    words: list[str] = []
    for token in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
        words.append(token)
        if not token.isascii():
            run = ""
            for ch in token:
                if unicodedata.name(ch, "").startswith("CJK "):
                    words += [run, ch] if run else [ch]
                    run = ""
                else:
                    run += ch
            if run and run != token:
                words.append(run)
    return list(dict.fromkeys(words))


@dataclass(frozen=True)
class CachePathCosts:
    """Seconds the cache path adds to a request (defaults: this repo's CPU measurements, 2026-11-26)."""

    plan_s: float = 0.00825  # bench/results/2026-11-26-cpu-engine.md: FlexCache.plan end to end, MiniLM on CPU
    decode_gb_per_s: float = 0.0172  # bench/results/2026-11-26-cpu-codec.json: median decode, proxy 16x21x60x104
    tier_get_gb_per_s: float = 11.1  # bench/results/2026-11-26-cpu-store.md: host tier, 8 MB get, median
    source: str = ("2-core Xeon CPU (bench/results/2026-11-26-cpu-engine.md, -cpu-codec.json, -cpu-store.md); "
                   "no GPU figures yet")


UNDEFENDED = SharingConfig.undefended()


@dataclass(frozen=True)
class SystemSpec:
    """One cache design; every system gets the same tier and byte budget."""

    name: str
    cached: bool = True
    lookup: str = "decoupled"
    policy: str = "flexcache"
    compressed: bool = True
    cache_resumed: bool = True  # a hit also caches the checkpoints its resumed run passes after K
    regions: bool = True  # region hits (decoupled look-up only)
    similarity_table: str = "toyworld"  # the full-prompt table (core.config.SIMILARITY_TABLES)
    # Between users: None keeps the `sharing` defaults; NIRVANA shares every entry with everyone (UNDEFENDED).
    sharing: Any = None


    def cache_config(self, **settings: Any):
        """The `CacheConfig` of this design (CPU embedder and index), with `settings` (name, store) added."""
        from flexcache import CacheConfig

        return CacheConfig.from_dict({
            "policy": self.policy,
            # The simulated model is served the toy world's calibrated depths, as if calibrated like it
            # (`flexcache calibrate`); uncalibrated, it would get NIRVANA's table and no part or region hits.
            "planner": {"lookup": self.lookup, "cache_resumed": self.cache_resumed, "regions": self.regions,
                        "similarity_table": self.similarity_table, "uncalibrated": "tables"},
            "codec": {"name": "flexcache" if self.compressed else "lossless"},
            "embedder": {"device": "cpu"}, "index": {"device": "cpu"},
            "sharing": {} if self.sharing is None else dataclasses.asdict(self.sharing), **settings,
        })


SYSTEMS: dict[str, SystemSpec] = {s.name: s for s in (
    SystemSpec("nocache", cached=False),
    SystemSpec("nirvana", lookup="full", policy="lcbfu", compressed=False, cache_resumed=False,
               similarity_table="nirvana", sharing=UNDEFENDED),
    SystemSpec("flexcache"),
    SystemSpec("flexcache-undefended", sharing=UNDEFENDED),  # what the defences between users cost
    # The ablations keep the default defences: each switches one idea, never the sharing rules.
    SystemSpec("flexcache-no-decoupling", lookup="full"),
    SystemSpec("flexcache-no-regions", regions=False),  # decoupled look-up with whole-latent hits only
    SystemSpec("flexcache-no-compression", compressed=False),
    SystemSpec("flexcache-no-policy", policy="lcbfu"),
    SystemSpec("flexcache-no-resumed-inserts", cache_resumed=False),
    # NIRVANA given our resumed inserts: shows what that idea is worth without compression.
    SystemSpec("nirvana-resumed-inserts", lookup="full", policy="lcbfu", compressed=False,
               similarity_table="nirvana", sharing=UNDEFENDED),
)}


def parse_system(name: str) -> tuple[SystemSpec, Any]:
    """A system name, optionally with an in-request method: ``flexcache+magcache`` -> (its spec, the method)."""
    from flexcache.benchmarks.serve.in_request import get_method
    from flexcache.core import ConfigError

    base, _, method = name.partition("+")
    if base not in SYSTEMS:
        raise ConfigError(f"unknown system {base!r} in {name!r}; choose from {', '.join(SYSTEMS)}, "
                          "optionally with +<in-request method>")
    return SYSTEMS[base], (get_method(method) if method else None)


DEFENDED = "flexcache"  # the defaults, whose price is measured against...
UNDEFENDED_TWIN = "flexcache-undefended"  # ...the same design sharing every entry with everyone


def with_undefended(systems: Iterable[str]) -> tuple[str, ...]:
    """`systems` with `flexcache` and `flexcache-undefended` beside any flexcache system, same in-request method.

    The defences' price (`defence_cost`) is measured on every run that
    measures FlexCache at all.

    Example:
        >>> with_undefended(["nocache", "flexcache-no-regions+fbc"])
        ('nocache', 'flexcache+fbc', 'flexcache-undefended+fbc', 'flexcache-no-regions+fbc')
    """
    names: list[str] = []
    for name in systems:
        base, plus, method = name.partition("+")
        if base.startswith(DEFENDED):
            names += [DEFENDED + plus + method, UNDEFENDED_TWIN + plus + method]
        names.append(name)
    return tuple(dict.fromkeys(names))


@dataclass
class SystemResult:
    name: str
    completed: int = 0
    hits: int = 0
    decoupled_hits: int = 0
    region_hits: int = 0
    own_hits: int = 0  # served from the requester's own entries
    cross_user_hits: int = 0  # served from another user's (`Plan.cross_user`)
    padded_requests: int = 0  # answered later than their compute finished (`sharing.latency_padding`)
    latency_padding: bool = False
    steps_total: int = 0
    steps_saved: int = 0
    gpu_seconds: float = 0.0
    audit_runs: int = 0  # sampled hits run again uncached (`quality.audit_rate`), at low priority
    audit_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # as answered: padded where padding is on
    unpadded_latencies: list[float] = field(default_factory=list)  # as computed
    bytes_stored: int = 0
    bytes_peak: int = 0
    makespan: float = 0.0  # when the last compute finished
    sharing: dict[str, Any] | None = None  # `cache.stats()["sharing"]` at the end: what each defence withheld


def simulate(trace: list[TraceRequest], profile: ModelProfile, system: SystemSpec, *, budget_bytes: int,
             workers: int, embedder, entry_sizes: dict[int, int], costs: CachePathCosts = CachePathCosts(),
             on_request: Callable[[], None] | None = None, in_request: Any = None,
             name: str | None = None, audit_rate: float = 0.0) -> SystemResult:
    """Serve `trace` on `workers` simulated GPUs with `system`'s cache; returns its counters.

    `in_request` (`serve.in_request.InRequestMethod`): each step costs the
    fraction of its compute the method keeps, on full and on resumed runs.
    `audit_rate` (``quality.audit_rate``): each hit the auditor samples costs its worker a full run after
    the hit is answered (low priority: the answer is not delayed, the worker's next job is).
    """
    from flexcache import FlexCache

    steps = profile.steps
    keep_full = keep_resumed = 1.0
    if in_request is not None:
        keep_full = in_request.step_fraction(profile.name, resumed=False)[0]
        keep_resumed = in_request.step_fraction(profile.name, resumed=True)[0]
    raw = profile.latent_bytes
    cached = system.cached and budget_bytes > 0
    cache = None
    # Latent values are never looked at and blob sizes come from `entry_sizes`, so the engine is handed a
    # one-element latent: checking a full-size zero tensor on every insert would dominate the run.
    signature = GenerationSignature(model_id=profile.model_id, scheduler="simulated", num_steps=steps, height=1,
                                    width=1, num_frames=1, latent_shape=(1, 1, 1, 1),
                                    latent_dtype=profile.latent_dtype)
    if cached:
        sizes = entry_sizes if system.compressed else {step: raw for step in entry_sizes}
        settings = {"quality": {"audit_rate": audit_rate}} if audit_rate else {}
        cache = FlexCache(system.cache_config(**settings), embedder=embedder, codec=SizedCodec(sizes),
                          tiers=[AccountedTier(budget_bytes)])
        zeros = torch.zeros(signature.latent_shape, dtype=getattr(torch, profile.latent_dtype))
        # Entries carry an object mask, as a Wan pipeline's do (its cross-attention probe): whether an
        # entry can serve a region hit is all the planner reads of it.
        mask = torch.ones(1, 1, 1)
    result = SystemResult(name or system.name)
    result.latency_padding = cached and cache.config.sharing.latency_padding
    # What a full run of this system takes: a padded hit is answered no sooner (all full runs take the same here).
    full_service = (steps * profile.seconds_per_step * keep_full + profile.text_encoder_s + profile.vae_decode_s
                    + (costs.plan_s if cached else 0.0))
    free_at = [0.0] * workers
    heapq.heapify(free_at)
    completions: list[tuple[float, int, Any]] = []  # (time, order, plan) of misses to insert
    order = 0
    parts_of = getattr(embedder, "parts_of", None) if system.lookup == "decoupled" else None
    with single_threaded():
        for request in trace:
            start = max(request.t, heapq.heappop(free_at))
            while completions and completions[0][0] <= start:  # finished misses fill the cache first
                _, _, plan = heapq.heappop(completions)
                cache.insert(plan, {s: zeros for s in plan.run_checkpoints}, {s: float(s) for s in plan.run_checkpoints},
                             {s: mask for s in plan.run_checkpoints}, text_conditioned=True)
                result.bytes_peak = max(result.bytes_peak, cache.store.bytes_used)
            skip = 0
            overhead = 0.0
            audit = 0.0
            padded = False
            run = None  # the plan of the run that fills the cache when it completes, if any
            if cached:
                overhead = costs.plan_s
                # A trace's seed is its user's choice: honoured. The simulated pipelines run region hits, as a Wan
                # pipeline behind enable_flexcache does (`planner.regions` turns them off per system).
                plan = cache.plan(request.prompt, signature, tenant=request.tenant, user=_user_id(request.user),
                                  seed=request.seed, regions=True,
                                  parts=None if parts_of is None else parts_of(request.prompt))
                run = plan.as_miss() if plan.hit else plan
                if plan.hit and cache.fetch(plan) is not None:
                    run = plan if system.cache_resumed and plan.run_checkpoints else None
                    skip = plan.skip_steps
                    overhead += sizes[skip] / (costs.tier_get_gb_per_s * 1e9)
                    if system.compressed:
                        overhead += raw / (costs.decode_gb_per_s * 1e9)
                    result.hits += 1
                    result.decoupled_hits += plan.via_parts
                    result.region_hits += plan.region is not None
                    result.cross_user_hits += plan.cross_user
                    result.own_hits += not plan.cross_user
                    padded = plan.cross_user and result.latency_padding
                    if cache.auditor.sample(plan):
                        audit = steps * profile.seconds_per_step * keep_full + profile.text_encoder_s + profile.vae_decode_s
            step_seconds = profile.seconds_per_step * (keep_resumed if skip else keep_full)
            service = (steps - skip) * step_seconds + profile.text_encoder_s + profile.vae_decode_s + overhead
            end = start + service
            heapq.heappush(free_at, end + audit)  # the worker is free when its compute (and audit) is done
            answered = start + max(service, full_service) if padded else end
            result.padded_requests += answered > end
            if run is not None:
                order += 1
                heapq.heappush(completions, (end, order, run))
            result.completed += 1
            result.steps_total += steps
            result.steps_saved += skip
            result.gpu_seconds += service + audit
            result.audit_runs += audit > 0
            result.audit_seconds += audit
            result.latencies.append(answered - request.t)
            result.unpadded_latencies.append(end - request.t)
            result.makespan = max(result.makespan, end)
            if on_request is not None:
                on_request()
    if cache is not None:
        result.bytes_stored = cache.store.bytes_used
        result.sharing = cache.stats()["sharing"]
        cache.close()
    return result


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """torch and FAISS on one thread each for the duration (their thread counts restored after).

    The simulator's calls are small: one query per FAISS search, a few
    phrases per classifier batch, one-element latents. On 2 threads of this
    2-core machine under load, FAISS spent 5 ms on a search of a few thousand
    rows that one thread does in 0.2 ms, and torch 70 ms a phrase that one
    thread embeds in 5 ms (threads spinning at each hand-off). Results are
    the same: a flat search is exact, and the classifier's vectors came out
    bit-equal on 1 and 2 threads. FAISS keeps its own OpenMP runtime.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import faiss
    except ImportError:
        faiss = None
    search_threads = faiss.omp_get_max_threads() if faiss is not None else None
    if faiss is not None:
        faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if faiss is not None:
            faiss.omp_set_num_threads(search_threads)


def _user_id(user: str | None) -> str | None:
    """A trace's user as an engine user id (log ids outside the pattern are hashed)."""
    from flexcache.core import TENANT_PATTERN

    if user is None or TENANT_PATTERN.fullmatch(user):
        return user
    import hashlib

    return "h" + hashlib.sha256(user.encode()).hexdigest()[:32]


def latency_percentiles(latencies) -> dict[str, float]:
    """`p50_latency_s` and `p95_latency_s` of some latencies (a nearest-rank p95)."""
    import statistics

    ordered = sorted(latencies)
    return {"p50_latency_s": statistics.median(ordered),
            "p95_latency_s": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]}


def summarize(result: SystemResult, *, workers: int, gpu_price_per_hour: float,
              storage_price_per_gb_month: float, offered_rph: float) -> dict[str, Any]:
    """The JSON row of one system."""
    mean_service = result.gpu_seconds / result.completed
    months = result.makespan / (30 * 86_400)
    gpu_cost = gpu_price_per_hour * result.gpu_seconds / 3600
    storage_cost = storage_price_per_gb_month * result.bytes_peak / 1e9 * months
    return {
        "throughput_rph": workers * 3600 / mean_service,  # at saturation: every worker always busy
        **latency_percentiles(result.latencies),  # as answered: padded where latency padding is on
        "latency_padding": result.latency_padding,
        "padded_requests": result.padded_requests,
        **{f"unpadded_{key}": value for key, value in latency_percentiles(result.unpadded_latencies).items()},
        "offered_load_rph": offered_rph,
        "audit_runs": result.audit_runs,
        "audit_seconds": result.audit_seconds,
        "hit_rate": result.hits / result.completed,
        "decoupled_hits": result.decoupled_hits,
        "region_hits": result.region_hits,
        "own_hits": result.own_hits,
        "cross_user_hits": result.cross_user_hits,
        "steps_saved_frac": result.steps_saved / result.steps_total,
        "cost_per_1k_videos": (gpu_cost + storage_cost) / result.completed * 1000,
        "bytes_stored": result.bytes_stored,
        "bytes_peak": result.bytes_peak,
        "requests": result.completed,
        "sharing": result.sharing,
    }


def flexcache_ratios(systems: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """flexcache's throughput ratio and cost reduction against nirvana and nocache, where all were run.

    Like for like: ``flexcache+X`` against ``nirvana+X`` and ``nocache+X``;
    and each ``flexcache+X`` against plain ``nocache``.
    """
    ratios = {}
    methods = [""] + sorted({name.partition("+")[2] for name in systems if "+" in name})
    for method in methods:
        suffix = f"+{method}" if method else ""
        ours = f"flexcache{suffix}"
        bases = [f"nirvana{suffix}", f"nocache{suffix}"] + (["nocache"] if method else [])
        for base in bases:
            if ours in systems and base in systems and systems[base]["throughput_rph"]:
                ratios[f"{ours}_vs_{base}"] = {
                    "throughput": systems[ours]["throughput_rph"] / systems[base]["throughput_rph"],
                    "cost_reduction": 1 - systems[ours]["cost_per_1k_videos"] / systems[base]["cost_per_1k_videos"],
                }
    return ratios


def defence_cost(defended: dict[str, Any], undefended: dict[str, Any]) -> dict[str, float]:
    """What the defences between users cost one design: 1 - its throughput / its undefended twin's, and both hit rates.

    Example:
        >>> cost = defence_cost({"throughput_rph": 75.0, "hit_rate": 0.25}, {"throughput_rph": 100.0, "hit_rate": 0.5})
        >>> cost["defence_cost"], cost["hit_rate"], cost["undefended_hit_rate"]
        (0.25, 0.25, 0.5)
    """
    return {"defence_cost": 1 - defended["throughput_rph"] / undefended["throughput_rph"],
            "throughput_rph": defended["throughput_rph"], "undefended_throughput_rph": undefended["throughput_rph"],
            "hit_rate": defended["hit_rate"], "undefended_hit_rate": undefended["hit_rate"]}


def defence_costs(rows_by_budget: dict[int, dict[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """`defence_cost` of ``flexcache[+X]`` against ``flexcache-undefended[+X]`` at each budget both ran at.

    Args:
        rows_by_budget: ``{budget_bytes: {system name: its row}}``.

    Returns:
        ``{"flexcache[+X]": [{"budget_bytes": b, "defence_cost": ..., ...}, ...]}``, budgets ascending.
    """
    costs: dict[str, list[dict[str, Any]]] = {}
    for budget in sorted(rows_by_budget):
        rows = rows_by_budget[budget]
        for name in rows:
            base, plus, method = name.partition("+")
            twin = rows.get(UNDEFENDED_TWIN + plus + method)
            if base == DEFENDED and twin is not None and twin["throughput_rph"]:
                costs.setdefault(name, []).append({"budget_bytes": budget} | defence_cost(rows[name], twin))
    return costs
