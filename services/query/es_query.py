"""The UR query as an Elasticsearch request body (UR-SPEC §5.3-§5.4, crossrec's decisions), pure:
no client, no I/O, so every feature is checked on the body alone.

    info = ModelInfo.of(model)                  # or ModelInfo.from_manifest(manifest)
    body = search_body(info, query, history, now_ms, item_fields=doc_of_query_item)

It mirrors the in-process engine (crossrec.query.engine) clause for clause:
- user history per indicator (caps: crossrec.query.history), item correlators, item set and
  `fields` rules become one `term` clause per distinct value with the clause's bias as boost
  (bias > 0), so a document scores Σ boost·idf per matched value on ES 6 and later (a `terms`
  query scores constantly there); bias < 0 makes the values a filter (`terms` in `filter`: a
  document must hold one of them); a rule with bias 0 excludes (`must_not`);
- dates: `dateRange` (exclusive bounds) on its field, else available <= currentDate < expire when
  both names are configured (not with collabFiltering); a date name the engine does not
  configure is read from the keyword field's `.date` sub-field (see the adapter's mappings);
- `must_not` the blacklist: targets of history events named in blacklistEvents, blacklistItems,
  the item set, and the query item unless returnSelf;
- the match-all should clause with boost 0 (popularity backfill), except with collabFiltering;
- sort: _score desc, each ranking in configured order desc (missing last), then id asc — the
  in-process engine's total order, so pages are stable; from/size as asked.
Filters go in the bool `filter` (no score, cacheable), the same as the UR's boost-0 `must`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crossrec.core.config import EngineConfig, parse_engine_config
from crossrec.core.model import Model
from crossrec.core.query import InvalidQuery, Query
from crossrec.query import history as hist

MATCH_ALL = {"constant_score": {"filter": {"match_all": {}}, "boost": 0}}
DATE_SUBFIELD = "date"  # <property>.date: the keyword property parsed as a date, when it is one


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


@dataclass(frozen=True)
class ModelInfo:
    """What a query needs to know about a model version, without its arrays."""

    app: str
    version: str
    config: EngineConfig
    indicators: tuple[str, ...]  # the model's indicator fields; the first is the primary one
    rankings: tuple[str, ...]  # ranking fields in configured order (those the model has)
    dates: tuple[str, ...]  # date fields (the configured date names the model holds)
    aliases: tuple[tuple[str, ...], ...] = field(init=False)
    caps: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        by_name = {i.name: i for i in self.config.indicators}
        aliases = tuple(by_name[n].aliases if n in by_name else (n,) for n in self.indicators)
        caps = tuple(
            by_name[n].max_query_events if n in by_name else self.config.max_query_events
            for n in self.indicators
        )
        object.__setattr__(self, "aliases", aliases)
        object.__setattr__(self, "caps", caps)

    @classmethod
    def of(cls, model: Model) -> ModelInfo:
        ranks = tuple(r.name for r in model.config.rankings if r.name in model.rankings)
        return cls(model.app, model.version, model.config, model.indicator_names, ranks, tuple(model.dates))  # fmt: skip

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ModelInfo:
        config = parse_engine_config(manifest["engine_config"])
        present = {r["name"] for r in manifest.get("rankings", ())}
        ranks = tuple(r.name for r in config.rankings if r.name in present)
        return cls(
            manifest["app"], manifest["version"], config, tuple(manifest["indicators"]), ranks,
            tuple(manifest.get("dates", ())),
        )  # fmt: skip

    @property
    def collab(self) -> bool:
        return self.config.recs_model == "collabFiltering"

    @property
    def events(self) -> set[str]:
        return {a for aliases in self.aliases for a in aliases}

    @property
    def user_defined(self) -> frozenset[str]:
        return frozenset(r.name for r in self.config.rankings if r.type == "userDefined")

    def date_field(self, name: str) -> str:
        """The ES field a date filter on property `name` reads."""
        return name if name in self.dates else f"{name}.{DATE_SUBFIELD}"


# -- history ----------------------------------------------------------------------------------


def allowed_events(info: ModelInfo, query: Query) -> set[str]:
    """Input event names whose history scores this query (eventNames may name indicators)."""
    if query.event_names is None:
        return info.events
    allowed: set[str] = set()
    for name in query.event_names:
        if name in info.indicators:
            allowed.update(info.aliases[info.indicators.index(name)])
        elif name in info.events:
            allowed.add(name)
        else:
            known = ", ".join(sorted({*info.indicators, *info.events}))
            raise InvalidQuery("eventNames", f"{name!r} is not an event of this model: {known}")
    return allowed


def history_event_names(info: ModelInfo, query: Query) -> list[str]:
    """The event names whose history a query reads (scoring, blacklist)."""
    allowed = allowed_events(info, query)
    names = [a for aliases in info.aliases for a in aliases if a in allowed]
    blacklist = info.config.expand_event_names(info.config.blacklist_events)
    return list(dict.fromkeys([*names, *blacklist]))


# -- the body ---------------------------------------------------------------------------------


def term(name: str, value: str, boost: float) -> dict[str, Any]:
    return {"term": {name: {"value": value, "boost": boost}}}


class _Bool:
    def __init__(self) -> None:
        self.should: list[dict[str, Any]] = []
        self.filter: list[dict[str, Any]] = []
        self.must_not: list[dict[str, Any]] = []

    def clause(self, name: str, values: Sequence[str], bias: float) -> None:
        distinct = list(dict.fromkeys(values))
        if bias > 0:
            self.should.extend(term(name, v, bias) for v in distinct)
        elif bias < 0:
            self.filter.append({"terms": {name: distinct}})


def _range(name: str, **bounds: int) -> dict[str, Any]:
    return {"range": {name: {**bounds, "format": "epoch_millis"}}}


def search_body(
    info: ModelInfo,
    query: Query,
    history: Mapping[str, Sequence[str]],
    now_ms: int,
    *,
    item_fields: Mapping[str, Sequence[str]] | None = None,
    times: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any] | None:
    """The search request for one page; None when the answer is empty without asking
    (collabFiltering with nothing to score). `history`: targets per event name, newest first;
    `item_fields`: the query item's document (its indicator fields), None if it has none."""
    config, q = info.config, _Bool()
    streams = hist.streams_of(info.aliases, allowed_events(info, query), history, times)
    used = hist.recent(streams, info.caps, config.max_query_events)
    user_bias = _first(query.user_bias, config.user_bias, 1.0)
    for name, ids in zip(info.indicators, used, strict=True):
        if ids:
            q.clause(name, ids, user_bias)
    if query.item is not None and item_fields:
        item_bias = _first(query.item_bias, config.item_bias, 1.0)
        for name in info.indicators:
            values = item_fields.get(name) or ()
            if values:
                q.clause(name, sorted(set(values)), item_bias)
    if query.item_set:
        q.clause(info.indicators[0], query.item_set, _first(query.item_set_bias, config.item_set_bias, 1.0))  # fmt: skip
    named = {r.name for r in query.fields}
    for rule in (*query.fields, *(r for r in config.fields if r.name not in named)):
        if rule.bias == 0:
            q.must_not.append({"terms": {rule.name: list(dict.fromkeys(rule.values))}})
        else:
            q.clause(rule.name, rule.values, rule.bias)
    q.filter.extend(_date_filters(info, query, now_ms))
    blacklist = _blacklist(info, query, history)
    if blacklist:
        q.must_not.insert(0, {"ids": {"values": blacklist}})
    if not info.collab:
        q.should.append(MATCH_ALL)
    elif not q.should:
        return None
    boolean: dict[str, Any] = {"should": q.should, "minimum_should_match": 1}
    if q.filter:
        boolean["filter"] = q.filter
    if q.must_not:
        boolean["must_not"] = q.must_not
    return {
        "query": {"bool": boolean},
        "sort": sort(info),
        "from": query.from_,
        "size": _first(query.num, config.num),
        "track_total_hits": False,
        "_source": list(info.rankings) if query.with_ranks else False,
    }


