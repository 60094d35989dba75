"""What one evaluation of the ledger series of /metrics costs, against the queries a user
runs for the same answer (``eventscope query lost --lookback 1h`` + ``query duplicates
--since 1h``), on the 10-million-span workload of ``benchmarks/queries.py``.

    flock -x /work/cpu.lock python benchmarks/ledger_series.py [--requests 500000]

Prints, per look-back window: the first evaluation (empty state: it settles the whole
window), a steady one 15 s later (what every ``--metrics-interval`` costs), the baseline
queries in the same process, their ratio, and what rendering /metrics costs (a scrape only
copies that text). The evaluation reads the window, not the file: its cost follows the
window. The workload's data rate is ~120 spans/s (about 0.4 M spans an hour).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))

from eventscope.collector._ledger_metrics import evaluate
from eventscope.collector._ledger_state import LedgerState
from eventscope.queries import duplicate_events, lost_events
from queries_workload import REQUEST_INTERVAL_NS

from queries import _database

GRACE_NS = 300 * 10**9
HOUR_NS = 3600 * 10**9


def _best(rounds: int, run: object) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best


def _measure(connection: duckdb.DuckDBPyConnection, now: int, lookback: int, rounds: int) -> None:
    def first() -> LedgerState:
        state = LedgerState(500)
        evaluate(connection, state, now_ns=now, grace_ns=GRACE_NS, lookback_ns=lookback)
        return state

    settled = first()

    def steady() -> None:
        state = LedgerState.from_json(settled.to_json(), 500)
        evaluate(
            connection, state, now_ns=now + 15 * 10**9, grace_ns=GRACE_NS, lookback_ns=lookback
        )

    def queries() -> None:
        lost_events(connection, grace_ns=GRACE_NS, lookback_ns=lookback, until_ns=now)
        duplicate_events(connection, since_ns=now - lookback, until_ns=now)

    first_s = _best(rounds, first)
    steady_s = _best(rounds, steady)
    queries_s = _best(rounds, queries)
    render_s = _best(rounds, settled.render)
    lines = settled.render().count("\n")
    print(
        f"{lookback // 60 // 10**9:>7}m {first_s:>8.3f} {steady_s:>9.3f} {queries_s:>10.3f} "
        f"{steady_s / queries_s:>6.2f} {render_s * 1000:>10.2f} {lines:>7}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500_000, help="traced requests (×20 spans)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "eventscope-bench"))
    args = parser.parse_args()
    path = _database(args.requests, Path(args.folder), "v1.5.0")
    connection = duckdb.connect(str(path), read_only=True)
    spans = connection.execute("SELECT count(*) FROM spans").fetchone()[0]  # type: ignore[index]
    last = connection.execute("SELECT epoch_ns(max(start_time)) FROM spans").fetchone()[0]  # type: ignore[index]
    now = last + 60 * 10**9
    print(f"{path.name}: {spans:,} spans; one request every {REQUEST_INTERVAL_NS / 1e6:.0f} ms")
    print(
        f"{'lookback':>8} {'first s':>8} {'steady s':>9} {'queries s':>10} {'ratio':>6} "
        f"{'render ms':>10} {'series':>7}"
    )
    for lookback in (15 * 60 * 10**9, HOUR_NS, 4 * HOUR_NS):
        _measure(connection, now, lookback, args.rounds)
    connection.close()


if __name__ == "__main__":
    main()
