"""The id map: lookups both ways, files, and its memory per byte of id (DESIGN §6: <= 1.5)."""

from __future__ import annotations

import gc
import tracemalloc
import uuid
import zlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crossrec.core.idmap import IdMap, crc32_many


@given(st.lists(st.text(min_size=0, max_size=30), unique=True, max_size=200))
def test_round_trip(ids):
    m, position = IdMap.build(ids)
    assert len(m) == len(ids)
    for i, key in enumerate(ids):
        assert m.index(key) == position[i]
        assert m[int(position[i])] == key
        assert key in m
    assert sorted(m.to_arrow().to_pylist()) == sorted(ids)
    again = IdMap.from_arrow(m.to_arrow())
    assert again.to_arrow().equals(m.to_arrow())
    if ids:
        np.testing.assert_array_equal(m.indices(pa.array(ids)), position)
        np.testing.assert_array_equal(m.indices(list(ids)), position)


def test_unknown_ids_and_errors():
    m, _ = IdMap.build(["a", "bb", "ccc", "é"])
    assert m.index("zz") == -1 and m.get("zz") is None and "zz" not in m and 3 not in m
    assert m.indices(["a", "nope"]).tolist() == [m.index("a"), -1]
    with pytest.raises(IndexError):
        m[4]
    with pytest.raises(ValueError, match="distinct"):
        IdMap.build(["x", "y", "x"])
    with pytest.raises(ValueError, match="null"):
        IdMap.build(pa.array(["x", None]))
    assert len(IdMap.build([])[0]) == 0 and IdMap.build([])[0].index("a") == -1


def test_from_arrow_rejects_a_foreign_order():
    ids = [f"item-{i}" for i in range(100)]
    m, _ = IdMap.build(ids)
    if m.to_arrow().to_pylist() != ids:
        with pytest.raises(ValueError, match="order"):
            IdMap.from_arrow(pa.array(ids))


def test_vectorised_crc_equals_zlib():
    words = [b"", b"a", b"hello", "ünïcödé".encode(), bytes(range(256)) * 3]
    data = np.frombuffer(b"".join(words), dtype=np.uint8)
    lengths = np.array([len(w) for w in words])
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    assert crc32_many(data, starts, lengths).tolist() == [zlib.crc32(w) for w in words]


def test_long_ids_widen_the_length_array():
    ids = ["x" * 300, "y" * 70_000, "z"]
    m, position = IdMap.build(ids)
    assert [m[int(p)] for p in position] == ids


def _held_bytes(ids: pa.Array) -> tuple[IdMap, int]:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        m, position = IdMap.build(ids)
        del position
        gc.collect()
        return m, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def _base62(x: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    out = ""
    while x:
        x, r = divmod(x, 62)
        out = digits[r] + out
    return out


def test_short_ids_get_larger_buckets():
    from crossrec.core.idmap import ids_per_bucket

    assert ids_per_bucket(1000, 6000) == 8  # 6 bytes an id: 2 bytes of overhead fit
    assert ids_per_bucket(1000, 3600) == 16
    assert ids_per_bucket(1000, 2500) == 32
    assert ids_per_bucket(1000, 1000) == 64  # the largest; 1-byte ids cannot fit 1.5
    m, position = IdMap.build([str(i) for i in range(1, 2470)])  # Complete Journey's households
    assert [m[int(p)] for p in position] == [str(i) for i in range(1, 2470)]
    assert IdMap.from_arrow(m.to_arrow()).index("2469") == m.index("2469")
    assert m.nbytes / m.id_bytes <= 1.5


@pytest.mark.parametrize(
    "kind",
    ["uuid", "sku", "user", "short"],
)
def test_memory_per_id_byte_is_at_most_one_and_a_half(kind):
    """1M realistic ids; tracemalloc sees every numpy and bytes allocation the map keeps."""
    rng = np.random.default_rng(0)
    n = 1_000_000
    if kind == "uuid":
        ids = [str(uuid.UUID(int=int(x))) for x in rng.integers(0, 2**63, n)]
    elif kind == "sku":
        ids = [f"B0{x:08X}" for x in rng.choice(2**32, n, replace=False)]
    elif kind == "user":
        ids = [f"user-{x}" for x in rng.permutation(n) + 10_000_000]
    else:  # 3-4 characters, as Complete Journey's household ids (3.6 bytes on average)
        ids = [_base62(int(x)) for x in rng.permutation(n) + 4_000]
    ids = list(dict.fromkeys(ids))
    arr = pa.array(ids)
    id_bytes = sum(len(s.encode()) for s in ids)
    m, held = _held_bytes(arr)
    ratio = held / id_bytes
    print(f"{kind}: {held / len(ids):.1f} bytes per id, {ratio:.3f} bytes per id byte")
    assert ratio <= 1.5
    assert m.nbytes <= held <= m.nbytes + 4096
