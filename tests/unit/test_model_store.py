"""Model files and the model store: round trip, checksums, the live pointer, bounded pruning."""

from __future__ import annotations

import os

import numpy as np
import pytest

from crossrec.adapters.modelstore import ModelStore
from crossrec.core.config import parse_engine_config
from crossrec.core.model import Model
from crossrec.trainer.build import build_model
from crossrec.trainer.data import from_columns

NOW = 1_717_200_000_000
CONFIG = parse_engine_config(
    {
        "datasource": {"params": {"appName": "shop"}},
        "algorithms": [
            {
                "name": "ur",
                "params": {
                    "eventNames": ["buy", "view"],
                    "rankings": [
                        {"type": "popular"},
                        {"type": "random"},
                        {"type": "userDefined", "name": "score"},
                    ],
                    "dateName": "date",
                },
            }
        ],
    }
)


def small_model(version: str = "v1", seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    n = 400
    columns = {
        "event": rng.choice(["buy", "view"], n),
        "user": np.array([f"u{x}" for x in rng.integers(0, 30, n)]),
        "target": np.array([f"item-{x}" for x in rng.integers(0, 25, n)]),
        "time": NOW - rng.integers(1, 10**9, n),
    }
    props = {
        "item-1": {"cat": ["a"], "score": 2, "date": "2024-01-02T03:04:05.006Z"},
        "only-props": {"cat": ["b"]},
    }
    return build_model("shop", CONFIG, from_columns(columns), props, now_ms=NOW, version=version)


def test_round_trip(tmp_path):
    store = ModelStore(str(tmp_path))
    model = small_model()
    manifest = store.publish(model, extra={"event_log": {"events": 400}})
    assert (
        manifest["version"] == "v1"
        and store.live("shop") == "v1"
        and store.versions("shop") == ["v1"]
    )
    assert manifest["counts"]["documents"] == len(model) == 26
    assert set(manifest["files"]) == {
        "documents.arrow",
        "vocabulary-0.arrow",
        "vocabulary-1.arrow",
        "correlators.npz",
    }
    assert manifest["event_log"] == {"events": 400} and manifest["engine_config"] == CONFIG.source
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    loaded = store.load("shop")
    assert loaded.config == model.config and loaded.version == "v1" and loaded.primary == "buy"
    assert list(loaded.iter_documents()) == list(model.iter_documents())
    for a, b in zip(loaded.correlators, model.correlators, strict=True):
        assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
        assert np.array_equal(a.llr, b.llr) and a.vocabulary.to_arrow().equals(
            b.vocabulary.to_arrow()
        )
    for name in model.rankings:
        np.testing.assert_array_equal(loaded.rankings[name], model.rankings[name])
    doc = loaded.document(loaded.documents.index("item-1"))
    assert doc["score"] == 2.0 and doc["date"] == "2024-01-02T03:04:05.006Z" and doc["cat"] == ["a"]
    assert loaded.dates["date"][loaded.documents.index("item-1")] == 1704164645006
    assert not loaded.correlators[0].indices.flags.writeable


def test_documents_follow_the_ur_layout():
    model = small_model()
    docs = list(model.iter_documents())
    assert [d["id"] for d in docs] == list(model.documents)
    with_corr = next(d for d in docs if "buy" in d)
    assert isinstance(with_corr["buy"], list) and all(isinstance(i, str) for i in with_corr["buy"])
    assert docs == [model.document(i) for i in range(len(model))]
    assert {"id", "cat"} <= set(next(d for d in docs if d["id"] == "only-props"))
    assert "popRank" not in next(d for d in docs if d["id"] == "only-props")


def test_a_damaged_file_is_detected(tmp_path):
    store = ModelStore(str(tmp_path))
    store.publish(small_model())
    path = tmp_path / "shop" / "v1" / "correlators.npz"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        store.load("shop")


def test_versions_are_immutable_and_live_can_roll_back(tmp_path):
    store = ModelStore(str(tmp_path))
    assert store.live("shop") is None
    with pytest.raises(FileNotFoundError):
        store.load("shop")
    store.publish(small_model("v1"))
    with pytest.raises(FileExistsError):
        store.publish(small_model("v1"))
    store.publish(small_model("v2", seed=1))
    assert store.live("shop") == "v2"
    store.set_live("shop", "v1")
    assert store.live("shop") == "v1" and store.load("shop").version == "v1"
    with pytest.raises(FileNotFoundError):
        store.set_live("shop", "v9")
    store.publish(small_model("v3"), make_live=False)
    assert store.live("shop") == "v1" and store.versions("shop") == ["v1", "v2", "v3"]


def _disk(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def test_prune_keeps_the_disk_bounded_over_a_hundred_trains(tmp_path):
    clock = [NOW]
    store = ModelStore(str(tmp_path), clock=lambda: clock[0])
    model = small_model()
    sizes = []
    for i in range(100):
        clock[0] += 60_000  # one train a minute
        store.publish(Model(**{**model.__dict__, "version": f"v{i:03d}"}))
        (tmp_path / "shop" / f".tmp-crashed-{i}").mkdir()  # a crashed publish leaves this
        os.utime(tmp_path / "shop" / f".tmp-crashed-{i}", (clock[0] / 1000 - 600,) * 2)
        store.prune("shop", grace_seconds=90)
        assert store.live("shop") == f"v{i:03d}"
        assert len(store.versions("shop")) <= 2
        sizes.append(_disk(tmp_path))
    assert store.versions("shop") == ["v098", "v099"]
    assert max(sizes) <= 2.2 * _disk(tmp_path / "shop" / "v099") + 1024
    assert not [p for p in (tmp_path / "shop").iterdir() if p.name.startswith(".tmp-")]


def test_prune_keeps_the_previous_version_during_its_grace_period(tmp_path):
    clock = [NOW]
    store = ModelStore(str(tmp_path), clock=lambda: clock[0])
    store.publish(small_model("v1"))
    store.publish(small_model("v2"))
    store.publish(small_model("v3"))
    assert store.prune("shop", grace_seconds=60) == ["v1"]
    assert store.versions("shop") == ["v2", "v3"]
    clock[0] += 61_000
    assert store.prune("shop", grace_seconds=60) == ["v2"]
    assert store.versions("shop") == ["v3"]
    clock[0] += 1
    store.publish(small_model("v4"), make_live=False)  # just published, not live yet: kept
    assert store.prune("shop", grace_seconds=60) == [] and store.versions("shop") == ["v3", "v4"]
    clock[0] += 61_000
    assert store.prune("shop", grace_seconds=60) == ["v4"]
