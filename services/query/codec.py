"""Recommend requests and responses on the wire: protobuf (schemas/recommender.proto) or the
PredictionIO JSON form. Both become the same PIO query document, so one parser validates them."""

from __future__ import annotations

from typing import Any

import orjson
from google.protobuf.message import DecodeError

from crossrec.rpc import recommender_pb2 as pb
from crossrec.rpc.protocol import JSON, PROTOBUF, Code, RpcError

# protobuf field -> PIO JSON key, for the optional scalars and the repeated strings
_SCALARS = {
    "user": "user",
    "user_bias": "userBias",
    "item": "item",
    "item_bias": "itemBias",
    "item_set_bias": "itemSetBias",
    "current_date": "currentDate",
    "return_self": "returnSelf",
    "num": "num",
    "from": "from",
    "with_ranks": "withRanks",
}
_LISTS = {"item_set": "itemSet", "blacklist_items": "blacklistItems", "event_names": "eventNames"}


def request_to_pio(request: pb.RecommendRequest) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for field, key in _SCALARS.items():
        if request.HasField(field):
            doc[key] = getattr(request, field)
    for field, key in _LISTS.items():
        values = list(getattr(request, field))
        if values:
            doc[key] = values
    if request.fields:
        doc["fields"] = [
            {"name": r.name, "values": list(r.values), "bias": r.bias} for r in request.fields
        ]
    if request.HasField("date_range"):
        date_range: dict[str, Any] = {"name": request.date_range.name}
        for bound in ("before", "after"):
            if request.date_range.HasField(bound):
                date_range[bound] = getattr(request.date_range, bound)
        doc["dateRange"] = date_range
    return doc


def pio_to_request(app: str, doc: dict[str, Any]) -> pb.RecommendRequest:
    """The inverse, for clients that hold a PIO query and speak protobuf."""
    request = pb.RecommendRequest(app=app)
    for field, key in _SCALARS.items():
        if doc.get(key) is not None:
            setattr(request, field, doc[key])
    for field, key in _LISTS.items():
        getattr(request, field).extend(doc.get(key) or [])
    for rule in doc.get("fields") or []:
        request.fields.add(name=rule["name"], values=rule["values"], bias=rule["bias"])
    if doc.get("dateRange"):
        request.date_range.name = doc["dateRange"]["name"]
        for bound in ("before", "after"):
            if doc["dateRange"].get(bound) is not None:
                setattr(request.date_range, bound, doc["dateRange"][bound])
    return request


def decode_request(body: bytes, content_type: str) -> tuple[str, dict[str, Any]]:
    """(app, PIO query document); INVALID_ARGUMENT naming what is wrong."""
    if content_type == PROTOBUF:
        request = pb.RecommendRequest()
        try:
            request.ParseFromString(body)
        except DecodeError:
            raise RpcError(Code.INVALID_ARGUMENT, "body: not a RecommendRequest protobuf") from None
        app, doc = request.app, request_to_pio(request)
    elif content_type == JSON:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RpcError(Code.INVALID_ARGUMENT, f"body: malformed JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise RpcError(Code.INVALID_ARGUMENT, "body: a query must be a JSON object")
        doc = dict(doc)
        app = doc.pop("app", None)
    else:
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"content-type: {content_type!r} is neither {PROTOBUF} nor {JSON}",
        )
    if not isinstance(app, str) or not app:
        raise RpcError(Code.INVALID_ARGUMENT, "app: required, the name of the app to ask")
    return app, doc


def encode_response(pio: dict[str, Any], version: str, backfill: bool, content_type: str) -> bytes:
    if content_type == JSON:
        return orjson.dumps({**pio, "modelVersion": version, "backfill": backfill})
    response = pb.RecommendResponse(model_version=version, backfill=backfill)
    for entry in pio["itemScores"]:
        scored = response.item_scores.add(item=entry["item"], score=entry["score"])
        for name, value in (entry.get("ranks") or {}).items():
            scored.ranks[name] = value
    return response.SerializeToString()


def response_to_pio(body: bytes, content_type: str) -> dict[str, Any]:
    """A reply body as the PIO response (plus modelVersion and backfill)."""
    if content_type == JSON:
        return orjson.loads(body)
    response = pb.RecommendResponse()
    response.ParseFromString(body)
    scores = []
    for s in response.item_scores:
        entry: dict[str, Any] = {"item": s.item, "score": s.score}
        if s.ranks:
            entry["ranks"] = dict(s.ranks)
        scores.append(entry)
    return {
        "itemScores": scores,
        "modelVersion": response.model_version,
        "backfill": response.backfill,
    }
