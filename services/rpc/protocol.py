"""gRPC-over-Kafka: the metadata a request and its reply carry in Kafka headers, and gRPC's codes.

Request (on the request topic, key = correlation id):
  rpc-method          /crossrec.v1.Recommender/Recommend
  rpc-correlation-id  unique per request
  rpc-reply-to        topic the reply goes to; rpc-reply-partition its partition
  rpc-deadline        absolute deadline, epoch milliseconds
  content-type        application/protobuf or application/json
Reply (on the reply-to topic and partition, key = correlation id):
  rpc-correlation-id, grpc-status (the code's number), grpc-message, content-type
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

METHOD = "rpc-method"
CORRELATION_ID = "rpc-correlation-id"
REPLY_TO = "rpc-reply-to"
REPLY_PARTITION = "rpc-reply-partition"
DEADLINE = "rpc-deadline"
CONTENT_TYPE = "content-type"
STATUS = "grpc-status"
MESSAGE = "grpc-message"

PROTOBUF = "application/protobuf"
JSON = "application/json"

RECOMMEND = "/crossrec.v1.Recommender/Recommend"


class Code(enum.IntEnum):
    """gRPC status codes (the subset crossrec uses keeps gRPC's numbers)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


class RpcError(Exception):
    """A non-OK reply (or no reply by the deadline)."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    correlation_id: str
    reply_to: str
    reply_partition: int
    deadline_ms: int
    content_type: str
    body: bytes

    @property
    def expired(self) -> bool:
        return now_ms() > self.deadline_ms

    @classmethod
    def from_record(cls, headers: dict[str, bytes], body: bytes) -> Request:
        """Raises KeyError/ValueError when the metadata is missing or malformed."""
        return cls(
            method=headers[METHOD].decode(),
            correlation_id=headers[CORRELATION_ID].decode(),
            reply_to=headers[REPLY_TO].decode(),
            reply_partition=int(headers.get(REPLY_PARTITION, b"0")),
            deadline_ms=int(headers[DEADLINE]),
            content_type=headers.get(CONTENT_TYPE, PROTOBUF.encode()).decode(),
            body=body,
        )

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (METHOD, self.method.encode()),
            (CORRELATION_ID, self.correlation_id.encode()),
            (REPLY_TO, self.reply_to.encode()),
            (REPLY_PARTITION, str(self.reply_partition).encode()),
            (DEADLINE, str(self.deadline_ms).encode()),
            (CONTENT_TYPE, self.content_type.encode()),
        ]


@dataclass(frozen=True, slots=True)
class Reply:
    correlation_id: str
    code: Code
    message: str
    content_type: str
    body: bytes

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (CORRELATION_ID, self.correlation_id.encode()),
            (STATUS, str(int(self.code)).encode()),
            (MESSAGE, self.message.encode()),
            (CONTENT_TYPE, self.content_type.encode()),
        ]

    @classmethod
    def from_record(cls, headers: dict[str, bytes], body: bytes) -> Reply:
        return cls(
            correlation_id=headers[CORRELATION_ID].decode(),
            code=Code(int(headers[STATUS])),
            message=headers.get(MESSAGE, b"").decode(),
            content_type=headers.get(CONTENT_TYPE, PROTOBUF.encode()).decode(),
            body=body,
        )


def now_ms() -> int:
    return int(time.time() * 1000)
