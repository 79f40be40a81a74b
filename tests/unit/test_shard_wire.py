"""The router <-> worker wire format, and ClusterWorker (one process's share of the tier): every
sub-query and answer round-trips exactly; workers that each hear every property change and talk
only through the wire give Engine.recommend's page, and LocalShards' statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_engine import NOW, queries, scenarios
from test_sharding import worlds

from crossrec.core.clusters import clusters_of
from crossrec.core.query import InvalidQuery, Result
from crossrec.query.codec import encode_response, response_to_pio
from crossrec.query.engine import Engine
from crossrec.query.sharding import ClusterWorker, LocalShards, Router
from crossrec.rpc.protocol import JSON, PROTOBUF
from crossrec.shard.wire import (
    SubQuery,
    decode_answer,
    decode_sub_query,
    encode_answer,
    encode_sub_query,
)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_sub_query_round_trips(data):
    q, history = data.draw(queries([f"i{k}" for k in range(5)]))
    times = {name: list(range(len(ids))) for name, ids in history.items()} or None
    sub = SubQuery("v-1", q, history, times, NOW)
    back = decode_sub_query(encode_sub_query(sub))
    assert back.query == q and back.version == "v-1" and back.now_ms == NOW
    assert {k: list(v) for k, v in back.history.items()} == {k: list(v) for k, v in history.items()}
    assert back.times == times


def test_an_answer_round_trips_floats_exactly():
    scores = [("a", 0.1 + 0.2), ("é", 1e-300), ("b", 0.0)]
    result = Result(scores, [{"popRank": 1 / 3}, {}, {"popRank": 7.0}], backfill=True)
    assert decode_answer(encode_answer("v", result)) == ("v", result)
    plain = Result(scores[:1])
    assert decode_answer(encode_answer("v", plain)) == ("v", plain)


@pytest.mark.parametrize("body", [b"", b"{}", b"[1]", b'{"version": "v", "query": {}}'])
def test_malformed_bodies_are_value_errors(body):
    with pytest.raises(ValueError):
        decode_sub_query(body)
    with pytest.raises(ValueError):
        decode_answer(body)


def over_the_wire(router: Router, workers: list[ClusterWorker], q, history, now: int) -> Result:
    sub = router.sub_query(q)
    body = encode_sub_query(SubQuery("v", sub, history, None, now))
    answers = {}
    for c, worker in enumerate(workers):
        got = decode_sub_query(body)
        result = worker.engine.candidates(got.query, got.history, got.now_ms, times=got.times)
        answers[c] = decode_answer(encode_answer("v", result))[1]
    return router.merge(q, answers, range(len(workers))).result


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_workers_through_the_wire_equal_the_engine_before_and_after_changes(data):
    model, updates, items = data.draw(scenarios())
    k = data.draw(st.integers(1, 4))
    labels = data.draw(st.lists(st.integers(0, k - 1), min_size=len(model), max_size=len(model)))
    clusters = clusters_of(model, np.array(labels), k)
    engine, tier = Engine(model), LocalShards(model, clusters)
    workers = [ClusterWorker(model, clusters, c) for c in range(k)]
    for step in range(2):
        for _ in range(3):
            q, history = data.draw(queries(items))
            try:
                expected = engine.recommend(q, history, NOW)
            except InvalidQuery:
                continue
            assert over_the_wire(tier.router, workers, q, history, NOW) == expected
        if step == 0:
            changes = dict(updates)
            engine.update_many(changes)
            tier.update_many(changes)
            for worker in workers:  # every worker hears every change, in one or two batches
                half = len(changes) // 2
                worker.update_many(dict(list(changes.items())[:half]))
                worker.update_many(dict(list(changes.items())[half:]))
                assert worker.stats.n_docs == tier.stats.n_docs
                assert worker.stats.n_field == tier.stats.n_field
                assert worker.stats.counts == tier.stats.counts
            assert sum(len(w.engine) for w in workers) == len(engine)


def test_a_worker_refuses_a_cluster_the_version_lacks():
    model, _, _ = worlds()
    clusters = clusters_of(model, np.zeros(len(model), dtype=int), 1)
    with pytest.raises(ValueError, match="no cluster 1"):
        ClusterWorker(model, clusters, 1)


@pytest.mark.parametrize("content_type", [JSON, PROTOBUF])
def test_a_response_says_partial_only_when_it_is(content_type):
    pio = {"itemScores": [{"item": "a", "score": 1.5}]}
    partial = response_to_pio(
        encode_response(pio, "v", False, content_type, partial=True), content_type
    )
    assert partial == {**pio, "modelVersion": "v", "backfill": False, "partial": True}
    whole = response_to_pio(encode_response(pio, "v", False, content_type), content_type)
    assert "partial" not in whole
