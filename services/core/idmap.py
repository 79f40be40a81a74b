"""String id <-> int index, in at most 1.5 bytes of memory per byte of id (ids of 3+ bytes).

The UR's BiMaps kept two Java hash maps of String objects: about 4 bytes per byte of id. Here the
ids live in one `bytes` buffer, grouped by hash bucket (CRC-32 of the UTF-8 bytes); per id only its
length is kept (1 byte for ids up to 255 bytes), per bucket the index of its first id and the byte
offset of its first id (8 bytes). Buckets hold 8 ids on average, or 16-64 when the ids are so short
(under 4 bytes on average) that 2 bytes of overhead per id would exceed half an id: overhead per id
stays within half the mean id length down to ids of 2.25 bytes. An id's index is its position in
that order.

- `IdMap.build(ids)` takes distinct ids in any order and returns the map and, for each input id,
  its index (so codes computed elsewhere can be renumbered with one numpy take);
- `index(id)` hashes the id with zlib.crc32 and scans one bucket: a few microseconds;
- `[i]` / `ids(indices)` go back to strings; `to_arrow()` / `from_arrow()` for files (the saved
  order is the index order, so loading recomputes the hashes but moves nothing).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

IDS_PER_BUCKET = 8  # on average; more for very short ids (ids_per_bucket)
MAX_IDS_PER_BUCKET = 64


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1).astype(
            np.uint32
        )
    return table


CRC_TABLE = _crc_table()


def crc32_many(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """zlib.crc32 of every data[starts[i]:starts[i]+lengths[i]], one numpy pass per byte position."""
    order = np.argsort(-lengths.astype(np.int64), kind="stable")
    starts, lengths = starts[order].astype(np.int64), lengths[order].astype(np.int64)
    crc = np.full(len(order), 0xFFFFFFFF, dtype=np.uint32)
    negative = -lengths  # ascending, so the ids longer than j are a prefix
    for j in range(int(lengths[0]) if len(lengths) else 0):
        count = int(np.searchsorted(negative, -j, side="left"))
        head = crc[:count]
        byte = data[starts[:count] + j]
        crc[:count] = CRC_TABLE[(head ^ byte) & 0xFF] ^ (head >> 8)
    out = np.empty_like(crc)
    out[order] = crc ^ np.uint32(0xFFFFFFFF)
    return out


def ids_per_bucket(n: int, id_bytes: int) -> int:
    """8, or the fewest of 16, 32, 64 that keep the overhead per id (1 length byte plus 8 bytes
    per bucket) within half the mean id length. A function of the ids alone, so loading a saved
    map (from_arrow) finds the same buckets."""
    per_bucket = IDS_PER_BUCKET
    while per_bucket < MAX_IDS_PER_BUCKET and n and (1 + 8 / per_bucket) > id_bytes / n / 2:
        per_bucket *= 2
    return per_bucket


def _bucket_count(n: int, id_bytes: int) -> int:
    per_bucket = ids_per_bucket(n, id_bytes)
    return max(1, (n + per_bucket - 1) // per_bucket)


def as_string_array(ids: Iterable[str] | pa.Array | pa.ChunkedArray | np.ndarray) -> pa.Array:
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    if not isinstance(ids, pa.Array):
        ids = pa.array(ids if isinstance(ids, np.ndarray | list) else list(ids), type=pa.string())
    if pa.types.is_dictionary(ids.type):
        ids = ids.cast(ids.type.value_type)
    if not (pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type)):
        ids = ids.cast(pa.string())
    return ids


def _buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(utf-8 bytes as uint8, offsets as int64 starting at 0) of a string array."""
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=width)[arr.offset : arr.offset + len(arr) + 1]
    offsets = offsets.astype(np.int64)
    if data_buf is None or len(arr) == 0:
        return np.zeros(0, dtype=np.uint8), np.zeros(len(arr) + 1, dtype=np.int64)
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data, offsets - offsets[0]


def _narrow(values: np.ndarray, limit: int) -> np.ndarray:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if limit <= np.iinfo(dtype).max:
            return values.astype(dtype)
    return values.astype(np.int64)


