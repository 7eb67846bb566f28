"""`flexcache bench splitter`: accuracy of the prompt splitter on a labelled set.

The set is JSONL, one ``{"prompt", "object", "background", "split"}`` per line
(`tests/data/prompt_splits.jsonl`: realistic text-to-video prompts labelled by
meaning, a "dev" split the rules were tuned on and a "test" split they were not).
Exact match compares the normalised parts word by word (punctuation ignored);
F1 is token-overlap F1 per part, averaged over prompts: ``object_f1`` and
``background_f1`` for each part (an empty background labelled and predicted
empty scores 1), and ``f1`` their mean.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from flexcache.engine import PromptParts, split_prompt, words

DEFAULT_LABELS = Path("tests/data/prompt_splits.jsonl")


def _tokens(text: str) -> list[str]:
    return words(text)


def _f1(predicted: str, labelled: str) -> float:
    """Token-overlap F1; 1.0 when both are empty."""
    p, g = _tokens(predicted), _tokens(labelled)
    if not p and not g:
        return 1.0
    overlap = sum((Counter(p) & Counter(g)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(p), overlap / len(g)
    return 2 * precision * recall / (precision + recall)


def _load(path: str | Path) -> list[dict[str, str]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = {"prompt", "object", "background", "split"} - row.keys()
            if missing:
                raise ValueError(f"{path}:{number} lacks {sorted(missing)}")
            rows.append(row)
    return rows


def score_parts(row: dict[str, str]) -> tuple[PromptParts, bool, float, float]:
    """Predicted parts, exact match, object F1 and background F1 for one labelled row."""
    parts = split_prompt(row["prompt"])
    exact = _tokens(parts.object) == _tokens(row["object"]) and _tokens(
        parts.background
    ) == _tokens(row["background"])
    return parts, exact, _f1(parts.object, row["object"]), _f1(parts.background, row["background"])


def score_row(row: dict[str, str]) -> tuple[PromptParts, bool, float]:
    """Predicted parts, exact match and mean per-part F1 for one labelled row."""
    parts, exact, object_f1, background_f1 = score_parts(row)
    return parts, exact, (object_f1 + background_f1) / 2


def evaluate_splits(path: str | Path) -> dict[str, dict[str, float]]:
    """Score `split_prompt` on a labelled JSONL set (prompt, object, background, split).

    Returns:
        ``{split: {"count", "exact_match", "f1", "object_f1", "background_f1"}}`` for
        every split in the file and for ``"overall"``; ``f1`` is the mean of the two parts.

    Example:
        >>> evaluate_splits("tests/data/prompt_splits.jsonl")["overall"]["count"]  # doctest: +SKIP
        206
    """
    totals: dict[str, list[float]] = {}
    for row in _load(path):
        _, exact, object_f1, background_f1 = score_parts(row)
        for name in (row["split"], "overall"):
            bucket = totals.setdefault(name, [0, 0.0, 0.0, 0.0])
            bucket[0] += 1
            bucket[1] += exact
            bucket[2] += object_f1
            bucket[3] += background_f1
    order = sorted(k for k in totals if k != "overall") + ["overall"]
    scores = {}
    for name in order:
        if name not in totals:
            continue
        count, exact, object_f1, background_f1 = totals[name]
        scores[name] = {
            "count": int(count),
            "exact_match": exact / count,
            "f1": (object_f1 + background_f1) / (2 * count),
            "object_f1": object_f1 / count,
            "background_f1": background_f1 / count,
        }
    return scores


def failures(path: str | Path, split: str = "all") -> list[tuple[dict[str, str], PromptParts, float]]:
    """(row, predicted parts, F1) for every labelled row the splitter does not match exactly."""
    out = []
    for row in _load(path):
        if split not in ("all", row["split"]):
            continue
        parts, exact, f1 = score_row(row)
        if not exact:
            out.append((row, parts, f1))
    return out


def format_splitter_table(scores: dict[str, dict[str, float]]) -> str:
    lines = [
        "| split | prompts | exact match | token F1 | object F1 | background F1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in scores.items():
        lines.append(
            f"| {name} | {row['count']} | {row['exact_match']:.3f} | {row['f1']:.3f} "
            f"| {row['object_f1']:.3f} | {row['background_f1']:.3f} |"
        )
    return "\n".join(lines)
