"""The sharded serving tier's pure core (DESIGN §3 "router and workers"): workers that score one
cluster of a model version, and a router that picks clusters, fans out, merges and falls back.

    stats   = CatalogueStats.from_model(model)                 # catalogue-wide idf, N, property counts
    worker  = ClusterEngine(part_model(model, clusters.members(c)), stats)
    router  = Router(model, clusters)
    context = router.context(query, history, times)            # sparse vector over correlator values
    chosen  = router.route(context, fan_out)                   # cluster ids, best first
    sub     = router.sub_query(query)                          # what every chosen worker runs
    answer  = worker.candidates(sub, history, now_ms, times)   # a Result: the cluster's first from+num
    merged  = router.merge(query, answers, routed=chosen)      # or router.fallback(query, history)

Exactness. A worker is the in-process Engine over its cluster's documents only, with the
catalogue-wide statistics put back (idf per indicator value, N for `id` rules, N_f and n_fv for
property rules), so every document's score is bit-identical to the whole engine's: its postings
are added in the same order. A worker answers the page's first from+num
documents of its cluster in the engine's total order (score desc, rankings in configured order
desc with missing last, id asc) with their ranking values; the router sorts the union by the same
keys and cuts [from, from+num). The global first from+num documents are each among their own
cluster's first from+num, so with every cluster answering the page equals Engine.recommend's.
The only query part that needs another cluster's data is an item-based query (the item's own
correlators): `sub_query` replaces it by equivalent rules on the indicator fields, in the
engine's clause order (item, item set, the query's rules, the engine's rules not named by it).

Hooks this wrapper relies on (private Engine API; a public form would be better): `_rule` (rule
postings, weighted here with catalogue-wide statistics), `_field_of`, IndicatorIndex.idf (replaced).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from crossrec.core.clusters import Clusters
from crossrec.core.config import EngineConfig, FieldRule
from crossrec.core.idmap import IdMap
from crossrec.core.model import Correlators, Model
from crossrec.core.query import Query, Result
from crossrec.query import history as hist
from crossrec.query.engine import Engine
from crossrec.query.index import EMPTY, concat_ranges, idf, indexed
from crossrec.query.scoring import Plan

if TYPE_CHECKING:
    from crossrec.trainer.data import EventColumns

DAY_MS = 86_400_000
SALT = 0x9E3779B97F4A7C15  # spreads one indicator's hashes away from the next one's


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _hashes(ids: Sequence[str]) -> np.ndarray:
    return np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids)).view(np.uint64)


def _round_robin(lengths: list[int], budget: int) -> list[int]:
    """How many of each list: the same depth in every list, the smallest reaching `budget`."""
    if sum(lengths) <= budget:
        return lengths
    depth = budget // len(lengths)  # a lower bound: every list gives at most `depth`
    while sum(min(n, depth) for n in lengths) < budget:
        depth += 1
    return [min(n, depth) for n in lengths]


# -- catalogue-wide statistics and workers ----------------------------------------------------


@dataclass
class CatalogueStats:
    """What a cluster's scores need from the whole catalogue. Property counts change in real
    time: apply every item's (old, new) properties with `update`, and `n_docs += 1` for each
    document an engine adds (an item unknown to the model that gets properties)."""

    n_docs: int
    idf: tuple[np.ndarray, ...]  # per indicator, per vocabulary value
    n_field: dict[str, int]  # property field -> documents with a value
    counts: dict[str, dict[str, int]]  # property field -> keyword value -> documents
    skip: frozenset[str]  # fields that are not property fields (indicators, id)

    @classmethod
    def from_model(cls, model: Model) -> CatalogueStats:
        idfs = []
        for c in model.correlators:
            per_doc = np.diff(c.indptr)
            counts = np.bincount(c.indices, minlength=len(c.vocabulary))
            idfs.append(idf(int(np.count_nonzero(per_doc)), counts))
        stats = cls(len(model), tuple(idfs), {}, {}, frozenset(model.indicator_names) | {"id"})
        if model.config.recs_model != "collabFiltering":
            for props in model.properties:
                stats.update(None, props)
        return stats

    def update(self, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        """One document's properties changed from `old` to `new` (as PropertyIndex.update)."""
        before, after = indexed(old, self.skip), indexed(new, self.skip)
        for name in before.keys() | after.keys():
            was, now = set(before.get(name, ())), set(after.get(name, ()))
            self.n_field[name] = self.n_field.get(name, 0) + bool(now) - bool(was)
            values = self.counts.setdefault(name, {})
            for term in was - now:
                values[term] -= 1
            for term in now - was:
                values[term] = values.get(term, 0) + 1


