"""How to read a calibration: a table of each rule's bands, and a plot of quality against K per band."""

from __future__ import annotations

from pathlib import Path

from flexcache.quality.rules import CalibratedRules


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_calibration(rules: CalibratedRules) -> str:
    """A Markdown summary: the tables fitted, then per rule and band the mean drop (upper bound) at each K."""
    report = rules.report
    lines = [f"Calibrated: {rules.describe()}",
             f"{report.get('prompts')} prompts, {report.get('runs')} runs in {report.get('seconds')} s; "
             f"a depth is kept while the {rules.confidence:.0%} upper bound of the mean drop stays <= {rules.tolerance:g}",
             "", f"similarity_table: {[list(r) for r in rules.similarity_table]}",
             f"part_table: {[list(r) for r in rules.part_table]}",
             f"region_table ({rules.region_method}): {[list(r) for r in rules.region_table]}", ""]
    fractions = [f"{f:g}" for f in rules.checkpoint_fractions]
    lines += ["| rule | band | pairs | fitted K/N | " + " | ".join(f"drop at {f}" for f in fractions) + " |",
              "|---|---|---|---|" + "---|" * len(fractions)]
    for rule, data in report.get("rules", {}).items():
        for band in data["bands"]:
            cells = []
            for f in fractions:
                row = band["by_fraction"].get(f, {})
                diversity = row.get("diversity")
                cells.append(f"{_number(row.get('mean_drop'))} ({_number(row.get('drop_upper'))})"
                             + (f" div {diversity:.2f}" if diversity is not None else ""))
            fitted = f"{band['fitted']:.2f}" + (" (from below)" if band["inherited"] else "")
            lines.append(f"| {rule} | {band['band']} | {band['measured_pairs']} | {fitted} | " + " | ".join(cells) + " |")
        random_share, harmful = data.get("random_pairs_admitted"), data.get("harmful_share")
        if data.get("threshold") is not None:
            lines.append(f"| {rule} | false matches | | | admits {random_share:.2%} of random prompt pairs; "
                         f"{_number(harmful)} of its measured pairs lost more than the tolerance |"
                         + " |" * (len(fractions) - 1))
    return "\n".join(lines)


def plot_calibration(rules: CalibratedRules, path: str | Path) -> Path:
    """Mean drop against K/N, one line per band, one panel per rule (matplotlib: the bench extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = rules.report.get("rules", {})
    figure, axes = plt.subplots(1, max(1, len(data)), figsize=(4 * max(1, len(data)), 3.2), squeeze=False)
    for axis, (rule, rule_data) in zip(axes[0], data.items()):
        for band in rule_data["bands"]:
            points = [(float(f), row["mean_drop"]) for f, row in band["by_fraction"].items() if row["mean_drop"] is not None]
            if points:
                axis.plot(*zip(*points), marker="o", label=band["band"])
        axis.axhline(rules.tolerance, color="gray", linestyle="--", linewidth=1)
        axis.set_title(rule)
        axis.set_xlabel("K / N")
        axis.legend(fontsize=6)
    axes[0][0].set_ylabel(f"mean drop ({rules.scorer})")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


__all__ = ["format_calibration", "plot_calibration"]
