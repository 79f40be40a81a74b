"""A CANDIDATES sub-query and its answer on the wire (JSON via orjson), router <-> worker.

Request: {"version", "query": the Query's fields, "history": {event: [ids]}, "times": {event:
[ms]} | null, "now": ms}. The version is named so no answer mixes two model versions: a worker
that does not hold it answers FAILED_PRECONDITION, which the router counts as no answer.
Answer: {"version", "items": [[id, score]], "ranks": [{name: value}] | null, "backfill"}.
Floats go through orjson's shortest round-trip form, so merged scores stay bit-identical.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from crossrec.core.config import FieldRule
from crossrec.core.query import DateRange, Query, Result


@dataclass(frozen=True, slots=True)
class SubQuery:
    version: str
    query: Query
    history: Mapping[str, Sequence[str]]
    times: Mapping[str, Sequence[int]] | None
    now_ms: int


def _query_doc(q: Query) -> dict[str, Any]:
    dr = q.date_range
    return {
        "user": q.user,
        "userBias": q.user_bias,
        "item": q.item,
        "itemBias": q.item_bias,
        "itemSet": list(q.item_set),
        "itemSetBias": q.item_set_bias,
        "fields": [[r.name, list(r.values), r.bias] for r in q.fields],
        "dateRange": None if dr is None else [dr.name, dr.before, dr.after],
        "currentDate": q.current_date,
        "blacklistItems": list(q.blacklist_items),
        "returnSelf": q.return_self,
        "num": q.num,
        "from": q.from_,
        "eventNames": None if q.event_names is None else list(q.event_names),
        "withRanks": q.with_ranks,
    }


def _query_of(d: Mapping[str, Any]) -> Query:
    dr = d["dateRange"]
    names = d["eventNames"]
    return Query(
        user=d["user"],
        user_bias=d["userBias"],
        item=d["item"],
        item_bias=d["itemBias"],
        item_set=tuple(d["itemSet"]),
        item_set_bias=d["itemSetBias"],
        fields=tuple(FieldRule(n, tuple(v), float(b)) for n, v, b in d["fields"]),
        date_range=None if dr is None else DateRange(dr[0], dr[1], dr[2]),
        current_date=d["currentDate"],
        blacklist_items=tuple(d["blacklistItems"]),
        return_self=d["returnSelf"],
        num=d["num"],
        from_=d["from"],
        event_names=None if names is None else tuple(names),
        with_ranks=d["withRanks"],
    )


def encode_sub_query(sub: SubQuery) -> bytes:
    return orjson.dumps(
        {
            "version": sub.version,
            "query": _query_doc(sub.query),
            "history": {k: list(v) for k, v in sub.history.items()},
            "times": None if sub.times is None else {k: list(v) for k, v in sub.times.items()},
            "now": sub.now_ms,
        }
    )


def decode_sub_query(body: bytes) -> SubQuery:
    """ValueError (or KeyError/TypeError, as ValueError) for a malformed body."""
    try:
        doc = orjson.loads(body)
        return SubQuery(
            doc["version"], _query_of(doc["query"]), doc["history"], doc["times"], int(doc["now"])
        )
    except (KeyError, TypeError, IndexError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"malformed sub-query: {exc!r}") from None


def encode_answer(version: str, result: Result) -> bytes:
    return orjson.dumps(
        {
            "version": version,
            "items": result.item_scores,
            "ranks": result.ranks,
            "backfill": result.backfill,
        }
    )


def decode_answer(body: bytes) -> tuple[str, Result]:
    """(version, the cluster's candidates)."""
    try:
        doc = orjson.loads(body)
        items = [(str(item), float(score)) for item, score in doc["items"]]
        return doc["version"], Result(items, doc["ranks"], bool(doc["backfill"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed answer: {exc!r}") from None
