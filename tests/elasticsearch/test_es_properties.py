"""Real-time item properties: $set / $unset / $delete results reach the live index as partial
updates, without retraining, and both engines then answer alike."""

from __future__ import annotations

import pytest
from es_cases import DAY, NOW, QUERIES, compare, synthetic_model

from crossrec.adapters import elasticsearch as esa
from crossrec.core.events import format_time
from crossrec.core.query import parse_query
from crossrec.query.engine import Engine
from crossrec.query.es_engine import ElasticsearchEngine

pytestmark = pytest.mark.elasticsearch

LIVE = {"available": format_time(NOW - 3 * DAY), "expires": format_time(NOW + 3 * DAY)}


def props_of(model, item):
    return dict(model.properties[model.documents.index(item)] or {})


async def test_property_changes_reach_queries_without_retraining(es, es_settings):
    model = synthetic_model()
    result = await esa.write_model(es, model, es_settings)
    local, remote = Engine(model), ElasticsearchEngine.for_model(es, model, es_settings)
    assert remote.index == result.index
    unset_color = props_of(model, "i04")
    unset_color.pop("color")
    changes = {
        "i03": {**LIVE, "color": ["purple"], "category": ["cat5", "cat6", "cat7"], "score": 99},
        "i04": unset_color,  # $unset color
        "i06": None,  # $delete: no properties, so no dates: never available any more
        "new-item": {**LIVE, "color": ["purple"], "score": "12"},  # unknown to the model
        "ghost": None,  # unknown, and without properties: nothing to do
    }
    local.update_many(changes)
    assert await remote.update_many(changes, refresh=True) == 4

    stored = (await es.get(index=result.index, id="i03"))["_source"]
    original = next(d for d in esa.documents(model) if d["id"] == "i03")
    assert stored["purchase"] == original["purchase"] and stored["popRank"] == original["popRank"]
    assert (stored["color"], stored["score"]) == (["purple"], 99.0)
    assert "launched" not in stored and stored["available"] == "2024-05-29T00:00:00.000Z"
    assert "color" not in (await es.get(index=result.index, id="i04"))["_source"]
    assert (await es.get(index=result.index, id="i06"))["_source"].keys() <= {"id", "purchase", "view", "category-pref", "popRank", "trendRank"}  # fmt: skip
    assert not (await es.options(ignore_status=404).get(index=result.index, id="ghost"))["found"]

    purple = parse_query({"fields": [{"name": "color", "values": ["purple"], "bias": -1}]})
    got = await remote.recommend(purple, {}, NOW)
    assert [i for i, _ in got.item_scores] == ["i03", "new-item"]  # by the userDefined score
    assert got.item_scores == local.recommend(purple, {}, NOW).item_scores
    everything = parse_query({"num": 200})
    assert "i06" not in {i for i, _ in (await remote.recommend(everything, {}, NOW)).item_scores}

    # deleted versions count in Lucene's term statistics until merged away: merge, then compare
    await es.options(ignore_status=(400, 404, 405)).indices.forcemerge(
        index=result.index, only_expunge_deletes=True
    )
    for name, doc, history in QUERIES:
        query = parse_query({**doc, "num": 200, "from": 0})
        try:
            compare(local.recommend(query, history, NOW), await remote.recommend(query, history, NOW))  # fmt: skip
        except AssertionError as failure:
            raise AssertionError(f"query {name!r} after updates: {failure}") from None


async def test_an_unchanged_item_and_a_single_update(es, es_settings):
    model = synthetic_model()
    await esa.write_model(es, model, es_settings)
    remote = ElasticsearchEngine.for_model(es, model, es_settings)
    await remote.update_properties("i10", {**props_of(model, "i10"), "color": ["gold"]})
    await es.indices.refresh(index=remote.index)
    gold = parse_query({"fields": [{"name": "color", "values": ["gold"], "bias": -1}]})
    assert [i for i, _ in (await remote.recommend(gold, {}, NOW)).item_scores] == ["i10"]


async def test_collab_filtering_indexes_no_properties(es, es_settings):
    model = synthetic_model(recsModel="collabFiltering")
    await esa.write_model(es, model, es_settings)
    remote = ElasticsearchEngine.for_model(es, model, es_settings)
    assert await remote.update_many({"i01": {"color": ["red"]}, "new": {"x": ["y"]}}) == 0
    stored = (await es.get(index=remote.index, id="i01"))["_source"]
    assert "color" not in stored


async def test_changes_since_training_are_applied_before_the_swap(es, es_settings):
    model = synthetic_model()
    overlay = {"i01": {**LIVE, "color": ["teal"]}, "late-item": {**LIVE, "color": ["teal"]}}
    result = await esa.write_model(es, model, es_settings, overlay=overlay)
    remote = ElasticsearchEngine.for_model(es, model, es_settings)
    teal = parse_query({"fields": [{"name": "color", "values": ["teal"], "bias": -1}]})
    assert sorted(i for i, _ in (await remote.recommend(teal, {}, NOW)).item_scores) == ["i01", "late-item"]  # fmt: skip
    assert result.documents == len(model)
