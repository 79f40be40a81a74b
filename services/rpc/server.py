"""The serving side of gRPC-over-Kafka: one consumer group on the request topic, a handler per
method, replies produced to each request's reply-to topic and partition.

Requests whose deadline has passed are dropped unanswered (the client has given up). A handler
raises RpcError for a non-OK status; any other exception becomes INTERNAL: the server never dies
on input.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer

from crossrec.adapters.kafka import CONSUMER_SETTINGS, make_producer
from crossrec.rpc.protocol import Code, Reply, Request, RpcError
from crossrec.settings import Settings

log = logging.getLogger(__name__)

# (body, content type) -> (reply body); raise RpcError for a status other than OK
Handler = Callable[[bytes, str], Awaitable[bytes]]


class RpcServer:
    def __init__(
        self,
        settings: Settings,
        handlers: dict[str, Handler],
        group: str = "crossrec-query",
        topic: str | None = None,
        max_concurrency: int = 256,
    ) -> None:
        self.settings = settings
        self.handlers = handlers
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
            **{**CONSUMER_SETTINGS, "fetch_max_wait_ms": 5},
        )
        self.producer = make_producer(settings, linger_ms=0)
        self.slots = asyncio.Semaphore(max_concurrency)
        self.counts = {"answered": 0, "expired": 0, "malformed": 0}
        self._tasks: set[asyncio.Task] = set()
        self.assigned = asyncio.Event()

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
            for records in batches.values():
                for record in records:
                    await self.slots.acquire()
                    task = asyncio.create_task(
                        self._answer(dict(record.headers or ()), record.value or b"")
                    )
                    self._tasks.add(task)
                    task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self.slots.release()

    async def _answer(self, headers: dict[str, bytes], body: bytes) -> None:
        try:
            request = Request.from_record(headers, body)
        except (KeyError, ValueError) as exc:
            # without a reply-to there is nobody to tell
            self.counts["malformed"] += 1
            log.warning("dropped a request with bad metadata: %r", exc)
            return
        if request.expired:
            self.counts["expired"] += 1
            return
        code, message, payload = Code.OK, "", b""
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
        if request.expired:
            self.counts["expired"] += 1
            return
        reply = Reply(request.correlation_id, code, message, request.content_type, payload)
        await self.producer.send(
            request.reply_to,
            payload,
            key=request.correlation_id.encode(),
            partition=request.reply_partition,
            headers=reply.headers(),
        )
        self.counts["answered"] += 1
