"""Read-side benchmark: every query of ``eventscope.queries`` at two sizes, 10 M and 100 M spans.

Generates (once each, cached in the temp folder) the workload of
``benchmarks/queries_workload.py`` through the collector's own writer — traced requests of
20 spans arriving one every 17 ms in time order (100 M spans a day), 5 consumer groups,
links across traces, known anomalies, a tenth as many sampled-out requests as event
records, one 10,000-span request — 10 M spans (the last ~2.4 h of such a day) and 100 M
(the whole day): the same rate, ten times the history. Then times each query cold (a
fresh read-only connection) and warm (the best of ``--rounds`` more), with the windows the
pages use ending at the newest data, and prints each query's warm time at both sizes and
their ratio. The connections have the collector's default memory limit (448 MiB), as the
reads of a collector started without ``--db-memory-limit`` do (``--memory-limit none``:
DuckDB's own, 80 % of the machine's memory, as this script used before 2026-12-07).

    python benchmarks/queries.py                       # 10M and 100M (generating takes long)
    python benchmarks/queries.py --sizes 2M            # a quicker run
    python benchmarks/queries.py --db a.duckdb --db b.duckdb
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eventscope.collector._missing_modules import remember_missing
from eventscope.collector._settings import DEFAULT_DB_MEMORY_LIMIT
from eventscope.queries import _event_parts as event_parts
from eventscope.queries import _order as order_module
from eventscope.queries import _overview as overview_module
from eventscope.queries import _topology as topology_module
from eventscope.queries import candidate_spans as candidate_spans_module
from eventscope.queries import (
    duplicate_events,
    fanout_tree,
    handler_latency,
    lost_events,
    orphan_deliveries,
    out_of_order,
    out_of_order_page,
    overview,
    requests,
    topology,
    version_mix,
)
from eventscope.queries.schema import SCHEMA_SQL
from queries_workload import ingest

WORKLOAD_VERSION = "8"  # 6: through the collector's writer, in time order, one rate;
# 7: ids random in their leading hex digits, as OpenTelemetry's (a chunk's number last);
# 8: the order keys merged as a collector running in real time merges them (each chunk)


def _database(requests_count: int, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    schema = hashlib.sha1(SCHEMA_SQL.encode()).hexdigest()[:8]  # a new schema, a new file
    path = folder / f"queries-{requests_count}-v{WORKLOAD_VERSION}-{schema}.duckdb"
    if not path.exists():
        print(f"generating {path} …", flush=True)
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        ingest(str(partial), requests_count, requests_count // 10, progress=True)
        for leftover in (partial.with_name(partial.name + ".wal"),):
            leftover.unlink(missing_ok=True)
        partial.rename(path)
        print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def _ids(connection: duckdb.DuckDBPyConnection) -> tuple[str, str, int]:
    """(the 10,000-span request's trace, a 20-span request an hour before the end, the
    last start time): the same ids relative to the end at every size."""
    end = connection.execute("SELECT epoch_ns(max(start_time)) FROM spans").fetchone()[0]
    big_trace = connection.execute(
        "SELECT trace_id FROM spans WHERE name = 'POST /imports'"
    ).fetchone()[0]
    small_trace = connection.execute(
        "SELECT trace_id FROM spans WHERE name = 'POST /orders' "
        "AND start_time >= make_timestamp_ns($t) ORDER BY start_time LIMIT 1",
        {"t": end - HOUR},
    ).fetchone()[0]
    return big_trace, small_trace, end


HOUR = 3600 * 10**9
Case = tuple[str, Callable[[], Any], float | None]


def _cases(connection: duckdb.DuckDBPyConnection, ids: tuple[str, str, int]) -> list[Case]:
    """Each query as the API and pages ask it: windows end at the newest data (what the
    pages' default window, the last hour, is on a collector receiving it now)."""
    big_trace, small_trace, end = ids
    hour = {"since_ns": end - HOUR, "until_ns": end + 1}
    day = {"since_ns": end - 24 * HOUR, "until_ns": end + 1}
    return [
        ("fanout_tree, 20-span request", lambda: fanout_tree(connection, small_trace), 0.05),
        ("fanout_tree, 10,000-node request", lambda: fanout_tree(connection, big_trace), 0.15),
        ("handler_latency by handler, 24 h", lambda: handler_latency(connection, **day), 0.3),
        ("handler_latency by handler, 1 h", lambda: handler_latency(connection, **hour), None),
        (
            "handler_latency by group, 24 h, 1h buckets",
            lambda: handler_latency(connection, group_by="consumer_group", bucket_ns=HOUR, **day),
            None,
        ),
        ("lost_events, 1 h", lambda: lost_events(connection, **hour), 0.3),
        (
            "lost_events, 1 h, keys only (ledger-event rollup's baseline)",
            _without(event_parts, "rollup_from", lambda: lost_events(connection, **hour)),
            None,
        ),
        ("lost_events, 24 h", lambda: lost_events(connection, **day), 2.0),
        ("duplicate_events, 1 h", lambda: duplicate_events(connection, **hour), 0.3),
        (
            "duplicate_events, 1 h, keys only (ledger-event rollup's baseline)",
            _without(event_parts, "rollup_from", lambda: duplicate_events(connection, **hour)),
            None,
        ),
        (
            "duplicate_events, 1 h, spans read back raw (candidate copies' baseline)",
            _without(
                candidate_spans_module,
                "candidates_copied",
                lambda: duplicate_events(connection, **hour),
            ),
            None,
        ),
        ("duplicate_events, 24 h", lambda: duplicate_events(connection, **day), 2.0),
        (
            "duplicate_events, 24 h, spans read back raw (candidate copies' baseline)",
            _without(
                candidate_spans_module,
                "candidates_copied",
                lambda: duplicate_events(connection, **day),
            ),
            None,
        ),
        ("orphan_deliveries, 1 h", lambda: orphan_deliveries(connection, **hour), None),
        (
            "orphan_deliveries, 1 h, keys only (ledger-event rollup's baseline)",
            _without(event_parts, "rollup_from", lambda: orphan_deliveries(connection, **hour)),
            None,
        ),
        (
            "orphan_deliveries, 1 h, spans read back raw (candidate copies' baseline)",
            _without(
                candidate_spans_module,
                "candidates_copied",
                lambda: orphan_deliveries(connection, **hour),
            ),
            None,
        ),
        ("orphan_deliveries, 24 h", lambda: orphan_deliveries(connection, **day), None),
        ("out_of_order, 1 h", lambda: out_of_order(connection, **hour), None),
        (
            "out_of_order, 1 h, from the raw rows (no order keys)",
            _without(order_module, "_rolled", lambda: out_of_order(connection, **hour)),
            None,
        ),
        (
            "out_of_order_page (the events page's: count + 20), 1 h",
            lambda: out_of_order_page(connection, **hour, limit=20),
            None,
        ),
        (
            "out_of_order_page, 1 h, from the raw rows (no order keys)",
            _without(
                order_module, "_rolled", lambda: out_of_order_page(connection, **hour, limit=20)
            ),
            None,
        ),
        ("version_mix, 1 h", lambda: version_mix(connection, **hour), None),
        ("overview, 1 h (the home page's)", lambda: overview(connection, **hour, fit=True), None),
        (
            "overview, 1 h, rows only (rollups' baseline)",
            _without(
                overview_module, "_activity_span", lambda: overview(connection, **hour, fit=True)
            ),
            None,
        ),
        ("requests, newest 50 of 1 h", lambda: requests(connection, **hour), None),
        (  # sorting by tree figures considers at most 20,000 requests: 5 min holds 17,600
            "requests, 5 min by settle time",
            lambda: requests(
                connection, since_ns=end - HOUR // 12, until_ns=end + 1, sort="-settle"
            ),
            None,
        ),
        ("topology, 1 h", lambda: topology(connection, **hour), None),
        (
            "topology, 1 h, rows only (rollup's baseline)",
            _without(topology_module, "rolled_edges", lambda: topology(connection, **hour)),
            None,
        ),
        ("topology, 24 h", lambda: topology(connection, **day), None),
    ]


def _without(module: Any, name: str, run: Callable[[], Any]) -> Callable[[], Any]:
    """``run`` with ``module.name`` (a rollup's read) answering None: what the query reads
    from the rows alone (the rollup's baseline, measured in the same run on the same file)."""

    def call() -> Any:
        saved = getattr(module, name)
        setattr(module, name, lambda *_: None)
        try:
            return run()
        finally:
            setattr(module, name, saved)

    return call


def _size(result: Any) -> str:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int):
        return f"{result[0]} counted, {len(result[1])} rows"  # (a count and a page)
    if isinstance(result, tuple):
        return f"{len(result)} rows"
    for name in ("size", "total"):
        if hasattr(result, name):
            return f"{name} {getattr(result, name)}"
    if hasattr(result, "rows"):
        return f"{len(result.rows)} rows"
    return ""


