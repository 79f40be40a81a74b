"""A shard worker: serves CANDIDATES sub-queries for one cluster of an app's live model version.

    crossrec shard-worker --app APP --cluster C

It joins consumer group shard_group(app, C) on topic shard_topic(app, C), so its replicas share
the cluster's load and Kafka moves a dead replica's partitions to the others. It joins only once
the cluster is loaded (a replica that is still loading takes no load). Model updates: the new
version's cluster is loaded aside, then added; the previous version is kept `keep_seconds`, so
sub-queries naming it (from routers that have not swapped yet) are still answered, and a
version it does not hold is answered FAILED_PRECONDITION (the router counts that as no
answer): no answer mixes versions. Item changes: every property change reaches every worker, as
the catalogue-wide statistics follow every item (ClusterWorker). When the live version has
fewer clusters than C, the worker exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from crossrec import settings as config
from crossrec.adapters.kafka import follow_broadcast
from crossrec.adapters.modelstore import ModelStore
from crossrec.adapters.redis_store import RedisStore
from crossrec.core.query import InvalidQuery
from crossrec.query.engine import keep_out_of_gc
from crossrec.query.sharding import ClusterWorker
from crossrec.rpc.protocol import Code, RpcError
from crossrec.rpc.server import RpcServer
from crossrec.shard import versions as ver
from crossrec.shard.topics import CANDIDATES, create_shard_topics, shard_group, shard_topic
from crossrec.shard.wire import decode_sub_query, encode_answer
from crossrec.stack import health

log = logging.getLogger("crossrec.shard.worker")

POLL_SECONDS = 1.0  # while the app has no sharded live version yet


class ClusterGone(Exception):
    """The live version has fewer clusters than this worker's: nothing left to serve."""


