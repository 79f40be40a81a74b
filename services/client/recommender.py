"""Asking for recommendations over gRPC-over-Kafka (async and sync).

async with Recommender(settings) as rec:
    response = await rec.recommend("shop", {"user": "u1", "num": 10})
    # {"itemScores": [{"item": ..., "score": ...}], "modelVersion": ..., "backfill": ...}
"""

from __future__ import annotations

from typing import Any

import orjson

from crossrec import settings as config
from crossrec.client.background_loop import BackgroundLoop
from crossrec.core.query import InvalidQuery, parse_query
from crossrec.query.codec import pio_to_request, response_to_pio
from crossrec.rpc.client import RpcClient
from crossrec.rpc.protocol import JSON, PROTOBUF, RECOMMEND, Code, RpcError


class Recommender:
    def __init__(
        self,
        settings: config.Settings | None = None,
        *,
        timeout: float = 5.0,
        content_type: str = PROTOBUF,
    ) -> None:
        self.rpc = RpcClient(settings or config.load())
        self.timeout = timeout
        self.content_type = content_type

    async def start(self) -> None:
        await self.rpc.start()

    async def stop(self) -> None:
        await self.rpc.stop()

    async def __aenter__(self) -> Recommender:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def recommend(
        self, app: str, query: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """The PIO response for a PIO query; RpcError (with a gRPC code) when it fails."""
        if self.content_type == JSON:
            body = orjson.dumps({**query, "app": app})
        else:
            # protobuf has no place for unknown keys or wrong types: check here, as the server would
            try:
                parse_query(query)
            except InvalidQuery as exc:
                raise RpcError(Code.INVALID_ARGUMENT, f"{exc.field}: {exc.message}") from None
            body = pio_to_request(app, query).SerializeToString()
        reply = await self.rpc.call(RECOMMEND, body, timeout or self.timeout, self.content_type)
        return response_to_pio(reply, self.content_type)


class SyncRecommender:
    def __init__(self, settings: config.Settings | None = None, **options: Any) -> None:
        self._loop = BackgroundLoop("crossrec-recommender")
        self._client = self._loop.run(_make(settings, options))

    def recommend(
        self, app: str, query: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        return self._loop.run(self._client.recommend(app, query, timeout))

    def close(self) -> None:
        self._loop.run(self._client.stop())
        self._loop.close()

    def __enter__(self) -> SyncRecommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _make(settings: config.Settings | None, options: dict[str, Any]) -> Recommender:
    client = Recommender(settings, **options)
    await client.start()
    return client
