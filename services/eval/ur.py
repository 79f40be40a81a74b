"""crossrec under evaluation: the trainer's build_model on the events before T, then, per test
user, the in-process Engine asked as the query service asks it (services/query/service.py):
`{"user": id, "num": k}`, the user's history (targets and times) for
`engine.history_event_names(query)` as Redis would hold it at T, and T as the time of the request.

Indicator variants (for per-indicator lift) are the engine.json with fewer indicators: the
primary alone, the primary with each secondary, and all of them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from crossrec.core.config import EngineConfig, parse_engine_config
from crossrec.core.model import Model
from crossrec.core.query import parse_query
from crossrec.eval.split import EvalData
from crossrec.query.engine import Engine
from crossrec.trainer.build import build_model


def train(app: str, config: EngineConfig, data: EvalData, label: str) -> Model:
    version = f"eval-{label}".replace(" ", "")
    return build_model(
        app, config, data.train, data.properties, now_ms=data.cut_ms, version=version
    )


def recommend(
    model: Model, data: EvalData, k: int, advance: Callable[[int], None] | None = None
) -> np.ndarray:
    engine = Engine(model)
    out = np.full((len(data.users), k), -1, dtype=np.int64)
    for row, user in enumerate(data.users):
        query = parse_query({"user": user, "num": k})
        held, stamps = data.history[row], data.times[row]
        names = [n for n in engine.history_event_names(query) if n in held]
        history, times = {n: held[n] for n in names}, {n: stamps[n] for n in names}
        result = engine.recommend(query, history, data.cut_ms, times=times)
        codes = data.items.codes([item for item, _ in result.item_scores])
        out[row, : len(codes)] = codes
        if advance and row % 64 == 63:
            advance(64)
    if advance:
        advance(len(data.users) % 64)
    return out


def with_indicators(config: EngineConfig, keep: list[str]) -> EngineConfig:
    """The same engine.json with only the named indicators (in their configured order)."""
    doc: dict[str, Any] = copy.deepcopy(dict(config.source))
    params = doc["algorithms"][0]["params"]
    kept = [i for i in config.indicators if i.name in keep]
    inputs = {n for i in kept for n in (i.name, *i.aliases)}
    if "indicators" in params:
        params["indicators"] = [i for i in params["indicators"] if i.get("name") in keep]
    else:
        params["eventNames"] = [n for n in params["eventNames"] if n in keep]
    ds_params = doc.get("datasource", {}).get("params", {})
    if "eventNames" in ds_params:
        ds_params["eventNames"] = [n for n in ds_params["eventNames"] if n in inputs]
    return parse_engine_config(doc)


def indicator_variants(config: EngineConfig) -> list[tuple[str, list[str]]]:
    """(label, indicator names): the primary alone, + each secondary, then all (when different)."""
    primary, *secondary = config.indicator_names
    variants = [(primary, [primary])]
    variants += [(f"{primary} + {s}", [primary, s]) for s in secondary]
    if len(secondary) > 1:
        variants.append(
            ("all: " + " + ".join(config.indicator_names), list(config.indicator_names))
        )
    return variants


def llr_scorer(model: Model, data: EvalData) -> Callable[[np.ndarray], np.ndarray]:
    """Diagnostic, never served: the same CCO model, each item scored by the sum of the LLR
    values of its correlators found in the user's history (each indicator's newest
    `maxIndicatorsPerQuery` distinct ids). The UR's index keeps only the order of correlators
    and scores idf-weighted matches (UR-SPEC §2.7, §5.6); this shows what the LLR values add."""
    n_cat = data.items.n_catalogue
    doc_code = data.items.codes(model.documents.to_arrow().to_pylist())
    inside = np.flatnonzero((doc_code >= 0) & (doc_code < n_cat))
    parts = []
    for corr in model.correlators:
        ind = model.config.indicator(corr.name)
        weights = sp.csr_matrix(
            (corr.llr.astype(np.float64), corr.indices, corr.indptr),
            shape=(len(model.documents), len(corr.vocabulary)),
        )[inside]
        position = {v: i for i, v in enumerate(corr.vocabulary.to_arrow().to_pylist())}
        rows, cols = [], []
        for row, held in enumerate(data.history):
            ids = [x for a in ind.aliases for x in held.get(a, ())][: ind.max_query_events]
            found = [position[x] for x in dict.fromkeys(ids) if x in position]
            rows += [row] * len(found)
            cols += found
        users = sp.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(data.users), len(position))
        )
        parts.append((users, weights.T.tocsr()))

    def score(rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), n_cat))
        for users, weights in parts:
            out[:, doc_code[inside]] += (users[rows] @ weights).toarray()
        return out

    return score
