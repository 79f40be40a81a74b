"""Events + item properties + engine config -> a Model (UR-SPEC §8a.1), without any I/O.

Strings become integer codes once (Arrow dictionary encoding); target vocabularies are sorted so
that "code ascending" is "id ascending", the tie-break of the correlator order.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossrec.core import cco
from crossrec.core.config import EngineConfig
from crossrec.core.events import parse_time
from crossrec.core.idmap import IdMap
from crossrec.core.model import Correlators, Model
from crossrec.core.rankings import RankingEvents, ranking_values, user_defined
from crossrec.trainer.data import EventColumns


@dataclass
class Timer:
    phases: dict[str, float]

    def __init__(self) -> None:
        self.phases = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(self.phases.get(name, 0.0) + now - self._last, 4)
        self._last = now


def encode_sorted(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(codes, vocabulary) with the vocabulary in id order."""
    encoded = values.dictionary_encode()
    dictionary = encoded.dictionary
    order = pc.sort_indices(dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return rank[codes], dictionary.take(pa.array(order))


def _codes_of(names: pa.Array, vocabulary: list[str]) -> np.ndarray:
    """Per event, the index of its name in `vocabulary` (-1 if absent)."""
    found = pc.index_in(names, value_set=pa.array(vocabulary, pa.string()))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def build_model(
    app: str,
    config: EngineConfig,
    events: EventColumns,
    properties: Mapping[str, dict[str, Any]],
    *,
    now_ms: int,
    version: str,
    threads: int | None = None,
    timer: Timer | None = None,
) -> Model:
    timer = timer or Timer()
    warnings = list(config.warnings)
    if config.event_window and config.event_window.duration_seconds:
        events = events.filter(events.time > now_ms - config.event_window.duration_seconds * 1000)

    # --- CCO -------------------------------------------------------------------------------
    indicator_of = _codes_of(events.event, list(config.event_to_indicator()))
    alias_to_position = [
        config.indicator_names.index(i) for i in config.event_to_indicator().values()
    ]
    position = np.where(indicator_of >= 0, np.asarray([*alias_to_position, -1])[indicator_of], -1)
    usage = (position >= 0) & events.usage_mask()
    usage_idx = np.flatnonzero(usage)
    take = pa.array(usage_idx)
    user_codes = (
        events.entity_id.take(take).dictionary_encode().indices.to_numpy(zero_copy_only=False)
    )
    targets = events.target_entity_id.take(take)
    position = position[usage_idx]
    data, vocabularies = [], []
    for k, ind in enumerate(config.indicators):
        mine = np.flatnonzero(position == k)
        codes, vocabulary = encode_sorted(targets.take(pa.array(mine)))
        vocabularies.append(vocabulary)
        data.append(
            cco.IndicatorData(
                ind.name,
                user_codes[mine].astype(np.int64),
                codes,
                len(vocabulary),
                ind.max_items_per_user,
                ind.max_correlators_per_item,
                ind.min_llr,
            )
        )
    timer.lap("encode")
    result = cco.compute(
        data, min_events_per_user=config.min_events_per_user, seed=config.seed, threads=threads
    )
    warnings += result.warnings
    timer.lap("cco")

    # --- the item space and rankings ---------------------------------------------------------
    items = vocabularies[0]
    if len(items) == 0:
        ranked = config.expand_event_names(tuple(n for r in config.rankings for n in r.event_names))
        mask = pc.is_in(events.event, value_set=pa.array(ranked, pa.string()))
        distinct = pc.unique(events.target_entity_id.filter(mask))
        items = distinct.take(pc.sort_indices(distinct))
        if len(items):
            warnings.append("no primary events: rankings cover the targets of the ranking events")
    name_vocab = pc.unique(events.event)
    ranking_events = RankingEvents(
        names=tuple(name_vocab.to_pylist()),
        name_code=_codes_of(events.event, name_vocab.to_pylist()),
        item=pc.index_in(events.target_entity_id, value_set=items)
        .fill_null(-1)
        .to_numpy(zero_copy_only=False),
        time=events.time,
    )
    with_ranks = config.recs_model != "collabFiltering"
    seed = config.seed if config.seed is not None else now_ms
    rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, 1 << 32])
    item_ranks = {
        r.name: ranking_values(
            r, ranking_events, len(items), now_ms, rng, config.expand_event_names(r.event_names)
        )
        for r in config.rankings
        if with_ranks
    }
    timer.lap("rankings")

    model = assemble(
        app, version, config, items, result, vocabularies, item_ranks,
        properties if with_ranks else {}, warnings,
    )  # fmt: skip
    timer.lap("assemble")
    info = {
        "now": now_ms,
        "users": result.n_users,
        "primary_items": len(items),
        "indicators": {c.name: c.stats for c in result.correlations.values()},
        "warnings": warnings,
        "timings": timer.phases,
    }
    return dataclasses.replace(model, info=info)


