"""Recommendation queries end to end over the real broker: events, train, then queries through the
Kafka client, the CLI and HTTP; real-time history and properties; hot swap under load; every
error status."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import aiohttp
import orjson
import pytest
from conftest import run_cli
from support import engine_json, eventually, logged_count

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.modelstore import ModelStore
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer
from crossrec.client.recommender import Recommender
from crossrec.rpc.client import RpcClient
from crossrec.rpc.protocol import JSON, Code, RpcError
from crossrec.stack import health

pytestmark = pytest.mark.asyncio(loop_scope="session")


def engine_file(app: str, tmp_path: Path) -> Path:
    return engine_json(app, tmp_path, fields=[{"name": "color", "values": ["banned"], "bias": 0}])


def shop_events(seed: int = 1) -> list[dict]:
    """Two clusters of items bought together, so correlators are clear: a* and b*."""
    rnd = random.Random(seed)
    events = []
    for u in range(80):
        cluster = "a" if u % 2 == 0 else "b"
        for _ in range(6):
            item = f"{cluster}{rnd.randrange(8)}"
            events.append(
                {"event": "purchase", "entityType": "user", "entityId": f"u{u}",
                 "targetEntityType": "item", "targetEntityId": item,
                 "eventTime": f"2024-04-{1 + rnd.randrange(20):02d}T12:00:00Z"}
            )  # fmt: skip
    for n in range(8):
        for cluster, color in (("a", "red"), ("b", "blue")):
            events.append(
                {"event": "$set", "entityType": "item", "entityId": f"{cluster}{n}",
                 "properties": {"color": [color]}, "eventTime": "2024-04-01T00:00:00Z"}
            )  # fmt: skip
    return events


@pytest.fixture(scope="module")
def trained_app(stack: config.Settings, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One app with events and a live model, shared by this module's tests."""
    name = f"q-{uuid.uuid4().hex[:8]}"

    async def setup() -> None:
        store = RedisStore(stack.redis_url)
        await store.create_app(name)
        await store.close()
        events = shop_events()
        async with EventProducer(stack) as producer:
            await producer.send_many(name, events)
        log = EventLog(stack.eventlog)
        logged = await eventually(lambda: logged_count(log, name), lambda n: n == len(events))
        assert logged == len(events)

    asyncio.run(setup())
    engine = engine_file(name, tmp_path_factory.mktemp("engine"))
    result = run_cli("train", "--app", name, "--engine", str(engine))
    assert result.returncode == 0, result.stderr
    return name


async def test_a_new_app_is_loaded_when_its_first_model_is_announced(
    stack: config.Settings, store: RedisStore, trained_app: str
) -> None:
    """The query services started before this app existed. Its first model is loaded when the
    trainer announces it, not by its first requests, which would queue behind the load. This test
    comes first in the module: no request has named the app yet."""
    services = orjson.loads(config.stack_file().read_bytes())["services"]
    queries = {name: pid for name, pid in services.items() if name.startswith("query-service")}
    live = ModelStore(stack.modelstore).live(trained_app)

    async def versions() -> list[str | None]:
        beats = [await health.read(store.redis, name, pid) for name, pid in queries.items()]
        return [(beat or {}).get("versions", {}).get(trained_app) for beat in beats]

    assert queries and live
    everywhere = [live] * len(queries)
    assert await eventually(versions, lambda found: found == everywhere) == everywhere


