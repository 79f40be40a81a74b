"""The router's side of gRPC-over-Kafka to many topics at once: one reply topic, one request per
chosen cluster, all sent before any is awaited, gathered until one deadline. (RpcClient sends to
one request topic; a fan-out needs a topic per call and a shared deadline.)"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from crossrec.adapters.kafka import CONSUMER_SETTINGS, make_producer
from crossrec.rpc.protocol import JSON, Reply, Request, now_ms
from crossrec.settings import Settings


class FanOut:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.reply_topic = settings.topic(f"rpc-replies.{uuid.uuid4().hex[:16]}")
        self.producer = make_producer(settings, linger_ms=0)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            **{**CONSUMER_SETTINGS, "fetch_max_wait_ms": 5},
        )
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._listener: asyncio.Task | None = None

    async def _admin(self) -> AIOKafkaAdminClient:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        return admin

    async def start(self) -> None:
        admin = await self._admin()
        try:
            await admin.create_topics([NewTopic(self.reply_topic, 1, 1)])
        finally:
            await admin.close()
        await self.producer.start()
        await self.consumer.start()
        partition = TopicPartition(self.reply_topic, 0)
        self.consumer.assign([partition])
        await self.consumer.seek_to_beginning(partition)  # a new topic: the beginning is exact
        self._listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self.consumer.stop()
        await self.producer.stop()
        admin = await self._admin()
        try:
            with contextlib.suppress(Exception):  # best effort: brokers may refuse deletes
                await admin.delete_topics([self.reply_topic])
        finally:
            await admin.close()

    async def _listen(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    try:
                        reply = Reply.from_record(dict(record.headers or ()), record.value or b"")
                    except (KeyError, ValueError):
                        continue
                    future = self._waiting.pop(reply.correlation_id, None)
                    if future is not None and not future.done():
                        future.set_result(reply)

    async def gather(
        self, topics: Mapping[int, str], method: str, body: bytes, deadline_ms: int
    ) -> dict[int, Reply]:
        """Send `body` to every topic (key -> topic); the replies that arrive by the deadline."""
        loop = asyncio.get_running_loop()
        futures: dict[int, asyncio.Future[Reply]] = {}
        ids = []
        try:
            for key, topic in topics.items():
                correlation_id = uuid.uuid4().hex
                request = Request(
                    method, correlation_id, self.reply_topic, 0, deadline_ms, JSON, body
                )
                futures[key] = self._waiting[correlation_id] = loop.create_future()
                ids.append(correlation_id)
                await self.producer.send(
                    topic, body, key=correlation_id.encode(), headers=request.headers()
                )
            timeout = max(0.0, (deadline_ms - now_ms()) / 1000)
            if futures:
                await asyncio.wait(futures.values(), timeout=timeout)
            return {k: f.result() for k, f in futures.items() if f.done() and not f.cancelled()}
        finally:
            for correlation_id in ids:
                self._waiting.pop(correlation_id, None)
