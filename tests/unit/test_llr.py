"""LLR: Mahout's test vectors (UR-SPEC §2.5), and the trainer's table form against the textbook one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crossrec.core.llr import llr, llr_counts, xlogx_table

VECTORS = [
    ((1, 0, 0, 1), 2.772588722239781),
    ((1, 1, 1, 1), 0.0),
    ((2, 1, 1, 4), 1.7619025653769569),
    ((10, 0, 0, 10), 27.725887222397787),
    ((100, 100, 100, 10000), 573.4342524575186),
    ((1, 9, 9, 981), 2.9748299064649473),
    ((5, 0, 0, 1000), 63.00813210267006),
    ((3, 1, 2, 1), 0.058008073474255184),
]


def test_vectors():
    counts = np.array([v for v, _ in VECTORS])
    expected = np.array([e for _, e in VECTORS])
    np.testing.assert_allclose(llr(*counts.T), expected, rtol=1e-14, atol=0)


def test_vectors_from_marginals():
    for (k11, k12, k21, k22), expected in VECTORS:
        n = k11 + k12 + k21 + k22
        got = llr_counts(k11, k11 + k12, k11 + k21, n)
        assert float(got) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_negative_counts_are_rejected():
    with pytest.raises(ValueError):
        llr([1], [-1], [0], [0])


@given(
    st.lists(
        st.tuples(
            st.integers(0, 500), st.integers(0, 500), st.integers(0, 500), st.integers(0, 500)
        ),
        min_size=1,
    )
)
def test_table_form_equals_textbook_form(tables):
    t = np.array(tables)
    k, a, b, n = t[:, 0], t[:, 0] + t[:, 1], t[:, 0] + t[:, 2], t.sum(axis=1)
    np.testing.assert_allclose(llr_counts(k, a, b, n), llr(*t.T), rtol=1e-9, atol=1e-8)


@given(st.integers(1, 3000), st.data())
def test_table_form_is_exactly_symmetric(n, data):
    a = data.draw(st.integers(0, n))
    b = data.draw(st.integers(0, n))
    k = data.draw(st.integers(max(0, a + b - n), min(a, b)))
    table = xlogx_table(n)
    assert llr_counts(k, a, b, n, table) == llr_counts(k, b, a, n, table)
