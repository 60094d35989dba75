"""Ask eventscope's data questions from Python: the public ``eventscope.queries`` API.

Reads a DuckDB file eventscope wrote (a stopped ``eventscope serve``, or the demo's) and
prints: latency per handler (processing and queue wait), the events lost in the last
hour, the slowest request's fan-out tree; and writes a Plotly figure of the handlers'
latency to an HTML file that works offline.

    eventscope demo --orders 60 --rate 20      # writes eventscope-demo.duckdb, then stops
    python run.py --db eventscope-demo.duckdb [--grace 15s] [--figure latency.html] [--json]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import duckdb
import plotly.graph_objects as go
from eventscope.queries import (
    FanoutTree,
    TreeNode,
    fanout_tree,
    handler_latency,
    lost_events,
    now_ns,
    parse_duration,
    requests,
)

HOUR_NS = 3600 * 10**9


def _tree_lines(node: TreeNode, depth: int = 0) -> list[str]:
    label = f"{'  ' * depth}{node.service}: {node.name}"
    timing = f"+{node.offset_ns / 1e6:.1f} ms"
    if node.queue_wait_ns is not None:
        timing += f", waited {node.queue_wait_ns / 1e6:.1f} ms"
    if node.processing_ns is not None:
        timing += f", ran {node.processing_ns / 1e6:.1f} ms"
    result = f"  [{node.outcome}]" if node.outcome else ""
    lines = [f"{label:<56} {timing}{result}"]
    for child in node.children:
        lines += _tree_lines(child, depth + 1)
    return lines


def latency_figure(rows: list[Any]) -> go.Figure:
    """p95 processing and p95 queue wait per handler, side by side."""
    keys = [row.key for row in rows]
    figure = go.Figure(
        [
            go.Bar(name="processing p95", x=keys, y=[r.stats.processing.p95 / 1e6 for r in rows]),
            go.Bar(name="queue wait p95", x=keys, y=[r.stats.queue_wait.p95 / 1e6 for r in rows]),
        ]
    )
    figure.update_layout(barmode="group", title="Handler latency", yaxis_title="ms")
    return figure


def main(args: argparse.Namespace) -> dict[str, Any]:
    db = duckdb.connect(args.db, read_only=True)
    grace = parse_duration("grace", args.grace) or 0

    latency = handler_latency(db, group_by="handler")
    rows = sorted(latency.rows, key=lambda r: -(r.stats.processing.p95 or 0))
    print(f"{'handler':<40} {'count':>6} {'run p95 ms':>11} {'wait p95 ms':>12}")
    for row in rows:
        run, wait = row.stats.processing.p95, row.stats.queue_wait.p95
        print(
            f"{row.key:<40} {row.stats.count:>6} {(run or 0) / 1e6:>11.1f} "
            f"{(wait or 0) / 1e6:>12.1f}"
        )

    lost = lost_events(db, grace_ns=grace, since_ns=now_ns() - HOUR_NS)
    print(f"\n{len(lost)} events lost in the last hour")
    for event in lost:
        print(f"  {event.event_type} {event.event_id} for {event.consumer_group}: {event.reason}")

    slowest = requests(db, sort="-settle", limit=1).rows
    tree: FanoutTree | None = None
    if slowest:
        tree = fanout_tree(db, slowest[0].trace_id, grace_ns=grace)
        print(
            f"\nthe slowest request settled in {tree.settle_ns / 1e6:.1f} ms "
            f"({tree.size} nodes, {len(tree.services)} services):"
        )
        print("\n".join(_tree_lines(tree.root)))

    latency_figure(rows).write_html(args.figure, include_plotlyjs=True)  # no CDN needed
    print(f"\nfigure: {args.figure}")
    return {
        "handlers": [row.key for row in rows],
        "lost": [event.to_json() for event in lost],
        "slowest_tree": None if tree is None else {"size": tree.size, "root": tree.root.name},
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="eventscope-demo.duckdb", help="a DuckDB file")
    parser.add_argument("--grace", default="15s", help="publishes younger are not lost yet")
    parser.add_argument("--figure", default="latency.html", help="where the figure goes")
    parser.add_argument("--json", help="also write the answers to this JSON file")
    return parser.parse_args()


if __name__ == "__main__":
    options = arguments()
    answers = main(options)
    if options.json:
        with open(options.json, "w") as out:
            json.dump(answers, out, indent=2)
