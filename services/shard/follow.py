"""Reading a broadcast topic (model-updates, item-changes) whole from its end, without a group:
every router and worker hears every record."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from crossrec.adapters.kafka import CONSUMER_SETTINGS
from crossrec.settings import Settings

log = logging.getLogger("crossrec.shard")


async def follow(
    settings: Settings, topic_name: str, handle: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    """Call `handle` with each JSON record from now on, until cancelled; a failing record is
    logged and skipped."""
    topic = settings.topic(topic_name)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, **CONSUMER_SETTINGS
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
