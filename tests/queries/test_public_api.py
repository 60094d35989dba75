"""The face of eventscope.queries: what it exports, and what it must not import."""

from __future__ import annotations

import subprocess
import sys

import eventscope.queries as queries
import pytest
from eventscope.queries import BadParameter, parse_duration, parse_time

PUBLIC = [
    "DEFAULT_GRACE_NS",
    "DUPLICATE_KINDS",
    "GROUP_BY",
    "LATENCY_BUCKETS",
    "LEDGER_SKEW_NS",
    "MAX_WHOLE",
    "SORTS",
    "VIEWS_SQL",
    "ActivityBucket",
    "BadParameter",
    "CriticalHop",
    "DuplicateEvent",
    "DuplicateMark",
    "DuplicatesParams",
    "EventTypeSummary",
    "EventscopeError",
    "FanoutTree",
    "HandlerLatency",
    "LatencyBin",
    "LatencyBucket",
    "LatencyHistogram",
    "LatencyParams",
    "LatencyRow",
    "LatencyStats",
    "LinkedSpan",
    "LostEvent",
    "LostMark",
    "LostParams",
    "NotFound",
    "NotReadOnly",
    "OrphanDelivery",
    "OrphansParams",
    "OutOfOrderDelivery",
    "OutOfOrderParams",
    "Overview",
    "Percentiles",
    "PlacedNode",
    "QueryError",
    "RequestPage",
    "RequestSummary",
    "RequestsParams",
    "ResultTooLarge",
    "ServiceSummary",
    "SpanDetail",
    "SpanEvent",
    "SqlParams",
    "SqlResult",
    "Topology",
    "TopologyEdge",
    "TopologyParams",
    "TopologyParts",
    "TotalRow",
    "TreeNode",
    "TreeParams",
    "VersionCount",
    "VersionMix",
    "VersionsParams",
    "Window",
    "check_read_only",
    "duplicate_events",
    "fanout_tree",
    "fields_are_json",
    "format_time",
    "gc_paused",
    "handler_latency",
    "latency_histogram",
    "ledger_totals",
    "lost_events",
    "now_ns",
    "orphan_deliveries",
    "out_of_order",
    "out_of_order_page",
    "overview",
    "parse_choice",
    "parse_duration",
    "parse_int",
    "parse_params",
    "parse_time",
    "requests",
    "run_sql",
    "span_detail",
    "to_json_value",
    "topology",
    "topology_parts",
    "version_mix",
]


def test_the_public_names_change_only_on_purpose() -> None:
    assert queries.__all__ == PUBLIC
    assert all(hasattr(queries, name) for name in PUBLIC)


def test_queries_import_neither_the_collector_nor_the_ui() -> None:
    code = (
        "import sys, eventscope.queries; "
        "print([m for m in sys.modules if m.startswith(('eventscope.collector', 'eventscope.ui'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T14:03:00Z", 1_795_788_180_000_000_000),
        ("2026-11-27T14:03:00", 1_795_788_180_000_000_000),  # no zone: UTC
        ("2026-11-27T15:03:00+01:00", 1_795_788_180_000_000_000),
        ("15m", 1_000_000_000_000_000_000 - 15 * 60 * 10**9),
        ("2h", 1_000_000_000_000_000_000 - 2 * 3600 * 10**9),
        ("7d", 1_000_000_000_000_000_000 - 7 * 86400 * 10**9),
        ("30s", 1_000_000_000_000_000_000 - 30 * 10**9),
        ("now", 1_000_000_000_000_000_000),
        ("1795788180000000000", 1_795_788_180_000_000_000),
    ],
)
def test_times_are_iso_8601_or_relative_to_now(text: str, expected: int) -> None:
    assert parse_time("since", text, now=1_000_000_000_000_000_000) == expected


def test_durations_take_a_unit() -> None:
    assert parse_duration("grace", "5m") == 300 * 10**9
    assert parse_duration("bucket", "500ms") == 500 * 10**6
    assert parse_duration("grace", "0") == 0
    assert parse_duration("grace", None, 7) == 7


@pytest.mark.parametrize(("name", "text"), [("since", "yesterday"), ("until", "2026-13-01")])
def test_a_bad_time_names_its_parameter(name: str, text: str) -> None:
    with pytest.raises(BadParameter) as caught:
        parse_time(name, text)
    assert caught.value.name == name and str(caught.value).startswith(f"{name}: ")


def test_a_bad_duration_names_its_parameter() -> None:
    with pytest.raises(BadParameter, match=r"^grace: '5 minutes' is not a duration"):
        parse_duration("grace", "5 minutes")


@pytest.mark.parametrize(
    "text",
    [
        "9999-12-31T23:59:59Z",
        "0001-01-01",
        "1960-05-01",
        "99999999999999999999"[:19],
        "1000000000000s",
    ],
)
def test_a_time_outside_what_timestamps_hold_is_a_bad_parameter(text: str) -> None:
    # Years 1 or 9999 do not fit DuckDB's nanosecond timestamps: a clear 400, not a 500.
    with pytest.raises(BadParameter, match=r"^since: .* is out of range; times must fall"):
        parse_time("since", text, now=1_000_000_000_000_000_000)


def test_a_duration_longer_than_a_century_is_a_bad_parameter() -> None:
    with pytest.raises(BadParameter, match=r"^lookback: '1000000000000000000000000s' is too long"):
        parse_duration("lookback", "1000000000000000000000000s")
    assert parse_duration("lookback", "36500d") == 36500 * 86_400 * 10**9
