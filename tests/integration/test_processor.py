"""The ingest processor on the real Redis, without Kafka: app look-ups."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.redis_store import RedisStore
from crossrec.ingest.processor import IngestProcessor, Message

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_app_created_after_the_cache_was_read_is_accepted(
    stack: config.Settings, store: RedisStore, tmp_path: Path
) -> None:
    processor = IngestProcessor(stack, store, EventLog(str(tmp_path / "log")))
    await processor.known_apps()  # the cache is fresh ...
    name = f"t-{uuid.uuid4().hex[:10]}"
    await store.create_app(name)  # ... and the app is newer than it
    try:
        event = {"event": "v", "entityType": "user", "entityId": "u", "targetEntityType": "item", "targetEntityId": "i"}  # fmt: skip
        good = Message(0, 0, 0, {"app": name.encode()}, orjson.dumps(event))
        bogus = Message(0, 1, 0, {"app": b"no-such-app"}, orjson.dumps(event))
        outcome = await processor.process([good, bogus])
        assert outcome.accepted == 1
        assert [r.reason for r in outcome.rejected] == ["unknown app 'no-such-app'"]
    finally:
        await store.delete_app(name)