async def test_the_same_answer_over_kafka_the_cli_and_http(
    stack: config.Settings, store: RedisStore, trained_app: str
) -> None:
    query = {"user": "u0", "num": 4}
    async with Recommender(stack, timeout=10) as rec:
        over_kafka = await rec.recommend(trained_app, query)
    async with Recommender(stack, timeout=10, content_type=JSON) as rec:
        over_json = await rec.recommend(trained_app, query)
    items = [s["item"] for s in over_kafka["itemScores"]]
    assert len(items) == 4 and all(i.startswith("a") for i in items[:2])  # u0 buys from cluster a
    assert over_kafka["itemScores"][0]["score"] > 0
    assert over_json["itemScores"] == over_kafka["itemScores"]
    assert over_kafka["modelVersion"]

    cli = run_cli("query", "--app", trained_app, orjson.dumps(query).decode())
    assert cli.returncode == 0, cli.stderr
    assert orjson.loads(cli.stdout)["itemScores"] == over_kafka["itemScores"]

    lines = "\n".join(
        [orjson.dumps({"item": "a1"}).decode(), "{bad json", orjson.dumps(query).decode()]
    )
    many = run_cli("query", "--app", trained_app, "-", input=lines)
    answers = [orjson.loads(line) for line in many.stdout.splitlines()]
    assert len(answers) == 3 and answers[1]["error"]["code"] == "INVALID_ARGUMENT"
    assert answers[2]["itemScores"] == over_kafka["itemScores"]

    app = next(a for a in await store.apps() if a.name == trained_app)
    url = f"http://127.0.0.1:{stack.gateway_port}/queries.json?accessKey={app.access_key}"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=query) as r:
            assert r.status == 200
            assert (await r.json()) == {"itemScores": over_kafka["itemScores"]}
        async with http.post(url, json={"num": "many"}) as r:
            assert r.status == 400 and "num" in (await r.json())["message"]
        async with http.post(url.replace(app.access_key, "nope"), json=query) as r:
            assert r.status == 401


async def test_a_new_event_changes_the_next_answer_without_retraining(
    stack: config.Settings, trained_app: str
) -> None:
    user = f"new-{uuid.uuid4().hex[:6]}"
    async with Recommender(stack, timeout=10) as rec:
        before = await rec.recommend(trained_app, {"user": user, "num": 4})
        assert all(s["score"] == 0 for s in before["itemScores"])  # unknown user: backfill only
        async with EventProducer(stack) as producer:
            await producer.send(trained_app, {"event": "purchase", "entityType": "user", "entityId": user,
                                              "targetEntityType": "item", "targetEntityId": "b3"})  # fmt: skip

        async def ask() -> dict:
            return await rec.recommend(trained_app, {"user": user, "num": 4})

        after = await eventually(ask, lambda a: a["itemScores"][0]["score"] > 0)
    assert after["modelVersion"] == before["modelVersion"]
    top = [s["item"] for s in after["itemScores"] if s["score"] > 0]
    assert top and all(
        i.startswith("b") for i in top
    )  # correlated with b3, and b3 itself blacklisted
    assert "b3" not in [s["item"] for s in after["itemScores"]]


async def test_a_property_change_changes_rule_results_without_retraining(
    stack: config.Settings, trained_app: str
) -> None:
    rule = {"fields": [{"name": "color", "values": ["green"], "bias": -1}], "num": 20}
    async with Recommender(stack, timeout=10) as rec:
        assert (await rec.recommend(trained_app, rule))["itemScores"] == []
        async with EventProducer(stack) as producer:
            await producer.send(trained_app, {"event": "$set", "entityType": "item", "entityId": "a5",
                                              "properties": {"color": ["green"]}})  # fmt: skip

        async def ask() -> dict:
            return await rec.recommend(trained_app, rule)

        after = await eventually(ask, lambda a: bool(a["itemScores"]))
        assert [s["item"] for s in after["itemScores"]] == ["a5"]
        # the engine.json rule excludes "banned" items: a $set makes a7 disappear from answers
        async with EventProducer(stack) as producer:
            await producer.send(trained_app, {"event": "$set", "entityType": "item", "entityId": "a7",
                                              "properties": {"color": ["banned"]}})  # fmt: skip

        async def everything() -> dict:
            return await rec.recommend(trained_app, {"num": 100})

        final = await eventually(
            everything, lambda a: "a7" not in [s["item"] for s in a["itemScores"]]
        )
        assert "a7" not in [s["item"] for s in final["itemScores"]]


