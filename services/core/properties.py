"""Item properties from `$set` / `$unset` / `$delete`, decided by eventTime (UR-SPEC §1.2).

The state keeps, per key, only the winning `$set` and the latest `$unset`, plus the latest `$delete`
and the latest `$set` time. Folding events into it is commutative and idempotent, so the result
does not depend on arrival order and a replayed event changes nothing. Ingest keeps one state per
item in Redis; the trainer folds the event log with the same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class PropertyState:
    set_values: dict[str, tuple[int, Any]] = field(default_factory=dict)  # key -> (time, value)
    unset_times: dict[str, int] = field(default_factory=dict)
    last_set_time: int | None = None
    delete_time: int | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(
            [
                {k: [t, v] for k, (t, v) in self.set_values.items()},
                self.unset_times,
                self.last_set_time,
                self.delete_time,
            ],
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> PropertyState:
        sets, unsets, last_set, deleted = orjson.loads(raw)
        return cls({k: (t, v) for k, (t, v) in sets.items()}, unsets, last_set, deleted)


def _later(a: int | None, b: int) -> int:
    return b if a is None or b > a else a


def _wins(new: tuple[int, Any], old: tuple[int, Any]) -> bool:
    """Largest eventTime wins; equal times are broken by the value's JSON so any order agrees."""
    if new[0] != old[0]:
        return new[0] > old[0]
    return orjson.dumps(new[1], option=orjson.OPT_SORT_KEYS) > orjson.dumps(
        old[1], option=orjson.OPT_SORT_KEYS
    )


def fold(state: PropertyState, event: str, properties: dict[str, Any], time: int) -> None:
    """Apply one `$set`, `$unset` or `$delete` to the state in place."""
    if event == "$set":
        state.last_set_time = _later(state.last_set_time, time)
        for key, value in properties.items():
            old = state.set_values.get(key)
            if old is None or _wins((time, value), old):
                state.set_values[key] = (time, value)
    elif event == "$unset":
        for key in properties:
            state.unset_times[key] = _later(state.unset_times.get(key), time)
    elif event == "$delete":
        state.delete_time = _later(state.delete_time, time)
    else:
        raise ValueError(f"not a property event: {event}")


def current(state: PropertyState) -> dict[str, Any] | None:
    """The entity's properties now, or None when it has none (never set, or deleted)."""
    if state.last_set_time is None:
        return None
    deleted = state.delete_time
    if deleted is not None and deleted >= state.last_set_time:
        return None
    props = {}
    for key, (time, value) in state.set_values.items():
        unset = state.unset_times.get(key)
        if unset is not None and unset >= time:
            continue
        if deleted is not None and time <= deleted:
            continue
        props[key] = value
    return props


def aggregate(events: Iterable[tuple[str, str, dict[str, Any], int]]) -> dict[str, dict[str, Any]]:
    """PIO's aggregateProperties: (entityId, event, properties, time) tuples -> current properties."""
    states: dict[str, PropertyState] = {}
    for entity_id, event, properties, time in events:
        fold(states.setdefault(entity_id, PropertyState()), event, properties, time)
    out = {}
    for entity_id, state in states.items():
        props = current(state)
        if props is not None:
            out[entity_id] = props
    return out
