"""The sharded tier's core: with every cluster answering, the merged page equals Engine.recommend
(on random models, partitions, queries and real-time property changes); partial answers are
flagged, no answer gives the default recommendations; routing finds the history's cluster."""

from __future__ import annotations

import numpy as np
import pytest
from engine_reference import config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine import DAY, NOW, engine_params, property_dicts, queries, scenarios

from crossrec.core.clusters import cluster_model, clusters_of
from crossrec.core.query import InvalidQuery, Query
from crossrec.query.engine import Engine
from crossrec.query.sharding import Context, LocalShards, popular_recent, route, route_many
from crossrec.trainer.build import build_model as train_model
from crossrec.trainer.data import from_columns


def assert_exact(engine: Engine, tier: LocalShards, q: Query, history, now=NOW) -> None:
    try:
        expected = engine.recommend(q, history, now)
    except InvalidQuery as e:
        with pytest.raises(InvalidQuery) as caught:
            tier.recommend(q, history, now)
        assert caught.value.field == e.field
        return
    merged = tier.recommend(q, history, now)
    assert merged.result == expected, (q, history, merged.result, expected)
    assert not merged.partial and not merged.fallback
    assert set(merged.routed) == set(range(tier.router.k))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_full_fan_out_equals_the_engine_on_any_partition(data):
    model, updates, items = data.draw(scenarios())
    k = data.draw(st.integers(1, 5))
    labels = data.draw(st.lists(st.integers(0, k - 1), min_size=len(model), max_size=len(model)))
    engine, tier = Engine(model), LocalShards(model, clusters_of(model, np.array(labels), k))
    for _ in range(3):
        q, history = data.draw(queries(items))
        assert_exact(engine, tier, q, history)
        if q.event_names is None:
            assert tier.router.history_event_names(q) == engine.history_event_names(q)
    changes = dict(updates)
    engine.update_many(changes)
    tier.update_many(changes)
    assert tier.stats.n_docs == len(engine)
    for _ in range(3):
        assert_exact(engine, tier, *data.draw(queries(items)))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_full_fan_out_equals_the_engine_on_trained_and_clustered_models(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    n = int(rng.integers(100, 600))
    events = rng.choice(["buy", "view", "cat"], n, p=[0.5, 0.3, 0.2])
    users = np.array([f"u{k}" for k in rng.integers(0, 30, n)], dtype=object)
    ids = rng.integers(0, 40, n)
    targets = np.array(
        [f"c{k % 4}" if e == "cat" else f"i{k}" for e, k in zip(events, ids, strict=True)],
        dtype=object,
    )
    params = data.draw(engine_params())
    if "indicators" in params:
        params["indicators"] = [{**i, "aliases": [i["name"]]} for i in params["indicators"]]
    props = {f"i{k}": data.draw(property_dicts()) for k in data.draw(st.sets(st.integers(0, 45)))}
    columns = {"event": events.astype(object), "user": users, "target": targets, "time": NOW - rng.integers(0, 40, n) * DAY}  # fmt: skip
    model = train_model(
        "t", config(params), from_columns(columns), {k: v for k, v in props.items() if v},
        now_ms=NOW, version="v",
    )  # fmt: skip
    clusters = cluster_model(model, data.draw(st.integers(1, 6)), slack=data.draw(st.sampled_from([1.0, 1.5, 3.0])))  # fmt: skip
    engine, tier = Engine(model), LocalShards(model, clusters)
    items = sorted(model.documents)[:15]
    for _ in range(5):
        q, _ = data.draw(queries(items))
        user = str(users[data.draw(st.integers(0, n - 1))])
        history = {
            name: list(dict.fromkeys(reversed([str(t) for e, u, t in zip(events, users, targets, strict=True) if e == name and u == user])))
            for name in ("buy", "view", "cat")
        } if q.user else {}  # fmt: skip
        assert_exact(engine, tier, q, history)


# -- partial answers and the fallback ---------------------------------------------------------


def worlds(n_worlds=4, items_per_world=12, users_per_world=25, seed=0):
    """Users who buy only inside their own world of items: clusters should be the worlds."""
    rng = np.random.default_rng(seed)
    event, user, target, time = [], [], [], []
    for w in range(n_worlds):
        for u in range(users_per_world):
            for item in rng.choice(items_per_world, min(6, items_per_world), replace=False):
                event.append("buy")
                user.append(f"u{w}-{u}")
                target.append(f"w{w}-i{item:02d}")
                time.append(NOW - int(rng.integers(1, 20)) * DAY)
    columns = {
        "event": np.array(event, dtype=object),
        "user": np.array(user, dtype=object),
        "target": np.array(target, dtype=object),
        "time": np.array(time, dtype=np.int64),
    }
    cfg = config({"eventNames": ["buy"], "rankings": [{"type": "popular"}], "num": 10})
    model = train_model("t", cfg, from_columns(columns), {}, now_ms=NOW, version="v")
    return model, columns, cfg


def test_clusters_are_the_worlds_and_routing_finds_the_history_s_world():
    model, _, _ = worlds()
    clusters = cluster_model(model, 4, slack=1.25)
    world_of = np.array([int(item[1]) for item in model.documents])
    for c in range(4):
        assert len(set(world_of[clusters.members(c)])) == 1  # pure
    tier = LocalShards(model, clusters)
    for w in range(4):
        history = {"buy": [f"w{w}-i03", f"w{w}-i07"]}
        q = Query(user="someone")
        chosen = tier.router.route(tier.router.context(q, history))
        assert world_of[clusters.members(int(chosen[0]))][0] == w
        routed = tier.recommend(q, history, NOW, fan_out=1)
        full = tier.recommend(q, history, NOW)
        scored = [item for item, score in full.result.item_scores if score > 0]
        assert scored and all(item.startswith(f"w{w}-") for item in scored)
        assert [i for i, s in routed.result.item_scores if s > 0] == scored
        assert routed.routed == (int(chosen[0]),) and not routed.partial
    item_query = tier.router.route(tier.router.context(Query(item="w2-i05"), {}))
    assert world_of[clusters.members(int(item_query[0]))][0] == 2


def test_partial_answers_are_flagged_and_no_answer_falls_back_to_recent_popularity():
    model, columns, cfg = worlds(seed=1)
    defaults = popular_recent(from_columns(columns), cfg, NOW, days=7, limit=50)
    clusters = clusters_of(model, cluster_model(model, 4).labels, 4)
    clusters = type(clusters)(**{**clusters.__dict__, "defaults": defaults})
    tier = LocalShards(model, clusters)
    history = {"buy": ["w1-i01", "w1-i02", "w3-i04"]}
    q = Query(user="x", num=30)
    full = tier.recommend(q, history, NOW)
    some = {int(tier.router.owner("w1-i05"))}
    partial = tier.recommend(q, history, NOW, answering=some)
    assert partial.partial and not partial.fallback and partial.answered == tuple(some)
    members = set(model.documents.ids(clusters.members(next(iter(some)))))
    assert {i for i, _ in partial.result.item_scores} <= members
    assert not full.partial and full.result != partial.result

    none = tier.recommend(q, history, NOW, answering=set())
    assert none.partial and none.fallback and none.result.backfill
    expected = [item for item, _ in defaults if item not in history["buy"]][:30]
    assert [i for i, _ in none.result.item_scores] == expected
    assert all(s == 0.0 for _, s in none.result.item_scores)


def test_popular_recent_counts_primary_events_of_the_last_week():
    cfg = config({"indicators": [{"name": "buy", "aliases": ["buy", "order"]}, {"name": "view"}]})
    ago = [1, 6 * DAY, 2 * DAY, 1, 7 * DAY + 1, 7 * DAY, 0]  # the window is [now - 7 days, now)
    columns = from_columns(
        {
            "event": np.array(["buy", "order", "buy", "view", "buy", "buy", "buy"], dtype=object),
            "user": np.array(["u1", "u2", "u3", "u1", "u1", "u2", "u2"], dtype=object),
            "target": np.array(["b", "a", "a", "c", "old", "b", "future"], dtype=object),
            "time": NOW - np.array(ago, dtype=np.int64),
        }
    )
    assert popular_recent(columns, cfg, NOW) == (("a", 2.0), ("b", 2.0))
    assert popular_recent(columns, cfg, NOW, limit=1) == (("a", 2.0),)
    assert popular_recent(columns, cfg, NOW - 30 * DAY) == ()


# -- route ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0]), min_size=3 * k, max_size=3 * k),
            st.integers(1, k + 2),
        )
    )
)
def test_route_orders_clusters_by_cosine_then_id(case):
    k, cells, fan_out = case
    signatures_t = np.array(cells, dtype=np.float32).reshape(3, k)
    context = Context(np.array([0, 2]), np.array([1.0, 2.0]))
    sims = context.weights @ signatures_t[context.columns]
    expected = sorted(range(k), key=lambda c: (-sims[c], c))[:fan_out]
    assert route(context, signatures_t, fan_out).tolist() == expected
    assert route(context, signatures_t, None).tolist() == sorted(range(k), key=lambda c: (-sims[c], c))  # fmt: skip
    empty = Context(np.zeros(0, dtype=np.int64), np.zeros(0))
    assert route(empty, signatures_t, 1).tolist() == list(range(k))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_batched_contexts_and_routes_equal_single_ones(data):
    model, _, items = data.draw(scenarios())
    k = data.draw(st.integers(1, 4))
    labels = data.draw(st.lists(st.integers(0, k - 1), min_size=len(model), max_size=len(model)))
    router = LocalShards(model, clusters_of(model, np.array(labels), k)).router
    requests = []
    for _ in range(data.draw(st.integers(1, 6))):
        q, history = data.draw(queries(items))
        try:
            router.allowed_events(q)
        except InvalidQuery:
            continue
        requests.append((q, history))
    batch = router.contexts(requests)
    fan_out = data.draw(st.none() | st.integers(1, k))
    routes = route_many(batch, router.signatures_t, fan_out)
    for row, (q, history) in enumerate(requests):
        single = router.context(q, history)
        got = batch.getrow(row)
        assert sorted(got.indices.tolist()) == sorted(single.columns.tolist())
        expected = dict(zip(single.columns.tolist(), single.weights.tolist(), strict=True))
        for column, weight in zip(got.indices.tolist(), got.data.tolist(), strict=True):
            assert abs(weight - expected[column]) <= 1e-12 * expected[column]
        assert routes[row].tolist() == router.route(single, fan_out).tolist()
