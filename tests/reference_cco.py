"""A brute-force CCO reference written straight from UR-SPEC §2 (no numpy sparse), shared by the
unit and end-to-end tests."""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict

import numpy as np
import pytest


def mahout_llr(k11: int, k12: int, k21: int, k22: int) -> float:
    def xlogx(x: int) -> float:
        return 0.0 if x == 0 else x * math.log(x)

    def entropy(*xs: int) -> float:
        return xlogx(sum(xs)) - sum(xlogx(x) for x in xs)

    row, col = entropy(k11 + k12, k21 + k22), entropy(k11 + k21, k12 + k22)
    mat = entropy(k11, k12, k21, k22)
    return 0.0 if row + col < mat else 2.0 * (row + col - mat)


def brute_force(events, *, top_k, min_llr=None, min_events=None):
    """events: list per indicator of (user, target) pairs; the first is primary.

    Returns per indicator {primary item: [(target, llr), ...]} with every candidate that passes
    the filters, best first by (float32 LLR desc, target asc), truncated to top_k.
    """
    raw = Counter(u for u, _ in events[0])
    users = {u for u, c in raw.items() if c >= max(1, min_events or 1)}
    n = len(users)
    did = [defaultdict(set) for _ in events]  # per indicator: user -> targets
    for k, pairs in enumerate(events):
        for u, t in pairs:
            if u in users:
                did[k][u].add(t)
    a = Counter(i for u in users for i in did[0][u])
    out = []
    for k in range(len(events)):
        b = Counter(j for u in users for j in did[k][u])
        co = Counter((i, j) for u in users for i in did[0][u] for j in did[k][u])
        rows = defaultdict(list)
        for (i, j), c in co.items():
            if k == 0 and i == j:
                continue
            k11, k12, k21, k22 = c, a[i] - c, b[j] - c, n - a[i] - b[j] + c
            if k11 * k22 == k12 * k21:  # independent: LLR is exactly 0
                continue
            value = mahout_llr(k11, k12, k21, k22)
            if value <= 0 or (min_llr is not None and value < min_llr):
                continue
            rows[i].append((j, value))
        for i in rows:
            rows[i].sort(key=lambda e: (-np.float32(e[1]), e[0]))
        out.append({i: r[:top_k] for i, r in rows.items()} | {"_all": dict(rows)})
    return out


def assert_rows_match(
    got: list[tuple], expected: list[tuple], everything: list[tuple], top_k: int
) -> None:
    """Equal lists, tolerating only the order of near-equal LLRs (float round-off)."""
    assert len(got) == len(expected) == min(top_k, len(everything))
    reference = dict(everything)
    tol = 1e-9
    for (j, value), (_, ref_value) in zip(got, expected, strict=True):
        assert j in reference
        assert value == pytest.approx(reference[j], rel=1e-6)
        assert value == pytest.approx(ref_value, rel=1e-6)
    chosen = {j for j, _ in got}
    worst = min(reference[j] for j in chosen) if chosen else math.inf
    for j, value in everything:
        if j not in chosen:
            assert value <= worst * (1 + tol) + tol
    for (j1, v1), (j2, v2) in itertools.pairwise(got):
        assert v1 >= v2
        if v1 == v2:
            assert j1 < j2 or abs(reference[j1] - reference[j2]) > tol * reference[j1]
    if got != [(j, np.float32(v)) for j, v in expected]:  # only near-ties may differ
        for (j1, _), (j2, _) in zip(got, expected, strict=True):
            assert abs(reference[j1] - reference[j2]) <= tol * max(reference[j1], 1)
