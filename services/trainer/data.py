"""What training reads: events as Arrow columns, from the event log or from memory.

Only the needed columns and the needed event names are read from the log (a filter pushed into
the Parquet scan); item property events come in a second, small scan. The segment list is taken
once, so the model's event-log range says exactly which segments it was built from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from crossrec.adapters.eventlog import SCHEMA, EventLog
from crossrec.core.config import EngineConfig
from crossrec.core.events import format_time
from crossrec.core.properties import aggregate

PROPERTY_EVENTS = ("$set", "$unset", "$delete")
USAGE_COLUMNS = [
    "event",
    "entity_type",
    "entity_id",
    "target_entity_type",
    "target_entity_id",
    "event_time",
]


@dataclass(frozen=True)
class EventColumns:
    """Events with a target, as parallel Arrow arrays (entity types None = all user -> item)."""

    event: pa.Array
    entity_id: pa.Array
    target_entity_id: pa.Array
    time: np.ndarray  # epoch ms, int64
    entity_type: pa.Array | None = None
    target_entity_type: pa.Array | None = None

    def __len__(self) -> int:
        return len(self.event)

    def filter(self, keep: np.ndarray) -> EventColumns:
        mask = pa.array(keep)

        def cut(values: pa.Array | None) -> pa.Array | None:
            return None if values is None else values.filter(mask)

        return EventColumns(
            cut(self.event),
            cut(self.entity_id),
            cut(self.target_entity_id),
            self.time[keep],
            cut(self.entity_type),
            cut(self.target_entity_type),
        )

    def usage_mask(self) -> np.ndarray:
        """user -> item events, the only ones CCO reads (UR-SPEC §1.3)."""
        mask = np.ones(len(self), dtype=bool)
        if self.entity_type is not None:
            mask &= (
                pc.equal(self.entity_type, "user").fill_null(False).to_numpy(zero_copy_only=False)
            )
        if self.target_entity_type is not None:
            mask &= (
                pc.equal(self.target_entity_type, "item")
                .fill_null(False)
                .to_numpy(zero_copy_only=False)
            )
        return mask


@dataclass(frozen=True)
class TrainingInput:
    events: EventColumns
    properties: dict[str, dict[str, Any]]  # item id -> current properties
    log_range: dict[str, Any] = field(default_factory=dict)


def _strings(values: Any) -> pa.Array:
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if not isinstance(arr, pa.Array):
        arr = pa.array(values)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    return arr


def from_columns(columns: Mapping[str, Any]) -> EventColumns:
    """In-memory events: `event`, `user`, `target` (str arrays) and `time` (datetime64 or ms)."""
    time = np.asarray(columns["time"])
    if np.issubdtype(time.dtype, np.datetime64):
        time = time.astype("datetime64[ms]").astype(np.int64)
    return EventColumns(
        event=_strings(columns["event"]),
        entity_id=_strings(columns["user"]),
        target_entity_id=_strings(columns["target"]),
        time=time.astype(np.int64),
    )


def needed_event_names(config: EngineConfig) -> list[str]:
    names = [a for ind in config.indicators for a in ind.aliases]
    for ranking in config.rankings:
        names += config.expand_event_names(ranking.event_names)
    return list(dict.fromkeys(names))


def read_event_log(event_log: EventLog, app: str, config: EngineConfig) -> TrainingInput:
    segments = event_log.segments(app)
    if not segments:
        return TrainingInput(
            from_columns({"event": [], "user": [], "target": [], "time": []}), {}, {}
        )
    dataset = ds.dataset(
        [s.path for s in segments], schema=SCHEMA, format="parquet", filesystem=event_log.fs
    )
    usage = dataset.to_table(
        columns=USAGE_COLUMNS,
        filter=ds.field("event").isin(needed_event_names(config))
        & ds.field("target_entity_id").is_valid(),
    )
    props = dataset.to_table(
        columns=["entity_id", "event", "properties", "event_time"],
        filter=(ds.field("entity_type") == "item") & ds.field("event").isin(list(PROPERTY_EVENTS)),
    )
    events = EventColumns(
        event=_strings(usage["event"]),
        entity_id=_strings(usage["entity_id"]),
        target_entity_id=_strings(usage["target_entity_id"]),
        time=_millis(usage["event_time"]),
        entity_type=_strings(usage["entity_type"]),
        target_entity_type=_strings(usage["target_entity_type"]),
    )
    times = np.concatenate([events.time, _millis(props["event_time"])])
    partitions: dict[str, dict[str, int]] = {}
    for s in segments:
        span = partitions.setdefault(
            str(s.partition), {"first_offset": s.first_offset, "last_offset": s.last_offset}
        )
        span["first_offset"] = min(span["first_offset"], s.first_offset)
        span["last_offset"] = max(span["last_offset"], s.last_offset)
    log_range = {
        "segments": len(segments),
        "partitions": partitions,
        "events": len(times),
        "min_time": format_time(int(times.min())) if len(times) else None,
        "max_time": format_time(int(times.max())) if len(times) else None,
    }
    return TrainingInput(events, item_properties(props), log_range)


def _millis(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(column.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def item_properties(table: pa.Table) -> dict[str, dict[str, Any]]:
    """$set/$unset/$delete rows (entity_id, event, properties, event_time) -> current properties."""
    rows = zip(
        table["entity_id"].to_pylist(),
        table["event"].to_pylist(),
        table["properties"].to_pylist(),
        _millis(table["event_time"]).tolist(),
        strict=True,
    )
    return aggregate((e, name, orjson.loads(p) if p else {}, t) for e, name, p, t in rows)
