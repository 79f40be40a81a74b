"""Producing PredictionIO events to crossrec, for applications (async and sync).

Events are packed per partition into newline-delimited JSON messages (up to `batch_events` events,
or after `linger` seconds): the ingest consumer pays its per-message cost once per batch instead of
once per event. Each event is keyed by its entity id, so one entity's events share a partition,
exactly as a plain Kafka producer keyed by entityId would place them.

    async with EventProducer(settings) as producer:
        event_id = await producer.send("shop", {"event": "buy", ...})   # returns once Kafka has it
        producer.send_nowait("shop", {...})                            # fire and forget
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from crossrec import settings as config
from crossrec.adapters.kafka import NDJSON, make_producer
from crossrec.client.background_loop import BackgroundLoop


def with_event_id(event: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Give the event an id if it has none (as PredictionIO's event server does)."""
    event_id = event.get("eventId")
    if not isinstance(event_id, str) or not event_id:
        event_id = uuid.uuid4().hex
        event = {**event, "eventId": event_id}
    return event, event_id


@lru_cache(maxsize=1 << 17)
def _partition(entity_id: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key); cached, as aiokafka's is pure Python."""
    return (murmur2(entity_id.encode()) & 0x7FFFFFFF) % partitions


class _Batch:
    """Events bound for one partition; one future tells when Kafka has them all."""

    __slots__ = ("future", "lines", "size")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.size = 0


class EventProducer:
    def __init__(
        self,
        settings: config.Settings | None = None,
        *,
        batch_events: int = 500,
        batch_bytes: int = 512 * 1024,
        linger: float = 0.005,
    ) -> None:
        self.settings = settings or config.load()
        self.topic = self.settings.topic("events")
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.linger = linger
        self._producer = make_producer(self.settings)
        self._batches: dict[tuple[str, int], _Batch] = {}
        self._in_flight: set[asyncio.Future] = set()
        self._failed: list[BaseException] = []
        self._partitions = 1
        self._ticker: asyncio.Task | None = None

    async def start(self) -> None:
        await self._producer.start()
        self._partitions = len(await self._producer.partitions_for(self.topic))
        self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        await self.flush()
        await self._producer.stop()

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def partition_of(self, entity_id: str) -> int:
        return _partition(entity_id, self._partitions)

    def send_raw_nowait(self, app: str, line: bytes, entity_id: str) -> asyncio.Future:
        """Queue one event's JSON bytes (already carrying an eventId); the future resolves when
        Kafka has acknowledged the message that carries it."""
        key = (app, self.partition_of(entity_id))
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = _Batch()
        batch.lines.append(line)
        batch.size += len(line) + 1
        if len(batch.lines) >= self.batch_events or batch.size >= self.batch_bytes:
            self._send_batch(key)
        return batch.future

    def send_nowait(self, app: str, event: dict[str, Any]) -> tuple[str, asyncio.Future]:
        event, event_id = with_event_id(event)
        entity_id = event.get("entityId")
        line = orjson.dumps(event)
        return event_id, self.send_raw_nowait(
            app, line, entity_id if isinstance(entity_id, str) else ""
        )

    async def send(self, app: str, event: dict[str, Any]) -> str:
        event_id, future = self.send_nowait(app, event)
        await future
        return event_id

    async def send_many(self, app: str, events: Iterable[dict[str, Any]]) -> list[str]:
        pending = [self.send_nowait(app, e) for e in events]
        await asyncio.gather(*{id(f): f for _, f in pending}.values())
        return [event_id for event_id, _ in pending]

    def _send_batch(self, key: tuple[str, int]) -> None:
        batch = self._batches.pop(key)
        app, partition = key
        headers = [("app", app.encode()), ("content-type", NDJSON)]
        sent = asyncio.ensure_future(
            self._producer.send(
                self.topic, b"\n".join(batch.lines), partition=partition, headers=headers
            )
        )
        self._in_flight.add(sent)
        sent.add_done_callback(lambda f: self._settle(f, batch))

    def _settle(self, sent: asyncio.Future, batch: _Batch) -> None:
        """`producer.send` resolves to a delivery future; chain it to the batch's future."""
        self._in_flight.discard(sent)
        if sent.cancelled() or sent.exception() is not None:
            _fail(batch.future, sent)
            self._failed.append(batch.future.exception())
            return
        delivery = sent.result()
        self._in_flight.add(delivery)

        def delivered(done: asyncio.Future) -> None:
            self._in_flight.discard(done)
            if done.cancelled() or done.exception() is not None:
                _fail(batch.future, done)
                self._failed.append(batch.future.exception())
            elif not batch.future.done():
                batch.future.set_result(None)

        delivery.add_done_callback(delivered)

    async def flush(self) -> None:
        """Send every queued event and wait until Kafka has them all."""
        for key in list(self._batches):
            self._send_batch(key)
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)
        failed, self._failed = self._failed, []
        if failed:
            raise failed[0]

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.linger)
            for key in list(self._batches):
                self._send_batch(key)


def _fail(future: asyncio.Future, cause: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(
            cause.exception() if not cause.cancelled() else asyncio.CancelledError()
        )
        future.exception()  # marks it retrieved: flush() reports failures for fire-and-forget sends


class SyncEventProducer:
    """The same producer for synchronous code: a private event loop in a background thread."""

    def __init__(self, settings: config.Settings | None = None, **options: Any) -> None:
        self._loop = BackgroundLoop("crossrec-producer")
        self._producer = self._loop.run(_started(settings, options))

    def send(self, app: str, event: dict[str, Any]) -> str:
        return self._loop.run(self._producer.send(app, event))

    def send_many(self, app: str, events: Iterable[dict[str, Any]]) -> list[str]:
        return self._loop.run(self._producer.send_many(app, list(events)))

    def flush(self) -> None:
        self._loop.run(self._producer.flush())

    def close(self) -> None:
        self._loop.run(self._producer.stop())
        self._loop.close()

    def __enter__(self) -> SyncEventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _started(settings: config.Settings | None, options: dict[str, Any]) -> EventProducer:
    producer = EventProducer(settings, **options)
    await producer.start()
    return producer
