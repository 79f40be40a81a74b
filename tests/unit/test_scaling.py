"""The replica policy: scale up on backlog or rate, down only after a quiet spell, within bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crossrec.shard.scaling import Load, ScalingPolicy, Streaks, decide

POLICY = ScalingPolicy(min_replicas=1, max_replicas=4, target_rate=100, lag_high=20,
                       up_after=2, down_after=3, down_fraction=0.5)  # fmt: skip


def run(policy: ScalingPolicy, replicas: int, loads: list[Load]) -> list[int]:
    """The replica count after each observation."""
    streaks, counts = Streaks(), []
    for load in loads:
        replicas, streaks = decide(policy, replicas, load, streaks)
        counts.append(replicas)
    return counts


def test_a_backlog_adds_a_replica_after_up_after_observations() -> None:
    assert run(POLICY, 1, [Load(50, 200)] * 2) == [1, 2]


def test_a_rate_above_capacity_adds_replicas_one_at_a_time_to_the_maximum() -> None:
    assert run(POLICY, 1, [Load(1000, 0)] * 8) == [1, 2, 2, 3, 3, 4, 4, 4]


def test_one_busy_observation_is_not_enough() -> None:
    assert run(POLICY, 1, [Load(50, 200), Load(50, 0), Load(50, 200), Load(50, 0)]) == [1] * 4


def test_idle_replicas_go_after_down_after_quiet_observations() -> None:
    assert run(POLICY, 3, [Load(10, 0)] * 7) == [3, 3, 2, 2, 2, 1, 1]


def test_hysteresis_a_load_between_the_thresholds_keeps_the_count() -> None:
    # 2 replicas carry 200/s; removing one needs < 100 * 0.5 = 50/s; 120/s stays put
    assert run(POLICY, 2, [Load(120, 0)] * 20) == [2] * 20


def test_a_backlog_blocks_scaling_down() -> None:
    assert run(POLICY, 2, [Load(10, 5)] * 10) == [2] * 10


def test_counts_outside_the_bounds_are_brought_back() -> None:
    assert decide(POLICY, 0, Load(0, 0), Streaks())[0] == 1
    assert decide(POLICY, 9, Load(0, 0), Streaks())[0] == 4


@given(
    replicas=st.integers(1, 4),
    loads=st.lists(st.builds(Load, st.floats(0, 1e4), st.integers(0, 10_000)), max_size=40),
)
def test_never_outside_the_bounds_and_never_more_than_one_step(
    replicas: int, loads: list[Load]
) -> None:
    counts = run(POLICY, replicas, loads)
    for before, after in zip([replicas, *counts], counts, strict=False):
        assert 1 <= after <= 4 and abs(after - before) <= 1


def test_settings_come_from_the_environment_and_are_checked() -> None:
    policy = ScalingPolicy.from_env({"CROSSREC_SHARD_MAX_REPLICAS": "3",
                                     "CROSSREC_SHARD_TARGET_RATE": "250.5"})  # fmt: skip
    assert (policy.max_replicas, policy.target_rate, policy.min_replicas) == (3, 250.5, 1)
    with pytest.raises(ValueError, match="replica bounds"):
        ScalingPolicy(min_replicas=3, max_replicas=2)
