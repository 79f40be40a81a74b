"""The query service: answers Recommend requests over gRPC-over-Kafka with the in-process engine.

Per app it holds the live model version as an Engine. It reads each user's history from Redis at
query time, follows the model-updates topic to hot-swap to a new version (loaded aside, then
swapped in one assignment: a request uses the engine it started with, so no answer mixes
versions), and follows the item-changes topic to apply property changes without retraining.
Several processes share the request topic through one consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvloop
from elasticsearch import AsyncElasticsearch
from redis.exceptions import RedisError

from crossrec import settings as config
from crossrec.adapters import elasticsearch as esa
from crossrec.adapters.history_cache import Cached, HistoryCache
from crossrec.adapters.kafka import follow_broadcast
from crossrec.adapters.modelstore import ModelStore
from crossrec.adapters.redis_store import RedisStore
from crossrec.core.config import parse_engine_config
from crossrec.core.query import InvalidQuery, Query, parse_query
from crossrec.query import history as hist
from crossrec.query.codec import decode_request, encode_response
from crossrec.query.engine import Engine, keep_out_of_gc
from crossrec.query.es_engine import ElasticsearchEngine, engine_kind
from crossrec.rpc.protocol import RECOMMEND, Code, Request, RpcError
from crossrec.rpc.server import RpcServer
from crossrec.stack import health

log = logging.getLogger("crossrec.query")

HISTORY_TIMEOUT = 0.2  # seconds; as the UR: a slow history read degrades to no history
# a batch lets its finished replies go (one produce request) after about this much scoring, so
# the first request of a large batch does not wait for the last
FLUSH_SECONDS = 0.004


@dataclass(frozen=True, slots=True)
class LiveModel:
    version: str
    engine: Engine | ElasticsearchEngine  # the in-process engine answers at once, ES is awaited
    # what a query reads (RedisStore.histories_many): newest events with times per event name,
    # and the names whose whole history the blacklist takes; {}: everything, with times
    newest: Mapping[str, int] = field(default_factory=dict)
    whole: frozenset[str] = frozenset()


def history_reads(engine: Engine | ElasticsearchEngine) -> tuple[dict[str, int], frozenset[str]]:
    """The in-process engine needs only part of a history (history.reads); Elasticsearch
    queries get everything."""
    return hist.reads(engine.config) if isinstance(engine, Engine) else ({}, frozenset())


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class QueryService:
    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self.store = RedisStore(settings.redis_url)
        self.histories = HistoryCache(self.store, settings.redis_url, settings.history_cache_users)
        self.models = ModelStore(settings.modelstore)
        self.live: dict[str, LiveModel] = {}
        self._loading: dict[str, asyncio.Task] = {}
        self.server = RpcServer(
            settings, {RECOMMEND: self.recommend}, batch_handlers={RECOMMEND: self.recommend_batch}
        )
        self._tasks: list[asyncio.Task] = []
        self._changed_while_loading: dict[str, set[str]] = {}
        self._es_settings = esa.EsSettings.from_env()
        self._es: AsyncElasticsearch | None = None
        # `crossrec up` names its extra query-service processes query-service-2 ... (status rows)
        self.name = os.environ.get("CROSSREC_SERVICE_NAME", "query-service")

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.server.start()
        watchers = [
            follow_broadcast(self.settings, "model-updates", self._on_model_update),
            follow_broadcast(self.settings, "item-changes", self._on_item_change),
            self._heartbeat(),
            self._preload(),
        ]
        self._tasks = [asyncio.create_task(w) for w in watchers]
        try:
            await self.server.serve()
        finally:
            for task in self._tasks:
                task.cancel()
            await self.server.stop()
            await self.histories.close()
            await self.store.close()

    async def _preload(self) -> None:
        """Load every app's live model at start-up, so a new process's first requests do not
        wait for the load (requests for an app still loading share that load)."""
        for app in sorted(await self.store.app_names()):
            try:
                await self.model_for(app)
            except Exception as exc:  # its requests will say what is wrong; the service serves on
                log.warning("app %s: live model not loaded at start-up: %r", app, exc)

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                versions = {app: m.version for app, m in self.live.items()}
                await health.report(
                    self.store.redis,
                    self.name,
                    self.server.assigned.is_set(),
                    versions=versions,
                    history_cache=self.histories.summary(),
                )
            await asyncio.sleep(2)

    # -- models ---------------------------------------------------------------------------------
    async def model_for(self, app: str) -> LiveModel | None:
        live = self.live.get(app)
        if live is not None:
            return live
        version = self.models.live(app)
        if version is None:
            return None
        await self._load(app, version)
        return self.live.get(app)

    async def _load(self, app: str, version: str) -> None:
        """Load a version aside and swap it in; concurrent callers share one load."""
        task = self._loading.get(app)
        if task is None:
            task = self._loading[app] = asyncio.create_task(self._load_now(app, version))
            task.add_done_callback(lambda _: self._loading.pop(app, None))
        await asyncio.shield(task)

    async def _load_now(self, app: str, version: str) -> None:
        current = self.live.get(app)
        if current is not None and current.version == version:
            return
        started = time.perf_counter()
        self._changed_while_loading[app] = set()
        try:
            manifest = await asyncio.to_thread(self.models.manifest, app, version)
            if engine_kind(parse_engine_config(manifest["engine_config"])) == "elasticsearch":
                # the index holds the model and (written by the trainer) the properties
                engine: Engine | ElasticsearchEngine = ElasticsearchEngine.for_manifest(
                    self._elasticsearch(), manifest, self._es_settings
                )
            else:
                model = await asyncio.to_thread(self.models.load, app, version)
                engine = await asyncio.to_thread(Engine, model)
                await self._overlay_properties(app, engine)
            # items that changed since the overlay was read: apply them too, then swap
            changed = list(self._changed_while_loading[app])
            props = await self.store.item_properties(app, changed)
            await _maybe(engine.update_many({item: props.get(item) for item in changed}))
            self.live[app] = LiveModel(version, engine, *history_reads(engine))  # the swap
            keep_out_of_gc()
        finally:
            del self._changed_while_loading[app]
        log.info("app %s: model %s live in %.2f s", app, version, time.perf_counter() - started)

    def _elasticsearch(self) -> AsyncElasticsearch:
        """One client per process, made when the first app on Elasticsearch is loaded."""
        if self._es is None:
            self._es = esa.connect(self._es_settings)
        return self._es

    async def _overlay_properties(self, app: str, engine: Engine) -> None:
        """Properties changed since the model was trained come from Redis (ingest keeps them)."""
        changes: dict[str, dict | None] = dict(await self.store.all_item_properties(app))
        changes.update(dict.fromkeys(await self.store.items_without_properties(app)))
        engine.update_many(changes)

    async def _on_model_update(self, body: dict[str, Any]) -> None:
        """Swap to an app's new version. An app's first version (a new app, trained since this
        process started) is loaded now too, as _preload would have, not by its first requests:
        at hundreds of requests a second they would queue behind a load of seconds."""
        app, version = body.get("app"), body.get("version")
        if isinstance(app, str) and isinstance(version, str):
            await self._load(app, version)

    async def _on_item_change(self, body: dict[str, Any]) -> None:
        app, items = body.get("app"), body.get("items")
        if (
            body.get("reason") != "properties"
            or not isinstance(items, list)
            or not isinstance(app, str)
        ):
            return
        if app in self._changed_while_loading:
            self._changed_while_loading[app].update(items)
        live = self.live.get(app)
        if live is None:
            return
        props = await self.store.item_properties(app, items)
        await _maybe(live.engine.update_many({item: props.get(item) for item in items}))

    # -- requests -------------------------------------------------------------------------------
    async def recommend(self, body: bytes, content_type: str) -> bytes:
        call = Request(RECOMMEND, "", "", 0, 2**62, content_type, body)  # no deadline of its own
        [(_, outcome)] = [answer async for answer in self.recommend_batch([call])]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def recommend_batch(
        self, calls: Sequence[Request]
    ) -> AsyncIterator[tuple[int, bytes | Exception]]:
        """Each request's response (or error) by position: decoded and checked one by one, the
        users' histories read in one round trip, then scored unless expired meanwhile."""
        ready: list[tuple[int, str, Query, LiveModel, list[str]]] = []
        for n, call in enumerate(calls):
            try:
                app, query, live = await self._prepare(call.body, call.content_type)
                names = live.engine.history_event_names(query) if query.user else []
                ready.append((n, app, query, live, names))
            except Exception as exc:
                yield n, _invalid(exc)
        histories = await self._histories(ready)
        flushed = time.perf_counter()
        for (n, _, query, live, _), (targets, times, memo) in zip(ready, histories, strict=True):
            content_type = calls[n].content_type
            if calls[n].expired:  # the server would drop the reply: spare the scoring
                yield n, RpcError(Code.DEADLINE_EXCEEDED, "expired before it was scored")
                continue
            try:
                now = int(time.time() * 1000)
                answer = live.engine.recommend(query, targets, now, times=times, memo=memo)
                result = await _maybe(answer)
                pio = result.to_pio()
                yield n, encode_response(pio, live.version, result.backfill, content_type)
            except Exception as exc:
                yield n, _invalid(exc)
            if time.perf_counter() - flushed > FLUSH_SECONDS:
                await asyncio.sleep(0)  # the producer sends what is ready
                flushed = time.perf_counter()

    async def _prepare(self, body: bytes, content_type: str) -> tuple[str, Query, LiveModel]:
        app, doc = decode_request(body, content_type)
        query = parse_query(doc)
        if not await self.store.app_known(app):
            raise RpcError(Code.NOT_FOUND, f"no app named {app!r}")
        live = await self.model_for(app)
        if live is None:
            raise RpcError(
                Code.FAILED_PRECONDITION,
                f"app {app!r} has no model yet: train one with `crossrec train --app {app} --engine FILE`",
            )
        return app, query, live

    async def _histories(
        self, ready: Sequence[tuple[int, str, Query, LiveModel, list[str]]]
    ) -> list[Cached]:
        """Per request, its user's history (empty without a user): one round trip per model,
        none for histories the cache holds."""
        out = [Cached({}, {}, None)] * len(ready)
        by_model: dict[tuple[str, str], list[int]] = {}
        for k, (_, app, query, live, names) in enumerate(ready):
            if query.user and names:
                by_model.setdefault((app, live.version), []).append(k)
        for (app, _), ks in by_model.items():
            wanted = [(ready[k][2].user or "", ready[k][4]) for k in ks]
            live = ready[ks[0]][3]
            read = self.histories.histories_many(app, wanted, live.newest, live.whole)
            try:
                found = await asyncio.wait_for(read, HISTORY_TIMEOUT)
            except (TimeoutError, OSError, RedisError) as exc:
                log.warning(
                    "history of %d users of %s unavailable (%r): answering without it",
                    len(ks),
                    app,
                    exc,
                )
                continue
            for k, history in zip(ks, found, strict=True):
                out[k] = history
        return out


def _invalid(exc: Exception) -> Exception:
    """An invalid query becomes INVALID_ARGUMENT; anything else goes to the server as it is."""
    if isinstance(exc, InvalidQuery):
        return RpcError(Code.INVALID_ARGUMENT, f"{exc.field}: {exc.message}")
    return exc


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def serve() -> None:
        await QueryService(config.load()).run()  # aiokafka objects need the running loop

    uvloop.run(serve())  # the loop's own per-message cost is a good part of a request's
