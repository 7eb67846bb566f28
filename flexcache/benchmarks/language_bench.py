"""`flexcache bench languages`: do near-duplicate prompts match across languages, and edits not?

Input: JSONL rows ``{"group", "lang", "kind", "prompt"}``, kinds ``original``,
``translation``, ``paraphrase``, ``edit_subject``, ``edit_setting``,
``edit_action``, ``unrelated`` and ``odd`` (bench/data/multilingual-*.jsonl).
Pairs, scored by the cosine of the two prompts' vectors:

- positives: a group's original with each of its translations and paraphrases
  (the cache should serve one from the other);
- hard negatives: a group's original with each of its edits (another subject,
  setting or action: the cache must not serve one for the other at full depth);
- easy negatives: two prompts of different groups, and an ``unrelated`` prompt
  with any other (``odd`` rows take part in no pair; they only have to embed).

Per embedder: ROC AUC of positives against easy and against hard negatives;
the cosine threshold above which 1 % (and 0.1 %) of easy negatives fall, the
share of positives above it (recall) and the share of hard negatives above it;
each per language pair (en-en, en-zh, zh-zh, en-other, other: neither side
English), at the one threshold of all pairs, as a cache would use it. Also the
median embed latency of one prompt on this machine's CPU and the model's size
on disk.

Example:
    >>> rows = [{"group": "a", "lang": "en", "kind": "original", "prompt": "x"},
    ...         {"group": "a", "lang": "zh", "kind": "translation", "prompt": "y"},
    ...         {"group": "b", "lang": "en", "kind": "original", "prompt": "z"}]
    >>> [(p.kind, p.pair) for p in labelled_pairs(rows)]
    [('positive', 'en-zh'), ('easy', 'en-en'), ('easy', 'en-zh')]
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flexcache.benchmarks.serve.workload import jsonl_values
from flexcache.core import ConfigError

KINDS = ("original", "translation", "paraphrase", "edit_subject", "edit_setting", "edit_action", "unrelated", "odd")
POSITIVE_KINDS = ("translation", "paraphrase")
EDIT_KINDS = ("edit_subject", "edit_setting", "edit_action")
LANGUAGE_PAIRS = ("en-en", "en-zh", "zh-zh", "en-other", "other")
EASY_RATES = (0.01, 0.001)
DEFAULT_EMBEDDERS = ("all-MiniLM-L6-v2", "use-multilingual-v3", "multilingual-e5-small")
LATENCY_SAMPLE = 100
# Each embedder's full-prompt threshold calibrated on the toy world (`flexcache bench quality`'s rule:
# the cosine 0.1 % of random toy-world prompt pairs with another spec reach; K = 20 % of N above it).
# MiniLM: the shipped table (bench/results/2026-12-02-cpu-quality.json); USE: the same procedure on its
# cosines, the adherence rows reused (`engine.packaged_embedders.USE_CALIBRATION`).
CALIBRATED_FULL_THRESHOLDS = {"all-MiniLM-L6-v2": 0.8897, "use-multilingual-v3": 0.8663, "multilingual": 0.8663}


@dataclass(frozen=True)
class Pair:
    first: int  # row indices
    second: int
    kind: str  # positive | hard | easy
    pair: str  # language pair


def load_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a multilingual prompt file; `ConfigError` names a bad line and what it lacks."""
    rows = []
    for where, row in jsonl_values(path, ConfigError):
        if not isinstance(row, dict) or any(not isinstance(row.get(k), str) for k in ("group", "lang", "kind")):
            raise ConfigError(f"{where}: needs string fields group, lang, kind and prompt")
        if row["kind"] not in KINDS:
            raise ConfigError(f"{where}: kind {row['kind']!r} is not one of {KINDS}")
        if "prompt" not in row:
            raise ConfigError(f"{where}: has no prompt")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path} holds no rows")
    return rows


def language_pair(a: str, b: str) -> str:
    """en-en, en-zh, zh-zh, en-other (English and a third language) or other (no English side).

    Example:
        >>> language_pair("zh", "en"), language_pair("en", "ja"), language_pair("zh", "ja")
        ('en-zh', 'en-other', 'other')
    """
    a, b = sorted((a.split("-")[0].lower(), b.split("-")[0].lower()))
    if (a, b) in (("en", "en"), ("en", "zh"), ("zh", "zh")):
        return f"{a}-{b}"
    return "en-other" if "en" in (a, b) else "other"


