"""Loses nothing, duplicates nothing: SIGKILL of the ingest worker mid-stream, replay of the event
log into Redis, export/import round trip, and thousands of bad events into the dead-letter topic."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from strategies import bad_events
from support import eventually, logged_count, read_topic

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer
from crossrec.core.events import validate
from crossrec.ingest.processor import apply_to_redis

pytestmark = pytest.mark.asyncio(loop_scope="session")


def workload(n: int, seed: int = 7) -> list[dict]:
    """Usage events over a few hundred users and items, with property changes mixed in."""
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        second = rnd.randrange(86400 * 30)
        time = f"2024-01-{1 + second // 86400:02d}T{second % 86400 // 3600:02d}:{second % 3600 // 60:02d}:{second % 60:02d}Z"
        if i % 50 == 0:
            events.append(
                {
                    "eventId": f"e{i}",
                    "event": "$set",
                    "entityType": "item",
                    "entityId": f"i{rnd.randrange(300)}",
                    "properties": {"cat": [rnd.choice("abc")]},
                    "eventTime": time,
                }
            )
        else:
            events.append(
                {
                    "eventId": f"e{i}",
                    "event": rnd.choice(["purchase", "view"]),
                    "entityType": "user",
                    "entityId": f"u{rnd.randrange(400)}",
                    "targetEntityType": "item",
                    "targetEntityId": f"i{rnd.randrange(300)}",
                    "eventTime": time,
                }
            )
    return events


async def reference_state(store: RedisStore, events: list[dict], cap: int) -> dict:
    """What Redis should hold: the same events applied directly, under another app's prefix."""
    name = f"ref-{uuid.uuid4().hex[:8]}"
    await apply_to_redis(store, name, [validate(e) for e in events], cap)
    snapshot = await store.snapshot(name)
    await store.delete_app_data(name)
    return {k.replace(f"cr:{name}:", "", 1): v for k, v in snapshot.items()}


async def state_of(store: RedisStore, app: str) -> dict:
    return {k.replace(f"cr:{app}:", "", 1): v for k, v in (await store.snapshot(app)).items()}


def ingest_pid() -> int:
    return orjson.loads(config.stack_file().read_bytes())["services"]["ingest"]


async def test_sigkill_mid_stream_loses_and_duplicates_nothing(
    stack: config.Settings, store: RedisStore, event_log: EventLog, app_name: str
) -> None:
    events = workload(40_000)
    first_pid = ingest_pid()

    async def produce() -> None:
        async with EventProducer(stack) as producer:
            for start in range(0, len(events), 1000):
                await producer.send_many(app_name, events[start : start + 1000])
                await asyncio.sleep(0.02)

    producing = asyncio.create_task(produce())
    logged = await eventually(lambda: logged_count(event_log, app_name), lambda n: n >= 3000)
    assert 0 < logged < len(events), "the kill must land mid-stream"
    os.kill(first_pid, signal.SIGKILL)
    await producing
    # the supervisor restarts ingest; the new worker resumes from the committed offsets
    final = await eventually(
        lambda: logged_count(event_log, app_name), lambda n: n >= len(events), timeout=120
    )
    assert ingest_pid() != first_pid
    await asyncio.sleep(2 * stack.log_flush_seconds + 1)  # a duplicate would show up by now
    ids = event_log.read(app_name, columns=["event_id"]).column("event_id").to_pylist()
    assert final == len(events) == len(ids)
    assert Counter(ids) == Counter(e["eventId"] for e in events)
    assert await state_of(store, app_name) == await reference_state(
        store, events, stack.history_cap
    )


async def test_replay_restores_redis_exactly(
    stack: config.Settings, store: RedisStore, event_log: EventLog, app_name: str
) -> None:
    events = workload(3000, seed=11)
    async with EventProducer(stack) as producer:
        await producer.send_many(app_name, events)
    await eventually(lambda: logged_count(event_log, app_name), lambda n: n == len(events))
    before = await state_of(store, app_name)
    assert before == await reference_state(store, events, stack.history_cap)

    await store.delete_app_data(app_name)
    assert await state_of(store, app_name) == {}
    result = run_cli("replay", "--app", app_name)
    assert result.returncode == 0, result.stderr
    assert f"{len(events)} events replayed" in result.stdout
    assert await state_of(store, app_name) == before
    # replaying on top of the existing state changes nothing
    assert run_cli("replay", "--app", app_name).returncode == 0
    assert await state_of(store, app_name) == before


