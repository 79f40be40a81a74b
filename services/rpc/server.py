"""The serving side of gRPC-over-Kafka: one consumer group on the request topic, a handler per
method, replies produced to each request's reply-to topic and partition.

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
import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer

from crossrec.adapters.kafka import CONSUMER_SETTINGS, make_producer
from crossrec.rpc.protocol import METHOD, Code, Reply, Request, RpcError
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
        self.consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group,
            # a new group starts at the beginning: a request sent while the group was forming is
            # still answered if its deadline allows; older ones are dropped on their deadline
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            auto_commit_interval_ms=1000,
            max_poll_records=500,
            **{**CONSUMER_SETTINGS, "fetch_max_wait_ms": settings.rpc_fetch_wait_ms},
        )
        self.producer = make_producer(settings, linger_ms=0)
        self.slots = asyncio.Semaphore(max_concurrency)
        self.counts = {"answered": 0, "expired": 0, "malformed": 0}
        self._tasks: set[asyncio.Task] = set()
        self.assigned = asyncio.Event()
        # reply topic -> when a reply last went there (monotonic s): see _forget_reply_topics
        self.reply_topics: dict[str, float] = {}
        self._forget_after = forget_reply_topics_after
        self._forgotten_at = time.monotonic()

    async def start(self) -> None:
        await self.producer.start()
        await self.consumer.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.consumer.stop()
        await self.producer.stop()

    async def serve(self) -> None:
        """Consume requests until cancelled."""
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            if self.consumer.assignment():
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
