"""The in-process query engine: the UR query (UR-SPEC §5.3, §8a.2) over inverted indexes of a Model,
scored exactly as §5.6 and ordered totally (crossrec decisions). docs/query.md has the details.

    engine = Engine(model)
    names = engine.history_event_names(query)         # which histories to read for it
    result = engine.recommend(query, history, now_ms) # history: event name -> ids, newest first
    engine.update_properties("item-7", {"category": ["shoes"]})   # real time, no retraining

A query becomes clauses, each (field, distinct values, bias):
- user history per indicator (caps: crossrec.query.history) with the query's userBias, else the
  engine's, else 1; item-based: the query item's own correlators per indicator, with itemBias;
  item set: its ids on the primary field, with itemSetBias. Bias > 0: a boosting clause; < 0: a
  filter (a document must hold one of the values); 0: the clause is left out;
- `fields` rules (the query's, plus the engine's not named by the query): bias > 0 boost, < 0
  include only, 0 exclude. A rule field is `id`, an indicator, or a property (keyword terms of
  the item's current properties; properties named like an indicator or `id` are not indexed);
- dates: `dateRange` (exclusive bounds) on its field, else available <= currentDate < expire when
  both names are configured (not with collabFiltering: that model holds no properties);
- excluded: targets of every history event named in blacklistEvents (the whole history given),
  blacklistItems, the item set, and the query item unless returnSelf.

Scores (crossrec.query.scoring) are Σ_boosting clauses bias · Σ_{v ∈ values ∩ d[f]} idf_f(v) with
catalogue-wide idf, rounded to 9 decimals. Candidates pass every filter; with collabFiltering only
positive scores are returned, otherwise every candidate (the rest score 0: the popularity
backfill). Order: score desc, then each ranking in configured order desc (missing last), then id
asc; the page is [from, from + num).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from crossrec.core.config import FieldRule
from crossrec.core.model import Model
from crossrec.core.query import InvalidQuery, Query, Result
from crossrec.query import history as hist
from crossrec.query import scoring
from crossrec.query.documents import Documents
from crossrec.query.index import EMPTY, IndicatorIndex, PropertyIndex, distinct, idf
from crossrec.query.scoring import Plan

# a history's shortlist (scoring.Shortlist) holds the best max(SHORTLIST, SHORTLIST_PAGES *
# (from + num)) documents: room for a page's worth to be filtered out by later queries
SHORTLIST, SHORTLIST_PAGES = 64, 4


def keep_out_of_gc() -> None:
    """Take every object alive now (a just-loaded model's property dicts, ids and arrays: millions
    of them) out of the cyclic garbage collector's walks. Otherwise each full collection walks
    them all, ~300 ms on Complete Journey every few thousand queries, in the middle of requests.
    Call it once a model is live; its objects are still freed by reference counting when it is
    replaced (only cycles among them would stay)."""
    gc.freeze()


def _clauses(plan: Plan) -> int:
    return sum(len(terms) for terms in plan.terms.values())


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _memoized(memo: dict[Any, Any] | None, key: Any, make: Callable[[], Any]) -> Any:
    """make(), kept in `memo` under `key` (no memo: made each time)."""
    if memo is None:
        return make()
    if key not in memo:
        _remember(memo, key, make())
    return memo[key]


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    """A memo holds a few keys: older ones (another model version, fewer documents) are dropped
    with the rest."""
    if len(memo) >= 8 and key not in memo:
        memo.clear()
    memo[key] = value


class Engine:
    def __init__(self, model: Model) -> None:
        self.model = model
        self.config = config = model.config
        self.collab = config.recs_model == "collabFiltering"
        self.indicators = [IndicatorIndex(c, len(model)) for c in model.correlators]
        self._field_of = {ind.name: k for k, ind in enumerate(self.indicators)}
        settings = [config.indicator(ind.name) for ind in self.indicators]
        self._aliases = [s.aliases for s in settings]
        self._caps = [s.max_query_events for s in settings]
        self._events = frozenset(a for aliases in self._aliases for a in aliases)
        self._blacklist_events = config.expand_event_names(config.blacklist_events)
        rank_names = [r.name for r in config.rankings if r.name in model.rankings]
        user_defined = frozenset(r.name for r in config.rankings if r.type == "userDefined")
        self.documents = Documents(model, rank_names, user_defined)
        self.properties = PropertyIndex(model.properties, frozenset(self._field_of) | {"id"})
        self._scratch = scoring.Scratch()

    def __len__(self) -> int:
        return self.documents.n

    def nbytes(self) -> int:
        """Bytes of the arrays the engine adds to its model (postings, orders, ids' hashes,
        property postings); Python objects' overhead not counted."""
        arrays = self.documents.arrays()
        arrays += [a for values in self.properties.fields.values() for a in values.values()]
        return sum(a.nbytes for a in arrays) + sum(ind.nbytes() for ind in self.indicators)

    # -- history ------------------------------------------------------------------------------

    def _allowed_events(self, query: Query) -> set[str] | frozenset[str]:
        if query.event_names is None:
            return self._events
        allowed: set[str] = set()
        for name in query.event_names:
            if name in self._field_of:
                allowed.update(self._aliases[self._field_of[name]])
            elif name in self._events:
                allowed.add(name)
            else:
                known = ", ".join(sorted(self._field_of.keys() | self._events))
                raise InvalidQuery("eventNames", f"{name!r} is not an event of this model: {known}")
        return allowed

    def history_event_names(self, query: Query) -> list[str]:
        """The event names whose history `recommend` reads for this query (scoring, blacklist)."""
        allowed = self._allowed_events(query)
        names = [a for aliases in self._aliases for a in aliases if a in allowed]
        return list(dict.fromkeys([*names, *self._blacklist_events]))

    # -- the query ----------------------------------------------------------------------------

    def recommend(
        self,
        query: Query,
        history: Mapping[str, Sequence[str]],
        now_ms: int,
        *,
        times: Mapping[str, Sequence[int]] | None = None,
        memo: dict[Any, Any] | None = None,
    ) -> Result:
        """One page of recommendations. `history`: the user's targets per event name, newest first
        (the whole stored history; {} without a user); `times`: optionally their epoch-ms times,
        which make the maxQueryEvents budget pick the newest events over all indicators; `memo`:
        a dict that lives as long as this history does (the query service's history cache keeps
        one per cached history), where what the engine derives from the history is kept for the
        next query of it."""
        config, plan = self.config, Plan()
        allowed = frozenset(self._allowed_events(query))
        key = ("used", self.model.version, allowed)  # vocabularies never change
        used = _memoized(memo, key, lambda: self._used(allowed, history, times))
        user_bias = _first(query.user_bias, config.user_bias, 1.0)
        for k, values in used:
            plan.indicator(k, self.indicators[k], values, user_bias)
        from_history = _clauses(plan)
        if query.item is not None:
            doc = int(self.documents.index([query.item])[0])
            item_bias = _first(query.item_bias, config.item_bias, 1.0)
            for k, ind in enumerate(self.indicators):
                values = ind.row(doc) if doc >= 0 else EMPTY
                if len(values):
                    plan.indicator(k, ind, distinct(values), item_bias)
        if query.item_set:
            set_bias = _first(query.item_set_bias, config.item_set_bias, 1.0)
            plan.indicator(
                0, self.indicators[0], self.indicators[0].lookup(query.item_set), set_bias
            )
        named = {r.name for r in query.fields}
        for rule in (*query.fields, *(r for r in config.fields if r.name not in named)):
            self._rule(plan, rule)
        plan.must_not.append(self._excluded(query))
        blacklisted = chain.from_iterable(history.get(n, ()) for n in self._blacklist_events)
        if memo is None:  # checked against the best documents' ids only (_best)
            return self._page(query, plan, self._mask(query, plan, now_ms), set(blacklisted))
        # their documents, looked up once per history (and document count)
        key = ("listed", self.model.version, self.documents.n)
        excluded = _memoized(memo, key, lambda: self._documents_of(list(blacklisted)))
        plan.must_not.append(excluded)
        where = self._mask(query, plan, now_ms)
        if not plan.terms or _clauses(plan) > from_history or plan.postings or plan.must:
            return self._page(query, plan, where, set())
        # scored from the history alone (filters that only drop documents aside): the page can
        # come from the shortlist of the history's scores (scoring.Shortlist)
        key = ("shortlist", self.model.version, self.documents.n, allowed, user_bias)
        return self._page(query, plan, where, set(), shortlist=(memo, key, excluded))

    def _used(
        self,
        allowed: Collection[str],
        history: Mapping[str, Sequence[str]],
        times: Mapping[str, Sequence[int]] | None,
    ) -> list[tuple[int, np.ndarray]]:
        """Per indicator, the vocabulary indices of the history events the query uses (caps:
        crossrec.query.history)."""
        streams = hist.streams_of(self._aliases, allowed, history, times)
        picked = hist.recent(streams, self._caps, self.config.max_query_events)
        return [
            (k, ind.lookup(ids))
            for k, (ind, ids) in enumerate(zip(self.indicators, picked, strict=True))
            if ids
        ]

    def _rule(self, plan: Plan, rule: FieldRule) -> None:
        """bias > 0: boost; < 0: include only; 0: exclude. The field is an indicator, `id`, or a
        property."""
        if rule.name in self._field_of:
            k = self._field_of[rule.name]
            ind = self.indicators[k]
            values = ind.lookup(rule.values)
            if rule.bias == 0:
                plan.must_not.append(ind.documents(values))
            else:
                plan.indicator(k, ind, values, rule.bias)
            return
        if rule.name == "id":
            found = self.documents.index(list(dict.fromkeys(rule.values)))
            docs = np.unique(found[found >= 0]).astype(np.int32)
            postings = docs, np.full(len(docs), idf(self.documents.n, 1))
        else:
            postings = self.properties.postings(rule.name, rule.values)
        if rule.bias == 0:
            plan.must_not.append(postings[0])
        else:
            plan.field(postings, rule.bias)

    def _excluded(self, query: Query) -> np.ndarray:
        """Documents the query itself excludes (the history's blacklist: `recommend`)."""
        ids = [*query.blacklist_items, *query.item_set]
        if query.item is not None and not _first(query.return_self, self.config.return_self):
            ids.append(query.item)
        return self._documents_of(ids)

    def _documents_of(self, ids: Collection[str]) -> np.ndarray:
        found = self.documents.index(list(dict.fromkeys(ids)))
        return found[found >= 0]

    def _mask(self, query: Query, plan: Plan, now_ms: int) -> scoring.Filter:
        """Filters as a boolean mask over documents; exclusions alone as a short list instead."""
        n, config, docs = self.documents.n, self.config, self.documents
        mask: np.ndarray | None = None
        for must in plan.must:
            hit = np.zeros(n, dtype=bool)
            hit[must] = True
            mask = hit if mask is None else mask & hit
        rng = query.date_range
        if rng is not None and rng.active:
            if rng.name not in docs.dates and rng.name not in self.properties.fields:
                mask = np.zeros(n, dtype=bool)  # no document has that property
            else:
                column = docs.date(rng.name)
                if rng.after is not None:
                    mask = (column > rng.after) if mask is None else mask & (column > rng.after)
                if rng.before is not None:
                    mask = (column < rng.before) if mask is None else mask & (column < rng.before)
        elif config.available_date_name and config.expire_date_name and not self.collab:
            at = _first(query.current_date, now_ms)
            live = docs.live(config.available_date_name, config.expire_date_name, at)
            mask = live if mask is None else mask & live  # live itself is shared: not written
        excluded = np.concatenate(plan.must_not) if plan.must_not else scoring.NONE
        if mask is None and len(excluded) * 64 > n:
            mask = np.ones(n, dtype=bool)
        if mask is not None and mask.flags.writeable:
            mask[excluded] = False
            return scoring.Filter(mask, scoring.NONE)
        return scoring.Filter(mask, excluded)

    def _page(
        self,
        query: Query,
        plan: Plan,
        where: scoring.Filter,
        listed: set[str],
        shortlist: tuple[dict[Any, Any], Any, np.ndarray] | None = None,
    ) -> Result:
        """The page; `listed`: blacklisted ids (of the user's history), checked on the best
        documents only, unless the page needs backfill (then every one is looked up).
        `shortlist`: (memo, key, the history's blacklisted documents) where the plan scores the
        history alone: the page comes from the memo's shortlist when it can tell, and a
        shortlist is made (and kept) when there is none."""
        docs = self.documents
        start = query.from_
        stop = start + _first(query.num, self.config.num)
        scores, short = None, None
        picked: tuple[np.ndarray, np.ndarray] | None = None
        if shortlist is not None:
            memo, key, blacklist = shortlist
            short = memo.get(key)
            if short is not None:
                picked = short.page(where, stop, docs.id_rank, docs.rank_keys)
        if picked is None and plan:
            scores = scoring.accumulate(plan, self.indicators, docs.n, self._scratch)
            if shortlist is not None:
                scores[blacklist] = 0
                size = max(SHORTLIST, SHORTLIST_PAGES * stop)
                short = scoring.Shortlist.of(scores, size, docs.id_rank, docs.rank_keys, docs.order)
                _remember(memo, key, short)
                picked = short.page(where, stop, docs.id_rank, docs.rank_keys)
            if picked is None:
                where.apply(scores)
                picked = self._best(scores, stop, listed)
        top, top_scores = picked if picked is not None else (scoring.NONE, np.zeros(0))
        if len(top) < stop and not self.collab:
            if listed:
                more = self._documents_of(listed)
                where = scoring.Filter(where.mask, np.concatenate([where.excluded, more]))
            if scores is None and short is not None:  # complete: every positive document
                where = scoring.Filter(where.mask, np.concatenate([where.excluded, short.docs]))
            fill = scoring.backfill(docs.order, where, scores, stop - len(top))
            top = np.concatenate([top, fill])
            top_scores = np.concatenate([top_scores, np.zeros(len(fill))])
        if scores is not None:
            self._scratch.give(scores)
        page, page_scores = top[start:stop], top_scores[start:stop].tolist()
        ranks = [docs.ranks_of(d) for d in page.tolist()] if query.with_ranks else None
        return Result(
            list(zip(docs.ids(page), page_scores, strict=True)),
            ranks,
            backfill=any(s == 0 for s in page_scores),
        )

    def _best(self, scores: np.ndarray, k: int, listed: set[str]) -> tuple[np.ndarray, np.ndarray]:
        """The k best documents (positive score, total order) whose ids are not listed: the best
        2k + 16, then 4 times as many while too many of those are listed. A user's own purchases
        often lead, but checking a few dozen ids costs far less than looking up a history of
        hundreds; a listed document left out of the k best changes nothing."""
        docs = self.documents
        want = 2 * k + 16 if listed else k
        while True:
            top, top_scores = scoring.best(scores, want, docs.id_rank, docs.rank_keys, docs.order)
            if not listed:
                return top, top_scores
            keep = [j for j, x in enumerate(docs.ids(top)) if x not in listed]
            if len(keep) >= k or len(top) < want:  # fewer than asked: no other positive score
                return top[keep[:k]], top_scores[keep[:k]]
            want *= 4

    # -- real-time properties -----------------------------------------------------------------

    def properties_of(self, item: str) -> Mapping[str, Any] | None:
        doc = int(self.documents.index([item])[0])
        return None if doc < 0 else self.documents.props(doc)

    def update_properties(self, item: str, properties: Mapping[str, Any] | None) -> None:
        """The item's current properties (None: it has none), without retraining."""
        self.update_many({item: properties})

    def update_many(self, changes: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Several items' current properties at once (one re-sort instead of many inserts).

        No await inside: a query on the same event loop sees all of it or none. An item unknown
        to the model becomes a document of its own (Harness's doc_as_upsert). With recsModel
        collabFiltering properties are not indexed (as training), so this does nothing."""
        if self.collab or not changes:
            return
        docs = self.documents
        items = list(changes)
        found = docs.index(items)
        known = found.tolist()
        new = [item for item, doc in zip(items, known, strict=True) if doc < 0 and changes[item]]
        if new:
            docs.add(new)
            found = docs.index(items)
        updates = []
        for item, doc in zip(items, found.tolist(), strict=True):
            props = changes[item]
            props = dict(props) if props else None
            if doc >= 0 and props != docs.props(doc):
                updates.append((doc, docs.props(doc), props))
        self.properties.update(updates)
        docs.set_props([(doc, new_props) for doc, _, new_props in updates])
