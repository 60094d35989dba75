"""``eventscope query <name>`` subcommands of the read side, one per JSON API endpoint.

Each turns its flags into the endpoint's parameters, and the endpoint's JSON into a table
that reads well in 80 columns (times as ``HH:MM:SS.mmm`` UTC, durations in ms). With
``--format json`` the CLI prints exactly what the API returns.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from eventscope.queries import GROUP_BY, SORTS

from ._query_command import QueryCommand

__all__ = ["READ_COMMANDS"]

Table = tuple[list[str], list[list[Any]]]


def _clock(ns: int | None) -> str:
    if ns is None:
        return ""
    moment = datetime.fromtimestamp(ns // 10**9, UTC)
    return moment.strftime("%H:%M:%S") + f".{ns % 10**9 // 10**6:03d}"


def _ms(ns: float | None) -> str:
    return "" if ns is None else f"{ns / 1e6:.1f}"


def _fit(value: Any, width: int) -> str:
    """Text cut to ``width`` (ids are never passed here: they stay whole)."""
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# Short labels keep the tables within 80 columns; JSON has the full names.
_SHORT = {
    "processed_twice": "twice",
    "suppressed": "skipped",
    "redelivered_after_failure": "retried",
    "redelivered": "again",
    "published_twice": "sent-twice",
    "never_delivered": "never",
    "dead_lettered": "dead",
    "all_attempts_failed": "failed",
    "never_published": "unpublished",
    "no_event_id": "no-id",
}


def _window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", help="from this time: ISO 8601, or 15m, 2h, 7d ago")
    parser.add_argument("--until", help="up to this time (default now)")


def _params(args: argparse.Namespace, *names: str) -> dict[str, str]:
    out = {}
    for name in ("since", "until", *names):
        value = getattr(args, name, None)
        if value is not None and value is not False:
            out[name] = "true" if value is True else str(value)
    return out


# --------------------------------------------------------------------------- requests


def _requests_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument("--service", help="only requests of this service")
    parser.add_argument("--name", help="only requests with this span name, e.g. 'POST /orders'")
    parser.add_argument("--status", choices=("unset", "ok", "error"))
    parser.add_argument("--min-fanout", dest="min_fanout", type=int, help="at least N nodes")
    parser.add_argument("--correlation-id", dest="correlation_id")
    parser.add_argument("--attribute", help="KEY=VALUE of the request span")
    parser.add_argument(
        "--sort", default=None, help=f"{', '.join(SORTS)}; prefix - for descending (default -start)"
    )
    parser.add_argument("--limit", type=int)
    parser.add_argument("--offset", type=int)


def _requests_table(value: Any) -> Table:
    columns = ["time", "service", "name", "nodes", "settle", "issues", "span_id"]
    rows = []
    for r in value["rows"]:
        issues = " ".join(
            f"{n}{tag}"
            for n, tag in ((r["errors"], "e"), (r["lost"], "l"), (r["duplicates"], "d"))
            if n
        )
        rows.append(
            [
                _clock(r["start_ns"])[:8],
                _fit(r["service"], 10),
                _fit(r["name"], 14),
                r["size"],
                _ms(r["settle_ns"]),
                issues,
                r["span_id"],
            ]
        )
    return columns, rows


# --------------------------------------------------------------------------- tree


def _tree_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="trace id, span id, correlation id or event id")
    parser.add_argument("--grace", help="publishes younger than this are not lost yet (5m)")
    parser.add_argument("--lookback", help="learn expected groups this long around (1h)")
    parser.add_argument("--subscriptions", help="SUBJECT:GROUP[,GROUP];… that must handle")
    parser.add_argument("--horizon", help="only spans that started this soon after the root")


def _tree_table(value: Any) -> Table:
    columns = ["node", "edge", "at_ms", "wait_ms", "run_ms", "result"]
    rows: list[list[Any]] = []
    stack = [(value["root"], "")]
    while stack:
        node, indent = stack.pop()
        outcome = node["outcome"] or ("error" if node["status"] == "error" else "")
        marks = [{"duplicate_skipped": "skip", "dead_lettered": "dead"}.get(outcome, outcome)]
        if node["duplicate"]:
            marks.append(_SHORT[node["duplicate"]])
        if node["lost_groups"]:
            marks.append("lost:" + ",".join(node["lost_groups"]))
        label = node["consumer_group"] or node["service"]
        text = f"{indent}{'*' if node['critical'] else ''}{label} {node['name']}"
        rows.append(
            [
                _fit(text, 34),
                node["edge"][:5],
                _ms(node["offset_ns"]),
                _ms(node["queue_wait_ns"]),
                _ms(node["processing_ns"]),
                _fit(" ".join(m for m in marks if m), 12),
            ]
        )
        stack.extend((child, indent + "  ") for child in reversed(node["children"]))
    rows.append([f"{value['size']} nodes, depth {value['depth']}", "", "", "", "", ""])
    rows.append([f"settled in {_ms(value['settle_ns']) or '-'} ms", "", "", "", "", ""])
    rows.append(
        [f"{len(value['lost'])} lost, {len(value['duplicates'])} duplicated", "", "", "", "", ""]
    )
    return columns, rows


# --------------------------------------------------------------------------- latency


def _latency_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument("--group-by", dest="group_by", choices=tuple(GROUP_BY))
    parser.add_argument("--bucket", help="also per time bucket of this size, e.g. 5m")
    for name in ("service", "consumer-group", "event-type", "destination", "handler"):
        parser.add_argument(f"--{name}", dest=name.replace("-", "_"))


def _latency_table(value: Any) -> Table:
    columns = ["key", "count", "err%", "p50ms", "p95ms", "p99ms", "q50ms", "q95ms"]
    rows = []
    for key, stats in [*((r["key"], r["stats"]) for r in value["rows"]), ("(all)", value["total"])]:
        run, wait = stats["processing"], stats["queue_wait"]
        rows.append(
            [
                _fit(key, 22),
                stats["count"],
                f"{100 * stats['error_rate']:.1f}",
                _ms(run["p50"]),
                _ms(run["p95"]),
                _ms(run["p99"]),
                _ms(wait["p50"]),
                _ms(wait["p95"]),
            ]
        )
    return columns, rows


# --------------------------------------------------------------------------- ledger


def _lost_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument(
        "--grace", help="only events published longer ago (default: the collector's, 5m)"
    )
    parser.add_argument("--lookback", help="look this far back for events and groups (all)")
    parser.add_argument("--subscriptions", help="SUBJECT:GROUP[,GROUP];… that must handle")


def _lost_table(value: Any) -> Table:
    columns = ["time", "event_type", "event_id", "group", "reason"]
    return columns, [
        [
            _clock(r["published_ns"])[:8],
            _fit(r["event_type"], 12),
            r["event_id"],
            _fit(r["consumer_group"], 10),
            _SHORT[r["reason"]],
        ]
        for r in value["rows"]
    ]


def _duplicates_table(value: Any) -> Table:
    columns = ["first", "event_id", "group", "kind", "n"]
    return columns, [
        [
            _clock(r["first_ns"])[:8],
            r["event_id"],
            _fit(r["consumer_group"] or "(producer)", 12),
            _SHORT[r["kind"]],
            r["deliveries"],
        ]
        for r in value["rows"]
    ]


def _orphans_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument(
        "--grace", help="only deliveries that started longer ago (default: the collector's, 5m)"
    )


def _orphans_table(value: Any) -> Table:
    columns = ["time", "event_id", "group", "reason"]
    return columns, [
        [
            _clock(r["start_ns"])[:8],
            r["event_id"],
            _fit(r["consumer_group"], 12),
            _SHORT[r["reason"]],
        ]
        for r in value["rows"]
    ]


def _order_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument("--entity-id", dest="entity_id")
    parser.add_argument("--consumer-group", dest="consumer_group")


def _order_table(value: Any) -> Table:
    columns = ["entity", "group", "seq", "after", "event_id"]
    return columns, [
        [
            _fit(r["entity_id"], 14),
            _fit(r["consumer_group"], 12),
            r["sequence"],
            r["after_sequence"],
            r["event_id"],
        ]
        for r in value["rows"]
    ]


def _versions_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument("--event-type", dest="event_type")
    parser.add_argument("--mixed-only", dest="mixed_only", action="store_true")


def _versions_table(value: Any) -> Table:
    columns = ["event_type", "group", "versions", "published", "mixed"]
    return columns, [
        [
            _fit(r["event_type"], 18),
            _fit(r["consumer_group"], 14),
            _fit(" ".join(f"v{v['version'] or '?'}×{v['count']}" for v in r["versions"]), 16),
            _fit(
                " ".join(f"v{v['version'] or '?'}×{v['count']}" for v in r["published_versions"]),
                16,
            ),
            "yes" if r["mixed"] else "",
        ]
        for r in value["rows"]
    ]


# --------------------------------------------------------------------------- topology


def _topology_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument("--grace", help="for lost counts (5m)")
    parser.add_argument("--subscriptions", help="SUBJECT:GROUP[,GROUP];… that must handle")


def _topology_table(value: Any) -> Table:
    columns = ["producer", "event", "group", "sent", "handled", "lost", "dup", "p95ms"]
    return columns, [
        [
            _fit(e["producer"] or "(unknown)", 12),
            _fit(e["event_type"] or e["destination"], 16),
            _fit(e["consumer_group"] or "-", 12),
            e["published"],
            e["handled"],
            e["lost"],
            e["duplicates"],
            _ms(e["processing"]["p95"]),
        ]
        for e in value["edges"]
    ]


def _command(
    endpoint: str,
    help: str,
    arguments: Callable[[argparse.ArgumentParser], None],
    names: Sequence[str],
    table: Callable[[Any], Table],
) -> QueryCommand:
    return QueryCommand(
        endpoint=endpoint,
        help=help,
        arguments=arguments,
        params=lambda args: _params(args, *names),
        table=table,
    )


READ_COMMANDS: dict[str, QueryCommand] = {
    "requests": _command(
        "requests",
        "originating requests with their fan-out size, settle time and issues",
        _requests_arguments,
        (
            "service",
            "name",
            "status",
            "min_fanout",
            "correlation_id",
            "attribute",
            "sort",
            "limit",
            "offset",
        ),
        _requests_table,
    ),
    "tree": _command(
        "tree/{root}",
        "the fan-out tree of a trace, span, correlation or event id",
        _tree_arguments,
        ("root", "grace", "lookback", "subscriptions", "horizon"),
        _tree_table,
    ),
    "latency": _command(
        "latency",
        "handler latency: processing and queue-wait percentiles",
        _latency_arguments,
        ("group_by", "bucket", "service", "consumer_group", "event_type", "destination", "handler"),
        _latency_table,
    ),
    "lost": _command(
        "events/lost",
        "events an expected consumer group never handled",
        _lost_arguments,
        ("grace", "lookback", "subscriptions"),
        _lost_table,
    ),
    "duplicates": _command(
        "events/duplicates",
        "events delivered more than once per group, or published twice",
        _window,
        (),
        _duplicates_table,
    ),
    "orphans": _command(
        "events/orphans",
        "deliveries whose event was never seen published",
        _orphans_arguments,
        ("grace",),
        _orphans_table,
    ),
    "out-of-order": _command(
        "events/out-of-order",
        "events processed after a later event of the same entity",
        _order_arguments,
        ("entity_id", "consumer_group"),
        _order_table,
    ),
    "versions": _command(
        "events/versions",
        "schema versions per event type and consumer group",
        _versions_arguments,
        ("event_type", "mixed_only"),
        _versions_table,
    ),
    "topology": _command(
        "topology",
        "the choreography map: producer → event → consumer group",
        _topology_arguments,
        ("grace", "subscriptions"),
        _topology_table,
    ),
}
