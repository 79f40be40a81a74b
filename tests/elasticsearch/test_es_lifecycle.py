"""Model indices on an Elasticsearch-API server: creation, bulk load, the alias swap, the grace
period, and the index a crashed train leaves behind."""

from __future__ import annotations

import dataclasses

import pytest
from elasticsearch import AsyncElasticsearch, helpers
from es_cases import synthetic_model

from crossrec.adapters import elasticsearch as esa
from crossrec.query.es_query import ModelInfo

pytestmark = pytest.mark.elasticsearch

GRACE = 300.0
T0 = 1_700_000_000_000


async def alias_targets(es: AsyncElasticsearch, alias: str) -> list[str]:
    found = await es.options(ignore_status=404).indices.get_alias(name=alias)
    return sorted(found.body) if found.meta.status == 200 else []


async def index_names(es: AsyncElasticsearch, settings: esa.EsSettings) -> list[str]:
    return sorted((await es.indices.get(index=f"{settings.index_prefix}*")).body)


async def test_write_model_loads_every_document_and_makes_it_live(es, es_settings):
    model = synthetic_model(n_items=400)
    result = await esa.write_model(es, model, es_settings, progress=True, now_ms=T0)
    assert result.index == esa.index_name("shop", "v1", es_settings.index_prefix)
    assert result.alias == esa.alias_name("shop", es_settings.index_prefix)
    assert (result.documents, result.previous, result.deleted) == (400, (), ())
    assert await alias_targets(es, result.alias) == [result.index]
    assert (await es.count(index=result.alias))["count"] == 400
    expected = {d["id"]: d for d in esa.documents(model)}
    for item in ("i00", "i07", "i399", "i385"):
        stored = await es.get(index=result.alias, id=item)
        assert stored["_source"] == expected[item]
    mapping = (await es.indices.get_mapping(index=result.index))[result.index]["mappings"]
    for field in ("id", "purchase", "view", "category-pref", "category"):
        assert mapping["properties"][field]["type"] == "keyword"
        assert mapping["properties"][field].get("norms") is False
    assert mapping["properties"]["popRank"]["type"] == "double"
    assert mapping["properties"]["released"]["type"] == "date"
    assert mapping["properties"]["launched"]["fields"]["date"]["type"] == "date"
    settings = (await es.indices.get_settings(index=result.index))[result.index]["settings"]
    assert settings["index"]["number_of_shards"] == "1"
    assert settings["index"].get("refresh_interval") in (None, "1s")  # loading used -1


async def test_bulk_load_bounded_concurrency_and_chunks(es, es_settings):
    model = synthetic_model(n_items=1000)
    info = ModelInfo.of(model)
    index = f"{es_settings.index_prefix}bulk_x"
    await es.indices.create(index=index, **esa.index_body(info, "unused", T0))
    in_flight = peak = 0
    real_bulk = helpers.async_bulk

    async def counting_bulk(*args, **kwargs):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await real_bulk(*args, **kwargs)
        finally:
            in_flight -= 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(esa.helpers, "async_bulk", counting_bulk)
        done = await esa.bulk_load(es, index, esa.documents(model, info), concurrency=3, chunk=70)
    await es.indices.refresh(index=index)
    assert done == 1000 and (await es.count(index=index))["count"] == 1000
    assert 1 < peak <= 3


async def test_a_new_version_swaps_the_alias_and_the_old_one_waits_for_the_grace_period(
    es, es_settings
):
    first = await esa.write_model(es, synthetic_model(version="v1"), es_settings, now_ms=T0)
    second = await esa.write_model(
        es,
        synthetic_model(version="v2", seed=8),
        es_settings,
        grace_seconds=GRACE,
        now_ms=T0 + 1000,
    )
    assert second.previous == (first.index,) and second.deleted == ()
    assert await alias_targets(es, second.alias) == [second.index]
    assert first.index in await index_names(es, es_settings)  # servers still on v1 finish
    # a cleanup within the grace period keeps it; after it, the index goes
    assert await esa.cleanup(es, second.alias, GRACE, now_ms=T0 + 2000) == []
    later = T0 + 1000 + int(GRACE * 1000)
    assert await esa.cleanup(es, second.alias, GRACE, now_ms=later) == [first.index]
    assert await index_names(es, es_settings) == [second.index]
    # ... or the next train deletes it once the grace period is over
    third = await esa.write_model(es, synthetic_model(version="v3"), es_settings, now_ms=later + 5)
    assert third.deleted == () and third.previous == (second.index,)
    at = later + 10 + int(GRACE * 1000)
    fourth = await esa.write_model(es, synthetic_model(version="v4"), es_settings, now_ms=at)
    assert fourth.deleted == (second.index,)  # v3 was retired just now: it stays
    assert await alias_targets(es, fourth.alias) == [fourth.index]


