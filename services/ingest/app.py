"""The ingest service: a faust-streaming app over the events topic.

Run it with `crossrec ingest` (or `faust -A crossrec.ingest.app worker --without-web`). It takes
messages in batches without acknowledging them, hands each batch to the IngestProcessor, produces
dead letters and item-change triggers, and acknowledges a message only once the event log holds it.
A timer writes the log every `log_flush_seconds`, also while a rebalance waits for acks. Segments
are written in a worker thread (pyarrow lets go of the GIL), so batches go on meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import faust
import orjson
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.redis_store import RedisStore
from crossrec.ingest.processor import BatchOutcome, IngestProcessor, Message
from crossrec.stack import health

log = logging.getLogger("crossrec.ingest")

FETCH_MAX_WAIT_MS = 100  # DESIGN.md §5: on Tansu a fetch costs about half of this even with data


def _short_fetch_wait() -> None:
    """faust hard-codes fetch_max_wait_ms=1500 for its worker consumer: on Tansu that alone made
    every event wait ~650 ms before ingest saw it. Shorten it on the consumer faust creates."""
    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "crossrec", False):
        return

    def create_with_short_wait(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by aiokafka when it starts
        return consumer

    create_with_short_wait.crossrec = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_with_short_wait  # type: ignore[method-assign]


TAKE_MAX = 2000  # messages per batch (a batched message carries many events)
TAKE_WITHIN = 0.02  # seconds: the most a lone event waits before it is processed


def create_app(settings: config.Settings | None = None) -> faust.App:
    settings = settings or config.load()
    _short_fetch_wait()
    app = faust.App(
        "crossrec-ingest",
        broker=f"kafka://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        datadir=str(config.home() / "ingest-data"),
        # Tansu: every group join waits session_timeout/2 (DESIGN.md §5)
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        broker_commit_interval=1.0,
        broker_max_poll_records=TAKE_MAX,
        stream_buffer_maxsize=4 * TAKE_MAX,
        producer_linger=0.005,
    )
    events_topic = app.topic(settings.topic("events"), value_serializer="raw", key_serializer="raw")
    dead_letters = app.topic(
        settings.topic("dead-letter"), value_serializer="raw", key_serializer="raw"
    )
    item_changes = app.topic(
        settings.topic("item-changes"), value_serializer="raw", key_serializer="raw"
    )

    worker = IngestWorker(settings, app, dead_letters, item_changes)

    @app.agent(events_topic, name="crossrec-ingest")
    async def ingest(stream: faust.StreamT) -> None:
        worker.stream = stream
        async for events in stream.noack_take(TAKE_MAX, within=TAKE_WITHIN):
            await worker.take(events)

    @app.timer(interval=max(0.2, settings.log_flush_seconds / 2))
    async def flush_timer() -> None:
        if worker.processor.flush_due():
            worker.start_flush()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        worker.partitions = sorted(tp.partition for tp in assigned)
        async with worker.flush_lock:  # a segment being written counts in the new watermarks
            worker.processor.forget_watermarks()

    @app.timer(interval=10.0)
    async def report_stats() -> None:
        worker.stats.report()

    @app.timer(interval=2.0)
    async def heartbeat() -> None:
        ready = worker.partitions is not None
        await health.report(
            worker.processor.store.redis, "ingest", ready, partitions=worker.partitions
        )

    return app


class IngestWorker:
    """What the faust agent, its timers and its rebalance hook share."""

    def __init__(
        self, settings: config.Settings, app: faust.App, dead_letters: Any, item_changes: Any
    ) -> None:
        self.app = app
        self.source_topic = settings.topic("events").encode()
        self.dead_letters = dead_letters
        self.item_changes = item_changes
        self.processor = IngestProcessor(
            settings, RedisStore(settings.redis_url), EventLog(settings.eventlog)
        )
        self.stream: faust.StreamT | None = None
        self.unacked: list[Any] = []  # faust events processed but not yet in the event log
        self.flush_lock = asyncio.Lock()  # one segment write at a time
        self._flushing: asyncio.Task | None = None
        self._writing: asyncio.Future | None = None  # the last batch's Redis writes
        self.stats = BatchStats()
        self.partitions: list[int] | None = None

    async def take(self, events: list[Any]) -> None:
        messages = [
            Message(
                partition=e.message.partition,
                offset=e.message.offset,
                timestamp=int(e.message.timestamp * 1000),
                headers=_headers(e.message.headers),
                value=e.message.value or b"",
            )
            for e in events
        ]
        started = time.time()
        outcome, writes = await self.processor.prepare(messages)
        # This batch was prepared while the previous one's Redis writes ran; now they must be
        # done (one batch at a time in Redis), and this one's start.
        if self._writing is not None:
            await self._writing
        self._writing = asyncio.ensure_future(self._write(outcome, writes))
        self.stats.batch(messages, started, time.time())
        self.unacked.extend(events)
        if self.processor.flush_due():
            self.start_flush()

    async def _write(self, outcome: BatchOutcome, writes: dict[str, Any]) -> None:
        try:
            await self.processor.apply(outcome, writes)
            await self.publish(outcome)
        except Exception:
            # Unacknowledged, these messages come back from Kafka to the restarted worker.
            log.exception("Redis write failed: stopping ingest")
            os.kill(os.getpid(), signal.SIGTERM)
            raise

    async def publish(self, outcome: BatchOutcome) -> None:
        for r in outcome.rejected:
            headers = [
                ("reason", r.reason.encode()),
                ("source-topic", self.source_topic),
                ("source-partition", str(r.partition).encode()),
                ("source-offset", str(r.offset).encode()),
                ("source-index", str(r.index).encode()),
            ]
            if r.app is not None:
                headers.append(("app", r.app.encode()))
            await self.dead_letters.send(key=(r.app or "").encode(), value=r.raw, headers=headers)
        for reason, changes in (
            ("new-items", outcome.new_items),
            ("properties", outcome.changed_items),
        ):
            for app_name, items in changes.items():
                body = orjson.dumps({"app": app_name, "items": items, "reason": reason})
                await self.item_changes.send(key=app_name.encode(), value=body)

    def start_flush(self) -> None:
        """Write the event log in the background, unless a write is still going on."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.ensure_future(self.flush_and_ack())

    async def flush_and_ack(self) -> None:
        """Write the event log, then acknowledge what it now holds (so offsets may commit)."""
        async with self.flush_lock:
            if self.stream is None or not self.unacked:
                return
            segments = self.processor.take_flush()
            unacked, self.unacked = self.unacked, []
            if self._writing is not None:  # Redis holds these messages' events too
                await asyncio.shield(self._writing)
            try:
                written = await asyncio.to_thread(self.processor.write, segments)
            except Exception:
                # These messages stay unacknowledged, so their offsets never commit: stop, and
                # Kafka hands them to the restarted worker (`crossrec up` restarts it).
                log.exception("event log write failed: stopping ingest")
                os.kill(os.getpid(), signal.SIGTERM)
                return
            self.processor.written(segments)
            await self.app.producer.flush()  # dead letters and triggers are out before we ack
            for event in unacked:
                await self.stream.ack(event)
        log.debug("event log: %d events written, %d messages acknowledged", written, len(unacked))


class BatchStats:
    """What the log says every 10 s: messages and batches taken, the oldest message's age when
    its batch was taken (broker and fetch delay) and the longest batch (Redis and validation)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.messages = self.batches = 0
        self.oldest_ms = self.longest_ms = 0.0

    def batch(self, messages: list[Message], started: float, ended: float) -> None:
        self.messages += len(messages)
        self.batches += 1
        if messages:
            oldest = min(m.timestamp for m in messages)
            self.oldest_ms = max(self.oldest_ms, started * 1000 - oldest)
        self.longest_ms = max(self.longest_ms, (ended - started) * 1000)

    def report(self) -> None:
        if self.batches:
            log.info(
                "ingest: %d messages in %d batches; oldest message taken at %.0f ms, "
                "longest batch %.0f ms",
                self.messages,
                self.batches,
                self.oldest_ms,
                self.longest_ms,
            )
        self.reset()


def _headers(raw: Any) -> dict[str, bytes]:
    if not raw:
        return {}
    items = raw.items() if isinstance(raw, dict) else raw
    return {k: v for k, v in items}


app = create_app()
