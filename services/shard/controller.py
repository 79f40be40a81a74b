"""The replication controller: runs worker replicas for every cluster of every sharded app on this
machine, between the policy's bounds, sized by the load Kafka reports.

Every `interval_seconds` it
1. finds the sharded apps (a live model version with clusters) and their cluster counts;
2. stops the replicas of clusters that are gone (app deleted, fewer clusters after a train) and
   replaces replicas that died (a SIGKILLed worker's partitions move to the survivors meanwhile:
   Kafka's group protocol, not this controller, fails over);
3. measures each cluster's served rate and backlog (crossrec.shard.meter) and applies the scaling
   policy (crossrec.shard.scaling), one replica up or down at a time.
Its view is written to $CROSSREC_HOME/shards.json and to its heartbeat, for `crossrec status`
and the benchmarks. On Kubernetes the same signal drives the platform's autoscaler instead (README,
"Scaling the sharded tier").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from crossrec import settings as config
from crossrec.adapters.modelstore import ModelStore
from crossrec.adapters.redis_store import RedisStore
from crossrec.shard.meter import LoadMeter, Target
from crossrec.shard.scaling import Load, ScalingPolicy, Streaks, decide
from crossrec.shard.topics import create_shard_topics, shard_group, shard_topic
from crossrec.shard.versions import NotSharded, cluster_count
from crossrec.stack import health, processes

log = logging.getLogger("crossrec.shard.controller")

Cluster = tuple[str, int]  # (app, cluster)


def worker_command(app: str, cluster: int) -> list[str]:
    return [sys.executable, "-m", "crossrec.cli.main", "shard-worker", "--app", app,
            "--cluster", str(cluster)]  # fmt: skip


class WorkerPool:
    """Worker replica processes on this machine, per cluster; the newest stops first."""

    def __init__(
        self,
        logs: Path,
        env: dict[str, str] | None = None,
        command: Callable[[str, int], Sequence[str]] = worker_command,
    ) -> None:
        self.logs, self.env, self.command = logs, env, command
        self.replicas: dict[Cluster, list[subprocess.Popen]] = {}
        self._serial = 0

    def count(self, cluster: Cluster) -> int:
        return len(self.replicas.get(cluster, ()))

    def pids(self, cluster: Cluster) -> list[int]:
        return [p.pid for p in self.replicas.get(cluster, ())]

    def reap(self) -> dict[Cluster, int]:
        """Forget replicas that exited; how many each cluster lost."""
        lost = {}
        for cluster, running in self.replicas.items():
            alive = [p for p in running if p.poll() is None]
            if len(alive) < len(running):
                lost[cluster] = len(running) - len(alive)
            self.replicas[cluster] = alive
        return lost

    def scale(self, cluster: Cluster, n: int) -> None:
        running = self.replicas.setdefault(cluster, [])
        while len(running) < n:
            self._serial += 1
            app, c = cluster
            log_path = self.logs / f"shard-worker-{app}-{c}-{self._serial}.log"
            running.append(processes.spawn(self.command(app, c), log_path, self.env))
        while len(running) > n:
            processes.stop(running.pop())  # SIGTERM: the worker leaves its group at once
        if not running:
            del self.replicas[cluster]

    def clusters(self) -> set[Cluster]:
        return set(self.replicas)

    def stop_all(self) -> None:
        for cluster in list(self.replicas):
            self.scale(cluster, 0)


async def replicas_ready(
    store: RedisStore, pool: WorkerPool, app: str, k: int, version: str | None = None
) -> bool:
    """Whether every replica the pool runs for the app's K clusters has its partitions (and
    holds `version`), from their heartbeats."""
    beats = [
        await health.read(store.redis, f"shard-worker.{app}.{c}", pid)
        for c in range(k)
        for pid in pool.pids((app, c))
    ]
    return bool(beats) and all(
        b and b.get("ready") and (version is None or version in b.get("versions", ()))
        for b in beats
    )


def sharded_apps(models: ModelStore, apps: Sequence[str]) -> dict[str, int]:
    """App -> cluster count of its live version, for the apps whose live version has clusters."""
    found = {}
    for app in apps:
        version = models.live(app)
        if version is None:
            continue
        with contextlib.suppress(NotSharded, OSError):  # unsharded, or deleted meanwhile
            found[app] = cluster_count(models, app, version)
    return found


class ShardController:
    def __init__(self, settings: config.Settings, policy: ScalingPolicy, pool: WorkerPool) -> None:
        self.settings, self.policy, self.pool = settings, policy, pool
        self.store = RedisStore(settings.redis_url)
        self.models = ModelStore(settings.modelstore)
        self.meter = LoadMeter(settings)
        self.streaks: dict[Cluster, Streaks] = {}
        self.loads: dict[Cluster, Load] = {}
        self._topics_made: set[tuple[str, int]] = set()
        self.decisions: list[dict] = []  # every scaling change, newest last
        self.changed: dict[Cluster, float] = {}  # when each cluster's replicas last changed

    async def run(self) -> None:
        await self.meter.start()
        try:
            while True:
                await self.step()
                await asyncio.sleep(self.policy.interval_seconds)
        finally:
            await asyncio.to_thread(self.pool.stop_all)
            await self.meter.stop()
            await self.store.close()

    async def step(self) -> None:
        apps = await self.store.app_names()
        wanted = await asyncio.to_thread(sharded_apps, self.models, apps)
        clusters = {(app, c) for app, k in wanted.items() for c in range(k)}
        for gone in self.pool.clusters() - clusters:
            log.info("stopping the replicas of %s/%d: no such cluster any more", *gone)
            await asyncio.to_thread(self.pool.scale, gone, 0)
            await self.meter.forget(self.target(gone))
            self.streaks.pop(gone, None)
            self.loads.pop(gone, None)
        for app, k in wanted.items():
            if (app, k) not in self._topics_made:
                await create_shard_topics(self.settings, app, k)
                self._topics_made.add((app, k))
        for cluster, lost in self.pool.reap().items():
            log.warning("%s/%d lost %d replica(s); replacing", *cluster, lost)
        for cluster in sorted(clusters):
            await self._size(cluster)
        await self._report(wanted)

    def target(self, cluster: Cluster) -> Target:
        app, c = cluster
        return Target(shard_topic(self.settings, app, c), shard_group(self.settings, app, c))

    async def _size(self, cluster: Cluster) -> None:
        app, c = cluster
        current = self.pool.count(cluster)
        try:
            load = await self.meter.measure(self.target(cluster))
        except Exception as exc:  # a group not formed yet, a broker hiccup: keep the replicas
            log.debug("no load for %s/%d: %r", app, c, exc)
            load = Load(0.0, 0)
        self.loads[cluster] = load
        settling = (
            time.monotonic() - self.changed.get(cluster, -math.inf) < self.policy.cooldown_seconds
        )
        if current < self.policy.min_replicas:  # first start, or replacing dead replicas
            desired, streaks = self.policy.min_replicas, Streaks()
        elif settling:  # the rebalance after our last change: its stall is not load
            desired, streaks = current, Streaks()
        else:
            desired, streaks = decide(
                self.policy, current, load, self.streaks.get(cluster, Streaks())
            )
        self.streaks[cluster] = streaks
        if desired != current:
            self.decisions.append(
                {"at": time.time(), "app": app, "cluster": c, "from": current, "to": desired,
                 "rate": round(load.rate, 1), "lag": load.lag}
            )  # fmt: skip
            log.info("%s/%d: %d -> %d replicas (rate %.0f/s, lag %d)", app, c, current,
                     desired, load.rate, load.lag)  # fmt: skip
            await asyncio.to_thread(self.pool.scale, cluster, desired)
            self.changed[cluster] = time.monotonic()

    async def _report(self, wanted: dict[str, int]) -> None:
        view = {
            app: {
                str(c): {
                    "replicas": self.pool.count((app, c)),
                    "pids": self.pool.pids((app, c)),
                    "rate": round(self.loads.get((app, c), Load(0, 0)).rate, 1),
                    "lag": self.loads.get((app, c), Load(0, 0)).lag,
                }
                for c in range(k)
            }
            for app, k in wanted.items()
        }
        body = {"at": time.time(), "apps": view, "decisions": self.decisions[-50:]}
        path = config.home() / "shards.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
        tmp.replace(path)
        with contextlib.suppress(Exception):
            await health.report(self.store.redis, "shard-controller", True, apps=view)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = config.load()
    policy = ScalingPolicy.from_env()
    pool = WorkerPool(config.home() / "logs", env={"PYTHONUNBUFFERED": "1"})
    controller = ShardController(settings, policy, pool)
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(_serve(controller))


async def _serve(controller: ShardController) -> None:
    """Run until SIGTERM or SIGINT; stopping stops every replica this controller started."""
    task = asyncio.create_task(controller.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
