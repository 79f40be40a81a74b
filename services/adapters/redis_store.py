"""Redis at the edge: apps and access keys, per-user history, item properties, known items.

Keys (all of one app under `cr:{app}:`):
  cr:apps                      hash  app name -> app record (JSON)
  cr:keys                      hash  access key -> app name
  cr:{app}:h:{user}:{event}    zset  target id -> eventTime ms; newest `cap` kept
  cr:{app}:pstate              hash  item id -> property state (crossrec.core.properties)
  cr:{app}:props               hash  item id -> current properties (JSON, sorted keys)
  cr:{app}:items               set   every item id seen (for new-item triggers)

Every write is idempotent and independent of order (ZADD GT, max-merged states), so replaying
events leaves Redis byte-for-byte unchanged. Writes are grouped by key and sent as one server-side
script per batch: redis-py spends ~35 µs per command in the client (DESIGN.md §5).
"""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from crossrec.core.properties import PropertyState, current, fold

APPS = "cr:apps"
ACCESS_KEYS = "cr:keys"
INGEST_STATS = "cr:stats:ingest"

# KEYS: history keys. ARGV[1]: cap; ARGV[2]: JSON list, per key, of [time, target, time, target, ...].
# One JSON argument instead of thousands: redis-py encodes every argument in Python.
_HISTORY_ADD = """
local cap = tonumber(ARGV[1])
local members = cjson.decode(ARGV[2])
for k = 1, #KEYS do
  redis.call('ZADD', KEYS[k], 'GT', unpack(members[k]))
  redis.call('ZREMRANGEBYRANK', KEYS[k], 0, -cap - 1)
end
return #KEYS
"""

# KEYS[1]: the app's item set. ARGV[1]: JSON list of item ids. Returns the ids that were new.
_ADD_ITEMS = """
local new = {}
for _, id in ipairs(cjson.decode(ARGV[1])) do
  if redis.call('SADD', KEYS[1], id) == 1 then new[#new + 1] = id end
end
return new
"""

_LUA_CHUNK = 20_000  # history entries per script call: bounds the time Redis is busy with one
OLDEST = -(2**62)  # the time histories_many gives the targets it reads without their times


@dataclass(frozen=True, slots=True)
class App:
    name: str
    access_key: str
    created: float


def history_key(app: str, user: str, event: str) -> str:
    return f"cr:{app}:h:{user}:{event}"


