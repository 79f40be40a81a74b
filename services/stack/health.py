"""Service readiness, kept in Redis: each service process refreshes a short-lived key."""

from __future__ import annotations

import os

import orjson
import redis.asyncio as aioredis

TTL_SECONDS = 10


def key(name: str, pid: int) -> str:
    return f"cr:svc:{name}:{pid}"


async def report(client: aioredis.Redis, name: str, ready: bool, **detail: object) -> None:
    body = orjson.dumps({"name": name, "pid": os.getpid(), "ready": ready, **detail})
    await client.set(key(name, os.getpid()), body, ex=TTL_SECONDS)


async def read(client: aioredis.Redis, name: str, pid: int) -> dict | None:
    raw = await client.get(key(name, pid))
    return orjson.loads(raw) if raw else None
