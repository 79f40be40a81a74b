"""Rebuild an app's Redis state from its event log (`crossrec replay`).

The state is a pure function of the events (ZADD GT, max-merged property states), so applying the
whole log again reproduces it exactly, whether or not the old keys were deleted first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import orjson
import pyarrow as pa

from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.redis_store import RedisStore
from crossrec.core.events import Event
from crossrec.ingest.processor import apply_to_redis


def events_of(batch: pa.RecordBatch) -> Iterator[Event]:
    columns = batch.to_pydict()
    for i in range(batch.num_rows):
        props = columns["properties"][i]
        yield Event(
            event=columns["event"][i],
            entity_type=columns["entity_type"][i],
            entity_id=columns["entity_id"][i],
            event_time=_millis(columns["event_time"][i]),
            target_entity_type=columns["target_entity_type"][i],
            target_entity_id=columns["target_entity_id"][i],
            properties=orjson.loads(props) if props else {},
            event_id=columns["event_id"][i],
            tags=columns["tags"][i] or [],
            pr_id=columns["pr_id"][i],
            creation_time=_millis(columns["creation_time"][i])
            if columns["creation_time"][i]
            else None,
        )


def _millis(value: object) -> int:
    return int(value.timestamp() * 1000)  # type: ignore[attr-defined]


async def replay(
    store: RedisStore,
    event_log: EventLog,
    app: str,
    history_cap: int,
    clear: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> int:
    if clear:
        await store.delete_app_data(app)
    total = 0
    for batch in event_log.iter_batches(app, batch_size=50_000):
        events = list(events_of(batch))
        await apply_to_redis(store, app, events, history_cap)
        total += len(events)
        progress(len(events))
    return total
