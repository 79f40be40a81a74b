"""The sharded tier as real processes over the real broker and Redis: `crossrec train` with
shards in engine.json writes the clusters; `crossrec shard-worker` replicas and a `crossrec
router` answer Recommend requests. With full fan-out the answers equal the in-process engine's;
with every replica of one cluster killed they are partial and still on time; with every worker
killed they are the default recommendations (popular over the last 7 days), none lost.

The stack's query service listens on the usual request topic: the router here gets a request
topic (and group) of its own, so only the router answers these requests."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from conftest import run_cli
from support import engine_json, eventually, logged_count

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.kafka import TopicSpec, create_topics
from crossrec.adapters.modelstore import ModelStore
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer
from crossrec.core.clusters import load_clusters
from crossrec.core.events import format_time, now_millis
from crossrec.core.query import parse_query
from crossrec.query.engine import Engine
from crossrec.rpc.client import RpcClient
from crossrec.rpc.protocol import JSON, RECOMMEND, RpcError
from crossrec.stack import health

pytestmark = pytest.mark.asyncio(loop_scope="session")

K = 3
WORLDS = "abc"
HOUR = 3_600_000
TIMEOUT = 5.0  # each request's deadline, seconds (generous: 2 shared cores)


def world_events(seed: int = 7) -> list[dict]:
    """Users who buy (and view) inside one world of items, in the last 5 days; colours."""
    rnd = random.Random(seed)
    now = now_millis()
    events = []
    for u in range(90):
        world = WORLDS[u % 3]
        for _ in range(6):
            for name in ("purchase", "view") if rnd.random() < 0.5 else ("purchase",):
                events.append(
                    {"event": name, "entityType": "user", "entityId": f"u{u}",
                     "targetEntityType": "item", "targetEntityId": f"{world}{rnd.randrange(10)}",
                     "eventTime": format_time(now - rnd.randrange(1, 120) * HOUR)}
                )  # fmt: skip
    for world in WORLDS:
        for n in range(10):
            events.append(
                {"event": "$set", "entityType": "item", "entityId": f"{world}{n}",
                 "properties": {"color": [rnd.choice(["red", "blue", "green"])]},
                 "eventTime": format_time(now - 200 * HOUR)}
            )  # fmt: skip
    return events


@dataclass
class Tier:
    app: str
    topic: str  # the router's request topic
    workers: dict[int, list[subprocess.Popen]] = field(default_factory=dict)
    router: subprocess.Popen | None = None
    logs: Path | None = None

    def processes(self) -> list[subprocess.Popen]:
        return [*(p for ps in self.workers.values() for p in ps), *filter(None, [self.router])]


def spawn(logs: Path, name: str, *args: str) -> subprocess.Popen:
    out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "crossrec.cli.main", *args],
        env=dict(os.environ),  # the stack's settings (BackgroundStack put them there)
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait(10)


async def ready(store: RedisStore, name: str, process: subprocess.Popen) -> bool:
    beat = await health.read(store.redis, name, process.pid)
    return bool(beat and beat.get("ready"))


@pytest.fixture(scope="module")
def tier(stack: config.Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tier]:
    app = f"s-{uuid.uuid4().hex[:8]}"
    logs = tmp_path_factory.mktemp("shard-logs")
    topic_name = f"rpc-requests.{app}"
    tier = Tier(app, stack.topic(topic_name), logs=logs)

    async def setup() -> None:
        store = RedisStore(stack.redis_url)
        await store.create_app(app)
        events = world_events()
        async with EventProducer(stack) as producer:
            await producer.send_many(app, events)
        log = EventLog(stack.eventlog)
        assert await eventually(lambda: logged_count(log, app), lambda n: n == len(events))
        await create_topics(stack, (TopicSpec(topic_name, 4),))
        await store.close()

    asyncio.run(setup())
    engine = engine_json(
        app,
        logs,
        shards={"clusters": K},
        fields=[{"name": "color", "values": ["green"], "bias": 0.5}],
    )
    trained = run_cli("train", "--app", app, "--engine", str(engine))
    assert trained.returncode == 0, trained.stderr
    try:
        # two replicas of cluster 0: they share its topic's partitions
        for c in range(K):
            tier.workers[c] = [
                spawn(logs, f"worker-{c}-{r}", "shard-worker", "--app", app, "--cluster", str(c))
                for r in range(2 if c == 0 else 1)
            ]
        tier.router = spawn(
            logs, "router", "router", "--request-topic", tier.topic,
            "--group", f"router-{app}", "--margin-ms", "300",
            "--history-timeout", "3",  # a starved machine must not drop history: exactness
        )  # fmt: skip

        async def up() -> bool:
            store = RedisStore(stack.redis_url)
            try:
                beats = [await ready(store, "router", tier.router)]  # type: ignore[arg-type]
                for c, replicas in tier.workers.items():
                    beats += [await ready(store, f"shard-worker.{app}.{c}", p) for p in replicas]
                return all(beats)
            finally:
                await store.close()

        assert asyncio.run(eventually(up, bool, timeout=90)), f"see {logs}"
        asyncio.run(warm_up(stack, tier))
        yield tier
    finally:
        for process in tier.processes():
            kill(process)


async def warm_up(stack: config.Settings, tier: Tier) -> None:
    """The router loads a model on its first request: give that one time."""
    async with RpcClient(stack, request_topic=tier.topic) as client:
        body = orjson.dumps({"app": tier.app, "user": "u0"})
        await client.call(RECOMMEND, body, timeout=30, content_type=JSON)


async def ask(client: RpcClient, app: str, query: dict) -> tuple[dict, float]:
    started = time.monotonic()
    body = await client.call(
        RECOMMEND, orjson.dumps({"app": app, **query}), timeout=TIMEOUT, content_type=JSON
    )
    return orjson.loads(body), time.monotonic() - started


def random_queries(n: int, seed: int = 3) -> list[dict]:
    rnd = random.Random(seed)
    items = [f"{w}{k}" for w in WORLDS for k in range(10)] + ["nope"]
    out = []
    for i in range(n):
        q: dict = {"num": rnd.choice([3, 5, 10])}
        kind = i % 4
        if kind == 0:
            q["user"] = f"u{rnd.randrange(95)}"  # u90.. have no history
        elif kind == 1:
            q["item"] = rnd.choice(items)
        elif kind == 2:
            q["itemSet"] = rnd.sample(items, rnd.randint(1, 3))
        else:
            q["user"] = f"u{rnd.randrange(90)}"
            q["fields"] = [{"name": "color", "values": [rnd.choice(["red", "blue"])],
                            "bias": rnd.choice([-1, 0, 2.0])}]  # fmt: skip
        if rnd.random() < 0.3:
            q["from"] = rnd.randint(1, 4)
        if rnd.random() < 0.2:
            q["blacklistItems"] = rnd.sample(items, 2)
        out.append(q)
    return out


class Reference:
    """The in-process engine of a version, with Redis's properties as the query service has."""

    def __init__(self, settings: config.Settings, store: RedisStore, app: str) -> None:
        self.settings, self.store, self.app = settings, store, app
        self.engines: dict[str, Engine] = {}

    async def answer(self, version: str, query: dict) -> dict:
        if version not in self.engines:
            engine = Engine(ModelStore(self.settings.modelstore).load(self.app, version))
            changes: dict = dict(await self.store.all_item_properties(self.app))
            changes.update(dict.fromkeys(await self.store.items_without_properties(self.app)))
            engine.update_many(changes)
            self.engines[version] = engine
        engine = self.engines[version]
        q = parse_query(query)
        history, times = {}, {}
        if q.user:
            names = engine.history_event_names(q)
            history, times = await self.store.histories(self.app, q.user, names)
        return engine.recommend(q, history, now_millis(), times=times).to_pio()


