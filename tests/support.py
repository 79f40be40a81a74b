"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import orjson
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.stack.processes import free_port

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T] | T], done: Callable[[T], bool], timeout: float = 30
) -> T:
    """Poll until `done(probe())` (awaited if need be); return the last value, for the caller
    to assert on."""
    deadline = time.monotonic() + timeout

    async def look() -> T:
        value = probe()
        return await value if inspect.isawaitable(value) else value

    value = await look()
    while not done(value) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        value = await look()
    return value


def logged_count(event_log: EventLog, app: str) -> int:
    return sum(pq.read_metadata(s.path).num_rows for s in event_log.segments(app))


async def read_topic(
    settings: config.Settings, name: str, stop: Callable[[list], bool], timeout: float = 30
) -> list:
    """Every record of a topic from the beginning, until `stop(records)` or the timeout."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    try:
        topic = settings.topic(name)
        await consumer.topics()  # fetch metadata so partitions are known
        partitions = [
            TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or {0})
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list = []
        deadline = time.monotonic() + timeout
        while not stop(records) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for tp_records in batch.values():
                records.extend(tp_records)
        return records
    finally:
        await consumer.stop()


def engine_json(
    app: str, directory: Path, event_names: tuple[str, ...] = ("purchase", "view"), **params: object
) -> Path:
    """A UR engine.json as PredictionIO users write it, saved in `directory`."""
    doc = {
        "comment": "a UR engine.json as PredictionIO users write it",
        "datasource": {"params": {"appName": app, "eventNames": list(event_names)}},
        "algorithms": [
            {
                "name": "ur",
                "params": {
                    "appName": app,
                    "indexName": "urindex",
                    "typeName": "items",
                    "eventNames": list(event_names),
                    **params,
                },
            }
        ],
    }
    path = directory / f"{app}-engine.json"
    path.write_bytes(orjson.dumps(doc))
    return path


def start_crossrec(
    *args: str, home: Path, owner_pid: int, **settings: str
) -> tuple[subprocess.Popen, dict[str, str]]:
    """`crossrec ARGS` in a subprocess, as from a user's shell: none of the session stack's
    CROSSREC_ settings, a CROSSREC_HOME and gateway port of its own, a stack that stops when
    `owner_pid` is gone, then `settings` (environment variables). Output and errors on one
    text pipe. Returns the process and its environment (for later commands on that stack)."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CROSSREC_")}
    env = {
        **inherited,
        "CROSSREC_HOME": str(home),
        "CROSSREC_GATEWAY_PORT": str(free_port()),
        "CROSSREC_STOP_WITH_PID": str(owner_pid),
        **settings,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "crossrec.cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, env
