"""Model versions as Elasticsearch indices behind an alias (UR-SPEC §4, DESIGN §5).

    es = connect(EsSettings.from_env())
    result = await write_model(es, model, settings, grace_seconds=300, progress=True)
    await update_properties(es, result.index, ModelInfo.of(model), {"i7": {"color": ["red"]}})

- Names: alias `<prefix><app>`, one index per version `<alias>_<version>`, lower-cased and made
  safe (an app name that had to change gets a CRC suffix, so "Shop" and "shop" stay apart).
- An index: one primary shard (index-wide term statistics, as the in-process engine), the
  default similarity BM25 with k1 = 0 and b = 0, so that on ES 8 a `term` match scores exactly
  boost·idf (the UR formula, UR-SPEC §5.6; with the stock k1 it is that over 1 + k1); mappings
  from the model: `id` and indicators keyword without norms, rankings double, configured dates
  date, every other (property) field keyword without norms via a dynamic template, with a `.date`
  sub-field that holds the value when it parses as a date (for `dateRange` on any property).
- Documents: the model's, as the in-process engine indexes them: indicator fields in LLR order,
  properties as keyword arrays (crossrec.query.index.keywords; properties named like an
  indicator or `id` are not indexed), dates, ranking floats (a ranking overrides a property of
  the same name).
- `write_model`: removes indices a crashed train left behind, creates the new index, bulk-loads it
  with bounded concurrency (optionally with a progress bar), checks the count, and makes it live
  with one atomic POST /_aliases; the previous index stays until `grace_seconds` after, then the
  next `write_model` or `cleanup` deletes it. One writer per app at a time (the train lock).
  `overlay` applies property changes newer than the training data before the swap.
- `update_properties`: $set/$unset/$delete results reach the index as scripted partial updates
  that replace the item's property fields and keep its correlators and trained rankings; an item
  the index lacks is upserted (Harness's doc_as_upsert).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import AsyncElasticsearch, helpers
from elasticsearch.serializer import OrjsonSerializer
from rich.progress import Progress

from crossrec.core.events import format_time
from crossrec.core.model import Model
from crossrec.core.rankings import as_number
from crossrec.query.documents import date_value
from crossrec.query.es_query import DATE_SUBFIELD, ModelInfo
from crossrec.query.index import keywords

SERVER_MAJOR = 8  # the client library is pinned to this major (elasticsearch>=8,<9)
META = "crossrec"
KEYWORD = {"type": "keyword", "norms": False}
PROPERTY = {
    **KEYWORD,
    "fields": {
        DATE_SUBFIELD: {
            "type": "date",
            "format": "strict_date_optional_time",
            "ignore_malformed": True,
        }
    },
}
# Replace an item's property fields (everything but `keep`) with `set`; a no-op when unchanged.
UPDATE_SCRIPT = """
Map before = new HashMap(ctx._source);
for (def k : new ArrayList(ctx._source.keySet())) { if (!params.keep.contains(k)) { ctx._source.remove(k); } }
ctx._source.putAll(params.set);
if (ctx._source == before) { ctx.op = 'noop'; }
""".strip()


def _flag(raw: str) -> bool:
    return raw.strip().lower() not in ("0", "false", "no", "off", "")


@dataclass(frozen=True, slots=True)
class EsSettings:
    hosts: tuple[str, ...] = ("http://127.0.0.1:9200",)
    api_key: str | None = None  # "id:key" or the encoded key
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None
    verify_certs: bool = True
    timeout: float = 10.0  # seconds per request
    retries: int = 3  # per request (connection errors, 429/502/503/504), and per bulk chunk
    index_prefix: str = "crossrec-"
    replicas: int = 0  # set once the index is loaded
    bulk_concurrency: int = 4  # bulk requests in flight (numESWriteConnections overrides)
    bulk_chunk: int = 1000  # documents per bulk request

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EsSettings:
        env = os.environ if env is None else env
        read = {
            "hosts": (
                "CROSSREC_ES_URL",
                lambda v: tuple(h.strip() for h in v.split(",") if h.strip()),
            ),
            "api_key": ("CROSSREC_ES_API_KEY", str),
            "username": ("CROSSREC_ES_USERNAME", str),
            "password": ("CROSSREC_ES_PASSWORD", str),
            "ca_certs": ("CROSSREC_ES_CA_CERTS", str),
            "verify_certs": ("CROSSREC_ES_VERIFY_CERTS", _flag),
            "timeout": ("CROSSREC_ES_TIMEOUT", float),
            "retries": ("CROSSREC_ES_RETRIES", int),
            "index_prefix": ("CROSSREC_ES_INDEX_PREFIX", str),
            "replicas": ("CROSSREC_ES_REPLICAS", int),
            "bulk_concurrency": ("CROSSREC_ES_BULK_CONCURRENCY", int),
            "bulk_chunk": ("CROSSREC_ES_BULK_CHUNK", int),
        }
        values = {}
        for name, (variable, convert) in read.items():
            raw = env.get(variable)
            if raw is not None and raw != "":
                try:
                    values[name] = convert(raw)
                except ValueError:
                    raise ValueError(f"{variable}={raw!r} is not valid") from None
        return cls(**values)


def connect(settings: EsSettings) -> AsyncElasticsearch:
    """An async client with the settings' hosts, TLS, auth, timeout and retries."""
    options: dict[str, Any] = {
        "request_timeout": settings.timeout,
        "max_retries": settings.retries,
        "retry_on_timeout": True,
        "serializer": OrjsonSerializer(),
    }
    if settings.api_key:
        key = settings.api_key
        options["api_key"] = tuple(key.split(":", 1)) if ":" in key else key
    elif settings.username:
        options["basic_auth"] = (settings.username, settings.password or "")
    if settings.ca_certs:
        options["ca_certs"] = settings.ca_certs
    if any(h.startswith("https:") for h in settings.hosts):
        options["verify_certs"] = settings.verify_certs
    return AsyncElasticsearch(list(settings.hosts), **options)


