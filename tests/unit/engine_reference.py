"""A brute-force reference of the UR query, written straight from UR-SPEC §5.3/§5.6/§8a.2 and
crossrec's decisions, sharing no code with crossrec.query: every document is visited, every
clause evaluated with plain Python sets, and scores summed with math.fsum.

Also a builder of small Models from plain dicts, for the engine tests.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from crossrec.core.config import parse_engine_config
from crossrec.core.idmap import IdMap
from crossrec.core.model import Correlators, Model


def config(params: dict[str, Any]):
    return parse_engine_config(
        {
            "datasource": {"params": {"appName": "t"}},
            "algorithms": [{"name": "ur", "params": params}],
        }
    )


def iso_ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def number(value: Any) -> float | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def build_model(
    cfg,
    correlators: dict[str, dict[str, list[str]]],
    properties: dict[str, dict | None],
    ranks: dict[str, dict[str, float]],
    items: list[str],
) -> Model:
    """A Model as training would write it: documents = items + items with properties."""
    doc_ids = list(dict.fromkeys([*items, *(i for i, p in properties.items() if p)]))
    documents, _ = IdMap.build(doc_ids)
    ordered = list(documents)
    corrs = []
    for ind in cfg.indicators:
        rows = correlators.get(ind.name, {})
        vocab = sorted({x for row in rows.values() for x in row})
        vmap, _ = IdMap.build(vocab)
        indptr, indices = [0], []
        for item in ordered:
            row = rows.get(item, [])
            indices += [vmap.index(x) for x in row]
            indptr.append(len(indices))
        llr = np.linspace(10, 1, max(len(indices), 1))[: len(indices)]
        corrs.append(
            Correlators(
                ind.name,
                vmap,
                np.asarray(indptr, dtype=np.int64),
                np.asarray(indices, dtype=np.int32),
                llr.astype(np.float32),
            )
        )
    collab = cfg.recs_model == "collabFiltering"
    props = tuple(None if collab else properties.get(item) for item in ordered)
    rankings = {}
    for r in cfg.rankings:
        if collab:
            continue
        if r.type == "userDefined":
            values = [number((p or {}).get(r.name)) if p and r.name in p else None for p in props]
        else:
            values = [ranks.get(r.name, {}).get(item) for item in ordered]
        rankings[r.name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    dates = {}
    if any(props):
        for name in cfg.date_names:
            values = [iso_ms((p or {}).get(name)) for p in props]
            dates[name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return Model("t", "v1", cfg, documents, tuple(corrs), props, rankings, dates)


def keyword_set(value: Any) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, bool):
        return {"true" if value else "false"}
    if isinstance(value, int | float):
        return {str(value)}
    if isinstance(value, list):
        return set().union(*(keyword_set(v) for v in value)) if value else set()
    return set()


class ReferenceError_(Exception):
    """The reference's InvalidQuery: (field, message)."""


