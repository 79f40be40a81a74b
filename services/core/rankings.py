"""Popularity rankings (UR-SPEC §3.2, crossrec's decisions), vectorised.

Values exist only for the items of the item space the caller passes (the primary item space: every
target of a primary-indicator event). Counts are of the ranking's configured events (raw,
duplicates included) whose time is in [end − duration, end), end = offsetDate/endDate or `now`.
NaN means "no value": such an item sorts after every item with one.

- popular: count in the interval (items with no event: NaN);
- trending: count in the newer half − count in the older half, for items with events in both;
- hot: (newer − middle) − (middle − older) over thirds, for items with events in all three;
- random: uniform [0, 1) for every item of the space, from the given generator;
- userDefined: the item property of the ranking's name, when it is a number (or numeric text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossrec.core.config import Ranking


@dataclass(frozen=True, slots=True)
class RankingEvents:
    """Events that rankings may count, as parallel arrays."""

    names: tuple[str, ...]  # event-name vocabulary
    name_code: np.ndarray  # per event: index into names
    item: np.ndarray  # per event: index into the item space, -1 outside it
    time: np.ndarray  # per event: epoch milliseconds


def interval(ranking: Ranking, now_ms: int) -> tuple[int, int]:
    end = ranking.end_time if ranking.end_time is not None else now_ms
    return end - ranking.duration_seconds * 1000, end


def _counts(
    events: RankingEvents, wanted: np.ndarray, lo: int, hi: int, n_items: int
) -> np.ndarray:
    mask = wanted & (events.time >= lo) & (events.time < hi)
    return np.bincount(events.item[mask], minlength=n_items)


def ranking_values(
    ranking: Ranking,
    events: RankingEvents,
    n_items: int,
    now_ms: int,
    rng: np.random.Generator,
    event_names: Sequence[str] | None = None,
) -> np.ndarray:
    """One value per item of the space (float64, NaN = none). userDefined: see `user_defined`.

    `event_names` overrides the ranking's own (e.g. after expanding indicator aliases).
    """
    if ranking.type == "random":
        return rng.random(n_items)
    values = np.full(n_items, np.nan)
    if ranking.type == "userDefined" or n_items == 0:
        return values
    names = set(event_names if event_names is not None else ranking.event_names)
    codes = np.array([i for i, name in enumerate(events.names) if name in names], dtype=np.int64)
    wanted = np.isin(events.name_code, codes) & (events.item >= 0)
    start, end = interval(ranking, now_ms)
    if ranking.type == "popular":
        count = _counts(events, wanted, start, end, n_items)
        return np.where(count > 0, count.astype(np.float64), np.nan)
    if ranking.type == "trending":
        mid = start + (end - start) // 2
        older = _counts(events, wanted, start, mid, n_items)
        newer = _counts(events, wanted, mid, end, n_items)
        return np.where((older > 0) & (newer > 0), (newer - older).astype(np.float64), np.nan)
    if ranking.type == "hot":
        third = (end - start) // 3
        older = _counts(events, wanted, start, start + third, n_items)
        middle = _counts(events, wanted, start + third, start + 2 * third, n_items)
        newer = _counts(events, wanted, start + 2 * third, end, n_items)
        value = ((newer - middle) - (middle - older)).astype(np.float64)
        return np.where((older > 0) & (middle > 0) & (newer > 0), value, np.nan)
    raise ValueError(f"unknown ranking type {ranking.type!r}")


def user_defined(properties: Sequence[dict[str, Any] | None], name: str) -> np.ndarray:
    """The numeric property `name` of each item (NaN when missing or not a number)."""
    values = np.full(len(properties), np.nan)
    for i, props in enumerate(properties):
        if props and name in props:
            values[i] = as_number(props[name])
    return values


def as_number(value: Any) -> float:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool):
        return np.nan
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return np.nan
    return np.nan
