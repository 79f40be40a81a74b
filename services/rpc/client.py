"""The calling side of gRPC-over-Kafka. Each client instance owns a reply topic of its own, so many
client processes run at once and each hears only its replies. The reply topic is replaced by a
fresh one every `rpc_reply_topic_seconds` while in use (the old one is read until its requests'
deadlines pass, then deleted), so that no reply partition grows for the client's whole life.

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
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from crossrec.adapters.kafka import (
    CONSUMER_SETTINGS,
    StickyPartitioner,
    create_topic,
    make_producer,
)
from crossrec.rpc.generations import Generations, topic_of
from crossrec.rpc.protocol import JSON, PROTOBUF, Code, Reply, Request, RpcError, now_ms
from crossrec.settings import Settings

K = TypeVar("K")
log = logging.getLogger(__name__)


class RpcClient:
    def __init__(self, settings: Settings, request_topic: str | None = None) -> None:
        self.settings = settings
        self.request_topic = request_topic or settings.topic("rpc-requests")
        self.reply_topic = self._reply_topic_name()
        # keyless requests, batched per linger window on one partition (fewer, fuller batches)
        self.producer = make_producer(
            settings,
            linger_ms=settings.rpc_linger_ms,
            partitioner=StickyPartitioner(settings.rpc_linger_ms),
        )
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            **{**CONSUMER_SETTINGS, "fetch_max_wait_ms": settings.rpc_fetch_wait_ms},
        )
        self.admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._tasks: set[asyncio.Task] = set()
        # Reply topics rotate (rpc_reply_topic_seconds) so none grows without end: Tansu's fetch
        # lists every batch its partition ever got. The current topic's latest request deadline;
        # earlier topics still read, each with its latest deadline; the next topic, once created.
        self._last_deadline = 0
        self._earlier: dict[str, int] = {}
        self._next_topic: str | None = None
        # request topics are replaced by generations (crossrec.rpc.generations): the topics of
        # this generation and the last known to exist (the producer tracks just these), those
        # being created, each base's partition count
        period = settings.rpc_request_topic_seconds
        self._generations = Generations(period) if period > 0 else None
        self._existing: dict[str, int] = {}  # topic -> its generation
        self._creating: dict[str, asyncio.Future[None]] = {}
        self._partitions: dict[str, int] = {}

    def _reply_topic_name(self) -> str:
        return self.settings.topic(f"rpc-replies.{uuid.uuid4().hex[:16]}")

    async def start(self) -> None:
        await self.admin.start()
        await self._create(self.reply_topic)
        await self.producer.start()
        await self.consumer.start()
        await self._assign()
        self._spawn(self._listen())
        if self.settings.rpc_reply_topic_seconds > 0:
            self._spawn(self._rotate())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.consumer.stop()
        await self.producer.stop()
        topics = [self.reply_topic, *self._earlier]
        if self._next_topic is not None:  # created, not yet moved to
            topics.append(self._next_topic)
        with contextlib.suppress(Exception):  # best effort: brokers may refuse deletes
            await self.admin.delete_topics(topics)
        await self.admin.close()

    async def __aenter__(self) -> RpcClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _create(self, topic: str) -> None:
        await create_topic(self.admin, topic, 1)

    async def _assign(self) -> None:
        """Read the current and earlier reply topics, each from where it was (a new one from its
        beginning, which on a new topic is exact)."""
        wanted = [TopicPartition(t, 0) for t in (self.reply_topic, *self._earlier)]
        kept = {tp: await self.consumer.position(tp) for tp in self.consumer.assignment()}
        self.consumer.assign(wanted)
        for tp in wanted:
            if tp in kept:
                self.consumer.seek(tp, kept[tp])
            else:
                await self.consumer.seek_to_beginning(tp)

    async def _rotate(self) -> None:
        """Every rpc_reply_topic_seconds, if the current reply topic was used, create the next
        one; the listener moves to it between two reads."""
        while True:
            await asyncio.sleep(self.settings.rpc_reply_topic_seconds)
            if self._last_deadline and self._next_topic is None:
                topic = self._reply_topic_name()
                try:
                    await self._create(topic)
                except Exception:
                    log.exception(
                        "could not create reply topic %s; keeping %s", topic, self.reply_topic
                    )
                    continue
                self._next_topic = topic

    async def _follow_rotation(self) -> None:
        """Move new requests to the next reply topic; stop reading (and delete) earlier ones once
        every request told to reply there is well past its deadline (servers reply only before
        it; the margin covers clocks that differ between machines)."""
        if self._next_topic is not None:
            self._earlier[self.reply_topic] = self._last_deadline
            self.reply_topic, self._next_topic, self._last_deadline = self._next_topic, None, 0
        done = [t for t, deadline in self._earlier.items() if now_ms() > deadline + 5000]
        for topic in done:
            del self._earlier[topic]
        if done:
            self._spawn(self._delete(done))
        wanted = {TopicPartition(t, 0) for t in (self.reply_topic, *self._earlier)}
        if wanted != self.consumer.assignment():  # also retries an _assign that failed
            await self._assign()

    async def _delete(self, topics: list[str]) -> None:
        with contextlib.suppress(Exception):  # best effort, as in stop()
            await self.admin.delete_topics(topics)

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
            if self._next_topic is not None or self._earlier:
                try:
                    await self._follow_rotation()
                except Exception:  # tried again after the next read
                    log.exception("moving between reply topics failed; retrying")

    async def current_topic(self, base: str) -> str:
        """The topic a request for `base` goes to now: its current generation's (created first
        if no server has yet, with the base topic's partitions), or `base` without generations."""
        if self._generations is None:
            return base
        generation = self._generations.at(now_ms())
        topic = topic_of(base, generation)
        if topic not in self._existing:
            creating = self._creating.get(topic)
            if creating is None:  # concurrent first requests share one creation
                creating = self._creating[topic] = asyncio.ensure_future(
                    self._create_request_topic(base, topic)
                )
                creating.add_done_callback(lambda _: self._creating.pop(topic, None))
            await asyncio.shield(creating)
            # the producer stops tracking generations before the last one: not the last one, whose
            # final batches may still wait to be sent (untracked, they would fail)
            self._existing = {t: g for t, g in self._existing.items() if g >= generation - 1}
            self._existing[topic] = generation
            self.producer.client.set_topics(list(self._existing))
        return topic

    async def _create_request_topic(self, base: str, topic: str) -> None:
        if base not in self._partitions:
            self._partitions[base] = len(await self.producer.partitions_for(base))
        await create_topic(self.admin, topic, self._partitions[base])

    async def _send(
        self, base: str, method: str, body: bytes, deadline_ms: int, content_type: str
    ) -> tuple[str, asyncio.Future[Reply]]:
        """Produce one request to request topic `base` (its current generation); its correlation
        id and the future its reply will complete."""
        topic = await self.current_topic(base)
        correlation_id = uuid.uuid4().hex
        self._last_deadline = max(self._last_deadline, deadline_ms)
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
            delivery = await self.producer.send(topic, body, headers=request.headers())
        except BaseException:
            self._waiting.pop(correlation_id, None)
            raise
        delivery.add_done_callback(lambda sent: self._undelivered(sent, correlation_id))
        return correlation_id, future

    def _undelivered(self, sent: asyncio.Future, correlation_id: str) -> None:
        """A request the broker did not take fails now (UNAVAILABLE), not at its deadline."""
        if sent.cancelled() or sent.exception() is None:
            return
        future = self._waiting.pop(correlation_id, None)
        if future is not None and not future.done():
            error = RpcError(Code.UNAVAILABLE, f"request not delivered: {sent.exception()!r}")
            future.set_exception(error)

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
            return {  # an undelivered request (its future failed) counts as unanswered
                k: f.result()
                for k, (_, f) in sent.items()
                if f.done() and not f.cancelled() and f.exception() is None
            }
        finally:
            for correlation_id, _ in sent.values():
                self._waiting.pop(correlation_id, None)
