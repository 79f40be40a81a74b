"""Request-topic generations: which a server reads when, and when a topic may go."""

from __future__ import annotations

from crossrec.rpc.generations import Generations, topic_of


def test_a_server_reads_the_next_generation_early_and_the_last_one_late() -> None:
    gens = Generations(60)  # lead 8 s, grace 5 s, keep 65 s
    start = 1_000 * 60_000  # generation 1000 starts
    assert gens.at(start) == 1000 and gens.at(start - 1) == 999
    assert gens.wanted(start + 30_000) == [1000]
    assert gens.wanted(start + 51_999) == [1000]
    assert gens.wanted(start + 52_000) == [1000, 1001]  # 8 s before 1001 starts
    assert gens.wanted(start + 60_000 + 5_000) == [1000, 1001]  # 1000's grace
    assert gens.wanted(start + 60_000 + 5_001) == [1001]
    assert not gens.deletable(1000, start + 60_000 + 65_000)
    assert gens.deletable(1000, start + 60_000 + 65_001)
    short = Generations(2)  # lead and grace at most half a period: never more than three
    assert all(len(short.wanted(t)) <= 3 for t in range(0, 10_000, 7))
    assert all(short.at(t) in short.wanted(t) for t in range(0, 10_000, 7))


def test_topic_names() -> None:
    assert topic_of("crossrec.rpc-requests", 28_000_123) == "crossrec.rpc-requests.g28000123"
    assert topic_of("crossrec.rpc-requests", None) == "crossrec.rpc-requests"