def sort(info: ModelInfo) -> list[dict[str, Any]]:
    ranks = [
        {name: {"order": "desc", "missing": "_last", "unmapped_type": "double"}}
        for name in info.rankings
    ]
    return [{"_score": {"order": "desc"}}, *ranks, {"id": {"order": "asc"}}]


def _date_filters(info: ModelInfo, query: Query, now_ms: int) -> list[dict[str, Any]]:
    config, rng = info.config, query.date_range
    if rng is not None and rng.active:
        bounds = {"gt": rng.after, "lt": rng.before}
        return [_range(info.date_field(rng.name), **{k: v for k, v in bounds.items() if v is not None})]  # fmt: skip
    if config.available_date_name and config.expire_date_name and not info.collab:
        at = _first(query.current_date, now_ms)
        return [
            _range(info.date_field(config.available_date_name), lte=at),
            _range(info.date_field(config.expire_date_name), gt=at),
        ]
    return []


def _blacklist(info: ModelInfo, query: Query, history: Mapping[str, Sequence[str]]) -> list[str]:
    names = info.config.expand_event_names(info.config.blacklist_events)
    ids = [x for name in names for x in history.get(name, ())]
    ids += [*query.blacklist_items, *query.item_set]
    if query.item is not None and not _first(query.return_self, info.config.return_self):
        ids.append(query.item)
    return list(dict.fromkeys(ids))


def search_kwargs(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body as keyword arguments of the Python client's `search`."""
    renamed = {"from": "from_", "_source": "source"}
    return {renamed.get(k, k): v for k, v in body.items()}
