"""`flexcache warm PROMPTS.txt`: fill a cache's store from the service's own runs, as a trusted writer.

A warm-up runs popular or trending prompts through the pipeline before users
ask for them. Its writer (default ``default/warmup``) must be named in
``sharing.trusted_writers``: attackers do not control these runs, so their
entries serve every user of the namespace at the rules' depth, with no
corroboration or depth cap between (README, "Threat model"). An untrusted
writer's entries would mostly sit unused by others. The store must have a
persistent tier (disk or redis); a warm-up into process memory ends with the
command.

A warm-up run never resumes from another writer's entry: its later
checkpoints would be stored as trusted while part of their content came from
a writer nobody vouched for. When the run's seed would find such an entry, the
prompt runs from a fresh secret seed instead (``WarmReport.reseeded``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexcache.core import ConfigError, FlexCacheError

WARM_TENANT = "default"
WARM_USER = "warmup"
TOYWORLD = "toyworld"
PERSISTENT_KINDS = ("disk", "redis")


class PromptsFileError(FlexCacheError):
    """The prompts file cannot be read, is not UTF-8, or holds no prompt."""


class PipelineLoadError(FlexCacheError):
    """The pipeline named by ``--pipeline`` cannot be loaded."""


@dataclass
class WarmReport:
    """What one warm-up did.

    Attributes:
        prompts: prompts it was given.
        ran: prompts it ran and stored entries of.
        skipped: prompts this writer already had an entry of (same pipeline settings, any seed).
        failed: ``(prompt, reason)`` of each prompt that stored nothing.
        reseeded: of `ran`, runs moved to a fresh seed because the given one would
            have resumed from another writer's entry.
        entries_stored, bytes_stored: entries the runs stored, and the bytes of
            those still held at the end (coded size).
        entries_evicted: of `entries_stored`, entries the store had evicted again by
            the end (a tier too small for the warm-up).
        seconds: wall time of the warm-up.
    """

    prompts: int = 0
    ran: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    reseeded: int = 0
    entries_stored: int = 0
    entries_evicted: int = 0
    bytes_stored: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """One line for the end of `flexcache warm`.

        Example:
            >>> WarmReport(prompts=3, ran=2, skipped=1, entries_stored=6, bytes_stored=3 << 20, seconds=4.2).summary()
            'warmed 3 prompts: 2 run, 1 skipped (already cached), 0 failed; 6 entries stored, 3.00 MiB, 4.2 s'
        """
        line = (f"warmed {self.prompts} prompts: {self.ran} run, {self.skipped} skipped (already cached), "
                f"{len(self.failed)} failed; {self.entries_stored} entries stored, "
                f"{self.bytes_stored / 2**20:.2f} MiB, {self.seconds:.1f} s")
        if self.entries_evicted:
            line += f" ({self.entries_evicted} entries evicted again: raise the store's capacity)"
        if self.reseeded:
            line += f"; {self.reseeded} runs on a fresh seed (the given one would have resumed another writer's entry)"
        return line


# -- input ------------------------------------------------------------------------


def read_prompts(path: str | Path) -> list[str]:
    """The prompts of a file: one per line (blank lines and lines starting with ``#`` skipped), or, for a
    ``.jsonl`` file, the ``"prompt"`` of each JSON object line.

    Raises:
        PromptsFileError: the file cannot be read, is not UTF-8, a JSONL line is
            not an object with a non-empty ``"prompt"`` string, or it holds no prompt.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptsFileError(f"cannot read the prompts file {path}: {exc.strerror or exc}; pass a text file "
                               "with one prompt per line") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise PromptsFileError(f"{path}:{line} is not UTF-8 (byte 0x{data[exc.start]:02x}); save the file as UTF-8, "
                               f"e.g. iconv -f latin1 -t utf-8 {path} > prompts-utf8.txt") from None
    jsonl = path.suffix.lower() == ".jsonl"
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or (not jsonl and stripped.startswith("#")):
            continue
        if not jsonl:
            prompts.append(stripped)
            continue
        try:
            row = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise PromptsFileError(f"{path}:{number}: not JSON ({exc.msg}); a .jsonl prompts file holds one "
                                   '{"prompt": "..."} object per line') from None
        prompt = row.get("prompt") if isinstance(row, dict) else None
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptsFileError(f'{path}:{number}: a .jsonl prompts file holds {{"prompt": "..."}} objects with '
                                   "non-empty text; this line has none")
        prompts.append(prompt.strip())
    if not prompts:
        raise PromptsFileError(f"{path} holds no prompt; write one prompt per line (lines starting with # are "
                               "comments)")
    return prompts


def warm_identity(tenant: str, user: str) -> str:
    return f"{tenant}/{user}"


def check_warm_config(config: Any, tenant: str = WARM_TENANT, user: str = WARM_USER) -> None:
    """Refuse a warm-up whose entries would be lost or unusable.

    Args:
        config: the cache's `CacheConfig`.
        tenant, user: the warm-up's writer.

    Raises:
        ConfigError: ``sharing.trusted_writers`` does not name ``tenant/user``, or
            ``store`` has no persistent tier (disk or redis).
    """
    identity = warm_identity(tenant, user)
    trusted = {writer if "/" in writer else f"{writer}/{writer}" for writer in config.sharing.trusted_writers}
    if identity not in trusted:
        raise ConfigError(
            f"flexcache warm writes as {identity}, which sharing.trusted_writers does not name "
            f"(now {list(config.sharing.trusted_writers)}); add {identity!r} to sharing.trusted_writers (and "
            f"{tenant!r} to sharing.tenants), or its entries serve no other user at depth")
    kinds = [tier.kind for tier in config.store.effective_tiers()]
    if not set(kinds) & set(PERSISTENT_KINDS):
        raise ConfigError(
            f"flexcache warm needs a persistent tier to fill, and the config's store has only {', '.join(kinds)} "
            "(process memory, lost when the command exits); add a disk tier ({kind: disk, path: ..., "
            "capacity_bytes: ...}) or a redis tier ({kind: redis, url: ..., capacity_bytes: ...}) to store.tiers")


# -- the warm-up ------------------------------------------------------------------


def call_signature(pipe: Any, model_id: str, kwargs: dict[str, Any]):
    """The generation signature `enable_flexcache` computes for ``pipe(**kwargs)``: its entries' partition."""
    from flexcache.integrations.diffusers import ADAPTERS

    adapter = next((ADAPTERS[cls.__name__] for cls in type(pipe).__mro__ if cls.__name__ in ADAPTERS), None)
    if adapter is None:
        raise PipelineLoadError(f"FlexCache has no adapter for {type(pipe).__name__}; warm a pipeline of one of "
                                f"{', '.join(sorted(ADAPTERS))}")
    parameters = inspect.signature(type(pipe).__call__)
    bound = parameters.bind(pipe, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop("self", None)
    for name, parameter in parameters.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            args.update(args.pop(name, {}))
    return adapter.signature(pipe, args, model_id)


def warm(pipe: Any, cache: Any, prompts: Iterable[str], *, tenant: str = WARM_TENANT, user: str = WARM_USER,
         model_id: str | None = None, call_kwargs: Callable[[str], dict[str, Any]] | None = None, seed: int = 0,
         text_conditioned: bool | None = None, progress: bool = False) -> WarmReport:
    """Run each prompt through `pipe` with `cache` enabled, written by ``tenant/user``.

    A prompt this writer already has an entry of (same pipeline settings) is
    skipped. A prompt whose run fails, or stores nothing, is listed in the
    report with the reason; the others still run. The cache is left open:
    close it to finish its background copies to the persistent tiers.

    Args:
        pipe: a diffusers pipeline of a class FlexCache serves.
        cache: the `FlexCache` to fill; its config must pass `check_warm_config`.
        prompts: the prompt texts.
        tenant, user: the writer, named in ``sharing.trusted_writers``.
        model_id: the model's name in the generation signature; the one the
            serving processes pass to `enable_flexcache` (``flexcache serve``:
            its ``--model``), else nothing they ask for finds these entries.
        call_kwargs: ``prompt -> further pipeline arguments`` (sizes, steps, the
            embeddings a pipeline without a text encoder takes).
        seed: the runs' seed (a fresh secret one where this one would resume another writer's entry).
        text_conditioned: ``flexcache_text_conditioned`` of the calls: True where
            `call_kwargs` computes embeddings from the prompt text alone; None:
            automatic (True when the pipeline gets the text itself).
        progress: show a progress bar.

    Returns:
        A `WarmReport`.

    Raises:
        ConfigError: the writer is not trusted, or the store has no persistent tier.

    Example:
        >>> from flexcache.serving.warm import warm   # doctest: +SKIP
        >>> report = warm(pipe, cache, ["a red fox running through snow"], model_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers")  # doctest: +SKIP
        >>> print(report.summary())                   # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    from flexcache.integrations.diffusers import enable_flexcache, last_call_report

    check_warm_config(cache.config, tenant, user)
    if not any(tier.persistent or tier.shared for tier in cache.store.tiers):
        raise ConfigError("flexcache warm needs a cache with a persistent tier (disk or redis); this cache's tiers "
                          f"are {', '.join(tier.name for tier in cache.store.tiers)}")
    prompts = list(prompts)
    model_id = model_id or getattr(pipe, "name_or_path", None) or type(pipe).__name__
    enable_flexcache(pipe, cache, tenant=tenant, model_id=model_id)
    call_kwargs = call_kwargs or (lambda prompt: {})
    report = WarmReport(prompts=len(prompts))
    stored: list[str] = []
    started = time.perf_counter()
    for prompt in tqdm(prompts, desc="warm", unit="prompt", disable=not progress):
        try:
            kwargs = call_kwargs(prompt)
            signature = call_signature(pipe, model_id, {"prompt": prompt, **kwargs})
            run_seed = _run_seed(cache, prompt, signature, tenant, user, seed)
            if run_seed is None:
                report.skipped += 1
                continue
            keys = _run(pipe, cache, prompt, kwargs, tenant, user, run_seed, text_conditioned, last_call_report)
        except Exception as exc:  # noqa: BLE001 - one prompt's failure is reported; the others run
            report.failed.append((prompt, f"{type(exc).__name__}: {exc}"))
            continue
        report.ran += 1
        report.reseeded += run_seed != seed
        stored.extend(keys)
    held = {entry.key: entry.nbytes for entry in cache.entries(tenant)}
    report.entries_stored = len(stored)
    report.entries_evicted = sum(key not in held for key in stored)
    report.bytes_stored = sum(held.get(key, 0) for key in stored)
    report.seconds = time.perf_counter() - started
    return report


class _Refused(FlexCacheError):
    """A prompt the warm-up leaves out (the message says why)."""


def _run_seed(cache: Any, prompt: str, signature: Any, tenant: str, user: str, seed: int) -> int | None:
    """The seed to run `prompt` with; None when this writer already has an entry of it."""
    # Plans are cheap (an embedding and a search); they only ask, the run makes its own.
    own = cache.plan(prompt, signature, tenant=tenant, user=user, any_seed=True)
    if own.hit and not own.cross_user and own.source_prompt == prompt:
        return None
    for candidate in (seed, secrets.randbits(63)):
        if not cache.plan(prompt, signature, tenant=tenant, user=user, seed=candidate).cross_user:
            return candidate
    raise _Refused("its run would resume from another writer's entry at any seed (planner."
                   "cross_seed_max_fraction > 0), and a trusted entry must not carry an untrusted writer's content; "
                   "warm with planner.cross_seed_max_fraction: 0")


def _run(pipe: Any, cache: Any, prompt: str, kwargs: dict[str, Any], tenant: str, user: str, seed: int,
         text_conditioned: bool | None, last_call_report: Callable) -> list[str]:
    """One warm-up run; the keys it stored (raises `_Refused` when it stored none)."""
    import torch

    flexcache_args: dict[str, Any] = {"flexcache_tenant": tenant, "flexcache_user": user}
    if text_conditioned is not None:
        flexcache_args["flexcache_text_conditioned"] = text_conditioned
    before = _write_counters(cache)
    with torch.inference_mode():
        pipe(prompt=prompt, generator=torch.Generator().manual_seed(seed), **flexcache_args, **kwargs)
    report = last_call_report(pipe)
    if report.inserted:
        return list(report.inserted)
    reason = report.insert_error or report.cache_error or (report.bypass_reason and
                                                             f"ran uncached: {report.bypass_reason}")
    if not reason:
        after = _write_counters(cache)
        if after["duplicate_inserts"] > before["duplicate_inserts"]:
            reason = "every checkpoint of its run was stored already (by this writer, from another seed)"
        elif after["refused"] > before["refused"]:
            reason = ("sharing.user_max_entries or sharing.user_inserts_per_minute refused the write; raise them "
                      "for the warm-up writer")
        else:
            reason = "the run captured no checkpoint to store"
    raise _Refused(f"stored nothing: {reason}")


def _write_counters(cache: Any) -> dict[str, int]:
    stats = cache.stats()
    sharing = stats.get("sharing", {})
    return {"duplicate_inserts": stats["duplicate_inserts"],
            "refused": sharing.get("quota_refused", 0) + sharing.get("rate_refused", 0)}


# -- pipelines ----------------------------------------------------------------------


def load_pipeline(name: str, *, steps: int, guidance: float) -> tuple[Any, Callable[[str], dict[str, Any]], bool | None]:
    """``(pipe, prompt -> call arguments, text_conditioned)`` for ``--pipeline``.

    The arguments are those ``flexcache serve --model <name>`` calls with
    (`serving.worker`), so the entries land in the partition its requests search.

    Raises:
        PipelineLoadError: `name` is not ``toyworld`` and diffusers cannot load it.
    """
    import torch

    if name == TOYWORLD:
        from flexcache.toyworld.model import (
            WEIGHTS,
            PromptEncoder,
            pipeline_kwargs,
            toyworld_pipeline,
        )

        pipe = toyworld_pipeline(WEIGHTS)
        encoder = PromptEncoder()
        pipe.set_progress_bar_config(disable=True)

        def toyworld_kwargs(prompt: str) -> dict[str, Any]:
            return {"negative_prompt": "", **pipeline_kwargs(encoder([prompt]), steps=steps, guidance=guidance)}

        # The service computes the embeddings from the text itself: the entries follow their text.
        return pipe, toyworld_kwargs, True
    try:
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(name, torch_dtype=torch.bfloat16)
    except Exception as exc:  # noqa: BLE001 - whatever diffusers or the hub raised, said once with what to do
        raise PipelineLoadError(
            f"cannot load the diffusers pipeline {name!r}: {type(exc).__name__}: {exc}. Pass a model id whose "
            "weights this machine has (huggingface-cli download <id>, or HF_HOME pointing at them), a local "
            f"directory saved by save_pretrained, or --pipeline {TOYWORLD}") from None
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)

    def diffusers_kwargs(prompt: str) -> dict[str, Any]:
        # The latents are what is cached: the warm-up decodes no video.
        return {"num_inference_steps": steps, "guidance_scale": guidance, "output_type": "latent"}

    return pipe, diffusers_kwargs, None


# -- the command ------------------------------------------------------------------


def add_warm_command(commands: Any) -> None:
    """Register ``flexcache warm`` on the CLI's subcommands."""
    parser = commands.add_parser(
        "warm", help="fill the config's persistent store from the service's own runs over a prompts file, written "
                     "by a trusted writer (sharing.trusted_writers), so the entries serve every user at depth")
    parser.add_argument("prompts", metavar="PROMPTS", help="UTF-8 text, one prompt per line (# comments), or "
                        'JSONL with {"prompt": ...} rows (.jsonl)')
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help="YAML config file (default: $FLEXCACHE_CONFIG); needs a disk or redis tier and the "
                             "writer in sharing.trusted_writers")
    parser.add_argument("--pipeline", default=TOYWORLD,
                        help="toyworld (default), or a diffusers model id or directory (as flexcache serve --model)")
    parser.add_argument("--tenant", default=WARM_TENANT, help=f"the writer's tenant (default {WARM_TENANT})")
    parser.add_argument("--user", default=WARM_USER, help=f"the writer's user (default {WARM_USER})")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20, as flexcache serve)")
    parser.add_argument("--guidance", type=float, default=3.0, help="guidance scale (default 3, as flexcache serve)")
    parser.add_argument("--seed", type=int, default=0, help="the runs' seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run_warm_command)


def run_warm_command(args: argparse.Namespace) -> int:
    """``flexcache warm``: 0 when every prompt ran or was skipped, 1 when some failed (listed on stderr)."""
    from flexcache import CacheConfig, FlexCache

    if args.steps < 2:
        raise FlexCacheError("--steps must be >= 2")
    if not 0 <= args.seed < 2**63:
        raise FlexCacheError("--seed must be in 0 .. 2**63-1")
    prompts = read_prompts(args.prompts)
    config = CacheConfig.load(args.config)
    check_warm_config(config, args.tenant, args.user)  # before anything loads
    cache = FlexCache(config)
    try:
        pipe, call_kwargs, text_conditioned = load_pipeline(args.pipeline, steps=args.steps, guidance=args.guidance)
        report = warm(pipe, cache, prompts, tenant=args.tenant, user=args.user, model_id=args.pipeline,
                      call_kwargs=call_kwargs, seed=args.seed, text_conditioned=text_conditioned,
                      progress=not args.no_progress)
    finally:
        closing = time.perf_counter()
        cache.close()  # waits for the copies to the persistent tiers
    report.seconds += time.perf_counter() - closing
    for prompt, reason in report.failed:
        print(f"flexcache warm: failed: {prompt!r}: {reason}", file=sys.stderr)
    print(report.summary())
    return 0 if report.ok else 1
