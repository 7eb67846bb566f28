"""PNG plots of a `bench serve` sweep: throughput and hit rate against the storage budget, one line per system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flexcache.core import BackendUnavailableError, FlexCacheError

MARKERS = ("o", "s", "^", "D", "v", "x", "P", "*")
PLOTTED = (("throughput_rph", "throughput (requests / hour)", "throughput"),
           ("hit_rate", "hit rate", "hit-rate"))


def write_sweep_plots(result: dict[str, Any], prefix: str | Path) -> list[Path]:
    """Writes ``<prefix>-throughput.png`` and ``<prefix>-hit-rate.png``; returns their paths."""
    try:
        import matplotlib
    except ImportError:
        raise BackendUnavailableError("plots need matplotlib: pip install 'flexcache[bench]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    sweep = result.get("sweep") or {}
    if not sweep or not next(iter(sweep.values())):
        raise FlexCacheError("the result holds no budget sweep to plot; run bench serve with --sweep-gb")
    profile, workers = result["profile"]["name"], result["settings"]["workers"]
    written = []
    for field, label, suffix in PLOTTED:
        figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        for number, (name, points) in enumerate(sweep.items()):
            budgets = [p["budget_bytes"] / 1e9 for p in points]
            # Shrinking markers keep systems with equal figures visible on top of each other; an undefended
            # twin is dotted, so its gap to the defended line (the defence cost) reads at a glance.
            axes.plot(budgets, [p[field] for p in points], marker=MARKERS[number % len(MARKERS)],
                      markersize=max(3, 10 - number), label=name,
                      linestyle="--" if name == "nocache" else ":" if "undefended" in name else "-")
        axes.set_xscale("log", base=2)
        axes.set_xticks(budgets, [f"{b:g}" for b in budgets])
        axes.set_xlabel("storage budget per system (GB)")
        axes.set_ylabel(label)
        if field == "hit_rate":
            axes.set_ylim(0, 1)
        axes.set_title(f"{label} vs budget: {profile}, {workers} workers, {result['settings']['requests']} requests",
                       fontsize=9)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
        figure.tight_layout()
        path = Path(f"{prefix}-{suffix}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written
