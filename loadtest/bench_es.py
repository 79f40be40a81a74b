"""Elasticsearch engine benchmark on a Complete Journey model: bulk-load rate and query latency.

Trains `purchase` + `category-purchase` on a fraction of The Complete Journey (in memory, as
bench_train), writes the model with `write_model` (new index, bounded-concurrency bulk load,
alias swap) and times it; then answers user queries (each household's own history, newest first)
one at a time and with several in flight, on the Elasticsearch engine and, for scale, on the
in-process engine. The server is CROSSREC_ES_URL, else noida-db started on a free
port. CAVEAT: noida-db is an emulator (one process, its own storage and query code), so these
figures say nothing about a real Elasticsearch cluster's speed; they are a smoke test of the
client side and a baseline for comparing versions of crossrec on the same machine.

    python -m loadtest.bench_es [--fraction 1.0] [--queries 10] [--max-query-events 2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from crossrec.adapters import elasticsearch as esa
from crossrec.core.config import parse_engine_config
from crossrec.core.query import parse_query
from crossrec.datasets import complete_journey_columns
from crossrec.query.engine import Engine
from crossrec.query.es_engine import ElasticsearchEngine
from crossrec.query.es_query import search_body
from crossrec.stack.processes import free_port
from crossrec.trainer.build import build_model
from crossrec.trainer.data import from_columns
from loadtest.harness import journey_engine

APP = "journey"
ENGINE = journey_engine(APP, rankings=[{"type": "popular", "duration": "3650 days"}], seed=1)
RESULTS = Path(__file__).parent / "results" / "es.json"
CAVEAT = (
    "noida-db emulates the Elasticsearch 8 REST API in one small process; its indexing and "
    "search speed are not Elasticsearch's. Its search evaluates every clause against every "
    "document (about 0.3 s per term clause on 26k documents here, growing with the index), so "
    "queries are timed with a small maxQueryEvents. Use these numbers to compare crossrec "
    "versions on one machine, not to size a cluster."
)


@contextmanager
def server(url: str | None):
    """(url, name): the given server, or noida-db on a free port for the duration."""
    if url:
        yield url, "given"
        return
    binary = Path(str(resources.files("noida_db").joinpath("noida-db")))
    binary.chmod(0o755)
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        command = [str(binary), "start", "--only", "elasticsearch", "--data-dir", data]
        process = subprocess.Popen(
            [*command, "--elasticsearch-port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        address = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(address, timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            yield address, "noida-db"
        finally:
            process.terminate()
            process.wait(30)


def histories(columns: dict[str, np.ndarray], users: list[str]) -> dict[str, dict[str, list[str]]]:
    """Each user's targets per event name, newest first."""
    wanted = set(users)
    out: dict[str, dict[str, list[str]]] = {u: {} for u in users}
    for k in range(len(columns["user"]) - 1, -1, -1):  # columns are in time order
        user = columns["user"][k]
        if user in wanted:
            out[user].setdefault(columns["event"][k], []).append(columns["target"][k])
    return out


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


async def timed(engine: Any, cases: list[tuple[Any, dict]], now_ms: int, in_flight: int) -> dict:
    latencies: list[float] = []
    queue = list(cases)

    async def worker() -> None:
        while queue:
            query, history = queue.pop()
            started = time.perf_counter()
            await engine.recommend(query, history, now_ms)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    wall = time.perf_counter() - started
    return {"in_flight": in_flight, "queries": len(cases), "qps": round(len(cases) / wall, 1), **percentiles(latencies)}  # fmt: skip


def in_process(engine: Engine, cases: list[tuple[Any, dict]], now_ms: int) -> dict:
    latencies = []
    for query, history in cases:
        started = time.perf_counter()
        engine.recommend(query, history, now_ms)
        latencies.append(time.perf_counter() - started)
    return {"queries": len(cases), **percentiles(latencies)}


async def run(args: argparse.Namespace) -> dict:
    doc = json.loads(json.dumps(ENGINE))
    doc["algorithms"][0]["params"]["maxQueryEvents"] = args.max_query_events
    config = parse_engine_config(doc)
    columns = complete_journey_columns(args.fraction)
    now_ms = int(columns["time"].max().astype("datetime64[ms]").astype(np.int64)) + 1
    started = time.perf_counter()
    model = build_model(APP, config, from_columns(columns), {}, now_ms=now_ms, version="bench")
    train_s = time.perf_counter() - started
    docs = list(esa.documents(model))
    payload_mb = sum(len(json.dumps(d)) for d in docs) / 2**20
    del docs
    rng = np.random.default_rng(0)
    users = [str(u) for u in rng.choice(np.unique(columns["user"]), args.queries, replace=True)]
    found = histories(columns, sorted(set(users)))
    user_cases = [(parse_query({"user": u, "num": 20}), found[u]) for u in users]
    out: dict[str, Any] = {
        "fraction": args.fraction,
        "events": len(columns["event"]),
        "documents": len(model),
        "correlators": {c.name: c.count for c in model.correlators},
        "bulk_payload_mb": round(payload_mb, 1),
        "train_s": round(train_s, 2),
    }
    with server(os.environ.get("CROSSREC_ES_URL")) as (url, kind):
        settings = dataclasses.replace(esa.EsSettings.from_env(), hosts=(url,), index_prefix="bench-")  # fmt: skip
        settings = dataclasses.replace(settings, bulk_concurrency=args.bulk_concurrency, bulk_chunk=args.chunk, timeout=120)  # fmt: skip
        es = esa.connect(settings)
        try:
            out["server"] = {"kind": kind, "version": await esa.check_server(es)}
            result = await esa.write_model(es, model, settings, progress=args.progress, grace_seconds=0)  # fmt: skip
            out["bulk_load"] = {
                "seconds": result.seconds,
                "docs_per_s": round(result.documents / result.seconds),
                "mb_per_s": round(payload_mb / result.seconds, 1),
                "concurrency": settings.bulk_concurrency,
                "chunk": settings.bulk_chunk,
            }
            remote = ElasticsearchEngine.for_model(es, model, settings)
            await timed(remote, user_cases[:2], now_ms, 1)  # warm-up
            out["elasticsearch"] = {
                "max_query_events": args.max_query_events,
                "user": [await timed(remote, user_cases, now_ms, n) for n in args.concurrency],
            }
            build = time.perf_counter()
            for query, history in user_cases * 10:
                search_body(remote.info, query, history, now_ms)
            per_body = (time.perf_counter() - build) / (10 * len(user_cases))
            out["elasticsearch"]["request_body_us"] = round(per_body * 1e6, 1)
            await esa.cleanup(es, result.alias, 0, orphans=True)
            await es.indices.delete(index=result.index)
        finally:
            await es.close()
    local = Engine(model)
    out["in_process"] = {"user": in_process(local, user_cases * 10, now_ms)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_es", description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--max-query-events", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--bulk-concurrency", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    result = {"caveat": CAVEAT, "machine": {"cpus": os.cpu_count()}, "command": " ".join(["python -m loadtest.bench_es", *(sys.argv[1:] if argv is None else argv)]), **result}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
