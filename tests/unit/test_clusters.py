"""Item clusters: sizes within the capacity, signatures, determinism, files."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.fs as pafs
import pytest
from engine_reference import build_model, config
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sharding import worlds

from crossrec.core import clusters as cl
from crossrec.core.clusters import cluster_model, clusters_of, load_clusters, save_clusters


def test_worlds_become_pure_balanced_clusters_with_unit_signatures():
    model, _, _ = worlds(n_worlds=6, items_per_world=10)
    clusters = cluster_model(model, 6, slack=1.2)
    assert clusters.k == 6 and clusters.version == model.version
    assert sorted(clusters.sizes().tolist()) == [10] * 6
    world_of = np.array([int(item[1]) for item in model.documents])
    assert all(len(set(world_of[clusters.members(c)])) == 1 for c in range(6))
    s = clusters.signatures
    assert s.shape == (6, clusters.offsets[-1]) and s.dtype == np.float32
    assert np.allclose(np.sqrt(s.multiply(s).sum(axis=1)).A.ravel(), 1.0)
    # a value held only by one cluster's documents has all its share there
    dense = s.toarray()
    assert ((dense > 0).sum(axis=0) <= 1).all()


def test_k_from_a_target_size_and_determinism():
    model, _, _ = worlds(n_worlds=4, items_per_world=12, seed=3)
    a = cluster_model(model, target_size=16, seed=7)
    b = cluster_model(model, target_size=16, seed=7)
    assert a.k == 3 and np.array_equal(a.labels, b.labels)
    assert (a.signatures != b.signatures).nnz == 0
    with pytest.raises(ValueError, match="target_size"):
        cluster_model(model)
    assert cluster_model(model, 1000).k == len(model)  # at most one cluster per document


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 9), st.sampled_from([1.0, 1.3, 2.0]))
def test_sizes_stay_within_the_capacity(seed, k, slack):
    rng = np.random.default_rng(seed)
    items = [f"i{j:03d}" for j in range(int(rng.integers(1, 80)))]
    vocabulary = [*items, "x", "y"]
    rows = {
        i: list(
            rng.choice(vocabulary, int(rng.integers(0, min(6, len(vocabulary)))), replace=False)
        )
        for i in items
    }
    cfg = config({"eventNames": ["buy"], "rankings": []})
    model = build_model(cfg, {"buy": rows}, {}, {}, items)
    clusters = cluster_model(model, k, slack=slack, seed=seed)
    n, k = len(model), clusters.k
    assert k == min(k, n) and clusters.sizes().sum() == n
    assert clusters.sizes().max() <= math.ceil(slack * n / k) + 1


def test_documents_without_correlators_fill_the_smallest_clusters():
    assert cl._fill(np.array([5, 1, 3]), 4).tolist() == [1, 1, 1, 2]
    assert np.bincount(cl._fill(np.array([0, 0]), 5), minlength=2).tolist() == [3, 2]
    assert cl._fill(np.array([2]), 0).tolist() == []
    cfg = config({"eventNames": ["buy"], "rankings": []})
    items = [f"i{j}" for j in range(10)]
    model = build_model(cfg, {"buy": {}}, {}, {}, items)
    assert cluster_model(model, 3).sizes().tolist() == [4, 3, 3]


def test_capacity_assignment_prefers_the_strongest_claims():
    affinity = np.array([[3.0, 0.0], [2.0, 1.0], [1.0, 0.5], [0.0, 1.0]])
    assert cl._capacity_assign(affinity, 2).tolist() == [0, 0, 1, 1]


def test_clusters_of_checks_labels():
    model, _, _ = worlds(n_worlds=2, items_per_world=4)
    with pytest.raises(ValueError):
        clusters_of(model, np.zeros(len(model) - 1, dtype=int), 2)
    with pytest.raises(ValueError):
        clusters_of(model, np.full(len(model), 2), 2)


def test_save_and_load_beside_the_model(tmp_path):
    model, _, _ = worlds(n_worlds=3, items_per_world=5)
    clusters = cluster_model(model, 3)
    clusters = cl.Clusters(**{**clusters.__dict__, "defaults": (("w0-i01", 3.0), ("é", 1.0))})
    fs, directory = pafs.LocalFileSystem(), f"{tmp_path}/app/{model.version}"
    manifest = save_clusters(fs, directory, clusters)
    assert manifest["k"] == 3 and manifest["sizes"] == clusters.sizes().tolist()
    loaded = load_clusters(fs, directory)
    assert np.array_equal(loaded.labels, clusters.labels)
    assert np.array_equal(loaded.offsets, clusters.offsets)
    assert (loaded.signatures != clusters.signatures).nnz == 0
    assert loaded.defaults == clusters.defaults and loaded.params == clusters.params
    path = f"{directory}/clusters.npz"
    with open(path, "rb") as f:
        payload = bytearray(f.read())
    payload[-1] ^= 0xFF
    with open(path, "wb") as f:
        f.write(payload)
    with pytest.raises(ValueError, match="checksum"):
        load_clusters(fs, directory)
