"""Ingest benchmark on real data: throughput of one ingest process, and event-to-visible latency.

    .venv/bin/python -m loadtest.bench_ingest [--copies 3] [--rates 20000,35000,50000] [--seconds 20]

It starts its own stack (`crossrec up` in a temporary CROSSREC_HOME: Tansu, Redis and one ingest
process; the other services stay off, as their idle consumers poll the broker) and runs two phases
on Online Retail converted to PIO events:

Each phase runs on a fresh stack (Tansu's in-memory storage slows as a topic fills).

1. throughput: the ingest process is paused (SIGSTOP) while `copies` copies of the data set (each
   with its own user ids) are produced into the events topic; then it is resumed and timed from its
   first processed batch until every event is in Redis, and until every event is in the event log.
2. latency: for each rate, events are produced at that rate for `seconds`; every 100th is a probe
   (16 probe users in turn, a new target each), and a poller records when each probe appears in
   its user's history in Redis.

Results are printed and written to loadtest/results/ingest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
from collections.abc import Awaitable, Callable

import orjson
import pyarrow.parquet as pq

from crossrec import datasets
from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.redis_store import RedisStore, history_key
from crossrec.client.producer import EventProducer
from crossrec.core.events import format_time
from loadtest.harness import private_stack, write_results


def retail_lines(copies: int) -> list[tuple[bytes, str]]:
    """(JSON line, entity id) for `copies` copies of Online Retail, users renamed per copy."""
    events = list(datasets.online_retail_events())
    out = []
    for copy in range(copies):
        for n, event in enumerate(events):
            event = dict(event)
            if event["entityType"] == "user":
                event["entityId"] = f"{copy}-{event['entityId']}"
            event["eventId"] = f"c{copy}-{n}"
            out.append((orjson.dumps(event), event["entityId"]))
    return out


def logged(event_log: EventLog, app: str) -> int:
    return sum(pq.read_metadata(s.path).num_rows for s in event_log.segments(app))


async def produce(settings: config.Settings, app: str, lines: list[tuple[bytes, str]]) -> float:
    started = time.perf_counter()
    async with EventProducer(settings) as producer:
        for n, (line, entity) in enumerate(lines):
            producer.send_raw_nowait(app, line, entity)
            if n % 20_000 == 0:
                await asyncio.sleep(0)
        await producer.flush()
    return time.perf_counter() - started


async def throughput(settings: config.Settings, store: RedisStore, app: str, copies: int) -> dict:
    lines = retail_lines(copies)
    ingest_pid = orjson.loads(config.stack_file().read_bytes())["services"]["ingest"]
    before = (await store.ingested()).get("accepted", 0)
    os.kill(ingest_pid, signal.SIGSTOP)
    try:
        produce_seconds = await produce(settings, app, lines)
    finally:
        os.kill(ingest_pid, signal.SIGCONT)
    event_log = EventLog(settings.eventlog)
    total = len(lines)
    first = in_redis = in_log = None
    samples = []
    while in_log is None:
        now = time.perf_counter()
        done = (await store.ingested()).get("accepted", 0) - before
        if done and first is None:
            first = now
        if done >= total and in_redis is None:
            in_redis = now
        samples.append((now, done))
        if in_redis is not None and logged(event_log, app) >= total:
            in_log = time.perf_counter()
        await asyncio.sleep(0.05)
    return {
        "events": total,
        "produce_seconds": round(produce_seconds, 2),
        "redis_seconds": round(in_redis - first, 2),
        "redis_and_log_seconds": round(in_log - first, 2),
        "events_per_second_into_redis": round(total / (in_redis - first)),
        "events_per_second_into_redis_and_log": round(total / (in_log - first)),
    }


INGEST_ONLY = {"CROSSREC_SERVICES": "ingest"}
PROBE_USERS = 16  # probes rotate over these users (spread over the topic's partitions)


async def latency(
    settings: config.Settings, store: RedisStore, app: str, rate: int, seconds: float
) -> dict:
    """Every 100th event is a probe: user `probe-<k % PROBE_USERS>` → item `<k>` at send time.

    A user's events stay in order (one partition, batches applied whole), so the newest target
    in a probe user's history says that every earlier probe of that user is visible too: the
    poller reads one entry per probe user per poll, so measuring costs the machine next to
    nothing (probing each probe's own key used to cost Redis and this process most of a core).
    """
    lines = retail_lines(1)
    sent: dict[int, float] = {}  # probe number -> send time
    seen: dict[int, float] = {}
    pending: dict[int, list[int]] = {u: [] for u in range(PROBE_USERS)}  # in send order
    stop = asyncio.Event()
    stopped_at = 0.0

    async def poll() -> None:
        keys = [history_key(app, f"probe-{u}", "probe") for u in range(PROBE_USERS)]
        while any(pending.values()):
            async with store.redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrevrange(key, 0, 0)
                newest = await pipe.execute()
            now = time.perf_counter()
            for u, top in enumerate(newest):
                if top:
                    last = int(top[0])
                    while pending[u] and pending[u][0] <= last:
                        seen[pending[u].pop(0)] = now
            if stop.is_set() and time.perf_counter() - stopped_at > 30:
                break
            await asyncio.sleep(0.002)

    poller: asyncio.Task | None = None
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    produced = probes = 0
    started = time.perf_counter()
    async with EventProducer(settings) as producer:
        while time.perf_counter() - started < seconds:
            due = int((time.perf_counter() - started) / tick) * per_tick
            while produced < due:
                if produced % 100 == 0:
                    user = probes % PROBE_USERS
                    event = {
                        "event": "probe",
                        "entityType": "user",
                        "entityId": f"probe-{user}",
                        "targetEntityType": "item",
                        "targetEntityId": str(probes),
                        # distinct, increasing times: newest first is send order
                        "eventTime": format_time(1_000_000_000_000 + probes),
                    }
                    sent[probes] = time.perf_counter()
                    pending[user].append(probes)
                    producer.send_nowait(app, event)
                    probes += 1
                    if poller is None:
                        poller = asyncio.create_task(poll())
                else:
                    line, entity = lines[produced % len(lines)]
                    producer.send_raw_nowait(app, line, entity)
                produced += 1
            await asyncio.sleep(tick / 2)
        elapsed = time.perf_counter() - started
        await producer.flush()
    stopped_at = time.perf_counter()
    stop.set()
    if poller is not None:
        await poller
    delays_ms = sorted((seen[p] - sent[p]) * 1000 for p in seen)
    per_second: dict[int, list[float]] = {}
    for p in seen:
        per_second.setdefault(int(sent[p] - started), []).append((seen[p] - sent[p]) * 1000)
    return {
        "max_ms_per_second": [round(max(per_second[k])) for k in sorted(per_second)],
        "target_rate": rate,
        "achieved_rate": round(produced / elapsed),
        "probes": len(sent),
        "probes_visible": len(seen),
        "p50_ms": round(statistics.median(delays_ms), 1),
        "p99_ms": round(delays_ms[int(0.99 * (len(delays_ms) - 1))], 1),
        "max_ms": round(delays_ms[-1], 1),
    }


async def phase(
    name: str, measure: Callable[[config.Settings, RedisStore, str], Awaitable[dict]]
) -> dict:
    """One phase in the current stack, on an app of its own."""
    settings = config.load()
    store = RedisStore(settings.redis_url)
    try:
        if name in await store.app_names():
            await store.delete_app(name)
        await store.create_app(name)
        try:
            return await measure(settings, store, name)
        finally:
            await store.delete_app(name)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--copies", type=int, default=3, help="copies of Online Retail (410,787 events each)"
    )
    parser.add_argument(
        "--rates", default="20000,35000,50000", help="events/s of each latency phase"
    )
    parser.add_argument("--seconds", type=float, default=20, help="length of the latency phase")
    args = parser.parse_args()
    # each phase on a fresh broker: Tansu's in-memory storage slows down as a topic fills
    with private_stack(INGEST_ONLY):
        measured = asyncio.run(
            phase("bench-throughput", lambda s, st, app: throughput(s, st, app, args.copies))
        )
    result: dict = {"throughput": measured, "latency": []}
    for rate in (int(r) for r in args.rates.split(",")):
        with private_stack(INGEST_ONLY):
            result["latency"].append(
                asyncio.run(
                    phase(
                        "bench-latency",
                        lambda s, st, app, r=rate: latency(s, st, app, r, args.seconds),
                    )
                )
            )
    write_results("ingest", result)


if __name__ == "__main__":
    main()
