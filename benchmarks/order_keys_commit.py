"""What the order keys' fingerprints cost a commit (queries/order_keys.py).

The writer keys every successful delivery that names an entity and a sequence inside the
commit's transaction. Since 2026-12-07 the keys are 128-bit fingerprints (MD5, as UUIDs)
instead of 32-bit hashes, so that out of order is read from the keys alone. This times
the insert of one commit's keys both ways, alternating, on the same rows: deliveries of
the queries benchmark's traffic (a commit of it holds ≈11,000), each insert in its own
transaction into a table of its own.

    python benchmarks/order_keys_commit.py                 # ~10 s; 11,000 deliveries
    python benchmarks/order_keys_commit.py --rows 50000 --rounds 40

Prints the median and best of each and the ratio fingerprints / hashes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import duckdb
import pyarrow as pa
from eventscope.queries.order_keys import fingerprint_sql

_GROUP = "coalesce(consumer_group, service_name)"
_HASHED = f"""
INSERT INTO hashed
SELECT start_time, (hash(entity_id, {_GROUP}) % 4294967296)::UINTEGER,
       (hash(message_id, {_GROUP}) % 4294967296)::UINTEGER, entity_sequence
FROM rows WHERE outcome = 'ok'
"""
_FINGERPRINTED = f"""
INSERT INTO fingerprinted
SELECT start_time, {fingerprint_sql("entity_id", _GROUP)},
       {fingerprint_sql("message_id", _GROUP)}, entity_sequence
FROM rows WHERE outcome = 'ok'
"""


def _rows(count: int) -> pa.Table:
    """``count`` deliveries as the benchmark's traffic names them (entity ids like
    ``0000border-13239``, 32-hex event ids, five consumer groups)."""
    groups = ["billing", "shipping", "email", "analytics", "audit"]
    return pa.table(
        {
            "start_time": pa.array(
                [1_796_638_196_000_000_000 + n * 1000 for n in range(count)], pa.timestamp("ns")
            ),
            "message_id": [f"{n * 2654435761 % 2**128:032x}" for n in range(count)],
            "entity_id": [f"{n // 10 % 10000:04d}border-{n // 10}" for n in range(count)],
            "entity_sequence": pa.array([n % 10 + 1 for n in range(count)], pa.int64()),
            "consumer_group": [groups[n % 5] for n in range(count)],
            "service_name": [f"{groups[n % 5]}-svc" for n in range(count)],
            "outcome": ["ok"] * count,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=11_000, help="deliveries a commit")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    connection = duckdb.connect(config={"threads": 1})
    connection.execute(
        "CREATE TABLE hashed (start_time TIMESTAMP_NS, entity_key UINTEGER, "
        "event_key UINTEGER, entity_sequence BIGINT)"
    )
    connection.execute(
        "CREATE TABLE fingerprinted (start_time TIMESTAMP_NS, entity_key UUID, "
        "event_key UUID, entity_sequence BIGINT)"
    )
    connection.register("rows", _rows(args.rows))
    times: dict[str, list[float]] = {"hashes": [], "fingerprints": []}
    for n in range(args.rounds):
        order = [("hashes", _HASHED), ("fingerprints", _FINGERPRINTED)]
        for name, sql in order if n % 2 else order[::-1]:
            connection.execute("BEGIN TRANSACTION")
            start = time.perf_counter()
            connection.execute(sql)
            times[name].append((time.perf_counter() - start) * 1000)
            connection.execute("COMMIT")
    print(f"a commit's keys, {args.rows:,} deliveries, {args.rounds} rounds (ms):")
    for name, values in times.items():
        print(f"  {name:13} median {statistics.median(values):6.2f}  best {min(values):6.2f}")
    ratio = statistics.median(times["fingerprints"]) / statistics.median(times["hashes"])
    print(f"  fingerprints / hashes: {ratio:.2f}")


if __name__ == "__main__":
    main()