class Reference:
    def __init__(self, model: Model) -> None:
        self.cfg = model.config
        self.collab = self.cfg.recs_model == "collabFiltering"
        self.indicators = [c.name for c in model.correlators]
        self.rank_names = [r.name for r in self.cfg.rankings if r.name in model.rankings]
        self.user_defined = {r.name for r in self.cfg.rankings if r.type == "userDefined"}
        self.docs: dict[str, dict[str, Any]] = {}
        for d in range(len(model)):
            item = model.documents[d]
            self.docs[item] = {
                "corr": {c.name: c.ids(d) for c in model.correlators},
                "props": model.properties[d],
                "ranks": {
                    n: float(v[d]) for n, v in model.rankings.items() if not math.isnan(v[d])
                },
            }

        self._values: dict[tuple[str, str], set[str]] = {}
        self._idf: dict[tuple[str, str], float] = {}

    # -- real-time properties
    def update(self, item: str, props: dict | None) -> None:
        if self.collab:
            return
        self._values.clear()
        self._idf.clear()
        if item not in self.docs:
            if not props:
                return
            self.docs[item] = {"corr": {}, "props": None, "ranks": {}}
        doc = self.docs[item]
        doc["props"] = dict(props) if props else None
        for name in self.rank_names:
            if name in self.user_defined:
                value = number(props.get(name)) if props and name in props else None
                if value is None:
                    doc["ranks"].pop(name, None)
                else:
                    doc["ranks"][name] = value

    # -- fields
    def values(self, item: str, field: str) -> set[str]:
        key = (item, field)
        if key not in self._values:
            self._values[key] = self._field_values(item, field)
        return self._values[key]

    def _field_values(self, item: str, field: str) -> set[str]:
        doc = self.docs[item]
        if field == "id":
            return {item}
        if field in self.indicators:
            return set(doc["corr"].get(field, []))
        props = doc["props"] or {}
        return keyword_set(props[field]) if field in props else set()

    def idf(self, field: str, value: str) -> float:
        if (field, value) not in self._idf:
            self._idf[field, value] = self._compute_idf(field, value)
        return self._idf[field, value]

    def _compute_idf(self, field: str, value: str) -> float:
        having = [self.values(i, field) for i in self.docs]
        n_field = sum(1 for v in having if v)
        n = sum(1 for v in having if value in v)
        return math.log(1 + (n_field - n + 0.5) / (n + 0.5))

    def date(self, item: str, name: str) -> int | None:
        return iso_ms((self.docs[item]["props"] or {}).get(name))

    # -- the query
    def aliases(self, name: str) -> list[str]:
        for ind in self.cfg.indicators:
            if ind.name == name:
                return list(ind.aliases)
        return [name]

    def history(self, q, history: dict[str, list[str]]) -> list[set[str]]:
        every = {a for n in self.indicators for a in self.aliases(n)}
        if q.event_names is None:
            allowed = every
        else:
            allowed = set()
            for name in q.event_names:
                if name in self.indicators:
                    allowed |= set(self.aliases(name))
                elif name in every:
                    allowed.add(name)
                else:
                    raise ReferenceError_("eventNames")
        flat = []
        for name in self.indicators:
            ind = self.cfg.indicator(name)
            events = [x for a in ind.aliases if a in allowed for x in history.get(a, [])]
            flat.append(events[: ind.max_query_events])
        taken: list[list[str]] = [[] for _ in flat]
        budget, rank = self.cfg.max_query_events, 0
        while budget > 0 and any(rank < len(f) for f in flat):
            for k, events in enumerate(flat):
                if rank < len(events) and budget > 0:
                    taken[k].append(events[rank])
                    budget -= 1
            rank += 1
        return [set(t) for t in taken]

    def recommend(self, q, history: dict[str, list[str]], now: int):
        cfg = self.cfg
        should, must, must_not = [], [], []

        def route(field, values, bias):
            if bias > 0:
                should.append((field, set(values), bias))
            elif bias < 0:
                must.append((field, set(values)))

        first = lambda *v: next(x for x in v if x is not None)  # noqa: E731
        for name, h in zip(self.indicators, self.history(q, history), strict=True):
            if h:
                route(name, h, first(q.user_bias, cfg.user_bias, 1.0))
        if q.item is not None and q.item in self.docs:
            for name in self.indicators:
                values = self.docs[q.item]["corr"].get(name, [])
                if values:
                    route(name, values, first(q.item_bias, cfg.item_bias, 1.0))
        if q.item_set:
            route(self.indicators[0], q.item_set, first(q.item_set_bias, cfg.item_set_bias, 1.0))
        rules = list(q.fields) + [r for r in cfg.fields if r.name not in {x.name for x in q.fields}]
        for rule in rules:
            if rule.bias > 0:
                should.append((rule.name, set(rule.values), rule.bias))
            elif rule.bias < 0:
                must.append((rule.name, set(rule.values)))
            else:
                must_not.append((rule.name, set(rule.values)))
        excluded = set(q.blacklist_items) | set(q.item_set)
        for name in cfg.blacklist_events:
            for alias in self.aliases(name):
                excluded |= set(history.get(alias, []))
        if q.item is not None and not first(q.return_self, cfg.return_self):
            excluded.add(q.item)

        def passes(item):
            if item in excluded:
                return False
            if any(not (self.values(item, f) & v) for f, v in must):
                return False
            if any(self.values(item, f) & v for f, v in must_not):
                return False
            rng = q.date_range
            if rng is not None and (rng.after is not None or rng.before is not None):
                t = self.date(item, rng.name)
                return (
                    t is not None
                    and (rng.after is None or t > rng.after)
                    and (rng.before is None or t < rng.before)
                )
            if cfg.available_date_name and cfg.expire_date_name and not self.collab:
                at = first(q.current_date, now)
                a, e = (
                    self.date(item, cfg.available_date_name),
                    self.date(item, cfg.expire_date_name),
                )
                return a is not None and e is not None and a <= at < e
            return True

        scored = []
        for item in self.docs:
            if not passes(item):
                continue
            terms = [
                b * self.idf(f, v)
                for f, values, b in should
                for v in values
                if v in self.values(item, f)
            ]
            score = round(math.fsum(terms), 9)
            if self.collab and score <= 0:
                continue
            ranks = self.docs[item]["ranks"]
            key = (-score, *(-ranks[n] if n in ranks else math.inf for n in self.rank_names), item)
            scored.append((key, item, score))
        scored.sort()
        start = q.from_
        page = scored[start : start + first(q.num, cfg.num)]
        return (
            [(item, score) for _, item, score in page],
            [dict(self.docs[item]["ranks"]) for _, item, _ in page],
        )
