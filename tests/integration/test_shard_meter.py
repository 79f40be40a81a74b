"""The controller's load meter against the real broker: backlog and served rate of a cluster's
consumer group, from end and committed offsets."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from crossrec import settings as config
from crossrec.adapters.kafka import CONSUMER_SETTINGS, TopicSpec, create_topics, make_producer
from crossrec.rpc.generations import current, group_of, topic_of
from crossrec.rpc.protocol import now_ms
from crossrec.shard.meter import LoadMeter, Target
from crossrec.shard.topics import SHARD_PARTITIONS, create_shard_topics, shard_group, shard_topic

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("period", [0.0, 3600.0])
async def test_backlog_and_served_rate_follow_the_group(
    stack: config.Settings, period: float
) -> None:
    """Without request topic generations (period 0) and with them: then the meter reads the
    generation of the moment (an hour long here, so that the test stays inside one)."""
    stack = dataclasses.replace(stack, rpc_request_topic_seconds=period)
    app = f"m-{uuid.uuid4().hex[:8]}"
    await create_shard_topics(stack, app, 1)
    generation = current(period, now_ms())
    base = Target(shard_topic(stack, app, 0), shard_group(stack, app, 0))
    target = Target(topic_of(base.topic, generation), group_of(base.group, generation))
    if generation is not None:
        await create_topics(
            stack, (TopicSpec(target.topic.removeprefix(stack.topic("")), SHARD_PARTITIONS),)
        )
    producer = make_producer(stack, linger_ms=0)
    await producer.start()
    try:
        for n in range(40):  # one message a batch: Tansu's end offsets are exact then
            await producer.send_and_wait(target.topic, b"x", partition=n % SHARD_PARTITIONS)
    finally:
        await producer.stop()

    meter = LoadMeter(stack, commit_interval=0)  # the raw backlog: commits here are explicit
    await meter.start()
    try:
        before = await meter.measure(base)
        assert before.lag == 40  # nobody has consumed: the whole topic waits

        consumer = AIOKafkaConsumer(
            bootstrap_servers=stack.kafka_bootstrap,
            group_id=target.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **CONSUMER_SETTINGS,
        )
        await consumer.start()
        try:
            partitions = [TopicPartition(target.topic, p) for p in range(SHARD_PARTITIONS)]
            consumer.assign(partitions)
            # serve 6 of each partition's 10 requests, and say so
            await consumer.commit({tp: 6 for tp in partitions})
        finally:
            await consumer.stop()
        await asyncio.sleep(0.5)
        after = await meter.measure(base)
    finally:
        await meter.stop()
    assert after.lag == 16
    assert after.rate > 0  # 24 served since the first look
