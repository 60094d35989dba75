"""Opening a request, two versions of eventscope on one file, alternating, in one process.

``--before`` is a folder holding an older ``eventscope`` package (``mkdir -p B/eventscope &&
git archive REV | tar -x -C B/eventscope``); the other side is the installed one, or
``--after`` (a folder made the same way). On the
file of ``benchmarks/queries.py`` (its 20-span request an hour before the end, and its
10,000-node request) each side times, best of ``--rounds`` warm runs, alternating:

- *query*: ``fanout_tree``;
- *API*: what ``GET /api/tree/{root}`` does in its read thread (the tree, its JSON text
  as the endpoint writes it: collector/_read_endpoints.py ``_json``, then ``dumps``);
- *page*: what ``GET /requests/{root}`` does (the tree, the waterfall's rows, the HTML).

Each is timed as wall time and as the process's CPU time (DuckDB's threads included),
which other work on a shared machine disturbs less.

Then it checks that both sides give the same tree JSON for these two and ``--sample`` more
roots of the file (trace, span, correlation and event ids of requests in its last two
hours), and the same page HTML for the two, and says so.

    python benchmarks/tree_ab.py --before /tmp/before FILE
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reads_ab import load

HOUR = 3600 * 10**9
#: Lost marks judged at a fixed time, so that both sides' answers compare.
_NOW = 2**62


def _load(before: str | None) -> SimpleNamespace:
    """The functions one side calls, imported from ``before`` (or the installed package)."""
    queries, api, endpoints, render, view = load(
        before,
        "eventscope.queries",
        "eventscope.collector._api",
        "eventscope.collector._read_endpoints",
        "eventscope.ui._render",
        "eventscope.ui._tree_view",
    )
    return SimpleNamespace(
        fanout_tree=queries.fanout_tree,
        dumps=api.dumps,
        as_json=endpoints._json,
        render=render.render,
        json_block=render.json_block,
        tree_view=view.tree_view,
        by_handler=view.by_handler,
    )


def _steps(
    side: SimpleNamespace, cursor: duckdb.DuckDBPyConnection
) -> dict[str, Callable[[str], Any]]:
    def query(root: str) -> Any:
        return side.fanout_tree(cursor, root, grace_ns=-_NOW)

    def api(root: str) -> str:  # as the endpoint: the record itself, where orjson writes it
        text: str = side.dumps(side.as_json(query(root)))
        return text

    def page(root: str) -> bytes:
        tree = query(root)
        view = side.tree_view(root, tree)
        response = side.render(
            "request.html",
            page="requests",
            plots=True,
            title=f"Request {root}",
            tree=view,
            tree_json=side.json_block(view.json),  # the waterfall's data (ui/_views.py)
            fanout=tree,
            by_handler=side.by_handler(view.nodes),
        )
        body: bytes = response.body
        return body

    return {"query": query, "API": api, "page": page}


def _roots(cursor: duckdb.DuckDBPyConnection, sample: int) -> tuple[str, str, list[str]]:
    """(the 20-span request's trace, the 10,000-node one's, ``sample`` more roots)."""
    [(end,)] = cursor.execute("SELECT epoch_ns(max(start_time)) FROM spans").fetchall()
    [(big,)] = cursor.execute(
        "SELECT trace_id FROM spans WHERE name = 'POST /imports' LIMIT 1"
    ).fetchall()
    [(small,)] = cursor.execute(
        "SELECT trace_id FROM spans WHERE name = 'POST /orders' "
        "AND start_time >= make_timestamp_ns($t) ORDER BY start_time LIMIT 1",
        {"t": end - HOUR},
    ).fetchall()
    rows = cursor.execute(
        "SELECT trace_id, span_id, correlation_id, message_id FROM spans "
        "WHERE start_time >= make_timestamp_ns($t) ORDER BY hash(span_id) LIMIT $n",
        {"t": end - 2 * HOUR, "n": sample},
    ).fetchall()
    more = [row[n % 4] or row[0] for n, row in enumerate(sorted(rows))]
    return small, big, more


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", help="a folder as --before (default: the installed one)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sample", type=int, default=40, help="more roots compared")
    args = parser.parse_args()
    cursor = duckdb.connect(args.db, read_only=True)
    sides = {"before": _load(args.before), "after": _load(args.after)}
    steps = {name: _steps(side, cursor) for name, side in sides.items()}
    small, big, more = _roots(cursor, args.sample)
    cases = {"20-span request": small, "10,000-node request": big}
    best: dict[tuple[str, str, str], float] = {}
    cpu: dict[tuple[str, str, str], float] = {}
    for name, root in cases.items():
        for step in ("query", "API", "page"):
            for side in sides:
                steps[side][step](root)  # warm
            for _ in range(args.rounds):
                for side in sides:
                    started, used = time.perf_counter(), time.process_time()
                    steps[side][step](root)
                    took, cpu_took = time.perf_counter() - started, time.process_time() - used
                    key = (name, step, side)
                    best[key] = min(best.get(key, took), took)
                    cpu[key] = min(cpu.get(key, cpu_took), cpu_took)
    print(f"{Path(args.db).name}, best of {args.rounds} warm, alternating (ms):")
    print("| request | step | before | after | after / before | CPU before | CPU after | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in cases:
        for step in ("query", "API", "page"):
            before, after = best[name, step, "before"], best[name, step, "after"]
            cpu_before, cpu_after = cpu[name, step, "before"], cpu[name, step, "after"]
            print(
                f"| {name} | {step} | {before * 1000:.1f} | {after * 1000:.1f} "
                f"| {after / before:.2f} | {cpu_before * 1000:.1f} | {cpu_after * 1000:.1f} "
                f"| {cpu_after / cpu_before:.2f} |"
            )
    roots = [small, big, *more]
    differ = [r for r in roots if steps["before"]["API"](r) != steps["after"]["API"](r)]
    pages = [r for r in (small, big) if steps["before"]["page"](r) != steps["after"]["page"](r)]
    print(f"same tree JSON for {len(roots) - len(differ)} of {len(roots)} roots: {differ or ''}")
    print(f"same page HTML for {2 - len(pages)} of 2: {pages or ''}")


if __name__ == "__main__":
    main()
