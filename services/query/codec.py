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
    for field, value in request.ListFields():  # only the fields that are set: cheaper than HasField
        name = field.name
        if name in _SCALARS:
            doc[_SCALARS[name]] = value
        elif name in _LISTS:
            doc[_LISTS[name]] = list(value)
        elif name == "fields":
            doc["fields"] = [
                {"name": r.name, "values": list(r.values), "bias": r.bias} for r in value
            ]
        elif name == "date_range":
            date_range: dict[str, Any] = {"name": value.name}
            for bound in ("before", "after"):
                if value.HasField(bound):
                    date_range[bound] = getattr(value, bound)
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


def encode_response(
    pio: dict[str, Any], version: str, backfill: bool, content_type: str, *, partial: bool = False
) -> bytes:
    """`partial` (the sharded tier: some clusters did not answer) is written only when true."""
    if content_type == JSON:
        doc = {**pio, "modelVersion": version, "backfill": backfill}
        return orjson.dumps({**doc, "partial": True} if partial else doc)
    # messages built whole by their constructors: about half the cost of add() and setting fields
    scores = [
        pb.ItemScore(item=e["item"], score=e["score"], ranks=e["ranks"])
        if e.get("ranks")
        else pb.ItemScore(item=e["item"], score=e["score"])
        for e in pio["itemScores"]
    ]
    response = pb.RecommendResponse(
        model_version=version, backfill=backfill, item_scores=scores, partial=partial
    )
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
    out = {
        "itemScores": scores,
        "modelVersion": response.model_version,
        "backfill": response.backfill,
    }
    return {**out, "partial": True} if response.partial else out
