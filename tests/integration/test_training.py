"""Training end to end: events through the pipeline, `crossrec train`, the model's correlators
against the brute-force reference, debounced retraining, and a bounded model store."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
import support
from conftest import run_cli
from reference_cco import assert_rows_match, brute_force
from support import eventually, logged_count, read_topic

from crossrec import settings as config
from crossrec.adapters.eventlog import EventLog
from crossrec.adapters.modelstore import ModelStore
from crossrec.client.producer import EventProducer

pytestmark = pytest.mark.asyncio(loop_scope="session")


def engine_json(app: str, tmp_path: Path, **params: object) -> Path:
    return support.engine_json(app, tmp_path, maxEventsPerEventType=100_000, **params)


def usage_events(n: int, seed: int = 5) -> list[dict]:
    rnd = random.Random(seed)
    return [
        {
            "event": "purchase" if rnd.random() < 0.6 else "view",
            "entityType": "user",
            "entityId": f"u{rnd.randrange(60)}",
            "targetEntityType": "item",
            "targetEntityId": f"i{min(rnd.randrange(40), rnd.randrange(40))}",
            "eventTime": f"2024-02-{1 + rnd.randrange(20):02d}T10:00:00Z",
        }
        for _ in range(n)
    ]


async def produce(
    stack: config.Settings, event_log: EventLog, app: str, events: list[dict]
) -> None:
    async with EventProducer(stack) as producer:
        await producer.send_many(app, events)
    await eventually(lambda: logged_count(event_log, app), lambda n: n >= len(events))


async def test_train_builds_the_reference_model(
    stack: config.Settings, event_log: EventLog, app_name: str, tmp_path: Path
) -> None:
    events = usage_events(1500)
    await produce(stack, event_log, app_name, events)

    result = run_cli("train", "--app", app_name, "--engine", str(engine_json(app_name, tmp_path)))
    assert result.returncode == 0, result.stderr
    assert f"app {app_name} trained: version" in result.stdout

    model = ModelStore(stack.modelstore).load(app_name)
    pairs = {
        name: [(e["entityId"], e["targetEntityId"]) for e in events if e["event"] == name]
        for name in ("purchase", "view")
    }
    checked = 0
    for k, name in enumerate(("purchase", "view")):
        reference = brute_force([pairs["purchase"], pairs[name]], top_k=50)[1 if k else 0]
        correlators = model.indicator(name)
        for doc in range(len(model)):
            item = model.documents[doc]
            indices, llr = correlators.row(doc)
            got = list(zip(correlators.vocabulary.ids(indices), llr.tolist(), strict=True))
            everything = reference["_all"].get(item, [])
            assert_rows_match(got, reference.get(item, []), everything, 50)
            checked += len(got)
    assert checked > 500  # the data makes many correlators: the comparison is not vacuous

    listing = run_cli("models", "--app", app_name)
    assert model.version in listing.stdout and "yes" in listing.stdout


async def test_train_says_what_is_wrong(
    stack: config.Settings, app_name: str, tmp_path: Path
) -> None:
    bad = engine_json(app_name, tmp_path, userbias=2, recsModel="everything")
    result = run_cli("train", "--app", app_name, "--engine", str(bad))
    assert result.returncode == 1
    assert "userbias: unknown key (did you mean 'userBias'?)" in result.stderr
    assert "recsModel" in result.stderr and "Traceback" not in result.stderr

    empty = run_cli("train", "--app", app_name, "--engine", str(engine_json(app_name, tmp_path)))
    assert empty.returncode == 1
    assert "has no events" in empty.stderr and "Traceback" not in empty.stderr

    unknown = run_cli("train", "--app", "no-such-app", "--engine", str(engine_json("x", tmp_path)))
    assert unknown.returncode == 1 and "no app named 'no-such-app'" in unknown.stderr


async def test_a_burst_of_property_changes_causes_one_train(
    stack: config.Settings, event_log: EventLog, app_name: str, tmp_path: Path
) -> None:
    await produce(stack, event_log, app_name, usage_events(500, seed=9))
    engine = str(engine_json(app_name, tmp_path))
    assert run_cli("train", "--app", app_name, "--engine", engine).returncode == 0

    def announcements(records: list) -> list:
        return [r for r in records if orjson.loads(r.value)["app"] == app_name]

    async def trains_after_quiet() -> int:
        """Announcements once the trainer has had time to act on every pending trigger."""
        quiet = 4 * stack.train_debounce_seconds
        return len(
            announcements(await read_topic(stack, "model-updates", lambda rs: False, timeout=quiet))
        )

    # the new items of the usage events above may cause one train of their own: count from here
    before = await trains_after_quiet()
    changes = [
        {"event": "$set", "entityType": "item", "entityId": f"i{n % 40}",
         "properties": {"version": [str(n)]}, "eventTime": f"2024-03-01T00:00:{n % 60:02d}Z"}
        for n in range(10_000)
    ]  # fmt: skip
    await produce(stack, event_log, app_name, changes)
    assert await trains_after_quiet() == before + 1


async def test_repeated_trains_keep_the_model_store_bounded(
    stack: config.Settings, event_log: EventLog, app_name: str, tmp_path: Path
) -> None:
    await produce(stack, event_log, app_name, usage_events(300, seed=2))
    engine = str(engine_json(app_name, tmp_path))
    for _ in range(5):
        assert run_cli("train", "--app", app_name, "--engine", engine).returncode == 0
    store = ModelStore(stack.modelstore)
    assert len(store.versions(app_name)) <= 2
    assert store.live(app_name) in store.versions(app_name)


async def test_eval_on_an_apps_event_log(
    stack: config.Settings, event_log: EventLog, app_name: str, tmp_path: Path
) -> None:
    await produce(stack, event_log, app_name, usage_events(3000, seed=4))
    report, chart = tmp_path / "eval.json", tmp_path / "eval.png"
    result = run_cli(
        "eval", "--app", app_name, "--engine", str(engine_json(app_name, tmp_path)),
        "--k", "1,5", "--resamples", "50", "--out", str(report), "--chart", str(chart),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = report.read_text()
    for name in ("popularity", "ALS", "precision", "ndcg"):
        assert name.lower() in text.lower()
