"""The time split and everything an offline evaluation asks of it.

Events before the cut T train every model; the query side sees each test user as the query
service would at T: per event name, the distinct targets of the user's events before T, newest
first (ties: id descending, as a Redis sorted set), the newest `history_cap` kept — what ingest
holds in Redis. Candidate rules are the UR's: a user's history targets under `blacklistEvents`
(default: the primary indicator) are excluded, for crossrec and for every baseline alike.

Test users have primary events before T (they are known) and at least one relevant item: a
distinct primary target after T that is not excluded for them. Items are coded once: the
catalogue (targets of primary events before T, in id order) first, then every other id.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from crossrec.core.config import EngineConfig
from crossrec.core.events import InvalidEvent, format_time, parse_time
from crossrec.eval.metrics import popularity_percentile
from crossrec.trainer.build import encode_sorted
from crossrec.trainer.data import EventColumns

Properties = Mapping[str, dict[str, Any]] | Callable[[int], Mapping[str, dict[str, Any]]]


@dataclass(frozen=True)
class SplitSpec:
    """Where T falls: a fraction of the events' time range, or an instant (epoch ms)."""

    fraction: float | None = None
    at_ms: int | None = None

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        """'0.8' (a fraction in (0, 1)) or an ISO-8601 date / date-time ('2011-10-01')."""
        try:
            value = float(text)
        except ValueError:
            try:
                return cls(at_ms=parse_time(text, "split"))
            except InvalidEvent:
                raise ValueError(
                    f"split {text!r} is neither a fraction in (0, 1) nor an ISO-8601 date"
                ) from None
        if not 0.0 < value < 1.0:
            raise ValueError(f"split fraction must be between 0 and 1 (exclusive), got {text}")
        return cls(fraction=value)

    def cut(self, times: np.ndarray) -> int:
        if self.at_ms is not None:
            return self.at_ms
        if not len(times):
            raise ValueError("no events to split")
        low, high = int(times.min()), int(times.max())
        return low + round((high - low) * (self.fraction or 0.0))

    def describe(self) -> str:
        return f"{self.fraction:g} of the time range" if self.fraction else "a date"


@dataclass(frozen=True)
class Items:
    ids: list[str]  # code -> id
    n_catalogue: int  # codes below this: the catalogue, in id order
    counts: np.ndarray  # primary events before T per catalogue item
    code: dict[str, int] = field(repr=False)

    def codes(self, ids: list[str]) -> np.ndarray:
        return np.fromiter((self.code.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))


@dataclass(frozen=True)
class EvalData:
    cut_ms: int
    train: EventColumns  # every event before T
    properties: Mapping[str, dict[str, Any]]  # item properties as of T
    items: Items
    users: list[str]  # the test users
    history: list[dict[str, list[str]]]  # per test user: event name -> targets, newest first
    times: list[dict[str, list[int]]]  # ... and their times (epoch ms), as Redis's scores
    seen: sp.csr_matrix  # test users × items: excluded by the candidate rules
    relevant: sp.csr_matrix  # test users × items: what they went on to do after T
    train_matrix: sp.csr_matrix  # users × catalogue: primary events before T (the baselines')
    train_rows: np.ndarray  # each test user's row in train_matrix
    stats: dict[str, Any]


def history_names(config: EngineConfig) -> list[str]:
    """Every event name a user query of this config reads (as Engine.history_event_names)."""
    names = [a for ind in config.indicators for a in ind.aliases]
    return list(dict.fromkeys([*names, *config.expand_event_names(config.blacklist_events)]))


def _index_in(values: pa.Array, vocabulary: list[str]) -> np.ndarray:
    found = pc.index_in(values, value_set=pa.array(vocabulary, pa.string()))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _first_of_groups(*keys: np.ndarray) -> np.ndarray:
    """For rows sorted by `keys`, a mask of the first row of each run of equal keys."""
    first = np.ones(len(keys[0]), dtype=bool)
    if len(first) > 1:
        first[1:] = np.any([k[1:] != k[:-1] for k in keys], axis=0)
    return first


