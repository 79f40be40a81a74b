"""Kafka at the edge: the topic list, topic creation, and producer/consumer settings that suit
both Apache Kafka and the embedded Tansu broker (DESIGN.md §5)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition

from crossrec.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int


# Mirrors schemas/topics.json (a test keeps them equal).
TOPICS = (
    TopicSpec("events", 4),
    TopicSpec("dead-letter", 1),
    TopicSpec("item-changes", 1),
    TopicSpec("model-updates", 1),
    TopicSpec("rpc-requests", 4),
)

# Tansu makes every consumer-group join wait session_timeout/2, and answers a fetch only after
# about fetch_max_wait_ms/2 even when data is waiting: keep both short.
CONSUMER_SETTINGS = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "fetch_max_wait_ms": 25,
}

# Broadcast topics (model-updates, item-changes) carry a few records a minute, and their news may
# wait a moment (the UR's Elasticsearch shows a change after its 1 s refresh). Tansu answers a
# fetch with nothing new only when its wait is over, so an idle consumer costs the broker
# 1000 / fetch_max_wait_ms fetches a second: 40 at 25 ms, 4 at this.
BROADCAST_FETCH_WAIT_MS = 250

NDJSON = b"application/x-ndjson"


async def create_topics(settings: Settings, topics: tuple[TopicSpec, ...] = TOPICS) -> None:
    """Create every topic explicitly (an auto-created topic would get the broker's default)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(settings.topic(t.name), num_partitions=t.partitions, replication_factor=1)
            for t in topics
            if settings.topic(t.name) not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


async def create_topic(admin: AIOKafkaAdminClient, name: str, partitions: int) -> None:
    """Create one topic through a running admin client; one that exists already is left as is
    (several servers and clients create the same request-topic generation)."""
    with contextlib.suppress(TopicAlreadyExistsError):
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])


async def wait_for_broker(bootstrap: str, timeout: float = 30.0) -> None:
    """Return once the broker answers metadata requests."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except (KafkaError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
        finally:
            await admin.close()


class StickyPartitioner:
    """Keyless records go to one partition for `window_ms`, then to the next (Kafka's own sticky
    partitioner, KIP-480, by time): a linger window's records leave as one batch instead of one
    per partition. Keyed records hash as usual. On Tansu every batch is an object that each later
    fetch of its partition lists, so fewer batches keep fetches cheap."""

    def __init__(self, window_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = max(window_ms, 1) / 1000
        self.clock = clock
        self.hashed = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is not None:
            return self.hashed(key, all_partitions, available)
        turn = int(self.clock() / self.window_s)
        return all_partitions[turn % len(all_partitions)]


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "linger_ms": 5,
        "max_batch_size": 1024 * 1024,
        "max_request_size": 4 * 1024 * 1024,
        "acks": 1,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


async def follow_broadcast(
    settings: Settings, topic_name: str, handle: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    """Read a broadcast topic (model-updates, item-changes) whole, without a group, so every
    server hears every record: `handle` each JSON record from now on, until cancelled; a
    failing record is logged and skipped."""
    topic = settings.topic(topic_name)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        **{**CONSUMER_SETTINGS, "fetch_max_wait_ms": BROADCAST_FETCH_WAIT_MS},
    )
    await consumer.start()
    try:
        await consumer.topics()  # metadata, so the partitions are known
        found = consumer.partitions_for_topic(topic) or {0}
        partitions = [TopicPartition(topic, p) for p in found]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)  # Tansu's end may repeat old records: harmless
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    try:
                        await handle(orjson.loads(record.value))
                    except Exception:
                        log.exception("could not apply a %s record", topic_name)
    finally:
        await consumer.stop()
