"""What ingest does with a batch of Kafka messages, apart from Kafka itself.

For each message: find the app (header); take a batched message of plain events whole through
Arrow (columnar.py), or else split it into events and validate each; then write Redis (history,
item properties, known items) at once and buffer the event log. The log is written every few
seconds; only then are the messages acknowledged, so Kafka's committed offsets never run ahead of
the log. The faust app (app.py) feeds batches in and acts on what comes out: dead letters to
produce, item-change triggers to emit, messages to acknowledge.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from crossrec.adapters.eventlog import EventLog, LoggedEvent, to_table
from crossrec.adapters.kafka import NDJSON
from crossrec.adapters.redis_store import RedisStore
from crossrec.core.events import Event, InvalidEvent, decode
from crossrec.ingest.columnar import Batched, Plain, plain_events
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


def _batched(message: Message) -> Batched:
    return Batched(message.value, message.partition, message.offset, message.timestamp)


def split(message: Message) -> list[bytes]:
    """One event, or several when the message is newline-delimited JSON."""
    if message.headers.get("content-type") == NDJSON:
        return [line for line in message.value.split(b"\n") if line.strip()]
    return [message.value]


@dataclass(slots=True)
class RedisWrites:
    """One app's share of a batch, as Redis takes it: history entries, targets (known items),
    item property events."""

    history: list[tuple[str, str, str, int]] = field(default_factory=list)
    targets: dict[str, None] = field(default_factory=dict)
    property_events: list[tuple[str, str, dict, int]] = field(default_factory=list)
    events: int = 0

    def add_event(self, e: Event) -> None:
        self.events += 1
        if e.target_entity_id is not None:
            if e.entity_type == "user":
                self.history.append((e.entity_id, e.event, e.target_entity_id, e.event_time))
            if e.target_entity_type == "item":
                self.targets[e.target_entity_id] = None
        elif e.entity_type == "item" and e.is_special:
            self.property_events.append((e.entity_id, e.event, e.properties, e.event_time))
            self.targets[e.entity_id] = None

    def add_table(self, rows: pa.Table) -> None:
        """Plain events in the event log's schema (no property events among them)."""
        self.events += rows.num_rows
        has_target = pc.is_valid(rows["target_entity_id"])
        history = rows.filter(pc.and_(pc.equal(rows["entity_type"], "user"), has_target))
        if history.num_rows:
            columns = ("entity_id", "event", "target_entity_id")
            users, names, targets = (history[c].to_pylist() for c in columns)
            times = history["event_time"].cast(pa.int64()).to_pylist()
            self.history.extend(zip(users, names, targets, times, strict=True))
        items = rows.filter(pc.equal(rows["target_entity_type"], "item"))["target_entity_id"]
        self.targets.update(dict.fromkeys(items.to_pylist()))

    async def apply(self, store: RedisStore, app: str, history_cap: int) -> tuple[list, list]:
        """Write to Redis; return (new items, items whose properties changed)."""
        if self.history:
            await store.add_history(app, self.history, history_cap)
        new = await store.add_items(app, list(self.targets)) if self.targets else []
        changed = (
            await store.apply_property_events(app, self.property_events)
            if self.property_events
            else []
        )
        return new, changed


async def apply_to_redis(
    store: RedisStore, app: str, events: Sequence[Event], history_cap: int
) -> tuple[list[str], list[str]]:
    """Write a batch of one app's valid events to Redis; return (new items, changed items)."""
    writes = RedisWrites()
    for e in events:
        writes.add_event(e)
    return await writes.apply(store, app, history_cap)