async def check_server(es: AsyncElasticsearch) -> str:
    """The server's version; ValueError unless its major is the client's."""
    version = (await es.info())["version"]["number"]
    if int(version.split(".")[0]) != SERVER_MAJOR:
        raise ValueError(
            f"Elasticsearch {version} answers, but crossrec's client speaks {SERVER_MAJOR}.x: "
            f"install elasticsearch>={version.split('.')[0]},<{int(version.split('.')[0]) + 1}"
        )
    return version


# -- names ------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^a-z0-9.+-]")  # "_" separates alias and version, so it is replaced too


def safe_name(text: str, *, tag: bool = True) -> str:
    """`text` as part of an index name; with `tag`, a changed name gets its CRC-32 appended."""
    cleaned = _UNSAFE.sub("-", text.lower()).lstrip("-+.") or "x"
    if tag and cleaned != text:
        cleaned = f"{cleaned}-{zlib.crc32(text.encode()):08x}"
    return cleaned


def alias_name(app: str, prefix: str = "crossrec-") -> str:
    return f"{prefix}{safe_name(app)}"


def index_name(app: str, version: str, prefix: str = "crossrec-") -> str:
    return f"{alias_name(app, prefix)}_{safe_name(version, tag=False)}"


# -- mappings and documents -------------------------------------------------------------------


def index_body(info: ModelInfo, alias: str, now_ms: int) -> dict[str, Any]:
    """Settings and mappings of a new (loading) index of the model."""
    properties: dict[str, Any] = {"id": KEYWORD}
    properties.update({name: KEYWORD for name in info.indicators})
    properties.update({name: {"type": "date"} for name in info.dates})
    properties.update({name: {"type": "double"} for name in info.rankings})
    meta = {"alias": alias, "app": info.app, "version": info.version, "created_at": now_ms}
    return {
        "settings": {
            "number_of_shards": 1,
            "number_of_replicas": 0,
            "refresh_interval": "-1",
            "similarity": {"default": {"type": "BM25", "k1": 0, "b": 0}},
        },
        "mappings": {
            "dynamic": True,
            "date_detection": False,
            "numeric_detection": False,
            "_meta": {META: meta},
            "dynamic_templates": [
                {"properties": {"match_mapping_type": "string", "mapping": PROPERTY}}
            ],
            "properties": properties,
        },
    }


