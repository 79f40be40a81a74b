"""`crossrec eval` end to end on a small event log: the engine asked as the query service asks it,
baselines, lift, the report, its files, and the command."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
import typer
from typer.testing import CliRunner

from crossrec.adapters.eventlog import EventLog, LoggedEvent
from crossrec.core.config import parse_engine_config
from crossrec.core.events import Event, parse_time
from crossrec.core.query import parse_query
from crossrec.eval import ur
from crossrec.eval.baselines import BaselineParams
from crossrec.eval.cli import eval_command
from crossrec.eval.run import EvalOptions, evaluate_event_log, read_as_of, write_outputs
from crossrec.eval.split import SplitSpec, prepare
from crossrec.query.engine import Engine

DAY = 86_400_000
T0 = parse_time("2024-01-01T00:00:00Z")
APP = "shop"
ENGINE = {
    "datasource": {"params": {"appName": APP}},
    "algorithms": [
        {
            "name": "ur",
            "params": {
                "appName": APP,
                "indicators": [{"name": "purchase"}, {"name": "view"}],
                "seed": 1,
            },
        }
    ],
}


def events() -> list[Event]:
    """Two tastes of 8 items; each user views 3 and buys 4 items of its taste over days 0-7 and
    2 more over days 12-19 (T is day 10 at fraction 0.5). Properties change after T."""
    rng = np.random.default_rng(3)
    out = [Event("$set", "item", "A0", T0, properties={"color": ["red"]}, event_id="p0")]
    for u in range(40):
        items = [f"{'AB'[u % 2]}{i}" for i in rng.permutation(8)]
        for i, item in enumerate(items[:6]):
            day = i if i < 4 else 12 + rng.integers(0, 8)
            out.append(
                Event(
                    "purchase",
                    "user",
                    f"u{u}",
                    T0 + int(day) * DAY,
                    "item",
                    item,
                    {},
                    event_id=f"b{u}-{i}",
                )
            )
        for i, item in enumerate(items[4:7]):
            out.append(
                Event(
                    "view",
                    "user",
                    f"u{u}",
                    T0 + (i + 1) * DAY + 1,
                    "item",
                    item,
                    {},
                    event_id=f"v{u}-{i}",
                )
            )
    out.append(
        Event("$set", "item", "A0", T0 + 15 * DAY, properties={"color": ["blue"]}, event_id="p1")
    )
    out.append(Event("purchase", "user", "late", T0 + 20 * DAY, "item", "A1", {}, event_id="z"))
    return out


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> EventLog:
    log = EventLog(str(tmp_path_factory.mktemp("eventlog")))
    rows = [
        LoggedEvent(e, orjson.dumps(e.properties).decode() if e.properties else None, 0, i, 0)
        for i, e in enumerate(events())
    ]
    log.append(APP, 0, 0, len(rows) - 1, rows)
    return log


OPTIONS = EvalOptions(ks=(1, 3, 5), resamples=200, baseline_params=BaselineParams(factors=8))


@pytest.fixture(scope="module")
def report(log: EventLog) -> dict:
    config = parse_engine_config(ENGINE)
    return evaluate_event_log(log, APP, config, SplitSpec(fraction=0.5), OPTIONS)


def test_report_lists_models_comparisons_and_lift(report):
    assert [m["name"] for m in report["models"]] == ["crossrec", "popularity", "item-kNN", "ALS"]
    assert set(report["comparisons"]) == {"popularity", "item-kNN", "ALS"}
    assert [v["name"] for v in report["indicators"]] == ["purchase", "purchase + view"]
    assert report["indicators"][0]["lift"] is None
    assert set(report["indicators"][1]["lift"]["5"]) == {"precision", "recall", "map", "ndcg"}
    assert report["split"]["test_users"] == 40
    assert report["split"]["cut"] == "2024-01-11T00:00:00.000Z"
    for model in report["models"]:
        for k in ("1", "3", "5"):
            entry = model["metrics"][k]
            for name in ("precision", "recall", "map", "ndcg", "popularity"):
                assert entry[name]["low"] <= entry[name]["mean"] <= entry[name]["high"], (
                    model["name"],
                    k,
                    name,
                )
            assert 0 < entry["coverage"] <= 1


def test_crossrec_learns_the_tastes_better_than_popularity(report):
    crossrec = report["models"][0]["metrics"]["3"]["precision"]["mean"]
    popular = report["models"][1]["metrics"]["3"]["precision"]["mean"]
    assert crossrec > 0.4 and crossrec > popular + 0.1  # 2 of the 4 unbought items of the taste


def test_the_engine_is_asked_as_the_query_service_asks_it(log: EventLog):
    config = parse_engine_config(ENGINE)
    events, as_of = read_as_of(log, APP, config)
    data = prepare(events, as_of, config, SplitSpec(fraction=0.5))
    assert data.properties == {"A0": {"color": ["red"]}}  # as of T, not the later change
    model = ur.train(APP, config, data, "test")
    recs = ur.recommend(model, data, 5)
    engine = Engine(model)
    held, times = data.history[7], data.times[7]
    direct = engine.recommend(
        parse_query({"user": data.users[7], "num": 5}), held, data.cut_ms, times=times
    )
    assert [data.items.ids[i] for i in recs[7]] == [item for item, _ in direct.item_scores]
    seen = data.seen.toarray().astype(bool)
    assert not np.take_along_axis(seen, np.maximum(recs, 0), axis=1)[recs >= 0].any()


def test_indicator_variants():
    config = parse_engine_config(ENGINE)
    assert ur.indicator_variants(config) == [
        ("purchase", ["purchase"]),
        ("purchase + view", ["purchase", "view"]),
    ]
    three = parse_engine_config(
        {
            "datasource": {"params": {"appName": "a", "eventNames": ["buy", "view", "cart"]}},
            "algorithms": [{"name": "ur", "params": {"eventNames": ["buy", "view", "cart"]}}],
        }
    )
    labels = [label for label, _ in ur.indicator_variants(three)]
    assert labels == ["buy", "buy + view", "buy + cart", "all: buy + view + cart"]
    alone = ur.with_indicators(three, ["buy", "cart"])
    assert alone.indicator_names == ("buy", "cart")
    assert ur.with_indicators(config, ["purchase"]).indicator_names == ("purchase",)


def test_diagnostics_and_files(log: EventLog, tmp_path):
    config = parse_engine_config(ENGINE)
    options = EvalOptions(ks=(2,), resamples=50, baselines=("popularity",), diagnostics=True)
    result = evaluate_event_log(log, APP, config, SplitSpec(fraction=0.5), options)
    assert [m["kind"] for m in result["models"]] == ["crossrec", "diagnostic", "baseline"]
    assert [(v["name"], v["scoring"]) for v in result["indicators"]] == [
        ("purchase", "ur"),
        ("purchase + view", "ur"),
        ("purchase", "llr"),
        ("purchase + view", "llr"),
    ]
    assert result["indicators"][3]["lift"] is not None
    write_outputs(result, tmp_path / "r.json", tmp_path / "r.png")
    assert orjson.loads((tmp_path / "r.json").read_bytes())["app"] == APP
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_test_users_is_an_error(log: EventLog):
    config = parse_engine_config(ENGINE)
    with pytest.raises(ValueError, match="no test users"):
        evaluate_event_log(log, APP, config, SplitSpec.parse("2030-01-01"), OPTIONS)
    with pytest.raises(ValueError, match="has no events"):
        evaluate_event_log(log, "other", config, SplitSpec(fraction=0.5), OPTIONS)


def test_command(log: EventLog, tmp_path, monkeypatch):
    cli = typer.Typer()
    cli.command("eval")(eval_command)
    cli.command("other")(lambda: None)  # two commands: typer keeps the name
    engine = tmp_path / "engine.json"
    engine.write_bytes(orjson.dumps(ENGINE))
    monkeypatch.setenv("CROSSREC_EVENTLOG_URL", log.url)
    monkeypatch.setenv("CROSSREC_HOME", str(tmp_path))
    out, chart = tmp_path / "e.json", tmp_path / "e.png"
    args = [
        "eval",
        "--app",
        APP,
        "--engine",
        str(engine),
        "--k",
        "1,3",
        "--resamples",
        "50",
        "--baselines",
        "popularity",
        "--no-lift",
        "--out",
        str(out),
        "--chart",
        str(chart),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "crossrec against each baseline" in result.output
    assert orjson.loads(out.read_bytes())["options"]["ks"] == [1, 3]
    assert chart.exists()
    bad = CliRunner().invoke(cli, [*args[:5], "--split", "soon"])
    assert bad.exit_code == 1
    assert "neither a fraction" in bad.output
