"""The inverted indexes the in-process engine scores with (UR-SPEC §4.1, §5.6).

- `Ids`: batch id -> index lookups and index -> id strings over an IdMap's ids, in a copy of the
  IdMap's id bytes plus about 8 bytes per id (CRC-32 sorted, verified byte for byte).
- `IndicatorIndex`: one indicator's field; correlator value -> documents whose correlator list
  holds it (the transpose of the model's CSR), with idf per value. Immutable.
- `PropertyIndex`: property field -> keyword value -> documents (sorted int32 arrays), updatable in
  place: a change rebuilds only the arrays of the values that changed (O(n_fv) each), so readers
  always see whole arrays and queries never pay for updates.

idf_f(v) = ln(1 + (N_f − n_fv + 0.5) / (n_fv + 0.5)), N_f = documents with a non-empty field f,
n_fv = documents whose f holds v — over the whole catalogue (crossrec decision).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa

from crossrec.core.idmap import CRC_TABLE, IdMap, crc32_many
from crossrec.core.model import Correlators
from crossrec.query import kernels

EMPTY = np.zeros(0, dtype=np.int32)
DENSE = 2  # postings per document from which an indicator may score over classes
BLOCK = 2**16  # rows per block of Postings (a uint16 offset each)
SMALL = 4096  # id maps up to this size look ids up in a dict


def idf(n_field: int, n_value: np.ndarray | int) -> np.ndarray:
    return np.log1p((n_field - np.asarray(n_value, dtype=np.float64) + 0.5) / (n_value + 0.5))


def distinct(values: np.ndarray) -> np.ndarray:
    """np.unique(values) for the short arrays of a query, without its Python overhead."""
    out = np.sort(values)
    if len(out) > 1:
        out = out[np.concatenate(([True], out[1:] != out[:-1]))]
    return out


def concat_ranges(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """data[s:e] for every (s, e), concatenated (one copy of each slice)."""
    parts = [data[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True) if b > a]
    return np.concatenate(parts) if parts else data[:0]


class Ids:
    """Id strings of an IdMap: `index(keys)` for many keys at once, `ids(indices)` back.

    Lookups hash each key (CRC-32, as the IdMap does), find it by binary search in the sorted
    CRCs and confirm it byte for byte (every id sharing its CRC, a few per million), in one
    compiled loop over the joined keys (kernels.find_ids); a small map (at most SMALL ids, e.g.
    categories) is a dict, faster still."""

    __slots__ = ("_data", "_offsets", "_small", "_table")

    def __init__(self, ids: IdMap, dict_up_to: int = SMALL) -> None:
        arr = ids.to_arrow()
        _, offsets_buf, data_buf = arr.buffers()
        width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
        offsets = np.frombuffer(offsets_buf, dtype=width)[: len(arr) + 1].astype(np.int64)
        # a bytes copy of the id buffer: slicing and decoding bytes is twice as fast as through
        # a memoryview (ids of the best documents are checked against the blacklist each query)
        self._data = bytes(data_buf) if data_buf is not None else b""
        self._offsets = offsets
        data = np.frombuffer(self._data, dtype=np.uint8)
        crc = crc32_many(data, offsets[:-1], np.diff(offsets))
        perm = np.argsort(crc, kind="stable").astype(np.int32)
        crcs = crc[perm]
        tops = np.arange((1 << kernels.HEAD_BITS) + 1, dtype=np.int64) << (32 - kernels.HEAD_BITS)
        heads = np.searchsorted(crcs, tops).astype(np.int64)
        self._table = kernels.IdTable(CRC_TABLE, crcs, heads, perm, data, offsets)
        n = len(offsets) - 1
        self._small = {k: i for i, k in enumerate(self.ids(range(n)))} if n <= dict_up_to else None

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def arrays(self) -> list[np.ndarray]:
        """The arrays held (the copy of the id bytes included)."""
        table = self._table
        return [table.data, table.offsets, table.perm, table.crcs, table.heads]

    def index(self, keys: Sequence[str]) -> np.ndarray:
        """int64 index of each key, -1 for unknown ones."""
        if self._small is not None:
            get = self._small.get
            return np.fromiter((get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        if len(keys) == 0:  # most queries exclude nothing: spare the compiled call's overhead
            return np.zeros(0, dtype=np.int64)
        joined = "".join(keys).encode()
        lengths = np.fromiter(map(len, keys), dtype=np.int64, count=len(keys))
        if len(joined) != lengths.sum():  # not all ASCII: characters are not bytes
            raw = [k.encode() for k in keys]
            joined = b"".join(raw)
            lengths = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
        starts = np.zeros(len(keys) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        return kernels.find_ids(self._table, joined, starts)

    def id(self, i: int) -> str:
        return self._data[int(self._offsets[i]) : int(self._offsets[i + 1])].decode()

    def ids(self, indices: Iterable[int] | np.ndarray) -> list[str]:
        idx = np.asarray(indices, dtype=np.int64)
        data = self._data
        starts, ends = self._offsets[idx].tolist(), self._offsets[idx + 1].tolist()
        return [data[s:e].decode() for s, e in zip(starts, ends, strict=True)]

    def to_arrow(self) -> pa.Array:
        return pa.Array.from_buffers(
            pa.large_string(),
            len(self),
            [None, pa.py_buffer(self._offsets), pa.py_buffer(self._data)],
        )


class Postings(NamedTuple):
    """Per value, the rows (documents, or classes of documents) that hold it, ascending, as
    2-byte offsets in blocks of 65,536 rows: value v's rows in block b are
    BLOCK·b + low[bounds[v, b]:bounds[v, b + 1]]. Scoring streams these (kernels.scatter_add):
    2 bytes a posting instead of a 4-byte row and scipy's shared 8-byte 1.0."""

    bounds: np.ndarray  # int64 (values, blocks + 1)
    low: np.ndarray  # uint16

    @staticmethod
    def build(values: np.ndarray, rows: np.ndarray, n_values: int, n_rows: int) -> Postings:
        """From each posting's value and row, sorted by value, then row."""
        blocks = max(1, -(-n_rows // BLOCK))
        cells = values.astype(np.int64) * blocks + rows // BLOCK
        starts = np.zeros(n_values * blocks + 1, dtype=np.int64)
        np.cumsum(np.bincount(cells, minlength=n_values * blocks), out=starts[1:])
        grid = np.arange(n_values, dtype=np.int64)[:, None] * blocks + np.arange(blocks + 1)
        return Postings(starts[grid], (rows % BLOCK).astype(np.uint16))

    @property
    def counts(self) -> np.ndarray:
        return self.bounds[:, -1] - self.bounds[:, 0]

    def rows(self, values: np.ndarray) -> np.ndarray:
        """Every row holding one of the values (once per value it holds)."""
        blocks = self.bounds.shape[1] - 1
        starts, ends = self.bounds[values, :-1].ravel(), self.bounds[values, 1:].ravel()
        base = np.tile(np.arange(blocks, dtype=np.int64) * BLOCK, len(values))
        low = concat_ranges(self.low, starts, ends).astype(np.int64)
        return low + np.repeat(base, ends - starts)

    def arrays(self) -> list[np.ndarray]:
        return [self.bounds, self.low]


class IndicatorIndex:
    """Indicator field: value (vocabulary index) -> the documents holding it (`postings`), idf
    per value; and per document its own correlators, for item-based queries."""

    def __init__(self, correlators: Correlators, n_docs: int) -> None:
        self.name = correlators.name
        self.vocabulary = Ids(correlators.vocabulary)
        self.rows = correlators.indptr
        self.values = correlators.indices
        per_doc = np.diff(correlators.indptr)
        counts = np.bincount(correlators.indices, minlength=len(correlators.vocabulary))
        order = np.argsort(correlators.indices, kind="stable")  # by value, then document
        docs = np.repeat(np.arange(n_docs, dtype=np.int64), per_doc)[order]
        self.postings = Postings.build(correlators.indices[order], docs, len(counts), n_docs)
        self.n_field = int(np.count_nonzero(per_doc))
        self.idf = idf(self.n_field, counts)
        self.classes = Classes.build(correlators)
        kernels.warm()

    def nbytes(self) -> int:
        arrays = [*self.postings.arrays(), self.idf, *self.vocabulary.arrays()]
        if self.classes is not None:
            arrays += [self.classes.of, *self.classes.postings.arrays(), self.classes.saved]
        return sum(a.nbytes for a in arrays)

    def lookup(self, ids: Sequence[str]) -> np.ndarray:
        """Vocabulary indices of the known ids, once each."""
        found = self.vocabulary.index(ids)
        return distinct(found[found >= 0])

    def row(self, doc: int) -> np.ndarray:
        if doc + 1 >= len(self.rows):  # a document added after training: no correlators
            return self.values[:0]
        return self.values[self.rows[doc] : self.rows[doc + 1]]

    def documents(self, values: np.ndarray) -> np.ndarray:
        """Every document holding one of the values (once per value it holds)."""
        return self.postings.rows(values)


class Classes(NamedTuple):
    """Documents with the same correlator set form one class; the postings of a dense indicator
    (few values, each held by many documents) are far fewer over classes than over documents, and
    a class's sum of weights is the sum each of its documents would get (same terms, same order).
    """

    of: np.ndarray  # intp class of each model document (documents without correlators share one)
    postings: Postings  # value -> the classes holding it
    count: int
    saved: np.ndarray  # int64 per value: its postings over documents less those over classes

    @staticmethod
    def build(correlators: Correlators) -> Classes | None:
        """The classes of a dense indicator (at least DENSE postings per document) if they save
        a fifth of its postings and more than one per document; else None."""
        n_docs, postings = len(correlators.indptr) - 1, len(correlators.indices)
        if postings < DENSE * n_docs:
            return None
        classes = Classes.of_rows(correlators)
        saved = postings - len(classes.postings.low)
        return classes if saved >= max(postings // 5, n_docs) else None

    @staticmethod
    def of_rows(correlators: Correlators) -> Classes:
        rows, values = correlators.indptr, correlators.indices
        n_docs, width = len(rows) - 1, len(correlators.vocabulary)
        ranked = np.repeat(np.arange(n_docs, dtype=np.int64) * width, np.diff(rows)) + values
        data = (np.sort(ranked) % width).astype(np.int32).tobytes()  # each row as a sorted set
        starts, ends = (rows[:-1] * 4).tolist(), (rows[1:] * 4).tolist()
        seen: dict[bytes, int] = {}
        of = np.fromiter(
            (seen.setdefault(data[a:b], len(seen)) for a, b in zip(starts, ends, strict=True)),
            dtype=np.intp,  # kernels.gather indexes with intp
            count=n_docs,
        )
        _, lead = np.unique(of, return_index=True)  # each class's first document
        held = np.bincount(values, minlength=width)
        kept = concat_ranges(values, rows[lead], rows[lead + 1])
        owner = np.repeat(np.arange(len(lead), dtype=np.int64), np.diff(rows)[lead])
        by_value = np.sort(kept.astype(np.int64) * len(lead) + owner)  # (value, class) ascending
        members = Postings.build(by_value // len(lead), by_value % len(lead), width, len(lead))
        saved = held - members.counts
        return Classes(of, members, len(lead), saved)


def keywords(value: Any) -> tuple[str, ...]:
    """A property value as Elasticsearch keyword terms (UR-SPEC §4.2): strings as they are, numbers
    and booleans in their JSON form, arrays flattened; null and objects give none. Duplicates
    count once."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, bool | int | float):
        return (orjson.dumps(value).decode(),)
    if isinstance(value, list):
        return tuple(dict.fromkeys(k for v in value for k in keywords(v)))
    return ()


def indexed(props: Mapping[str, Any] | None, skip: frozenset[str]) -> dict[str, tuple[str, ...]]:
    """field -> keyword values of one document's properties (fields without values left out)."""
    if not props:
        return {}
    out = {}
    for name, value in props.items():
        if name not in skip:
            terms = keywords(value)
            if terms:
                out[name] = terms
    return out


class PropertyIndex:
    """Property field -> keyword value -> sorted int32 documents, with N_f per field."""

    def __init__(self, properties: Sequence[Mapping[str, Any] | None], skip: frozenset[str]):
        self.skip = skip
        lists: dict[str, dict[str, list[int]]] = {}
        self.n_field: dict[str, int] = {}
        for doc, props in enumerate(properties):
            for name, terms in indexed(props, skip).items():
                self.n_field[name] = self.n_field.get(name, 0) + 1
                values = lists.setdefault(name, {})
                for term in terms:
                    values.setdefault(term, []).append(doc)
        self.fields: dict[str, dict[str, np.ndarray]] = {
            name: {v: np.asarray(d, dtype=np.int32) for v, d in values.items()}
            for name, values in lists.items()
        }

    def postings(self, name: str, values: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(documents, idf per posting) of the distinct values."""
        field = self.fields.get(name)
        if not field:
            return EMPTY, np.zeros(0)
        arrays = [a for a in (field.get(v) for v in dict.fromkeys(values)) if a is not None]
        if not arrays:
            return EMPTY, np.zeros(0)
        n_field = self.n_field[name]
        weights = [np.full(len(a), idf(n_field, len(a))) for a in arrays]
        return np.concatenate(arrays), np.concatenate(weights)

    def update(self, changes: Iterable[tuple[int, Mapping | None, Mapping | None]]) -> None:
        """Apply (document, old properties, new properties) changes."""
        adds: dict[tuple[str, str], list[int]] = {}
        removes: dict[tuple[str, str], list[int]] = {}
        for doc, old, new in changes:
            before, after = indexed(old, self.skip), indexed(new, self.skip)
            for name in before.keys() | after.keys():
                was, now = set(before.get(name, ())), set(after.get(name, ()))
                self.n_field[name] = self.n_field.get(name, 0) + bool(now) - bool(was)
                for term in was - now:
                    removes.setdefault((name, term), []).append(doc)
                for term in now - was:
                    adds.setdefault((name, term), []).append(doc)
        for key in adds.keys() | removes.keys():
            name, term = key
            field = self.fields.setdefault(name, {})
            docs = field.get(term, EMPTY)
            if key in removes:
                gone = np.asarray(removes[key], dtype=np.int32)
                docs = docs[~np.isin(docs, gone)]
            if key in adds:  # a new sorted array: readers holding the old one are unaffected
                new = np.unique(np.asarray(adds[key], dtype=np.int32))
                docs = np.insert(docs, np.searchsorted(docs, new), new)
            if len(docs):
                field[term] = docs.astype(np.int32, copy=False)
            else:
                field.pop(term, None)
        for name in [n for n, count in self.n_field.items() if count == 0]:
            del self.n_field[name]
            self.fields.pop(name, None)
