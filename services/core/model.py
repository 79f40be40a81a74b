"""A trained model version: immutable, one document per item (UR-SPEC §4.1), saved as plain files.

Documents are the primary items (every target of a primary-indicator event) plus, unless
`recsModel` is `collabFiltering`, every item with properties. Per document: the correlators of each
indicator (CSR: `indptr` over documents, `indices` into that indicator's vocabulary of correlated
ids, LLR descending, `llr` as float32), the item's properties, one float per ranking (NaN = none)
and one epoch-ms float per configured date name (NaN = none).

Files (see docs/engine-config.md "Model files"), written by `save`, read by `load`:
- `documents.arrow`   Arrow IPC: `id`, `properties` (JSON text or null), `rank:<name>` float64,
                      `date:<name>` float64 epoch ms; rows in document-index order;
- `vocabulary-<k>.arrow`  Arrow IPC: `id`, indicator k's correlated ids in index order;
- `correlators.npz`   per indicator k: `<k>.indptr` int64, `<k>.indices` int32, `<k>.llr` float32;
- `manifest.json`     written last: app, version, engine config, names, counts, info, and the
                      sha256 and size of every other file.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.fs as pafs

from crossrec.core.config import EngineConfig, parse_engine_config
from crossrec.core.events import format_time
from crossrec.core.idmap import IdMap

FORMAT = "crossrec-model/1"


def new_version_id(now_ms: int, suffix: str) -> str:
    stamp = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}{now_ms % 1000:03d}Z-{suffix}"


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Correlators:
    name: str
    vocabulary: IdMap  # the correlated ids of this indicator
    indptr: np.ndarray  # int64, one more than the documents
    indices: np.ndarray  # int32 into vocabulary, per document by LLR descending
    llr: np.ndarray  # float32, aligned with indices

    def __post_init__(self) -> None:
        for array in (self.indptr, self.indices, self.llr):
            _frozen(array)

    def row(self, doc: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.indptr[doc], self.indptr[doc + 1]
        return self.indices[lo:hi], self.llr[lo:hi]

    def ids(self, doc: int) -> list[str]:
        return self.vocabulary.ids(self.row(doc)[0])

    @property
    def count(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class Model:
    app: str
    version: str
    config: EngineConfig
    documents: IdMap
    correlators: tuple[Correlators, ...]  # in indicator order; the first is the primary one
    properties: tuple[dict[str, Any] | None, ...]  # per document
    rankings: Mapping[str, np.ndarray]  # ranking name -> float64 per document, configured order
    dates: Mapping[str, np.ndarray]  # date property name -> float64 epoch ms per document
    info: Mapping[str, Any] = field(
        default_factory=dict
    )  # counts, event-log range, timings, warnings

    def __post_init__(self) -> None:
        for array in (*self.rankings.values(), *self.dates.values()):
            _frozen(array)

    @property
    def primary(self) -> str:
        return self.correlators[0].name

    @property
    def indicator_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.correlators)

    def indicator(self, name: str) -> Correlators:
        for c in self.correlators:
            if c.name == name:
                return c
        raise KeyError(name)

    def __len__(self) -> int:
        return len(self.documents)

    def document(self, doc: int) -> dict[str, Any]:
        """The UR's Elasticsearch document of one item (UR-SPEC §4.1)."""
        out: dict[str, Any] = {"id": self.documents[doc]}
        for c in self.correlators:
            ids = c.ids(doc)
            if ids:
                out[c.name] = ids
        out.update(self._fields(doc, self.properties[doc]))
        return out

    def iter_documents(self) -> Iterator[dict[str, Any]]:
        ids = self.documents.to_arrow().to_pylist()
        vocabularies = [c.vocabulary.to_arrow().to_pylist() for c in self.correlators]
        for doc, item in enumerate(ids):
            out: dict[str, Any] = {"id": item}
            for c, vocabulary in zip(self.correlators, vocabularies, strict=True):
                lo, hi = c.indptr[doc], c.indptr[doc + 1]
                if hi > lo:
                    out[c.name] = [vocabulary[i] for i in c.indices[lo:hi].tolist()]
            out.update(self._fields(doc, self.properties[doc]))
            yield out

    def _fields(self, doc: int, props: dict[str, Any] | None) -> dict[str, Any]:
        out = dict(props) if props else {}  # properties override indicator fields (as the UR)
        for name, values in self.dates.items():
            out.pop(name, None)
            if not np.isnan(values[doc]):
                out[name] = format_time(int(values[doc]))
        for name, values in self.rankings.items():
            if not np.isnan(values[doc]):
                out[name] = float(values[doc])
        return out

    # -- files -------------------------------------------------------------------------------

    def save(
        self, fs: pafs.FileSystem, directory: str, extra: Mapping[str, Any] | None = None
    ) -> dict:
        """Write the files and, last, manifest.json; return the manifest."""
        fs.create_dir(directory, recursive=True)
        files: dict[str, dict[str, Any]] = {}

        def put(name: str, payload: bytes) -> None:
            with fs.open_output_stream(f"{directory}/{name}") as sink:
                sink.write(payload)
            files[name] = {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}

        columns = {
            "id": self.documents.to_arrow(),
            "properties": pa.array(
                [None if p is None else orjson.dumps(p).decode() for p in self.properties],
                pa.string(),
            ),
        }
        columns.update({f"rank:{n}": pa.array(v) for n, v in self.rankings.items()})
        columns.update({f"date:{n}": pa.array(v) for n, v in self.dates.items()})
        put("documents.arrow", _ipc(pa.table(columns)))
        arrays = {}
        for k, c in enumerate(self.correlators):
            put(f"vocabulary-{k}.arrow", _ipc(pa.table({"id": c.vocabulary.to_arrow()})))
            arrays.update({f"{k}.indptr": c.indptr, f"{k}.indices": c.indices, f"{k}.llr": c.llr})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        put("correlators.npz", buffer.getvalue())
        manifest = {
            "format": FORMAT,
            "app": self.app,
            "version": self.version,
            "engine_config": self.config.source,
            "primary": self.primary,
            "indicators": list(self.indicator_names),
            "rankings": [
                {"name": r.name, "type": r.type}
                for r in self.config.rankings
                if r.name in self.rankings
            ],
            "dates": list(self.dates),
            "counts": {
                "documents": len(self.documents),
                "correlators": {c.name: c.count for c in self.correlators},
                "vocabulary": {c.name: len(c.vocabulary) for c in self.correlators},
            },
            "info": dict(self.info),
            **(extra or {}),
            "files": files,
        }
        payload = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        with fs.open_output_stream(f"{directory}/manifest.json") as sink:
            sink.write(payload)
        return orjson.loads(payload)

    @classmethod
    def load(cls, fs: pafs.FileSystem, directory: str, verify: bool = True) -> Model:
        manifest = read_manifest(fs, directory)
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{directory}: not a {FORMAT} model")

        def get(name: str) -> bytes:
            with fs.open_input_stream(f"{directory}/{name}") as source:
                payload = source.read()
            if verify and hashlib.sha256(payload).hexdigest() != manifest["files"][name]["sha256"]:
                raise ValueError(f"{directory}/{name}: checksum mismatch")
            return payload

        docs = pa.ipc.open_file(pa.py_buffer(get("documents.arrow"))).read_all()
        arrays = np.load(io.BytesIO(get("correlators.npz")))
        correlators = []
        for k, name in enumerate(manifest["indicators"]):
            vocab = pa.ipc.open_file(pa.py_buffer(get(f"vocabulary-{k}.arrow"))).read_all()["id"]
            correlators.append(
                Correlators(
                    name,
                    IdMap.from_arrow(vocab),
                    arrays[f"{k}.indptr"],
                    arrays[f"{k}.indices"],
                    arrays[f"{k}.llr"],
                )
            )
        return cls(
            app=manifest["app"],
            version=manifest["version"],
            config=parse_engine_config(manifest["engine_config"]),
            documents=IdMap.from_arrow(docs["id"]),
            correlators=tuple(correlators),
            properties=tuple(
                None if p is None else orjson.loads(p) for p in docs["properties"].to_pylist()
            ),
            rankings={r["name"]: _column(docs, f"rank:{r['name']}") for r in manifest["rankings"]},
            dates={n: _column(docs, f"date:{n}") for n in manifest["dates"]},
            info=manifest["info"],
        )


def _column(table: pa.Table, name: str) -> np.ndarray:
    return table[name].to_numpy().astype(np.float64, copy=True)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_manifest(fs: pafs.FileSystem, directory: str) -> dict[str, Any]:
    with fs.open_input_stream(f"{directory}/manifest.json") as source:
        return orjson.loads(source.read())