async def test_full_fan_out_equals_the_in_process_engine(
    stack: config.Settings, store: RedisStore, tier: Tier
) -> None:
    reference = Reference(stack, store, tier.app)
    async with RpcClient(stack, request_topic=tier.topic) as client:
        for query in random_queries(80):
            got, _ = await ask(client, tier.app, query)
            expected = await reference.answer(got["modelVersion"], query)
            assert got["itemScores"] == expected["itemScores"], query
            assert "partial" not in got, query
    assert (
        ModelStore(stack.modelstore).manifest(tier.app, got["modelVersion"])["clusters"]["k"] == K
    )


async def test_a_new_version_swaps_in_under_load_with_no_request_lost(
    stack: config.Settings, tier: Tier, tmp_path: Path
) -> None:
    answers: list[dict] = []
    stop = asyncio.Event()
    async with RpcClient(stack, request_topic=tier.topic) as client:
        first = (await ask(client, tier.app, {"user": "u1"}))[0]["modelVersion"]

        async def load(n: int) -> None:
            while not stop.is_set():
                answers.append((await ask(client, tier.app, {"user": f"u{n}", "num": 5}))[0])

        tasks = [asyncio.create_task(load(n)) for n in range(3)]
        engine = engine_json(tier.app, tmp_path, shards={"clusters": K})
        trained = await asyncio.to_thread(
            run_cli, "train", "--app", tier.app, "--engine", str(engine)
        )
        assert trained.returncode == 0, trained.stderr

        async def version() -> str:
            return (await ask(client, tier.app, {"user": "u1"}))[0]["modelVersion"]

        newest = await eventually(version, lambda v: v != first, timeout=60)
        assert newest != first
        stop.set()
        await asyncio.gather(*tasks)  # an RpcError (a lost request) fails the test

        async def complete() -> dict:
            return (await ask(client, tier.app, {"user": "u1"}))[0]

        # every worker holds the new version: answers are whole again (on a starved machine a
        # sub-query can still miss its deadline now and then: that answer says partial)
        final = await eventually(complete, lambda a: "partial" not in a, timeout=30)
        assert "partial" not in final and final["modelVersion"] == newest
    assert {a["modelVersion"] for a in answers} <= {first, newest}


