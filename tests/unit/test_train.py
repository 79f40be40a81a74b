"""train_app end to end on a small event log: correlators equal the brute-force reference."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from reference_cco import assert_rows_match, brute_force

from crossrec.adapters.eventlog import EventLog, LoggedEvent
from crossrec.adapters.modelstore import ModelStore
from crossrec.core.config import parse_engine_config
from crossrec.core.events import Event, parse_time
from crossrec.core.properties import aggregate
from crossrec.trainer.train import TrainError, train_app

DAY = 86_400_000
NOW = parse_time("2024-06-01T00:00:00Z")


def engine(**params):
    base = {
        "indicators": [
            {"name": "purchase", "aliases": ["buy", "purchase"], "maxCorrelatorsPerItem": 3},
            {"name": "view", "maxCorrelatorsPerItem": 4, "minLLR": 0.5},
            {"name": "category-pref"},
        ],
        "rankings": [
            {"type": "popular", "duration": "30 days"},
            {"type": "userDefined", "name": "score"},
        ],
        "availableDateName": "available",
        "expireDateName": "expires",
    }
    base.update(params)
    return parse_engine_config(
        {
            "datasource": {"params": {"appName": "shop", "minEventsPerUser": 2}},
            "algorithms": [{"name": "ur", "params": base}],
        }
    )


def write(log: EventLog, app: str, events: list[Event], partition: int = 0) -> None:
    logged = [
        LoggedEvent(
            e, orjson.dumps(e.properties).decode() if e.properties else None, partition, i, 0
        )
        for i, e in enumerate(events)
    ]
    half = len(logged) // 2
    log.append(app, partition, 0, half - 1, logged[:half])
    log.append(app, partition, half, len(logged) - 1, logged[half:])


def usage(name, user, target, t, target_type="item", entity_type="user"):
    return Event(
        name, entity_type, user, t, target_type, target, {}, event_id=f"e{user}{target}{t}{name}"
    )


def dataset(seed: int = 0):
    rng = np.random.default_rng(seed)
    events = []
    for _ in range(160):
        u, i = f"u{rng.integers(0, 14)}", f"i{rng.integers(0, 9):02d}"
        events.append(
            usage(rng.choice(["buy", "purchase"]), u, i, NOW - int(rng.integers(1, 40)) * DAY)
        )
    for _ in range(120):
        u, i = f"u{rng.integers(0, 18)}", f"i{rng.integers(0, 12):02d}"
        events.append(usage("view", u, i, NOW - int(rng.integers(1, 40)) * DAY))
    for _ in range(60):
        events.append(
            usage("category-pref", f"u{rng.integers(0, 14)}", f"c{rng.integers(0, 4)}", NOW - DAY)
        )
    # not user -> item: ignored by CCO
    events.append(usage("buy", "u1", "i01", NOW - DAY, target_type="category"))
    events.append(usage("buy", "i01", "i02", NOW - DAY, entity_type="item"))
    props = [
        Event("$set", "item", "i00", NOW - 5 * DAY, properties={"color": ["red"], "score": 3, "available": "2024-01-01T00:00:00Z", "expires": "2025-01-01T00:00:00Z"}, event_id="p1"),
        Event("$set", "item", "i01", NOW - 5 * DAY, properties={"color": ["blue"], "score": "7.5"}, event_id="p2"),
        Event("$unset", "item", "i01", NOW - 4 * DAY, properties={"color": None}, event_id="p3"),
        Event("$set", "item", "i02", NOW - 5 * DAY, properties={"color": ["green"]}, event_id="p4"),
        Event("$delete", "item", "i02", NOW - 4 * DAY, event_id="p5"),
        Event("$set", "item", "x-only-props", NOW - 5 * DAY, properties={"color": ["red"], "expires": "not a date"}, event_id="p6"),
    ]  # fmt: skip
    return events, props


def reference_correlators(events, config):
    alias = config.event_to_indicator()
    cco_events = [
        e
        for e in events
        if e.entity_type == "user" and e.target_entity_type == "item" and e.event in alias
    ]
    per = [
        [(e.entity_id, e.target_entity_id) for e in cco_events if alias[e.event] == ind.name]
        for ind in config.indicators
    ]
    refs = []
    for k, ind in enumerate(config.indicators):
        ref = brute_force(
            [per[0], per[k]],
            top_k=ind.max_correlators_per_item,
            min_llr=ind.min_llr,
            min_events=config.min_events_per_user,
        )[1 if k else 0]
        refs.append(ref)
    return refs


def test_train_app_matches_the_reference(tmp_path):
    log, store = EventLog(str(tmp_path / "log")), ModelStore(str(tmp_path / "models"))
    events, props = dataset()
    write(log, "shop", events + props)
    config = engine()
    manifest = train_app(log, "shop", config, store, now=NOW)
    assert store.live("shop") == manifest["version"]
    assert manifest["event_log"]["partitions"] == {
        "0": {"first_offset": 0, "last_offset": len(events) + len(props) - 1}
    }
    assert manifest["event_log"]["segments"] == 2 and manifest["event_log"]["events"] == len(
        events
    ) + len(props)
    model = store.load("shop")

    refs = reference_correlators(events, config)
    primary_items = sorted(
        {
            e.target_entity_id
            for e in events
            if e.event in ("buy", "purchase")
            and e.entity_type == "user"
            and e.target_entity_type == "item"
        }
    )
    checked = 0
    for k, ind in enumerate(config.indicators):
        everything = refs[k].pop("_all")
        corr = model.indicator(ind.name)
        for item in primary_items:
            doc = model.documents.index(item)
            ids, llr = corr.ids(doc), corr.row(doc)[1].tolist()
            assert_rows_match(
                list(zip(ids, llr, strict=True)),
                refs[k].get(item, []),
                everything.get(item, []),
                ind.max_correlators_per_item,
            )
            checked += len(ids)
    assert checked > 20

    # documents: primary items plus items with properties; properties as the ingest path folds them
    expected_props = aggregate((e.entity_id, e.event, e.properties, e.event_time) for e in props)
    assert set(model.documents) == set(primary_items) | set(expected_props)
    for item, p in expected_props.items():
        assert model.properties[model.documents.index(item)] == p
    docs = {d["id"]: d for d in model.iter_documents()}
    assert docs["i00"]["available"] == "2024-01-01T00:00:00.000Z" and docs["i00"]["color"] == [
        "red"
    ]
    assert (
        docs["i00"]["score"] == 3.0 and docs["i01"]["score"] == 7.5 and "color" not in docs["i01"]
    )
    assert "expires" not in docs["x-only-props"] and "popRank" not in docs["x-only-props"]
    assert any("expires" in w for w in model.info["warnings"])

    # popularity: raw purchase events (both aliases, any entity types) in the last 30 days
    for item in primary_items:
        count = sum(
            1
            for e in events
            if e.event in ("buy", "purchase")
            and e.target_entity_id == item
            and NOW - 30 * DAY <= e.event_time < NOW
        )
        assert docs[item].get("popRank") == (float(count) if count else None)


def test_train_is_deterministic(tmp_path):
    events, props = dataset(3)
    log = EventLog(str(tmp_path / "log"))
    write(log, "shop", events + props)
    config = engine(
        seed=5,
        indicators=[
            {"name": "purchase", "aliases": ["buy", "purchase"], "maxItemsPerUser": 2},
            {"name": "view"},
        ],
    )
    a = train_app(log, "shop", config, ModelStore(str(tmp_path / "a")), now=NOW)
    b = train_app(log, "shop", config, ModelStore(str(tmp_path / "b")), now=NOW)
    assert a["files"]["correlators.npz"]["sha256"] == b["files"]["correlators.npz"]["sha256"]
    assert a["files"]["documents.arrow"]["sha256"] == b["files"]["documents.arrow"]["sha256"]


def test_no_events_is_an_error(tmp_path):
    with pytest.raises(TrainError, match="no events"):
        train_app(
            EventLog(str(tmp_path / "log")),
            "shop",
            engine(),
            ModelStore(str(tmp_path / "m")),
            now=NOW,
        )


def test_no_primary_events_without_rankings_is_an_error(tmp_path):
    log = EventLog(str(tmp_path / "log"))
    write(log, "shop", [usage("view", "u1", "i1", NOW - DAY), usage("view", "u2", "i1", NOW - DAY)])
    with pytest.raises(TrainError, match="no 'purchase' \\(primary\\) events"):
        train_app(log, "shop", engine(rankings=[]), ModelStore(str(tmp_path / "m")), now=NOW)


def test_no_primary_events_still_serves_rankings(tmp_path):
    log, store = EventLog(str(tmp_path / "log")), ModelStore(str(tmp_path / "m"))
    write(
        log,
        "shop",
        [
            usage("view", "u1", "i1", NOW - DAY),
            usage("view", "u2", "i1", NOW - DAY),
            usage("view", "u2", "i2", NOW - DAY),
        ],
    )
    manifest = train_app(
        log, "shop", engine(rankings=[{"type": "popular", "eventNames": ["view"]}]), store, now=NOW
    )
    docs = {d["id"]: d for d in store.load("shop").iter_documents()}
    assert docs == {"i1": {"id": "i1", "popRank": 2.0}, "i2": {"id": "i2", "popRank": 1.0}}
    assert any("primary" in w for w in manifest["info"]["warnings"])


def test_collab_filtering_indexes_no_properties_or_ranks(tmp_path):
    log, store = EventLog(str(tmp_path / "log")), ModelStore(str(tmp_path / "m"))
    events, props = dataset(1)
    write(log, "shop", events + props)
    train_app(log, "shop", engine(recsModel="collabFiltering"), store, now=NOW)
    model = store.load("shop")
    assert model.rankings == {} and all(p is None for p in model.properties)
    assert "x-only-props" not in model.documents


def test_event_window_limits_what_training_reads(tmp_path):
    log, store = EventLog(str(tmp_path / "log")), ModelStore(str(tmp_path / "m"))
    old = [usage("buy", u, i, NOW - 20 * DAY) for u in ("u1", "u2") for i in ("a", "b")]
    new = [
        usage("buy", "u3", "c", NOW - DAY),
        usage("buy", "u4", "c", NOW - DAY),
        usage("buy", "u4", "d", NOW - DAY),
    ]
    write(log, "shop", old + new)
    doc = {
        "datasource": {"params": {"appName": "shop", "eventWindow": {"duration": "10 days"}}},
        "algorithms": [{"name": "ur", "params": {"eventNames": ["buy"]}}],
    }
    train_app(log, "shop", parse_engine_config(doc), store, now=NOW)
    model = store.load("shop")
    assert sorted(model.documents) == ["c", "d"]
    assert model.info["users"] == 2