class IdMap:
    __slots__ = ("_bucket_byte", "_bucket_start", "_buckets", "_data", "_lengths", "_n")

    def __init__(
        self, data: bytes, lengths: np.ndarray, bucket_start: np.ndarray, bucket_byte: np.ndarray
    ):
        self._data = data
        self._lengths = lengths
        self._bucket_start = bucket_start
        self._bucket_byte = bucket_byte
        self._n = len(lengths)
        self._buckets = len(bucket_start) - 1
        for array in (lengths, bucket_start, bucket_byte):
            array.flags.writeable = False

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def build(cls, ids) -> tuple[IdMap, np.ndarray]:
        """A map of distinct ids, and the index each input id got."""
        arr = as_string_array(ids)
        if arr.null_count:
            raise ValueError("ids must not be null")
        data, offsets = _buffers(arr)
        crc = crc32_many(data, offsets[:-1], np.diff(offsets))
        buckets = crc % np.uint32(_bucket_count(len(arr), len(data)))
        key = (buckets.astype(np.uint64) << np.uint64(32)) | crc.astype(np.uint64)
        order = np.argsort(key, kind="stable")
        same = np.flatnonzero(
            key[order][1:] == key[order][:-1]
        )  # CRC collisions: a few per million
        if len(same) and any(arr[int(order[i])] == arr[int(order[i + 1])] for i in same):
            raise ValueError("ids must be distinct")
        position = np.empty(len(arr), dtype=np.int64)
        position[order] = np.arange(len(arr), dtype=np.int64)
        ordered = arr.take(pa.array(order)) if len(arr) else arr
        return cls._assemble(ordered, buckets[order]), position

    @classmethod
    def from_arrow(cls, arr: pa.Array | pa.ChunkedArray) -> IdMap:
        """A map whose index order is the array's (as `to_arrow` wrote it)."""
        arr = as_string_array(arr)
        data, offsets = _buffers(arr)
        buckets = crc32_many(data, offsets[:-1], np.diff(offsets)) % np.uint32(
            _bucket_count(len(arr), len(data))
        )
        if len(buckets) > 1 and np.any(buckets[1:] < buckets[:-1]):
            raise ValueError("these ids are not in IdMap order; use IdMap.build")
        return cls._assemble(arr, buckets)

    @classmethod
    def _assemble(cls, arr: pa.Array, buckets: np.ndarray) -> IdMap:
        data, offsets = _buffers(arr)
        lengths = np.diff(offsets)
        n = len(arr)
        starts = np.searchsorted(buckets, np.arange(_bucket_count(n, len(data)) + 1), side="left")
        return cls(
            data.tobytes(),
            _narrow(lengths, int(lengths.max(initial=0))),
            starts.astype(np.int32 if n < 2**31 else np.int64),
            offsets[starts].astype(np.int32 if len(data) < 2**31 else np.int64),
        )

    # -- lookups -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._n

    def index(self, key: str) -> int:
        """The id's index, or -1."""
        raw = key.encode()
        bucket = zlib.crc32(raw) % self._buckets
        first, end = int(self._bucket_start[bucket]), int(self._bucket_start[bucket + 1])
        offset, size, data = int(self._bucket_byte[bucket]), len(raw), self._data
        for k, length in enumerate(self._lengths[first:end].tolist()):
            if length == size and data.startswith(raw, offset):
                return first + k
            offset += length
        return -1

    def get(self, key: str) -> int | None:
        i = self.index(key)
        return None if i < 0 else i

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.index(key) >= 0

    def indices(self, keys: Sequence[str] | pa.Array) -> np.ndarray:
        """Indices of many ids (-1 for unknown ones); large batches go through Arrow's hash join."""
        if len(keys) < 256 and not isinstance(keys, pa.Array | pa.ChunkedArray):
            return np.fromiter((self.index(k) for k in keys), dtype=np.int64, count=len(keys))
        found = pc.index_in(as_string_array(keys), value_set=self.to_arrow())
        return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def _offset(self, i: int) -> int:
        bucket = int(np.searchsorted(self._bucket_start, i, side="right")) - 1
        first = int(self._bucket_start[bucket])
        return int(self._bucket_byte[bucket]) + int(self._lengths[first:i].sum(dtype=np.int64))

    def __getitem__(self, i: int) -> str:
        if not -self._n <= i < self._n:
            raise IndexError(i)
        i %= self._n
        offset = self._offset(i)
        return self._data[offset : offset + int(self._lengths[i])].decode()

    def ids(self, indices: Iterable[int]) -> list[str]:
        return [self[int(i)] for i in indices]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_arrow().to_pylist())

    def to_arrow(self) -> pa.Array:
        offsets = np.zeros(self._n + 1, dtype=np.int64)
        np.cumsum(self._lengths, out=offsets[1:])
        large = len(self._data) >= 2**31
        kind = pa.large_string() if large else pa.string()
        offsets = offsets if large else offsets.astype(np.int32)
        return pa.Array.from_buffers(
            kind, self._n, [None, pa.py_buffer(offsets), pa.py_buffer(self._data)]
        )

    @property
    def nbytes(self) -> int:
        """Bytes held: the id buffer plus the three index arrays."""
        arrays = (self._lengths, self._bucket_start, self._bucket_byte)
        return len(self._data) + sum(a.nbytes for a in arrays)

    @property
    def id_bytes(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"IdMap({self._n} ids, {self.id_bytes} id bytes, {self.nbytes} bytes held)"
