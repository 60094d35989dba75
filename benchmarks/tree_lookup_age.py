"""What the 10,000-node tree's id lookup costs as the tree ages: the same lookup of its
traces (queries/id_index.py ``id_range``, as ``fanout_tree`` runs it) bounded by the
tree's own start, and by the bound a tree of each ``--hours`` age would have.

A run of the id index holds the ids of one stretch of arrival, sorted by key, so the
tree's 2,857 trace ids fall into every row group of every run not skipped by the bound
(the rows' last start): the lookup reads what the index holds from the tree on. The
benchmark's tree sits in the middle of the generated history (1.2 h before the newest span
at 10 M spans, 11.8 h at 100 M). Prints each bound's best of ``--rounds`` and its ratio to
the bound of the youngest age.

Last, the same lookup also bounded above: only index rows that began by the last start of
a span with the tree's correlation id plus ``SKEW_NS`` (an experiment, not what eventscope
does). That is what a design that kept a trace's *continuation rows* (rows that begin long
after the trace's first) apart would leave to the main lookup: the runs newer than the
tree would be skipped by their zone maps on ``first``, but not the run that holds the tree
(sorted by key, it spans hours). Both answers are checked to be the same range here.

    python benchmarks/tree_lookup_age.py FILE.duckdb [--hours 1.2,6]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import duckdb
from eventscope.collector._missing_modules import remember_missing
from eventscope.queries._scratch import Scratch
from eventscope.queries._tree_fetch import SKEW_NS
from eventscope.queries.id_index import _prefixed_sql, id_range, index_state, runs

_HOUR = 3600 * 10**9
# The tree's traces: those holding its correlation id from its root on (what collect's
# first round looks up), each with its last span carrying that id (the latest of them is
# what the reader knows from the correlation's own lookup before it looks the traces up).
_TRACES = """
SELECT trace_id, epoch_ns(max(start_time)) FROM spans
WHERE correlation_id = (SELECT any_value(correlation_id) FROM spans WHERE trace_id = $t)
  AND start_time >= make_timestamp_ns($since)
GROUP BY trace_id
"""


def _best(call: Callable[[], object], rounds: int) -> tuple[float, object]:
    """The best of ``rounds`` calls after one that warms, in ms, and the last answer."""
    best, answer = float("inf"), None
    for _ in range(rounds + 1):
        started = time.perf_counter()
        answer = call()
        best = min(best, time.perf_counter() - started)
    return best * 1000, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db")
    parser.add_argument("--hours", default="1.2,6", help="ages to compare, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    remember_missing()
    connection = duckdb.connect(args.db, read_only=True)
    tree = connection.execute("SELECT trace_id FROM spans WHERE name = 'POST /imports'")
    trace = tree.fetchone()[0]  # type: ignore[index]
    root, end = connection.execute(
        "SELECT (SELECT epoch_ns(min(start_time)) FROM spans WHERE trace_id = $t), "
        "epoch_ns(max(start_time)) FROM spans",
        {"t": trace},
    ).fetchone()  # type: ignore[misc]
    found = connection.execute(_TRACES, {"t": trace, "since": root - SKEW_NS}).fetchall()
    traces = [row[0] for row in found]
    last = max(row[1] for row in found)
    state = index_state(connection)
    stored = runs(connection)
    print(
        f"{args.db}: {len(traces):,} traces, the tree {(end - root) / _HOUR:.1f} h before the "
        f"newest span; index runs (rows): {', '.join(f'{n:,}' for _, n in stored)}"
    )
    bounds = [(f"the tree's own (root - skew, {(end - root) / _HOUR:.1f} h)", root - SKEW_NS)]
    for hours in sorted((float(h) for h in args.hours.split(",")), reverse=True):
        bounds.append((f"as for a tree {hours:g} h old", end - int(hours * _HOUR) - SKEW_NS))
    scratch = Scratch(connection)
    table = scratch.ids(sorted(traces), "id")
    timed = []
    for label, after in bounds:

        def lookup(after: int = after) -> object:
            return id_range(
                connection, ("trace", "linked"), traces, table, after, keyed=state.keyed
            )

        timed.append((label, _best(lookup, args.rounds)[0]))
    label = "own bound, and rows begun by its last correlated start + skew"
    key = _prefixed_sql("hash(id)", "0")  # traces' and link targets' key prefix
    above = (
        "SELECT epoch_ns(min(first)), epoch_ns(max(last)) FROM ("
        f"SELECT first, last FROM eventscope_ids WHERE key IN (SELECT {key} FROM {table}) "
        "AND last >= make_timestamp_ns($after) AND first <= make_timestamp_ns($upto) "
        f"UNION ALL SELECT first, last FROM eventscope_ids_recent "
        f"WHERE key IN (SELECT {key} FROM {table}))"
    )
    bound = {"after": root - SKEW_NS, "upto": last + SKEW_NS}
    ms, hull = _best(lambda: connection.execute(above, bound).fetchone(), args.rounds)
    same = hull == id_range(
        connection, ("trace", "linked"), traces, table, root - SKEW_NS, keyed=state.keyed
    )
    timed.append((f"{label} ({'same' if same else 'DIFFERENT'} range)", ms))
    scratch.close()
    youngest = timed[len(bounds) - 1][1]
    for label, ms in timed:
        print(f"  {label:<72} {ms:7.1f} ms   ratio {ms / youngest:.2f}")


if __name__ == "__main__":
    main()
