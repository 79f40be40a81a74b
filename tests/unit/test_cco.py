"""CCO against a brute-force reference written straight from UR-SPEC §2 (no numpy, no sparse)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_cco import assert_rows_match, brute_force

from crossrec.core import cco


def run(events, n_targets, *, top_k, min_llr=None, min_events=None, cap=10_000, **kw):
    data = [
        cco.IndicatorData(
            f"ind{k}",
            np.array([u for u, _ in pairs], dtype=np.int64),
            np.array([t for _, t in pairs], dtype=np.int64),
            n_targets[k],
            cap,
            top_k,
            min_llr,
        )
        for k, pairs in enumerate(events)
    ]
    return cco.compute(data, min_events_per_user=min_events, **kw)


def check(events, n_targets, *, top_k, min_llr=None, min_events=None, **kw):
    result = run(events, n_targets, top_k=top_k, min_llr=min_llr, min_events=min_events, **kw)
    reference = brute_force(events, top_k=top_k, min_llr=min_llr, min_events=min_events)
    for k, ref in enumerate(reference):
        corr = result.correlations[f"ind{k}"]
        everything = ref.pop("_all")
        for i in range(n_targets[0]):
            lo, hi = corr.indptr[i], corr.indptr[i + 1]
            got = list(zip(corr.indices[lo:hi].tolist(), corr.llr[lo:hi].tolist(), strict=True))
            assert_rows_match(got, ref.get(i, []), everything.get(i, []), top_k)


pairs = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 5)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    primary=pairs,
    secondary=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 3)), max_size=30),
    top_k=st.integers(1, 5),
    min_llr=st.one_of(st.none(), st.floats(0, 4)),
    min_events=st.one_of(st.none(), st.integers(1, 4)),
)
def test_matches_brute_force(primary, secondary, top_k, min_llr, min_events):
    check([primary, secondary], [6, 4], top_k=top_k, min_llr=min_llr, min_events=min_events)


@settings(max_examples=60, deadline=None)
@given(
    primary=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 30)), max_size=400),
    top_k=st.integers(1, 8),
)
def test_matches_brute_force_with_long_rows_and_small_blocks(primary, top_k):
    # tiny blocks and many entries per row exercise the block split and the histogram cut-off
    check([primary], [31], top_k=top_k, block_flops=7, threads=2)


def test_ties_break_by_target_ascending():
    # every user bought item 0 and one of items 1..4, each bought by exactly one other user too
    events = [(u, 0) for u in range(8)] + [(u, 1 + u % 4) for u in range(8)] + [(9, 5), (10, 5)]
    result = run([events], [6], top_k=3)
    corr = result.correlations["ind0"]
    row = corr.indices[corr.indptr[0] : corr.indptr[1]].tolist()
    llr = corr.llr[corr.indptr[0] : corr.indptr[1]]
    assert row == [1, 2, 3] and len(set(llr.tolist())) == 1


def test_empty_secondary_is_skipped_with_a_warning():
    result = run([[(0, 0), (0, 1), (1, 0)], []], [2, 0], top_k=5)
    assert any("ind1" in w and "skipped" in w for w in result.warnings)
    assert result.correlations["ind1"].indptr.tolist() == [0, 0, 0]


def test_no_primary_events_gives_no_correlators():
    result = run([[], [(0, 0)]], [0, 1], top_k=5)
    assert result.n_items == 0 and any("primary" in w for w in result.warnings)
    assert all(len(c.indices) == 0 for c in result.correlations.values())


def test_users_outside_the_primary_indicator_are_dropped():
    # user 5 only has secondary events: they must not count in b or N
    primary = [(0, 0), (1, 0), (1, 1), (2, 1)]
    secondary = [(0, 0), (1, 0), (5, 0), (5, 1)]
    check([primary, secondary], [2, 2], top_k=5)
    assert run([primary, secondary], [2, 2], top_k=5).n_users == 3


# -- downsampling -------------------------------------------------------------------------------


def _matrix(rng, users, items, density):
    dense = rng.random((users, items)) < density
    rows, cols = np.nonzero(dense)
    return cco.binary_matrix(rows, cols, (users, items))


def test_downsampling_keeps_a_subset_and_is_seeded():
    rng = np.random.default_rng(7)
    m = _matrix(rng, 300, 200, 0.3)
    a = cco.downsample(m, 20, np.random.default_rng(1))
    b = cco.downsample(m, 20, np.random.default_rng(1))
    assert (a != b).nnz == 0
    assert ((a - m.multiply(a)) != 0).nnz == 0  # kept ⊆ original
    assert a.nnz < m.nnz


def test_downsampling_is_a_no_op_under_the_cap():
    m = _matrix(np.random.default_rng(3), 50, 40, 0.2)
    assert cco.downsample(m, 1000, np.random.default_rng(0)) is m


def test_downsampling_samples_heavy_users_instead_of_dropping_them():
    rng = np.random.default_rng(11)
    m = _matrix(rng, 400, 1000, 0.05)  # ~50 items per user, ~20 users per item
    heavy = np.zeros((1, 1000), dtype=bool)
    heavy[0, :900] = True  # one user with 900 items
    import scipy.sparse as sp

    m = sp.vstack([m, sp.csr_matrix(heavy.astype(np.int32))]).tocsr()
    cap = 30
    out = cco.downsample(m, cap, np.random.default_rng(5))
    kept = np.diff(out.indptr)
    before = np.diff(m.indptr)
    assert kept[-1] > 0  # the heavy user is sampled, not dropped
    # each user keeps cap/n_user of its items or fewer in expectation: with a fixed seed the
    # mean kept count stays under the cap with a wide margin for the binomial noise
    assert kept[-1] <= cap * 1.6
    assert kept[before > cap].mean() <= cap * 1.1
    per_item = np.bincount(out.indices, minlength=m.shape[1])
    busy = np.bincount(m.indices, minlength=m.shape[1]) > cap
    assert per_item[busy].mean() <= cap * 1.1
    assert (kept <= before).all()


def test_downsampled_cco_uses_sampled_counts():
    events = [(u, i) for u in range(30) for i in range(12) if (u * 7 + i * 3) % 5 < 3]
    result = run([events], [12], top_k=4, cap=3, seed=42)
    again = run([events], [12], top_k=4, cap=3, seed=42)
    corr, same = result.correlations["ind0"], again.correlations["ind0"]
    assert np.array_equal(corr.indices, same.indices) and np.array_equal(corr.llr, same.llr)
    assert corr.stats["sampled"] < corr.stats["pairs"]


def test_top_k_per_row_matches_a_sort():
    rng = np.random.default_rng(2)
    rows = np.sort(rng.integers(0, 50, 5000))
    cols = rng.permutation(5000)
    llr = rng.choice(np.array([0.5, 1.0, 2.0, 7.25, 7.2500005, 100.0]), 5000) * rng.integers(
        1, 3, 5000
    )
    got = cco.top_k_per_row(rows, cols, llr, 50, 7)
    for r in range(50):
        entries = sorted(
            ((-np.float32(v), c) for rr, c, v in zip(rows, cols, llr, strict=True) if rr == r)
        )[:7]
        mine = got[0] == r
        assert [c for _, c in entries] == got[1][mine].tolist()
