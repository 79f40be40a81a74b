"""engine.json: the UR's files are accepted unchanged; every mistake gets one clear message."""

from __future__ import annotations

import copy
import json

import pytest

from crossrec.core.config import ConfigError, load_engine_config, parse_engine_config
from crossrec.core.durations import DurationError, parse_seconds

UR_HANDMADE = {
    "comment": "This config file uses default settings for all but the required values",
    "id": "default",
    "description": "Default settings",
    "engineFactory": "com.actionml.RecommendationEngine",
    "datasource": {
        "params": {
            "name": "sample-handmade-data.txt",
            "appName": "handmade",
            "eventNames": ["purchase", "view", "category-pref"],
        }
    },
    "sparkConf": {
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",
        "es.index.auto.create": "true",
    },
    "algorithms": [
        {
            "comment": "simplest setup where all values are default",
            "name": "ur",
            "params": {
                "appName": "handmade",
                "indexName": "urindex",
                "typeName": "items",
                "numESWriteConnections": 4,
                "comment": "must have data for the first event or the model will not build",
                "eventNames": ["purchase", "view", "category-pref"],
                "availableDateName": "available",
                "expireDateName": "expires",
                "dateName": "date",
                "num": 4,
            },
        }
    ],
}


def with_params(**params):
    doc = copy.deepcopy(UR_HANDMADE)
    for key, value in params.items():
        if value is None:
            doc["algorithms"][0]["params"].pop(key, None)
        else:
            doc["algorithms"][0]["params"][key] = value
    return doc


def problems(doc) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_engine_config(doc)
    assert str(caught.value).startswith("engine.json has")
    return caught.value.problems


def test_the_urs_handmade_example_with_defaults():
    c = parse_engine_config(UR_HANDMADE)
    assert c.app_name == "handmade" and c.mode == "eventNames" and c.primary == "purchase"
    assert c.indicator_names == ("purchase", "view", "category-pref")
    view = c.indicator("view")
    assert (view.aliases, view.max_items_per_user, view.max_correlators_per_item, view.min_llr) == (
        ("view",),
        500,
        50,
        None,
    )
    assert view.max_query_events == 100 and c.max_query_events == 100
    assert c.blacklist_events == ("purchase",)
    (rank,) = c.rankings
    assert (rank.name, rank.type, rank.event_names, rank.duration_seconds, rank.end_time) == (
        "popRank",
        "popular",
        ("purchase",),
        3650 * 86400,
        None,
    )
    assert c.recs_model == "all" and c.num == 4 and c.return_self is False and c.seed is None
    assert c.user_bias is None and c.item_bias is None and c.fields == ()
    assert c.date_names == ("available", "expires", "date")
    assert c.index_name == "urindex" and c.type_name == "items" and c.num_es_write_connections == 4


def test_indicators_mode_with_aliases_and_per_indicator_settings():
    doc = with_params(
        eventNames=None,
        indicators=[
            {"name": "purchase", "aliases": ["buy", "purchase"], "maxCorrelatorsPerItem": 30},
            {"name": "view", "maxItemsPerUser": 200, "minLLR": 2.5},
            {"name": "category-pref", "maxIndicatorsPerQuery": 7, "comment": "x"},
        ],
        maxEventsPerEventType=99,
    )
    c = parse_engine_config(doc)
    purchase, view, cat = c.indicators
    assert purchase.aliases == ("buy", "purchase") and purchase.max_correlators_per_item == 30
    assert purchase.max_items_per_user == 500  # the UR's constant, not maxEventsPerEventType
    assert view.min_llr == 2.5 and view.max_items_per_user == 200 and view.max_query_events == 200
    assert cat.max_query_events == 7
    assert c.max_query_events == 100 + 200 + 7
    assert c.event_to_indicator() == {
        "buy": "purchase",
        "purchase": "purchase",
        "view": "view",
        "category-pref": "category-pref",
    }
    assert c.expand_event_names(("purchase", "other")) == ("buy", "purchase", "other")


def test_event_names_mode_uses_the_global_caps():
    c = parse_engine_config(
        with_params(maxEventsPerEventType=10, maxCorrelatorsPerEventType=5, maxQueryEvents=20)
    )
    assert {
        (i.max_items_per_user, i.max_correlators_per_item, i.max_query_events) for i in c.indicators
    } == {(10, 5, 20)}


def test_rankings_order_names_and_dates():
    doc = with_params(
        rankings=[
            {"type": "trending", "duration": "3 days", "offsetDate": "2017-01-01T00:00:00Z"},
            {
                "type": "hot",
                "name": "h",
                "eventNames": ["view"],
                "endDate": "2017-01-01T00:00:00.000Z",
            },
            {"type": "random"},
            {"type": "userDefined", "name": "score"},
            {"type": "popular", "name": "h"},
        ],
        seed=12,
    )
    c = parse_engine_config(doc)
    assert [r.name for r in c.rankings] == ["trendRank", "h", "uniqueRank", "score"]
    assert c.rankings[0].duration_seconds == 3 * 86400 and c.rankings[0].end_time == 1483228800000
    assert c.rankings[1].end_time == 1483228800000 and c.rankings[1].event_names == ("view",)
    assert c.seed == 12 and any("'h'" in w for w in c.warnings)


