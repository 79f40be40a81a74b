"""Scores of each model, their confidence intervals, comparisons and lift, as JSON and as tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crossrec.eval.metrics import (
    METRICS,
    Bootstrap,
    coverage,
    hit_matrix,
    popularity,
    popularity_percentile,
    ranking_metrics,
)
from crossrec.eval.split import EvalData

LABELS = {"precision": "P", "recall": "R", "map": "MAP", "ndcg": "NDCG"}


@dataclass
class Scored:
    """One model's per-user values: (metric, k) -> array over test users."""

    name: str
    kind: str  # "crossrec" | "baseline" | "diagnostic" | "indicators"
    indicators: list[str]
    scoring: str | None  # crossrec's models: "ur" (the engine) or "llr" (the diagnostic)
    per_user: dict[tuple[str, int], np.ndarray]
    coverage: dict[int, float]
    seconds: dict[str, float] = field(default_factory=dict)


def score(
    name: str,
    kind: str,
    indicators: list[str],
    recs: np.ndarray,
    data: EvalData,
    ks: list[int],
    scoring: str | None = None,
) -> Scored:
    hits = hit_matrix(recs, data.relevant)
    n_relevant = np.diff(data.relevant.indptr)
    percentile = popularity_percentile(data.items.counts)
    per_user: dict[tuple[str, int], np.ndarray] = {}
    for k in ks:
        for metric, values in ranking_metrics(hits, n_relevant, k).items():
            per_user[(metric, k)] = values
        per_user[("popularity", k)] = popularity(recs, k, percentile)
    cov = {k: coverage(recs, k, data.items.n_catalogue) for k in ks}
    return Scored(name, kind, indicators, scoring, per_user, cov)


def _verdict(difference: dict[str, float]) -> str:
    if difference["low"] > 0:
        return "better"
    if difference["high"] < 0:
        return "worse"
    return "no clear difference"


def build(
    scored: list[Scored], data: EvalData, ks: list[int], boot: Bootstrap, meta: dict[str, Any]
) -> dict[str, Any]:
    def metrics(s: Scored) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in ks:
            entry = {m: boot.interval(s.per_user[(m, k)]).to_json() for m in METRICS}
            entry["coverage"] = s.coverage[k]
            entry["popularity"] = boot.interval(s.per_user[("popularity", k)]).to_json()
            out[str(k)] = entry
        return out

    def versus(a: Scored, b: Scored, relative_only: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in ks:
            out[str(k)] = {}
            for m in METRICS:
                x, y = a.per_user[(m, k)], b.per_user[(m, k)]
                diff = boot.difference(x, y).to_json()
                entry = {"relative": boot.ratio(x, y).to_json(), "verdict": _verdict(diff)}
                if not relative_only:
                    entry["difference"] = diff
                out[str(k)][m] = entry
        return out

    main = next(s for s in scored if s.kind == "crossrec")
    report: dict[str, Any] = {**meta, "split": data.stats}
    report["models"] = [
        {
            "name": s.name,
            "kind": s.kind,
            "indicators": s.indicators,
            "scoring": s.scoring,
            "seconds": s.seconds,
            "metrics": metrics(s),
        }
        for s in scored
        if s.kind != "indicators"
    ]
    report["comparisons"] = {s.name: versus(main, s) for s in scored if s.kind == "baseline"}
    report["indicators"] = []
    for scoring in ("ur", "llr"):
        variants = [s for s in scored if s.kind == "indicators" and s.scoring == scoring]
        report["indicators"] += [
            {
                "name": s.name,
                "indicators": s.indicators,
                "scoring": scoring,
                "seconds": s.seconds,
                "metrics": metrics(s),
                "lift": versus(s, variants[0], relative_only=True)
                if s is not variants[0]
                else None,
            }
            for s in variants
        ]
    return report


def variant_label(variant: dict[str, Any]) -> str:
    scoring = "crossrec" if variant["scoring"] == "ur" else "LLR-weighted"
    return f"{scoring}: {variant['name']}"


def _cell(entry: dict[str, float]) -> str:
    half = (entry["high"] - entry["low"]) / 2
    return f"{entry['mean']:.4f} ±{half:.4f}"


def _pct(entry: dict[str, float]) -> str:
    return f"{100 * entry['mean']:+.1f}% [{100 * entry['low']:+.1f}, {100 * entry['high']:+.1f}]"


def print_report(report: dict[str, Any], console: Console, headline: int) -> None:
    split = report["split"]
    console.print(
        f"[bold]{report.get('app', '')}[/bold]: trained before {split['cut']} "
        f"({split['train_events']:,} events), {split['test_users']:,} test users"
        f"{' (sampled)' if split['sampled'] else ''}, "
        f"{split['relevant_per_user']:.1f} relevant items each; 95% bootstrap intervals"
    )
    rows = [(m["name"], m["metrics"]) for m in report["models"]]
    rows += [(variant_label(v), v["metrics"]) for v in report["indicators"]]
    for k in report["options"]["ks"]:
        table = Table(title=f"at k = {k}", title_justify="left")
        table.add_column("model")
        for m in METRICS:
            table.add_column(f"{LABELS[m]}@{k}", justify="right")
        table.add_column("coverage", justify="right")
        table.add_column("popularity", justify="right")
        for name, metrics in rows:
            e = metrics[str(k)]
            cells = [_cell(e[m]) for m in METRICS]
            pop = f"{e['popularity']['mean']:.3f}"
            table.add_row(escape(name), *cells, f"{e['coverage']:.3f}", pop)
        console.print(table)
    k = str(headline)
    table = Table(
        title=f"crossrec against each baseline at k = {k} (relative)", title_justify="left"
    )
    table.add_column("baseline")
    for m in METRICS:
        table.add_column(f"{LABELS[m]}@{k}", justify="right")
    for name, comparison in report["comparisons"].items():
        table.add_row(escape(name), *(_pct(comparison[k][m]["relative"]) for m in METRICS))
    console.print(table)
    lifted = [v for v in report["indicators"] if v["lift"]]
    if lifted:
        primary = report["indicators"][0]["name"]
        table = Table(title=f"indicator lift over {primary} alone at k = {k}", title_justify="left")
        table.add_column("indicators")
        for m in METRICS:
            table.add_column(f"{LABELS[m]}@{k}", justify="right")
        for v in lifted:
            table.add_row(
                escape(variant_label(v)), *(_pct(v["lift"][k][m]["relative"]) for m in METRICS)
            )
        console.print(table)
