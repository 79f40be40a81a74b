"""An app whose engine.json chooses Elasticsearch, through the whole stack: `crossrec train` writes
the index, the query service answers from it over Kafka, and a $set reaches it without retraining."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import run_cli
from elasticsearch import AsyncElasticsearch
from support import engine_json, eventually, logged_count

from crossrec import settings as config
from crossrec.adapters import elasticsearch as esa
from crossrec.adapters.eventlog import EventLog
from crossrec.client.producer import EventProducer
from crossrec.client.recommender import Recommender

pytestmark = [pytest.mark.elasticsearch, pytest.mark.asyncio(loop_scope="session")]


async def test_an_elasticsearch_app_end_to_end(
    stack: config.Settings,
    event_log: EventLog,
    es: AsyncElasticsearch,
    app_name: str,
    tmp_path: Path,
) -> None:
    rnd = random.Random(3)
    events = [
        {"event": "purchase", "entityType": "user", "entityId": f"u{u}", "targetEntityType": "item",
         "targetEntityId": f"{'ab'[u % 2]}{rnd.randrange(6)}", "eventTime": "2024-05-01T00:00:00Z"}
        for u in range(40) for _ in range(5)
    ]  # fmt: skip
    async with EventProducer(stack) as producer:
        await producer.send_many(app_name, events)
    await eventually(lambda: logged_count(event_log, app_name), lambda n: n == len(events))

    engine = engine_json(app_name, tmp_path, ("purchase",), engine="elasticsearch")
    trained = run_cli("train", "--app", app_name, "--engine", str(engine))
    assert trained.returncode == 0, trained.stderr
    alias = esa.alias_name(app_name)
    assert await esa.live_index(es, alias) is not None

    async with Recommender(stack, timeout=30) as rec:
        answer = await rec.recommend(app_name, {"user": "u0", "num": 3})
        assert answer["itemScores"] and answer["itemScores"][0]["score"] > 0
        assert all(s["item"].startswith("a") for s in answer["itemScores"] if s["score"] > 0)

        rule = {"fields": [{"name": "tag", "values": ["new"], "bias": -1}]}
        assert (await rec.recommend(app_name, rule))["itemScores"] == []
        async with EventProducer(stack) as producer:
            await producer.send(app_name, {"event": "$set", "entityType": "item", "entityId": "b2",
                                           "properties": {"tag": ["new"]}})  # fmt: skip

        async def tagged() -> list:
            return (await rec.recommend(app_name, rule))["itemScores"]

        found = await eventually(tagged, bool)
        assert [s["item"] for s in found] == ["b2"]
