"""The trainer service: retrains an app when its items change, debounced, and on a schedule.

Item-change triggers (new items, property changes) arrive on the item-changes topic. A burst is
one train: an app trains once its triggers have been quiet for `train_debounce_seconds`, or once
its oldest pending trigger is `train_max_wait_seconds` old. An app trains with the engine.json of
its last `crossrec train`; apps never trained by hand are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from crossrec import settings as config
from crossrec.adapters.kafka import BROADCAST_FETCH_WAIT_MS, CONSUMER_SETTINGS
from crossrec.core.config import ConfigError
from crossrec.stack import health
from crossrec.trainer.jobs import run_training, saved_engine_config, summary
from crossrec.trainer.train import TrainError

log = logging.getLogger("crossrec.trainer")


class Debouncer:
    """When does each app with pending triggers train? (Pure; the clock is passed in.)"""

    def __init__(self, quiet: float, max_wait: float) -> None:
        self.quiet, self.max_wait = quiet, max_wait
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def trigger(self, app: str, now: float) -> None:
        self.first.setdefault(app, now)
        self.last[app] = now

    def due(self, now: float) -> list[str]:
        ready = [
            app
            for app in self.first
            if now - self.last[app] >= self.quiet or now - self.first[app] >= self.max_wait
        ]
        for app in ready:
            del self.first[app], self.last[app]
        return ready


class TrainerService:
    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.redis = aioredis.Redis.from_url(settings.redis_url)
        self.debouncer = Debouncer(settings.train_debounce_seconds, settings.train_max_wait_seconds)
        self.trains = 0
        self.ready = False

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.settings.topic("item-changes"),
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id="crossrec-trainer",
            auto_offset_reset="latest",
            **{**CONSUMER_SETTINGS, "fetch_max_wait_ms": BROADCAST_FETCH_WAIT_MS},  # debounced
        )
        await consumer.start()
        beat = asyncio.create_task(self._heartbeat())
        next_scheduled = time.monotonic() + (self.settings.train_every_seconds or float("inf"))
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                self.ready = self.ready or bool(consumer.assignment())
                now = time.monotonic()
                for records in batches.values():
                    for record in records:
                        app = _app_of(record.value)
                        if app is not None:
                            self.debouncer.trigger(app, now)
                for app in self.debouncer.due(now):
                    await self.train(app)
                if now >= next_scheduled:
                    next_scheduled = now + self.settings.train_every_seconds
                    for app in await self._trained_apps():
                        await self.train(app)
        finally:
            beat.cancel()
            await consumer.stop()
            await self.redis.aclose()

    async def train(self, app: str) -> None:
        engine_doc = await saved_engine_config(self.redis, app)
        if engine_doc is None:
            log.info("app %s changed but was never trained with `crossrec train`: skipped", app)
            return
        try:
            manifest = await run_training(self.settings, self.redis, app, engine_doc)
        except (ConfigError, TrainError, OSError) as exc:
            log.warning("app %s: training failed: %s", app, exc)
            return
        self.trains += 1
        log.info("app %s trained: %s", app, summary(manifest))

    async def _trained_apps(self) -> list[str]:
        apps = [k.decode() for k in await self.redis.hkeys("cr:apps")]
        return [a for a in apps if await self.redis.exists(f"cr:{a}:engine")]

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await health.report(self.redis, "trainer", self.ready, trains=self.trains)
            await asyncio.sleep(2)


def _app_of(raw: bytes | None) -> str | None:
    try:
        app = orjson.loads(raw or b"").get("app")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return app if isinstance(app, str) else None


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def serve() -> None:
        await TrainerService(config.load()).run()

    asyncio.run(serve())
