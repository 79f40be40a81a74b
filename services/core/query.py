"""The UR query (UR-SPEC §5.1) and its result (§5.2): parsed from, and written back to, PIO JSON.

`parse_query(doc)` validates a decoded PredictionIO query and returns a frozen `Query`; anything
wrong raises `InvalidQuery(field, message)` naming the offending field (`fields[1].bias`,
`dateRange.after`, ...). JSON `null` means "not given". Python names are snake_case; `from` is
`from_`. Beyond the UR's own checks (crossrec decisions): `num` ≥ 1 and `from` ≥ 0 with
`from + num` ≤ 10,000 (Elasticsearch's `index.max_result_window`), ids and names non-empty, biases
finite, rule `values` non-empty, `dateRange.after` earlier than `dateRange.before`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crossrec.core.config import FieldRule
from crossrec.core.events import InvalidEvent, format_time, parse_time

MAX_RESULT_WINDOW = 10_000

KEYS = (
    "user", "userBias", "item", "itemBias", "itemSet", "itemSetBias", "fields", "dateRange",
    "currentDate", "blacklistItems", "returnSelf", "num", "from", "eventNames", "withRanks",
)  # fmt: skip
_NUMBERS = (("userBias", "user_bias"), ("itemBias", "item_bias"), ("itemSetBias", "item_set_bias"))
_LISTS = (
    ("itemSet", "item_set"),
    ("blacklistItems", "blacklist_items"),
    ("eventNames", "event_names"),
)
_RULE_KEYS = ("name", "values", "bias")
_RANGE_KEYS = ("name", "before", "after")


class InvalidQuery(ValueError):
    """A query the engine cannot answer: `field` names what is wrong, `message` says why."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True)
class DateRange:
    name: str  # the item date property filtered
    before: int | None = None  # epoch ms, exclusive
    after: int | None = None  # epoch ms, exclusive

    @property
    def active(self) -> bool:
        """A range without bounds filters nothing (and leaves available/expire filtering on)."""
        return self.before is not None or self.after is not None


@dataclass(frozen=True, slots=True)
class Query:
    user: str | None = None
    user_bias: float | None = None  # None: the engine's userBias, else 1
    item: str | None = None
    item_bias: float | None = None
    item_set: tuple[str, ...] = ()
    item_set_bias: float | None = None
    fields: tuple[FieldRule, ...] = ()
    date_range: DateRange | None = None
    current_date: int | None = None  # epoch ms; None: the time of the request
    blacklist_items: tuple[str, ...] = ()
    return_self: bool | None = None  # None: the engine's returnSelf
    num: int | None = None  # None: the engine's num
    from_: int = 0
    event_names: tuple[str, ...] | None = None  # None: every indicator
    with_ranks: bool = False

    def to_pio(self) -> dict[str, Any]:
        """The PredictionIO JSON form; `parse_query(q.to_pio()) == q`."""
        out: dict[str, Any] = {}
        for key, value in (
            ("user", self.user), ("userBias", self.user_bias), ("item", self.item),
            ("itemBias", self.item_bias), ("itemSetBias", self.item_set_bias),
            ("returnSelf", self.return_self), ("num", self.num),
        ):  # fmt: skip
            if value is not None:
                out[key] = value
        if self.item_set:
            out["itemSet"] = list(self.item_set)
        if self.fields:
            out["fields"] = [
                {"name": r.name, "values": list(r.values), "bias": r.bias} for r in self.fields
            ]
        if self.date_range is not None:
            rng: dict[str, Any] = {"name": self.date_range.name}
            for key in ("before", "after"):
                bound = getattr(self.date_range, key)
                if bound is not None:
                    rng[key] = format_time(bound)
            out["dateRange"] = rng
        if self.current_date is not None:
            out["currentDate"] = format_time(self.current_date)
        if self.blacklist_items:
            out["blacklistItems"] = list(self.blacklist_items)
        if self.from_:
            out["from"] = self.from_
        if self.event_names is not None:
            out["eventNames"] = list(self.event_names)
        if self.with_ranks:
            out["withRanks"] = True
        return out


@dataclass(frozen=True, slots=True)
class Result:
    """One page of recommendations, best first."""

    item_scores: list[tuple[str, float]]
    ranks: list[dict[str, float]] | None = None  # with withRanks: per item, its ranking values
    backfill: bool = False  # some item has score 0: it came from the popularity backfill

    def to_pio(self) -> dict[str, Any]:
        """`{"itemScores": [{"item", "score"[, "ranks"]}, ...]}` (UR-SPEC §5.2)."""
        scores = [{"item": item, "score": score} for item, score in self.item_scores]
        if self.ranks is not None:
            for entry, ranks in zip(scores, self.ranks, strict=True):
                entry["ranks"] = ranks
        return {"itemScores": scores}


