"""`crossrec status`: is every part of the running stack ready?"""

from __future__ import annotations

import redis.asyncio as aioredis

from crossrec import settings as config
from crossrec.adapters.kafka import wait_for_broker
from crossrec.stack import health
from crossrec.stack.supervisor import running_stack

Row = tuple[str, str, str]


async def check() -> tuple[list[Row], bool]:
    info = running_stack()
    if info is None:
        return [("stack", "not running", str(config.home()))], False
    settings = config.load()
    rows: list[Row] = [("stack", "ready", f"supervisor pid {info['pid']}, home {config.home()}")]
    try:
        await wait_for_broker(settings.kafka_bootstrap, timeout=3)
        rows.append(("kafka", "ready", settings.kafka_bootstrap))
    except Exception as exc:
        rows.append(("kafka", f"unreachable ({exc.__class__.__name__})", settings.kafka_bootstrap))
    client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
    try:
        await client.ping()
        rows.append(
            (
                "redis",
                "ready",
                settings.redis_url + (" (embedded)" if info["redis"]["embedded"] else ""),
            )
        )
        for name, pid in info["services"].items():
            beat = await health.read(client, name, pid)
            state = (
                "ready" if beat and beat.get("ready") else ("starting" if beat else "no heartbeat")
            )
            where = f"pid {pid}" + (f", {beat['url']}" if beat and "url" in beat else "")
            if beat and "history_cache" in beat:
                where += ", " + cache_note(beat["history_cache"])
            rows.append((name, state, where))
    except Exception as exc:
        rows.append(("redis", f"unreachable ({exc.__class__.__name__})", settings.redis_url))
    finally:
        await client.aclose()
    return rows, all(state == "ready" for _, state, _ in rows)


def cache_note(cache: dict[str, int]) -> str:
    """A query service's history cache in a few words: users held and the share of hits."""
    lookups = cache.get("hits", 0) + cache.get("misses", 0)
    hits = f", {100 * cache.get('hits', 0) / lookups:.0f} % hits" if lookups else ""
    return f"history cache {cache.get('users', 0):,} users{hits}"
