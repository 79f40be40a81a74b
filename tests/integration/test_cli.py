"""The command line against the running stack: status and apps."""

from __future__ import annotations

import uuid

import pytest
from conftest import run_cli
from support import eventually

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_status_reports_every_part_ready(stack: config.Settings) -> None:
    result = run_cli("status")
    assert result.returncode == 0, result.stdout
    for part in ("stack", "kafka", "redis", "ingest", "gateway", "trainer", "query-service"):
        assert part in result.stdout
    assert "not running" not in result.stdout
    assert "history cache" in " ".join(result.stdout.split())  # the query service's heartbeat


async def test_apps_are_created_listed_and_deleted_with_their_data(
    stack: config.Settings, store: RedisStore, event_log: EventLog
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    created = run_cli("app", "new", name)
    assert created.returncode == 0, created.stderr
    key = created.stdout.split("access key:")[1].strip()
    assert await store.app_for_key(key) == name
    assert name in run_cli("app", "list").stdout

    async with EventProducer(stack) as producer:
        await producer.send(name, {"event": "v", "entityType": "user", "entityId": "u", "targetEntityType": "item", "targetEntityId": "i"})  # fmt: skip
    await eventually(lambda: store.history(name, "u", "v"), bool)
    await eventually(lambda: event_log.segments(name), bool)  # logged before we delete
    assert run_cli("app", "new", name).returncode == 1  # exists already

    refused = run_cli("app", "delete", name, input="n\n")
    assert refused.returncode == 1 and name in await store.app_names()
    deleted = run_cli("app", "delete", name, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert name not in await store.app_names()
    assert await store.app_for_key(key) is None
    assert await store.snapshot(name) == {}
    assert event_log.segments(name) == []


async def test_bad_app_names_are_refused() -> None:
    result = run_cli("app", "new", "bad name!")
    assert result.returncode == 1 and "app name 'bad name!' must be" in result.stderr
