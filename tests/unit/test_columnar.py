"""Ingest's columnar fast path (crossrec.ingest.columnar) against the per-event path.

The fast path may decline any message, but whenever it accepts one, every line must be an event
the per-event path accepts, and the rows must be exactly the event-log rows that path writes.
"""

from __future__ import annotations

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import bad_events, names, usage_event, valid_events

from crossrec.adapters.eventlog import LoggedEvent, to_table
from crossrec.core.events import InvalidEvent, decode
from crossrec.ingest.columnar import Batched, plain_events

MAX_BYTES = 64 * 1024
TIMESTAMP = 1_700_000_000_123  # the message's time: the default eventTime and creationTime


def per_event_rows(messages: list[Batched]) -> pa.Table | None:
    """What the per-event path logs for these messages, or None when it rejects a line."""
    logged = []
    for m in messages:
        for index, raw in enumerate(line for line in m.value.split(b"\n") if line.strip()):
            try:
                event = decode(raw, max_bytes=MAX_BYTES, default_time=m.timestamp_ms)
            except InvalidEvent:
                return None
            if event.event_id is None:
                event.event_id = f"p{m.partition}o{m.offset}i{index}"
            if event.creation_time is None:
                event.creation_time = m.timestamp_ms
            props = orjson.dumps(event.properties).decode() if event.properties else None
            logged.append(LoggedEvent(event, props, m.partition, m.offset, index))
    return to_table(logged)


def agree(messages: list[Batched]) -> pa.Table | None:
    fast = plain_events(messages, MAX_BYTES)
    if fast is not None:
        slow = per_event_rows(messages)
        assert slow is not None, "the fast path accepted a message the per-event path rejects"
        assert fast.to_pylist() == slow.to_pylist()
    return fast


strict_times = st.datetimes(
    min_value=__import__("datetime").datetime(1, 1, 1),
    max_value=__import__("datetime").datetime(9999, 12, 30),
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
    rows = agree(messages)
    assert rows is not None
    assert rows.num_rows == sum(len(b) for b in batches)


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
    rows = agree([message([line, b'{"event":"w","entityType":"user","entityId":"u"}'])])
    assert rows is not None
    times = rows["event_time"].cast(pa.int64()).to_pylist()
    assert times == [1_311_267_300_500, TIMESTAMP]
    assert rows["event_id"].to_pylist() == ["p3o17i0", "p3o17i1"]


def test_one_bad_line_declines_the_whole_call() -> None:
    plain = b'{"event":"v","entityType":"user","entityId":"u"}'
    assert plain_events([message([plain]), message([plain, b"{"])], MAX_BYTES) is None
    assert plain_events([message([plain]), message([plain])], MAX_BYTES) is not None
