"""Ingest's columnar fast path (crossrec.ingest.columnar) against the per-event path.

The fast path may decline any message, but whenever it accepts one, every line must be an event
the per-event path accepts, and the rows must be exactly the event-log rows that path writes.
"""

from __future__ import annotations

from datetime import datetime

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import bad_events, names, usage_event, valid_events

from crossrec.adapters.eventlog import LoggedEvent, to_table
from crossrec.core.events import InvalidEvent, decode
from crossrec.ingest.columnar import Batched, Plain, plain_events

MAX_BYTES = 64 * 1024
TIMESTAMP = 1_700_000_000_123  # the message's time: the default eventTime and creationTime


def per_event(
    messages: list[Batched], lines: set[tuple[int, int]] | None = None
) -> tuple[list[LoggedEvent], list[tuple[int, int]]]:
    """What the per-event path makes of these messages (of only these lines, if given): the
    logged events, and the (message, line) it rejects."""
    logged, rejected = [], []
    for k, m in enumerate(messages):
        for index, raw in enumerate(line for line in m.value.split(b"\n") if line.strip()):
            if lines is not None and (k, index) not in lines:
                continue
            try:
                event = decode(raw, max_bytes=MAX_BYTES, default_time=m.timestamp_ms)
            except InvalidEvent:
                rejected.append((k, index))
                continue
            if event.event_id is None:
                event.event_id = f"p{m.partition}o{m.offset}i{index}"
            if event.creation_time is None:
                event.creation_time = m.timestamp_ms
            props = orjson.dumps(event.properties).decode() if event.properties else None
            logged.append(LoggedEvent(event, props, m.partition, m.offset, index))
    return logged, rejected


def _ordered(rows: pa.Table) -> list[dict]:
    return sorted(rows.to_pylist(), key=lambda r: (r["offset"], r["partition"], r["index"]))


def agree(messages: list[Batched]) -> Plain | None:
    """The fast path plus the per-event path for the lines it leaves equals the per-event path
    for every line: the same rows logged, the same lines rejected."""
    plain = plain_events(messages, MAX_BYTES)
    if plain is not None:
        logged, rejected = per_event(messages)
        left_logged, left_rejected = per_event(messages, set(plain.others))
        assert left_rejected == rejected, "the fast path took a line the per-event path rejects"
        combined = pa.concat_tables([plain.rows, to_table(left_logged)])
        assert _ordered(combined) == _ordered(to_table(logged))
    return plain


strict_times = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 30),
).map(lambda d: d.isoformat(timespec="milliseconds") + "Z")


@st.composite
def plain_event(draw: st.DrawFn) -> dict:
    """User → item events as applications send them: the fast path must take these."""
    event = usage_event(draw)
    for key, values in (
        ("eventTime", strict_times),
        ("eventId", names),
        ("creationTime", strict_times),
        ("tags", st.lists(names, max_size=3)),
        ("prId", names),
    ):
        if draw(st.booleans()):
            event[key] = draw(values)
    return event


def message(lines: list[bytes], partition: int = 3, offset: int = 17) -> Batched:
    return Batched(b"\n".join(lines), partition, offset, TIMESTAMP)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(plain_event(), min_size=1, max_size=6), min_size=1, max_size=3))
def test_plain_events_take_the_fast_path_with_the_same_rows(batches: list[list[dict]]) -> None:
    messages = [
        message([orjson.dumps(e) for e in events], partition=k % 2, offset=10 + k)
        for k, events in enumerate(batches)
    ]
    plain = agree(messages)
    assert plain is not None and plain.others == []
    assert plain.rows.num_rows == sum(len(b) for b in batches)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            plain_event().map(orjson.dumps),
            valid_events().map(orjson.dumps),
            bad_events().map(lambda fault_raw: fault_raw[1]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_mix_is_declined_or_logged_exactly_as_per_event(lines: list[bytes]) -> None:
    agree([message(lines)])


TRICKY = [
    b'{"event":"v","event":"w","entityType":"user","entityId":"u"}',  # orjson keeps the last
    b'{"event":"v","entityType":"user","entityId":"u","properties":null}',
    b'{"event":"v","entityType":"user","entityId":"u","tags":["a",null]}',
    b'{"event":"v","entityType":"user","entityId":"\\ud800"}',  # a lone surrogate
    b'{"event":"v","entityType":"user","entityId":"\xff"}',  # not UTF-8
    b'{"event":"v","entityType":"user","entityId":"u"} {"event":"w"}',
    b'{"event":"v","entityType":"pio_pr","entityId":"u"}',
    b'{"event":"$delete","entityType":"item","entityId":"i"}',
    b'{"event":"v","entityType":"user","entityId":"u","eventTime":"0000-01-01T00:00:00Z"}',
    b'{"event":"v","entityType":"user","entityId":"u","eventTime":"2011-02-30T00:00:00Z"}',
    b'{"event":"v","entityType":"user","entityId":"u","eventTime":"2011-07-21T17:55:00"}',
    b'{"event":"v","entityType":"user","entityId":"u","eventTime":"2011-07-21T17:55:00.1234Z"}',
    b'{"event":"v","entityType":"user","entityId":"u","eventTime":"2011-07-21T17:55:00+24:00"}',
    b'{"event":"v","entityType":"user","entityId":"u","targetEntityType":"item","targetEntityId":""}',
    b'{"event":"v","entityType":"user","entityId":"u","targetEntityType":null,"targetEntityId":null}',
    b'{"event":"v","entityType":"user","entityId":"u","eventId":""}',
    b"",
    b"  ",
    b"null",  # pyarrow 26's JSON reader crashes on it: never handed to Arrow
    b"[{}]",
    b' {"event":"v","entityType":"user","entityId":"u"}',
]


def test_tricky_lines_are_declined_or_logged_exactly_as_per_event() -> None:
    plain = b'{"event":"v","entityType":"user","entityId":"u"}'
    for line in TRICKY:
        agree([message([line])])
        agree([message([plain, line, plain])])


def test_an_offset_time_and_defaults() -> None:
    line = b'{"event":"v","entityType":"user","entityId":"u","eventTime":"2011-07-21T17:55:00.5+01:00"}'
    plain = agree([message([line, b'{"event":"w","entityType":"user","entityId":"u"}'])])
    assert plain is not None
    rows = plain.rows
    times = rows["event_time"].cast(pa.int64()).to_pylist()
    assert times == [1_311_267_300_500, TIMESTAMP]
    assert rows["event_id"].to_pylist() == ["p3o17i0", "p3o17i1"]


def test_a_line_arrow_cannot_read_declines_the_whole_call() -> None:
    plain = b'{"event":"v","entityType":"user","entityId":"u"}'
    assert plain_events([message([plain]), message([plain, b"{"])], MAX_BYTES) is None
    assert plain_events([message([plain]), message([plain])], MAX_BYTES) is not None


def test_lines_with_properties_or_special_names_are_left_to_the_per_event_path() -> None:
    plain = b'{"event":"v","entityType":"user","entityId":"u"}'
    item = b'{"event":"$set","entityType":"item","entityId":"i","properties":{"a":1}}'
    delete = b'{"event":"$delete","entityType":"item","entityId":"i"}'
    late = b'{"event":"v","entityType":"user","entityId":"u","eventTime":"2011-07-21T17:55:00"}'
    result = agree([message([plain, item, plain]), message([delete, plain, late], offset=18)])
    assert result is not None
    assert result.others == [(0, 1), (1, 0), (1, 2)]
    assert result.rows.num_rows == 3
