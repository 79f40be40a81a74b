"""Scala `Duration` strings, as the UR's engine.json writes them ("3650 days", "3 hours").

Scala's `Duration(String)` drops all whitespace, takes the trailing letters as the unit and the rest
as a whole number (`"1.5 days"` is a format error there, so it is here). Units: d/day(s),
h/hr(s)/hour(s), m/min(s)/minute(s), s/sec(s)/second(s), ms/milli(s)/millisecond(s),
µs/micro(s)/microsecond(s), ns/nano(s)/nanosecond(s).
"""

from __future__ import annotations

import re

_NANOS = {
    "d": 86_400 * 10**9,
    "h": 3_600 * 10**9,
    "m": 60 * 10**9,
    "s": 10**9,
    "ms": 10**6,
    "µs": 10**3,
    "ns": 1,
}
_LABELS = {
    "d": ("d", "day"),
    "h": ("h", "hr", "hour"),
    "m": ("m", "min", "minute"),
    "s": ("s", "sec", "second"),
    "ms": ("ms", "milli", "millisecond"),
    "µs": ("µs", "micro", "microsecond"),
    "ns": ("ns", "nano", "nanosecond"),
}
UNITS: dict[str, int] = {}
for _unit, _labels in _LABELS.items():
    for _label in _labels:
        UNITS[_label] = _NANOS[_unit]
        if len(_label) > 1 and _label != "µs":
            UNITS[_label + "s"] = _NANOS[_unit]

_FORM = re.compile(r"^([+-]?\d+)([^\d]+)$")


class DurationError(ValueError):
    pass


def parse_nanos(text: str) -> int:
    """A Scala duration string to nanoseconds; DurationError says what is wrong."""
    if not isinstance(text, str):
        raise DurationError(f'must be a duration string such as "3650 days", got {text!r}')
    compact = "".join(text.split())
    match = _FORM.match(compact)
    if not match or match.group(2) not in UNITS:
        raise DurationError(
            f'{text!r} is not a duration: write "<whole number> <unit>" with a unit among '
            "days, hours, minutes, seconds, millis (or d, h, min, s, ms)"
        )
    return int(match.group(1)) * UNITS[match.group(2)]


def parse_seconds(text: str) -> int:
    """Whole seconds, truncated as Scala's `Duration.toSeconds` does."""
    nanos = parse_nanos(text)
    return int(nanos / 10**9) if nanos < 0 else nanos // 10**9
