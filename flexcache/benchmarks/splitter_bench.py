"""`flexcache bench splitter`: accuracy of the prompt splitter on a labelled set.

The set is JSONL, one ``{"prompt", "object", "background", "split"}`` per line
(`tests/data/prompt_splits.jsonl`: realistic text-to-video prompts labelled by
meaning, a "dev" split the rules were tuned on and a "test" split they were not).
Exact match compares the normalised parts word by word (punctuation ignored);
F1 is token-overlap F1 per part, averaged over the two parts and over prompts.
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


def score_row(row: dict[str, str]) -> tuple[PromptParts, bool, float]:
    """Predicted parts, exact match and mean per-part F1 for one labelled row."""
    parts = split_prompt(row["prompt"])
    exact = _tokens(parts.object) == _tokens(row["object"]) and _tokens(
        parts.background
    ) == _tokens(row["background"])
    f1 = (_f1(parts.object, row["object"]) + _f1(parts.background, row["background"])) / 2
    return parts, exact, f1


def evaluate_splits(path: str | Path) -> dict[str, dict[str, float]]:
    """Score `split_prompt` on a labelled JSONL set (prompt, object, background, split).

    Returns:
        ``{split: {"count", "exact_match", "f1"}}`` for every split in the file and
        for ``"overall"``.

    Example:
        >>> evaluate_splits("tests/data/prompt_splits.jsonl")["overall"]["count"]  # doctest: +SKIP
        206
    """
    totals: dict[str, list[float]] = {}
    for row in _load(path):
        _, exact, f1 = score_row(row)
        for name in (row["split"], "overall"):
            bucket = totals.setdefault(name, [0, 0.0, 0.0])
            bucket[0] += 1
            bucket[1] += exact
            bucket[2] += f1
    order = sorted(k for k in totals if k != "overall") + ["overall"]
    return {
        name: {
            "count": int(totals[name][0]),
            "exact_match": totals[name][1] / totals[name][0],
            "f1": totals[name][2] / totals[name][0],
        }
        for name in order
        if name in totals
    }


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
    lines = ["| split | prompts | exact match | token F1 |", "|---|---|---|---|"]
    for name, row in scores.items():
        lines.append(f"| {name} | {row['count']} | {row['exact_match']:.3f} | {row['f1']:.3f} |")
    return "\n".join(lines)