def _mean_percentile(codes: np.ndarray, counts: np.ndarray) -> float:
    """The mean popularity percentile of these items (0 outside the catalogue)."""
    if not len(codes):
        return 0.0
    percentile = popularity_percentile(counts)
    inside = codes < len(counts)
    return float(np.where(inside, percentile[np.minimum(codes, len(counts) - 1)], 0.0).mean())


def _pairs(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1
    return m


@dataclass(frozen=True)
class _Coded:
    """The events as integer codes (users, targets in id order, names in `names` or -1)."""

    user: np.ndarray
    user_ids: pa.Array
    target: np.ndarray
    target_ids: list[str]
    name: np.ndarray
    time: np.ndarray
    of_user: np.ndarray

    @classmethod
    def of(cls, events: EventColumns, names: list[str]) -> _Coded:
        of_user = np.ones(len(events), dtype=bool)
        if events.entity_type is not None:
            of_user = pc.equal(events.entity_type, "user").fill_null(False).to_numpy(False)
        users = events.entity_id.dictionary_encode()
        target, vocabulary = encode_sorted(events.target_entity_id)
        return cls(
            users.indices.to_numpy(zero_copy_only=False).astype(np.int64),
            users.dictionary,
            target,
            vocabulary.to_pylist(),
            _index_in(events.event, names),
            events.time,
            of_user,
        )


def _items(
    coded: _Coded, train_primary: np.ndarray, properties: Mapping[str, Any]
) -> tuple[Items, np.ndarray]:
    """The item codes, and the item code of each target code."""
    in_catalogue = np.zeros(len(coded.target_ids), dtype=bool)
    in_catalogue[coded.target[train_primary]] = True
    n_cat = int(in_catalogue.sum())
    item_of = np.empty(len(in_catalogue), dtype=np.int64)
    item_of[in_catalogue] = np.arange(n_cat)
    item_of[~in_catalogue] = np.arange(n_cat, len(in_catalogue))
    ids = [coded.target_ids[i] for i in np.argsort(item_of)]
    known = set(ids)
    ids += sorted(p for p in properties if p not in known)
    counts = np.bincount(item_of[coded.target[train_primary]], minlength=n_cat)[:n_cat]
    return Items(ids, n_cat, counts, {item: code for code, item in enumerate(ids)}), item_of


def _histories(coded: _Coded, take: np.ndarray, cap: int) -> tuple[np.ndarray, ...]:
    """(user, name, target, time) of the events `take`, one per distinct target (its newest time),
    newest first per user and name (equal times: id descending), the first `cap` of each."""
    u, n, t, tm = coded.user[take], coded.name[take], coded.target[take], coded.time[take]
    order = np.lexsort((-tm, t, n, u))
    u, n, t, tm = u[order], n[order], t[order], tm[order]
    newest = _first_of_groups(u, n, t)
    u, n, t, tm = u[newest], n[newest], t[newest], tm[newest]
    order = np.lexsort((-t, -tm, n, u))
    u, n, t, tm = u[order], n[order], t[order], tm[order]
    starts = _first_of_groups(u, n)
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(u)), 0))
    keep = (np.arange(len(u)) - group_start) < cap
    return u[keep], n[keep], t[keep], tm[keep]


