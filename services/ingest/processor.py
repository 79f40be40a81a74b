"""What ingest does with a batch of Kafka messages, apart from Kafka itself.

For each message: find the app (header), split a batched message into events, validate each, then
write Redis (history, item properties, known items) at once and buffer the event log. The log is
written every few seconds; only then are the messages acknowledged, so Kafka's committed offsets
never run ahead of the log. The faust app (app.py) feeds batches in and acts on what comes out:
dead letters to produce, item-change triggers to emit, messages to acknowledge.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from crossrec.adapters.eventlog import EventLog, LoggedEvent
from crossrec.adapters.kafka import NDJSON
from crossrec.adapters.redis_store import RedisStore
from crossrec.core.events import Event, InvalidEvent, decode
from crossrec.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Message:
    partition: int
    offset: int
    timestamp: int  # ms, the broker's or producer's time; the default eventTime
    headers: dict[str, bytes]
    value: bytes


@dataclass(slots=True)
class Rejected:
    raw: bytes
    app: str | None
    reason: str
    partition: int
    offset: int
    index: int


@dataclass(slots=True)
class BatchOutcome:
    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    new_items: dict[str, list[str]] = field(default_factory=dict)  # app -> ids
    changed_items: dict[str, list[str]] = field(default_factory=dict)  # app -> ids


def split(message: Message) -> list[bytes]:
    """One event, or several when the message is newline-delimited JSON."""
    if message.headers.get("content-type") == NDJSON:
        return [line for line in message.value.split(b"\n") if line.strip()]
    return [message.value]


async def apply_to_redis(
    store: RedisStore, app: str, events: Sequence[Event], history_cap: int
) -> tuple[list[str], list[str]]:
    """Write a batch of one app's valid events to Redis; return (new items, changed items)."""
    history = []
    targets: dict[str, None] = {}
    property_events = []
    for e in events:
        if e.target_entity_id is not None:
            if e.entity_type == "user":
                history.append((e.entity_id, e.event, e.target_entity_id, e.event_time))
            if e.target_entity_type == "item":
                targets[e.target_entity_id] = None
        elif e.entity_type == "item" and e.is_special:
            property_events.append((e.entity_id, e.event, e.properties, e.event_time))
            targets[e.entity_id] = None
    if history:
        await store.add_history(app, history, history_cap)
    new_items = await store.add_items(app, list(targets)) if targets else []
    changed = await store.apply_property_events(app, property_events) if property_events else []
    return new_items, changed


class IngestProcessor:
    def __init__(self, settings: Settings, store: RedisStore, event_log: EventLog) -> None:
        self.settings = settings
        self.store = store
        self.event_log = event_log
        self._apps: set[str] = set()
        self._apps_loaded = 0.0
        self._watermarks: dict[str, dict[int, int]] = {}  # app -> partition -> last logged offset
        self._pending: dict[tuple[str, int], list[LoggedEvent]] = defaultdict(list)
        self._window: dict[int, tuple[int, int]] = {}  # partition -> (first, last) offset buffered
        self._buffered_since: float | None = None
        self.buffered_events = 0

    async def known_apps(self, refresh_after: float = 5.0) -> set[str]:
        """App names, re-read every few seconds (a deleted app stops being accepted)."""
        if time.monotonic() - self._apps_loaded > refresh_after:
            self._apps = await self.store.app_names()
            self._apps_loaded = time.monotonic()
        return self._apps

    async def _is_app(self, app: str, checked: set[str]) -> bool:
        """A name not in the cache is looked up in Redis (once per batch): an app created a
        moment ago must not have its first events rejected."""
        if app in self._apps:
            return True
        if app not in checked:
            checked.add(app)
            if await self.store.app_exists(app):
                self._apps.add(app)
        return app in self._apps

    def forget_watermarks(self) -> None:
        """After a rebalance another worker may have logged our partitions: read them again."""
        self._watermarks.clear()

    def _watermark(self, app: str, partition: int) -> int:
        marks = self._watermarks.get(app)
        if marks is None:
            marks = self._watermarks[app] = self.event_log.high_watermarks(app)
        return marks.get(partition, -1)

    async def process(self, messages: Sequence[Message]) -> BatchOutcome:
        outcome = BatchOutcome()
        await self.known_apps()
        checked: set[str] = set()
        by_app: dict[str, list[Event]] = defaultdict(list)
        for message in messages:
            first, last = self._window.get(message.partition, (message.offset, message.offset))
            self._window[message.partition] = (
                min(first, message.offset),
                max(last, message.offset),
            )
            raw_app = message.headers.get("app")
            app = raw_app.decode(errors="replace") if raw_app else None
            known = app is not None and await self._is_app(app, checked)
            for index, raw in enumerate(split(message)):
                if not known:
                    reason = "missing app header" if app is None else f"unknown app {app!r}"
                    outcome.rejected.append(
                        Rejected(raw, app, reason, message.partition, message.offset, index)
                    )
                    continue
                try:
                    event = decode(
                        raw, max_bytes=self.settings.max_event_bytes, default_time=message.timestamp
                    )
                except InvalidEvent as exc:
                    outcome.rejected.append(
                        Rejected(raw, app, str(exc), message.partition, message.offset, index)
                    )
                    continue
                if event.event_id is None:
                    event.event_id = f"p{message.partition}o{message.offset}i{index}"
                if event.creation_time is None:
                    event.creation_time = message.timestamp
                by_app[app].append(event)
                if message.offset > self._watermark(app, message.partition):
                    props = orjson.dumps(event.properties).decode() if event.properties else None
                    self._pending[(app, message.partition)].append(
                        LoggedEvent(event, props, message.partition, message.offset, index)
                    )
                    self.buffered_events += 1
        for app, events in by_app.items():
            new, changed = await apply_to_redis(self.store, app, events, self.settings.history_cap)
            outcome.accepted += len(events)
            if new:
                outcome.new_items[app] = new
            if changed:
                outcome.changed_items[app] = changed
        await self.store.count_ingested(outcome.accepted, len(outcome.rejected))
        if self._buffered_since is None and messages:
            self._buffered_since = time.monotonic()
        return outcome

    def flush_due(self) -> bool:
        if self._buffered_since is None:
            return False
        age = time.monotonic() - self._buffered_since
        return (
            age >= self.settings.log_flush_seconds
            or self.buffered_events >= self.settings.log_flush_events
        )

    def flush(self) -> int:
        """Write one segment per (app, partition) covering the buffered offsets; return events."""
        written = 0
        for (app, partition), events in self._pending.items():
            first, last = self._window[partition]
            self.event_log.append(app, partition, first, last, events)
            marks = self._watermarks.setdefault(app, {})
            marks[partition] = max(marks.get(partition, -1), last)
            written += len(events)
        self._pending.clear()
        self._window.clear()
        self._buffered_since = None
        self.buffered_events = 0
        return written
