"""Recommend over the broker against a bare echo request/reply on the same broker and settings.

    .venv/bin/python -m loadtest.bench_rpc [--rate 1000] [--seconds 30] [--warmup 5]

It starts its own stack (`crossrec up` in a temporary CROSSREC_HOME), streams the Complete Journey
purchases (household -> product `purchase`, household -> category `category-purchase`) through
ingest, trains with `crossrec train`, then runs, at the same open-loop rate, duration and warm-up:

1. echo: an RpcServer process whose handler returns the request body (the broker's round trip,
   the floor), on its own request topic with the query topic's partition count;
2. recommend: user queries for real households (history read from Redis) to the query service;
3. echo again, so drift of the in-memory broker shows.

Latency is per request from the call to the reply; the phases are compared window by window
(10 s windows after the warm-up). Results go to loadtest/results/rpc.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from crossrec import datasets
from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.kafka import TopicSpec, create_topics
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer
from crossrec.client.recommender import Recommender
from crossrec.rpc.client import RpcClient
from crossrec.rpc.server import RpcServer
from loadtest.harness import journey_engine, private_stack, write_results

APP = "journey"
ECHO_TOPIC = "bench-echo"
ECHO = "/bench.Echo/Echo"
WINDOW = 10.0


async def load_data(settings: config.Settings) -> list[str]:
    """Complete Journey into the app through Kafka and ingest; the household ids."""
    store = RedisStore(settings.redis_url)
    if APP in await store.app_names():
        await store.delete_app(APP)  # a clean start: nothing left from an earlier run
    await store.create_app(APP)
    columns = datasets.complete_journey_columns()
    households = sorted(set(columns["user"].tolist()))
    times = columns["time"].astype("datetime64[ms]").astype(str)
    async with EventProducer(settings) as producer:
        for n in range(len(columns["user"])):
            event = {"event": str(columns["event"][n]), "entityType": "user", "entityId": str(columns["user"][n]),
                     "targetEntityType": "item", "targetEntityId": str(columns["target"][n]),
                     "eventTime": times[n] + "Z"}  # fmt: skip
            producer.send_raw_nowait(APP, orjson.dumps(event), event["entityId"])
            if n % 50_000 == 0:
                await producer.flush()
    total = len(columns["user"])
    event_log = EventLog(settings.eventlog)
    while sum(pq.read_metadata(s.path).num_rows for s in event_log.segments(APP)) < total:
        await asyncio.sleep(0.5)  # training reads the event log: wait until it holds everything
    await store.close()
    return households


async def run_phase(
    name: str, call: Callable[[int], Awaitable[object]], rate: int, seconds: float, warmup: float
) -> dict:
    """Open loop: request n starts at n / rate, whatever the earlier ones are doing."""
    latencies: list[tuple[float, float]] = []  # (start offset, seconds)
    errors: dict[str, int] = {}
    tasks = []

    async def one(n: int, started: float) -> None:
        t0 = time.perf_counter()
        try:
            await call(n)
        except Exception as exc:
            kind = getattr(getattr(exc, "code", None), "name", type(exc).__name__)
            errors[kind] = errors.get(kind, 0) + 1
            return
        latencies.append((t0 - started, time.perf_counter() - t0))

    started = time.perf_counter()
    total = int(rate * (warmup + seconds))
    for n in range(total):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, started)))
    await asyncio.gather(*tasks)
    measured = [(t, lat * 1000) for t, lat in latencies if t >= warmup]
    windows = []
    for w in range(int(seconds // WINDOW)):
        lo, hi = warmup + w * WINDOW, warmup + (w + 1) * WINDOW
        values = sorted(lat for t, lat in measured if lo <= t < hi)
        if values:
            windows.append({"p50_ms": _pct(values, 0.5), "p99_ms": _pct(values, 0.99)})
    values = sorted(lat for _, lat in measured)
    return {
        "phase": name,
        "requests": len(values),
        "errors": errors,
        "achieved_rate": round(total / (time.perf_counter() - started)),
        "p50_ms": _pct(values, 0.5),
        "p99_ms": _pct(values, 0.99),
        "windows": windows,
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * (len(values) - 1)))], 2)


async def bench(settings: config.Settings, rate: int, seconds: float, warmup: float) -> dict:
    households = await load_data(settings)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "crossrec.cli.main",
            "train",
            "--app",
            APP,
            "--engine",
            _engine_file(),
        ],
        check=True,
    )
    await create_topics(settings, (TopicSpec(ECHO_TOPIC, 4),))
    echo_server = subprocess.Popen([sys.executable, "-m", "loadtest.bench_rpc", "--echo-server"])
    rnd = random.Random(1)
    phases = []
    try:
        async with (
            RpcClient(settings, request_topic=settings.topic(ECHO_TOPIC)) as echo,
            Recommender(settings, timeout=5) as rec,
        ):
            await echo.call(ECHO, b"ready?", timeout=30)
            await rec.recommend(APP, {"user": households[0]}, timeout=30)  # loads the model

            async def ask_echo(n: int) -> object:
                return await echo.call(ECHO, b"x" * 64, timeout=5)

            async def ask_recommend(n: int) -> object:
                return await rec.recommend(APP, {"user": rnd.choice(households), "num": 20})

            phases.append(await run_phase("echo", ask_echo, rate, seconds, warmup))
            phases.append(await run_phase("recommend", ask_recommend, rate, seconds, warmup))
            phases.append(await run_phase("echo again", ask_echo, rate, seconds, warmup))
    finally:
        echo_server.terminate()
        echo_server.wait(10)
    echo_p50 = statistics.mean([phases[0]["p50_ms"], phases[2]["p50_ms"]])
    echo_p99 = statistics.mean([phases[0]["p99_ms"], phases[2]["p99_ms"]])
    return {
        "rate": rate,
        "seconds": seconds,
        "warmup": warmup,
        "phases": phases,
        "ratio_p50": round(phases[1]["p50_ms"] / echo_p50, 2) if phases[1]["p50_ms"] else None,
        "ratio_p99": round(phases[1]["p99_ms"] / echo_p99, 2) if phases[1]["p99_ms"] else None,
    }


def _engine_file() -> str:
    path = Path(tempfile.gettempdir()) / "crossrec-bench-rpc-engine.json"
    path.write_bytes(orjson.dumps(journey_engine(APP)))
    return str(path)


async def serve_echo() -> None:
    settings = config.load()

    async def echo(body: bytes, content_type: str) -> bytes:
        return body

    server = RpcServer(settings, {ECHO: echo}, group="bench-echo", topic=settings.topic(ECHO_TOPIC))
    await server.start()
    await server.serve()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        asyncio.run(serve_echo())
        return
    with private_stack() as settings:
        result = asyncio.run(bench(settings, args.rate, args.seconds, args.warmup))
    write_results("rpc", result)


if __name__ == "__main__":
    main()