async def test_every_replica_of_one_cluster_killed_gives_partial_answers_in_time(
    stack: config.Settings, tier: Tier
) -> None:
    for process in tier.workers[0]:
        kill(process)
    queries = random_queries(12, seed=11)
    async with RpcClient(stack, request_topic=tier.topic) as client:
        answers = await asyncio.gather(*(ask(client, tier.app, q) for q in queries))
    assert len(answers) == len(queries)  # none lost: ask() raises on DEADLINE_EXCEEDED
    for (got, elapsed), query in zip(answers, queries, strict=True):
        assert got["partial"] is True, query
        assert elapsed < TIMEOUT
    # the clusters still up did answer: scored items, not only the defaults
    assert any(s["score"] > 0 for got, _ in answers for s in got["itemScores"])


async def test_every_worker_killed_gives_the_default_recommendations(
    stack: config.Settings, tier: Tier
) -> None:
    for replicas in tier.workers.values():
        for process in replicas:
            kill(process)
    models = ModelStore(stack.modelstore)
    version = models.live(tier.app)
    defaults = [
        item for item, _ in load_clusters(models.fs, models.path(tier.app, version)).defaults
    ]
    assert len(defaults) == 30  # every item was bought in the last 7 days
    async with RpcClient(stack, request_topic=tier.topic) as client:
        queries = [{"num": 4}, {"item": "b1", "num": 4}, {"num": 3, "from": 2}]
        answers = await asyncio.gather(*(ask(client, tier.app, q) for q in queries))
        try:
            bad, _ = await ask(client, tier.app, {"num": "many"})
        except RpcError as exc:
            assert exc.code.name == "INVALID_ARGUMENT"
        else:
            raise AssertionError(f"a bad query was answered: {bad}")
    (plain, _), (item, _), (paged, _) = answers
    assert [s["item"] for s in plain["itemScores"]] == defaults[:4]
    assert [s["item"] for s in item["itemScores"]] == [d for d in defaults if d != "b1"][:4]
    assert [s["item"] for s in paged["itemScores"]] == defaults[2:5]
    for got, elapsed in answers:
        assert got["partial"] is True and got["backfill"] is True
        assert all(s["score"] == 0 for s in got["itemScores"])
        assert elapsed < TIMEOUT
