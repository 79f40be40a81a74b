"""One training job as the command line and the trainer service both run it: take the app's lock,
train from the event log, publish the version, announce it on model-updates, prune old versions."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from crossrec import settings as config
from crossrec.adapters import elasticsearch as esa
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.kafka import make_producer
from crossrec.adapters.modelstore import ModelStore
from crossrec.adapters.redis_store import RedisStore
from crossrec.core.config import parse_engine_config
from crossrec.query.es_engine import engine_kind
from crossrec.trainer.train import TrainError, train_app

log = logging.getLogger("crossrec.trainer")

LOCK_SECONDS = 3600


class TrainBusy(TrainError):
    """Another train of the same app is running (at most one per app at a time)."""


def engine_key(app: str) -> str:
    return f"cr:{app}:engine"


async def saved_engine_config(client: aioredis.Redis, app: str) -> dict[str, Any] | None:
    raw = await client.get(engine_key(app))
    return orjson.loads(raw) if raw else None


async def run_training(
    settings: config.Settings, client: aioredis.Redis, app: str, engine_doc: Any, wait: float = 0
) -> dict:
    """Train `app` now with the engine.json document; the new version's manifest.

    Raises ConfigError for a bad engine.json, TrainError when there is nothing to train on,
    TrainBusy when the app is still training after `wait` seconds, OSError when the model cannot
    be written."""
    engine = parse_engine_config(engine_doc)
    lock = f"cr:{app}:train-lock"
    deadline = time.monotonic() + wait
    while not await client.set(lock, os.getpid(), nx=True, ex=LOCK_SECONDS):
        if time.monotonic() >= deadline:
            raise TrainBusy(f"app {app!r} is training already; try again when it is done")
        await asyncio.sleep(0.5)
    try:
        store = ModelStore(settings.modelstore)
        on_elasticsearch = engine_kind(engine) == "elasticsearch"
        manifest = await asyncio.to_thread(
            train_app,
            EventLog(settings.eventlog),
            app,
            engine,
            store,
            make_live=not on_elasticsearch,
            shards=settings.shards,
        )
        if on_elasticsearch:  # the index must be live before any server hears of the version
            await write_index(settings, app, store, manifest["version"])
            store.set_live(app, manifest["version"])
        await client.set(engine_key(app), orjson.dumps(engine_doc))
        await announce(settings, app, manifest)
        pruned = await asyncio.to_thread(store.prune, app, settings.model_grace_seconds)
        if pruned:
            log.info("app %s: pruned model versions %s", app, ", ".join(pruned))
        return manifest
    finally:
        await client.delete(lock)


async def write_index(settings: config.Settings, app: str, store: ModelStore, version: str) -> None:
    """The version as an Elasticsearch index behind the app's alias, with the properties that
    changed since training (from Redis, as ingest keeps them); older indices cleaned up."""
    es_settings = esa.EsSettings.from_env()
    es = esa.connect(es_settings)
    redis_store = RedisStore(settings.redis_url)
    try:
        await esa.check_server(es)
        model = await asyncio.to_thread(store.load, app, version)
        overlay: dict[str, dict | None] = dict(await redis_store.all_item_properties(app))
        overlay.update(dict.fromkeys(await redis_store.items_without_properties(app)))
        await esa.write_model(
            es, model, es_settings, grace_seconds=settings.model_grace_seconds, overlay=overlay
        )
        alias = esa.alias_name(app, es_settings.index_prefix)
        await esa.cleanup(es, alias, settings.model_grace_seconds)
    finally:
        await redis_store.close()
        await es.close()


async def announce(settings: config.Settings, app: str, manifest: dict) -> None:
    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    try:
        body = {"app": app, "version": manifest["version"], "counts": manifest.get("counts", {})}
        await producer.send_and_wait(
            settings.topic("model-updates"), orjson.dumps(body), key=app.encode()
        )
    finally:
        await producer.stop()


def summary(manifest: dict) -> str:
    """One line: version, documents, correlators per indicator, timings."""
    counts = manifest.get("counts", {})
    correlators = ", ".join(f"{n} {c:,}" for n, c in counts.get("correlators", {}).items())
    return (
        f"version {manifest['version']}: {counts.get('documents', 0):,} items, "
        f"correlators {correlators or 'none'}"
    )
