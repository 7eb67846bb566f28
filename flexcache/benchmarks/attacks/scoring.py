"""How attack runs are scored: success rates with trial counts and a 95 % upper bound on them.

"<= 5 % success" over a handful of trials means little: 0 of 8 is still
consistent with a 31 % attack. Every row therefore carries its trials and an
exact (Clopper-Pearson) one-sided 95 % upper bound on its success rate.
"""

from __future__ import annotations

import math
from typing import Any

CONFIDENCE = 0.95


def _binomial_cdf(successes: int, trials: int, rate: float) -> float:
    """P(X <= successes) for X ~ Binomial(trials, rate), summed in log space (no overflow)."""
    if rate <= 0.0:
        return 1.0
    if rate >= 1.0:
        return 1.0 if successes >= trials else 0.0
    log_rate, log_rest = math.log(rate), math.log1p(-rate)
    total = 0.0
    for k in range(successes + 1):
        log_term = (math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
                    + k * log_rate + (trials - k) * log_rest)
        total += math.exp(log_term)
    return min(1.0, total)


def upper_bound(successes: int, trials: int, confidence: float = CONFIDENCE) -> float:
    """The exact (Clopper-Pearson) one-sided upper confidence bound on a success rate.

    Args:
        successes: successes observed, 0 .. trials.
        trials: trials run; 0 gives 1.0 (nothing was measured).
        confidence: the bound's confidence, in (0, 1).

    Returns:
        The largest rate at which `successes` or fewer would still be seen with
        probability 1 - `confidence`.

    Example:
        >>> round(upper_bound(0, 20), 3)  # 0 of 20: the rate may still be up to 13.9 %
        0.139
        >>> upper_bound(5, 5)
        1.0
    """
    if trials <= 0:
        return 1.0
    if successes >= trials:
        return 1.0
    low, high = successes / trials, 1.0
    for _ in range(60):  # bisection: the CDF falls as the rate rises
        middle = (low + high) / 2
        if _binomial_cdf(successes, trials, middle) > 1.0 - confidence:
            low = middle
        else:
            high = middle
    return high


def lower_bound(successes: int, trials: int, confidence: float = CONFIDENCE) -> float:
    """The exact one-sided lower confidence bound on a success rate (the upper bound of the failures).

    Example:
        >>> lower_bound(0, 10)
        0.0
        >>> round(lower_bound(20, 20), 3)
        0.861
    """
    if trials <= 0:
        return 0.0
    return 1.0 - upper_bound(trials - successes, trials, confidence)


def with_bound(row: dict[str, Any]) -> dict[str, Any]:
    """`row` (``successes`` of ``trials``) with its ``success_upper_95``."""
    return {**row, "success_upper_95": upper_bound(row["successes"], row["trials"])}


def mutual_information(true_positive: float, false_positive: float) -> float:
    """I(X; Y) in bits of a binary channel with uniform input.

    Example:
        >>> mutual_information(1.0, 0.0)
        1.0
        >>> mutual_information(0.5, 0.5)
        0.0
    """
    def entropy(p: float) -> float:
        return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
    return max(0.0, entropy((true_positive + false_positive) / 2)
               - (entropy(true_positive) + entropy(false_positive)) / 2)


def channel_row(message: list[int], received: list[int]) -> dict[str, Any]:
    """A covert channel's scores: its advantage (true minus false positive rate) is its success rate.

    The upper bound on the advantage takes each rate's bound at 97.5 % (the
    two hold together at 95 %): the upper bound on the true positives minus
    the lower bound on the false positives.

    Example:
        >>> row = channel_row([1, 0, 1, 0], [1, 0, 1, 1])
        >>> row["success_rate"], row["true_positive_rate"], row["false_positive_rate"]
        (0.5, 1.0, 0.5)
    """
    ones = [r for m, r in zip(message, received) if m == 1]
    zeros = [r for m, r in zip(message, received) if m == 0]
    true_positive = sum(ones) / len(ones) if ones else 0.0
    false_positive = sum(zeros) / len(zeros) if zeros else 0.0
    each = 1.0 - (1.0 - CONFIDENCE) / 2
    bound = upper_bound(sum(ones), len(ones), each) - lower_bound(sum(zeros), len(zeros), each)
    return {"trials": len(message), "bits_correct": sum(m == r for m, r in zip(message, received)),
            "true_positive_rate": true_positive, "false_positive_rate": false_positive,
            "success_rate": max(0.0, true_positive - false_positive),
            "success_upper_95": min(1.0, max(0.0, bound)),
            "bits_per_query": mutual_information(true_positive, false_positive)}
