"""Protobuf and PIO JSON carry the same query and response."""

from __future__ import annotations

import orjson
import pytest

from crossrec.query.codec import decode_request, encode_response, pio_to_request, response_to_pio
from crossrec.rpc.protocol import JSON, PROTOBUF, Code, RpcError

QUERY = {
    "user": "u1", "userBias": 2.0, "item": "i1", "itemBias": 0.5, "itemSet": ["a", "b"],
    "itemSetBias": 3.0, "fields": [{"name": "color", "values": ["red"], "bias": -1.0}],
    "dateRange": {"name": "date", "after": "2024-01-01T00:00:00Z"}, "currentDate": "2024-06-01T00:00:00Z",
    "blacklistItems": ["x"], "returnSelf": True, "num": 7, "from": 3, "eventNames": ["buy"], "withRanks": True,
}  # fmt: skip


def test_protobuf_and_json_decode_to_the_same_query() -> None:
    body = pio_to_request("shop", QUERY).SerializeToString()
    assert decode_request(body, PROTOBUF) == ("shop", QUERY)
    assert decode_request(orjson.dumps({**QUERY, "app": "shop"}), JSON) == ("shop", QUERY)


def test_unset_fields_stay_unset() -> None:
    body = pio_to_request("shop", {"user": "u1"}).SerializeToString()
    assert decode_request(body, PROTOBUF) == ("shop", {"user": "u1"})


@pytest.mark.parametrize(
    ("body", "content_type", "field"),
    [
        (b"\xff\xff", PROTOBUF, "body"),
        (b"{nope", JSON, "body"),
        (b"[1]", JSON, "body"),
        (b'{"user": "u"}', JSON, "app"),
        (b"{}", "text/plain", "content-type"),
    ],
)
def test_bad_bodies_are_invalid_arguments_naming_the_field(
    body: bytes, content_type: str, field: str
) -> None:
    with pytest.raises(RpcError) as failure:
        decode_request(body, content_type)
    assert failure.value.code == Code.INVALID_ARGUMENT and failure.value.message.startswith(field)


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_responses_round_trip(content_type: str) -> None:
    pio = {
        "itemScores": [
            {"item": "a", "score": 1.5, "ranks": {"popRank": 3.0}},
            {"item": "b", "score": 0.0},
        ]
    }
    decoded = response_to_pio(encode_response(pio, "v1", True, content_type), content_type)
    assert decoded == {**pio, "modelVersion": "v1", "backfill": True}
