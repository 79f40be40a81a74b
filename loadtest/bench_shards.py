"""The sharded tier as real processes: end-to-end throughput with 1, 2 and 4 workers, failover
when replicas die, and the replication controller under a skewed load.

    .venv/bin/python -m loadtest.bench_shards [--seconds 15] [--concurrency 16]

Its own stack (`crossrec up --shards`, with the services ingest, trainer and router: the bench
runs the workers itself, and the controller in the last phase), Online Retail streamed through
ingest (purchase primary, cancel secondary), user queries for real customers:

1. throughput: trained into K = 1, 2, 4 clusters, one worker each, full fan-out; a closed loop of
   `--concurrency` requests in flight for `--seconds`: answers/s, p50, p99;
2. failover: K = 2, two replicas of cluster 0, an open loop at `--rate`/s with a 2 s deadline;
   SIGKILL one replica of cluster 0. Its partitions stall until the group notices (session
   timeout) and move to the survivor: the time from the kill to the last partial answer;
3. every replica of cluster 0 killed: answers are partial, within the deadline; every worker
   killed: the default recommendations; none lost;
4. skew: K = 4, fan-out 1, queries from customers whose best cluster is the same one, at
   `--rate`/s; the controller (1-4 replicas, `--target-rate` per replica) adds replicas to that
   cluster until each carries less than the target and nothing waits: replicas over time.

Results go to loadtest/results/shards.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from crossrec import datasets
from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.modelstore import ModelStore
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer
from crossrec.client.recommender import Recommender
from crossrec.core.query import parse_query
from crossrec.query.sharding import Router
from crossrec.shard import versions
from crossrec.shard.controller import ShardController, WorkerPool, replicas_ready
from crossrec.shard.scaling import ScalingPolicy
from crossrec.stack import health
from crossrec.stack.background import BackgroundStack
from crossrec.stack.processes import free_port
from loadtest.harness import percentile, write_results

APP = "retail"
DEADLINE = 2.0


def engine(k: int, fan_out: int | None = None) -> dict:
    shards: dict = {"clusters": k} | ({"fanOut": fan_out} if fan_out else {})
    params = {"appName": APP, "indicators": [{"name": "purchase"}, {"name": "cancel"}],
              "seed": 1, "shards": shards}  # fmt: skip
    return {
        "datasource": {"params": {"appName": APP}},
        "algorithms": [{"name": "ur", "params": params}],
    }


async def load_data(settings: config.Settings) -> dict[str, list[str]]:
    """Online Retail through Kafka and ingest; each customer's purchases, newest first."""
    store = RedisStore(settings.redis_url)
    if APP in await store.app_names():
        await store.delete_app(APP)  # a clean start: nothing left from an earlier run
    await store.create_app(APP)
    await store.close()
    bought: dict[str, list[str]] = {}
    total = 0
    async with EventProducer(settings) as producer:
        for event in datasets.online_retail_events():
            producer.send_nowait(APP, event)
            total += 1
            if event["event"] == "purchase":
                bought.setdefault(event["entityId"], []).append(event["targetEntityId"])
            if total % 50_000 == 0:
                await producer.flush()
    log = EventLog(settings.eventlog)
    while sum(pq.read_metadata(s.path).num_rows for s in log.segments(APP)) < total:
        await asyncio.sleep(0.5)  # training reads the event log: wait until it holds everything
    return {user: items[::-1] for user, items in bought.items()}


