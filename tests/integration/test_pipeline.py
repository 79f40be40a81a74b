"""The event pipeline end to end on the real broker and Redis: producer and HTTP in, Redis
history, item properties and the event log out."""

from __future__ import annotations

import uuid

import aiohttp
import orjson
import pytest
from support import eventually, logged_count, read_topic

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer, SyncEventProducer

pytestmark = pytest.mark.asyncio(loop_scope="session")


def usage(
    user: str, item: str, event: str = "purchase", time: str = "2024-01-01T00:00:00Z"
) -> dict:
    return {
        "event": event,
        "entityType": "user",
        "entityId": user,
        "targetEntityType": "item",
        "targetEntityId": item,
        "eventTime": time,
    }


async def test_events_from_the_kafka_client_reach_redis_and_the_log(
    stack: config.Settings, store: RedisStore, event_log: EventLog, app_name: str
) -> None:
    events = [usage("u1", f"i{n}", time=f"2024-01-01T00:00:{n:02d}Z") for n in range(5)]
    events.append(
        {"event": "$set", "entityType": "item", "entityId": "i1", "properties": {"color": ["red"]}}
    )
    async with EventProducer(stack) as producer:
        ids = await producer.send_many(app_name, events)

    history = await eventually(
        lambda: store.history(app_name, "u1", "purchase"), lambda h: len(h) == 5
    )
    assert [item for item, _ in history] == ["i4", "i3", "i2", "i1", "i0"]  # newest first
    props = await eventually(lambda: store.item_properties(app_name, ["i1"]), bool)
    assert props == {"i1": {"color": ["red"]}}
    await eventually(lambda: logged_count(event_log, app_name), lambda n: n == 6)
    logged = event_log.read(app_name, columns=["event_id"]).column("event_id").to_pylist()
    assert sorted(logged) == sorted(ids)


async def test_events_over_http_reach_redis_and_the_log(
    stack: config.Settings, store: RedisStore, event_log: EventLog
) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    app = await store.create_app(name)
    base = f"http://127.0.0.1:{stack.gateway_port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/") as r:
                assert (r.status, await r.json()) == (200, {"status": "alive"})
            async with http.post(
                f"{base}/events.json?accessKey={app.access_key}", json=usage("h1", "x")
            ) as r:
                assert r.status == 201
                event_id = (await r.json())["eventId"]
            batch = [
                usage("h1", "y", "view"),
                {"event": "view", "entityType": "user"},
                usage("h2", "z"),
            ]
            async with http.post(
                f"{base}/batch/events.json?accessKey={app.access_key}", json=batch
            ) as r:
                statuses = await r.json()
            assert [s["status"] for s in statuses] == [201, 400, 201]
            assert statuses[1]["message"] == "entityId is required"
            async with http.post(f"{base}/events.json?accessKey=wrong", json=usage("h1", "q")) as r:
                assert r.status == 401
            async with http.post(
                f"{base}/events.json?accessKey={app.access_key}", json={"event": "$nope"}
            ) as r:
                assert r.status == 400
            too_many = [usage("h3", f"i{n}") for n in range(stack.max_batch_events + 1)]
            async with http.post(
                f"{base}/batch/events.json?accessKey={app.access_key}", json=too_many
            ) as r:
                assert r.status == 400
        views = await eventually(lambda: store.history(name, "h1", "view"), bool)
        assert [i for i, _ in views] == ["y"]
        assert [i for i, _ in await store.history(name, "h1", "purchase")] == ["x"]
        count = await eventually(lambda: logged_count(event_log, name), lambda n: n == 3)
        assert count == 3  # the 401 and 400 events wrote nothing
        assert event_id in event_log.read(name, columns=["event_id"]).column("event_id").to_pylist()
    finally:
        await store.delete_app(name)


async def test_two_apps_stay_apart(
    stack: config.Settings, store: RedisStore, event_log: EventLog
) -> None:
    a, b = (f"t-{uuid.uuid4().hex[:10]}" for _ in range(2))
    for name in (a, b):
        await store.create_app(name)
    try:
        with SyncEventProducer(stack) as producer:  # the synchronous client, as an app would use it
            producer.send(a, usage("same-user", "item-of-a"))
            producer.send(b, usage("same-user", "item-of-b"))
            producer.send(
                a,
                {
                    "event": "$set",
                    "entityType": "item",
                    "entityId": "shared",
                    "properties": {"k": ["a"]},
                },
            )
        await eventually(lambda: store.history(b, "same-user", "purchase"), bool)
        await eventually(lambda: store.item_properties(a, ["shared"]), bool)
        assert [i for i, _ in await store.history(a, "same-user", "purchase")] == ["item-of-a"]
        assert [i for i, _ in await store.history(b, "same-user", "purchase")] == ["item-of-b"]
        assert await store.item_properties(b, ["shared"]) == {}
        await eventually(
            lambda: logged_count(event_log, a) + logged_count(event_log, b),
            lambda n: n == 3,
        )
        assert (
            event_log.read(a, columns=["target_entity_id"]).column(0).to_pylist().count("item-of-b")
            == 0
        )
        assert event_log.read(b).num_rows == 1
    finally:
        for name in (a, b):
            await store.delete_app(name)


async def test_item_properties_follow_event_time_not_arrival(
    stack: config.Settings, store: RedisStore, app_name: str
) -> None:
    def prop(event: str, time: str, **props: object) -> dict:
        return {
            "event": event,
            "entityType": "item",
            "entityId": "it",
            "properties": props,
            "eventTime": time,
        }

    async with EventProducer(stack) as producer:
        # arrives last but is oldest: must not win
        await producer.send(
            app_name, prop("$set", "2024-01-02T00:00:00Z", color=["blue"], size=["L"])
        )
        await producer.send(app_name, prop("$unset", "2024-01-03T00:00:00Z", size=None))
        await producer.send(app_name, prop("$set", "2024-01-01T00:00:00Z", color=["red"]))
    props = await eventually(
        lambda: store.item_properties(app_name, ["it"]), lambda p: p == {"it": {"color": ["blue"]}}
    )
    assert props == {"it": {"color": ["blue"]}}
    changes = await read_topic(
        stack, "item-changes", lambda rs: any(orjson.loads(r.value)["app"] == app_name for r in rs)
    )
    mine = [orjson.loads(r.value) for r in changes if orjson.loads(r.value)["app"] == app_name]
    assert any("it" in m["items"] for m in mine)
