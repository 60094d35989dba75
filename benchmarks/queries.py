"""Read-side benchmark: every query of ``eventscope.queries`` on 10 million spans.

Generates (once, cached in the temp folder) a DuckDB file of 500,000 traced requests —
10 million spans, 1 million events, 5 consumer groups, links across traces, known
anomalies — plus 50,000 sampled-out requests as event records and one 10,000-span
request (``benchmarks/queries_workload.py``). Then times each query cold (a fresh
read-only connection: empty DuckDB buffers; the OS page cache is not dropped) and warm
(the best of ``--rounds`` more runs on that connection), against the targets.

    python benchmarks/queries.py                  # 10M spans; ~2 min to generate once
    python benchmarks/queries.py --requests 50000 # a quicker 1M-span run
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
from eventscope.queries import (
    duplicate_events,
    fanout_tree,
    handler_latency,
    lost_events,
    orphan_deliveries,
    out_of_order,
    requests,
    topology,
    version_mix,
)
from eventscope.queries.schema import SCHEMA_SQL
from queries_workload import ingest

WORKLOAD_VERSION = "6"  # 6: through the collector's writer, in time order, one rate


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
    """(the 10,000-span request's trace, a request in the middle of the day, the last time)."""
    big_trace, end = connection.execute(
        "SELECT trace_id, (SELECT epoch_ns(max(start_time)) FROM spans) FROM spans "
        "WHERE name = 'POST /imports'"
    ).fetchone()
    small_trace = connection.execute(
        "SELECT trace_id FROM spans WHERE name = 'POST /orders' ORDER BY start_time LIMIT 1 "
        "OFFSET (SELECT count(*) // 2 FROM spans WHERE name = 'POST /orders')"
    ).fetchone()[0]
    return big_trace, small_trace, end


Case = tuple[str, Callable[[], Any], float | None]


def _cases(connection: duckdb.DuckDBPyConnection, ids: tuple[str, str, int]) -> list[Case]:
    big_trace, small_trace, end = ids
    hour = 3600 * 10**9
    return [
        ("fanout_tree, 10,000-node request", lambda: fanout_tree(connection, big_trace), 0.3),
        ("fanout_tree, 20-span request", lambda: fanout_tree(connection, small_trace), None),
        ("fanout_tree, 10,000 nodes, horizon 1h",
         lambda: fanout_tree(connection, big_trace, horizon_ns=hour), None),
        ("handler_latency by handler", lambda: handler_latency(connection), 1.0),
        ("handler_latency by group, 1h buckets",
         lambda: handler_latency(connection, group_by="consumer_group", bucket_ns=hour), None),
        ("lost_events (grace 5m)", lambda: lost_events(connection), 2.0),
        ("duplicate_events", lambda: duplicate_events(connection), 2.0),
        ("orphan_deliveries", lambda: orphan_deliveries(connection), None),
        ("out_of_order", lambda: out_of_order(connection), None),
        ("version_mix", lambda: version_mix(connection), None),
        ("requests, newest 50", lambda: requests(connection), None),
        ("requests, last 30 min by settle time",
         lambda: requests(connection, since_ns=end - hour // 2, sort="-settle"), None),
        ("topology", lambda: topology(connection), None),
    ]  # fmt: skip


def _size(result: Any) -> str:
    if isinstance(result, tuple):
        return f"{len(result)} rows"
    for name in ("size", "total"):
        if hasattr(result, name):
            return f"{name} {getattr(result, name)}"
    if hasattr(result, "rows"):
        return f"{len(result.rows)} rows"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500_000, help="traced requests (×20 spans)")
    parser.add_argument("--rounds", type=int, default=3, help="warm runs per query (best kept)")
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "eventscope-bench"))
    parser.add_argument("--only", help="run the queries whose name contains this")
    parser.add_argument(
        "--memory-limit", help="DuckDB memory_limit for the timed connections, e.g. 1GiB"
    )
    args = parser.parse_args()
    config = {"memory_limit": args.memory_limit} if args.memory_limit else {}
    path = _database(args.requests, Path(args.folder))
    probe = duckdb.connect(str(path), read_only=True)
    spans, links, records = probe.execute(
        "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM span_links), "
        "(SELECT count(*) FROM logs)"
    ).fetchone()
    ids = _ids(probe)
    names = [name for name, _, _ in _cases(probe, ids)]
    probe.close()
    load = os.getloadavg()[0]
    print(f"{spans:,} spans, {links:,} links, {records:,} event records; duckdb "
          f"{duckdb.__version__}, {os.cpu_count()} cores, load average {load:.1f}, memory "
          f"limit {args.memory_limit or 'DuckDB default'}")  # fmt: skip
    print(f"{'query':<40} {'cold':>8} {'warm':>8} {'target':>7}  result")
    for index, name in enumerate(names):
        if args.only and args.only not in name:
            continue
        connection = duckdb.connect(str(path), read_only=True, config=config)  # cold: new
        _, run, target = _cases(connection, ids)[index]
        started = time.perf_counter()
        result = run()
        cold = time.perf_counter() - started
        warm = min(_timed(run) for _ in range(args.rounds))
        connection.close()
        verdict = "" if target is None else (" ok" if warm <= target else " MISSED")
        target_text = "" if target is None else f"{target:.1f} s"
        print(f"{name:<40} {cold * 1000:6.0f}ms {warm * 1000:6.0f}ms {target_text:>7}"
              f"{verdict}  {_size(result)}", flush=True)  # fmt: skip


def _timed(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
