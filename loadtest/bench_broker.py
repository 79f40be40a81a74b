"""The embedded broker's cost of request/reply, and what crossrec's RPC settings do about it.

    .venv/bin/python -m loadtest.bench_broker [--rate 1000] [--seconds 150]
                                              [--variants current,session_4,session_3]

Three parts, each on a fresh Tansu (results in loadtest/results/broker.json; broker-NAMES.json
for some of the variants):

- fetch cost: one partition, one producer and one consumer; the time of a produce-and-fetch
  round trip after the partition has received 100, 1,000 and 5,000 batches (Tansu's memory
  storage lists every batch object of a partition on each fetch that returns data);
- echo over time: two echo RpcServer processes in one group on a 4-partition topic, one RpcClient
  at `--rate` requests/s (open loop, 5 s deadline) for `--seconds`, p50/p99 and the broker's cores
  per 10 s; with the current settings (request topic generations of
  CROSSREC_RPC_REQUEST_TOPIC_SECONDS), the session-4 ones (one request topic for ever) and the
  session-3 ones (also linger 0, so every request is a batch of its own; 5 ms fetch waits; one
  reply topic for the client's life);
- idle: a whole stack (`crossrec up`) doing nothing for 30 s, the cores each process polls away,
  with each variant's settings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from unittest import mock

import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from crossrec import settings as config
from crossrec.adapters.kafka import TopicSpec, create_topics
from crossrec.rpc.client import RpcClient
from crossrec.stack.broker import start_broker
from loadtest.bench_rpc import ECHO, ECHO_TOPIC
from loadtest.harness import (
    CpuMeter,
    Reading,
    percentile,
    private_stack,
    stack_pids,
    write_results,
)

SESSION_3 = {  # the RPC settings before this benchmark (linger 0 ~ a 1 ms sticky window)
    "CROSSREC_RPC_LINGER_MS": "0",
    "CROSSREC_RPC_FETCH_WAIT_MS": "5",
    "CROSSREC_RPC_REPLY_TOPIC_SECONDS": "0",
    "CROSSREC_RPC_REQUEST_TOPIC_SECONDS": "0",
}
SESSION_4 = {"CROSSREC_RPC_REQUEST_TOPIC_SECONDS": "0"}  # one request topic for ever
VARIANTS = {"current": {}, "session_4": SESSION_4, "session_3": SESSION_3}


async def fetch_cost(bootstrap: str, broker_pid: int) -> list[dict]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic("cost", 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=5, enable_auto_commit=False
    )
    await producer.start()
    await consumer.start()
    partition = TopicPartition("cost", 0)
    consumer.assign([partition])
    await consumer.seek_to_beginning(partition)
    rows, batches = [], 0
    try:
        for target in (100, 1000, 5000):
            while batches < target:  # each send awaited: one batch each
                await (await producer.send("cost", b"x" * 64))
                batches += 1
            while await consumer.getmany(timeout_ms=100):
                pass  # caught up
            started = time.perf_counter()
            for _ in range(50):
                await (await producer.send("cost", b"y"))
                batches += 1
                while not await consumer.getmany(timeout_ms=100):
                    pass
            ms = (time.perf_counter() - started) / 50 * 1000
            rows.append({"batches": target, "round_trip_ms": round(ms, 2)})
            print(rows[-1], flush=True)
    finally:
        await producer.stop()
        await consumer.stop()
    return rows


async def echo_over_time(bootstrap: str, broker_pid: int, rate: int, seconds: float) -> list:
    settings = config.load()
    topic = settings.topic(ECHO_TOPIC)
    await create_topics(settings, (TopicSpec(ECHO_TOPIC, 4),))
    servers = [  # bench_rpc's echo servers, on the broker of CROSSREC_KAFKA_BOOTSTRAP
        subprocess.Popen([sys.executable, "-m", "loadtest.bench_rpc", "--echo-server"])
        for _ in range(2)
    ]
    meter = CpuMeter({"broker": [broker_pid], "echo_servers": [s.pid for s in servers]})
    rows: list[dict] = []
    try:
        async with RpcClient(settings, request_topic=topic) as client:
            await asyncio.gather(*(client.call(ECHO, b"ready?", timeout=60) for _ in range(40)))
            latencies: list[float] = []
            errors = 0

            async def one() -> None:
                nonlocal errors
                t0 = time.perf_counter()
                try:
                    await client.call(ECHO, b"x" * 64, timeout=5)
                    latencies.append((time.perf_counter() - t0) * 1000)
                except Exception:
                    errors += 1

            tasks = []
            started = window = time.perf_counter()
            cpu = meter.read()
            for n in range(int(rate * seconds)):
                delay = started + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one()))
                if time.perf_counter() - window >= 10:  # the replies of the last 10 s
                    done, latencies = latencies, []
                    now = meter.read()
                    rows.append(_window(time.perf_counter() - started, done, errors, cpu, now))
                    print(rows[-1], flush=True)
                    window, cpu, errors = time.perf_counter(), now, 0
            await asyncio.gather(*tasks)
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
    return rows


def _window(at: float, done: list[float], errors: int, cpu_from: Reading, cpu_to: Reading) -> dict:
    return {
        "at_s": round(at),
        "answered": len(done),
        "expired": errors,
        "p50_ms": percentile(done, 0.5, 1),
        "p99_ms": percentile(done, 0.99, 1),
        "cores": CpuMeter.cores(cpu_from, cpu_to),
    }


def with_broker(part: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    """Run `part(bootstrap, broker pid, *args)` against a fresh Tansu, which every process
    started meanwhile uses too (CROSSREC_KAFKA_BOOTSTRAP; stacks started after it have their own)."""
    with tempfile.TemporaryDirectory() as scratch:
        process, bootstrap = start_broker(Path(scratch) / "tansu.log")
        try:
            with mock.patch.dict(os.environ, {"CROSSREC_KAFKA_BOOTSTRAP": bootstrap}):
                return uvloop.run(part(bootstrap, process.pid, *args))
        finally:
            process.terminate()
            process.wait(10)


def idle_cores(seconds: float = 30) -> dict:
    with private_stack():
        time.sleep(10)  # settled: groups joined, models loaded
        meter = CpuMeter({name: [pid] for name, pid in stack_pids().items()})
        before = meter.read()
        time.sleep(seconds)
        cores = CpuMeter.cores(before, meter.read())
    processes = sum(v for k, v in cores.items() if k != "machine")
    return {**cores, "total": round(processes, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="of " + ", ".join(VARIANTS))
    args = parser.parse_args()
    result: dict = {"rate": args.rate}
    result["fetch_cost"] = with_broker(fetch_cost)
    for name in args.variants.split(","):
        env = VARIANTS[name]
        print(name, flush=True)
        with mock.patch.dict(os.environ, env):  # the processes it starts inherit the settings
            result[f"echo_{name}"] = with_broker(echo_over_time, args.rate, args.seconds)
            result[f"idle_{name}"] = idle_cores()
        print(result[f"idle_{name}"], flush=True)
    variants = args.variants.split(",")
    write_results(
        "broker" if variants == list(VARIANTS) else "broker-" + "-".join(variants), result
    )


if __name__ == "__main__":
    main()
