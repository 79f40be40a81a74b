"""Item clusters of a model version, for the sharded serving tier (DESIGN §3 "router and workers").

The documents of a model are split into K clusters so that documents that correlate land together:
a query's best results then sit in a few clusters, and the router finds those from a signature
per cluster.

Space. Every indicator's correlator values, side by side: column `offsets[k] + v` is value v of
indicator k (its vocabulary index). A document is its row of correlators there (weight idf_k(v),
as the engine scores); a query's context vector is its history (item, item set) there.

Clustering (`cluster_model`): a spectral co-clustering of the document x value matrix W
(Dhillon 2001): the leading singular vectors of D_r^-1/2 W D_c^-1/2 (randomised SVD with power
iterations, numpy/scipy only) embed the documents so that documents sharing correlators are
close; k-means (scipy.cluster.vq.kmeans2, k-means++) on the row-normalised embedding, assigned
under a capacity of `slack` x the mean size, then a few rounds that move each document to the
cluster whose signature its row matches best (the router's own criterion), under the same
capacity. Documents without correlators (never scored by history) fill the smallest clusters.
The default capacity is 3 x the mean: the documents most queries retrieve (those correlated with
the most bought items) gather in one or two clusters that nearly every query touches, and
splitting them costs recall (Complete Journey, K = 16, 25 % of clusters touched: recall@20
0.90 at slack 1.5, 0.93 at 2, 0.95 at 3; loadtest/bench_router.py). Those hot clusters are the
ones that get more worker replicas.

Signature: per cluster c and value v, the share of the documents holding v that are in c,
count_c(v) / count(v), L2-normalised per cluster: cosine(context, signature) is a vote of the
context's values for the clusters where their documents live. Rows of a CSR matrix (K x columns).

Files, beside the model's in its version directory: `clusters.npz` (labels per document, column
offsets, the signature CSR) and `clusters.json` (written last: format, model version, k, sizes,
parameters, the default recommendations, sha256 of the npz).
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow.fs as pafs
import scipy.sparse as sp
from scipy.cluster.vq import kmeans2

from crossrec.core.model import Model

FORMAT = "crossrec-clusters/1"
NPZ, MANIFEST = "clusters.npz", "clusters.json"


@dataclass(frozen=True)
class Clusters:
    version: str  # the model version clustered
    labels: np.ndarray  # int32 cluster per document (document index order)
    signatures: sp.csr_matrix  # float32, K x columns, rows of unit L2 norm (or empty)
    offsets: np.ndarray  # int64 per indicator (+1): its first column; the last is the width
    defaults: tuple[tuple[str, float], ...] = ()  # popular items (count) for the fallback
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.signatures.shape[0]

    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.k)

    def members(self, cluster: int) -> np.ndarray:
        """Document indices of one cluster, ascending."""
        return np.flatnonzero(self.labels == cluster)


def idf(n_field: int, n_value: np.ndarray) -> np.ndarray:
    """As crossrec.query.index.idf: ln(1 + (N_f - n + 0.5) / (n + 0.5))."""
    return np.log1p((n_field - n_value.astype(np.float64) + 0.5) / (n_value + 0.5))


def offsets_of(model: Model) -> np.ndarray:
    return np.cumsum([0, *(len(c.vocabulary) for c in model.correlators)]).astype(np.int64)


def correlator_matrix(model: Model, weighted: bool = True) -> sp.csr_matrix:
    """Documents x columns: 1 (or idf of the value) where a document holds a correlator value."""
    blocks = []
    n = len(model)
    for c in model.correlators:
        width = len(c.vocabulary)
        if weighted:
            per_doc = np.diff(c.indptr)
            weights = idf(int(np.count_nonzero(per_doc)), np.bincount(c.indices, minlength=width))
            data = weights[c.indices].astype(np.float32)
        else:
            data = np.ones(len(c.indices), dtype=np.float32)
        blocks.append(sp.csr_matrix((data, c.indices, c.indptr), shape=(n, width)))
    if not blocks:
        return sp.csr_matrix((n, 0), dtype=np.float32)
    return sp.hstack(blocks, format="csr", dtype=np.float32)


def _shares(matrix: sp.csr_matrix, labels: np.ndarray, k: int) -> np.ndarray:
    """Dense K x columns: per cluster the share of each value's documents in it, unit rows."""
    width = matrix.shape[1]
    rows = np.repeat(labels.astype(np.int64), np.diff(matrix.indptr))
    counts = np.bincount(rows * width + matrix.indices, minlength=k * width).reshape(k, width)
    shares = counts / np.maximum(counts.sum(axis=0), 1)
    norms = np.linalg.norm(shares, axis=1, keepdims=True)
    return (shares / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def signatures_of(matrix: sp.csr_matrix, labels: np.ndarray, k: int) -> sp.csr_matrix:
    """The clusters' signatures (see the module's doc) as a CSR matrix, K x columns."""
    return sp.csr_matrix(_shares(matrix, labels, k))


def cluster_model(
    model: Model,
    k: int | None = None,
    *,
    target_size: int | None = None,
    slack: float = 3.0,
    refine: int = 5,
    seed: int = 0,
) -> Clusters:
    """K clusters (`k`, or documents / `target_size`) of at most about `slack` x the mean size."""
    n = len(model)
    if k is None:
        if not target_size or target_size < 1:
            raise ValueError("give k or a positive target_size")
        k = max(1, round(n / target_size))
    if k < 1 or slack < 1:
        raise ValueError(f"k must be >= 1 and slack >= 1, got k={k}, slack={slack}")
    k = min(k, max(n, 1))
    matrix = correlator_matrix(model)
    labels = _partition(matrix, k, slack, refine, np.random.default_rng(seed))
    params = {"method": "spectral-coclustering", "slack": slack, "refine": refine, "seed": seed}
    return clusters_of(model, labels, k, params, matrix)


def clusters_of(
    model: Model,
    labels: np.ndarray,
    k: int,
    params: dict[str, Any] | None = None,
    matrix: sp.csr_matrix | None = None,
) -> Clusters:
    """Clusters from a given partition (cluster per document, 0 <= label < k)."""
    labels = np.asarray(labels, dtype=np.int32)
    if len(labels) != len(model) or (len(labels) and not 0 <= labels.min() <= labels.max() < k):
        raise ValueError(f"need one label in [0, {k}) per document ({len(model)})")
    matrix = correlator_matrix(model) if matrix is None else matrix
    signatures = signatures_of(matrix, labels, k)
    return Clusters(model.version, labels, signatures, offsets_of(model), params=params or {})


def _partition(
    matrix: sp.csr_matrix, k: int, slack: float, rounds: int, rng: np.random.Generator
) -> np.ndarray:
    n = matrix.shape[0]
    labels = np.zeros(n, dtype=np.int64)
    live = np.flatnonzero(np.diff(matrix.indptr) > 0)
    if k > 1 and len(live) > k:
        rows = matrix[live]
        cap = math.ceil(slack * len(live) / k)
        embedding = _embedding(rows, k, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "one of the clusters is empty": capacity fixes it
            centroids, _ = kmeans2(embedding, k, minit="++", seed=rng, iter=30)
        # -|e - c|^2 up to a constant per row (the rows have unit norm)
        closeness = 2 * embedding @ centroids.T - (centroids**2).sum(axis=1)
        part = _capacity_assign(closeness, cap)
        norms = np.sqrt(np.asarray(rows.multiply(rows).sum(axis=1)).ravel())
        for _ in range(rounds):
            affinity = (rows @ _shares(rows, part, k).T) / norms[:, None]
            moved = _capacity_assign(affinity, cap)
            if np.bincount(moved, minlength=k).min() == 0:
                break  # a cluster emptied: keep the last partition that uses all k
            part = moved
        labels[live] = part
    elif k > 1:
        labels[live] = np.arange(len(live))
    rest = np.setdiff1d(np.arange(n), live)
    labels[rest] = _fill(np.bincount(labels[live], minlength=k), len(rest))
    return labels


def _embedding(rows: sp.csr_matrix, k: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of the leading left singular vectors of D_r^-1/2 W D_c^-1/2 but the first (trivial),
    L2-normalised (float64 for k-means)."""
    rows = rows.astype(np.float32)
    d_row = np.asarray(rows.sum(axis=1)).ravel()
    d_col = np.asarray(rows.sum(axis=0)).ravel()
    inv_col = 1.0 / np.sqrt(np.where(d_col > 0, d_col, 1.0))
    a = (sp.diags(1.0 / np.sqrt(d_row)) @ rows @ sp.diags(inv_col)).astype(np.float32).tocsr()
    dims = min(k, *a.shape)
    if min(a.shape) <= dims + 10:
        u = np.linalg.svd(a.toarray(), full_matrices=False)[0][:, :dims]
    else:
        u = _randomized_svd(a, dims, rng)
    vectors = u[:, 1:] if dims > 1 else u
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float64)


def _randomized_svd(
    a: sp.csr_matrix, dims: int, rng: np.random.Generator, power: int = 3
) -> np.ndarray:
    """Left singular vectors (Halko, Martinsson, Tropp 2011), with QR between power iterations."""
    sample = rng.standard_normal((a.shape[1], dims + 10)).astype(np.float32)
    y = a @ sample
    at = a.T.tocsr()
    for _ in range(power):
        y, _ = np.linalg.qr(y)
        y = a @ (at @ y)
    q, _ = np.linalg.qr(y)
    small = (at @ q).T
    u = np.linalg.svd(small, full_matrices=False)[0]
    return q @ u[:, :dims]


def _capacity_assign(affinity: np.ndarray, cap: int) -> np.ndarray:
    """Each row to its best column, at most `cap` rows per column: every round, the rows still
    unplaced propose to their best open column, which keeps its best proposals up to its room;
    a refused row never proposes to that column again."""
    n, k = affinity.shape
    affinity = affinity.astype(np.float64, copy=True)
    labels = np.full(n, -1, dtype=np.int64)
    room = np.full(k, cap, dtype=np.int64)
    todo = np.arange(n)
    while len(todo):
        best = affinity[todo].argmax(axis=1)
        order = np.lexsort((todo, -affinity[todo, best], best))
        best, rows = best[order], todo[order]
        rank = np.arange(len(rows)) - np.searchsorted(best, best)
        ok = rank < room[best]
        labels[rows[ok]] = best[ok]
        room -= np.bincount(best[ok], minlength=k)
        affinity[rows[~ok], best[~ok]] = -np.inf
        todo = rows[~ok]
    return labels


def _fill(sizes: np.ndarray, count: int) -> np.ndarray:
    """Clusters for `count` more documents, the smallest clusters first (water filling)."""
    sizes = sizes.astype(np.int64)
    low, high = int(sizes.min()), int(sizes.max()) + count  # the highest level `count` reaches
    while low < high:
        mid = (low + high + 1) // 2
        if np.maximum(mid - sizes, 0).sum() <= count:
            low = mid
        else:
            high = mid - 1
    give = np.maximum(low - sizes, 0)
    extra = count - int(give.sum())  # fewer than the clusters at the level: one more each
    give[np.flatnonzero(sizes <= low)[:extra]] += 1
    return np.repeat(np.arange(len(sizes)), give)


# -- files ------------------------------------------------------------------------------------


def save_clusters(fs: pafs.FileSystem, directory: str, clusters: Clusters) -> dict[str, Any]:
    """Write clusters.npz, then clusters.json (with the npz's checksum); return the manifest."""
    s = clusters.signatures
    buffer = io.BytesIO()
    np.savez(
        buffer,
        labels=clusters.labels,
        offsets=clusters.offsets,
        sig_indptr=s.indptr.astype(np.int64),
        sig_indices=s.indices.astype(np.int32),
        sig_data=s.data.astype(np.float32),
        sig_shape=np.asarray(s.shape, dtype=np.int64),
    )
    payload = buffer.getvalue()
    fs.create_dir(directory, recursive=True)
    with fs.open_output_stream(f"{directory}/{NPZ}") as sink:
        sink.write(payload)
    manifest = {
        "format": FORMAT,
        "version": clusters.version,
        "k": clusters.k,
        "sizes": clusters.sizes().tolist(),
        "params": clusters.params,
        "defaults": [[item, score] for item, score in clusters.defaults],
        "files": {NPZ: {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}},
    }
    with fs.open_output_stream(f"{directory}/{MANIFEST}") as sink:
        sink.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest


def load_clusters(fs: pafs.FileSystem, directory: str, verify: bool = True) -> Clusters:
    with fs.open_input_stream(f"{directory}/{MANIFEST}") as source:
        manifest = orjson.loads(source.read())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{directory}: not {FORMAT}")
    with fs.open_input_stream(f"{directory}/{NPZ}") as source:
        payload = source.read()
    if verify and hashlib.sha256(payload).hexdigest() != manifest["files"][NPZ]["sha256"]:
        raise ValueError(f"{directory}/{NPZ}: checksum mismatch")
    arrays = np.load(io.BytesIO(payload))
    shape = tuple(int(x) for x in arrays["sig_shape"])
    signatures = sp.csr_matrix(
        (arrays["sig_data"], arrays["sig_indices"], arrays["sig_indptr"]), shape=shape
    )
    return Clusters(
        manifest["version"],
        arrays["labels"],
        signatures,
        arrays["offsets"],
        tuple((str(item), float(score)) for item, score in manifest["defaults"]),
        manifest["params"],
    )