async def test_export_then_import_returns_every_event(
    stack: config.Settings, store: RedisStore, event_log: EventLog, tmp_path: Path
) -> None:
    source, target = (f"t-{uuid.uuid4().hex[:10]}" for _ in range(2))
    for name in (source, target):
        await store.create_app(name)
    try:
        events = workload(2000, seed=3)
        lines = [orjson.dumps(e) for e in events]
        lines.insert(10, b"{this is not json")
        lines.insert(500, b'{"event": "$nope", "entityType": "user", "entityId": "u"}')
        pio_file = tmp_path / "events.jsonl"
        pio_file.write_bytes(b"\n".join(lines) + b"\n")

        imported = run_cli("import", str(pio_file), "--app", source)
        assert imported.returncode == 0, imported.stderr
        assert "2000 accepted, 2 rejected" in imported.stdout
        assert "line 11: malformed JSON" in imported.stderr
        assert "line 501: event '$nope' uses a reserved prefix" in imported.stderr
        await eventually(lambda: logged_count(event_log, source), lambda n: n == 2000)

        exported = tmp_path / "export.jsonl"
        result = run_cli("export", str(exported), "--app", source)
        assert result.returncode == 0, result.stderr
        assert "2000 events written" in result.stdout
        assert _canonical(exported.read_bytes().splitlines()) == _canonical(
            orjson.dumps(e) for e in events
        )

        # and the export imports again, into another app, to the same log and state
        assert run_cli("import", str(exported), "--app", target).returncode == 0
        await eventually(lambda: logged_count(event_log, target), lambda n: n == 2000)
        again = tmp_path / "again.jsonl"
        assert run_cli("export", str(again), "--app", target).returncode == 0
        assert _canonical(again.read_bytes().splitlines()) == _canonical(
            exported.read_bytes().splitlines()
        )
        source_state = await state_of(store, source)
        target_state = await eventually(
            lambda: state_of(store, target), lambda s: s == source_state
        )
        assert target_state == source_state
    finally:
        for name in (source, target):
            await store.delete_app(name)


def _canonical(lines) -> list:
    """Events compared by what they say: the validated form, times normalised."""
    out = []
    for line in lines:
        e = validate(orjson.loads(line))
        out.append(
            (
                e.event_id,
                e.event,
                e.entity_type,
                e.entity_id,
                e.target_entity_type,
                e.target_entity_id,
                orjson.dumps(e.properties, option=orjson.OPT_SORT_KEYS),
                e.event_time,
            )
        )
    return sorted(out)


async def test_bad_events_go_to_the_dead_letter_topic_and_ingest_keeps_running(
    stack: config.Settings, store: RedisStore, app_name: str
) -> None:
    generated: list[tuple[str, bytes]] = []

    @given(bad_events())
    @settings(
        max_examples=2500, suppress_health_check=list(HealthCheck), deadline=None, database=None
    )
    def collect(fault_and_raw: tuple[str, bytes]) -> None:
        generated.append(fault_and_raw)

    collect()
    pid = ingest_pid()
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, linger_ms=5, max_request_size=1 << 21
    )
    await producer.start()
    topic = stack.topic("events")
    headers = [("app", app_name.encode())]
    try:
        singles = [raw for _, raw in generated]
        for raw in singles:  # as any Kafka client would send them: one event per message
            await producer.send(topic, raw, key=b"k", headers=headers)
        # and some inside batched messages, between good events
        batchable = [  # blank lines in a batched message are not events: leave them out here
            raw for raw in singles if b"\n" not in raw and raw.strip() and len(raw) < 60_000
        ][:300]
        good = orjson.dumps(
            {
                "event": "view",
                "entityType": "user",
                "entityId": "after",
                "targetEntityType": "item",
                "targetEntityId": "ok",
            }
        )
        for start in range(0, len(batchable), 50):
            body = b"\n".join([good, *batchable[start : start + 50]])
            await producer.send(
                topic, body, headers=[*headers, ("content-type", b"application/x-ndjson")]
            )
        await producer.send(
            topic,
            b'{"event": "x", "entityType": "user", "entityId": "u"}',
            headers=[("app", b"no-such-app")],
        )
        await producer.flush()
    finally:
        await producer.stop()

    expected = Counter([*singles, *batchable])

    def mine(records: list) -> list:
        return [r for r in records if dict(r.headers).get("app") == app_name.encode()]

    records = await read_topic(
        stack, "dead-letter", lambda rs: len(mine(rs)) >= sum(expected.values()), timeout=90
    )
    dead = mine(records)
    assert Counter(r.value for r in dead) == expected
    assert all(dict(r.headers)["reason"] for r in dead)
    unknown = [r for r in records if dict(r.headers).get("app") == b"no-such-app"]
    assert [dict(r.headers)["reason"] for r in unknown] == [b"unknown app 'no-such-app'"]
    # the service is still the same process and still ingests
    assert await eventually(lambda: store.history(app_name, "after", "view"), bool)
    assert ingest_pid() == pid