def labelled_pairs(rows: Sequence[dict[str, str]]) -> list[Pair]:
    """Positive, hard and easy pairs of `rows` (see the module doc)."""
    usable = [i for i, r in enumerate(rows) if r["kind"] != "odd"]
    pairs = []
    for n, i in enumerate(usable):
        for j in usable[n + 1:]:
            a, b = rows[i], rows[j]
            kinds = {a["kind"], b["kind"]}
            if a["group"] != b["group"] or "unrelated" in kinds:
                kind = "easy"
            elif "original" in kinds and len(kinds) == 2 and kinds & set(POSITIVE_KINDS):
                kind = "positive"
            elif "original" in kinds and len(kinds) == 2 and kinds & set(EDIT_KINDS):
                kind = "hard"
            else:
                continue  # same group, neither pair kind (two translations, a paraphrase and an edit)
            pairs.append(Pair(i, j, kind, language_pair(a["lang"], b["lang"])))
    return pairs


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney U / n_pos n_neg).

    Example:
        >>> roc_auc(np.array([0.9, 0.8]), np.array([0.1, 0.8]))
        0.875
    """
    if len(positives) == 0 or len(negatives) == 0:
        return None
    ordered = np.sort(negatives)
    below = np.searchsorted(ordered, positives, side="left")
    ties = np.searchsorted(ordered, positives, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(positives) * len(negatives)))


def easy_threshold(easy: np.ndarray, rate: float) -> float:
    """The cosine that at most `rate` of the easy negatives exceed (a match is cosine > threshold).

    Example:
        >>> easy_threshold(np.arange(1000) / 1000, 0.01)
        0.989
    """
    ordered = np.sort(easy)[::-1]
    return float(ordered[min(int(rate * len(ordered)), len(ordered) - 1)])


def score(rows: Sequence[dict[str, str]], vectors: np.ndarray, pairs: Sequence[Pair] | None = None,
          calibrated: float | None = None) -> dict[str, Any]:
    """The metrics of one embedder's unit `vectors` (one row per prompt row) on `rows`; with
    `calibrated`, also at that cosine (the embedder's calibrated full-prompt threshold)."""
    pairs = labelled_pairs(rows) if pairs is None else pairs
    first = np.array([p.first for p in pairs])
    second = np.array([p.second for p in pairs])
    cosines = np.einsum("ij,ij->i", vectors[first], vectors[second]).astype(np.float64)
    kinds = np.array([p.kind for p in pairs])
    langs = np.array([p.pair for p in pairs])

    def block(mask: np.ndarray, thresholds: dict[float, float]) -> dict[str, Any]:
        pos, hard, easy = (cosines[mask & (kinds == k)] for k in ("positive", "hard", "easy"))
        out: dict[str, Any] = {"positives": int(len(pos)), "hard_negatives": int(len(hard)),
                               "easy_negatives": int(len(easy)),
                               "auc_easy": _round(roc_auc(pos, easy)), "auc_hard": _round(roc_auc(pos, hard)),
                               "mean_cosine": {"positive": _mean(pos), "hard": _mean(hard), "easy": _mean(easy)}}
        for rate, threshold in thresholds.items():
            out[f"at_easy_{_pct(rate)}"] = {
                "threshold": round(threshold, 4),
                "recall": _share(pos, threshold), "hard_above": _share(hard, threshold),
                "easy_above": _share(easy, threshold)}
        if calibrated is not None:
            out["at_calibrated"] = {"threshold": calibrated, "recall": _share(pos, calibrated),
                                    "hard_above": _share(hard, calibrated), "easy_above": _share(easy, calibrated)}
        return out

    easy_all = cosines[kinds == "easy"]
    if len(easy_all) == 0:
        raise ConfigError("the rows make no easy negatives: they need at least two groups")
    thresholds = {rate: easy_threshold(easy_all, rate) for rate in EASY_RATES}
    everything = np.ones(len(pairs), dtype=bool)
    return {"all": block(everything, thresholds),
            "by_language_pair": {lp: block(langs == lp, thresholds) for lp in LANGUAGE_PAIRS if (langs == lp).any()}}


def _share(values: np.ndarray, threshold: float) -> float | None:
    return None if len(values) == 0 else round(float((values > threshold).mean()), 4)


def _mean(values: np.ndarray) -> float | None:
    return None if len(values) == 0 else round(float(values.mean()), 4)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _pct(rate: float) -> str:
    return f"{rate * 100:g}pct".replace(".", "_")


def embed_rows(embedder, rows: Sequence[dict[str, str]]) -> np.ndarray:
    """Unit vectors of every row's prompt (odd rows too: each must embed), as float32 numpy; an
    empty or whitespace prompt (refused by the engine, in no pair) gets zeros."""
    prompts = [r["prompt"] for r in rows]
    unique = [p for p in dict.fromkeys(prompts) if isinstance(p, str) and p.strip()]
    vectors = {p: None for p in prompts}
    for start in range(0, len(unique), 64):
        chunk = unique[start:start + 64]
        for text, vector in zip(chunk, embedder.embed(chunk).float().cpu().numpy()):
            vectors[text] = vector
    dim = next(v for v in vectors.values() if v is not None).shape[0]
    out = np.stack([np.zeros(dim, np.float32) if vectors[p] is None else vectors[p] for p in prompts])
    if not np.isfinite(out).all():
        raise ConfigError("an embedder gave non-finite values")
    return out


def embed_latency(embedder, prompts: Sequence[str], sample: int = LATENCY_SAMPLE) -> dict[str, float]:
    """Milliseconds to embed one prompt (a call per prompt, after a warm-up), median and p90."""
    chosen = list(dict.fromkeys(prompts))[:sample]
    embedder.embed(chosen[:1])  # load and warm up
    times = []
    for prompt in chosen:
        start = time.perf_counter()
        embedder.embed([prompt])
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2),
            "prompts": len(times)}


