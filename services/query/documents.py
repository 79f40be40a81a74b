"""The engine's per-document state: ids, current properties, ranking values, dates and the two
orders it sorts with — all updatable while the engine serves (UR-SPEC §3.4, §4.6 Harness).

- Documents are the model's, then those added by `add` (items that got properties after
  training: Harness's `doc_as_upsert`); an added document has no correlators and no rankings
  except `userDefined` ones, which follow the item's property as it changes.
- `id_rank`: int64 per document, ascending = item id ascending. Model documents get multiples of
  2**20, an added one the midpoint of its neighbours (everything is renumbered if a gap closes).
- `order`: every document sorted by the rankings in configured order (descending, missing last),
  then id ascending — the popularity backfill, read front to back by queries. A few changes are
  placed by binary search (one O(N) insert each), many at once by one lexsort.
- Date columns (epoch ms, NaN = none) are the model's, plus any other property a `dateRange`
  names, parsed on first use and kept up to date afterwards.
- `live`: which documents are available and not expired at a time. Every query with the
  available/expire dates set needs it; it changes only when the time passes some document's
  date, so the last one is kept with the interval between dates it holds for.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossrec.core.events import parse_time
from crossrec.core.model import Model
from crossrec.core.rankings import as_number
from crossrec.query.index import Ids

GAP = 1 << 20
REBUILD_OVER = 32  # more changed positions than this: re-sort instead of inserting one by one
_MODEL = object()  # "the model's properties" (an override may be None)


def date_value(props: Mapping[str, Any] | None, name: str) -> float:
    """A date property in epoch ms, NaN unless it is an ISO-8601 string (as training reads it)."""
    value = props.get(name) if props else None
    if not isinstance(value, str):
        return np.nan
    try:
        return float(parse_time(value, name))
    except ValueError:
        return np.nan


class Documents:
    def __init__(self, model: Model, rank_names: Sequence[str], user_defined: frozenset[str]):
        self.model_ids = Ids(model.documents)
        self.n_model = len(model)
        self.added: dict[str, int] = {}
        self.added_ids: list[str] = []
        self._model_props = model.properties
        self._props: dict[int, Mapping[str, Any] | None] = {}
        self.rank_names = tuple(rank_names)
        self.user_defined = user_defined
        self.ranks = {n: np.array(model.rankings[n], dtype=np.float64) for n in self.rank_names}
        self.rank_keys = [np.where(np.isnan(r), np.inf, -r) for r in self.ranks.values()]
        self.dates = {n: np.array(v, dtype=np.float64) for n, v in model.dates.items()}
        # (available, expire) -> the dates, sorted and distinct; the last `live` mask, read-only,
        # with the interval [from, to) of times it holds for. Dropped whenever a date changes.
        self._date_bounds: dict[tuple[str, str], np.ndarray] = {}
        self._live: dict[tuple[str, str], tuple[float, float, np.ndarray]] = {}
        self.id_rank = np.zeros(self.n_model, dtype=np.int64)
        self.by_id = np.zeros(0, dtype=np.int32)
        self.order = np.zeros(0, dtype=np.int32)
        self._renumber()
        self._resort()

    @property
    def n(self) -> int:
        return self.n_model + len(self.added_ids)

    def arrays(self) -> list[np.ndarray]:
        own = [self.id_rank, self.by_id, self.order, *self.ranks.values(), *self.rank_keys]
        return [*own, *self.dates.values(), *self.model_ids.arrays()]

    # -- ids ----------------------------------------------------------------------------------

    def index(self, keys: Sequence[str]) -> np.ndarray:
        found = self.model_ids.index(keys)
        if self.added:
            for j in np.flatnonzero(found < 0).tolist():
                found[j] = self.added.get(keys[j], -1)
        return found

    def ids(self, docs: np.ndarray) -> list[str]:
        docs = np.asarray(docs, dtype=np.int64)
        if not self.added or not len(docs) or docs.max() < self.n_model:
            return self.model_ids.ids(docs)
        return [
            self.model_ids.id(d) if d < self.n_model else self.added_ids[d - self.n_model]
            for d in docs.tolist()
        ]

    def id(self, doc: int) -> str:
        doc = int(doc)
        return self.model_ids.id(doc) if doc < self.n_model else self.added_ids[doc - self.n_model]

    # -- properties and dates -----------------------------------------------------------------

    def props(self, doc: int) -> Mapping[str, Any] | None:
        found = self._props.get(doc, _MODEL)
        if found is _MODEL:
            return self._model_props[doc] if doc < self.n_model else None
        return found  # type: ignore[return-value]

    def date(self, name: str) -> np.ndarray:
        column = self.dates.get(name)
        if column is None:
            column = np.fromiter(
                (date_value(self.props(d), name) for d in range(self.n)), np.float64, self.n
            )
            self.dates[name] = column
        return column

    def live(self, available: str, expire: str, at: float) -> np.ndarray:
        """Read-only bool per document: available <= at < expire (without either date: False).
        The same array until `at` leaves the interval between the two nearest dates of any
        document around it (a binary search), or a date changes."""
        key = (available, expire)
        kept = self._live.get(key)
        if kept is not None and kept[0] <= at < kept[1]:
            return kept[2]
        starts, ends = self.date(available), self.date(expire)
        bounds = self._date_bounds.get(key)
        if bounds is None:
            both = np.concatenate([starts, ends])
            bounds = self._date_bounds[key] = np.unique(both[~np.isnan(both)])
        i = int(np.searchsorted(bounds, at, side="right"))
        low = float(bounds[i - 1]) if i > 0 else -np.inf
        high = float(bounds[i]) if i < len(bounds) else np.inf
        mask = (starts <= at) & (ends > at)
        mask.flags.writeable = False
        self._live[key] = (low, high, mask)
        return mask

    def _dates_changed(self) -> None:
        self._date_bounds.clear()
        self._live.clear()

    def ranks_of(self, doc: int) -> dict[str, float]:
        out = {}
        for name, values in self.ranks.items():
            value = float(values[doc])
            if value == value:  # not NaN
                out[name] = value
        return out

    # -- changes ------------------------------------------------------------------------------

    def add(self, ids: Sequence[str]) -> None:
        """New documents without correlators or rankings, for items unknown to the model."""
        first, count = self.n, len(ids)
        for name, values in self.ranks.items():
            self.ranks[name] = np.concatenate([values, np.full(count, np.nan)])
        self.rank_keys = [np.concatenate([k, np.full(count, np.inf)]) for k in self.rank_keys]
        for name, values in self.dates.items():
            self.dates[name] = np.concatenate([values, np.full(count, np.nan)])
        self._dates_changed()
        self.id_rank = np.concatenate([self.id_rank, np.zeros(count, dtype=np.int64)])
        self.added_ids.extend(ids)
        self.added.update((item, first + k) for k, item in enumerate(ids))
        new = range(first, first + count)
        if count > REBUILD_OVER:
            self._renumber()
        else:
            for doc in new:
                if not self._insert_id(doc):
                    break  # renumbered: every document has its place
        self._place(list(new), new=True)

    def set_props(self, updates: Sequence[tuple[int, Mapping[str, Any] | None]]) -> None:
        """Replace documents' properties; dates and userDefined rankings follow."""
        moved = []
        if updates:
            self._dates_changed()
        for doc, props in updates:
            self._props[doc] = props
            for name, column in self.dates.items():
                column[doc] = date_value(props, name)
            changed = False
            for k, name in enumerate(self.rank_names):
                if name not in self.user_defined:
                    continue
                value = as_number(props[name]) if props and name in props else np.nan
                old = self.ranks[name][doc]
                if not (value == old or (value != value and old != old)):
                    self.ranks[name][doc] = value
                    self.rank_keys[k][doc] = np.inf if value != value else -value
                    changed = True
            if changed:
                moved.append(doc)
        if moved:
            self._place(moved, new=False)

    # -- orders -------------------------------------------------------------------------------

    def _sort_key(self, doc: int) -> tuple:
        doc = int(doc)
        return (*(float(k[doc]) for k in self.rank_keys), int(self.id_rank[doc]))

    def _resort(self) -> None:
        keys = [self.id_rank, *reversed(self.rank_keys)]  # lexsort: the last key is the first
        self.order = np.lexsort(keys).astype(np.int32)

    def _place(self, docs: list[int], new: bool) -> None:
        if len(docs) > REBUILD_OVER:
            self._resort()
            return
        order = self.order
        if not new:  # take them all out first: bisect needs the rest in order
            order = order[~np.isin(order, docs)]
        for doc in docs:
            at = bisect.bisect_left(order, self._sort_key(doc), key=self._sort_key)
            order = np.insert(order, at, doc)
        self.order = order

    def _renumber(self) -> None:
        arrays = [self.model_ids.to_arrow()]
        if self.added_ids:
            arrays.append(pa.array(self.added_ids, pa.large_string()))
        by_id = pc.sort_indices(pa.chunked_array(arrays)).to_numpy()
        self.id_rank[by_id] = np.arange(len(by_id), dtype=np.int64) * GAP
        self.by_id = by_id.astype(np.int32)

    def _insert_id(self, doc: int) -> bool:
        """Give an added document its id rank; False if everything had to be renumbered."""
        by_id = self.by_id
        at = bisect.bisect_left(by_id, self.id(doc), key=self.id)
        low = int(self.id_rank[by_id[at - 1]]) if at > 0 else None
        high = int(self.id_rank[by_id[at]]) if at < len(by_id) else None
        low = low if low is not None else (high - 2 * GAP if high is not None else 0)
        high = high if high is not None else low + 2 * GAP
        if high - low < 2:
            self._renumber()  # every added id is registered already, doc included
            return False
        self.id_rank[doc] = (low + high) // 2
        self.by_id = np.insert(by_id, at, doc)
        return True