def _reserved(info: ModelInfo) -> frozenset[str]:
    return frozenset(("id", *info.indicators, *info.dates, *info.rankings))


def _keywords(props: Mapping[str, Any] | None, reserved: frozenset[str]) -> dict[str, list[str]]:
    out = {}
    for name, value in (props or {}).items():
        if name not in reserved and not name.startswith("_"):
            terms = keywords(value)
            if terms:
                out[name] = list(terms)
    return out


def property_fields(props: Mapping[str, Any] | None, info: ModelInfo) -> dict[str, Any]:
    """An item's current properties as the index holds them: keyword arrays for the property
    fields, dates for the configured date names, userDefined ranking values."""
    if not props or info.collab:
        return {}
    out: dict[str, Any] = _keywords(props, _reserved(info))
    for name in info.dates:
        millis = date_value(props, name)
        if not math.isnan(millis):
            out[name] = format_time(int(millis))
    for name in info.user_defined & set(info.rankings):
        value = as_number(props[name]) if name in props else math.nan
        if not math.isnan(value):
            out[name] = value
    return out


def documents(model: Model, info: ModelInfo | None = None) -> Iterator[dict[str, Any]]:
    """The model's documents, in document order."""
    info = info or ModelInfo.of(model)
    reserved = _reserved(info)
    vocabularies = [c.vocabulary.to_arrow().to_pylist() for c in model.correlators]
    indptrs = [c.indptr.tolist() for c in model.correlators]
    ranks = [(name, model.rankings[name].tolist()) for name in model.rankings]
    dates = [(name, model.dates[name].tolist()) for name in model.dates]
    for doc, item in enumerate(model.documents.to_arrow().to_pylist()):
        out: dict[str, Any] = {"id": item}
        if not info.collab:
            out.update(_keywords(model.properties[doc], reserved))
        for c, vocabulary, indptr in zip(model.correlators, vocabularies, indptrs, strict=True):
            lo, hi = indptr[doc], indptr[doc + 1]
            if hi > lo:
                out[c.name] = [vocabulary[i] for i in c.indices[lo:hi].tolist()]
        for name, values in dates:
            if values[doc] == values[doc]:  # not NaN
                out[name] = format_time(int(values[doc]))
        for name, values in ranks:
            if values[doc] == values[doc]:
                out[name] = values[doc]
        yield out


# -- bulk load --------------------------------------------------------------------------------


class _Bar:
    """A rich progress bar, or nothing."""

    def __init__(self, progress: Progress | None, label: str, total: int | None) -> None:
        self.progress = progress
        self.task = progress.add_task(label, total=total) if progress else None

    def advance(self, n: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, n)


async def _delete_until_gone(es: AsyncElasticsearch, index: str, attempts: int = 5) -> None:
    """Delete a failed write's index. Bulk requests cancelled on our side may still be running
    on the server, and one that lands after the delete re-creates the index (auto-create):
    delete again until it stays gone."""
    for _ in range(attempts):
        await es.options(ignore_status=404).indices.delete(index=index)
        await asyncio.sleep(0.2)
        if not await es.indices.exists(index=index):
            return


