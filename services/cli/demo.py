"""`crossrec demo`: crossrec end to end on the embedded default, with real data.

Starts the stack (unless one runs), creates the app `retail`, streams the Online Retail events
through Kafka into ingest, trains a model with a UR engine.json (purchase primary, cancel
secondary), prints recommendations for a few users and items over gRPC-over-Kafka, and leaves
the stack serving in the foreground.
"""

from __future__ import annotations

import asyncio
import time
from itertools import islice

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import Progress

from crossrec import datasets
from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer
from crossrec.client.recommender import Recommender
from crossrec.stack.background import BackgroundStack, wait_ready
from crossrec.stack.supervisor import running_stack
from crossrec.trainer.jobs import run_training, summary

APP = "retail"
ENGINE = {
    "comment": "The Universal Recommender's engine.json, as a PredictionIO user writes it",
    "datasource": {"params": {"appName": APP, "eventNames": ["purchase", "cancel"]}},
    "algorithms": [
        {
            "name": "ur",
            "params": {
                "appName": APP,
                "indexName": "urindex",
                "typeName": "items",
                "eventNames": ["purchase", "cancel"],
                # the data ends in December 2011: count popularity over its last year
                "rankings": [
                    {
                        "name": "popRank",
                        "type": "popular",
                        "eventNames": ["purchase"],
                        "duration": "365 days",
                        "offsetDate": "2011-12-10T00:00:00Z",
                    }
                ],
                "num": 5,
            },
        }
    ],
}


def _logged(event_log: EventLog) -> int:
    return sum(pq.read_metadata(s.path).num_rows for s in event_log.segments(APP))


async def _ingest(console: Console) -> None:
    settings = config.load()
    store = RedisStore(settings.redis_url)
    event_log = EventLog(settings.eventlog)
    try:
        if APP not in await store.app_names():
            created = await store.create_app(APP)
            console.print(f"app [bold]{APP}[/bold] created, access key {created.access_key}")
        if _logged(event_log):
            console.print(
                f"app {APP} already holds {_logged(event_log):,} events; not importing again"
            )
        else:
            events = list(datasets.online_retail_events())
            for n, event in enumerate(events):
                event["eventId"] = f"retail-{n}"  # stable ids: the demo's data is the same each run
            started = time.perf_counter()
            with Progress(console=console) as progress:
                task = progress.add_task("Online Retail -> Kafka -> ingest", total=len(events))
                async with EventProducer(settings) as producer:
                    for start in range(0, len(events), 5000):
                        await producer.send_many(APP, events[start : start + 5000])
                        progress.advance(task, min(5000, len(events) - start))
                while _logged(event_log) < len(events):
                    await asyncio.sleep(0.2)
            seconds = time.perf_counter() - started
            console.print(
                f"{len(events):,} events produced, ingested and logged in {seconds:.1f} s "
                f"({len(events) / seconds:,.0f} events/s end to end)"
            )
        await _show(console, store, event_log)
        await _train_and_ask(console, settings, store, event_log)
    finally:
        await store.close()


async def _train_and_ask(
    console: Console, settings: config.Settings, store: RedisStore, event_log: EventLog
) -> None:
    engine_file = config.home() / "retail-engine.json"
    engine_file.write_bytes(orjson.dumps(ENGINE, option=orjson.OPT_INDENT_2))
    started = time.perf_counter()
    manifest = await run_training(settings, store.redis, APP, ENGINE)
    console.print(
        f"\ntrained with {engine_file} in {time.perf_counter() - started:.1f} s: {summary(manifest)}"
    )
    table = event_log.read(APP, columns=["entity_id"], filter=pc.field("event") == "purchase")
    users = list(dict.fromkeys(table.column("entity_id").to_pylist()))[:3]
    queries = [{"user": u} for u in users] + [{"item": "85123A"}, {"item": "22423"}, {}]
    async with Recommender(settings, timeout=30) as recommender:
        for query in queries:
            answer = await recommender.recommend(APP, query)
            items = [f"{s['item']} ({s['score']:.2f})" for s in answer["itemScores"]]
            console.print(f"{orjson.dumps(query).decode():<22} -> {', '.join(items)}")


async def _show(console: Console, store: RedisStore, event_log: EventLog) -> None:
    table = event_log.read(APP, columns=["entity_id"], filter=pc.field("event") == "purchase")
    users = list(dict.fromkeys(table.column("entity_id").to_pylist()))
    for user in islice(users, 0, 300, 100):
        recent = await store.history(APP, user, "purchase", limit=5)
        console.print(f"user {user}: last purchases {[item for item, _ in recent]}")
    props = await store.item_properties(APP, ["85123A", "22423"])
    for item, values in props.items():
        console.print(f"item {item}: {values}")


def run(console: Console) -> int:
    stack = None
    if running_stack() is None:
        console.print(f"starting the stack in {config.home()} ...")
        stack = BackgroundStack(config.home())
        stack.start()
    else:
        wait_ready()
    asyncio.run(_ingest(console))
    settings = config.load()
    console.print(
        f"\nThe stack is serving (Kafka at {settings.kafka_bootstrap}). In another shell:\n"
        f"  export CROSSREC_HOME={config.home()}\n"
        f'  .venv/bin/crossrec query --app {APP} \'{{"user": "13748", "num": 5}}\'\n'
        f"  curl -XPOST 'http://{settings.gateway_host}:{settings.gateway_port}/queries.json?accessKey=KEY' "
        f'-d \'{{"item": "85123A"}}\'   (KEY: crossrec app list)\n'
        "  .venv/bin/crossrec status"
    )
    if stack is None:
        return 0
    console.print("Ctrl-C stops it.")
    try:
        return stack.process.wait()
    except KeyboardInterrupt:
        stack.stop()
        return 0
