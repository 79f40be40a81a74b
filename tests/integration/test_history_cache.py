"""The query service's history cache on the real Redis: it serves repeated reads, and Redis's
reports of writes keep it exact."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence

import pytest
import pytest_asyncio

from crossrec import settings as config
from crossrec.adapters.history_cache import Cached, HistoryCache
from crossrec.adapters.redis_store import RedisStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

T0 = 1_700_000_000_000
NEWEST, WHOLE = {"buy": 2}, {"buy"}


@pytest_asyncio.fixture(loop_scope="session")
async def cache(store: RedisStore, stack: config.Settings) -> AsyncIterator[HistoryCache]:
    c = HistoryCache(store, stack.redis_url, max_users=100)
    yield c
    await c.close()


async def read(cache: HistoryCache, app: str, users: Sequence[str]) -> list:
    return await cache.histories_many(app, [(u, ["buy", "view"]) for u in users], NEWEST, WHOLE)


def as_lists(history: Cached) -> tuple[dict, dict]:
    """Targets and times as RedisStore gives them (the cache keeps tuples)."""
    return tuple({name: list(values) for name, values in part.items()} for part in history[:2])


async def test_a_repeated_read_is_served_from_the_cache_and_a_new_event_is_seen_at_once(
    store: RedisStore, cache: HistoryCache, app_name: str
) -> None:
    await store.add_history(app_name, [("u1", "buy", "a", T0), ("u:2", "buy", "b", T0)], cap=100)
    first = await read(cache, app_name, ["u1", "u:2"])
    assert [as_lists(h) for h in first] == await store.histories_many(
        app_name, [(u, ["buy", "view"]) for u in ["u1", "u:2"]], NEWEST, WHOLE
    )
    assert all(h.memo == {} for h in first)  # cached: each with a memo of its own
    gc.collect()  # kept histories leave the cyclic collector's walks after its first pass
    assert not any(gc.is_tracked(h.targets) or gc.is_tracked(h.times) for h in first)
    assert cache.counts["misses"] == 2 and cache.counts["hits"] == 0
    second = await read(cache, app_name, ["u1", "u:2"])
    assert [h.memo for h in second] == [h.memo for h in first]  # the same cached entries
    assert second[0].memo is first[0].memo
    assert cache.counts["hits"] == 2
    # a write to u:2 (its id holds the key separator) drops u:2 only
    await store.add_history(app_name, [("u:2", "view", "c", T0 + 1)], cap=100)
    again = await read(cache, app_name, ["u1", "u:2"])
    assert again[0] is first[0]
    assert as_lists(again[1]) == ({"buy": ["b"], "view": ["c"]}, {"buy": [T0], "view": [T0 + 1]})
    assert cache.counts["hits"] == 3 and cache.counts["misses"] == 3
    assert cache.counts["reports"] >= 1


class _WritesWhileReading(RedisStore):
    """A real store that stores one more event for the user right after reading them: the
    report of that write comes while the read is in flight."""

    async def histories_many(self, app, wanted, newest=None, whole=()):  # type: ignore[override]
        found = await super().histories_many(app, wanted, newest, whole)
        await self.add_history(app, [(wanted[0][0], "buy", "late", T0 + 9)], cap=100)
        return found


async def test_a_read_overtaken_by_a_write_is_used_once_but_not_kept(
    stack: config.Settings, store: RedisStore, app_name: str
) -> None:
    await store.add_history(app_name, [("u1", "buy", "a", T0)], cap=100)
    racing = _WritesWhileReading(stack.redis_url)
    cache = HistoryCache(racing, stack.redis_url, max_users=100)
    try:
        [before] = await read(cache, app_name, ["u1"])
        assert before.targets == {"buy": ["a"]} and before.memo is None  # used, not kept
        cache.store = store  # no more writes: the next read must go to Redis and see "late"
        [after] = await read(cache, app_name, ["u1"])
        assert as_lists(after)[0] == {"buy": ["late", "a"]}
        assert cache.counts["hits"] == 0
    finally:
        await cache.close()
        await racing.close()


async def test_the_least_recently_used_user_leaves_a_full_cache(
    stack: config.Settings, store: RedisStore, app_name: str
) -> None:
    await store.add_history(app_name, [(u, "buy", "a", T0) for u in "xyz"], cap=100)
    cache = HistoryCache(store, stack.redis_url, max_users=2)
    try:
        await read(cache, app_name, ["x", "y"])
        await read(cache, app_name, ["x"])  # y is now the least recently used
        await read(cache, app_name, ["z"])
        hits = cache.counts["hits"]
        await read(cache, app_name, ["x", "z"])
        assert cache.counts["hits"] == hits + 2
        await read(cache, app_name, ["y"])
        assert cache.counts["hits"] == hits + 2  # y was dropped
    finally:
        await cache.close()


async def test_without_room_every_read_goes_to_redis(
    stack: config.Settings, store: RedisStore, app_name: str
) -> None:
    await store.add_history(app_name, [("u1", "buy", "a", T0)], cap=100)
    cache = HistoryCache(store, stack.redis_url, max_users=0)
    try:
        for _ in range(2):
            [found] = await read(cache, app_name, ["u1"])
            assert found[0] == {"buy": ["a"]}
        assert cache.counts == {"hits": 0, "misses": 0, "reports": 0}
    finally:
        await cache.close()


async def test_a_lost_report_connection_empties_the_cache_and_reads_stay_exact(
    store: RedisStore, cache: HistoryCache, app_name: str
) -> None:
    await store.add_history(app_name, [("u1", "buy", "a", T0)], cap=100)
    await read(cache, app_name, ["u1"])
    # Redis drops the report connection: the writes it would have reported go unseen by it
    killed = cache._tracking[app_name].client_id
    await store.redis.execute_command("CLIENT", "KILL", "ID", killed)
    await store.add_history(app_name, [("u1", "buy", "b", T0 + 1)], cap=100)
    [found] = await read(cache, app_name, ["u1"])
    assert found[0] == {"buy": ["b", "a"]}
    assert app_name not in cache._tracking  # bypassed until it can track again
