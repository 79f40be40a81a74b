"""RedisStore's history reads for queries, on the real Redis."""

from __future__ import annotations

import pytest

from crossrec.adapters.redis_store import OLDEST, RedisStore

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_histories_many_reads_the_newest_with_times_and_the_rest_untimed(
    store: RedisStore, app_name: str
) -> None:
    entries = [("u1", "buy", f"item-{k}", 1_700_000_000_000 + k) for k in range(10)]
    entries += [("u1", "view", "é-ünïcode", 5), ("u2", "buy", "x", 7)]
    await store.add_history(app_name, entries, cap=100)
    wanted = [("u1", ["buy", "view", "none"]), ("u2", ["buy"]), ("nobody", ["buy"])]
    found = await store.histories_many(app_name, wanted, {"buy": 3, "view": 2}, {"buy"})
    newest = [f"item-{k}" for k in range(9, -1, -1)]
    assert found[0] == (
        {"buy": newest, "view": ["é-ünïcode"]},
        {
            "buy": [1_700_000_000_009, 1_700_000_000_008, 1_700_000_000_007, *[OLDEST] * 7],
            "view": [5],
        },
    )
    assert found[1] == ({"buy": ["x"]}, {"buy": [7]})
    assert found[2] == ({}, {})
    # without limits: everything, with times, as `histories` reads it
    everything = await store.histories_many(app_name, [("u1", ["buy"])])
    assert everything == [await store.histories(app_name, "u1", ["buy"])]
