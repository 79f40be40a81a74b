"""Where the sharded tier's messages go. Cluster c of an app has a topic of its own; the replicas
serving it form one consumer group on it, so Kafka's group protocol is the registry of live
workers. The topic's partition count bounds how many replicas share one cluster's load."""

from __future__ import annotations

from crossrec.adapters.kafka import TopicSpec, create_topics
from crossrec.settings import Settings

SHARD_PARTITIONS = 4  # at most this many replicas of one cluster take load at once
CANDIDATES = "/crossrec.v1.Shard/Candidates"  # a worker's method: one cluster's candidates


def shard_topic_name(app: str, cluster: int) -> str:
    """Unprefixed (Settings.topic adds the deployment's prefix)."""
    return f"shard.{app}.{cluster}"


def shard_topic(settings: Settings, app: str, cluster: int) -> str:
    return settings.topic(shard_topic_name(app, cluster))


def shard_group(settings: Settings, app: str, cluster: int) -> str:
    return f"{settings.topic_prefix}crossrec-shard.{app}.{cluster}"


async def create_shard_topics(settings: Settings, app: str, k: int) -> None:
    """Create the K cluster topics of an app (idempotent: existing ones are left alone)."""
    specs = tuple(TopicSpec(shard_topic_name(app, c), SHARD_PARTITIONS) for c in range(k))
    await create_topics(settings, specs)