def assemble(
    app: str,
    version: str,
    config: EngineConfig,
    items: pa.Array,
    result: cco.CcoResult,
    vocabularies: list[pa.Array],
    item_ranks: dict[str, np.ndarray],
    properties: Mapping[str, dict[str, Any]],
    warnings: list[str],
) -> Model:
    """Documents = primary items ∪ items with properties, in IdMap order; everything aligned."""
    extra = pa.array([i for i in properties], pa.string())
    extra = extra.filter(pc.invert(pc.is_in(extra, value_set=items)))
    documents, doc_of = IdMap.build(pa.concat_arrays([items.cast(pa.string()), extra]))
    n_docs, item_doc = len(documents), doc_of[: len(items)]
    correlators = []
    for ind, vocabulary in zip(config.indicators, vocabularies, strict=True):
        corr = result.correlations[ind.name]
        correlators.append(_reindex(ind.name, corr, vocabulary, item_doc, n_docs))

    props: list[dict[str, Any] | None] = [None] * n_docs
    ids = documents.to_arrow().to_pylist() if properties else []
    for doc, item in enumerate(ids):
        props[doc] = properties.get(item)
    rankings = {}
    for ranking in config.rankings:
        if ranking.name not in item_ranks:
            continue
        if ranking.type == "userDefined":
            rankings[ranking.name] = user_defined(props, ranking.name)
            continue
        values = np.full(n_docs, np.nan)
        values[item_doc] = item_ranks[ranking.name]
        rankings[ranking.name] = values
    dates = (
        {name: _dates(props, name, warnings) for name in config.date_names} if properties else {}
    )
    return Model(app, version, config, documents, tuple(correlators), tuple(props), rankings, dates)


def _reindex(
    name: str, corr: cco.Correlation, vocabulary: pa.Array, item_doc: np.ndarray, n_docs: int
) -> Correlators:
    """Rows from primary-item codes to documents; indices into a vocabulary of correlated ids."""
    counts = np.zeros(n_docs, dtype=np.int64)
    per_item = np.diff(corr.indptr)
    item_doc = item_doc[: len(per_item)]  # no primary events: rankings-only items have no rows
    counts[item_doc] = per_item
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    item_of_entry = np.repeat(np.arange(len(per_item)), per_item)
    target = indptr[item_doc[item_of_entry]] + (
        np.arange(len(item_of_entry)) - corr.indptr[item_of_entry]
    )
    used = np.flatnonzero(np.bincount(corr.indices, minlength=len(vocabulary)))
    vocab, position = IdMap.build(
        vocabulary.take(pa.array(used)) if len(used) else pa.array([], pa.string())
    )
    indices = np.empty(len(corr.indices), dtype=np.int32)
    indices[target] = position[np.searchsorted(used, corr.indices)]
    llr = np.empty(len(corr.llr), dtype=np.float32)
    llr[target] = corr.llr
    return Correlators(name, vocab, indptr, indices, llr)


def _dates(props: list[dict[str, Any] | None], name: str, warnings: list[str]) -> np.ndarray:
    values = np.full(len(props), np.nan)
    bad = 0
    for doc, p in enumerate(props):
        if p and name in p:
            try:
                values[doc] = parse_time(p[name], name)
            except ValueError:
                bad += 1
    if bad:
        warnings.append(f"{bad} item(s) have a {name!r} property that is not an ISO-8601 date-time")
    return values