async def bulk_load(
    es: AsyncElasticsearch,
    index: str,
    docs: Iterable[dict[str, Any]],
    *,
    total: int | None = None,
    concurrency: int = 4,
    chunk: int = 1000,
    retries: int = 3,
    progress: bool = False,
) -> int:
    """Index the documents (`_id` = `id`) with at most `concurrency` bulk requests in flight;
    the number indexed. A document the server rejects raises helpers.BulkIndexError."""
    queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(maxsize=2 * concurrency)
    done = 0

    async def produce() -> None:
        batch: list[dict[str, Any]] = []
        for doc in docs:
            batch.append({"_index": index, "_id": doc["id"], "_source": doc})
            if len(batch) >= chunk:
                await queue.put(batch)
                batch = []
        if batch:
            await queue.put(batch)
        for _ in range(concurrency):
            await queue.put(None)

    async def consume(bar: _Bar) -> None:
        nonlocal done
        while (batch := await queue.get()) is not None:
            ok, _ = await helpers.async_bulk(
                es, batch, chunk_size=len(batch), max_retries=retries, initial_backoff=0.5,
                max_backoff=10, stats_only=True,
            )  # fmt: skip
            done += ok
            bar.advance(len(batch))

    with Progress(transient=True, disable=not progress) as bars:
        bar = _Bar(bars if progress else None, f"indexing {index}", total)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                for _ in range(concurrency):
                    group.create_task(consume(bar))
        except BaseExceptionGroup as failed:  # the first failure, as a plain exception
            raise failed.exceptions[0] from None
    return done


# -- lifecycle --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppIndex:
    name: str
    live: bool
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriteResult:
    index: str
    alias: str
    documents: int
    seconds: float
    previous: tuple[str, ...]  # the indices the alias pointed to before
    deleted: tuple[str, ...]  # indices removed: crash leftovers and retired versions


def _now() -> int:
    return int(time.time() * 1000)


async def app_indices(es: AsyncElasticsearch, alias: str) -> list[AppIndex]:
    """The model indices behind or made for `alias`, live or not."""
    found = await es.indices.get(index=f"{alias}_*", features=["aliases", "mappings"])
    out = []
    for name, body in found.body.items():
        meta = body.get("mappings", {}).get("_meta", {}).get(META, {})
        if "_" in name[len(alias) + 1 :] or meta.get("alias") != alias:
            continue  # another app's (an app named "<app>_x") or not crossrec's
        out.append(AppIndex(name, alias in body.get("aliases", {}), meta))
    return sorted(out, key=lambda i: i.name)


async def live_index(es: AsyncElasticsearch, alias: str) -> str | None:
    live = [i.name for i in await app_indices(es, alias) if i.live]
    return live[0] if live else None


async def cleanup(
    es: AsyncElasticsearch,
    alias: str,
    grace_seconds: float,
    *,
    now_ms: int | None = None,
    orphans: bool = False,
) -> list[str]:
    """Delete the alias's indices nobody needs: not live, not retired less than `grace_seconds`
    ago, and — unless `orphans` (the caller holds the app's train lock, so nothing is loading) —
    created at least `grace_seconds` ago. The deleted names."""
    now = _now() if now_ms is None else now_ms
    grace = grace_seconds * 1000
    indices = await app_indices(es, alias)
    keep = {i.name for i in indices if i.live}
    for index in indices:
        if index.live and now - index.meta.get("live_since", 0) < grace:
            keep.update(index.meta.get("previous", ()))
    deleted = []
    for index in indices:
        old = now - index.meta.get("created_at", 0) >= grace
        if index.name not in keep and (orphans or old):
            await es.options(ignore_status=404).indices.delete(index=index.name)
            deleted.append(index.name)
    return deleted


