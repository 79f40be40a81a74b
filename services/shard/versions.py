"""Model versions as the sharded tier reads them: the model and its item clusters (written into
the version's directory by the trainer before the version is published), and which workers hold
a version already (a Redis set a router waits on before it swaps, so a swap does not turn into
partial answers while the workers are still loading)."""

from __future__ import annotations

import redis.asyncio as aioredis

from crossrec.adapters.modelstore import ModelStore
from crossrec.core.clusters import Clusters, load_clusters
from crossrec.core.model import Model

READY_TTL_SECONDS = 86_400


class NotSharded(LookupError):
    """The version was trained without item clusters."""


def cluster_count(store: ModelStore, app: str, version: str) -> int:
    """K of a version (from its manifest); NotSharded when it has no clusters."""
    clusters = store.manifest(app, version).get("clusters")
    if not clusters:
        raise NotSharded(
            f"model {app}/{version} has no item clusters: train it with "
            "algorithms[0].params.shards in engine.json or with CROSSREC_SHARDS set"
        )
    return int(clusters["k"])


def load_version(store: ModelStore, app: str, version: str) -> tuple[Model, Clusters]:
    cluster_count(store, app, version)
    model = store.load(app, version)
    return model, load_clusters(store.fs, store.path(app, version))


def ready_key(app: str, version: str) -> str:
    return f"cr:{app}:shard-ready:{version}"


async def mark_ready(client: aioredis.Redis, app: str, version: str, cluster: int) -> None:
    key = ready_key(app, version)
    await client.sadd(key, cluster)
    await client.expire(key, READY_TTL_SECONDS)


async def ready_clusters(client: aioredis.Redis, app: str, version: str) -> set[int]:
    return {int(c) for c in await client.smembers(ready_key(app, version))}
