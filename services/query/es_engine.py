"""The Elasticsearch query engine: the same interface and answers as the in-process engine
(crossrec.query.engine), served from a model version's index (crossrec.adapters.elasticsearch).

    engine = ElasticsearchEngine.for_manifest(es, store.manifest(app, version), settings)
    names = engine.history_event_names(query)
    result = await engine.recommend(query, history, now_ms)
    await engine.update_properties("item-7", {"category": ["shoes"]})   # no retraining

An engine reads and updates its own version's index (not the alias), so an answer never mixes
versions and a server still on the previous version keeps working through the grace period.
Without arrays in memory it needs only the manifest; an item-based query costs one GET (the
query item's correlators) before the search.

Which engine serves an app: `algorithms[0].params.engine` in its engine.json, "elasticsearch" or
"inProcess" (the default) — see `engine_kind`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from elasticsearch import AsyncElasticsearch

from crossrec.adapters import elasticsearch as esa
from crossrec.core.config import EngineConfig
from crossrec.core.model import Model
from crossrec.core.query import Query, Result
from crossrec.query import es_query
from crossrec.query.es_query import ModelInfo


def engine_kind(config: EngineConfig) -> str:
    """ "elasticsearch" or "inProcess", from engine.json `algorithms[0].params.engine` (the
    config parser has checked the value)."""
    algorithms = config.source.get("algorithms") or [{}]
    algorithm = algorithms[0] if isinstance(algorithms[0], dict) else {}
    params = algorithm.get("params") if isinstance(algorithm.get("params"), dict) else {}
    return params.get("engine") or "inProcess"


class ElasticsearchEngine:
    def __init__(self, client: AsyncElasticsearch, info: ModelInfo, index: str) -> None:
        self.client = client
        self.info = info
        self.index = index

    @classmethod
    def for_model(
        cls, client: AsyncElasticsearch, model: Model, settings: esa.EsSettings
    ) -> ElasticsearchEngine:
        index = esa.index_name(model.app, model.version, settings.index_prefix)
        return cls(client, ModelInfo.of(model), index)

    @classmethod
    def for_manifest(
        cls, client: AsyncElasticsearch, manifest: Mapping[str, Any], settings: esa.EsSettings
    ) -> ElasticsearchEngine:
        info = ModelInfo.from_manifest(manifest)
        return cls(client, info, esa.index_name(info.app, info.version, settings.index_prefix))

    @property
    def config(self) -> EngineConfig:
        return self.info.config

    def history_event_names(self, query: Query) -> list[str]:
        """The event names whose history `recommend` reads for this query (scoring, blacklist)."""
        return es_query.history_event_names(self.info, query)

    async def recommend(
        self,
        query: Query,
        history: Mapping[str, Sequence[str]],
        now_ms: int,
        *,
        times: Mapping[str, Sequence[int]] | None = None,
        memo: dict[Any, Any] | None = None,
    ) -> Result:
        """One page of recommendations; arguments as the in-process engine's (`memo` unused:
        Elasticsearch gets the history's ids each time)."""
        item_fields = await self._item_fields(query.item) if query.item is not None else None
        body = es_query.search_body(
            self.info, query, history, now_ms, item_fields=item_fields, times=times
        )
        if body is None:
            return Result([])
        response = await self.client.search(index=self.index, **es_query.search_kwargs(body))
        hits = response["hits"]["hits"]
        items = [(hit["_id"], float(hit.get("_score") or 0.0)) for hit in hits]
        ranks = None
        if query.with_ranks:
            ranks = [
                {
                    n: float(v)
                    for n in self.info.rankings
                    if (v := hit.get("_source", {}).get(n)) is not None
                }
                for hit in hits
            ]
        return Result(items, ranks, backfill=any(score == 0 for _, score in items))

    async def _item_fields(self, item: str) -> dict[str, list[str]] | None:
        """The query item's correlators per indicator; None if the index has no such item."""
        found = await self.client.options(ignore_status=404).get(
            index=self.index, id=item, source_includes=list(self.info.indicators)
        )
        return found.get("_source", {}) if found.get("found") else None

    async def update_properties(self, item: str, properties: Mapping[str, Any] | None) -> None:
        """The item's current properties (None: it has none), without retraining."""
        await self.update_many({item: properties})

    async def update_many(
        self, changes: Mapping[str, Mapping[str, Any] | None], *, refresh: bool | str = False
    ) -> int:
        """Several items' current properties in bulk requests; the number changed or added.
        Visible to queries after the index's next refresh (1 s), or at once with refresh=True."""
        return await esa.update_properties(
            self.client, self.index, self.info, changes, refresh=refresh
        )