def test_no_rankings_when_given_an_empty_list():
    assert parse_engine_config(with_params(rankings=[])).rankings == ()


def test_fields_bias_and_flags():
    c = parse_engine_config(
        with_params(
            fields=[{"name": "categories", "values": ["a", "b"], "bias": -1}],
            userBias=2,
            itemBias=0.5,
            itemSetBias=3,
            returnSelf=True,
            blacklistEvents=[],
            recsModel="collabFiltering",
        )
    )
    assert c.fields[0].values == ("a", "b") and c.fields[0].bias == -1.0
    assert (c.user_bias, c.item_bias, c.item_set_bias, c.return_self) == (2, 0.5, 3, True)
    assert c.blacklist_events == () and c.recs_model == "collabFiltering"


def test_datasource_settings():
    doc = copy.deepcopy(UR_HANDMADE)
    doc["datasource"]["params"].update(
        minEventsPerUser=3, eventWindow={"duration": "30 days", "removeDuplicates": True}
    )
    c = parse_engine_config(doc)
    assert c.min_events_per_user == 3
    assert c.event_window.duration_seconds == 30 * 86400 and c.event_window.remove_duplicates


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({**UR_HANDMADE, "sparkConff": {}}, "sparkConff: unknown key (did you mean 'sparkConf'?)"),
        (
            with_params(userbias=1),
            "algorithms[0].params.userbias: unknown key (did you mean 'userBias'?)",
        ),
        (
            with_params(num="20"),
            'algorithms[0].params.num: must be an integer, got "20" (a string)',
        ),
        (with_params(num=0), "algorithms[0].params.num: must be at least 1, got 0"),
        (with_params(returnSelf="yes"), "algorithms[0].params.returnSelf: must be true or false"),
        (with_params(userBias="high"), "algorithms[0].params.userBias: must be a number"),
        (with_params(seed=1.5), "algorithms[0].params.seed: must be an integer"),
        (
            with_params(eventNames="purchase"),
            "algorithms[0].params.eventNames: must be a list of strings",
        ),
        (
            with_params(eventNames=[]),
            "algorithms[0].params.eventNames: must name at least the primary event",
        ),
        (
            with_params(eventNames=None, indicators=[]),
            "algorithms[0].params.indicators: must list at least the primary indicator",
        ),
        (
            with_params(indicators=[{"name": "purchase"}]),
            "algorithms[0].params: give eventNames or indicators, not both",
        ),
        (with_params(eventNames=None), "algorithms[0].params: needs eventNames or indicators"),
        (
            with_params(eventNames=None, indicators=[{"maxItemsPerUser": 5}]),
            "algorithms[0].params.indicators[0].name: is required",
        ),
        (
            with_params(eventNames=None, indicators=[{"name": "a", "minLLR": "5"}]),
            "algorithms[0].params.indicators[0].minLLR: must be a number",
        ),
        (
            with_params(eventNames=None, indicators=[{"name": "a", "alias": ["b"]}]),
            "indicators[0].alias: unknown key (did you mean 'aliases'?)",
        ),
        (with_params(eventNames=["purchase", "view", "purchase"]), "'purchase' is listed twice"),
        (
            with_params(
                eventNames=None, indicators=[{"name": "a"}, {"name": "b", "aliases": ["a"]}]
            ),
            "event name 'a' maps to both 'a' and 'b'",
        ),
        (with_params(eventNames=["id", "view"]), "'id' is reserved for the item id"),
        (
            with_params(eventNames=["view", "purchase", "category-pref"]),
            "datasource.params.eventNames: ['purchase', 'view', 'category-pref'] must be the algorithm's event names in the same order",
        ),
        (
            with_params(rankings=[{"type": "nope"}]),
            "rankings[0].type: 'nope' must be one of popular, trending, hot, random, userDefined",
        ),
        (
            with_params(rankings=[{"duration": 259200}]),
            'rankings[0].duration: 259200 is a number; write a duration string such as "259200 seconds"',
        ),
        (
            with_params(rankings=[{"duration": "3 fortnights"}]),
            "rankings[0].duration: '3 fortnights' is not a duration",
        ),
        (
            with_params(rankings=[{"duration": "1.5 days"}]),
            "rankings[0].duration: '1.5 days' is not a duration",
        ),
        (
            with_params(rankings=[{"duration": "10 ms"}]),
            "rankings[0].duration: '10 ms' must be at least 1 second",
        ),
        (
            with_params(rankings=[{"offsetDate": "yesterday"}]),
            "rankings[0].offsetDate: 'yesterday' is not an ISO-8601 date-time",
        ),
        (
            with_params(
                rankings=[{"offsetDate": "2017-01-01T00:00:00Z", "endDate": "2018-01-01T00:00:00Z"}]
            ),
            "rankings[0].endDate: differs from offsetDate",
        ),
        (
            with_params(rankings=[{"name": "view"}]),
            "rankings[0].name: 'view' is also an indicator name or 'id'",
        ),
        (
            with_params(rankings=[{"eventNames": []}]),
            "rankings[0].eventNames: must name at least one event",
        ),
        (
            with_params(rankings={"type": "popular"}),
            "algorithms[0].params.rankings: must be a list",
        ),
        (
            with_params(recsModel="some"),
            "algorithms[0].params.recsModel: 'some' must be one of all, collabFiltering, backfill",
        ),
        (
            with_params(availableDateName=3),
            "algorithms[0].params.availableDateName: must be a string",
        ),
        (
            with_params(dateName="view"),
            "algorithms[0].params.dateName: 'view' is also an indicator name or 'id'",
        ),
        (
            with_params(fields=[{"name": "x", "values": ["y"]}]),
            "algorithms[0].params.fields[0].bias: is required (a number)",
        ),
        (
            with_params(fields=[{"name": "x", "values": "y", "bias": 1}]),
            "algorithms[0].params.fields[0].values: must be a list of strings",
        ),
        (
            with_params(appName="other"),
            "algorithms[0].params.appName: 'other' differs from datasource.params.appName 'handmade'",
        ),
        ({**UR_HANDMADE, "algorithms": []}, "algorithms: must be a list with one algorithm"),
        ({k: v for k, v in UR_HANDMADE.items() if k != "algorithms"}, "algorithms: is required"),
        (
            {**UR_HANDMADE, "algorithms": [{"name": "als", "params": {}}]},
            'algorithms[0].name: must be "ur"',
        ),
        ({**UR_HANDMADE, "algorithms": [{"name": "ur"}]}, "algorithms[0].params: is required"),
        (
            {**UR_HANDMADE, "algorithms": UR_HANDMADE["algorithms"] * 2},
            "algorithms: has 2 entries; the UR takes exactly one",
        ),
        (
            {
                **UR_HANDMADE,
                "datasource": {"params": {"eventNames": ["purchase", "view", "category-pref"]}},
            },
            None,
        ),
        (
            {
                **UR_HANDMADE,
                "datasource": {"params": {"minEventsPerUser": -1, "appName": "handmade"}},
            },
            "datasource.params.minEventsPerUser: must be at least 0, got -1",
        ),
        (
            {
                **UR_HANDMADE,
                "datasource": {"params": {"appName": "handmade", "eventWindow": {"duration": "x"}}},
            },
            "datasource.params.eventWindow.duration: 'x' is not a duration",
        ),
        (
            {**UR_HANDMADE, "datasource": "x"},
            'datasource: must be a JSON object, got "x" (a string)',
        ),
    ],
)
def test_each_mistake_has_a_clear_message(doc, expected):
    if expected is None:  # the app name is taken from the algorithm when the datasource lacks it
        assert parse_engine_config(doc).app_name == "handmade"
        return
    found = problems(doc)
    assert any(expected in p for p in found), found
    assert len(found) == len(set(found))


