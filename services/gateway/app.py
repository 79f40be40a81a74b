"""The HTTP gateway, PredictionIO EventServer-compatible.

  GET  /                                   health: {"status": "alive"}
  POST /events.json?accessKey=KEY          one event -> 201 {"eventId": ...}
  POST /batch/events.json?accessKey=KEY    up to 50 events -> 200 [per-event status]
  POST /queries.json?accessKey=KEY         a UR query -> {"itemScores": [...]} (over the RPC)
  GET  /metrics                            Prometheus metrics

Events are checked here with the same rules as ingest, so a bad event gets its 400 at once and is
never produced; good ones go to the events topic and the reply waits for Kafka's acknowledgement.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from crossrec import settings as config
from crossrec.adapters.redis_store import RedisStore
from crossrec.client.producer import EventProducer, with_event_id
from crossrec.client.recommender import Recommender
from crossrec.core.events import InvalidEvent, validate
from crossrec.rpc.protocol import JSON, Code, RpcError
from crossrec.stack import health

EVENTS = Counter("crossrec_gateway_events_total", "Events received over HTTP", ["outcome"])
QUERIES = Counter("crossrec_gateway_queries_total", "Queries answered over HTTP", ["status"])

STORE = web.AppKey("store", RedisStore)
PRODUCER = web.AppKey("producer", EventProducer)
RECOMMENDER = web.AppKey("recommender", Recommender)
SETTINGS = web.AppKey("settings", config.Settings)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def _app_name(request: web.Request) -> str:
    key = request.query.get("accessKey")
    name = await request.app[STORE].app_for_key(key) if key else None
    if name is None:
        EVENTS.labels("unauthorized").inc()
        raise web.HTTPUnauthorized(
            body=orjson.dumps({"message": "Invalid accessKey."}), content_type="application/json"
        )
    return name


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if len(raw) > request.app[SETTINGS].max_event_bytes * request.app[SETTINGS].max_batch_events:
        raise web.HTTPRequestEntityTooLarge(max_size=0, actual_size=len(raw))
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(
            body=orjson.dumps({"message": f"malformed JSON: {exc}"}),
            content_type="application/json",
        ) from None


def _check(doc: Any, max_bytes: int) -> tuple[dict[str, Any], bytes]:
    event, _ = with_event_id(doc) if isinstance(doc, dict) else (doc, None)
    validate(event)
    line = orjson.dumps(event)
    if len(line) > max_bytes:
        raise InvalidEvent(f"event is {len(line)} bytes, over the limit of {max_bytes}")
    return event, line


async def health_check(request: web.Request) -> web.Response:
    return _json({"status": "alive"})


async def post_event(request: web.Request) -> web.Response:
    app = await _app_name(request)
    try:
        event, line = _check(await _body(request), request.app[SETTINGS].max_event_bytes)
    except InvalidEvent as exc:
        EVENTS.labels("invalid").inc()
        return _json({"message": str(exc)}, status=400)
    await request.app[PRODUCER].send_raw_nowait(app, line, event["entityId"])
    EVENTS.labels("accepted").inc()
    return _json({"eventId": event["eventId"]}, status=201)


async def post_batch(request: web.Request) -> web.Response:
    app = await _app_name(request)
    docs = await _body(request)
    limit = request.app[SETTINGS].max_batch_events
    if not isinstance(docs, list):
        return _json({"message": "the body must be a JSON array of events"}, status=400)
    if len(docs) > limit:
        return _json(
            {"message": f"Batch request must have less than or equal to {limit} events"}, status=400
        )
    results: list[dict[str, Any]] = []
    pending = []
    for doc in docs:
        try:
            event, line = _check(doc, request.app[SETTINGS].max_event_bytes)
        except InvalidEvent as exc:
            EVENTS.labels("invalid").inc()
            results.append({"status": 400, "message": str(exc)})
            continue
        pending.append(request.app[PRODUCER].send_raw_nowait(app, line, event["entityId"]))
        results.append({"status": 201, "eventId": event["eventId"]})
        EVENTS.labels("accepted").inc()
    await asyncio.gather(*pending)
    return _json(results)


HTTP_STATUS = {
    Code.INVALID_ARGUMENT: 400,
    Code.NOT_FOUND: 404,
    Code.FAILED_PRECONDITION: 409,
    Code.UNIMPLEMENTED: 501,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}


async def post_query(request: web.Request) -> web.Response:
    app = await _app_name(request)
    query = await _body(request)
    if not isinstance(query, dict):
        return _json({"message": "a query must be a JSON object"}, status=400)
    try:
        response = await request.app[RECOMMENDER].recommend(app, query)
    except RpcError as exc:
        QUERIES.labels(exc.code.name).inc()
        return _json(
            {"message": exc.message, "code": exc.code.name}, status=HTTP_STATUS.get(exc.code, 500)
        )
    QUERIES.labels("OK").inc()
    return _json({"itemScores": response["itemScores"]})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _lifecycle(app: web.Application) -> Any:
    settings = app[SETTINGS]
    app[STORE] = RedisStore(settings.redis_url)
    app[PRODUCER] = EventProducer(settings)
    await app[PRODUCER].start()
    app[RECOMMENDER] = Recommender(settings, content_type=JSON)
    await app[RECOMMENDER].start()
    heartbeat = asyncio.create_task(_heartbeat(app[STORE], settings))
    yield
    heartbeat.cancel()
    await app[RECOMMENDER].stop()
    await app[PRODUCER].stop()
    await app[STORE].close()


async def _heartbeat(store: RedisStore, settings: config.Settings) -> None:
    while True:
        with contextlib.suppress(Exception):
            await health.report(
                store.redis,
                "gateway",
                True,
                url=f"http://{settings.gateway_host}:{settings.gateway_port}",
            )
        await asyncio.sleep(3)


def create_app(settings: config.Settings | None = None) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[SETTINGS] = settings or config.load()
    app.router.add_get("/", health_check)
    app.router.add_post("/events.json", post_event)
    app.router.add_post("/batch/events.json", post_batch)
    app.router.add_post("/queries.json", post_query)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(_lifecycle)
    return app


def main() -> None:
    settings = config.load()
    web.run_app(
        create_app(settings), host=settings.gateway_host, port=settings.gateway_port, print=None
    )
