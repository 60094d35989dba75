"""DuckDB's cost per span for storing decoded batches, by checkpoint threshold, with and
without vacuum — the measurement behind the collector's checkpoint settings.

One process, no HTTP: decoded Arrow batches of the ingest workload are inserted and
committed as the collector's writer does (groups of requests, one transaction each), then
a final CHECKPOINT. Prints CPU µs per span (all DuckDB threads), the longest commit (a
checkpoint stalls the commit that triggers it) and the file size per span. The baseline
in the same run is DuckDB's own default (vacuum on) at each threshold.

    python benchmarks/checkpoint.py
    python benchmarks/checkpoint.py --thresholds 32,64,256 --rounds 8
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from eventscope.collector._database import Database
from eventscope.collector._settings import Settings
from eventscope.collector._signals import TRACES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from otlp_workload import export_bodies

MIB = 1024 * 1024


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(batches: list, threshold_mib: float, vacuum: bool, group: int, rounds: int) -> str:
    folder = Path(tempfile.mkdtemp(prefix="eventscope-checkpoint-"))
    try:
        path = folder / "bench.duckdb"
        database = Database.open(
            Settings(db=str(path), checkpoint_threshold=max(1, int(threshold_mib * MIB)))
        )
        cursor = database.cursor()
        if vacuum:
            cursor.execute("RESET max_vacuum_tasks")  # DuckDB's default
        spans = 0
        longest = 0.0
        started = _cpu()
        for _ in range(rounds):
            for first in range(0, len(batches), group):
                part = batches[first : first + group]
                began = time.perf_counter()
                cursor.execute("BEGIN TRANSACTION")
                for table, attribute in (("spans", "spans"), ("span_links", "links")):
                    cursor.register(
                        "incoming", pa.concat_tables([getattr(b, attribute) for b in part])
                    )
                    cursor.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                    cursor.unregister("incoming")
                cursor.execute("COMMIT")
                longest = max(longest, time.perf_counter() - began)
                spans += sum(b.spans.num_rows for b in part)
        cursor.execute("CHECKPOINT")
        cpu = _cpu() - started
        database.close()
        size = path.stat().st_size / spans
        return (
            f"{threshold_mib:>6g} MiB  vacuum {'on ' if vacuum else 'off'}  "
            f"{cpu / spans * 1e6:6.2f} µs/span  longest commit {longest:5.2f} s  "
            f"{size:4.0f} B/span on disk"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", default="32,48,80,96,128,256", help="MiB, commas")
    parser.add_argument("--bodies", type=int, default=16, help="request bodies of 8192 spans")
    parser.add_argument("--group", type=int, default=4, help="requests per commit")
    parser.add_argument("--rounds", type=int, default=6, help="times every body is stored")
    args = parser.parse_args()
    batches = [
        TRACES.decode(body, "application/x-protobuf") for body in export_bodies(args.bodies, 8192)
    ]
    spans = sum(b.spans.num_rows for b in batches) * args.rounds
    print(f"{spans:,} spans per run, {args.group} requests per commit, DuckDB 1 thread")
    for threshold in (float(t) for t in args.thresholds.split(",")):
        for vacuum in (True, False):
            print(run(batches, threshold, vacuum, args.group, args.rounds), flush=True)


if __name__ == "__main__":
    main()