def part_model(model: Model, docs: np.ndarray) -> Model:
    """The model restricted to some documents (one cluster): same config, vocabularies, version."""
    docs = np.asarray(docs, dtype=np.int64)
    documents, position = IdMap.build(model.documents.to_arrow().take(pa.array(docs)))
    order = docs[np.argsort(position)]  # the global document of each local one
    correlators = []
    for c in model.correlators:
        starts, ends = c.indptr[order], c.indptr[order + 1]
        indptr = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=indptr[1:])
        indices = concat_ranges(c.indices, starts, ends).copy()
        llr = concat_ranges(c.llr, starts, ends).copy()
        correlators.append(Correlators(c.name, c.vocabulary, indptr, indices, llr))
    return Model(
        model.app,
        model.version,
        model.config,
        documents,
        tuple(correlators),
        tuple(model.properties[d] for d in order.tolist()),
        {name: values[order] for name, values in model.rankings.items()},
        {name: values[order] for name, values in model.dates.items()},
        {**model.info, "documents_of_catalogue": len(model)},
    )


class ClusterEngine(Engine):
    """The engine over one cluster's documents, scoring with catalogue-wide statistics."""

    def __init__(self, model: Model, stats: CatalogueStats) -> None:
        super().__init__(model)
        self.stats = stats
        for ind, values in zip(self.indicators, stats.idf, strict=True):
            ind.idf = values

    def candidates(
        self,
        query: Query,
        history: Mapping[str, Sequence[str]],
        now_ms: int,
        *,
        times: Mapping[str, Sequence[int]] | None = None,
    ) -> Result:
        """This cluster's first from+num documents, with their ranking values (for the merge)."""
        stop = query.from_ + _first(query.num, self.config.num)
        page = replace(query, from_=0, num=stop, with_ranks=True)
        return self.recommend(page, history, now_ms, times=times)

    def _rule(self, plan: Plan, rule: FieldRule) -> None:
        if rule.bias <= 0 or rule.name in self._field_of:
            super()._rule(plan, rule)  # no weights (filter, exclusion), or idf replaced already
        elif rule.name == "id":
            scratch = Plan()
            super()._rule(scratch, rule)
            docs = scratch.postings[0][0] if scratch.postings else EMPTY
            plan.field((docs, np.full(len(docs), idf(self.stats.n_docs, 1))), rule.bias)
        else:
            plan.field(self._postings(rule.name, rule.values), rule.bias)

    def _postings(self, name: str, values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """As PropertyIndex.postings, with the catalogue's N_f and n_fv."""
        field = self.properties.fields.get(name)
        arrays, weights = [], []
        n_field, counts = self.stats.n_field.get(name, 0), self.stats.counts.get(name, {})
        for value in dict.fromkeys(values) if field else ():
            docs = field.get(value)
            if docs is not None:
                arrays.append(docs)
                weights.append(np.full(len(docs), idf(n_field, counts.get(value, 0))))
        if not arrays:
            return EMPTY, np.zeros(0)
        return np.concatenate(arrays), np.concatenate(weights)


def owner_of(model: Model, clusters: Clusters, item: str) -> int:
    """The cluster of an item: its document's, or by hash for items unknown to the model."""
    doc = model.documents.index(item)
    return int(clusters.labels[doc]) if doc >= 0 else zlib.crc32(item.encode()) % clusters.k


class ClusterWorker:
    """What a worker process holds: one cluster's engine, plus every item's current properties
    (the model's, then real-time changes) so that the catalogue-wide statistics follow changes
    to items of other clusters too. Applying the same changes to every cluster's worker gives
    the statistics and documents LocalShards.update_many gives."""

    def __init__(self, model: Model, clusters: Clusters, cluster: int) -> None:
        if clusters.version != model.version or not 0 <= cluster < clusters.k:
            raise ValueError(f"no cluster {cluster} of {model.version} ({clusters.k} clusters)")
        self.model, self.clusters, self.cluster = model, clusters, cluster
        self.stats = CatalogueStats.from_model(model)
        self.engine = ClusterEngine(part_model(model, clusters.members(cluster)), self.stats)
        self.changed: dict[str, dict[str, Any] | None] = {}  # item -> properties since training

    def properties_of(self, item: str) -> tuple[bool, dict[str, Any] | None]:
        """(is it a document of the catalogue, its properties)."""
        if item in self.changed:
            return True, self.changed[item]
        doc = self.model.documents.index(item)
        return (True, self.model.properties[doc]) if doc >= 0 else (False, None)

    def update_many(self, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Items' current properties (the whole catalogue's changes, not only this cluster's)."""
        if self.model.config.recs_model == "collabFiltering":
            return
        mine: dict[str, dict[str, Any] | None] = {}
        for item, props in changes.items():
            new = dict(props) if props else None
            known, old = self.properties_of(item)
            if not known and new is None:
                continue  # as Engine.update_many: no document for an item without properties
            self.stats.n_docs += not known
            self.stats.update(old, new)
            self.changed[item] = new
            if owner_of(self.model, self.clusters, item) == self.cluster:
                mine[item] = new
        self.engine.update_many(mine)


# -- routing ----------------------------------------------------------------------------------


class Context(NamedTuple):
    """A sparse vector over correlator values (column = offsets[k] + value), distinct columns."""

    columns: np.ndarray  # int64
    weights: np.ndarray  # float64


def route(context: Context, signatures_t: np.ndarray, fan_out: int | None) -> np.ndarray:
    """Cluster ids by cosine(context, signature) descending (ties: lower id first), the first
    `fan_out` of them (None: all). `signatures_t`: columns x K, unit-norm signatures as columns.
    An empty context says nothing about clusters: every cluster, in id order."""
    k = signatures_t.shape[1]
    if len(context.columns) == 0:
        return np.arange(k)
    sims = context.weights @ signatures_t[context.columns]
    if fan_out is None or fan_out >= k or k <= 1024:  # a stable sort keeps ties in id order
        return np.argsort(-sims, kind="stable")[:fan_out]
    kth = -np.partition(-sims, fan_out - 1)[fan_out - 1]
    chosen = np.flatnonzero(sims >= kth)  # ties at the k-th best: the lower ids
    return chosen[np.lexsort((chosen, -sims[chosen]))][:fan_out]


def route_many(
    contexts: sp.csr_matrix, signatures_t: np.ndarray, fan_out: int | None
) -> list[np.ndarray]:
    """`route` for every row of a batch of contexts."""
    k = signatures_t.shape[1]
    order = np.argsort(-(contexts @ signatures_t), axis=1, kind="stable")[:, :fan_out]
    empty = np.diff(contexts.indptr) == 0
    return [np.arange(k) if e else o for o, e in zip(order, empty.tolist(), strict=True)]


@dataclass(frozen=True)
class Merged:
    result: Result
    routed: tuple[int, ...]  # clusters asked
    answered: tuple[int, ...]  # clusters whose answer is in the result
    partial: bool  # some asked cluster did not answer
    fallback: bool  # none answered: the default recommendations


class Router:
    """Everything a router process holds: the model's ids and correlators (for contexts and
    item queries), the clusters' signatures, the default recommendations."""

    def __init__(self, model: Model, clusters: Clusters, stats: CatalogueStats | None = None):
        if clusters.version != model.version or len(clusters.labels) != len(model):
            raise ValueError(f"clusters of {clusters.version} do not fit model {model.version}")
        self.model, self.clusters, self.config = model, clusters, model.config
        stats = stats or CatalogueStats.from_model(model)
        self.offsets = clusters.offsets
        self.weights = np.concatenate([*stats.idf, np.zeros(0)])
        self.signatures_t = np.ascontiguousarray(clusters.signatures.T.toarray(), np.float64)
        # (indicator, id) -> column through Python's str hash (a miss only blurs a route)
        self._salt = np.arange(len(model.correlators), dtype=np.uint64) * np.uint64(SALT)
        keys = [
            _hashes(c.vocabulary.to_arrow().to_pylist()) + self._salt[k]
            for k, c in enumerate(model.correlators)
        ]
        flat = np.concatenate([*keys, np.zeros(0, np.uint64)])
        order = np.argsort(flat, kind="stable")
        self._keys, self._columns = flat[order], order.astype(np.int64)
        by_name = {i.name: i for i in self.config.indicators}
        names = model.indicator_names
        self.aliases = [by_name[n].aliases if n in by_name else (n,) for n in names]
        self.caps = [
            by_name[n].max_query_events if n in by_name else self.config.max_query_events
            for n in names
        ]
        self.events = {a for aliases in self.aliases for a in aliases}
        self.rank_names = [r.name for r in self.config.rankings if r.name in model.rankings]
        self.blacklist_events = self.config.expand_event_names(self.config.blacklist_events)

    @property
    def k(self) -> int:
        return self.clusters.k

    def owner(self, item: str) -> int:
        return owner_of(self.model, self.clusters, item)

    def allowed_events(self, query: Query) -> set[str]:
        """As Engine: the history event names a query may use; unknown names are invalid."""
        return hist.allowed_events(self.model.indicator_names, self.aliases, query.event_names)

    def history_event_names(self, query: Query) -> list[str]:
        """As Engine: the event names whose history to read for a query (context, blacklist)."""
        return hist.names_to_read(self.aliases, self.allowed_events(query), self.blacklist_events)

    def context(
        self,
        query: Query,
        history: Mapping[str, Sequence[str]],
        times: Mapping[str, Sequence[int]] | None = None,
    ) -> Context:
        """The query's correlator values, weighted idf x |bias|: the user's newest history per
        indicator (its cap, then maxQueryEvents shared round-robin: close to the engine's
        choice, which a route needs no more exactly), the query item's correlators, the item
        set. `times` is accepted for symmetry with the engine and not used."""
        lookups, known = self._parts(query, history)
        columns = [cols for cols, _ in known]
        weights = [self.weights[cols] * scale for cols, scale in known]
        for ids, counts, scale in lookups:
            cols = self._lookup(ids, counts)
            columns.append(cols)
            weights.append(self.weights[cols] * scale)
        if len(columns) == 1:
            return Context(columns[0], weights[0])
        if not columns:
            return Context(np.zeros(0, dtype=np.int64), np.zeros(0))
        cols, where = np.unique(np.concatenate(columns), return_inverse=True)
        return Context(cols, np.bincount(where, np.concatenate(weights), len(cols)))

    def contexts(
        self, requests: Sequence[tuple[Query, Mapping[str, Sequence[str]]]]
    ) -> sp.csr_matrix:
        """The contexts of many requests at once, as the rows of a CSR matrix (one hash lookup
        and one product for the batch: what a router does with the requests of one poll)."""
        ids: list[str] = []
        counts: list[int] = []  # per (part, indicator)
        indicator: list[int] = []  # per (part, indicator)
        sizes, owners, scales = [], [], []  # per part
        rows, cols, vals = [], [], []
        for r, (query, history) in enumerate(requests):
            lookups, known = self._parts(query, history)
            for part_ids, part_counts, scale in lookups:
                ids += part_ids
                counts += part_counts
                indicator += range(len(part_counts))
                sizes.append(len(part_ids))
                owners.append(r)
                scales.append(scale)
            for found, scale in known:
                rows.append(np.full(len(found), r))
                cols.append(found)
                vals.append(self.weights[found] * scale)
        if ids:
            salt = self._salt[np.repeat(np.asarray(indicator, dtype=np.int64), counts)]
            hit, found = self._find(_hashes(ids) + salt)
            part = np.repeat(np.arange(len(sizes)), sizes)[hit]
            rows.append(np.asarray(owners)[part])
            cols.append(found)
            vals.append(self.weights[found] * np.asarray(scales)[part])
        shape = (len(requests), len(self.weights))
        if not rows:
            return sp.csr_matrix(shape)
        coo = (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols)))
        return sp.csr_matrix(coo, shape=shape)  # duplicates (two clauses) add up

    def _parts(
        self, query: Query, history: Mapping[str, Sequence[str]]
    ) -> tuple[list[tuple[list[str], list[int], float]], list[tuple[np.ndarray, float]]]:
        """A context's makings: (ids, how many per indicator, |bias|) to look up, and (columns,
        |bias|) known already."""
        config = self.config
        lookups, known = [], []
        user_bias = _first(query.user_bias, config.user_bias, 1.0)
        if user_bias and history:
            allowed = self.allowed_events(query)
            lists = []
            for names, cap in zip(self.aliases, self.caps, strict=True):
                parts = [history.get(n, ())[:cap] for n in names if n in allowed]
                lists.append(parts[0] if len(parts) == 1 else [*chain(*parts)][:cap])
            take = _round_robin([len(ids) for ids in lists], config.max_query_events)
            distinct = [dict.fromkeys(ids[:t]) for ids, t in zip(lists, take, strict=True)]
            flat = [*chain(*distinct)]
            lookups.append((flat, [len(d) for d in distinct], abs(user_bias)))
        if query.item is not None:
            doc = self.model.documents.index(query.item)
            item_bias = _first(query.item_bias, config.item_bias, 1.0)
            if doc >= 0 and item_bias:
                for k, c in enumerate(self.model.correlators):
                    columns = c.row(doc)[0].astype(np.int64) + self.offsets[k]
                    known.append((columns, abs(item_bias)))
        set_bias = _first(query.item_set_bias, config.item_set_bias, 1.0)
        if query.item_set and set_bias and self.model.correlators:
            members = list(dict.fromkeys(query.item_set))
            lookups.append((members, [len(members)], abs(set_bias)))
        return lookups, known

    def _lookup(self, ids: list[str], per_indicator: list[int]) -> np.ndarray:
        """Columns of the known ids; `per_indicator`: how many of `ids` each indicator has."""
        if not ids:
            return np.zeros(0, dtype=np.int64)
        salt = np.repeat(self._salt[: len(per_indicator)], per_indicator)
        return self._find(_hashes(ids) + salt)[1]

    def _find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which keys are known, their columns)."""
        if not len(self._keys):
            return np.zeros(len(keys), dtype=bool), np.zeros(0, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        hit = self._keys[at] == keys
        return hit, self._columns[at[hit]]

    def route(self, context: Context, fan_out: int | None = None) -> np.ndarray:
        return route(context, self.signatures_t, fan_out)

    def sub_query(self, query: Query) -> Query:
        """The query every worker runs: an item query's item and item set become rules."""
        if query.item is None:
            return query
        config, model = self.config, self.model
        rules: list[FieldRule] = []
        blacklist = list(query.blacklist_items)
        doc = model.documents.index(query.item)
        item_bias = _first(query.item_bias, config.item_bias, 1.0)
        if doc >= 0 and item_bias:
            for c in model.correlators:
                ids = c.ids(doc)
                if ids:
                    rules.append(FieldRule(c.name, tuple(ids), item_bias))
        if not _first(query.return_self, config.return_self):
            blacklist.append(query.item)
        if query.item_set:
            set_bias = _first(query.item_set_bias, config.item_set_bias, 1.0)
            if set_bias:
                rules.append(FieldRule(model.primary, query.item_set, set_bias))
            blacklist += query.item_set
        named = {r.name for r in query.fields}
        engine_rules = tuple(r for r in config.fields if r.name not in named)
        return replace(
            query,
            item=None,
            item_bias=None,
            item_set=(),
            item_set_bias=None,
            fields=(*rules, *query.fields, *engine_rules),
            blacklist_items=tuple(blacklist),
        )

    def merge(
        self, query: Query, answers: Mapping[int, Result], routed: Sequence[int] | None = None
    ) -> Merged:
        """The page from the clusters' answers (cluster -> candidates); routed: the clusters
        asked (default: those that answered)."""
        routed = tuple(int(c) for c in (answers if routed is None else routed))
        stop = query.from_ + _first(query.num, self.config.num)
        rows = []
        for answer in answers.values():
            ranks = answer.ranks or [{} for _ in answer.item_scores]
            for (item, score), values in zip(answer.item_scores, ranks, strict=True):
                keys = [-values[n] if n in values else math.inf for n in self.rank_names]
                rows.append((-score, *keys, item, values))
        rows.sort(key=lambda row: row[:-1])
        page = rows[query.from_ : stop]
        scores = [(row[-2], -row[0] + 0.0) for row in page]
        result = Result(
            scores,
            [row[-1] for row in page] if query.with_ranks else None,
            backfill=any(s == 0 for _, s in scores),
        )
        answered = tuple(sorted(answers))
        return Merged(result, routed, answered, not set(routed) <= set(answered), False)

    def fallback(
        self, query: Query, history: Mapping[str, Sequence[str]], routed: Sequence[int] = ()
    ) -> Merged:
        """No cluster answered: the default recommendations (score 0), without the items the
        query excludes by id (history blacklist, blacklistItems, item set, the item)."""
        excluded = {x for name in self.blacklist_events for x in history.get(name, ())}
        excluded.update(query.blacklist_items, query.item_set)
        if query.item is not None and not _first(query.return_self, self.config.return_self):
            excluded.add(query.item)
        items = [item for item, _ in self.clusters.defaults if item not in excluded]
        stop = query.from_ + _first(query.num, self.config.num)
        page = [(item, 0.0) for item in items[query.from_ : stop]]
        ranks = [{} for _ in page] if query.with_ranks else None
        return Merged(Result(page, ranks, backfill=bool(page)), tuple(routed), (), True, True)


