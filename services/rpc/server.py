"""The serving side of gRPC-over-Kafka: one consumer group on the request topic, a handler per
method, replies produced to each request's reply-to topic and partition. With request-topic
generations (crossrec.rpc.generations) the server reads each generation's topic in that
generation's group, from shortly before it starts to shortly after it ends, and deletes the topics
of generations long over.

Requests whose deadline has passed are dropped unanswered (the client has given up). A handler
raises RpcError for a non-OK status; any other exception becomes INTERNAL: the server never dies
on input.

A method may instead have a batch handler, given every request for it that one poll brought: it
can share work between them (one Redis round trip for all their reads) and skips a task per
request. It yields each outcome as it is ready; replies produced without awaiting in between
leave in one produce request, so a handler that awaits now and then lets finished replies go.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from crossrec.adapters.kafka import CONSUMER_SETTINGS, create_topic, make_producer
from crossrec.rpc.generations import Generations, group_of, topic_of
from crossrec.rpc.protocol import METHOD, Code, Reply, Request, RpcError, now_ms
from crossrec.settings import Settings

log = logging.getLogger(__name__)

# (body, content type) -> (reply body); raise RpcError for a status other than OK
Handler = Callable[[bytes, str], Awaitable[bytes]]
# requests -> (position, reply body or the exception it failed with), in any order; a handler
# may skip work for a request that has `expired` (its reply would be dropped)
BatchHandler = Callable[[Sequence[Request]], AsyncIterator[tuple[int, bytes | Exception]]]
# The deadline (epoch ms) of the request a handler is answering: each request is answered in a
# task of its own, so the variable set there is that request's (the router gathers until it).
request_deadline_ms: contextvars.ContextVar[int] = contextvars.ContextVar("request_deadline_ms")
BATCH_SIZE = 32  # requests per batch handler call: a late one's wait and one history read's size


class RpcServer:
    def __init__(
        self,
        settings: Settings,
        handlers: dict[str, Handler],
        group: str = "crossrec-query",
        topic: str | None = None,
        max_concurrency: int = 256,
        batch_handlers: dict[str, BatchHandler] | None = None,
        forget_reply_topics_after: float = 120.0,
    ) -> None:
        self.settings = settings
        self.handlers = handlers
        self.batch_handlers = batch_handlers or {}
        self.topic = topic or settings.topic("rpc-requests")
        self.group = group
        # request topic generations (crossrec.rpc.generations); None: the topic itself for ever
        period = settings.rpc_request_topic_seconds
        self.generations = Generations(period) if period > 0 else None
        # generation (None without them) -> its consumer and the task polling it
        self._readers: dict[int | None, tuple[AIOKafkaConsumer, asyncio.Task]] = {}
        self._partitions: int | None = None  # the base topic's, for the generations' topics
        self._admin: AIOKafkaAdminClient | None = None
        self.producer = make_producer(settings, linger_ms=0)
        self.slots = asyncio.Semaphore(max_concurrency)
        self.counts = {"answered": 0, "expired": 0, "malformed": 0}
        self._tasks: set[asyncio.Task] = set()
        self.assigned = asyncio.Event()
        # reply topic -> when a reply last went there (monotonic s): see _forget_reply_topics
        self.reply_topics: dict[str, float] = {}
        self._forget_after = forget_reply_topics_after
        self._forgotten_at = time.monotonic()
        self._swept = False  # old generations' topics looked for since start
        self._stopping: set[asyncio.Task] = set()  # readers leaving their groups

    async def start(self) -> None:
        # Everything alive now (modules, functions, types: ~100,000 objects) lives as long as the
        # process: out of the collector's walks with it, or each full collection pauses every
        # request in flight for 50-150 ms (measured on an echo server and a query service).
        gc.freeze()
        await self.producer.start()
        if self.generations is None:
            await self._read(None)
            return
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await self._admin.start()
        self._partitions = len(await self.producer.partitions_for(self.topic))
        await self._follow_generations()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for generation in list(self._readers):
            self._leave(generation)
        await asyncio.gather(*self._stopping, return_exceptions=True)
        await self.producer.stop()
        if self._admin is not None:
            await self._admin.close()

    async def serve(self) -> None:
        """Answer requests until cancelled; with generations, move from one to the next."""
        while True:
            await asyncio.sleep(1.0)
            for _, task in self._readers.values():
                if task.done() and not task.cancelled():
                    task.result()  # a reader that failed outside its reads: fail loudly
            if self.generations is not None:
                try:
                    await self._follow_generations()
                except Exception:  # tried again in a second; the current reader goes on
                    log.exception("moving between request topic generations failed")

    async def _follow_generations(self) -> None:
        """Read the generations wanted now (creating their topics), stop reading the others,
        delete the topics of those long over."""
        assert self.generations is not None and self._admin is not None
        now = now_ms()
        wanted = self.generations.wanted(now)
        for generation in wanted:
            if generation not in self._readers:
                await self._create(topic_of(self.topic, generation))
                await self._read(generation)
        retired = [g for g in self._readers if g not in wanted]
        for generation in retired:
            self._leave(generation)
        if retired or not self._swept:
            await self._sweep(now)

    async def _sweep(self, now: int) -> None:
        """Delete the topics of generations long over (left by any server, this one's earlier
        lives included); every server tries, one succeeds."""
        assert self.generations is not None and self._admin is not None
        prefix = topic_of(self.topic, 0)[:-1]
        over = [
            t
            for t in await self._admin.list_topics()
            if t.startswith(prefix)
            and t[len(prefix) :].isdigit()
            and self.generations.deletable(int(t[len(prefix) :]), now)
        ]
        self._swept = True
        if over:
            with contextlib.suppress(Exception):
                await self._admin.delete_topics(over)

    async def _create(self, topic: str) -> None:
        assert self._admin is not None and self._partitions is not None
        await create_topic(self._admin, topic, self._partitions)

    async def _read(self, generation: int | None) -> None:
        """Start reading a generation's topic (or the topic itself) in its own group: the topic
        itself at once, a generation in the background (joining a group takes seconds, and the
        other readers go on meanwhile)."""
        consumer = AIOKafkaConsumer(
            topic_of(self.topic, generation),
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=group_of(self.group, generation),
            # a new group starts at the beginning: a request sent while the group was forming is
            # still answered if its deadline allows; older ones are dropped on their deadline
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            auto_commit_interval_ms=1000,
            max_poll_records=500,
            **{**CONSUMER_SETTINGS, "fetch_max_wait_ms": self.settings.rpc_fetch_wait_ms},
        )
        if generation is None:
            await consumer.start()
        task = asyncio.create_task(self._poll(consumer, generation))
        self._readers[generation] = (consumer, task)

    def _leave(self, generation: int | None) -> None:
        """Stop reading a generation in the background (leaving a group takes a while)."""
        consumer, reader = self._readers.pop(generation)
        reader.cancel()
        task = asyncio.create_task(self._stop_reading(consumer, reader))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    @staticmethod
    async def _stop_reading(consumer: AIOKafkaConsumer, reader: asyncio.Task) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await consumer.stop()

    async def _poll(self, consumer: AIOKafkaConsumer, generation: int | None) -> None:
        """Consume one topic's requests until cancelled. A generation's consumer starts here;
        if that fails, the next round of _follow_generations starts another."""
        if generation is not None:
            try:
                await consumer.start()
            except Exception:
                log.exception("could not start reading request generation %d", generation)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                if self._readers.get(generation, (None,))[0] is consumer:
                    del self._readers[generation]
                return
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200)
            except Exception:  # e.g. the topic went away under a late reader: try again
                log.exception("reading requests failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if consumer.assignment():
                self.assigned.set()
            batched: dict[str, list[Request]] = {}
            for records in batches.values():
                for record in records:
                    headers = dict(record.headers or ())
                    method = headers.get(METHOD, b"").decode(errors="replace")
                    if method in self.batch_handlers:
                        request = self._request(headers, record.value or b"")
                        if request is not None:
                            batched.setdefault(method, []).append(request)
                        continue
                    await self.slots.acquire()
                    self._spawn(self._answer(headers, record.value or b""))
            for method, requests in batched.items():
                await self.slots.acquire()  # a batch is at most max_poll_records requests
                self._spawn(self._answer_batch(self.batch_handlers[method], requests))
            if time.monotonic() - self._forgotten_at > self._forget_after / 2:
                self._forget_reply_topics()

    def _forget_reply_topics(self) -> None:
        """Stop tracking the metadata of reply topics nobody has been answered on for a while.
        The producer adds every topic it sends to, and refreshes them all whenever a new one comes
        (each client's, and each client's next one as clients rotate them): unpruned, every new
        reply topic would cost a metadata request for every reply topic ever answered on."""
        now = time.monotonic()
        self._forgotten_at = now
        newest = max(self.reply_topics, key=self.reply_topics.__getitem__, default=None)
        stale = [
            t
            for t, at in self.reply_topics.items()
            if now - at > self._forget_after and t != newest
        ]
        if not stale:
            return
        for topic in stale:
            del self.reply_topics[topic]
        # the newest is kept: an empty set would mean "every topic" to the client
        self.producer.client.set_topics(list(self.reply_topics))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self.slots.release()

    def _request(self, headers: dict[str, bytes], body: bytes) -> Request | None:
        """The request, or None (counted) when it is malformed or already expired."""
        try:
            request = Request.from_record(headers, body)
        except (KeyError, ValueError) as exc:
            # without a reply-to there is nobody to tell
            self.counts["malformed"] += 1
            log.warning("dropped a request with bad metadata: %r", exc)
            return None
        if request.expired:
            self.counts["expired"] += 1
            return None
        return request

    async def _answer(self, headers: dict[str, bytes], body: bytes) -> None:
        request = self._request(headers, body)
        if request is None:
            return
        code, message, payload = Code.OK, "", b""
        request_deadline_ms.set(request.deadline_ms)
        handler = self.handlers.get(request.method)
        try:
            if handler is None:
                raise RpcError(Code.UNIMPLEMENTED, f"unknown method {request.method}")
            payload = await handler(request.body, request.content_type)
        except RpcError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:
            log.exception("handler failed")
            code, message = Code.INTERNAL, f"{type(exc).__name__}: {exc}"
        await self._reply(request, code, message, payload)

    async def _answer_batch(self, handler: BatchHandler, requests: list[Request]) -> None:
        """A poll's requests in chunks, one after the other: a chunk's reads are fresh when it is
        scored, and requests that expired meanwhile can be skipped."""
        for start in range(0, len(requests), BATCH_SIZE):
            chunk = requests[start : start + BATCH_SIZE]
            pending = dict(enumerate(chunk))
            try:
                async for position, outcome in handler(chunk):
                    request = pending.pop(position)
                    if isinstance(outcome, bytes):
                        await self._reply(request, Code.OK, "", outcome)
                    else:
                        await self._reply(request, *_status(outcome), b"")
            except Exception as exc:
                log.exception("batch handler failed")
                for request in pending.values():
                    await self._reply(request, Code.INTERNAL, f"{type(exc).__name__}: {exc}", b"")

    async def _reply(self, request: Request, code: Code, message: str, payload: bytes) -> None:
        if request.expired:
            self.counts["expired"] += 1
            return
        reply = Reply(request.correlation_id, code, message, request.content_type, payload)
        self.reply_topics[request.reply_to] = time.monotonic()
        # send() only appends to the producer's batch for that partition; delivery is not awaited
        await self.producer.send(
            request.reply_to,
            payload,
            key=request.correlation_id.encode(),
            partition=request.reply_partition,
            headers=reply.headers(),
        )
        self.counts["answered"] += 1


def _status(exc: Exception) -> tuple[Code, str]:
    if isinstance(exc, RpcError):
        return exc.code, exc.message
    log.error("handler failed", exc_info=exc)
    return Code.INTERNAL, f"{type(exc).__name__}: {exc}"
