"""A query service's cache of user histories, kept exact by Redis itself (server-assisted
client-side caching: https://redis.io/docs/latest/develop/reference/client-side-caching/).

Reading a history is most of what a Recommend costs outside the engine (Redis formats every
entry, the client parses it back), and the same users come back: a user's session asks for
recommendations page after page. So each app gets one connection on which Redis reports every
write to that app's history keys (CLIENT TRACKING ... BCAST PREFIX cr:{app}:h:, redirected to
the connection itself, which subscribes to the reports). The cache drops a user on any report
of theirs:

- before every lookup the reports already received are applied: a query sent after an event
  was stored finds it (Redis sends the report as it stores the event, before the producer of
  that event hears back, so it is read before any later query);
- a read in flight when its user's report comes is used once but not kept;
- a tracking connection that fails empties its app's entries, which are bypassed until a new
  connection tracks again (tried at most once a second).

Every write to a history is reported to every query-service process: its cost grows with the
event rate (a few µs a report), not with the queries.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple, cast

from redis.asyncio.connection import Connection, ConnectionPool
from redis.exceptions import RedisError

from crossrec.adapters.redis_store import RedisStore

log = logging.getLogger(__name__)


class Cached(NamedTuple):
    """A history as the cache gives it: `memo` is a dict that lives as long as the cached
    history (the engine keeps what it derives from the history there); None when the history
    is not cached."""

    targets: Mapping[str, Sequence[str]]
    times: Mapping[str, Sequence[int]]
    memo: dict[Any, Any] | None


REPORTS = "__redis__:invalidate"
RETRY_SECONDS = 1.0


class _Tracking:
    """One app's report connection and the event names whose keys map back to users."""

    def __init__(self, connection: Connection, client_id: int, prefix: str) -> None:
        self.connection = connection
        self.client_id = client_id
        self.prefix = prefix
        self.events: set[str] = set()