async def test_the_next_train_removes_an_index_a_crashed_train_left(es, es_settings):
    live = await esa.write_model(es, synthetic_model(version="v1"), es_settings, now_ms=T0)
    # a train that died half-way: its index exists, partly loaded, never made live
    crashed_model = synthetic_model(version="v2")
    crashed = esa.index_name("shop", "v2", es_settings.index_prefix)
    await es.indices.create(index=crashed, **esa.index_body(ModelInfo.of(crashed_model), live.alias, T0 + 10))  # fmt: skip
    docs = list(esa.documents(crashed_model))[:30]
    await esa.bulk_load(es, crashed, docs, concurrency=2, chunk=10)
    assert await esa.cleanup(es, live.alias, GRACE, now_ms=T0 + 20) == []  # maybe still loading
    after = await esa.write_model(es, synthetic_model(version="v3"), es_settings, now_ms=T0 + 30)
    assert crashed in after.deleted
    assert await alias_targets(es, after.alias) == [after.index]
    assert sorted(await index_names(es, es_settings)) == sorted([live.index, after.index])


async def test_a_failed_load_deletes_its_index_and_leaves_the_live_one(es, es_settings):
    live = await esa.write_model(es, synthetic_model(version="v1"), es_settings, now_ms=T0)

    original = esa.documents

    def failing(model, info=None):
        for k, doc in enumerate(original(model, info)):
            if k == 40:
                raise RuntimeError("disk on fire")
            yield doc

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(esa, "documents", failing)
        with pytest.raises(RuntimeError, match="disk on fire"):
            await esa.write_model(es, synthetic_model(version="v2"), es_settings, now_ms=T0 + 5)
    assert await index_names(es, es_settings) == [live.index]
    assert await alias_targets(es, live.alias) == [live.index]


async def test_a_rejected_document_fails_the_write(es, es_settings):
    model = synthetic_model(version="v1")

    original = esa.documents

    def with_conflict(model, info=None):
        for doc in original(model, info):
            yield {**doc, "popRank": "not a number"} if doc["id"] == "i05" else doc

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(esa, "documents", with_conflict)
        with pytest.raises(helpers.BulkIndexError):
            await esa.write_model(es, model, es_settings, now_ms=T0)
    assert await index_names(es, es_settings) == []


async def test_an_index_named_like_the_alias_is_reported(es, es_settings):
    alias = esa.alias_name("shop", es_settings.index_prefix)
    await es.indices.create(index=alias)
    with pytest.raises(ValueError, match="where the alias should be"):
        await esa.write_model(es, synthetic_model(), es_settings, now_ms=T0)


async def test_apps_with_similar_names_do_not_touch_each_other(es, es_settings):
    shop = await esa.write_model(es, synthetic_model(version="v1"), es_settings, now_ms=T0)
    other_model = dataclasses.replace(synthetic_model(version="v1"), app="shop_eu")
    other = await esa.write_model(es, other_model, es_settings, now_ms=T0)
    shop2 = await esa.write_model(es, synthetic_model(version="v2"), es_settings, now_ms=T0 + 1)
    assert shop2.previous == (shop.index,) and shop2.deleted == ()
    assert await alias_targets(es, other.alias) == [other.index]
    assert [i.name for i in await esa.app_indices(es, other.alias)] == [other.index]
    assert await esa.live_index(es, shop2.alias) == shop2.index


async def test_the_server_version_is_checked(es):
    assert (await esa.check_server(es)).startswith("8.")
