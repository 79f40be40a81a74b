"""The UR's engine.json, accepted unchanged, validated and resolved (UR-SPEC §6, §2.2, §3.1).

`parse_engine_config(doc)` turns the PredictionIO layout (`datasource.params`,
`algorithms[0].params`) into a frozen `EngineConfig` with every default filled in and the
per-indicator settings resolved, whichever of `eventNames` / `indicators` was used. Every problem in
the document is collected and reported at once in a `ConfigError`, one line each. The table of keys
and defaults is docs/engine-config.md.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from crossrec.core.durations import DurationError, parse_seconds
from crossrec.core.events import InvalidEvent, parse_time

RANKING_TYPES = ("popular", "trending", "hot", "random", "userDefined")
RANKING_DEFAULT_NAMES = {
    "popular": "popRank",
    "trending": "trendRank",
    "hot": "hotRank",
    "userDefined": "userRank",
    "random": "uniqueRank",
}
RECS_MODELS = ("all", "collabFiltering", "backfill")
DEFAULT_RANKING_DURATION = "3650 days"
DEFAULT_MAX_EVENTS_PER_EVENT_TYPE = 500  # downsampling cap, eventNames mode
DEFAULT_MAX_ITEMS_PER_USER = 500  # downsampling cap, indicators mode (the UR's constant)
DEFAULT_MAX_CORRELATORS = 50
DEFAULT_MAX_QUERY_EVENTS = 100
DEFAULT_NUM = 20
RESERVED_FIELDS = ("id",)

_TOP_KEYS = {
    "id",
    "description",
    "engineFactory",
    "datasource",
    "algorithms",
    "sparkConf",
    "comment",
}
_DATASOURCE_KEYS = {"name", "params", "comment"}
_DATASOURCE_PARAMS = {"name", "appName", "eventNames", "minEventsPerUser", "eventWindow", "comment"}
_EVENT_WINDOW_KEYS = {"duration", "removeDuplicates", "compressProperties", "comment"}
_ALGORITHM_KEYS = {"name", "params", "comment"}
_ALGORITHM_PARAMS = {
    "appName", "indexName", "typeName", "eventNames", "indicators", "recsModel", "blacklistEvents",
    "maxQueryEvents", "maxEventsPerEventType", "maxCorrelatorsPerEventType", "num", "userBias",
    "itemBias", "itemSetBias", "returnSelf", "fields", "rankings", "availableDateName",
    "expireDateName", "dateName", "seed", "numESWriteConnections", "engine", "shards", "comment",
}  # fmt: skip
ENGINES = ("inProcess", "elasticsearch")  # algorithms[0].params.engine: who answers queries
_INDICATOR_KEYS = {
    "name", "aliases", "maxItemsPerUser", "maxCorrelatorsPerItem", "minLLR",
    "maxIndicatorsPerQuery", "comment",
}  # fmt: skip
_RANKING_KEYS = {"name", "type", "eventNames", "duration", "offsetDate", "endDate", "comment"}
_FIELD_KEYS = {"name", "values", "bias"}
_SHARDS_KEYS = {"clusters", "targetSize", "slack", "fanOut", "comment"}
DEFAULT_SHARD_SLACK = 3.0  # crossrec.core.clusters: 3 x the mean size keeps recall (see there)


class ConfigError(ValueError):
    """An engine.json that cannot be used; `problems` holds one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"engine.json has {count} problem{'s' if count != 1 else ''}:"
        return "\n".join([head, *(f"  - {p}" for p in self.problems)])


@dataclass(frozen=True, slots=True)
class Indicator:
    name: str
    aliases: tuple[str, ...]  # input event names that count as this indicator
    max_items_per_user: int  # downsampling cap (per user row and per item column)
    max_correlators_per_item: int  # top-k
    min_llr: float | None
    max_query_events: int  # most recent history events of this indicator used by a query