class HistoryCache:
    """RedisStore.histories_many through a cache of up to `max_users` users (least recently
    used first out); 0 reads Redis every time."""

    def __init__(self, store: RedisStore, url: str, max_users: int) -> None:
        self.store = store
        self.max_users = max_users
        self._pool = ConnectionPool.from_url(url, protocol=2)  # reports as pub/sub messages
        self._tracking: dict[str, _Tracking] = {}
        self._retry_at: dict[str, float] = {}
        # (app, user) -> {(event names, what is read): history}
        self._users: OrderedDict[tuple[str, str], dict[Any, Cached]] = OrderedDict()
        self._reading: dict[tuple[str, str], int] = {}  # users being read, how many times
        self._stale: set[tuple[str, str]] = set()  # of those, users reported meanwhile
        self.counts = {"hits": 0, "misses": 0, "reports": 0}

    def summary(self) -> dict[str, int]:
        """For the service's heartbeat (`crossrec status`): users held, hits, misses, reports."""
        return {"users": len(self._users), **self.counts}

    async def close(self) -> None:
        for app in list(self._tracking):
            await self._forget(app)
        await self._pool.disconnect()

    async def histories_many(
        self,
        app: str,
        wanted: Sequence[tuple[str, Sequence[str]]],
        newest: Mapping[str, int] | None = None,
        whole: Collection[str] = (),
    ) -> list[Cached]:
        """As RedisStore.histories_many, from the cache where it can."""
        newest = newest or {}
        tracking = await self._tracked(app) if self.max_users > 0 else None
        if tracking is None:
            found = await self.store.histories_many(app, wanted, newest, whole)
            return [Cached(targets, times, None) for targets, times in found]
        reads = (tuple(sorted(newest.items())), tuple(sorted(whole)))
        out: list[Cached | None] = []
        missing: list[int] = []
        for j, (user, events) in enumerate(wanted):
            tracking.events.update(events)
            entry = self._users.get((app, user))
            cached = entry.get((tuple(events), reads)) if entry is not None else None
            if cached is not None:
                self._users.move_to_end((app, user))
            else:
                missing.append(j)
            out.append(cached)
        self.counts["hits"] += len(wanted) - len(missing)
        self.counts["misses"] += len(missing)
        if missing:
            users = [(app, wanted[j][0]) for j in missing]
            for user in users:
                self._reading[user] = self._reading.get(user, 0) + 1
            try:
                read = await self.store.histories_many(
                    app, [wanted[j] for j in missing], newest, whole
                )
                await self._apply_reports(app)  # those that came while it was read
                for j, user, (targets, times) in zip(missing, users, read, strict=True):
                    out[j] = Cached(targets, times, None)
                    if user not in self._stale and app in self._tracking:
                        out[j] = Cached(_untracked(targets), _untracked(times), {})
                        self._keep(user, (tuple(wanted[j][1]), reads), out[j])
            finally:
                for user in users:
                    self._reading[user] -= 1
                    if not self._reading[user]:
                        del self._reading[user]
                        self._stale.discard(user)
        return cast(list[Cached], out)  # every entry is filled by now

    def _keep(self, user: tuple[str, str], key: Any, history: Cached) -> None:
        self._users.setdefault(user, {})[key] = history
        self._users.move_to_end(user)
        while len(self._users) > self.max_users:
            self._users.popitem(last=False)

    def _drop(self, user: tuple[str, str]) -> None:
        self._users.pop(user, None)
        if user in self._reading:
            self._stale.add(user)

    def _drop_app(self, app: str) -> None:
        """Every user of an app, held or being read."""
        for user in [u for u in self._users if u[0] == app]:
            del self._users[user]
        self._stale.update(u for u in self._reading if u[0] == app)

    # -- the report connections ---------------------------------------------------------------

    async def _tracked(self, app: str) -> _Tracking | None:
        """The app's report connection with every report received so far applied; None when it
        has none (its cache is bypassed)."""
        if app not in self._tracking and time.monotonic() >= self._retry_at.get(app, 0.0):
            await self._track(app)
        if app in self._tracking:
            await self._apply_reports(app)
        return self._tracking.get(app)

    async def _track(self, app: str) -> None:
        connection = self._pool.make_connection()
        prefix = f"cr:{app}:h:"
        try:
            await connection.connect()
            await connection.send_command("CLIENT", "ID")
            client_id = await connection.read_response()
            await connection.send_command(
                "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", "PREFIX", prefix
            )
            await connection.read_response()
            await connection.send_command("SUBSCRIBE", REPORTS)
            await connection.read_response()
        except (RedisError, OSError) as exc:
            log.warning("history cache of %s off: cannot track its writes (%r)", app, exc)
            self._retry_at[app] = time.monotonic() + RETRY_SECONDS
            await connection.disconnect()
            return
        self._tracking[app] = _Tracking(connection, client_id, prefix)

    async def _apply_reports(self, app: str) -> None:
        tracking = self._tracking.get(app)
        if tracking is None:
            return
        try:
            while await tracking.connection.can_read():
                self._apply(app, tracking, await tracking.connection.read_response())
        except (RedisError, OSError) as exc:
            log.warning("history cache of %s off: lost its write reports (%r)", app, exc)
            self._retry_at[app] = time.monotonic() + RETRY_SECONDS
            await self._forget(app)

    def _apply(self, app: str, tracking: _Tracking, message: Any) -> None:
        """A report: [b"message", channel, keys], keys None when Redis was flushed."""
        if not isinstance(message, list) or len(message) != 3 or message[0] != b"message":
            return
        self.counts["reports"] += 1
        keys = message[2]
        if keys is None:
            self._drop_app(app)
            return
        for key in keys:
            rest = key.decode(errors="replace")[len(tracking.prefix) :]
            for event in tracking.events:  # the key is prefix + user + ":" + event
                if rest.endswith(":" + event):
                    self._drop((app, rest[: -len(event) - 1]))

    async def _forget(self, app: str) -> None:
        """Stop tracking an app: its entries go (no report would tell when they change)."""
        tracking = self._tracking.pop(app, None)
        self._drop_app(app)
        if tracking is not None:
            await tracking.connection.disconnect()


def _untracked(lists: dict[str, list[Any]]) -> dict[str, tuple[Any, ...]]:
    """A history to keep, as tuples: a tuple of strings or ints holds nothing the cyclic
    collector must walk, so it stops tracking it (and then its dict) on its first pass. As lists,
    the cached histories were most of what each full collection walked (20-35 ms apiece while
    the cache filled), in the middle of requests."""
    return {name: tuple(values) for name, values in lists.items()}
