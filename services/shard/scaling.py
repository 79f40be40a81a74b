"""How many replicas a cluster's worker should have: a pure policy over measured load.

Two signals, the ones a Kubernetes autoscaler reads from Kafka too (KEDA's Kafka scaler scales on
consumer lag): the rate the cluster's sub-queries are served at, and the backlog (consumer lag)
of its consumer group. A replica is added when the backlog stays above `lag_high`, or when the
rate exceeds what the current replicas should carry (`target_rate` each), for `up_after`
observations in a row; one is removed only when the rate would fit comfortably in one replica
fewer (below `down_fraction` of their capacity) with no backlog, for `down_after` observations
in a row. The gap between the two thresholds and the longer wait down are the hysteresis: a
load near a threshold does not make replicas come and go. Observations within `cooldown_seconds`
of a change are skipped (the controller's part): the group's rebalance stalls it briefly. One step per decision, always within
[min_replicas, max_replicas].
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from crossrec.shard.topics import SHARD_PARTITIONS


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    min_replicas: int = 1
    max_replicas: int = SHARD_PARTITIONS  # more would idle: a partition has one consumer
    target_rate: float = 150.0  # sub-queries/s one replica is meant to carry
    lag_high: int = 20  # waiting sub-queries that mean the replicas fall behind
    up_after: int = 2  # observations in a row before a replica is added
    down_after: int = 6  # ... before one is removed
    down_fraction: float = 0.5  # remove when the rate fits in n-1 replicas at this share
    interval_seconds: float = 2.0  # between observations
    # after a change, the group rebalances (Tansu: a 3 s join) and its stall looks like load:
    # observations this soon after are not counted
    cooldown_seconds: float = 8.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(
                f"replica bounds must satisfy 1 <= min ({self.min_replicas}) <= max ({self.max_replicas})"
            )
        if self.target_rate <= 0 or self.interval_seconds <= 0:
            raise ValueError("target_rate and interval_seconds must be positive")
        if not 0 < self.down_fraction < 1:
            raise ValueError("down_fraction must be between 0 and 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ScalingPolicy:
        """CROSSREC_SHARD_MIN_REPLICAS, CROSSREC_SHARD_MAX_REPLICAS, ... (one per field)."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(f"CROSSREC_SHARD_{f.name.upper()}")
            if raw is not None:
                values[f.name] = (int if f.type == "int" else float)(raw)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Load:
    rate: float  # sub-queries served per second since the last observation
    lag: int  # sub-queries waiting (end offsets minus committed offsets)


@dataclass(frozen=True, slots=True)
class Streaks:
    """How many observations in a row asked for more, or for fewer, replicas."""

    up: int = 0
    down: int = 0


def decide(
    policy: ScalingPolicy, replicas: int, load: Load, streaks: Streaks
) -> tuple[int, Streaks]:
    """The replica count to run now, and the streaks to carry to the next observation."""
    if replicas < policy.min_replicas or replicas > policy.max_replicas:
        return min(max(replicas, policy.min_replicas), policy.max_replicas), Streaks()
    behind = load.lag > policy.lag_high or load.rate > policy.target_rate * replicas
    spare = (
        replicas > policy.min_replicas
        and load.lag == 0
        and load.rate < policy.target_rate * (replicas - 1) * policy.down_fraction
    )
    streaks = Streaks(up=streaks.up + 1 if behind else 0, down=streaks.down + 1 if spare else 0)
    if streaks.up >= policy.up_after and replicas < policy.max_replicas:
        return replicas + 1, Streaks()
    if streaks.down >= policy.down_after:
        return replicas - 1, Streaks()
    return replicas, streaks