@dataclass(frozen=True, slots=True)
class Ranking:
    name: str
    type: str
    event_names: tuple[str, ...]
    duration_seconds: int
    end_time: int | None  # offsetDate / endDate in epoch ms; None = "now" at training time


@dataclass(frozen=True, slots=True)
class FieldRule:
    name: str
    values: tuple[str, ...]
    bias: float


@dataclass(frozen=True, slots=True)
class EventWindow:
    duration_seconds: int | None
    remove_duplicates: bool
    compress_properties: bool


@dataclass(frozen=True, slots=True)
class Shards:
    """`algorithms[0].params.shards`: how the sharded tier splits this model's items.
    Neither `clusters` nor `target_size`: the deployment's CROSSREC_SHARDS decides K."""

    clusters: int | None = None  # K
    target_size: int | None = None  # or K = documents / target_size
    slack: float = DEFAULT_SHARD_SLACK  # a cluster holds at most about slack x the mean size
    fan_out: int | None = None  # clusters a router asks per request; None: all


@dataclass(frozen=True)
class EngineConfig:
    app_name: str
    mode: str  # "eventNames" | "indicators"
    indicators: tuple[Indicator, ...]
    rankings: tuple[Ranking, ...]
    blacklist_events: tuple[str, ...]
    min_events_per_user: int | None = None
    event_window: EventWindow | None = None
    recs_model: str = "all"
    max_query_events: int = DEFAULT_MAX_QUERY_EVENTS
    max_events_per_event_type: int = DEFAULT_MAX_EVENTS_PER_EVENT_TYPE
    max_correlators_per_event_type: int = DEFAULT_MAX_CORRELATORS
    num: int = DEFAULT_NUM
    user_bias: float | None = None
    item_bias: float | None = None
    item_set_bias: float | None = None
    return_self: bool = False
    fields: tuple[FieldRule, ...] = ()
    available_date_name: str | None = None
    expire_date_name: str | None = None
    date_name: str | None = None
    seed: int | None = None
    index_name: str | None = None
    type_name: str | None = None
    num_es_write_connections: int | None = None
    shards: Shards | None = None  # None: not configured in engine.json
    warnings: tuple[str, ...] = ()
    source: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def primary(self) -> str:
        return self.indicators[0].name

    @property
    def indicator_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.indicators)

    def indicator(self, name: str) -> Indicator:
        for ind in self.indicators:
            if ind.name == name:
                return ind
        raise KeyError(name)

    def event_to_indicator(self) -> dict[str, str]:
        """Input event name -> indicator name (every alias of every indicator)."""
        return {alias: ind.name for ind in self.indicators for alias in ind.aliases}

    def expand_event_names(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """Event names as configured in rankings/blacklists: an indicator name means its aliases."""
        out: list[str] = []
        for name in names:
            expanded = next((i.aliases for i in self.indicators if i.name == name), (name,))
            out.extend(a for a in expanded if a not in out)
        return tuple(out)

    @property
    def date_names(self) -> tuple[str, ...]:
        names = (self.available_date_name, self.expire_date_name, self.date_name)
        return tuple(dict.fromkeys(n for n in names if n))

    def to_json(self) -> bytes:
        return orjson.dumps(self.source)


def load_engine_config(path: str | Path) -> EngineConfig:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError([f"{path}: not valid JSON: {exc}"]) from None
    return parse_engine_config(doc)


def parse_engine_config(doc: Any) -> EngineConfig:
    """Validate and resolve a decoded engine.json; ConfigError lists every problem found."""
    return _Parser().parse(doc)


_KINDS = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "object": (lambda v: isinstance(v, dict), "a JSON object"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "strings": (
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "a list of strings",
    ),
}


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", str: "a string", int: "an integer", float: "a number"}.get(
        type(value),
        "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else "null",
    )
    text = orjson.dumps(value).decode()
    return f"{text[:40]}{'…' if len(text) > 40 else ''} ({kind})"