def model_bytes(embedder) -> int | None:
    """The size on disk of an embedder's packaged model, where it can tell."""
    sizer: Callable[[], int] | None = getattr(embedder, "package_bytes", None)
    if sizer is not None:
        return int(sizer())
    path = getattr(embedder, "packaged_model_path", None)
    if path is not None and getattr(getattr(embedder, "config", None), "model", None) == "all-MiniLM-L6-v2":
        return sum(f.stat().st_size for f in Path(path()).rglob("*") if f.is_file())
    return None


def run_language_bench(data: dict[str, str | Path], embedders: Sequence[str] = DEFAULT_EMBEDDERS,
                       progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score each named embedder (an ``embedder.model`` value) on each named data file."""
    from flexcache.core import EmbedderConfig
    from flexcache.engine import build_embedder

    rows = {name: load_rows(path) for name, path in data.items()}
    pairs = {name: labelled_pairs(r) for name, r in rows.items()}
    result: dict[str, Any] = {
        "device": f"CPU: {platform.processor() or platform.machine()}, {_cpu_count()} cores visible",
        "data": {name: {"path": str(path), "rows": len(rows[name]),
                        "pairs": {k: sum(p.kind == k for p in pairs[name]) for k in ("positive", "hard", "easy")}}
                 for name, path in data.items()},
        "embedders": {}, "scores": {name: {} for name in data}}
    for model in embedders:
        if progress:
            progress(f"embedding with {model}")
        embedder = build_embedder(EmbedderConfig(model=model, device="cpu"))
        start = time.perf_counter()
        embedder.embed(["load"])
        load_s = time.perf_counter() - start
        all_prompts = [r["prompt"] for name in data for r in rows[name] if r["kind"] != "odd"]
        load_before = _load_average()
        latency = embed_latency(embedder, all_prompts)
        latency["load_average_1min"] = [load_before, _load_average()]  # the CPU may be shared: say how busy
        result["embedders"][model] = {"identity": getattr(embedder, "identity", None), "dim": embedder.dim,
                                      "model_bytes": model_bytes(embedder), "load_s": round(load_s, 2),
                                      "latency": latency}
        for name in data:
            result["scores"][name][model] = score(rows[name], embed_rows(embedder, rows[name]), pairs[name],
                                                  CALIBRATED_FULL_THRESHOLDS.get(model))
    return result


def _load_average() -> float | None:
    import os

    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def format_languages_table(result: dict[str, Any], data_name: str) -> str:
    """A markdown table of one data file's scores per embedder and language pair."""
    lines = [f"### {data_name} ({result['data'][data_name]['path']}: {result['data'][data_name]['rows']} rows; "
             f"pairs: {result['data'][data_name]['pairs']})", "",
             "| embedder | pair | pos | AUC easy | AUC hard | thr @1 % easy | recall @1 % | hard above @1 % | "
             "recall @0.1 % | hard above @0.1 % | calibrated thr | recall | hard above | easy above |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, scores in result["scores"][data_name].items():
        for label, block in [("all", scores["all"]), *scores["by_language_pair"].items()]:
            one, tenth = block["at_easy_1pct"], block["at_easy_0_1pct"]
            cal = block.get("at_calibrated")
            cal_cells = ("- | - | - | -" if cal is None else f"{cal['threshold']:.3f} | {_fmt(cal['recall'])} | "
                         f"{_fmt(cal['hard_above'])} | {_fmt(cal['easy_above'])}")
            lines.append(f"| {model} | {label} | {block['positives']} | {_fmt(block['auc_easy'])} | "
                         f"{_fmt(block['auc_hard'])} | {one['threshold']:.3f} | {_fmt(one['recall'])} | "
                         f"{_fmt(one['hard_above'])} | {_fmt(tenth['recall'])} | {_fmt(tenth['hard_above'])} | "
                         f"{cal_cells} |")
    return "\n".join(lines)


def format_embedders_table(result: dict[str, Any]) -> str:
    lines = ["| embedder | dim | model on disk | load | embed one prompt (median / p90) | CPU load average |",
             "|---|---|---|---|---|---|"]
    for model, info in result["embedders"].items():
        size = "-" if info["model_bytes"] is None else f"{info['model_bytes'] / 2**20:.0f} MiB"
        latency = info["latency"]
        lines.append(f"| {model} | {info['dim']} | {size} | {info['load_s']:.1f} s | "
                     f"{latency['median_ms']:.1f} / {latency['p90_ms']:.1f} ms | "
                     f"{' -> '.join(str(x) for x in latency.get('load_average_1min', []))} |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