class ShardWorker:
    def __init__(
        self, settings: config.Settings, app: str, cluster: int, keep_seconds: float = 120
    ) -> None:
        self.settings, self.app, self.cluster = settings, app, cluster
        self.keep_seconds = keep_seconds
        self.store = RedisStore(settings.redis_url)
        self.models = ModelStore(settings.modelstore)
        self.held: dict[str, ClusterWorker] = {}  # version -> its cluster, oldest first
        self.retired: dict[str, float] = {}  # version -> when a newer one replaced it
        self._pending: set[str] | None = None  # items changed while a version loads
        self._lock = asyncio.Lock()  # one load at a time
        self.gone: asyncio.Future[str] | None = None  # set with the reason when C is gone
        self.server = RpcServer(
            settings,
            {CANDIDATES: self.candidates},
            group=shard_group(settings, app, cluster),
            topic=shard_topic(settings, app, cluster),
        )

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> int:
        """0 when the cluster is gone from the live version; runs until cancelled otherwise."""
        try:
            return await self._run()
        except ClusterGone as exc:
            log.info("%s: exiting", exc)
            return 0
        finally:
            await self.store.close()

    async def _run(self) -> int:
        self.gone = asyncio.get_running_loop().create_future()
        tasks = [
            asyncio.create_task(follow_broadcast(self.settings, "item-changes", self._on_change))
        ]
        try:
            k = await self._first_version()
            await create_shard_topics(self.settings, self.app, k)
            tasks.append(
                asyncio.create_task(
                    follow_broadcast(self.settings, "model-updates", self._on_model)
                )
            )
            live = await asyncio.to_thread(self.models.live, self.app)
            if live and live not in self.held:  # announced before we followed model-updates
                await self._load(live)
            await self.server.start()
            tasks.append(asyncio.create_task(self._heartbeat()))
            tasks.append(asyncio.create_task(self.server.serve()))
            await asyncio.wait([*tasks, self.gone], return_when=asyncio.FIRST_COMPLETED)
            if self.gone.done():
                raise ClusterGone(self.gone.result())
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            return 1  # a task ended on its own: a supervisor restarts us
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await self.server.stop()

    async def _first_version(self) -> int:
        """Wait for a live version with clusters, load ours; its K."""
        said = False
        while True:
            version = await asyncio.to_thread(self.models.live, self.app)
            try:
                if version is not None:
                    return await self._load(version)
            except ver.NotSharded as exc:
                if not said:
                    log.info("%s; waiting for a sharded version", exc)
                    said = True
            await asyncio.sleep(POLL_SECONDS)

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await health.report(
                    self.store.redis,
                    f"shard-worker.{self.app}.{self.cluster}",
                    self.server.assigned.is_set(),
                    app=self.app,
                    cluster=self.cluster,
                    versions=list(self.held),
                    answered=self.server.counts["answered"],  # the controller's evenness check
                )
            await asyncio.sleep(2)

    # -- versions -------------------------------------------------------------------------------
    async def _load(self, version: str) -> int:
        """Load the version's cluster aside and add it; K of the version."""
        async with self._lock:
            k = await asyncio.to_thread(ver.cluster_count, self.models, self.app, version)
            if self.cluster >= k:
                raise ClusterGone(
                    f"{self.app} version {version} has {k} clusters, no {self.cluster}"
                )
            if version in self.held:
                return k
            started = time.perf_counter()
            self._pending = set()
            try:
                model, clusters = await asyncio.to_thread(
                    ver.load_version, self.models, self.app, version
                )
                worker = await asyncio.to_thread(ClusterWorker, model, clusters, self.cluster)
                changes: dict[str, dict | None] = dict(
                    await self.store.all_item_properties(self.app)
                )
                changes.update(dict.fromkeys(await self.store.items_without_properties(self.app)))
                worker.update_many(changes)
                late = list(self._pending)  # changed since the overlay was read
                props = await self.store.item_properties(self.app, late)
                worker.update_many({item: props.get(item) for item in late})
            finally:
                self._pending = None
            now = time.monotonic()
            self.retired.update((v, now) for v in self.held if v not in self.retired)
            self.held[version] = worker  # from here sub-queries naming it are answered
            keep_out_of_gc()
            self._forget(now)
            await ver.mark_ready(self.store.redis, self.app, version, self.cluster)
            log.info(
                "%s cluster %d of %d: version %s live (%d items) in %.2f s",
                self.app, self.cluster, k, version, len(worker.engine),
                time.perf_counter() - started,
            )  # fmt: skip
            return k

    def _forget(self, now: float) -> None:
        """Drop versions replaced more than keep_seconds ago (the newest is always kept)."""
        newest = next(reversed(self.held))
        for version, since in list(self.retired.items()):
            if version != newest and now - since >= self.keep_seconds:
                self.held.pop(version, None)
                del self.retired[version]

    async def _on_model(self, body: dict) -> None:
        version = body.get("version")
        if body.get("app") == self.app and isinstance(version, str):
            try:
                await self._load(version)
            except ver.NotSharded as exc:
                log.warning("%s: keeping the versions held", exc)
            except ClusterGone as exc:  # follow() logs and skips errors: say it to run()
                if self.gone is not None and not self.gone.done():
                    self.gone.set_result(str(exc))

    async def _on_change(self, body: dict) -> None:
        items = body.get("items")
        if body.get("app") != self.app or body.get("reason") != "properties":
            return
        if not isinstance(items, list):
            return
        if self._pending is not None:
            self._pending.update(items)
        if not self.held:
            return
        props = await self.store.item_properties(self.app, items)
        changes = {item: props.get(item) for item in items}
        for worker in self.held.values():
            worker.update_many(changes)

    # -- sub-queries ----------------------------------------------------------------------------
    async def candidates(self, body: bytes, content_type: str) -> bytes:
        try:
            sub = decode_sub_query(body)
        except ValueError as exc:
            raise RpcError(Code.INVALID_ARGUMENT, str(exc)) from None
        worker = self.held.get(sub.version)
        if worker is None:
            raise RpcError(
                Code.FAILED_PRECONDITION,
                f"cluster {self.cluster} of {self.app} holds {', '.join(self.held) or 'nothing'}, "
                f"not version {sub.version}",
            )
        self._forget(time.monotonic())
        try:
            result = worker.engine.candidates(sub.query, sub.history, sub.now_ms, times=sub.times)
        except InvalidQuery as exc:
            raise RpcError(Code.INVALID_ARGUMENT, f"{exc.field}: {exc.message}") from None
        return encode_answer(sub.version, result)


def main(app: str, cluster: int) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def serve() -> int:
        return await ShardWorker(config.load(), app, cluster).run()

    return asyncio.run(serve())