async def test_hot_swap_under_load_has_no_errors(
    stack: config.Settings, trained_app: str, tmp_path: Path
) -> None:
    answers: list[tuple[str, dict]] = []
    errors: list[Exception] = []
    stop = asyncio.Event()

    async with Recommender(stack, timeout=10) as rec:
        first = (await rec.recommend(trained_app, {"user": "u1"}))["modelVersion"]

        async def load(worker: int) -> None:
            n = 0
            while not stop.is_set():
                user = f"u{(worker + 4 * n) % 12}"
                n += 1
                try:
                    answers.append((user, await rec.recommend(trained_app, {"user": user})))
                except RpcError as exc:
                    errors.append(exc)

        workers = [asyncio.create_task(load(w)) for w in range(4)]
        engine = engine_file(trained_app, tmp_path)
        trained = await asyncio.to_thread(
            run_cli, "train", "--app", trained_app, "--engine", str(engine)
        )
        assert trained.returncode == 0, trained.stderr
        newest = trained.stdout.split("version ")[1].split(":")[0]

        async def version() -> str:
            return (await rec.recommend(trained_app, {"user": "u1"}))["modelVersion"]

        # the trainer service may publish a later version of its own (debounced item changes
        # from earlier tests); version ids sort by time, so "at least ours" is the swap
        assert await eventually(version, lambda v: v >= newest) >= newest
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*workers)
    assert errors == []
    published = {first, newest} | set(ModelStore(stack.modelstore).versions(trained_app))
    versions = [a["modelVersion"] for _, a in answers]
    assert set(versions) <= published and first in versions
    assert max(versions) >= newest
    # an answer is wholly one version's: the same user and version always get the same items
    by_user_and_version: dict[tuple[str, str], list] = {}
    for user, answer in answers:
        by_user_and_version.setdefault((user, answer["modelVersion"]), []).append(
            answer["itemScores"]
        )
    for lists in by_user_and_version.values():
        assert all(items == lists[0] for items in lists)


async def test_every_error_status(
    stack: config.Settings, store: RedisStore, trained_app: str
) -> None:
    untrained = f"untrained-{uuid.uuid4().hex[:6]}"
    await store.create_app(untrained)
    try:
        async with Recommender(stack, timeout=10) as rec:
            cases = [
                (trained_app, {"num": 0}, Code.INVALID_ARGUMENT, "num"),
                (trained_app, {"fields": [{"name": "color", "values": ["x"], "bias": "high"}]},
                 Code.INVALID_ARGUMENT, "fields[0].bias"),
                (trained_app, {"user": "u1", "colour": "red"}, Code.INVALID_ARGUMENT, "colour"),
                ("no-such-app", {"user": "u1"}, Code.NOT_FOUND, "no-such-app"),
                (untrained, {"user": "u1"}, Code.FAILED_PRECONDITION, "crossrec train"),
            ]  # fmt: skip
            for app, query, code, mentioned in cases:
                with pytest.raises(RpcError) as failure:
                    await rec.recommend(app, query)
                assert failure.value.code == code, (query, failure.value)
                assert mentioned in failure.value.message
            with pytest.raises(RpcError) as late:
                await rec.recommend(trained_app, {"user": "u1"}, timeout=0.001)
            assert late.value.code == Code.DEADLINE_EXCEEDED
        async with Recommender(
            stack, timeout=10, content_type=JSON
        ) as rec:  # checked by the server
            with pytest.raises(RpcError) as server_side:
                await rec.recommend(trained_app, {"user": "u1", "colour": "red"})
            assert (
                server_side.value.code == Code.INVALID_ARGUMENT
                and "colour" in server_side.value.message
            )
        async with RpcClient(stack) as raw:
            with pytest.raises(RpcError) as unknown:
                await raw.call("/crossrec.v1.Recommender/Explain", b"", timeout=10)
            assert unknown.value.code == Code.UNIMPLEMENTED
            with pytest.raises(RpcError) as garbage:
                await raw.call("/crossrec.v1.Recommender/Recommend", b"\xff\xff\xff", timeout=10)
            assert garbage.value.code == Code.INVALID_ARGUMENT
    finally:
        await store.delete_app(untrained)