# -- parsing ----------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _check_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
    for key in obj:
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
        close = close or [k for k in allowed if k.lower() == str(key).lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidQuery(f"{prefix}{key}", f"unknown key{hint}; known keys: {', '.join(allowed)}")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidQuery(where, f"must be a string, got {_kind(value)}")
    if not value:
        raise InvalidQuery(where, "must not be empty")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidQuery(where, f"must be a list of strings, got {_kind(value)}")
    return tuple(_string(v, f"{where}[{i}]") for i, v in enumerate(value))


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidQuery(where, f"must be a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise InvalidQuery(where, "must be a finite number")
    return float(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidQuery(where, f"must be true or false, got {_kind(value)}")
    return value


def _integer(value: Any, where: str, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 20.0 from a JSON encoder that writes every number as a double
        else:
            raise InvalidQuery(where, f"must be {what}, got {_kind(value)}")
    if value < minimum:
        raise InvalidQuery(where, f"must be {what}, got {value}")
    if value > MAX_RESULT_WINDOW:
        raise InvalidQuery(where, f"must be at most {MAX_RESULT_WINDOW}, got {value}")
    return value


def _date(value: Any, where: str) -> int:
    if not isinstance(value, str):
        raise InvalidQuery(where, f"must be an ISO-8601 date-time string, got {_kind(value)}")
    try:
        return parse_time(value, where)
    except InvalidEvent:
        raise InvalidQuery(where, f"{value[:40]!r} is not an ISO-8601 date-time") from None


def _object(value: Any, where: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidQuery(where, f"must be a JSON object, got {_kind(value)}")
    _check_keys(value, allowed, f"{where}.")
    return value


def _rule(value: Any, where: str) -> FieldRule:
    obj = _object(value, where, _RULE_KEYS)
    for key in _RULE_KEYS:
        if obj.get(key) is None:
            raise InvalidQuery(f"{where}.{key}", "is required")
    values = _strings(obj["values"], f"{where}.values")
    if not values:
        raise InvalidQuery(f"{where}.values", "must list at least one value")
    return FieldRule(
        _string(obj["name"], f"{where}.name"), values, _number(obj["bias"], f"{where}.bias")
    )


def _date_range(value: Any) -> DateRange:
    obj = _object(value, "dateRange", _RANGE_KEYS)
    if obj.get("name") is None:
        raise InvalidQuery("dateRange.name", "is required")
    name = _string(obj["name"], "dateRange.name")
    before = None if obj.get("before") is None else _date(obj["before"], "dateRange.before")
    after = None if obj.get("after") is None else _date(obj["after"], "dateRange.after")
    if before is not None and after is not None and after >= before:
        raise InvalidQuery("dateRange.after", "must be earlier than dateRange.before")
    return DateRange(name, before, after)


def parse_query(doc: Any) -> Query:
    """A decoded PIO query -> Query; InvalidQuery names the first field that is wrong."""
    if not isinstance(doc, Mapping):
        raise InvalidQuery("query", f"must be a JSON object, got {_kind(doc)}")
    _check_keys(doc, KEYS, "")
    given = {k: v for k, v in doc.items() if v is not None}
    out: dict[str, Any] = {}
    for key, name in (("user", "user"), ("item", "item")):
        if key in given:
            out[name] = _string(given[key], key)
    for key, name in _NUMBERS:
        if key in given:
            out[name] = _number(given[key], key)
    for key, name in _LISTS:
        if key in given:
            out[name] = _strings(given[key], key)
    if "fields" in given:
        if not isinstance(given["fields"], list):
            raise InvalidQuery("fields", f"must be a list of rules, got {_kind(given['fields'])}")
        out["fields"] = tuple(_rule(r, f"fields[{i}]") for i, r in enumerate(given["fields"]))
    if "dateRange" in given:
        out["date_range"] = _date_range(given["dateRange"])
    if "currentDate" in given:
        out["current_date"] = _date(given["currentDate"], "currentDate")
    for key, name in (("returnSelf", "return_self"), ("withRanks", "with_ranks")):
        if key in given:
            out[name] = _bool(given[key], key)
    if "num" in given:
        out["num"] = _integer(given["num"], "num", 1, "a positive integer")
    if "from" in given:
        out["from_"] = _integer(given["from"], "from", 0, "a non-negative integer")
        if out["from_"] + out.get("num", 0) > MAX_RESULT_WINDOW:
            raise InvalidQuery("from", f"from + num must be at most {MAX_RESULT_WINDOW}")
    return Query(**out)
