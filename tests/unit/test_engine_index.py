"""The engine's building blocks: id lookups, keyword terms, the updatable property index, history
selection."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from crossrec.core.idmap import IdMap
from crossrec.core.model import Correlators
from crossrec.query.history import recent, round_robin
from crossrec.query.index import Ids, IndicatorIndex, Postings, PropertyIndex, keywords
from crossrec.query.kernels import mask_scores, scatter_add
from crossrec.query.scoring import MARGIN, candidates


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.text(min_size=0, max_size=8), unique=True, min_size=1, max_size=60),
    st.lists(st.text(max_size=8), max_size=30),
    st.sampled_from(["dict", "compiled"]),
)
def test_ids_find_exactly_the_known_ids(known, probes, lookup):
    ids = Ids(IdMap.build(known)[0], dict_up_to=4096 if lookup == "dict" else 0)
    order = list(IdMap.build(known)[0])
    keys = [*known, *probes]  # any text: empty, NUL, non-ASCII
    expected = [order.index(k) if k in known else -1 for k in keys]
    assert ids.index(keys).tolist() == expected
    assert [int(ids.index([k])[0]) for k in keys] == expected
    assert ids.index([]).tolist() == []
    assert ids.ids(range(len(order))) == order and ids.id(0) == order[0]


def test_ids_that_share_a_crc():
    known = ["plumless", "buckeroo", *(f"x{k}" for k in range(20))]  # the first two: one CRC-32
    ids = Ids(IdMap.build(known)[0], dict_up_to=0)
    order = list(IdMap.build(known)[0])
    keys = ["buckeroo", "plumless", *(f"x{k}" for k in range(12)), "plumles"]
    assert ids.index(keys).tolist() == [order.index(k) if k in known else -1 for k in keys]
    assert ids.index(["buckeroo"]).tolist() == [order.index("buckeroo")]


def test_keywords_follow_elasticsearch_keyword_fields():
    assert keywords("a") == ("a",)
    assert keywords(["a", "b", "a"]) == ("a", "b")
    assert keywords([3, 2.5, True, None, ["x"]]) == ("3", "2.5", "true", "x")
    assert keywords({"nested": 1}) == () and keywords(None) == ()


def test_property_index_updates():
    props = [{"c": ["a", "b"]}, {"c": "a", "id": ["x"], "buy": ["y"]}, None, {"c": []}]
    index = PropertyIndex(props, frozenset({"id", "buy"}))
    assert set(index.fields) == {"c"} and index.n_field == {"c": 2}
    docs, weights = index.postings("c", ["a", "a", "b", "z"])
    assert sorted(docs.tolist()) == [0, 0, 1]
    assert np.allclose(sorted(weights), sorted([np.log1p(0.5 / 2.5)] * 2 + [np.log1p(1.5 / 1.5)]))
    index.update(
        [(0, props[0], {"c": ["b"], "d": [1]}), (2, None, {"c": ["a"]}), (1, props[1], None)]
    )
    assert {v: a.tolist() for v, a in index.fields["c"].items()} == {"a": [2], "b": [0]}
    assert index.n_field == {"c": 2, "d": 1} and index.fields["d"]["1"].tolist() == [0]
    index.update([(0, {"c": ["b"], "d": [1]}, None)])
    assert index.n_field == {"c": 1} and "d" not in index.fields


def test_round_robin_takes_by_recency_rank():
    assert round_robin([5, 1, 3], 6) == [3, 1, 2]
    assert round_robin([5, 1, 3], 100) == [5, 1, 3]
    assert round_robin([4, 4], 3) == [2, 1]
    assert round_robin([], 3) == []


def test_recent_with_times_merges_aliases_and_takes_the_newest():
    streams = [
        [(["a", "b", "c"], [90, 50, 10]), (["d"], [70])],  # two aliases of one indicator
        [(["e", "f"], [80, 60])],
    ]
    assert recent(streams, [3, 5], 4) == [["a", "d"], ["e", "f"]]
    assert recent(streams, [3, 5], 100) == [["a", "d", "b"], ["e", "f"]]
    untimed = [[(t, None) for t, _ in parts] for parts in streams]
    assert recent(untimed, [3, 5], 4) == [["a", "b"], ["e", "f"]]
    assert recent([[(["a", "a", "b"], None)]], [3], 10) == [["a", "b"]]  # capped, then distinct


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.tuples(st.integers(0, 50), st.sampled_from("abcdefgh")), max_size=12)),
    st.data(),
)
def test_recent_one_alias_each_as_the_general_merge(indicators, data):
    """With one timed alias per indicator `recent` skips the merge; the result is the same as
    with a second, empty alias (which takes the general path)."""
    streams = []
    for events in indicators:
        events = sorted(events, key=lambda e: -e[0])  # newest first, as Redis gives them
        streams.append([([x for _, x in events], [t for t, _ in events])])
    caps = [data.draw(st.integers(1, 8)) for _ in streams]
    budget = data.draw(st.integers(1, 30))
    with_empty = [[*parts, ([], [])] for parts in streams]
    assert recent(streams, caps, budget) == recent(with_empty, caps, budget)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40))
def test_a_dense_indicator_sums_per_class_exactly_as_per_document(seed, n_query):
    """Documents sharing a correlator set form classes; a query's per-class sums, copied to the
    documents, have the bits of the per-document sums and of a plain loop over the values in
    descending order."""
    rng = np.random.default_rng(seed)
    profiles = [rng.choice(60, int(rng.integers(3, 20)), replace=False) for _ in range(50)]
    rows = [profiles[int(p)] for p in rng.integers(0, 50, 2000)]
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    indices = np.concatenate(rows).astype(np.int32)
    vocabulary = IdMap.build([f"c{k}" for k in range(60)])[0]
    correlators = Correlators("cat", vocabulary, indptr, indices, np.ones(len(indices), np.float32))
    index = IndicatorIndex(correlators, len(rows))
    assert index.classes is not None
    values = np.sort(rng.choice(60, min(n_query, 60), replace=False))[::-1]
    weights = rng.random(len(values)) * 3

    per_class = np.zeros(index.classes.count)
    scatter_add(*index.classes.postings, values, weights, per_class)
    per_doc = np.zeros(len(rows))
    scatter_add(*index.postings, values, weights, per_doc)
    expected = np.zeros(len(rows))
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        for d, row in enumerate(rows):
            if v in row:
                expected[d] += w
    assert per_doc.tolist() == expected.tolist()
    assert per_class[index.classes.of].tolist() == expected.tolist()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300_000))
def test_postings_span_blocks_of_65536_rows(seed, n_rows):
    """Postings keep 2-byte row offsets per block of 65,536 rows: the rows of any values, and a
    weighted scatter over them, are those of the plain (value, row) pairs, in order."""
    rng = np.random.default_rng(seed)
    n_values = int(rng.integers(1, 50))
    pairs = np.unique(rng.integers(0, n_values * n_rows, int(rng.integers(0, 5000))))
    values, rows = pairs // n_rows, pairs % n_rows  # sorted by value, then row
    postings = Postings.build(values, rows, n_values, n_rows)
    assert postings.counts.tolist() == np.bincount(values, minlength=n_values).tolist()
    asked = rng.choice(n_values, int(rng.integers(1, n_values + 1)), replace=False)
    assert postings.rows(asked).tolist() == [
        int(r) for v in asked.tolist() for r in rows[values == v]
    ]
    weights = rng.random(len(asked))
    out, expected = np.zeros(n_rows), np.zeros(n_rows)
    scatter_add(*postings, asked, weights, out)
    for v, w in zip(asked.tolist(), weights.tolist(), strict=True):
        expected[rows[values == v]] += w
    assert out.tolist() == expected.tolist()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6) | st.just(0.0), st.booleans()), max_size=300))
def test_mask_scores_has_numpys_bits(pairs):
    scores = np.array([s for s, _ in pairs], dtype=np.float64)
    mask = np.array([m for _, m in pairs], dtype=bool)
    expected = scores * mask
    mask.flags.writeable = False  # as the kept live mask
    mask_scores(mask, scores)
    assert scores.tobytes() == expected.tobytes()


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(0, 5000))
def test_candidates_are_every_score_that_reaches_the_floor(seed, k, n):
    """The top-k's candidates (found by the compiled scan of the blocks whose maximum reaches
    the floor) are exactly the documents, ascending, whose score reaches the floor numpy
    computes from the block maxima; ties at few distinct values and a tail after the blocks
    included."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(n) * rng.integers(1, 20), int(rng.integers(0, 3)))
    scores[rng.random(n) < rng.random()] = 0.0
    if n and rng.random() < 0.5:  # a best score at the end: in the tail after the blocks
        scores[-1] = scores.max() + 1
    found = candidates(scores, k)
    blocks = 4 * k
    size = n // blocks
    if size < 16:
        assert found.tolist() == np.flatnonzero(scores).tolist()
        return
    tops = scores[: blocks * size].reshape(blocks, size).max(axis=1)
    positive = np.sort(tops[tops > 0])
    if len(positive) < k:
        assert found.tolist() == np.flatnonzero(scores).tolist()
        return
    floor = positive[-k] - MARGIN
    assert found.tolist() == np.flatnonzero(scores >= floor).tolist()
    assert len(found) >= k
