"""The shared test set of the two engines: a synthetic model and queries covering every feature.

The model is made so that comparing orders is meaningful on noida-db too. noida scores a `term`
match as idf·c_f, where c_f depends on the field's average number of values (it keeps BM25 length
normalisation although the fields have no norms); ES 8 scores it as idf (k1 = 0) for every field.
So every scored field here — the three indicators and the `category` property — holds exactly
three values wherever it is present: c_f is one constant and orders equal the UR formula's on
both servers. Fields with another shape (`color`, `id`) are only filtered on, or scored alone.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import orjson

from crossrec.adapters.eventlog import EventLog, LoggedEvent
from crossrec.adapters.modelstore import ModelStore
from crossrec.core.config import parse_engine_config
from crossrec.core.events import Event, format_time, parse_time
from crossrec.core.idmap import IdMap
from crossrec.core.model import Correlators, Model
from crossrec.core.query import Result
from crossrec.core.rankings import user_defined
from crossrec.trainer.train import train_app

NOW = parse_time("2024-06-01T00:00:00Z")
DAY = 86_400_000
N_ITEMS = 90
WIDTH = 3  # values per scored field
CATEGORIES = [f"cat{k}" for k in range(8)]
PREFS = [f"c{k}" for k in range(12)]
COLORS = ["red", "green", "blue", "black"]


def engine_doc(**params: Any) -> dict[str, Any]:
    base = {
        "indicators": [
            {"name": "purchase", "aliases": ["purchase", "buy"], "maxIndicatorsPerQuery": 6},
            {"name": "view", "maxIndicatorsPerQuery": 4},
            {"name": "category-pref"},
        ],
        "rankings": [
            {"type": "popular"},
            {"type": "trending", "name": "trendRank"},
            {"type": "userDefined", "name": "score"},
        ],
        "availableDateName": "available",
        "expireDateName": "expires",
        "dateName": "released",
        "fields": [{"name": "category", "values": ["cat1"], "bias": 1.5}],
    }
    base.update(params)
    return {
        "datasource": {"params": {"appName": "shop"}},
        "algorithms": [{"name": "ur", "params": base}],
    }


def _pick(rng: np.random.Generator, values: list[str], weights: np.ndarray, k: int) -> list[str]:
    return [str(x) for x in rng.choice(values, size=k, replace=False, p=weights / weights.sum())]


def synthetic_model(
    *, seed: int = 7, n_items: int = N_ITEMS, version: str = "v1", **params: Any
) -> Model:
    """Items i00.. : most with all three indicators, some with `purchase` only, the last ten with
    none (backfill only); properties, dates and rankings with gaps and ties."""
    config = parse_engine_config(engine_doc(**params))
    collab = config.recs_model == "collabFiltering"
    rng = np.random.default_rng(seed)
    ids = [f"i{k:02d}" for k in range(n_items)]
    skew = 1.0 / (np.arange(n_items) + 3.0)
    pref_skew = 1.0 / (np.arange(len(PREFS)) + 1.0)
    rows: dict[str, list[list[str]]] = {"purchase": [], "view": [], "category-pref": []}
    for k in range(n_items):
        full, some = k < n_items - 20, k < n_items - 10
        others = [x for x in ids if x != ids[k]]
        weights = np.delete(skew, k)
        rows["purchase"].append(_pick(rng, others, weights, WIDTH) if some else [])
        rows["view"].append(_pick(rng, others, weights, WIDTH) if full else [])
        rows["category-pref"].append(_pick(rng, PREFS, pref_skew, WIDTH) if full else [])
    documents, doc_of = IdMap.build(ids)
    order = np.argsort(doc_of)  # order[d] = the item of document d
    correlators = []
    for name, by_item in rows.items():
        lists = [by_item[k] for k in order]
        vocab, code = IdMap.build(sorted({x for row in lists for x in row}))
        position = {x: int(code[i]) for i, x in enumerate(sorted({x for r in lists for x in r}))}
        indptr = np.cumsum([0, *(len(r) for r in lists)]).astype(np.int64)
        indices = np.asarray([position[x] for r in lists for x in r], dtype=np.int32)
        llr = np.concatenate([np.sort(rng.uniform(1, 9, len(r)))[::-1] for r in lists] + [np.zeros(0)])  # fmt: skip
        correlators.append(Correlators(name, vocab, indptr, indices, llr.astype(np.float32)))
    properties: list[dict[str, Any] | None] = []
    for k in range(n_items):
        if collab or k % 17 == 16:
            properties.append(None)
            continue
        props: dict[str, Any] = {"color": [COLORS[k % 4]], "score": int(rng.integers(0, 4))}
        if k % 9 != 4:
            props["category"] = _pick(rng, CATEGORIES, np.ones(len(CATEGORIES)), WIDTH)
        if k % 11 != 3:  # a few lack a date and are never available
            props["available"] = format_time(NOW - int(rng.integers(1, 60)) * DAY)
            props["expires"] = format_time(NOW + int(rng.integers(-5, 60)) * DAY)
        props["released"] = format_time(NOW - int(rng.integers(0, 100)) * DAY)
        props["launched"] = format_time(NOW - int(rng.integers(0, 100)) * DAY)
        properties.append(props)
    properties = [properties[k] for k in order]
    dates = {
        name: np.asarray([parse_time(p[name]) if p and name in p else np.nan for p in properties])
        for name in config.date_names
    }
    rankings = {}
    if not collab:
        popular = rng.integers(0, 6, n_items).astype(np.float64)
        popular[rng.random(n_items) < 0.2] = np.nan
        trend = rng.integers(-2, 3, n_items).astype(np.float64)
        trend[rng.random(n_items) < 0.3] = np.nan
        rankings = {"popRank": popular[order], "trendRank": trend[order], "score": user_defined(properties, "score")}  # fmt: skip
    return Model(
        app="shop", version=version, config=config,
        documents=documents, correlators=tuple(correlators),
        properties=tuple(properties), rankings=rankings, dates=dates, info={},
    )  # fmt: skip


def history(seed: int, **sizes: int) -> dict[str, list[str]]:
    """A user's history: `sizes` targets per event name, newest first."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, size in sizes.items():
        pool = PREFS if name == "category-pref" else [f"i{k:02d}" for k in range(N_ITEMS)]
        out[name] = [str(x) for x in rng.choice(pool, size=size)]
    return out