def _spans(text: str) -> int:
    """``10M`` / ``100M`` / ``2000000`` spans -> traced requests (20 spans each)."""
    scale = {"k": 10**3, "m": 10**6}.get(text[-1:].lower(), 1)
    number = float(text[:-1]) if scale > 1 else float(text)
    return int(number * scale) // 20


def _measure(path: Path, args: argparse.Namespace) -> dict[str, tuple[float, float, str]]:
    """name -> (cold s, warm s, result size) for every case on one database."""
    config = {"memory_limit": args.memory_limit} if args.memory_limit else {}
    probe = duckdb.connect(str(path), read_only=True)
    spans, links, records = probe.execute(
        "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM span_links), "
        "(SELECT count(*) FROM logs)"
    ).fetchone()
    ids = _ids(probe)
    names = [name for name, _, _ in _cases(probe, ids)]
    # The 10,000-span request sits in the middle of the history, so it is older on a larger
    # file, and its id lookup reads the index stored after it (benchmarks/tree_lookup_age.py).
    [(big_start,)] = probe.execute(
        "SELECT epoch_ns(min(start_time)) FROM spans WHERE trace_id = $t", {"t": ids[0]}
    ).fetchall()
    probe.close()
    print(
        f"{path.name}: {spans:,} spans, {links:,} links, {records:,} event records; the "
        f"10,000-span request {(ids[2] - big_start) / HOUR:.1f} h before the newest span; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    out = {}
    for index, name in enumerate(names):
        if args.only and not any(part in name for part in args.only):
            continue
        connection = duckdb.connect(str(path), read_only=True, config=config)  # cold: new
        _, run, _ = _cases(connection, ids)[index]
        started = time.perf_counter()
        result = run()
        cold = time.perf_counter() - started
        warm = min(_timed(run) for _ in range(args.rounds))
        connection.close()
        out[name] = (cold, warm, _size(result))
        print(
            f"  {name:<44} {cold * 1000:7.0f} ms cold {warm * 1000:7.0f} ms warm  {out[name][2]}",
            flush=True,
        )
    return out


def main() -> None:
    remember_missing()  # as `eventscope` does at start-up (collector/_missing_modules.py)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="10M,100M", help="spans in each database, e.g. 10M,100M or 2M"
    )
    parser.add_argument("--rounds", type=int, default=3, help="warm runs per query (best kept)")
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "eventscope-bench"))
    parser.add_argument("--db", action="append", help="measure this file (instead of --sizes)")
    parser.add_argument(
        "--only", action="append", help="run the queries whose name contains this (repeatable)"
    )
    parser.add_argument(
        "--memory-limit",
        default=f"{DEFAULT_DB_MEMORY_LIMIT}B",
        help="DuckDB memory_limit of the timed connections (default: the collector's, "
        f"{DEFAULT_DB_MEMORY_LIMIT // 2**20} MiB; 'none': DuckDB's own default)",
    )
    args = parser.parse_args()
    if args.memory_limit.lower() == "none":
        args.memory_limit = None
    if args.db:
        paths = [Path(db) for db in args.db]
    else:
        paths = [_database(_spans(size), Path(args.folder)) for size in args.sizes.split(",")]
    print(
        f"duckdb {duckdb.__version__}, {os.cpu_count()} cores, memory limit "
        f"{args.memory_limit or 'DuckDB default'}"
    )
    figures = [_measure(path, args) for path in paths]
    names = [name for name, _, _ in _cases_names() if name in figures[0]]
    head = "".join(f" | {p.stem.split('-')[1]} req. warm" for p in paths)
    print(f"\n| query{head} | ratio last/first | target |")
    print("|---" * (len(paths) + 3) + "|")
    for name in names:
        warm = [f[name][1] for f in figures if name in f]
        ratio = f"{warm[-1] / warm[0]:.2f}" if len(warm) > 1 and warm[0] else ""
        target = dict((n, t) for n, _, t in _cases_names())[name]
        verdict = (
            ""
            if target is None
            else f"{target * 1000:.0f} ms " + ("ok" if warm[-1] <= target else "MISSED")
        )
        cells = "".join(f" | {w * 1000:.0f} ms" for w in warm)
        print(f"| {name}{cells} | {ratio} | {verdict} |")


def _cases_names() -> list[Case]:
    return _cases(None, ("", "", 0))  # type: ignore[arg-type]


def _timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