async def write_model(
    es: AsyncElasticsearch,
    model: Model,
    settings: EsSettings,
    *,
    grace_seconds: float = 300.0,
    progress: bool = False,
    now_ms: int | None = None,
    overlay: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> WriteResult:
    """Write the model version to a new index and make it live (one alias swap). `overlay`:
    items' current properties (None: none), applied before the swap — the changes that arrived
    after training read the event log (as the query service's Redis overlay)."""
    started = time.perf_counter()
    info = ModelInfo.of(model)
    alias = alias_name(model.app, settings.index_prefix)
    index = index_name(model.app, model.version, settings.index_prefix)
    await check_server(es)
    if await es.indices.exists(index=alias) and not await es.indices.exists_alias(name=alias):
        raise ValueError(f"an index named {alias!r} is where the alias should be: delete it")
    deleted = await cleanup(es, alias, grace_seconds, now_ms=now_ms, orphans=True)
    await es.indices.create(index=index, **index_body(info, alias, now_ms or _now()))
    try:
        concurrency = model.config.num_es_write_connections or settings.bulk_concurrency
        count = await bulk_load(
            es, index, documents(model, info), total=len(model), concurrency=concurrency,
            chunk=settings.bulk_chunk, retries=settings.retries, progress=progress,
        )  # fmt: skip
        await es.indices.put_settings(
            index=index,
            settings={"refresh_interval": None, "number_of_replicas": settings.replicas},
        )
        await es.indices.refresh(index=index)
        found = (await es.count(index=index))["count"]
        if found != count or count != len(model):
            raise RuntimeError(f"{index}: {found} documents searchable, {len(model)} written")
        if overlay:
            await update_properties(es, index, info, overlay, chunk=settings.bulk_chunk)
            await es.indices.refresh(index=index)
        if settings.replicas:
            await es.cluster.health(index=index, wait_for_status="green", timeout="120s")
        previous = await swap_alias(es, alias, index, info, now_ms=now_ms)
    except BaseException:
        with contextlib.suppress(Exception):
            await _delete_until_gone(es, index)
        raise
    deleted += await cleanup(es, alias, grace_seconds, now_ms=now_ms, orphans=True)
    seconds = round(time.perf_counter() - started, 3)
    return WriteResult(index, alias, count, seconds, tuple(previous), tuple(deleted))


async def swap_alias(
    es: AsyncElasticsearch, alias: str, index: str, info: ModelInfo, *, now_ms: int | None = None
) -> list[str]:
    """Point the alias at `index` alone, atomically; the indices it pointed to before (recorded in
    the new index's _meta, with the time, for the grace period)."""
    previous = [i.name for i in await app_indices(es, alias) if i.live and i.name != index]
    mapping = await es.indices.get_mapping(index=index)
    meta = dict(mapping[index]["mappings"].get("_meta", {}).get(META, {}))
    meta.update(previous=previous, live_since=now_ms or _now())
    await es.indices.put_mapping(index=index, meta={META: meta})
    actions: list[dict[str, Any]] = [{"add": {"index": index, "alias": alias}}]
    actions += [{"remove": {"index": name, "alias": alias}} for name in previous]
    await es.indices.update_aliases(actions=actions)
    return previous


# -- real-time properties ---------------------------------------------------------------------


def update_action(
    index: str, info: ModelInfo, item: str, props: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The bulk update that gives the item exactly these current properties (None: none)."""
    keep = ["id", *info.indicators, *(r for r in info.rankings if r not in info.user_defined)]
    fields = property_fields(props, info)
    action: dict[str, Any] = {
        "_op_type": "update",
        "_index": index,
        "_id": item,
        "retry_on_conflict": 5,
        "script": {
            "source": UPDATE_SCRIPT,
            "lang": "painless",
            "params": {"keep": keep, "set": fields},
        },
    }
    if props:
        action["upsert"] = {"id": item, **fields}
    return action


async def update_properties(
    es: AsyncElasticsearch,
    index: str,
    info: ModelInfo,
    changes: Mapping[str, Mapping[str, Any] | None],
    *,
    refresh: bool | str = False,
    chunk: int = 1000,
) -> int:
    """Apply items' current properties to the index; the number of items changed or added.
    Nothing happens with recsModel collabFiltering (its index holds no properties, as training)."""
    if info.collab or not changes:
        return 0
    actions = [update_action(index, info, item, props) for item, props in changes.items()]
    changed = 0
    async for ok, result in helpers.async_streaming_bulk(
        es, actions, chunk_size=chunk, raise_on_error=False, raise_on_exception=True,
        max_retries=3, initial_backoff=0.2, refresh=refresh,
    ):  # fmt: skip
        outcome = result.get("update", {})
        if not ok and outcome.get("status") != 404:  # 404: no properties for an unknown item
            raise helpers.BulkIndexError(f"property update of {outcome.get('_id')!r} failed", [result])  # fmt: skip
        changed += ok and outcome.get("result") in ("updated", "created")
    return changed