def train(k: int, fan_out: int | None, home: Path) -> str:
    path = home / f"engine-{k}-{fan_out}.json"
    path.write_bytes(orjson.dumps(engine(k, fan_out)))
    done = subprocess.run(
        [sys.executable, "-m", "crossrec.cli.main", "train", "--app", APP, "--engine", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.split("version ")[1].split(":")[0]


async def wait_serving(settings: config.Settings, version: str, user: str) -> None:
    """Until the router answers with `version`, whole (it swaps once the workers hold it)."""
    async with Recommender(settings, timeout=DEADLINE) as rec:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                answer = await rec.recommend(APP, {"user": user}, timeout=DEADLINE)
                if answer["modelVersion"] == version and not answer.get("partial"):
                    return
            await asyncio.sleep(0.5)
    raise TimeoutError(f"the router did not serve {version}")


async def wait_workers(settings: config.Settings, pool: WorkerPool, k: int, version: str) -> None:
    """Until every replica of every cluster holds `version` and has its partitions."""
    store = RedisStore(settings.redis_url)
    try:
        deadline = time.monotonic() + 180
        while not await replicas_ready(store, pool, APP, k, version):
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not become ready")
            await asyncio.sleep(0.5)
    finally:
        await store.close()


async def closed_loop(rec: Recommender, users: list[str], seconds: float, concurrency: int) -> dict:
    latencies: list[float] = []
    errors = partial = 0
    stop = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal errors, partial
        while time.perf_counter() < stop:
            user = users[n % len(users)]
            n += concurrency
            t0 = time.perf_counter()
            try:
                answer = await rec.recommend(APP, {"user": user}, timeout=DEADLINE)
            except Exception:
                errors += 1
                continue
            latencies.append((time.perf_counter() - t0) * 1000)
            partial += bool(answer.get("partial"))

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "answers_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": percentile(latencies, 0.5, 1),
        "p99_ms": percentile(latencies, 0.99, 1),
        "errors": errors,
        "partial": partial,
    }


async def open_loop(
    rec: Recommender,
    users: list[str],
    rate: float,
    seconds: float,
    events: dict[float, Callable[[], object]] | None = None,
) -> list[dict]:
    """Request n at n / rate; `events`: at offset t (s), call f. One row per request."""
    rows: list[dict] = []
    pending = dict(sorted((events or {}).items()))
    started = time.perf_counter()

    async def one(n: int) -> None:
        t0 = time.perf_counter()
        row = {"t": round(t0 - started, 3), "ok": False, "partial": False, "fallback": False}
        try:
            answer = await rec.recommend(APP, {"user": users[n % len(users)]}, timeout=DEADLINE)
            row.update(ok=True, partial=bool(answer.get("partial")),
                       fallback=all(s["score"] == 0 for s in answer["itemScores"]))  # fmt: skip
        except Exception as exc:
            row["error"] = getattr(getattr(exc, "code", None), "name", type(exc).__name__)
        row["ms"] = round((time.perf_counter() - t0) * 1000, 1)
        rows.append(row)

    tasks = []
    for n in range(int(rate * seconds)):
        at = n / rate
        while pending and next(iter(pending)) <= at:
            pending.pop(next(iter(pending)))()
        delay = started + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return sorted(rows, key=lambda r: r["t"])


def summary(rows: list[dict]) -> dict:
    answered = [r for r in rows if r["ok"]]
    return {
        "requests": len(rows),
        "answered": len(answered),
        "errors": len(rows) - len(answered),
        "partial": sum(r["partial"] for r in answered),
        "fallback": sum(r["fallback"] for r in answered),
        "within_deadline": sum(r["ms"] <= DEADLINE * 1000 for r in answered),
        "p50_ms": percentile([r["ms"] for r in answered], 0.5, 1),
        "p99_ms": percentile([r["ms"] for r in answered], 0.99, 1),
    }


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def throughput(settings, pool, home, users, seconds, concurrency) -> list[dict]:
    rows = []
    async with Recommender(settings, timeout=DEADLINE) as rec:
        for k in (1, 2, 4):
            version = train(k, None, home)
            await asyncio.to_thread(pool.stop_all)
            for c in range(k):
                pool.scale((APP, c), 1)
            await wait_workers(settings, pool, k, version)
            await wait_serving(settings, version, users[0])
            await closed_loop(rec, users, 3, concurrency)  # warm-up
            row = {"workers": k, **await closed_loop(rec, users, seconds, concurrency)}
            print(row, flush=True)
            rows.append(row)
    return rows


async def failover(settings, pool, home, users, rate) -> dict:
    version = train(2, None, home)
    await asyncio.to_thread(pool.stop_all)
    pool.scale((APP, 0), 2)
    pool.scale((APP, 1), 1)
    await wait_workers(settings, pool, 2, version)
    await wait_serving(settings, version, users[0])
    victim, survivor = pool.pids((APP, 0))
    async with Recommender(settings, timeout=DEADLINE) as rec:
        await open_loop(rec, users, rate, 3)  # warm-up
        one = await open_loop(rec, users, rate, 30, {5.0: lambda: kill(victim)})
        partial_after = [r["t"] for r in one if r["t"] >= 5.0 and (r["partial"] or not r["ok"])]
        moved = round(max(partial_after) - 5.0, 2) if partial_after else 0.0
        print({"one_replica_killed": summary(one), "partitions_moved_s": moved}, flush=True)
        pool.reap()
        all_of_0 = await open_loop(rec, users, rate, 10, {2.0: lambda: kill(survivor)})
        pool.reap()
        everyone = await open_loop(
            rec, users, rate, 10, {2.0: lambda: [kill(p) for p in pool.pids((APP, 1))]}
        )
    late = [r for r in everyone if r["t"] >= 4.0]  # once the last worker's replies have drained
    return {
        "rate": rate,
        "one_replica_of_cluster_0_killed": {**summary(one), "partitions_moved_s": moved},
        "every_replica_of_cluster_0_killed": summary(all_of_0),
        "every_worker_killed": summary(everyone),
        "every_worker_killed_after_2s": summary(late),
    }


async def skew(settings, home, bought, rate, target_rate) -> dict:
    version = train(4, 1, home)
    models = ModelStore(settings.modelstore)
    model, clusters = versions.load_version(models, APP, version)
    router = Router(model, clusters)
    best: dict[int, list[str]] = {}
    for user, items in bought.items():
        context = router.context(parse_query({"user": user}), {"purchase": items})
        best.setdefault(int(router.route(context, 1)[0]), []).append(user)
    hot = max(best, key=lambda c: len(best[c]))
    policy = ScalingPolicy(min_replicas=1, max_replicas=4, target_rate=target_rate, lag_high=20,
                           up_after=2, down_after=6, interval_seconds=1.0)  # fmt: skip
    pool = WorkerPool(config.home() / "logs")
    controller = ShardController(settings, policy, pool)
    await controller.meter.start()
    timeline: list[dict] = []
    served: dict[str, int] = {}  # answered per replica pid over the last 20 s

    async def answered() -> dict[str, int]:
        store = RedisStore(settings.redis_url)
        try:
            name = f"shard-worker.{APP}.{hot}"
            beats = {
                pid: await health.read(store.redis, name, pid) for pid in pool.pids((APP, hot))
            }
            return {str(pid): b.get("answered", 0) for pid, b in beats.items() if b}
        finally:
            await store.close()

    try:
        await controller.step()  # one replica per cluster
        await wait_workers(settings, pool, 4, version)
        await wait_serving(settings, version, best[hot][0])
        # sub-queries left on these topics by the earlier phases expire unanswered: drain first
        hot_target = controller.target((APP, hot))
        for _ in range(60):
            if (await controller.meter.measure(hot_target)).lag == 0:
                break
            await asyncio.sleep(0.5)
        controller.streaks.clear()
        controller.decisions.clear()
        started, wall_started = time.perf_counter(), time.time()

        async def watch() -> None:
            nonlocal served
            before: dict[str, int] = {}
            while True:
                await controller.step()
                load = controller.loads.get((APP, hot))
                t = time.perf_counter() - started
                timeline.append({"t": round(t, 1), "replicas": pool.count((APP, hot)),
                                 "rate": round(load.rate, 1) if load else None,
                                 "lag": load.lag if load else None})  # fmt: skip
                if not before and t >= seconds - 20:
                    before = await answered()
                elif before and t >= seconds - 1:
                    after = await answered()
                    served = {pid: after[pid] - before.get(pid, 0) for pid in after}
                await asyncio.sleep(policy.interval_seconds)

        seconds = 60
        watcher = asyncio.create_task(watch())
        async with Recommender(settings, timeout=DEADLINE) as rec:
            rows = await open_loop(rec, best[hot], rate, seconds)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    finally:
        await asyncio.to_thread(pool.stop_all)
        await controller.meter.stop()
    last = [p for p in timeline if p["t"] >= seconds - 20]
    decisions = [{**d, "at": round(d["at"] - wall_started, 1)} for d in controller.decisions]
    return {
        "rate": rate,
        "target_rate_per_replica": target_rate,
        "hot_cluster": hot,
        "users_routed_there": len(best[hot]),
        "requests": summary(rows),
        "first_20_s": summary([r for r in rows if r["t"] < 20]),
        "last_20_s": summary([r for r in rows if r["t"] >= seconds - 20]),
        "replicas_at_end": timeline[-1]["replicas"] if timeline else None,
        "last_20_s_mean_lag": round(sum(p["lag"] or 0 for p in last) / max(1, len(last)), 1),
        "last_20_s_answered_per_replica": served,
        "decisions": decisions,
        "timeline": timeline,
    }


PHASES = ("throughput", "failover", "skew")


async def bench(args: argparse.Namespace, home: Path) -> dict:
    settings = config.load()
    bought = await load_data(settings)
    users = sorted(bought, key=lambda u: -len(bought[u]))[:2000]
    pool = WorkerPool(home / "logs")
    result: dict = {}
    try:
        if "throughput" in args.phases:
            result["throughput"] = await throughput(
                settings, pool, home, users, args.seconds, args.concurrency
            )
        if "failover" in args.phases:
            result["failover"] = await failover(settings, pool, home, users, args.rate)
    finally:
        await asyncio.to_thread(pool.stop_all)
    if "skew" in args.phases:
        try:
            result["skew"] = await skew(settings, home, bought, args.rate, args.target_rate)
        except TimeoutError as exc:  # recorded, so the phases before it are not lost
            result["skew"] = {"error": str(exc)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=30, help="open-loop requests/s")
    parser.add_argument("--target-rate", type=float, default=20, help="per replica, skew phase")
    parser.add_argument(
        "--phases",
        type=lambda v: tuple(x for x in v.split(",") if x),
        default=PHASES,
        help="comma-separated subset of throughput,failover,skew (each run alone: a fresh broker)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crossrec-bench-") as tmp:
        home = Path(tmp)
        env = {"CROSSREC_GATEWAY_PORT": str(free_port()), "CROSSREC_SHARDS": "1",
               "CROSSREC_SERVICES": "ingest,trainer,router",
               "CROSSREC_TRAIN_DEBOUNCE_SECONDS": "3600", "CROSSREC_TRAIN_MAX_WAIT_SECONDS": "3600"}  # fmt: skip
        stack = BackgroundStack(home, env, log=home / "up.log")
        stack.start()
        try:
            result = asyncio.run(bench(args, home))
        finally:
            stack.stop()
    name = "shards" if args.phases == PHASES else "shards-" + "-".join(args.phases)
    write_results(name, {"command": "python -m loadtest.bench_shards " + " ".join(sys.argv[1:]),
                             **result})  # fmt: skip


if __name__ == "__main__":
    main()