def prepare(
    events: EventColumns,
    properties: Properties,
    config: EngineConfig,
    spec: SplitSpec,
    *,
    max_users: int | None = None,
    seed: int = 0,
    history_cap: int = 500,
) -> EvalData:
    names = history_names(config)
    coded = _Coded.of(events, names)
    cut = spec.cut(coded.time[coded.name >= 0])
    before = coded.time < cut
    if callable(properties):  # as of T
        properties = properties(cut)
    primary = [names.index(p) for p in config.indicators[0].aliases]
    is_primary = np.isin(coded.name, primary) & coded.of_user
    items, item_of = _items(coded, is_primary & before, properties)
    n_users, user = len(coded.user_ids), coded.user

    # candidates: known users with primary events after T; their histories at T
    known_user = np.zeros(n_users, dtype=bool)
    known_user[user[is_primary & before]] = True
    later = is_primary & ~before & known_user[user]
    candidate = np.zeros(n_users, dtype=bool)
    candidate[user[later]] = True
    take = np.flatnonzero(before & coded.of_user & (coded.name >= 0) & candidate[user])
    u, n, t, tm = _histories(coded, take, history_cap)

    blacklist = config.expand_event_names(config.blacklist_events)
    excluded = np.isin(n, [names.index(b) for b in blacklist])
    shape = (n_users, len(items.ids))
    seen_all = _pairs(u[excluded], item_of[t[excluded]], shape)
    later_all = _pairs(user[later], item_of[coded.target[later]], shape)
    relevant_all = later_all - later_all.multiply(seen_all)
    relevant_all.eliminate_zeros()
    chosen = np.flatnonzero(np.diff(relevant_all.indptr) > 0)
    n_eligible = len(chosen)
    if max_users is not None and len(chosen) > max_users:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(chosen, size=max_users, replace=False))

    # the chosen users' histories as dicts of Python lists
    history: list[dict[str, list[str]]] = [{} for _ in chosen]
    times: list[dict[str, list[int]]] = [{} for _ in chosen]
    slot = np.full(n_users, -1, dtype=np.int64)
    slot[chosen] = np.arange(len(chosen))
    mine = slot[u] >= 0
    u, n, t, tm = u[mine], n[mine], t[mine], tm[mine]
    bounds = [*np.flatnonzero(_first_of_groups(u, n)).tolist(), len(u)]
    vocab = np.array(coded.target_ids, dtype=object)
    for lo, hi in itertools.pairwise(bounds):
        history[slot[u[lo]]][names[n[lo]]] = vocab[t[lo:hi]].tolist()
        times[slot[u[lo]]][names[n[lo]]] = tm[lo:hi].tolist()

    # the baselines' training matrix: every user with primary events before T
    train_user = np.flatnonzero(known_user)
    row_of = np.full(n_users, -1, dtype=np.int64)
    row_of[train_user] = np.arange(len(train_user))
    pick = is_primary & before
    train_matrix = sp.csr_matrix(
        (
            np.ones(int(pick.sum()), dtype=np.float32),
            (row_of[user[pick]], item_of[coded.target[pick]]),
        ),
        shape=(len(train_user), items.n_catalogue),
    )
    train_matrix.sum_duplicates()

    relevant = relevant_all[chosen]
    used = coded.time[coded.name >= 0]
    stats = {
        "split": spec.describe(),
        "cut": format_time(cut),
        "first_event": format_time(int(used.min())),
        "last_event": format_time(int(used.max())),
        "train_events": int(before.sum()),
        "test_primary_events": int((is_primary & ~before).sum()),
        "train_users": len(train_user),
        "catalogue_items": items.n_catalogue,
        "eligible_test_users": n_eligible,
        "test_users": len(chosen),
        "sampled": len(chosen) < n_eligible,
        "relevant_per_user": float(np.diff(relevant.indptr).mean()) if len(chosen) else 0.0,
        "relevant_in_catalogue": float((relevant.indices < items.n_catalogue).mean())
        if relevant.nnz
        else 0.0,
        "relevant_popularity": _mean_percentile(relevant.indices, items.counts),
        "history_cap": history_cap,
    }
    return EvalData(
        cut_ms=cut,
        train=events.filter(before),
        properties=properties,
        items=items,
        users=coded.user_ids.take(pa.array(chosen)).to_pylist(),
        history=history,
        times=times,
        seen=seen_all[chosen],
        relevant=relevant,
        train_matrix=train_matrix,
        train_rows=row_of[chosen],
        stats=stats,
    )
