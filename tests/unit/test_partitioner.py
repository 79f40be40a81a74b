"""The RPC client's sticky partitioner: one partition per linger window, keys hashed as Kafka's."""

from __future__ import annotations

from itertools import pairwise

from aiokafka.partitioner import DefaultPartitioner

from crossrec.adapters.kafka import StickyPartitioner

PARTITIONS = [0, 1, 2, 3]


def test_keyless_records_share_a_partition_per_window_and_visit_every_partition() -> None:
    now = [100.0]
    partitioner = StickyPartitioner(5, clock=lambda: now[0])
    chosen = []
    for window in range(8):
        now[0] = 100.0 + window * 0.005 + 0.0001
        in_window = {partitioner(None, PARTITIONS, PARTITIONS) for _ in range(50)}
        now[0] += 0.0045  # still the same window
        in_window.add(partitioner(None, PARTITIONS, PARTITIONS))
        assert len(in_window) == 1
        chosen.append(in_window.pop())
    assert all(a != b for a, b in pairwise(chosen))  # moves on each window
    assert set(chosen) == set(PARTITIONS)  # and spreads over all of them


def test_keyed_records_hash_as_the_default_partitioner() -> None:
    partitioner = StickyPartitioner(5)
    default = DefaultPartitioner()
    for key in (b"user-1", b"a", b"\x00\xff", "é".encode()):
        assert partitioner(key, PARTITIONS, PARTITIONS) == default(key, PARTITIONS, PARTITIONS)


def test_a_zero_linger_still_has_a_window() -> None:
    now = [1.0]
    partitioner = StickyPartitioner(0, clock=lambda: now[0])
    first = partitioner(None, PARTITIONS, PARTITIONS)
    now[0] += 0.0011  # past a 1 ms window
    assert partitioner(None, PARTITIONS, PARTITIONS) != first