class IngestProcessor:
    def __init__(self, settings: Settings, store: RedisStore, event_log: EventLog) -> None:
        self.settings = settings
        self.store = store
        self.event_log = event_log
        self._apps: set[str] = set()
        self._apps_loaded = 0.0
        self._watermarks: dict[str, dict[int, int]] = {}  # app -> partition -> last logged offset
        self._pending: dict[tuple[str, int], list[LoggedEvent]] = defaultdict(list)
        self._pending_rows: dict[tuple[str, int], list[pa.Table]] = defaultdict(list)  # fast path
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
        """Validate a batch, buffer it for the event log, and write it to Redis."""
        outcome, writes = await self.prepare(messages)
        return await self.apply(outcome, writes)

    async def prepare(
        self, messages: Sequence[Message]
    ) -> tuple[BatchOutcome, dict[str, RedisWrites]]:
        """Everything but Redis: the outcome so far (rejections), and each app's Redis writes."""
        outcome = BatchOutcome()
        await self.known_apps()
        checked: set[str] = set()
        by_app: dict[str, RedisWrites] = defaultdict(RedisWrites)
        batched: dict[str, list[Message]] = defaultdict(list)  # per app, for the fast path
        for message in messages:
            first, last = self._window.get(message.partition, (message.offset, message.offset))
            self._window[message.partition] = (
                min(first, message.offset),
                max(last, message.offset),
            )
            raw_app = message.headers.get("app")
            app = raw_app.decode(errors="replace") if raw_app else None
            if app is None or not await self._is_app(app, checked):
                reason = "missing app header" if app is None else f"unknown app {app!r}"
                for index, raw in enumerate(split(message)):
                    outcome.rejected.append(
                        Rejected(raw, app, reason, message.partition, message.offset, index)
                    )
            elif message.headers.get("content-type") == NDJSON:
                batched[app].append(message)
            else:
                self._one_by_one(app, message, by_app[app], outcome)
        for app, group in batched.items():
            self._columnar(app, group, by_app[app], outcome)
        if self._buffered_since is None and messages:
            self._buffered_since = time.monotonic()
        return outcome, by_app

    async def apply(self, outcome: BatchOutcome, by_app: dict[str, RedisWrites]) -> BatchOutcome:
        """Write a prepared batch to Redis (one batch at a time: item properties are read,
        merged and written back)."""
        for app, writes in by_app.items():
            new, changed = await writes.apply(self.store, app, self.settings.history_cap)
            outcome.accepted += writes.events
            if new:
                outcome.new_items[app] = new
            if changed:
                outcome.changed_items[app] = changed
        await self.store.count_ingested(outcome.accepted, len(outcome.rejected))
        return outcome

    def _columnar(
        self, app: str, group: list[Message], writes: RedisWrites, outcome: BatchOutcome
    ) -> None:
        """Batched messages of one app: all at once through Arrow; if Arrow cannot read them
        all, each message through Arrow; a message it cannot read, event by event. Lines the fast
        path leaves (with properties, say) go event by event too."""
        limit = self.settings.max_event_bytes
        plain = plain_events([_batched(m) for m in group], limit)
        if plain is not None:
            self._take_plain(app, group, plain, writes, outcome)
            return
        for message in group:
            plain = plain_events([_batched(message)], limit) if len(group) > 1 else None
            if plain is None:
                self._one_by_one(app, message, writes, outcome)
            else:
                self._take_plain(app, [message], plain, writes, outcome)

    def _take_plain(
        self,
        app: str,
        messages: list[Message],
        plain: Plain,
        writes: RedisWrites,
        outcome: BatchOutcome,
    ) -> None:
        if plain.rows.num_rows:
            self._take_rows(app, plain.rows, writes)
        lines: dict[int, list[bytes]] = {}
        for k, index in plain.others:
            if k not in lines:
                lines[k] = messages[k].value.split(b"\n")
            self._one_event(app, messages[k], index, lines[k][index], writes, outcome)

    def _take_rows(self, app: str, rows: pa.Table, writes: RedisWrites) -> None:
        """Redis gets every row; the event log the rows past its watermark, per partition."""
        writes.add_table(rows)
        partitions = rows["partition"]
        for partition in pc.unique(partitions).to_pylist():
            own = rows.filter(pc.equal(partitions, partition))
            watermark = self._watermark(app, partition)
            if watermark >= 0:
                own = own.filter(pc.greater(own["offset"], watermark))
            if own.num_rows:
                self._pending_rows[(app, partition)].append(own)
                self.buffered_events += own.num_rows

    def _one_by_one(
        self, app: str, message: Message, writes: RedisWrites, outcome: BatchOutcome
    ) -> None:
        for index, raw in enumerate(split(message)):
            self._one_event(app, message, index, raw, writes, outcome)

    def _one_event(
        self,
        app: str,
        message: Message,
        index: int,
        raw: bytes,
        writes: RedisWrites,
        outcome: BatchOutcome,
    ) -> None:
        """The per-event path: validate, then Redis and (past the watermark) the event log."""
        try:
            event = decode(
                raw, max_bytes=self.settings.max_event_bytes, default_time=message.timestamp
            )
        except InvalidEvent as exc:
            outcome.rejected.append(
                Rejected(raw, app, str(exc), message.partition, message.offset, index)
            )
            return
        if event.event_id is None:
            event.event_id = f"p{message.partition}o{message.offset}i{index}"
        if event.creation_time is None:
            event.creation_time = message.timestamp
        writes.add_event(event)
        if message.offset > self._watermark(app, message.partition):
            props = orjson.dumps(event.properties).decode() if event.properties else None
            self._pending[(app, message.partition)].append(
                LoggedEvent(event, props, message.partition, message.offset, index)
            )
            self.buffered_events += 1

    def flush_due(self) -> bool:
        if self._buffered_since is None:
            return False
        age = time.monotonic() - self._buffered_since
        return (
            age >= self.settings.log_flush_seconds
            or self.buffered_events >= self.settings.log_flush_events
        )

    def take_flush(self) -> list[SegmentWrite]:
        """The buffered events as one segment per (app, partition), covering the buffered
        offsets; the buffers start afresh (so batches can go on while the segments are written)."""
        segments = []
        for app, partition in {**self._pending, **self._pending_rows}:
            logged = self._pending.get((app, partition))
            rows = self._pending_rows.get((app, partition), [])
            first, last = self._window[partition]
            segments.append(SegmentWrite(app, partition, first, last, logged or [], rows))
        self._pending = defaultdict(list)
        self._pending_rows = defaultdict(list)
        self._window = {}
        self._buffered_since = None
        self.buffered_events = 0
        return segments

    def write(self, segments: Sequence[SegmentWrite]) -> int:
        """Write segments to the event log (safe in a worker thread); return events written."""
        written = 0
        for segment in segments:
            rows = segment.rows()
            self.event_log.append(segment.app, segment.partition, segment.first, segment.last, rows)
            written += rows.num_rows
        return written

    def written(self, segments: Sequence[SegmentWrite]) -> None:
        """Once the segments are in the log, their offsets need not be logged again."""
        for segment in segments:
            marks = self._watermarks.setdefault(segment.app, {})
            marks[segment.partition] = max(marks.get(segment.partition, -1), segment.last)


@dataclass(slots=True)
class SegmentWrite:
    """One event-log segment to write: an app's events of one run of a partition's offsets."""

    app: str
    partition: int
    first: int
    last: int
    logged: list[LoggedEvent]  # from the per-event path
    tables: list[pa.Table]  # from the fast path

    def rows(self) -> pa.Table:
        pieces = [to_table(self.logged), *self.tables] if self.logged else self.tables
        rows = pa.concat_tables(pieces)
        if len(pieces) > 1:  # both paths in one segment: back to Kafka's order
            rows = rows.sort_by([("offset", "ascending"), ("index", "ascending")])
        return rows
