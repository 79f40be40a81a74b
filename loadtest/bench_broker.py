"""The embedded broker's cost of request/reply, and what crossrec's RPC settings do about it.

    .venv/bin/python -m loadtest.bench_broker [--rate 1000] [--seconds 60]

Three parts, each on a fresh Tansu (results in loadtest/results/broker.json):

- fetch cost: one partition, one producer and one consumer; the time of a produce-and-fetch
  round trip after the partition has received 100, 1,000 and 5,000 batches (Tansu's memory
  storage lists every batch object of a partition on each fetch that returns data);
- echo over time: two echo RpcServer processes in one group on a 4-partition topic, one RpcClient
  at `--rate` requests/s (open loop, 5 s deadline) for `--seconds`, p50/p99 and the broker's cores
  per 10 s; once with the current settings and once with the session-3 ones (linger 0, so every
  request is a batch of its own; 5 ms fetch waits; one reply topic for the client's life);
- idle: a whole stack (`crossrec up`) doing nothing for 30 s, the cores each process polls away,
  with both settings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from crossrec import settings as config
from crossrec.adapters.kafka import TopicSpec, create_topics
from crossrec.rpc.client import RpcClient
from crossrec.rpc.server import RpcServer
from crossrec.stack.broker import start_broker
from loadtest.bench_rpc import CpuMeter
from loadtest.harness import private_stack, write_results

ECHO = "/bench.Echo/Echo"
TOPIC = "bench-echo"
SESSION_3 = {  # the RPC settings before this benchmark (linger 0 ~ a 1 ms sticky window)
    "CROSSREC_RPC_LINGER_MS": "0",
    "CROSSREC_RPC_FETCH_WAIT_MS": "5",
    "CROSSREC_RPC_REPLY_TOPIC_SECONDS": "0",
}


async def fetch_cost(bootstrap: str) -> list[dict]:
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


async def serve_echo() -> None:
    settings = config.load()

    async def echo(body: bytes, content_type: str) -> bytes:
        return body

    server = RpcServer(settings, {ECHO: echo}, group="bench-echo", topic=TOPIC)
    await server.start()
    await server.serve()


async def echo_over_time(bootstrap: str, broker_pid: int, rate: int, seconds: float) -> list:
    settings = config.load()
    await create_topics(settings, (TopicSpec(TOPIC, 4),))
    servers = [
        subprocess.Popen([sys.executable, "-m", "loadtest.bench_broker", "--echo-server"])
        for _ in range(2)
    ]
    meter = CpuMeter({"broker": [broker_pid], "echo_servers": [s.pid for s in servers]})
    rows: list[dict] = []
    try:
        async with RpcClient(settings, request_topic=TOPIC) as client:
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
                    done, latencies = sorted(latencies), []
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


def _window(at: float, done: list[float], errors: int, cpu_from, cpu_to) -> dict:
    def pct(q: float) -> float | None:
        return round(done[int(q * (len(done) - 1))], 1) if done else None

    return {
        "at_s": round(at),
        "answered": len(done),
        "expired": errors,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "cores": CpuMeter.cores(cpu_from, cpu_to),
    }


def with_broker(part, *args):
    """Run `part(bootstrap, *args)` against a fresh Tansu."""
    with tempfile.TemporaryDirectory() as scratch:
        process, bootstrap = start_broker(Path(scratch) / "tansu.log")
        os.environ["CROSSREC_KAFKA_BOOTSTRAP"] = bootstrap
        try:
            return uvloop.run(part(bootstrap, process.pid, *args))
        finally:
            os.environ.pop("CROSSREC_KAFKA_BOOTSTRAP")  # the stacks after it start their own
            process.terminate()
            process.wait(10)


def idle_cores(seconds: float = 30) -> dict:
    with private_stack():
        time.sleep(10)  # settled: groups joined, models loaded
        info = orjson.loads(config.stack_file().read_bytes())
        roles = {"broker": [info["broker"]["pid"]]}
        roles.update({name: [pid] for name, pid in info["services"].items()})
        meter = CpuMeter(roles)
        before = meter.read()
        time.sleep(seconds)
        cores = CpuMeter.cores(before, meter.read())
    return {**cores, "total": round(sum(cores.values()), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--echo-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        uvloop.run(serve_echo())
        return
    result: dict = {"rate": args.rate}
    result["fetch_cost"] = with_broker(lambda bootstrap, pid: fetch_cost(bootstrap))
    saved = {k: os.environ.get(k) for k in SESSION_3}
    for name, env in (("current", {}), ("session_3", SESSION_3)):
        os.environ.update(env)
        print(name, flush=True)
        result[f"echo_{name}"] = with_broker(echo_over_time, args.rate, args.seconds)
        result[f"idle_{name}"] = idle_cores()
        print(result[f"idle_{name}"], flush=True)
        for key, value in saved.items():  # back to the defaults
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    write_results("broker", result)


if __name__ == "__main__":
    main()