H1 = history(1, purchase=4, buy=2, view=6, **{"category-pref": 2})
H2 = history(2, purchase=8, view=2)
H3 = history(3, view=5, **{"category-pref": 3})

# (name, PIO query, history): every query feature, alone and combined
QUERIES: list[tuple[str, dict[str, Any], dict[str, list[str]]]] = [
    ("popular", {}, {}),
    ("user", {"user": "u1"}, H1),
    ("user-2", {"user": "u2"}, H2),
    ("user-3", {"user": "u3"}, H3),
    ("user-bias", {"user": "u1", "userBias": 2.5}, H1),
    ("user-filter", {"user": "u3", "userBias": -1}, H3),
    ("user-bias-0", {"user": "u1", "userBias": 0}, H1),
    ("item", {"item": "i03"}, {}),
    ("item-self", {"item": "i03", "returnSelf": True}, {}),
    ("item-unknown", {"item": "nope"}, {}),
    ("item-and-user", {"user": "u2", "item": "i05", "itemBias": 3}, H2),
    ("item-filter", {"item": "i01", "itemBias": -1}, {}),
    ("item-set", {"itemSet": ["i00", "i02", "i04"]}, {}),
    ("item-set-bias", {"itemSet": ["i00", "i01"], "itemSetBias": 4, "user": "u3"}, H3),
    ("item-set-filter", {"itemSet": ["i00", "i01"], "itemSetBias": -1}, {}),
    ("rule-boost", {"user": "u1", "fields": [{"name": "category", "values": ["cat2", "cat3"], "bias": 2}]}, H1),
    ("rule-replaces-engine", {"fields": [{"name": "category", "values": ["cat1"], "bias": 0}]}, {}),
    ("rule-filter", {"user": "u2", "fields": [{"name": "color", "values": ["red", "blue"], "bias": -1}]}, H2),
    ("rule-exclude", {"user": "u1", "fields": [{"name": "color", "values": ["black"], "bias": 0}]}, H1),
    ("rule-id-boost", {"fields": [{"name": "id", "values": ["i40", "i41", "i85"], "bias": 3}, {"name": "category", "values": ["none"], "bias": 0}]}, {}),
    ("rule-indicator", {"fields": [{"name": "view", "values": ["i00", "i01"], "bias": 1}]}, {}),
    ("rule-missing-field", {"fields": [{"name": "nothing", "values": ["x"], "bias": -1}]}, {}),
    ("date-range", {"user": "u1", "dateRange": {"name": "released", "after": format_time(NOW - 50 * DAY), "before": format_time(NOW - 5 * DAY)}}, H1),
    ("date-range-after", {"dateRange": {"name": "released", "after": format_time(NOW - 30 * DAY)}}, {}),
    ("date-range-property", {"user": "u3", "dateRange": {"name": "launched", "before": format_time(NOW - 40 * DAY)}}, H3),
    ("current-date", {"user": "u2", "currentDate": format_time(NOW + 20 * DAY)}, H2),
    ("blacklist", {"user": "u1", "blacklistItems": ["i00", "i01", "i02", "i03"]}, H1),
    ("event-names", {"user": "u1", "eventNames": ["view"]}, H1),
    ("event-names-alias", {"user": "u1", "eventNames": ["buy", "category-pref"]}, H1),
    ("page-1", {"user": "u1", "num": 7}, H1),
    ("page-2", {"user": "u1", "num": 7, "from": 7}, H1),
    ("page-deep", {"user": "u2", "num": 5, "from": 40}, H2),
    ("with-ranks", {"user": "u3", "withRanks": True, "num": 12}, H3),
    ("everything", {
        "user": "u1", "userBias": 1.5, "item": "i07", "itemBias": 2, "itemSet": ["i09"],
        "fields": [{"name": "category", "values": ["cat4"], "bias": 3}, {"name": "color", "values": ["green"], "bias": 0}],
        "blacklistItems": ["i10"], "currentDate": format_time(NOW - 2 * DAY), "num": 15, "from": 3,
    }, H1),
]  # fmt: skip


