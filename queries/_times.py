"""Times and durations as users type them, turned into integer nanoseconds.

A *time* is ISO 8601 (``2026-11-27T14:03:00Z``, ``2026-11-27 14:03``; without a zone it
is UTC), a relative form meaning "that long before now" (``30s``, ``15m``, ``2h``, ``7d``,
``1w``), ``now``, or integer nanoseconds since the epoch (what every record carries). A
*duration* is a number with a unit (``500ms``, ``30s``, ``5m``, ``2h``, ``7d``) or ``0``.
Anything else is a :class:`BadParameter` naming the parameter, and so is a time outside
1970-2100 or a duration over 100 years (DuckDB's nanosecond timestamps end in 2262).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from ._errors import BadParameter

__all__ = ["format_time", "now_ns", "parse_duration", "parse_time"]

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
    "d": 86_400 * 1_000_000_000,
    "w": 7 * 86_400 * 1_000_000_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d|w)\s*$")
_EPOCH_NS = re.compile(r"^\s*\d{16,19}\s*$")
_EXAMPLES_TIME = "ISO 8601 such as 2026-11-27T14:03:00Z, or a relative 15m, 2h, 7d"
_EXAMPLES_DURATION = "a number with a unit: 500ms, 30s, 5m, 2h, 7d"
# Bounds that keep every time, and a time plus or minus a duration, inside the signed 64-bit
# nanoseconds that timestamps are in DuckDB (years 1677-2262).
_LATEST = 4_102_444_800 * 1_000_000_000  # 2100-01-01T00:00:00Z
_LONGEST = 100 * 365 * _UNITS["d"]


def now_ns() -> int:
    """The wall clock in nanoseconds since the epoch."""
    return time.time_ns()


def parse_duration(name: str, text: str | int | None, default: int | None = None) -> int | None:
    """``text`` as a duration in nanoseconds (``default`` when empty or None).

    Raises:
        BadParameter: naming ``name`` when the text is not a duration.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return default
    if isinstance(text, int):
        if text < 0:
            raise BadParameter(name, f"must not be negative, got {text}")
        return _duration_in_range(name, text, text)
    if text.strip() == "0":
        return 0
    match = _DURATION.match(text)
    if not match:
        raise BadParameter(name, f"{text!r} is not a duration; use {_EXAMPLES_DURATION}")
    return _duration_in_range(name, text, int(float(match.group(1)) * _UNITS[match.group(2)]))


def _duration_in_range(name: str, text: object, ns: int) -> int:
    if ns > _LONGEST:
        raise BadParameter(name, f"{text!r} is too long; at most 100 years (36500d)")
    return ns


def _time_in_range(name: str, text: object, ns: int) -> int:
    if not 0 <= ns < _LATEST:
        raise BadParameter(name, f"{text!r} is out of range; times must fall between 1970 and 2100")
    return ns


def parse_time(name: str, text: str | int | None, *, now: int | None = None) -> int | None:
    """``text`` as a point in time, in nanoseconds since the epoch (None when empty).

    Raises:
        BadParameter: naming ``name`` when the text is neither a time nor a relative form.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, int):
        return _time_in_range(name, text, text)
    stripped = text.strip()
    reference = now_ns() if now is None else now
    if stripped.lower() == "now":
        return reference
    if _EPOCH_NS.match(stripped):
        return _time_in_range(name, text, int(stripped))
    match = _DURATION.match(stripped)
    if match:
        ago = int(float(match.group(1)) * _UNITS[match.group(2)])
        return _time_in_range(name, text, reference - ago)
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise BadParameter(name, f"{text!r} is not a time; use {_EXAMPLES_TIME}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    return _time_in_range(name, text, ns)


def format_time(ns: int | None) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC with microseconds (``…Z``); '' for None."""
    if ns is None:
        return ""
    seconds, rest = divmod(ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // 1000:06d}Z"
