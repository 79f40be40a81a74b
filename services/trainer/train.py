"""Train one app: read its event log, build the model, publish it (UR-SPEC §8a.1).

manifest = train_app(EventLog(url), "shop", load_engine_config("engine.json"), ModelStore(url))
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

import numpy as np

from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.modelstore import ModelStore
from crossrec.core.clusters import Clusters, cluster_model, save_clusters
from crossrec.core.config import EngineConfig, Shards
from crossrec.core.events import now_millis
from crossrec.core.model import Model, new_version_id
from crossrec.query.sharding import popular_recent
from crossrec.trainer.build import Timer, build_model
from crossrec.trainer.data import EventColumns, TrainingInput, read_event_log


class TrainError(RuntimeError):
    """Training cannot produce a useful model; the message says why."""


def as_millis(now: datetime | int | None) -> int:
    if now is None:
        return now_millis()
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must carry a time zone")
        return int(now.timestamp() * 1000)
    return int(now)


def train_input(
    data: TrainingInput,
    app: str,
    config: EngineConfig,
    now_ms: int,
    threads: int | None,
    timer: Timer,
) -> Model:
    if len(data.events) == 0 and not data.properties:
        raise TrainError(
            f"app {app!r} has no events named {', '.join(config.event_to_indicator())} to train on"
        )
    model = build_model(
        app, config, data.events, data.properties,
        now_ms=now_ms, version=new_version_id(now_ms, uuid.uuid4().hex[:6]), threads=threads, timer=timer,
    )  # fmt: skip
    primary = model.correlators[0]
    has_ranks = any((~np.isnan(v)).any() for v in model.rankings.values())
    if model.info["indicators"][primary.name]["events"] == 0 and not has_ranks:
        raise TrainError(
            f"app {app!r} has no {config.primary!r} (primary) events and no ranking has a value: "
            "there is nothing to recommend"
        )
    return model


def item_clusters(
    model: Model, config: EngineConfig, events: EventColumns, now_ms: int, shards: int = 0
) -> Clusters | None:
    """The version's item clusters for the sharded tier, with its default recommendations
    (popular over the last 7 days); None when neither engine.json nor the deployment
    (`shards`, CROSSREC_SHARDS) asks for sharding."""
    spec = config.shards
    if spec is None and shards <= 0:
        return None
    spec = spec or Shards()
    k = spec.clusters
    if k is None and spec.target_size is None:
        if shards <= 0:
            raise TrainError(
                "algorithms[0].params.shards names neither clusters nor targetSize and "
                "CROSSREC_SHARDS is not set: say how many clusters to make"
            )
        k = shards
    clusters = cluster_model(
        model, k, target_size=spec.target_size, slack=spec.slack, seed=config.seed or 0
    )
    return dataclasses.replace(clusters, defaults=popular_recent(events, config, now_ms))


def train_app(
    event_log: EventLog,
    app: str,
    config: EngineConfig,
    store: ModelStore,
    now: datetime | int | None = None,
    *,
    threads: int | None = None,
    make_live: bool = True,
    shards: int = 0,
) -> dict:
    """Build a new model version of the app from its event log and publish it; the manifest.
    With make_live=False the version is written but the live pointer is left to the caller.
    `shards`: the deployment's cluster count when engine.json's `shards` names none."""
    now_ms = as_millis(now)
    timer = Timer()
    data = read_event_log(event_log, app, config)
    timer.lap("read")
    model = train_input(data, app, config, now_ms, threads, timer)
    extra: dict = {"event_log": data.log_range}
    clusters = item_clusters(model, config, data.events, now_ms, shards)
    timer.lap("clusters")
    if clusters is None:
        return store.publish(model, extra=extra, make_live=make_live)
    extra["clusters"] = {"k": clusters.k, "sizes": clusters.sizes().tolist()}
    extra["clusters"]["seconds"] = timer.phases["clusters"]
    return store.publish(
        model,
        extra=extra,
        make_live=make_live,
        also=lambda fs, directory: save_clusters(fs, directory, clusters),
    )