# -- the default recommendations --------------------------------------------------------------


def popular_recent(
    events: EventColumns, config: EngineConfig, now_ms: int, days: int = 7, limit: int = 1000
) -> tuple[tuple[str, float], ...]:
    """The `limit` targets of the most primary-indicator events in [now - days, now), with their
    counts, most first (ties: id ascending) — the router's answer when no cluster answers."""
    names = pa.array(list(config.indicators[0].aliases) if config.indicators else [], pa.string())
    keep = events.usage_mask() & (events.time >= now_ms - days * DAY_MS) & (events.time < now_ms)
    keep &= pc.is_in(events.event, value_set=names).to_numpy(zero_copy_only=False)
    targets = events.target_entity_id.filter(pa.array(keep))
    if len(targets) == 0:
        return ()
    counted = pc.value_counts(targets)
    table = pa.table({"id": counted.field("values"), "n": counted.field("counts")})
    table = table.sort_by([("n", "descending"), ("id", "ascending")]).slice(0, limit)
    return tuple(
        (str(i), float(n))
        for i, n in zip(table["id"].to_pylist(), table["n"].to_pylist(), strict=True)
    )


# -- the whole tier in one process (tests, benchmarks, the reference of the message flow) ------


class LocalShards:
    """Router and every cluster's worker in-process: route, fan out, merge, or fall back."""

    def __init__(self, model: Model, clusters: Clusters) -> None:
        self.stats = CatalogueStats.from_model(model)
        self.router = Router(model, clusters, self.stats)
        self.workers = [
            ClusterEngine(part_model(model, clusters.members(c)), self.stats)
            for c in range(clusters.k)
        ]

    def recommend(
        self,
        query: Query,
        history: Mapping[str, Sequence[str]],
        now_ms: int,
        *,
        times: Mapping[str, Sequence[int]] | None = None,
        fan_out: int | None = None,
        answering: set[int] | None = None,
    ) -> Merged:
        """`answering`: the clusters that answer in time (default: all)."""
        router = self.router
        routed = router.route(router.context(query, history, times), fan_out).tolist()
        sub = router.sub_query(query)
        answers = {
            c: self.workers[c].candidates(sub, history, now_ms, times=times)
            for c in routed
            if answering is None or c in answering
        }
        if not answers:
            return router.fallback(query, history, routed)
        return router.merge(query, answers, routed)

    def update_many(self, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Real-time item properties: each change to its owner; the statistics follow."""
        if self.router.config.recs_model == "collabFiltering":
            return
        by_owner: dict[int, dict[str, Mapping[str, Any] | None]] = {}
        for item, props in changes.items():
            by_owner.setdefault(self.router.owner(item), {})[item] = props
        for c, mine in by_owner.items():
            worker = self.workers[c]
            before = len(worker)
            for item, props in mine.items():
                self.stats.update(worker.properties_of(item), dict(props) if props else None)
            worker.update_many(mine)
            self.stats.n_docs += len(worker) - before
