"""The replication controller with real `crossrec shard-worker` processes: a replica per cluster
of the live version, a SIGKILLed replica replaced, the replicas of a cluster that a retrain
removed stopped, none left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import orjson
import pytest
from conftest import run_cli
from support import engine_json, eventually, logged_count

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer
from crossrec.shard.controller import ShardController, WorkerPool, replicas_ready
from crossrec.shard.scaling import ScalingPolicy

pytestmark = pytest.mark.asyncio(loop_scope="session")


def two_worlds() -> list[dict]:
    """Users who buy inside one of two worlds of items."""
    return [
        {"event": "purchase", "entityType": "user", "entityId": f"u{u}",
         "targetEntityType": "item", "targetEntityId": f"{'ab'[u % 2]}{(u * 7 + n) % 6}"}
        for u in range(40)
        for n in range(4)
    ]  # fmt: skip


async def test_replicas_follow_the_clusters_and_dead_ones_are_replaced(
    stack: config.Settings, store: RedisStore, tmp_path: Path
) -> None:
    app = f"c-{uuid.uuid4().hex[:8]}"
    await store.create_app(app)
    events = two_worlds()
    async with EventProducer(stack) as producer:
        await producer.send_many(app, events)
    log = EventLog(stack.eventlog)
    assert await eventually(lambda: logged_count(log, app), lambda n: n == len(events))
    engine = engine_json(app, tmp_path, event_names=("purchase",), shards={"clusters": 2})
    trained = await asyncio.to_thread(run_cli, "train", "--app", app, "--engine", str(engine))
    assert trained.returncode == 0, trained.stderr

    policy = ScalingPolicy(min_replicas=1, max_replicas=2, interval_seconds=0.5)
    pool = WorkerPool(tmp_path / "logs")
    controller = ShardController(stack, policy, pool)
    await controller.meter.start()
    try:
        await controller.step()
        assert {c: pool.count((app, c)) for c in (0, 1)} == {0: 1, 1: 1}
        assert await eventually(lambda: replicas_ready(store, pool, app, 2), bool, timeout=90)
        view = orjson.loads((config.home() / "shards.json").read_bytes())
        assert set(view["apps"][app]) == {"0", "1"}

        (victim,) = pool.pids((app, 0))
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(0.5)
        await controller.step()
        (replacement,) = pool.pids((app, 0))
        assert replacement != victim
        assert await eventually(lambda: replicas_ready(store, pool, app, 2), bool, timeout=90)

        # a retrain into one cluster: cluster 1's replica has nothing left to serve
        engine = engine_json(app, tmp_path, event_names=("purchase",), shards={"clusters": 1})
        trained = await asyncio.to_thread(run_cli, "train", "--app", app, "--engine", str(engine))
        assert trained.returncode == 0, trained.stderr
        (gone,) = pool.pids((app, 1))
        await controller.step()
        assert pool.count((app, 1)) == 0 and pool.count((app, 0)) == 1
        with pytest.raises(ProcessLookupError):
            os.kill(gone, 0)
    finally:
        started = [pid for cluster in pool.clusters() for pid in pool.pids(cluster)]
        await asyncio.to_thread(pool.stop_all)
        await controller.meter.stop()
        await store.delete_app(app)
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