def test_missing_app_name():
    doc = copy.deepcopy(UR_HANDMADE)
    del doc["datasource"]["params"]["appName"]
    del doc["algorithms"][0]["params"]["appName"]
    assert problems(doc) == ["datasource.params.appName: is required (a string)"]


def test_all_problems_are_reported_together():
    found = problems(
        with_params(num=0, recsModel="x", rankings=[{"type": "nope", "duration": 5}], typo=1)
    )
    assert len(found) == 5
    text = str(ConfigError(found))
    assert text.splitlines()[0] == "engine.json has 5 problems:" and all(
        f"  - {p}" in text for p in found
    )


def test_not_an_object():
    assert problems([1]) == ["engine.json must be a JSON object, got [1] (a list)"]


def test_load_from_file(tmp_path):
    path = tmp_path / "engine.json"
    path.write_text(json.dumps(UR_HANDMADE))
    assert load_engine_config(path).primary == "purchase"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_engine_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_engine_config(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3650 days", 315360000),
        ("1 d", 86400),
        ("2hours", 7200),
        ("3 hrs", 10800),
        ("5 min", 300),
        ("1 minute", 60),
        ("7 s", 7),
        ("8 secs", 8),
        ("1500 ms", 1),
        ("2500 millis", 2),
        ("1 milliseconds", 0),
    ],
)
def test_scala_durations(text, seconds):
    assert parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "days", "3", "1.5 days", "Inf", "3 weeks", 3])
def test_bad_durations(text):
    with pytest.raises(DurationError):
        parse_seconds(text)
