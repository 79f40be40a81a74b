"""The Elasticsearch engine without a server: request bodies for every query feature, index
names, mappings, documents, property updates, connection settings, engine selection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from crossrec.adapters import elasticsearch as esa
from crossrec.core.config import ConfigError, parse_engine_config
from crossrec.core.events import parse_time
from crossrec.core.idmap import IdMap
from crossrec.core.model import Correlators, Model
from crossrec.core.query import InvalidQuery, parse_query
from crossrec.query.es_engine import engine_kind
from crossrec.query.es_query import (
    MATCH_ALL,
    ModelInfo,
    history_event_names,
    search_body,
    search_kwargs,
)

NOW = parse_time("2024-06-01T00:00:00Z")
SORT = [
    {"_score": {"order": "desc"}},
    {"popRank": {"order": "desc", "missing": "_last", "unmapped_type": "double"}},
    {"score": {"order": "desc", "missing": "_last", "unmapped_type": "double"}},
    {"id": {"order": "asc"}},
]


def config(**params):
    base = {
        "indicators": [
            {"name": "purchase", "aliases": ["purchase", "buy"], "maxIndicatorsPerQuery": 3},
            {"name": "view", "maxIndicatorsPerQuery": 2},
        ],
        "rankings": [{"type": "popular"}, {"type": "userDefined", "name": "score"}],
    }
    base.update(params)
    doc = {"datasource": {"params": {"appName": "shop"}}, "algorithms": [{"name": "ur", "params": base}]}  # fmt: skip
    return parse_engine_config(doc)


def info(**params) -> ModelInfo:
    cfg = config(**params)
    return ModelInfo("shop", "v1", cfg, ("purchase", "view"), ("popRank", "score"), cfg.date_names)


def body(query: dict, history: dict | None = None, *, model: ModelInfo | None = None, **kw):
    return search_body(model or info(), parse_query(query), history or {}, NOW, **kw)


def term(field, value, boost=1.0):
    return {"term": {field: {"value": value, "boost": boost}}}


def test_empty_query_is_ranked_backfill():
    assert body({}) == {
        "query": {"bool": {"should": [MATCH_ALL], "minimum_should_match": 1}},
        "sort": SORT,
        "from": 0,
        "size": 20,
        "track_total_hits": False,
        "_source": False,
    }


def test_history_is_one_term_per_distinct_value_and_blacklists_the_primary_events():
    history = {"purchase": ["a", "b", "a"], "view": ["c", "d", "c"], "other": ["z"]}
    b = body({"user": "u"}, history)["query"]["bool"]
    assert b["should"] == [term("purchase", "a"), term("purchase", "b"), term("view", "c"), term("view", "d"), MATCH_ALL]  # fmt: skip
    assert b["must_not"] == [{"ids": {"values": ["a", "b"]}}]


def test_history_caps_and_aliases():
    history = {"purchase": ["a", "b"], "buy": ["c", "d"], "view": ["e", "f", "g"]}
    should = body({"user": "u"}, history)["query"]["bool"]["should"]
    # per indicator: the aliases' events newest first (no times: in alias order), capped at 3 / 2
    assert should[:-1] == [term("purchase", x) for x in "abc"] + [term("view", x) for x in "ef"]
    times = {"purchase": [10, 8], "buy": [9, 7], "view": [1, 2, 3]}
    with_times = search_body(info(), parse_query({"user": "u"}), history, NOW, times=times)
    assert with_times["query"]["bool"]["should"][:3] == [term("purchase", x) for x in "acb"]


def test_max_query_events_budget_over_indicators():
    history = {"purchase": ["a", "b", "c"], "view": ["e", "f"]}
    should = body({"user": "u"}, history, model=info(maxQueryEvents=3))["query"]["bool"]["should"]
    assert should[:-1] == [term("purchase", "a"), term("purchase", "b"), term("view", "e")]


def test_user_bias_boosts_filters_or_drops_history():
    history = {"view": ["x"]}
    assert body({"user": "u", "userBias": 2.5}, history)["query"]["bool"]["should"][0] == term("view", "x", 2.5)  # fmt: skip
    filtered = body({"user": "u", "userBias": -1}, history)["query"]["bool"]
    assert filtered["filter"] == [{"terms": {"view": ["x"]}}]
    assert filtered["should"] == [MATCH_ALL]
    assert body({"user": "u", "userBias": 0}, history)["query"]["bool"]["should"] == [MATCH_ALL]
    engine_bias = body({"user": "u"}, history, model=info(userBias=3))["query"]["bool"]["should"]
    assert engine_bias[0] == term("view", "x", 3.0)


def test_item_query_uses_the_items_correlators_and_excludes_it():
    fields = {"purchase": ["p2", "p1"], "view": ["v1"]}
    b = body({"item": "i1"}, item_fields=fields)["query"]["bool"]
    assert b["should"] == [term("purchase", "p1"), term("purchase", "p2"), term("view", "v1"), MATCH_ALL]  # fmt: skip
    assert b["must_not"] == [{"ids": {"values": ["i1"]}}]
    kept = body({"item": "i1", "returnSelf": True, "itemBias": 4}, item_fields=fields)["query"]["bool"]  # fmt: skip
    assert "must_not" not in kept and kept["should"][0] == term("purchase", "p1", 4.0)
    engine_self = body({"item": "i1"}, item_fields=fields, model=info(returnSelf=True))
    assert "must_not" not in engine_self["query"]["bool"]
    unknown = body({"item": "nope"}, item_fields=None)["query"]["bool"]
    assert unknown["should"] == [MATCH_ALL] and unknown["must_not"] == [{"ids": {"values": ["nope"]}}]  # fmt: skip
    as_filter = body({"item": "i1", "itemBias": -2}, item_fields=fields)["query"]["bool"]
    assert as_filter["filter"] == [{"terms": {"purchase": ["p1", "p2"]}}, {"terms": {"view": ["v1"]}}]  # fmt: skip


def test_item_set_scores_on_the_primary_field_and_is_excluded():
    b = body({"itemSet": ["a", "b"], "itemSetBias": 2})["query"]["bool"]
    assert b["should"] == [term("purchase", "a", 2.0), term("purchase", "b", 2.0), MATCH_ALL]
    assert b["must_not"] == [{"ids": {"values": ["a", "b"]}}]
    assert body({"itemSet": ["a"], "itemSetBias": -1})["query"]["bool"]["filter"] == [{"terms": {"purchase": ["a"]}}]  # fmt: skip
    assert body({"itemSet": ["a"]}, model=info(itemSetBias=5))["query"]["bool"]["should"][0] == term("purchase", "a", 5.0)  # fmt: skip


def test_field_rules_boost_include_exclude():
    rules = [
        {"name": "category", "values": ["x", "y", "x"], "bias": 3},
        {"name": "color", "values": ["red"], "bias": -1},
        {"name": "brand", "values": ["acme", "acme"], "bias": 0},
        {"name": "id", "values": ["i9"], "bias": 2},
    ]
    b = body({"fields": rules})["query"]["bool"]
    assert b["should"] == [term("category", "x", 3.0), term("category", "y", 3.0), term("id", "i9", 2.0), MATCH_ALL]  # fmt: skip
    assert b["filter"] == [{"terms": {"color": ["red"]}}]
    assert b["must_not"] == [{"terms": {"brand": ["acme"]}}]


def test_query_rules_replace_engine_rules_of_the_same_name():
    engine_rules = [
        {"name": "category", "values": ["e"], "bias": 2},
        {"name": "color", "values": ["blue"], "bias": -1},
    ]
    model = info(fields=engine_rules)
    b = body({"fields": [{"name": "category", "values": ["q"], "bias": 0}]}, model=model)["query"]["bool"]  # fmt: skip
    assert b["must_not"] == [{"terms": {"category": ["q"]}}]
    assert b["filter"] == [{"terms": {"color": ["blue"]}}]
    assert b["should"] == [MATCH_ALL]


def test_date_range_on_a_configured_date_and_on_any_property():
    model = info(dateName="released")
    after, before = "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
    rng = {"name": "released", "after": after, "before": before}
    b = body({"dateRange": rng}, model=model)["query"]["bool"]
    bounds = {"gt": parse_time(after), "lt": parse_time(before), "format": "epoch_millis"}
    assert b["filter"] == [{"range": {"released": bounds}}]
    other = body({"dateRange": {"name": "launched", "before": before}}, model=model)
    assert other["query"]["bool"]["filter"] == [{"range": {"launched.date": {"lt": parse_time(before), "format": "epoch_millis"}}}]  # fmt: skip


def test_available_and_expire_dates_filter_at_the_current_date():
    model = info(availableDateName="available", expireDateName="expires")
    expected = [
        {"range": {"available": {"lte": NOW, "format": "epoch_millis"}}},
        {"range": {"expires": {"gt": NOW, "format": "epoch_millis"}}},
    ]
    assert body({}, model=model)["query"]["bool"]["filter"] == expected
    at = "2024-07-01T00:00:00Z"
    later = body({"currentDate": at}, model=model)["query"]["bool"]["filter"]
    assert later[0]["range"]["available"]["lte"] == parse_time(at)
    ranged = body({"dateRange": {"name": "available", "after": at}}, model=model)["query"]["bool"]
    assert ranged["filter"] == [{"range": {"available": {"gt": parse_time(at), "format": "epoch_millis"}}}]  # fmt: skip
    inactive = body({"dateRange": {"name": "available"}}, model=model)["query"]["bool"]
    assert inactive["filter"] == expected
    only_one = info(availableDateName="available")
    assert "filter" not in body({}, model=only_one)["query"]["bool"]


def test_blacklist_events_items_and_item_set():
    history = {"purchase": ["p"], "view": ["v"]}
    model = info(blacklistEvents=["view"])
    b = body({"user": "u", "blacklistItems": ["x"], "itemSet": ["s"]}, history, model=model)
    assert b["query"]["bool"]["must_not"] == [{"ids": {"values": ["v", "x", "s"]}}]
    none = body({"user": "u"}, history, model=info(blacklistEvents=[]))["query"]["bool"]
    assert "must_not" not in none
    # an indicator name in blacklistEvents means its aliases
    alias = body({"user": "u"}, {"buy": ["b"]}, model=info())["query"]["bool"]["must_not"]
    assert alias == [{"ids": {"values": ["b"]}}]


def test_event_names_restrict_the_history_used():
    history = {"purchase": ["p"], "buy": ["b"], "view": ["v"]}
    should = body({"user": "u", "eventNames": ["view"]}, history)["query"]["bool"]["should"]
    assert should == [term("view", "v"), MATCH_ALL]
    should = body({"user": "u", "eventNames": ["buy"]}, history)["query"]["bool"]["should"]
    assert should == [term("purchase", "b"), MATCH_ALL]
    with pytest.raises(InvalidQuery, match="eventNames"):
        body({"user": "u", "eventNames": ["nope"]}, history)
    names = history_event_names(info(), parse_query({"eventNames": ["view"]}))
    assert names == ["view", "purchase", "buy"]  # scoring, then the blacklist's


def test_paging_size_and_ranks():
    b = body({"num": 5, "from": 10, "withRanks": True})
    assert (b["from"], b["size"], b["_source"]) == (10, 5, ["popRank", "score"])
    assert body({}, model=info(num=7))["size"] == 7
    assert search_kwargs(b)["from_"] == 10 and search_kwargs(b)["source"] == ["popRank", "score"]


def test_collab_filtering_has_no_backfill_and_no_date_filter():
    model = info(recsModel="collabFiltering", availableDateName="a", expireDateName="e")
    assert body({}, model=model) is None
    b = body({"user": "u"}, {"view": ["x"]}, model=model)["query"]["bool"]
    assert b["should"] == [term("view", "x")] and "filter" not in b


def test_everything_at_once():
    rules = [{"name": "category", "values": ["c"], "bias": 2}, {"name": "color", "values": ["red"], "bias": 0}]  # fmt: skip
    q = {"user": "u", "userBias": 2, "item": "i", "itemSet": ["s"], "fields": rules, "blacklistItems": ["x"], "num": 3}  # fmt: skip
    b = body(q, {"purchase": ["p"]}, item_fields={"view": ["v"]})
    assert b["query"]["bool"] == {
        "should": [
            term("purchase", "p", 2.0),
            term("view", "v"),
            term("purchase", "s"),
            term("category", "c", 2.0),
            MATCH_ALL,
        ],
        "minimum_should_match": 1,
        "must_not": [{"ids": {"values": ["p", "x", "s", "i"]}}, {"terms": {"color": ["red"]}}],
    }
    assert b["size"] == 3


# -- the index ---------------------------------------------------------------------------------


def test_names_are_lower_case_safe_and_distinct():
    assert esa.alias_name("shop") == "crossrec-shop"
    assert esa.index_name("shop", "20240601T000000000Z-ab12cd") == "crossrec-shop_20240601t000000000z-ab12cd"  # fmt: skip
    assert esa.alias_name("Shop") != esa.alias_name("shop")
    odd = esa.alias_name("my shop/EU_2", prefix="")
    assert odd.startswith("my-shop-eu-2-") and "_" not in odd
    assert esa.safe_name("_x*").startswith("x-")


def model_with_properties(**params) -> Model:
    cfg = config(availableDateName="available", expireDateName="expires", **params)
    ids, _ = IdMap.build(["a", "b"])
    vocab, _ = IdMap.build(["b", "a"])
    docs = ids.to_arrow().to_pylist()
    v = vocab.to_arrow().to_pylist()
    props = {
        "a": {"color": ["red"], "size": 3, "ok": True, "note": None, "view": ["x"], "id": "no",
              "score": "7", "available": "2024-01-01T00:00:00Z", "_hidden": ["h"]},
        "b": None,
    }  # fmt: skip
    other = {"a": "b", "b": "a"}
    indptr = np.array([0, 1, 2], dtype=np.int64)
    indices = np.array([v.index(other[d]) for d in docs], dtype=np.int32)
    purchase = Correlators("purchase", vocab, indptr, indices, np.ones(2, dtype=np.float32))
    empty = Correlators("view", vocab, np.zeros(3, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))  # fmt: skip
    available = np.array([parse_time(props[d]["available"]) if props[d] else np.nan for d in docs])
    ranks = {"popRank": np.array([2.0 if d == "a" else np.nan for d in docs]), "score": np.array([7.0 if d == "a" else np.nan for d in docs])}  # fmt: skip
    return Model(
        "shop", "v1", cfg, ids, (purchase, empty), tuple(props[d] for d in docs), ranks,
        {"available": available, "expires": np.full(2, np.nan)},
    )  # fmt: skip


def test_documents_as_the_in_process_engine_indexes_them():
    docs = {d["id"]: d for d in esa.documents(model_with_properties())}
    assert docs["a"] == {
        "id": "a", "purchase": ["b"], "color": ["red"], "size": ["3"], "ok": ["true"],
        "available": "2024-01-01T00:00:00.000Z", "popRank": 2.0, "score": 7.0,
    }  # fmt: skip
    assert docs["b"] == {"id": "b", "purchase": ["a"]}


def test_mappings_follow_the_model():
    model = model_with_properties()
    spec = esa.index_body(ModelInfo.of(model), "crossrec-shop", 5)
    props = spec["mappings"]["properties"]
    assert props["id"] == props["purchase"] == props["view"] == {"type": "keyword", "norms": False}
    assert props["popRank"] == props["score"] == {"type": "double"}
    assert props["available"] == props["expires"] == {"type": "date"}
    assert spec["mappings"]["date_detection"] is False
    template = spec["mappings"]["dynamic_templates"][0]["properties"]
    assert template["match_mapping_type"] == "string"
    assert template["mapping"]["fields"]["date"]["ignore_malformed"] is True
    assert spec["settings"]["number_of_shards"] == 1
    assert spec["settings"]["similarity"]["default"] == {"type": "BM25", "k1": 0, "b": 0}
    assert spec["mappings"]["_meta"]["crossrec"] == {"alias": "crossrec-shop", "app": "shop", "version": "v1", "created_at": 5}  # fmt: skip


def test_property_updates_replace_properties_and_keep_correlators_and_trained_ranks():
    info_ = ModelInfo.of(model_with_properties())
    action = esa.update_action("idx", info_, "a", {"color": ["blue"], "score": 4, "available": "2024-02-01T00:00:00Z"})  # fmt: skip
    assert action["_op_type"] == "update" and action["_id"] == "a" and action["_index"] == "idx"
    params = action["script"]["params"]
    assert params["keep"] == ["id", "purchase", "view", "popRank"]
    assert params["set"] == {"color": ["blue"], "available": "2024-02-01T00:00:00.000Z", "score": 4.0}  # fmt: skip
    assert action["upsert"] == {"id": "a", **params["set"]}
    removed = esa.update_action("idx", info_, "a", None)
    assert removed["script"]["params"]["set"] == {} and "upsert" not in removed


def test_settings_from_the_environment_and_client_options():
    env = {
        "CROSSREC_ES_URL": "https://a:9200, https://b:9200",
        "CROSSREC_ES_API_KEY": "id:secret",
        "CROSSREC_ES_CA_CERTS": "/ca.pem",
        "CROSSREC_ES_VERIFY_CERTS": "false",
        "CROSSREC_ES_TIMEOUT": "2.5",
        "CROSSREC_ES_RETRIES": "5",
    }
    s = esa.EsSettings.from_env(env)
    assert s.hosts == ("https://a:9200", "https://b:9200")
    assert (s.api_key, s.ca_certs, s.verify_certs, s.timeout, s.retries) == ("id:secret", "/ca.pem", False, 2.5, 5)  # fmt: skip
    assert esa.EsSettings.from_env({}) == esa.EsSettings()
    basic = esa.EsSettings.from_env({"CROSSREC_ES_USERNAME": "elastic", "CROSSREC_ES_PASSWORD": "pw"})  # fmt: skip
    assert (basic.username, basic.password) == ("elastic", "pw")
    with pytest.raises(ValueError, match="CROSSREC_ES_TIMEOUT"):
        esa.EsSettings.from_env({"CROSSREC_ES_TIMEOUT": "soon"})
    client = esa.connect(dataclasses.replace(s, ca_certs=None, verify_certs=True))
    assert (client._max_retries, client._retry_on_timeout, client._request_timeout) == (
        5,
        True,
        2.5,
    )


def test_engine_selection_in_engine_json():
    cfg = config()
    assert engine_kind(cfg) == "inProcess"
    source = {**cfg.source, "algorithms": [{"name": "ur", "params": {**cfg.source["algorithms"][0]["params"], "engine": "elasticsearch"}}]}  # fmt: skip
    assert engine_kind(dataclasses.replace(cfg, source=source)) == "elasticsearch"
    source["algorithms"][0]["params"]["engine"] = "solr"
    with pytest.raises(
        ConfigError, match=r"params\.engine: 'solr' must be one of inProcess, elasticsearch"
    ):
        parse_engine_config(source)
