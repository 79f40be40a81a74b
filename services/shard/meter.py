"""Per-cluster load read from Kafka itself: the served rate and the backlog of each cluster's
consumer group, the same numbers a Kafka-lag autoscaler reads.

Served rate: growth of the group's committed offsets (workers commit as they go) per second.
Backlog: end offsets minus committed offsets. Committed offsets are read through a consumer
that names the group but never subscribes, so it never joins it (Tansu's OffsetFetch fails
through aiokafka's admin client). On Tansu the end offset is the last batch's base
offset + 1 (DESIGN §5), so the backlog is a lower bound there: exact when requests arrive one
per batch, short by up to a batch under bursts. Committed offsets are exact on both brokers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from crossrec.rpc.generations import current, group_of, topic_of
from crossrec.rpc.protocol import now_ms
from crossrec.settings import Settings
from crossrec.shard.scaling import Load
from crossrec.shard.topics import SHARD_PARTITIONS


@dataclass(frozen=True, slots=True)
class _Reading:
    at: float  # monotonic s
    served: int  # committed offsets, summed
    generation: int | None
    rate: float


@dataclass(frozen=True, slots=True)
class Target:
    """One cluster's topic and the consumer group of its replicas."""

    topic: str
    group: str


class LoadMeter:
    """`commit_interval`: how often the workers commit (RpcServer's auto-commit, 1 s). Commits
    trail what a worker has served by up to that long, so rate x interval of the raw backlog
    is served already and is not counted."""

    def __init__(self, settings: Settings, commit_interval: float = 1.0) -> None:
        self.settings = settings
        self.commit_interval = commit_interval
        self.offsets = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        self._readers: dict[str, AIOKafkaConsumer] = {}  # group -> its committed-offset reader
        self._last: dict[Target, _Reading] = {}

    async def start(self) -> None:
        await self.offsets.start()

    async def stop(self) -> None:
        for reader in self._readers.values():
            await reader.stop()
        self._readers.clear()
        await self.offsets.stop()

    async def _reader(self, group: str) -> AIOKafkaConsumer:
        reader = self._readers.get(group)
        if reader is None:
            reader = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                group_id=group,
                enable_auto_commit=False,
            )
            await reader.start()
            self._readers[group] = reader
        return reader

    async def measure(self, target: Target) -> Load:
        """The load of the request topic generation of this moment (crossrec.rpc.generations):
        its end offsets and its group's commits. A generation's first reading has no rate of
        its own yet: it repeats the last one."""
        generation = current(self.settings.rpc_request_topic_seconds, now_ms())
        topic = topic_of(target.topic, generation)
        partitions = [TopicPartition(topic, p) for p in range(SHARD_PARTITIONS)]
        ends = await self.offsets.end_offsets(partitions)
        reader = await self._reader(group_of(target.group, generation))
        # no commit yet (None): the group starts from the beginning
        done = {tp: (await reader.committed(tp)) or 0 for tp in partitions}
        lag = sum(max(0, ends[tp] - done.get(tp, 0)) for tp in partitions)
        served = sum(done.values())
        now = time.monotonic()
        last = self._last.get(target)
        if last is None or last.generation != generation:
            rate = last.rate if last is not None else 0.0
            if last is not None:  # the previous generation's group is done with
                await self._stop_reader(group_of(target.group, last.generation))
        else:
            rate = (served - last.served) / (now - last.at) if now > last.at else last.rate
        self._last[target] = _Reading(now, served, generation, rate)
        return Load(rate=rate, lag=max(0, lag - int(rate * self.commit_interval)))

    async def forget(self, target: Target) -> None:
        last = self._last.pop(target, None)
        await self._stop_reader(group_of(target.group, last.generation if last else None))

    async def _stop_reader(self, group: str) -> None:
        reader = self._readers.pop(group, None)
        if reader is not None:
            await reader.stop()
