"""``eventscope query <name>`` subcommands of the read side, one per JSON API endpoint.

Each turns its flags into the endpoint's parameters (parsed there, by
``eventscope.queries.parse_params``), and the endpoint's JSON — typed again into the
records it came from, so a renamed field fails the type check — into rows: for a table,
short forms (times as ``HH:MM:SS`` UTC, durations in ms to 0.1, brief labels for kinds and
reasons) that the printer fits to the terminal, cutting only what does not fit; for CSV
(``raw``), whole values (ISO 8601 times to the nanosecond, full names, milliseconds with
every digit). With ``--format json`` the CLI prints exactly what the API returns.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from eventscope.queries import (
    GROUP_BY,
    SORTS,
    DuplicateEvent,
    FanoutTree,
    HandlerLatency,
    LostEvent,
    OrphanDelivery,
    OutOfOrderDelivery,
    RequestPage,
    Topology,
    VersionCount,
    VersionMix,
)

from ._query_command import QueryCommand

__all__ = ["READ_COMMANDS"]

Table = tuple[list[str], list[list[Any]]]
Record = TypeVar(
    "Record", LostEvent, DuplicateEvent, OrphanDelivery, OutOfOrderDelivery, VersionMix
)


def _clock(ns: int | None, raw: bool) -> str | None:
    """``HH:MM:SS`` (UTC) in a table; ISO 8601 to the nanosecond in CSV."""
    if ns is None:
        return None
    moment = datetime.fromtimestamp(ns // 10**9, UTC)
    if raw:
        return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"
    return moment.strftime("%H:%M:%S")


def _ms(ns: float | None, raw: bool) -> str | float | None:
    if ns is None:
        return None
    return ns / 1e6 if raw else f"{ns / 1e6:.1f}"


def _label(name: str, raw: bool) -> str:
    """A kind or reason: its short table label, or (CSV) its full name."""
    return name if raw else _SHORT.get(name, name)


# Short labels keep the tables narrow; JSON and CSV have the full names.
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
    parser.add_argument("--min-fanout", dest="min_fanout", help="at least N nodes")
    parser.add_argument("--correlation-id", dest="correlation_id")
    parser.add_argument("--attribute", help="KEY=VALUE of the request span")
    parser.add_argument(
        "--sort", default=None, help=f"{', '.join(SORTS)}; prefix - for descending (default -start)"
    )
    parser.add_argument("--limit", help="rows per page, 1 to 10000 (default 50)")
    parser.add_argument("--offset", help="rows to skip (default 0)")


def _records(kind: type[Record], value: Any) -> list[Record]:
    """The records of a ``{count, rows}`` answer, typed again."""
    return [kind.from_json(row) for row in value["rows"]]


def _requests_table(value: Any, raw: bool) -> Table:
    columns = ["time", "service", "name", "nodes", "settle", "issues", "span_id"]
    rows = []
    for r in RequestPage.from_json(value).rows:
        issues = " ".join(
            f"{n}{tag}" for n, tag in ((r.errors, "e"), (r.lost, "l"), (r.duplicates, "d")) if n
        )
        rows.append(
            [
                _clock(r.start_ns, raw),
                r.service,
                r.name,
                r.size,
                _ms(r.settle_ns, raw),
                issues,
                r.span_id,
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


def _tree_table(value: Any, raw: bool) -> Table:
    columns = ["node", "edge", "at_ms", "wait_ms", "run_ms", "result"]
    rows: list[list[Any]] = []
    tree = FanoutTree.from_json(value)
    for placed in tree.depth_first():
        node = placed.node
        outcome = node.outcome or ("error" if node.status == "error" else "")
        marks = [{"duplicate_skipped": "skip", "dead_lettered": "dead"}.get(outcome, outcome)]
        if node.duplicate:
            marks.append(_label(node.duplicate, raw))
        if node.lost_groups:
            marks.append("lost:" + ",".join(node.lost_groups))
        label = node.consumer_group or node.service
        text = f"{'  ' * placed.depth}{'*' if node.critical else ''}{label} {node.name}"
        rows.append(
            [
                text,
                node.edge if raw else node.edge[:5],
                _ms(node.offset_ns, raw),
                _ms(node.queue_wait_ns, raw),
                _ms(node.processing_ns, raw),
                " ".join(m for m in marks if m),
            ]
        )
    if not raw:  # a summary under the table (CSV holds the nodes only)
        rows.append([f"{tree.size} nodes, depth {tree.depth}", "", "", "", "", ""])
        rows.append([f"settled in {_ms(tree.settle_ns, raw) or '-'} ms", "", "", "", "", ""])
        rows.append(
            [f"{len(tree.lost)} lost, {len(tree.duplicates)} duplicated", "", "", "", "", ""]
        )
    return columns, rows


# --------------------------------------------------------------------------- latency


def _latency_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument("--group-by", dest="group_by", choices=tuple(GROUP_BY))
    parser.add_argument("--bucket", help="also per time bucket of this size, e.g. 5m")
    for name in ("service", "consumer-group", "event-type", "destination", "handler"):
        parser.add_argument(f"--{name}", dest=name.replace("-", "_"))


def _latency_table(value: Any, raw: bool) -> Table:
    columns = ["key", "count", "err%", "p50ms", "p95ms", "p99ms", "q50ms", "q95ms"]
    rows = []
    latency = HandlerLatency.from_json(value)
    for key, stats in [*((r.key, r.stats) for r in latency.rows), ("(all)", latency.total)]:
        run, wait = stats.processing, stats.queue_wait
        rows.append(
            [
                key,
                stats.count,
                100 * stats.error_rate if raw else f"{100 * stats.error_rate:.1f}",
                _ms(run.p50, raw),
                _ms(run.p95, raw),
                _ms(run.p99, raw),
                _ms(wait.p50, raw),
                _ms(wait.p95, raw),
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


def _lost_table(value: Any, raw: bool) -> Table:
    columns = ["time", "event_type", "event_id", "group", "reason"]
    return columns, [
        [
            _clock(r.published_ns, raw),
            r.event_type,
            r.event_id,
            r.consumer_group,
            _label(r.reason, raw),
        ]
        for r in _records(LostEvent, value)
    ]


def _duplicates_table(value: Any, raw: bool) -> Table:
    columns = ["first", "event_id", "group", "kind", "n"]
    return columns, [
        [
            _clock(r.first_ns, raw),
            r.event_id,
            r.consumer_group if raw else r.consumer_group or "(producer)",
            _label(r.kind, raw),
            r.deliveries,
        ]
        for r in _records(DuplicateEvent, value)
    ]


def _orphans_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument(
        "--grace", help="only deliveries that started longer ago (default: the collector's, 5m)"
    )


def _orphans_table(value: Any, raw: bool) -> Table:
    columns = ["time", "event_id", "group", "reason"]
    return columns, [
        [
            _clock(r.start_ns, raw),
            r.event_id,
            r.consumer_group,
            _label(r.reason, raw),
        ]
        for r in _records(OrphanDelivery, value)
    ]


def _order_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument("--entity-id", dest="entity_id")
    parser.add_argument("--consumer-group", dest="consumer_group")


def _order_table(value: Any, raw: bool) -> Table:
    columns = ["entity", "group", "seq", "after", "event_id"]
    return columns, [
        [
            r.entity_id,
            r.consumer_group,
            r.sequence,
            r.after_sequence,
            r.event_id,
        ]
        for r in _records(OutOfOrderDelivery, value)
    ]


def _versions_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument("--event-type", dest="event_type")
    parser.add_argument("--mixed-only", dest="mixed_only", action="store_true")


def _versions_table(value: Any, raw: bool) -> Table:
    columns = ["event_type", "group", "versions", "published", "mixed"]
    return columns, [
        [
            r.event_type,
            r.consumer_group,
            _versions(r.versions),
            _versions(r.published_versions),
            "yes" if r.mixed else "",
        ]
        for r in _records(VersionMix, value)
    ]


def _versions(counts: Sequence[VersionCount]) -> str:
    return " ".join(f"v{v.version or '?'}×{v.count}" for v in counts)


# --------------------------------------------------------------------------- topology


def _topology_arguments(parser: argparse.ArgumentParser) -> None:
    _window(parser)
    parser.add_argument("--grace", help="for lost counts (5m)")
    parser.add_argument("--subscriptions", help="SUBJECT:GROUP[,GROUP];… that must handle")


def _topology_table(value: Any, raw: bool) -> Table:
    columns = ["producer", "event", "group", "sent", "handled", "lost", "dup", "p95ms"]
    return columns, [
        [
            e.producer if raw else e.producer or "(unknown)",
            e.event_type or e.destination,
            e.consumer_group if raw else e.consumer_group or "-",
            e.published,
            e.handled,
            e.lost,
            e.duplicates,
            _ms(e.processing.p95, raw),
        ]
        for e in Topology.from_json(value).edges
    ]


def _command(
    endpoint: str,
    help: str,
    arguments: Callable[[argparse.ArgumentParser], None],
    names: Sequence[str],
    table: Callable[[Any, bool], Table],
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