class RedisStore:
    def __init__(self, url: str, max_connections: int = 64) -> None:
        # a blocking pool: under load a command waits for a free connection instead of failing
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10
        )
        self.redis = aioredis.Redis(connection_pool=pool)
        # history reads for queries: ids decoded to str by hiredis (in C) and ZREVRANGE's reply
        # as parsed, without redis-py's callback that turns every score into bytes and back
        reads = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10, decode_responses=True
        )
        self._reads = aioredis.Redis(connection_pool=reads)
        self._reads.set_response_callback("ZREVRANGE", lambda response, **options: response)
        self._app_names: set[str] = set()  # app_known's cache
        self._app_names_read = 0.0
        self._history_add = self.redis.register_script(_HISTORY_ADD)
        self._add_items = self.redis.register_script(_ADD_ITEMS)

    async def close(self) -> None:
        await self.redis.aclose()
        await self._reads.aclose()

    # -- apps -----------------------------------------------------------------------------
    async def create_app(self, name: str) -> App:
        app = App(name, secrets.token_urlsafe(32), time.time())
        if not await self.redis.hsetnx(APPS, name, orjson.dumps(_app_dict(app))):
            raise ValueError(f"app {name!r} already exists")
        await self.redis.hset(ACCESS_KEYS, app.access_key, name)
        return app

    async def apps(self) -> list[App]:
        raw = await self.redis.hgetall(APPS)
        return sorted((App(**orjson.loads(v)) for v in raw.values()), key=lambda a: a.name)

    async def app_names(self) -> set[str]:
        return {k.decode() for k in await self.redis.hkeys(APPS)}

    async def app_exists(self, name: str) -> bool:
        return bool(await self.redis.hexists(APPS, name))

    async def app_known(self, name: str, max_age: float = 1.0) -> bool:
        """Whether an app exists, from a list of app names at most `max_age` seconds old; a
        name not on the list is looked up again at once (a new app answers immediately)."""
        now = time.monotonic()
        if name not in self._app_names or now - self._app_names_read > max_age:
            self._app_names = await self.app_names()
            self._app_names_read = now
        return name in self._app_names

    async def app_for_key(self, access_key: str) -> str | None:
        name = await self.redis.hget(ACCESS_KEYS, access_key)
        return name.decode() if name else None

    async def delete_app(self, name: str) -> bool:
        raw = await self.redis.hget(APPS, name)
        if raw is None:
            return False
        app = App(**orjson.loads(raw))
        await self.delete_app_data(name)
        await self.redis.hdel(ACCESS_KEYS, app.access_key)
        await self.redis.hdel(APPS, name)
        return True

    async def delete_app_data(self, name: str) -> int:
        """Remove every key of the app's state (history, properties, items); keep the app."""
        deleted = 0
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=f"cr:{_escape(name)}:*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                deleted += await self.redis.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await self.redis.unlink(*batch)
        return deleted

    # -- history --------------------------------------------------------------------------
    async def add_history(
        self, app: str, entries: Iterable[tuple[str, str, str, int]], cap: int
    ) -> None:
        """(user, event, target, time ms) entries: one ZADD GT and one trim per key."""
        grouped: dict[str, dict[str, int]] = defaultdict(dict)
        for user, event, target, millis in entries:
            members = grouped[history_key(app, user, event)]
            if members.get(target, -1) < millis:
                members[target] = millis
        keys: list[str] = []
        members: list[list[object]] = []
        size = 0
        for key, targets in grouped.items():
            if (
                len(targets) > cap
            ):  # only the newest `cap` can survive the trim (ties as ZSET orders)
                newest = sorted(targets.items(), key=lambda tm: (tm[1], tm[0]), reverse=True)[:cap]
                targets = dict(newest)
            keys.append(key)
            members.append([x for target, millis in targets.items() for x in (millis, target)])
            size += len(targets)
            if size >= _LUA_CHUNK:
                await self._history_add(keys=keys, args=[cap, orjson.dumps(members)])
                keys, members, size = [], [], 0
        if keys:
            await self._history_add(keys=keys, args=[cap, orjson.dumps(members)])

    async def histories(
        self, app: str, user: str, events: Sequence[str]
    ) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
        """The user's stored targets per event name, newest first, and their times (ms), in
        one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.zrevrange(history_key(app, user, event), 0, -1, withscores=True)
            rows = await pipe.execute()
        targets: dict[str, list[str]] = {}
        times: dict[str, list[int]] = {}
        for event, members in zip(events, rows, strict=True):
            if members:
                targets[event] = [m.decode() for m, _ in members]
                times[event] = [int(t) for _, t in members]
        return targets, times

    async def histories_many(
        self,
        app: str,
        wanted: Sequence[tuple[str, Sequence[str]]],
        newest: Mapping[str, int] | None = None,
        whole: Collection[str] = (),
    ) -> list[tuple[dict[str, list[str]], dict[str, list[int]]]]:
        """`histories` for several (user, event names) in one round trip, reading less when the
        reader needs less: for an event in `newest`, only that many newest entries come with
        their times (Redis formats every score as text: most of a read's cost on both sides);
        if it is also in `whole`, every older target follows, timed OLDEST, after anything real."""
        newest = newest or {}
        # MULTI: the two reads of one key see the same list, so no target falls between them
        async with self._reads.pipeline(transaction=True) as pipe:
            for user, events in wanted:
                for event in events:
                    key = history_key(app, user, event)
                    pipe.execute_command(
                        "ZREVRANGE", key, 0, newest.get(event, 0) - 1, "WITHSCORES"
                    )
                    if event in newest and event in whole:
                        pipe.execute_command("ZREVRANGE", key, newest[event], -1)
            rows = iter(await pipe.execute())
        out = []
        for _, events in wanted:
            targets: dict[str, list[str]] = {}
            times: dict[str, list[int]] = {}
            for event in events:
                found, stamps = _members_and_times(next(rows))
                if event in newest and event in whole:
                    older = next(rows)
                    if older:
                        found += older
                        stamps += [OLDEST] * len(older)
                if found:
                    targets[event], times[event] = found, stamps
            out.append((targets, times))
        return out

    async def history(
        self, app: str, user: str, event: str, limit: int = -1
    ) -> list[tuple[str, int]]:
        """Newest first: (target id, time ms)."""
        stop = -1 if limit < 0 else limit - 1
        rows = await self.redis.zrevrange(history_key(app, user, event), 0, stop, withscores=True)
        return [(member.decode(), int(score)) for member, score in rows]

    # -- items ----------------------------------------------------------------------------
    async def add_items(self, app: str, items: Sequence[str]) -> list[str]:
        """Record item ids; return those never seen before."""
        new = await self._add_items(keys=[f"cr:{app}:items"], args=[orjson.dumps(list(items))])
        return [i.decode() for i in new]

    async def apply_property_events(
        self, app: str, events: Sequence[tuple[str, str, dict, int]]
    ) -> list[str]:
        """Fold (item, $set|$unset|$delete, properties, time) into the stored states; return the
        items whose current properties changed. One ingest worker owns an item (events are keyed
        by entity id), so read-modify-write is safe."""
        items = list(dict.fromkeys(e[0] for e in events))
        state_key, props_key = f"cr:{app}:pstate", f"cr:{app}:props"
        raw_states = await self.redis.hmget(state_key, items)
        states = {
            item: PropertyState.from_json(raw) if raw else PropertyState()
            for item, raw in zip(items, raw_states, strict=True)
        }
        before = {item: current(state) for item, state in states.items()}
        for item, event, properties, millis in events:
            fold(states[item], event, properties, millis)
        changed = []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(state_key, mapping={item: s.to_json() for item, s in states.items()})
            for item, state in states.items():
                after = current(state)
                if after == before[item]:
                    continue
                changed.append(item)
                if after is None:
                    pipe.hdel(props_key, item)
                else:
                    pipe.hset(props_key, item, orjson.dumps(after, option=orjson.OPT_SORT_KEYS))
            await pipe.execute()
        return changed

    async def item_properties(self, app: str, items: Sequence[str]) -> dict[str, dict]:
        if not items:
            return {}
        raw = await self.redis.hmget(f"cr:{app}:props", list(items))
        return {item: orjson.loads(v) for item, v in zip(items, raw, strict=True) if v}

    async def items_without_properties(self, app: str) -> set[str]:
        """Items whose properties were all unset or deleted."""
        with_state = await self.redis.hkeys(f"cr:{app}:pstate")
        with_props = set(await self.redis.hkeys(f"cr:{app}:props"))
        return {k.decode() for k in with_state if k not in with_props}

    async def all_item_properties(self, app: str) -> dict[str, dict]:
        raw = await self.redis.hgetall(f"cr:{app}:props")
        return {k.decode(): orjson.loads(v) for k, v in raw.items()}

    # -- counters ---------------------------------------------------------------------------
    async def count_ingested(self, accepted: int, rejected: int) -> None:
        """Running totals for operators and benchmarks (cr:stats:ingest)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(INGEST_STATS, "accepted", accepted)
            pipe.hincrby(INGEST_STATS, "rejected", rejected)
            await pipe.execute()

    async def ingested(self) -> dict[str, int]:
        raw = await self.redis.hgetall(INGEST_STATS)
        return {k.decode(): int(v) for k, v in raw.items()}

    # -- inspection (tests, replay checks) --------------------------------------------------
    async def snapshot(self, app: str) -> dict[str, object]:
        """Every key of the app and its full content, for comparing states."""
        out: dict[str, object] = {}
        async for raw_key in self.redis.scan_iter(match=f"cr:{_escape(app)}:*", count=10_000):
            key = raw_key.decode()
            kind = (await self.redis.type(key)).decode()
            if kind == "zset":
                out[key] = await self.redis.zrange(key, 0, -1, withscores=True)
            elif kind == "hash":
                out[key] = await self.redis.hgetall(key)
            elif kind == "set":
                out[key] = sorted(await self.redis.smembers(key))
            else:
                out[key] = await self.redis.get(key)
        return out


def _members_and_times(reply: list) -> tuple[list[str], list[int]]:
    """A ZREVRANGE WITHSCORES reply as hiredis parsed it: [member, score] pairs (RESP3, redis-py's
    default) or member, score, member, ... (RESP2)."""
    if reply and isinstance(reply[0], list):
        members, times = zip(*reply, strict=True)
        return list(members), list(map(int, times))
    return reply[0::2], [int(float(t)) for t in reply[1::2]]


def _app_dict(app: App) -> dict[str, object]:
    return {"name": app.name, "access_key": app.access_key, "created": app.created}


def _escape(pattern: str) -> str:
    """Escape glob characters so an app named 'a*' matches only itself."""
    for ch in "\\*?[]":
        pattern = pattern.replace(ch, "\\" + ch)
    return pattern
