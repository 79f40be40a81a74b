"""Clusters at train time, and the engine.json `shards` keys: a sharded train writes the version's
clusters (and default recommendations) before the version is published; the deployment's
CROSSREC_SHARDS applies when engine.json names no count; every mistake gets one message."""

from __future__ import annotations

import numpy as np
import pytest
from test_train import NOW, dataset, engine, write

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.modelstore import ModelStore
from crossrec.core.clusters import MANIFEST, load_clusters
from crossrec.core.config import ConfigError, Shards, parse_engine_config
from crossrec.query.sharding import popular_recent
from crossrec.shard.versions import NotSharded, cluster_count, load_version
from crossrec.trainer.data import read_event_log
from crossrec.trainer.train import TrainError, train_app


@pytest.fixture
def log(tmp_path) -> EventLog:
    log = EventLog(str(tmp_path / "log"))
    events, props = dataset()
    write(log, "shop", events + props)
    return log


def test_a_sharded_train_publishes_the_clusters_with_the_version(log, tmp_path):
    store = ModelStore(str(tmp_path / "m"))
    cfg = engine(shards={"clusters": 3, "fanOut": 2, "slack": 2})
    seen_live = []

    def check_before_live(fs, directory):  # what a reader would find at the publish rename
        seen_live.append(store.live("shop"))

    original = store.publish

    def publish(model, **kw):
        also = kw["also"]
        kw["also"] = lambda fs, d: (also(fs, d), check_before_live(fs, d))
        return original(model, **kw)

    store.publish = publish  # type: ignore[method-assign]
    manifest = train_app(log, "shop", cfg, store, now=NOW)
    version = manifest["version"]
    assert seen_live == [None]  # clusters written while the version was not live yet
    assert manifest["clusters"]["k"] == 3 == cluster_count(store, "shop", version)
    model, clusters = load_version(store, "shop", version)
    assert clusters.version == version and clusters.k == 3
    assert len(clusters.labels) == len(model) and sum(manifest["clusters"]["sizes"]) == len(model)
    assert clusters.params["slack"] == 2.0
    data = read_event_log(log, "shop", cfg)
    assert clusters.defaults == popular_recent(data.events, cfg, NOW)
    assert clusters.defaults and all(score > 0 for _, score in clusters.defaults)
    assert model.config.shards == Shards(clusters=3, slack=2.0, fan_out=2)


def test_the_deployment_count_applies_when_engine_json_names_none(log, tmp_path):
    store = ModelStore(str(tmp_path / "m"))
    plain = train_app(log, "shop", engine(), store, now=NOW)
    assert "clusters" not in plain
    with pytest.raises(NotSharded, match="no item clusters"):
        cluster_count(store, "shop", plain["version"])
    deployed = train_app(log, "shop", engine(), store, now=NOW, shards=2)
    assert deployed["clusters"]["k"] == 2
    fanned = train_app(log, "shop", engine(shards={"fanOut": 1}), store, now=NOW, shards=4)
    assert fanned["clusters"]["k"] == 4
    by_size = train_app(log, "shop", engine(shards={"targetSize": 5}), store, now=NOW, shards=4)
    n = sum(by_size["clusters"]["sizes"])
    assert by_size["clusters"]["k"] == max(1, round(n / 5))
    with pytest.raises(TrainError, match="CROSSREC_SHARDS"):
        train_app(log, "shop", engine(shards={}), store, now=NOW)


def test_a_version_without_clusters_has_no_cluster_files(log, tmp_path):
    store = ModelStore(str(tmp_path / "m"))
    version = train_app(log, "shop", engine(), store, now=NOW)["version"]
    assert store.fs.get_file_info(f"{store.path('shop', version)}/{MANIFEST}").size is None
    with_clusters = train_app(log, "shop", engine(shards={"clusters": 2}), store, now=NOW)
    clusters = load_clusters(store.fs, store.path("shop", with_clusters["version"]))
    assert np.bincount(clusters.labels).tolist() == with_clusters["clusters"]["sizes"]


def test_crossrec_shards_is_a_setting(monkeypatch):
    monkeypatch.setenv("CROSSREC_SHARDS", "8")
    assert config.load().shards == 8
    assert config.Settings().shards == 0  # unsharded unless asked


def parse(shards):
    return parse_engine_config(
        {
            "datasource": {"params": {"appName": "a"}},
            "algorithms": [{"name": "ur", "params": {"eventNames": ["buy"], "shards": shards}}],
        }
    )


def test_shards_keys_parse():
    assert parse({"clusters": 16, "fanOut": 4}).shards == Shards(16, None, 3.0, 4)
    assert parse({"targetSize": 500, "slack": 1.5}).shards == Shards(None, 500, 1.5, None)
    assert parse({}).shards == Shards()
    assert parse(None).shards is None


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        (16, "algorithms[0].params.shards: must be a JSON object, got 16"),
        ({"clusters": 0}, "algorithms[0].params.shards.clusters: must be at least 1, got 0"),
        ({"clusters": "8"}, "algorithms[0].params.shards.clusters: must be an integer"),
        ({"targetSize": -3}, "algorithms[0].params.shards.targetSize: must be at least 1"),
        ({"clusters": 4, "targetSize": 9}, "shards: give clusters or targetSize, not both"),
        ({"slack": 0.5}, "algorithms[0].params.shards.slack: must be at least 1"),
        ({"slack": "wide"}, "algorithms[0].params.shards.slack: must be a number"),
        ({"fanOut": 0}, "algorithms[0].params.shards.fanOut: must be at least 1, got 0"),
        ({"clusters": 2, "fanOut": 3}, "fanOut: 3 is more than the 2 clusters"),
        ({"cluster": 4}, "shards.cluster: unknown key (did you mean 'clusters'?)"),
    ],
)
def test_each_shards_mistake_gets_one_clear_message(shards, message):
    with pytest.raises(ConfigError) as caught:
        parse(shards)
    assert len(caught.value.problems) == 1, caught.value.problems
    assert message in caught.value.problems[0]
