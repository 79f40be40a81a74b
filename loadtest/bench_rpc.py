"""Recommend over the broker against a bare echo request/reply on the same broker and settings.

    .venv/bin/python -m loadtest.bench_rpc [--rate 1000 | --rates 50,100,150] [--seconds 40]
                                           [--warmup 5] [--query-processes 2] [--timeline FILE]

It starts its own stack (`crossrec up` in a temporary CROSSREC_HOME: ingest and --query-processes
query-service processes in one consumer group; no trainer service, whose debounced retrain on the
new items would land in the measured windows, and no gateway), streams the Complete Journey purchases (household
-> product `purchase`, household -> category `category-purchase`) through ingest, trains with
`crossrec train`, then compares at one open-loop rate:

- echo: as many RpcServer processes as query services, in one group, whose handler returns the
  request body (the broker's round trip, the floor), on their own request topic with the query
  topic's partition count; same client, server and event-loop code as the query path;
- recommend: user queries for real households (history read from Redis) to the query service.

Fairness: Tansu's in-memory storage slows down as its partitions fill (until the next request-
topic generation or reply topic), so an echo run before or after the recommend phase sees a
different broker. The two are therefore interleaved in windows of 10 s, each after its own warm-up
at the same rate (not measured: it lets the previous window's queue drain), in blocks of four —
echo, recommend, echo, recommend, then recommend, echo, recommend, echo (`schedule`) — so that
both kinds cover every quarter of a 60 s generation equally (a fixed echo/recommend alternation
of 15 s slots put every generation switch into the same kind's windows). Each recommend window is
also compared with the mean of the nearest echo windows before and after it. `--seconds` is the
measured time of each kind; multiples of 40 s balance the quarters exactly. p50/p99 per kind pool
all its measured requests; ratios are recommend / echo. Each window also records the cores every
role used (broker, query services, echo servers, load generator, other services). Results go to
loadtest/results/rpc.json (rpc-RATE.json for another rate; rpc-sweep.json for --rates, each
rate's windows in turn on the one stack, so later rates see a broker with fuller partitions).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import uvloop

from crossrec import datasets
from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.kafka import TopicSpec, create_topics
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer
from crossrec.client.recommender import Recommender
from crossrec.rpc.client import RpcClient
from crossrec.rpc.server import RpcServer
from loadtest.harness import (
    CpuMeter,
    host_speed,
    journey_engine,
    percentile,
    private_stack,
    redis_pids,
    stack_pids,
    write_results,
)

APP = "journey"
ECHO_TOPIC = "bench-echo"
ECHO = "/bench.Echo/Echo"
WINDOW = 10.0
SHOWN = ("rate", "ratio_p50", "ratio_p99")


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
    name: str,
    call: Callable[[int], Awaitable[object]],
    rate: int,
    seconds: float,
    warmup: float,
    meter: CpuMeter,
) -> dict:
    """Open loop: request n starts at n / rate, whatever the earlier ones are doing. The
    measured latencies (ms, after the warm-up) are under "latencies"; "cores" is the CPU each
    role used during the measured part."""
    latencies: list[tuple[float, float, float]] = []  # (start offset, seconds, epoch start)
    errors: dict[str, int] = {}
    failed: list[tuple[float, str]] = []  # (epoch start, error) of every failed request
    tasks: set[asyncio.Task] = set()  # those still running: finished ones are let go

    async def one(n: int, started: float) -> None:
        t0, at = time.perf_counter(), time.time()
        try:
            await call(n)
        except Exception as exc:
            kind = getattr(getattr(exc, "code", None), "name", type(exc).__name__)
            errors[kind] = errors.get(kind, 0) + 1
            failed.append((at, kind))
            return
        latencies.append((t0 - started, time.perf_counter() - t0, at))

    started = time.perf_counter()
    total = int(rate * (warmup + seconds))
    cpu_from = None
    for n in range(total):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if cpu_from is None and n >= rate * warmup:
            cpu_from = meter.read()
        task = asyncio.create_task(one(n, started))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sent = time.perf_counter() - started  # how fast the generator kept up with the rate
    cores = CpuMeter.cores(cpu_from or meter.read(), meter.read())
    await asyncio.gather(*tasks)
    measured = [(at, lat * 1000) for t, lat, at in latencies if t >= warmup]
    values = sorted(ms for _, ms in measured)
    return {
        "phase": name,
        "requests": len(values),
        "errors": errors,
        "achieved_rate": round(total / sent),
        "p50_ms": percentile(values, 0.5),
        "p99_ms": percentile(values, 0.99),
        "cores": cores,
        "latencies": values,
        "timeline": sorted(measured),  # (epoch s at the start, ms) per request: --timeline
        "failed": failed,  # (epoch s at the start, error), warm-up included: --timeline
    }


async def bench(
    settings: config.Settings,
    rates: list[int],
    seconds: float,
    warmup: float,
    processes: int,
    timeline: list[dict] | None = None,
) -> list[dict]:
    """One summary per rate, all on this stack, in the order given; each measured request's
    start and latency appended to `timeline` if given."""
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
    echo_servers = [
        subprocess.Popen([sys.executable, "-m", "loadtest.bench_rpc", "--echo-server"])
        for _ in range(processes)
    ]
    services = stack_pids()
    meter = CpuMeter(
        {
            "broker": [services.pop("broker")],
            "query_services": [p for n, p in services.items() if n.startswith("query")],
            "echo_servers": [server.pid for server in echo_servers],
            "load_generator": [os.getpid()],
            "other_services": [p for n, p in services.items() if not n.startswith("query")],
            "redis": redis_pids(),
        }
    )
    rnd = random.Random(1)
    results = []
    try:
        async with (
            RpcClient(settings, request_topic=settings.topic(ECHO_TOPIC)) as echo,
            Recommender(settings, timeout=5) as rec,
        ):
            # both answer (the echo servers have joined their group; the query services load
            # the model when `crossrec train` announces it)
            await asyncio.gather(*(echo.call(ECHO, b"ready?", timeout=60) for _ in range(40)))
            await asyncio.gather(
                *(rec.recommend(APP, {"user": h}, timeout=60) for h in households[:40])
            )
            # the generator's own long-lived objects (modules, the stack's clients) out of the
            # collector's walks: its full collections would pause sends and replies alike
            gc.freeze()

            async def ask_echo(n: int) -> object:
                return await echo.call(ECHO, b"x" * 64, timeout=5)

            async def ask_recommend(n: int) -> object:
                return await rec.recommend(APP, {"user": rnd.choice(households), "num": 20})

            asks = {"echo": ask_echo, "recommend": ask_recommend}
            for rate in rates:
                windows = []
                for kind in schedule(max(1, int(seconds // WINDOW))):
                    windows.append(await run_phase(kind, asks[kind], rate, WINDOW, warmup, meter))
                results.append(summarize(windows, rate, warmup, processes))
                if timeline is not None:
                    timeline += [
                        {"rate": rate, "kind": w["phase"], "t": round(at, 4), "ms": round(ms, 2)}
                        for w in windows
                        for at, ms in w["timeline"]
                    ]
                    timeline += [
                        {"rate": rate, "kind": w["phase"], "t": round(at, 4), "error": error}
                        for w in windows
                        for at, error in w["failed"]
                    ]
                print(orjson.dumps({k: results[-1][k] for k in SHOWN}).decode(), flush=True)
    finally:
        for server in echo_servers:
            server.terminate()
        for server in echo_servers:
            server.wait(10)
    return results


def schedule(per_kind: int) -> list[str]:
    """The kinds of 2 * per_kind slots (a warm-up and a window each) in order: echo, recommend,
    echo, recommend, then the other way round, and so on in blocks of four. With the default
    warm-up a slot is 15 s, a quarter of a request-topic generation (60 s) and a multiple of the
    reply topics' rotation (10 s): over every eight slots each kind fills each quarter of a
    generation once, so neither meets more generation switches than the other."""
    return [("echo", "recommend")[(k + k // 4) % 2] for k in range(2 * per_kind)]


def summarize(windows: list[dict], rate: int, warmup: float, processes: int) -> dict:
    kinds = {}
    for kind in ("echo", "recommend"):
        mine = [w for w in windows if w["phase"] == kind]
        values = sorted(v for w in mine for v in w["latencies"])
        errors: dict[str, int] = {}
        for w in mine:
            for name, count in w["errors"].items():
                errors[name] = errors.get(name, 0) + count
        cores = {
            role: round(sum(w["cores"][role] for w in mine) / len(mine), 2)
            for role in mine[0]["cores"]
        }
        kinds[kind] = {
            "requests": len(values),
            "cores": cores,
            # CPU per answered request, in ms, of the processes serving this kind
            "server_cpu_ms_per_answer": _per_answer(
                mine, "echo_servers" if kind == "echo" else "query_services"
            ),
            "broker_cpu_ms_per_request": round(1000 * cores["broker"] / rate, 3),
            "errors": errors,
            "achieved_rate_min": min(w["achieved_rate"] for w in mine),
            "p50_ms": percentile(values, 0.5),
            "p99_ms": percentile(values, 0.99),
        }
    compared = []  # each recommend window against the mean of the nearest echo windows around it
    echoes = [k for k, w in enumerate(windows) if w["phase"] == "echo"]
    for k, rec in enumerate(windows):
        if rec["phase"] != "recommend":
            continue
        near = [max((e for e in echoes if e < k), default=None)]
        near.append(min((e for e in echoes if e > k), default=None))
        row: dict[str, float | None] = {}
        for q in ("p50_ms", "p99_ms"):
            around = [windows[e][q] for e in near if e is not None and windows[e][q] is not None]
            row[f"echo_{q}"] = round(sum(around) / len(around), 2) if around else None
            row[f"recommend_{q}"] = rec[q]
            row[f"ratio_{q[:3]}"] = _ratio(rec[q], row[f"echo_{q}"])
        compared.append(row)
    echo, rec = kinds["echo"], kinds["recommend"]
    return {
        "rate": rate,
        "window_seconds": WINDOW,
        "warmup_per_window": warmup,
        "query_processes": processes,
        "echo": echo,
        "recommend": rec,
        "ratio_p50": _ratio(rec["p50_ms"], echo["p50_ms"]),
        "ratio_p99": _ratio(rec["p99_ms"], echo["p99_ms"]),
        "windows": compared,
    }


def _per_answer(windows: list[dict], role: str) -> float | None:
    answered = sum(len(w["latencies"]) for w in windows)  # measured part only
    busy = sum(w["cores"][role] * WINDOW for w in windows)
    return round(1000 * busy / answered, 3) if answered else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


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
    parser.add_argument(
        "--rates", help="comma-separated rates, one after the other on one stack: rpc-sweep.json"
    )
    parser.add_argument("--seconds", type=float, default=40, help="measured seconds per kind")
    parser.add_argument("--warmup", type=float, default=5, help="seconds before each window")
    parser.add_argument("--query-processes", type=int, default=2)
    parser.add_argument(
        "--timeline",
        type=Path,
        help="also write every measured request (start, ms) and every failed one (start, error)"
        " here, JSONL",
    )
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # the query service runs on uvloop: so do the echo servers and the load generator
    if args.echo_server:
        uvloop.run(serve_echo())
        return
    # No trainer service: the streamed purchases' new items would trigger a debounced retrain and
    # a hot swap in the middle of the measured windows (`crossrec train` trains by itself). No
    # gateway: its idle reply consumer polls the broker.
    env = {
        "CROSSREC_QUERY_PROCESSES": str(args.query_processes),
        "CROSSREC_SERVICES": "ingest,query-service",
    }
    rates = [int(r) for r in args.rates.split(",")] if args.rates else [args.rate]
    timeline: list[dict] | None = [] if args.timeline else None
    speed_before = host_speed()  # the session machines differ by up to 2x, and drift within a day
    with private_stack(env) as settings:
        run = bench(settings, rates, args.seconds, args.warmup, args.query_processes, timeline)
        result = uvloop.run(run)
    machine = {"cpus": os.cpu_count(), "before": speed_before, "after": host_speed()}
    result = [{**summary, "machine": machine} for summary in result]
    if args.timeline and timeline is not None:
        args.timeline.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in timeline))
    if args.rates:
        write_results("rpc-sweep", result)
    else:
        write_results("rpc" if args.rate == 1000 else f"rpc-{args.rate}", result[0])


if __name__ == "__main__":
    main()
