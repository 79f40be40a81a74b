"""The router: answers Recommend requests by fanning sub-queries out to the shard workers.

    crossrec router [--request-topic T] [--fan-out N]

It takes the query service's place on the request topic (same consumer group by default), so the
query CLI, the RPC clients and the HTTP gateway see no difference but `partial`. Per request:
the user's history from Redis, the context vector, the best `fan_out` clusters (engine.json's
shards.fanOut, else all), one sub-query to each cluster's topic with the request's deadline less
a margin, the answers that arrive by then merged. Clusters that did not answer make the reply
`partial`; when none answers, the reply is the default recommendations, never an error.
Stateless: run several. On model-updates it loads the new version aside, waits (boundedly) for
every cluster's worker to hold it, then swaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from crossrec import settings as config
from crossrec.adapters.kafka import follow_broadcast
from crossrec.adapters.modelstore import ModelStore
from crossrec.adapters.redis_store import RedisStore
from crossrec.core.query import InvalidQuery, Query, parse_query
from crossrec.query import history as hist
from crossrec.query.codec import decode_request, encode_response
from crossrec.query.sharding import Merged, Router
from crossrec.rpc.client import RpcClient
from crossrec.rpc.protocol import RECOMMEND, Code, RpcError, now_ms
from crossrec.rpc.server import RpcServer, request_deadline_ms
from crossrec.shard import versions as ver
from crossrec.shard.topics import CANDIDATES, shard_topic
from crossrec.shard.wire import SubQuery, decode_answer, encode_sub_query
from crossrec.stack import health

log = logging.getLogger("crossrec.shard.router")

HISTORY_TIMEOUT = 0.2  # seconds; as the query service: a slow history read means no history
# the reply must still reach the client by its deadline: one more hop through the broker, which
# took up to ~100 ms on Tansu under load (loadtest/bench_shards.py lost requests at 50 ms)
MARGIN_MS = 250
DEFAULT_TIMEOUT_MS = 1000  # a request without a deadline header (none should come)


@dataclass(frozen=True, slots=True)
class LiveRouter:
    version: str
    router: Router
    fan_out: int | None
    reads: tuple[dict[str, int], frozenset[str]]  # history.reads of the version's config


class ShardRouter:
    def __init__(
        self,
        settings: config.Settings,
        *,
        request_topic: str | None = None,
        group: str = "crossrec-query",
        fan_out: int | None = None,
        margin_ms: int = MARGIN_MS,
        swap_wait_seconds: float = 30,
        history_timeout: float = HISTORY_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.fan_out, self.margin_ms, self.swap_wait = fan_out, margin_ms, swap_wait_seconds
        self.history_timeout = history_timeout
        self.store = RedisStore(settings.redis_url)
        self.models = ModelStore(settings.modelstore)
        self.fanout = RpcClient(settings)  # its gather(): one sub-query per chosen cluster
        self.server = RpcServer(
            settings, {RECOMMEND: self.recommend}, group=group, topic=request_topic
        )
        self.live: dict[str, LiveRouter] = {}
        self._loading: dict[str, asyncio.Task] = {}
        self.counts = {"requests": 0, "partial": 0, "fallback": 0}

    async def run(self) -> None:
        await self.fanout.start()
        await self.server.start()
        tasks = [
            asyncio.create_task(follow_broadcast(self.settings, "model-updates", self._on_model)),
            asyncio.create_task(self._heartbeat()),
        ]
        try:
            await self.server.serve()
        finally:
            for task in tasks:
                task.cancel()
            await self.server.stop()
            await self.fanout.stop()
            await self.store.close()

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                versions = {app: m.version for app, m in self.live.items()}
                ready = self.server.assigned.is_set()
                await health.report(
                    self.store.redis, "router", ready, versions=versions, counts=self.counts
                )
            await asyncio.sleep(2)

    # -- versions -------------------------------------------------------------------------------
    async def model_for(self, app: str) -> LiveRouter | None:
        live = self.live.get(app)
        if live is not None:
            return live
        version = await asyncio.to_thread(self.models.live, app)
        if version is None:
            return None
        await self._load(app, version, wait_for_workers=False)
        return self.live.get(app)

    async def _load(self, app: str, version: str, wait_for_workers: bool) -> None:
        """Load aside and swap; concurrent callers share one load."""
        task = self._loading.get(app)
        if task is None:
            task = asyncio.create_task(self._load_now(app, version, wait_for_workers))
            self._loading[app] = task
            task.add_done_callback(lambda _: self._loading.pop(app, None))
        await asyncio.shield(task)

    async def _load_now(self, app: str, version: str, wait_for_workers: bool) -> None:
        current = self.live.get(app)
        if current is not None and current.version == version:
            return
        started = time.perf_counter()
        model, clusters = await asyncio.to_thread(ver.load_version, self.models, app, version)
        router = await asyncio.to_thread(Router, model, clusters)
        shards = model.config.shards
        fan_out = self.fan_out or (shards.fan_out if shards else None)
        if wait_for_workers:  # bounded: a cluster without any worker must not block the swap
            deadline = time.monotonic() + self.swap_wait
            while time.monotonic() < deadline:
                ready = await ver.ready_clusters(self.store.redis, app, version)
                if len(ready) >= clusters.k:
                    break
                await asyncio.sleep(0.1)
        self.live[app] = LiveRouter(
            version, router, fan_out, hist.reads(router.config)
        )  # the swap: one assignment
        log.info(
            "app %s: version %s live (%d clusters, fan-out %s) in %.2f s",
            app, version, clusters.k, fan_out or "all", time.perf_counter() - started,
        )  # fmt: skip

    async def _on_model(self, body: dict) -> None:
        app, version = body.get("app"), body.get("version")
        if isinstance(app, str) and isinstance(version, str) and app in self.live:
            try:
                await self._load(app, version, wait_for_workers=True)
            except ver.NotSharded as exc:
                log.warning("%s: keeping version %s", exc, self.live[app].version)

    # -- requests -------------------------------------------------------------------------------
    async def recommend(self, body: bytes, content_type: str) -> bytes:
        app, doc = decode_request(body, content_type)
        try:
            query = parse_query(doc)
            if not await self.store.app_known(app):
                raise RpcError(Code.NOT_FOUND, f"no app named {app!r}")
            try:
                live = await self.model_for(app)
            except ver.NotSharded as exc:
                raise RpcError(Code.FAILED_PRECONDITION, str(exc)) from None
            if live is None:
                raise RpcError(
                    Code.FAILED_PRECONDITION,
                    f"app {app!r} has no model yet: train one with `crossrec train --app {app} --engine FILE`",
                )
            merged = await self._fan_out(app, live, query)
        except InvalidQuery as exc:
            raise RpcError(Code.INVALID_ARGUMENT, f"{exc.field}: {exc.message}") from None
        self.counts["requests"] += 1
        self.counts["partial"] += merged.partial
        self.counts["fallback"] += merged.fallback
        result = merged.result
        return encode_response(
            result.to_pio(), live.version, result.backfill, content_type, partial=merged.partial
        )

    async def _fan_out(self, app: str, live: LiveRouter, query: Query) -> Merged:
        router = live.router
        history, times = await self._history(app, query, live)
        chosen = router.route(router.context(query, history, times), live.fan_out).tolist()
        now = now_ms()
        sub = SubQuery(live.version, router.sub_query(query), history, times, now)
        deadline = request_deadline_ms.get(now + DEFAULT_TIMEOUT_MS) - self.margin_ms
        topics = {c: shard_topic(self.settings, app, c) for c in chosen}
        replies = await self.fanout.gather(topics, CANDIDATES, encode_sub_query(sub), deadline)
        answers = {}
        for cluster, reply in replies.items():
            if reply.code == Code.INVALID_ARGUMENT:  # the query's fault, not the worker's
                raise RpcError(Code.INVALID_ARGUMENT, reply.message)
            if reply.code != Code.OK:  # e.g. a worker without this version: no answer
                continue
            version, result = decode_answer(reply.body)
            if version == live.version:
                answers[cluster] = result
        if not answers:
            return router.fallback(query, history, chosen)
        return router.merge(query, answers, chosen)

    async def _history(
        self, app: str, query: Query, live: LiveRouter
    ) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
        if not query.user:
            return {}, {}
        names = live.router.history_event_names(query)
        try:
            newest, whole = live.reads
            [read] = await asyncio.wait_for(
                self.store.histories_many(app, [(query.user, names)], newest, whole),
                self.history_timeout,
            )
            return read
        except (TimeoutError, OSError) as exc:
            log.warning("history of %s/%s unavailable (%r): none used", app, query.user, exc)
            return {}, {}


def main(
    request_topic: str | None = None,
    group: str = "crossrec-query",
    fan_out: int | None = None,
    margin_ms: int = MARGIN_MS,
    history_timeout: float = HISTORY_TIMEOUT,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def serve() -> None:
        router = ShardRouter(
            config.load(),
            request_topic=request_topic,
            group=group,
            fan_out=fan_out,
            margin_ms=margin_ms,
            history_timeout=history_timeout,
        )
        await router.run()

    asyncio.run(serve())
