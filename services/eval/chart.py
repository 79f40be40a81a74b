"""The report as one PNG: models (top row) and indicator variants (bottom row), one panel per
metric, bars per k with 95% bootstrap intervals; coverage and popularity bias at the right."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np

from crossrec.eval.report import variant_label

PANELS = [
    ("precision", "precision@k"),
    ("recall", "recall@k"),
    ("map", "MAP@k"),
    ("ndcg", "NDCG@k"),
    ("coverage", "catalogue coverage@k"),
    ("popularity", "popularity percentile@k"),
]


def _bars(ax: Any, rows: list[tuple[str, dict[str, Any]]], ks: list[int], metric: str) -> None:
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(ks))
    for i, (name, metrics) in enumerate(rows):
        entries = [metrics[str(k)][metric] for k in ks]
        if isinstance(entries[0], dict):
            means = np.array([e["mean"] for e in entries])
            err = np.array([[e["mean"] - e["low"], e["high"] - e["mean"]] for e in entries]).T
            ax.bar(x + i * width, means, width, yerr=err, capsize=2, label=name)
        else:
            ax.bar(x + i * width, entries, width, label=name)
    ax.set_xticks(x + width * (len(rows) - 1) / 2, [str(k) for k in ks])
    ax.set_xlabel("k")
    ax.grid(axis="y", alpha=0.3)


def draw(report: dict[str, Any], path: Path) -> None:
    ks = report["options"]["ks"]
    models = [(m["name"], m["metrics"]) for m in report["models"]]
    variants = [(variant_label(v), v["metrics"]) for v in report["indicators"]]
    groups = [("models", models)] + ([("crossrec indicators", variants)] if variants else [])
    fig, axes = plt.subplots(
        len(groups), len(PANELS), figsize=(4 * len(PANELS), 3.6 * len(groups)), squeeze=False
    )
    for row, (group, rows) in enumerate(groups):
        for col, (metric, title) in enumerate(PANELS):
            ax = axes[row][col]
            _bars(ax, rows, ks, metric)
            ax.set_title(f"{group}: {title}", fontsize=10)
        axes[row][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    split = report["split"]
    fig.suptitle(
        f"{report.get('app', '')}: trained before {split['cut']}, {split['test_users']:,} test "
        f"users{' (sampled)' if split['sampled'] else ''}; 95% bootstrap intervals over users",
        fontsize=12,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # redraw: python -m crossrec.eval.chart REPORT.json OUT.png
    import sys

    import orjson

    draw(orjson.loads(Path(sys.argv[1]).read_bytes()), Path(sys.argv[2]))
