"""The calling side of gRPC-over-Kafka. Each client instance owns a reply topic of its own, so many
client processes run at once and each hears only its replies.

    async with RpcClient(settings) as client:
        body = await client.call(RECOMMEND, request_bytes, timeout=1.0)
        replies = await client.gather({0: topic_a, 1: topic_b}, METHOD, body, deadline_ms)

`gather` is the sharded tier's fan-out: one request to many topics, one deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from crossrec.adapters.kafka import CONSUMER_SETTINGS, make_producer
from crossrec.rpc.protocol import JSON, PROTOBUF, Code, Reply, Request, RpcError, now_ms
from crossrec.settings import Settings

K = TypeVar("K")
log = logging.getLogger(__name__)


class RpcClient:
    def __init__(self, settings: Settings, request_topic: str | None = None) -> None:
        self.settings = settings
        self.request_topic = request_topic or settings.topic("rpc-requests")
        self.reply_topic = settings.topic(f"rpc-replies.{uuid.uuid4().hex[:16]}")
        self.producer = make_producer(settings, linger_ms=0)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            **{**CONSUMER_SETTINGS, "fetch_max_wait_ms": 5},
        )
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._listener: asyncio.Task | None = None

    async def start(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(self.reply_topic, num_partitions=1, replication_factor=1)]
            )
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
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            with contextlib.suppress(Exception):  # best effort: brokers may refuse deletes
                await admin.delete_topics([self.reply_topic])
        finally:
            await admin.close()

    async def __aenter__(self) -> RpcClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _listen(self) -> None:
        while True:
            try:
                batches = await self.consumer.getmany(timeout_ms=200)
            except Exception:  # whatever it was, it must not silence every later reply
                log.exception("reading replies from %s failed; retrying", self.reply_topic)
                await asyncio.sleep(0.1)
                continue
            for records in batches.values():
                for record in records:
                    try:
                        reply = Reply.from_record(dict(record.headers or ()), record.value or b"")
                    except (KeyError, ValueError):
                        continue
                    future = self._waiting.pop(reply.correlation_id, None)
                    if future is not None and not future.done():
                        future.set_result(reply)

    async def _send(
        self, topic: str, method: str, body: bytes, deadline_ms: int, content_type: str
    ) -> tuple[str, asyncio.Future[Reply]]:
        """Produce one request; its correlation id and the future its reply will complete."""
        correlation_id = uuid.uuid4().hex
        request = Request(
            method=method,
            correlation_id=correlation_id,
            reply_to=self.reply_topic,
            reply_partition=0,
            deadline_ms=deadline_ms,
            content_type=content_type,
            body=body,
        )
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        try:
            await self.producer.send(
                topic, body, key=correlation_id.encode(), headers=request.headers()
            )
        except BaseException:
            self._waiting.pop(correlation_id, None)
            raise
        return correlation_id, future

    async def call(
        self, method: str, body: bytes, timeout: float = 5.0, content_type: str = PROTOBUF
    ) -> bytes:
        """Send one request and wait for its reply; RpcError for any status but OK."""
        deadline_ms = now_ms() + int(timeout * 1000)
        correlation_id, future = await self._send(
            self.request_topic, method, body, deadline_ms, content_type
        )
        try:
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RpcError(Code.DEADLINE_EXCEEDED, f"no reply within {timeout:.3f} s") from None
        finally:
            self._waiting.pop(correlation_id, None)
        if reply.code != Code.OK:
            raise RpcError(reply.code, reply.message)
        return reply.body

    async def gather(
        self,
        topics: Mapping[K, str],
        method: str,
        body: bytes,
        deadline_ms: int,
        content_type: str = JSON,
    ) -> dict[K, Reply]:
        """The same request to several topics (key -> topic), all sent before any is awaited;
        the replies (any status) that arrive by the one absolute deadline, by key."""
        sent: dict[K, tuple[str, asyncio.Future[Reply]]] = {}
        try:
            for key, topic in topics.items():
                sent[key] = await self._send(topic, method, body, deadline_ms, content_type)
            timeout = max(0.0, (deadline_ms - now_ms()) / 1000)
            if sent:
                await asyncio.wait([f for _, f in sent.values()], timeout=timeout)
            return {k: f.result() for k, (_, f) in sent.items() if f.done() and not f.cancelled()}
        finally:
            for correlation_id, _ in sent.values():
                self._waiting.pop(correlation_id, None)