class _Parser:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def check_keys(self, obj: dict[str, Any], path: str, allowed: set[str]) -> None:
        for key in obj:
            if key in allowed:
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            close = close or [k for k in allowed if k.lower() == key.lower()]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problem(f"{path}.{key}" if path else key, f"unknown key{hint}")

    def get(
        self, obj: dict[str, Any], key: str, path: str, kind: str, required: bool = False
    ) -> Any:
        where = f"{path}.{key}"
        if key not in obj or obj[key] is None:
            if required:
                self.problem(where, f"is required ({_KINDS[kind][1]})")
            return None
        value = obj[key]
        check, expected = _KINDS[kind]
        if not check(value):
            self.problem(where, f"must be {expected}, got {_describe(value)}")
            return None
        return value

    def positive(self, obj: dict[str, Any], key: str, path: str, minimum: int = 1) -> int | None:
        value = self.get(obj, key, path, "int")
        if value is not None and value < minimum:
            self.problem(f"{path}.{key}", f"must be at least {minimum}, got {value}")
            return None
        return value

    def section(self, obj: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(obj, dict):
            self.problem(path, f"must be a JSON object, got {_describe(obj)}")
            return {}
        self.check_keys(obj, path, allowed)
        return obj

    def date(self, obj: dict[str, Any], key: str, path: str) -> int | None:
        value = self.get(obj, key, path, "string")
        if value is None:
            return None
        try:
            return parse_time(value, key)
        except InvalidEvent:
            self.problem(f"{path}.{key}", f"{value!r} is not an ISO-8601 date-time")
            return None

    def duration(self, obj: dict[str, Any], key: str, path: str, default: str | None) -> int | None:
        value = obj.get(key, default)
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.problem(
                f"{path}.{key}",
                f'{value} is a number; write a duration string such as "{value} seconds"',
            )
            return None
        try:
            seconds = parse_seconds(value)
        except DurationError as exc:
            self.problem(f"{path}.{key}", str(exc))
            return None
        if seconds < 1:
            self.problem(f"{path}.{key}", f"{value!r} must be at least 1 second")
            return None
        return seconds

    # -- the document ------------------------------------------------------------------------

    def parse(self, doc: Any) -> EngineConfig:
        if not isinstance(doc, dict):
            raise ConfigError([f"engine.json must be a JSON object, got {_describe(doc)}"])
        self.check_keys(doc, "", _TOP_KEYS)
        ds = self.section(doc.get("datasource", {}), "datasource", _DATASOURCE_KEYS)
        dsp = self.section(ds.get("params", {}), "datasource.params", _DATASOURCE_PARAMS)
        algo = self.algorithm(doc)
        path = "algorithms[0].params"
        params = algo.get("params")
        ap = self.section(params, path, _ALGORITHM_PARAMS) if params is not None else None
        ap = ap if isinstance(params, dict) else None

        app_name = self.app_name(dsp, ap or {})
        defaults = (
            self.positive(ap or {}, "maxEventsPerEventType", path)
            or DEFAULT_MAX_EVENTS_PER_EVENT_TYPE,
            self.positive(ap or {}, "maxCorrelatorsPerEventType", path) or DEFAULT_MAX_CORRELATORS,
            self.positive(ap or {}, "maxQueryEvents", path),
        )
        indicators, mode = self.indicators(ap, path, *defaults)
        ap = ap or {}
        names = tuple(i.name for i in indicators)
        self.datasource_event_names(dsp, indicators)
        event_window = self.event_window(dsp)
        min_events = self.positive(dsp, "minEventsPerUser", "datasource.params", minimum=0)

        engine = self.get(ap, "engine", path, "string")
        if engine is not None and engine not in ENGINES:
            self.problem(f"{path}.engine", f"{engine!r} must be one of {', '.join(ENGINES)}")
        recs_model = self.get(ap, "recsModel", path, "string") or "all"
        if recs_model not in RECS_MODELS:
            self.problem(
                f"{path}.recsModel", f"{recs_model!r} must be one of {', '.join(RECS_MODELS)}"
            )
        blacklist = self.get(ap, "blacklistEvents", path, "strings")
        rankings = self.rankings(ap, path, names)
        dates = {
            k: self.get(ap, k, path, "string")
            for k in ("availableDateName", "expireDateName", "dateName")
        }
        for key, name in dates.items():
            if name is not None and (name in names or name in RESERVED_FIELDS):
                self.problem(f"{path}.{key}", f"{name!r} is also an indicator name or 'id'")

        max_query_events = defaults[2]
        if max_query_events is None:
            by_indicator = sum(i.max_query_events for i in indicators)
            max_query_events = by_indicator if mode == "indicators" else DEFAULT_MAX_QUERY_EVENTS
        config = dict(
            max_events_per_event_type=defaults[0],
            max_correlators_per_event_type=defaults[1],
            num=self.positive(ap, "num", path) or DEFAULT_NUM,
            user_bias=self.get(ap, "userBias", path, "number"),
            item_bias=self.get(ap, "itemBias", path, "number"),
            item_set_bias=self.get(ap, "itemSetBias", path, "number"),
            return_self=bool(self.get(ap, "returnSelf", path, "bool")),
            fields=self.fields(ap, path),
            seed=self.get(ap, "seed", path, "int"),
            index_name=self.get(ap, "indexName", path, "string"),
            type_name=self.get(ap, "typeName", path, "string"),
            num_es_write_connections=self.positive(ap, "numESWriteConnections", path),
            shards=self.shards(ap, path),
        )
        if self.problems:
            raise ConfigError(self.problems)
        return EngineConfig(
            app_name=app_name or "",
            mode=mode,
            indicators=indicators,
            rankings=rankings,
            blacklist_events=tuple(blacklist) if blacklist is not None else names[:1],
            min_events_per_user=min_events,
            event_window=event_window,
            recs_model=recs_model,
            max_query_events=max_query_events,
            available_date_name=dates["availableDateName"],
            expire_date_name=dates["expireDateName"],
            date_name=dates["dateName"],
            warnings=tuple(self.warnings),
            source=doc,
            **config,
        )

    def algorithm(self, top: dict[str, Any]) -> dict[str, Any]:
        algorithms = top.get("algorithms")
        if algorithms is None:
            self.problem(
                "algorithms", 'is required (a list with one {"name": "ur", "params": {...}})'
            )
            return {}
        if not isinstance(algorithms, list) or not algorithms:
            self.problem(
                "algorithms", f"must be a list with one algorithm, got {_describe(algorithms)}"
            )
            return {}
        if len(algorithms) > 1:
            self.problem("algorithms", f"has {len(algorithms)} entries; the UR takes exactly one")
        algo = self.section(algorithms[0], "algorithms[0]", _ALGORITHM_KEYS)
        name = algo.get("name")
        if name is not None and name != "ur":
            self.problem("algorithms[0].name", f'must be "ur", got {_describe(name)}')
        if isinstance(algorithms[0], dict) and "params" not in algo:
            self.problem("algorithms[0].params", "is required")
        return algo

    def app_name(self, dsp: dict[str, Any], ap: dict[str, Any]) -> str | None:
        ds_name = self.get(dsp, "appName", "datasource.params", "string")
        ap_name = self.get(ap, "appName", "algorithms[0].params", "string")
        if ds_name is None and ap_name is None:
            if "appName" not in dsp and "appName" not in ap:
                self.problem("datasource.params.appName", "is required (a string)")
            return None
        if ds_name is not None and ap_name is not None and ds_name != ap_name:
            self.problem(
                "algorithms[0].params.appName",
                f"{ap_name!r} differs from datasource.params.appName {ds_name!r}",
            )
        return ds_name or ap_name

    def indicators(
        self, ap: dict[str, Any] | None, path: str, cap: int, top_k: int, query: int | None
    ) -> tuple[tuple[Indicator, ...], str]:
        if ap is None:  # no params at all: already reported
            return (), "eventNames"
        has_names, has_indicators = "eventNames" in ap, "indicators" in ap
        if has_names == has_indicators:
            what = (
                "give eventNames or indicators, not both"
                if has_names
                else ("needs eventNames or indicators (the first one names the primary event)")
            )
            self.problem(path, what)
            return (), "indicators" if has_indicators else "eventNames"
        if has_names:
            names = self.get(ap, "eventNames", path, "strings")
            if names is not None and not names:
                self.problem(f"{path}.eventNames", "must name at least the primary event")
            query = query or DEFAULT_MAX_QUERY_EVENTS
            out = tuple(Indicator(n, (n,), cap, top_k, None, query) for n in names or ())
            self.check_names(out, f"{path}.eventNames")
            return out, "eventNames"
        raw = self.get(ap, "indicators", path, "list")
        if raw is not None and not raw:
            self.problem(f"{path}.indicators", "must list at least the primary indicator")
        found = (
            self.indicator(entry, f"{path}.indicators[{i}]") for i, entry in enumerate(raw or ())
        )
        out = tuple(ind for ind in found if ind is not None)
        self.check_names(out, f"{path}.indicators")
        return out, "indicators"

    def indicator(self, entry: Any, path: str) -> Indicator | None:
        obj = self.section(entry, path, _INDICATOR_KEYS)
        if not obj:
            if isinstance(entry, dict):
                self.problem(f"{path}.name", "is required (a string)")
            return None
        name = self.get(obj, "name", path, "string", required=True)
        aliases = self.get(obj, "aliases", path, "strings")
        if aliases is not None and not aliases:
            self.problem(f"{path}.aliases", "must not be empty (leave it out to mean [name])")
        cap = self.positive(obj, "maxItemsPerUser", path)
        top_k = self.positive(obj, "maxCorrelatorsPerItem", path)
        min_llr = self.get(obj, "minLLR", path, "number")
        per_query = self.positive(obj, "maxIndicatorsPerQuery", path)
        if name == "":
            self.problem(f"{path}.name", "must not be empty")
        if not name:
            return None
        return Indicator(
            name=name,
            aliases=tuple(dict.fromkeys(aliases)) if aliases else (name,),
            max_items_per_user=cap or DEFAULT_MAX_ITEMS_PER_USER,
            max_correlators_per_item=top_k or DEFAULT_MAX_CORRELATORS,
            min_llr=float(min_llr) if min_llr is not None else None,
            max_query_events=per_query or cap or DEFAULT_MAX_QUERY_EVENTS,
        )

    def check_names(self, indicators: tuple[Indicator, ...], path: str) -> None:
        names = [i.name for i in indicators]
        for name in dict.fromkeys(names):
            if names.count(name) > 1:
                self.problem(path, f"{name!r} is listed twice")
            if name in RESERVED_FIELDS:
                self.problem(path, f"{name!r} is reserved for the item id; choose another name")
        owners: dict[str, str] = {}
        for ind in indicators:
            for alias in ind.aliases:
                owner = owners.setdefault(alias, ind.name)
                if owner != ind.name:
                    self.problem(
                        path, f"event name {alias!r} maps to both {owner!r} and {ind.name!r}"
                    )

    def datasource_event_names(
        self, dsp: dict[str, Any], indicators: tuple[Indicator, ...]
    ) -> None:
        names = self.get(dsp, "eventNames", "datasource.params", "strings")
        if names is None or not indicators:
            return
        model = [i.name for i in indicators]
        inputs = [a for i in indicators for a in i.aliases]
        if names != model and names != inputs:
            self.problem(
                "datasource.params.eventNames",
                f"{names} must be the algorithm's event names in the same order: {model}",
            )

    def event_window(self, dsp: dict[str, Any]) -> EventWindow | None:
        path = "datasource.params.eventWindow"
        raw = self.get(dsp, "eventWindow", "datasource.params", "object")
        if raw is None:
            return None
        obj = self.section(raw, path, _EVENT_WINDOW_KEYS)
        return EventWindow(
            duration_seconds=self.duration(obj, "duration", path, None),
            remove_duplicates=bool(self.get(obj, "removeDuplicates", path, "bool")),
            compress_properties=bool(self.get(obj, "compressProperties", path, "bool")),
        )

    def rankings(
        self, ap: dict[str, Any], path: str, names: tuple[str, ...]
    ) -> tuple[Ranking, ...]:
        raw = self.get(ap, "rankings", path, "list")
        if raw is None:
            raw = [{"type": "popular"}]
        out: dict[str, Ranking] = {}
        for i, entry in enumerate(raw):
            where = f"{path}.rankings[{i}]"
            obj = self.section(entry, where, _RANKING_KEYS)
            if not isinstance(entry, dict):
                continue
            kind = self.get(obj, "type", where, "string") or "popular"
            if kind not in RANKING_TYPES:
                self.problem(f"{where}.type", f"{kind!r} must be one of {', '.join(RANKING_TYPES)}")
            name = self.get(obj, "name", where, "string") or RANKING_DEFAULT_NAMES.get(
                kind, "unknownRank"
            )
            if name in names or name in RESERVED_FIELDS:
                self.problem(f"{where}.name", f"{name!r} is also an indicator name or 'id'")
            event_names = self.get(obj, "eventNames", where, "strings")
            if (
                event_names is not None
                and not event_names
                and kind not in ("random", "userDefined")
            ):
                self.problem(f"{where}.eventNames", "must name at least one event")
            seconds = self.duration(obj, "duration", where, DEFAULT_RANKING_DURATION)
            offset, end = self.date(obj, "offsetDate", where), self.date(obj, "endDate", where)
            if offset is not None and end is not None and offset != end:
                self.problem(
                    f"{where}.endDate", "differs from offsetDate; endDate is an alias of offsetDate"
                )
            if name in out:
                self.warnings.append(
                    f"{where}: a ranking named {name!r} came earlier; this one is ignored"
                )
                continue
            out[name] = Ranking(
                name=name,
                type=kind,
                event_names=tuple(event_names) if event_names else names[:1],
                duration_seconds=seconds or 0,
                end_time=offset if offset is not None else end,
            )
        return tuple(out.values())

    def shards(self, ap: dict[str, Any], path: str) -> Shards | None:
        raw = self.get(ap, "shards", path, "object")
        if raw is None:
            return None
        where = f"{path}.shards"
        obj = self.section(raw, where, _SHARDS_KEYS)
        clusters = self.positive(obj, "clusters", where)
        target = self.positive(obj, "targetSize", where)
        if clusters is not None and target is not None:
            self.problem(where, "give clusters or targetSize, not both")
        slack = self.get(obj, "slack", where, "number")
        if slack is not None and slack < 1:
            self.problem(f"{where}.slack", f"must be at least 1 (x the mean size), got {slack}")
            slack = None
        fan_out = self.positive(obj, "fanOut", where)
        if clusters is not None and fan_out is not None and fan_out > clusters:
            self.problem(f"{where}.fanOut", f"{fan_out} is more than the {clusters} clusters")
        return Shards(
            clusters=clusters,
            target_size=target,
            slack=float(slack) if slack is not None else DEFAULT_SHARD_SLACK,
            fan_out=fan_out,
        )

    def fields(self, ap: dict[str, Any], path: str) -> tuple[FieldRule, ...]:
        raw = self.get(ap, "fields", path, "list")
        out = []
        for i, entry in enumerate(raw or ()):
            where = f"{path}.fields[{i}]"
            obj = self.section(entry, where, _FIELD_KEYS)
            if not isinstance(entry, dict):
                continue
            name = self.get(obj, "name", where, "string", required=True)
            values = self.get(obj, "values", where, "strings", required=True)
            bias = self.get(obj, "bias", where, "number", required=True)
            if name is not None and values is not None and bias is not None:
                out.append(FieldRule(name, tuple(values), float(bias)))
        return tuple(out)