def tolerance(score: float) -> float:
    return 1e-5 * max(1.0, abs(score))


def compare(expected: Result, actual: Result, score_of: dict[str, float] | None = None) -> int:
    """Assert that `actual` (Elasticsearch) lists items whose in-process scores are, position by
    position, those of `expected` (in-process): the same items and order wherever the scores
    differ; within a run of equal scores the order is free. Zero-score runs (backfill) must match
    exactly: both engines order them by rankings, then id. Returns the number of adjacent pairs
    whose order was checked because their scores differ."""
    want = expected.item_scores
    got = [item for item, _ in actual.item_scores]
    score_of = score_of if score_of is not None else dict(want)
    assert len(got) == len(want), (got, want)
    for position, ((item, score), other) in enumerate(zip(want, got, strict=True)):
        assert other in score_of, f"position {position}: {other} is not a candidate"
        assert abs(score_of[other] - score) <= tolerance(score), (
            f"position {position}: {other} (in-process score {score_of[other]}) where the in-process "
            f"engine has {item} ({score})\n in-process: {want}\n elasticsearch: {actual.item_scores}"
        )
        if score == 0:
            assert other == item, f"backfill differs at {position}: {got} vs {want}"
    return sum(1 for (_, a), (_, b) in itertools.pairwise(want) if a - b > tolerance(a))


def trained_model(root: str, *, seed: int = 0, users: int = 60, items: int = 40) -> Model:
    """A model the trainer builds from random events (correlator lists of every length)."""
    rng = np.random.default_rng(seed)
    events = []
    for k in range(users * 6):
        user, item = f"u{rng.integers(0, users)}", f"i{int(rng.zipf(1.6)) % items:02d}"
        name = "purchase" if k % 3 else "view"
        when = NOW - int(rng.integers(1, 30)) * DAY
        events.append(Event(name, "user", user, when, "item", item, {}, event_id=f"e{k}"))
    for k in range(items):
        props = {"category": [CATEGORIES[k % 8]], "available": format_time(NOW - DAY), "expires": format_time(NOW + 9 * DAY)}  # fmt: skip
        events.append(Event("$set", "item", f"i{k:02d}", NOW - 2 * DAY, properties=props, event_id=f"p{k}"))  # fmt: skip
    logged = [
        LoggedEvent(e, orjson.dumps(e.properties).decode() if e.properties else None, 0, i, 0)
        for i, e in enumerate(events)
    ]
    log = EventLog(f"{root}/log")
    log.append("shop", 0, 0, len(logged) - 1, logged)
    doc = engine_doc(
        indicators=[{"name": "purchase", "maxCorrelatorsPerItem": 8}, {"name": "view"}],
        rankings=[{"type": "popular", "duration": "60 days"}],
        dateName=None, fields=None,
    )  # fmt: skip
    store = ModelStore(f"{root}/models")
    train_app(log, "shop", parse_engine_config(doc), store, now=NOW)
    return store.load("shop")
