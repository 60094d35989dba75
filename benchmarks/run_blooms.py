"""Would a Bloom filter per id-index run let a large tree skip runs? (An experiment.)

The 10,000-node request of ``benchmarks/queries.py`` looks up its 2,857 traces in the id
index (queries/id_index.py ``id_range``): one semi-join over every run newer than the tree,
to learn whether any of them has a row later on. Tempo skips blocks with a Bloom filter
per block. This script builds one per run in numpy (``--bits`` a key, ``--hashes``
positions by double hashing of DuckDB's ``hash``), probes the tree's keys, and times the
lookup as eventscope runs it against the same lookup restricted to the runs the filters
flag (``run IN …``), checking both give the same answer. The file's index must be keyed
with kinds (queries/id_index.py ``index_key``; ``benchmarks/merge_index.py`` keys an older
file again).

    python benchmarks/run_blooms.py queries-5000000-v6-….duckdb [--bits 10] [--hashes 7]
"""

from __future__ import annotations

import argparse
import hashlib
import time

import duckdb
import numpy as np
import numpy.typing as npt

Bits = npt.NDArray[np.uint8]
Keys = npt.NDArray[np.uint64]

_TREE_TRACES = """
SELECT DISTINCT linked_trace_id FROM span_links WHERE linked_trace_id = $t OR trace_id = $t
UNION SELECT DISTINCT trace_id FROM span_links WHERE linked_trace_id = $t
"""
_LOOKUP = """
SELECT epoch_ns(min(first) FILTER (WHERE kind IN (1, 4))),
       epoch_ns(max(last) FILTER (WHERE kind IN (1, 4)))
FROM eventscope_ids
WHERE key IN (SELECT hash(id) >> 2 FROM wanted) AND last >= make_timestamp_ns($after) {runs}
"""


def _positions(keys: Keys, size: int, hashes: int) -> list[Keys]:
    second = (keys >> np.uint64(32)) | np.uint64(1)
    return [(keys + np.uint64(i) * second) % np.uint64(size) for i in range(hashes)]


def _build(keys: Keys, bits_per_key: int, hashes: int) -> tuple[int, Bits]:
    size = max(64, len(keys) * bits_per_key)
    bits = np.zeros((size + 7) // 8, dtype=np.uint8)
    for at in _positions(keys, size, hashes):
        np.bitwise_or.at(
            bits,
            (at >> np.uint64(3)).astype(np.int64),
            np.uint8(1) << (at & np.uint64(7)).astype(np.uint8),
        )
    return size, bits


def _may_hold(keys: Keys, size: int, bits: Bits, hashes: int) -> bool:
    found = np.ones(len(keys), dtype=bool)
    for at in _positions(keys, size, hashes):
        byte = bits[(at >> np.uint64(3)).astype(np.int64)]
        found &= (byte >> (at & np.uint64(7)).astype(np.uint8)) & 1 == 1
    return bool(found.any())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--bits", type=int, default=10, help="filter bits per key")
    parser.add_argument("--hashes", type=int, default=7)
    args = parser.parse_args()
    connection = duckdb.connect(args.db, read_only=True)
    big = hashlib.md5(b"bigt").hexdigest()  # the workload's POST /imports trace
    [(start,)] = connection.execute(
        "SELECT epoch_ns(min(start_time)) FROM spans WHERE trace_id = $t", {"t": big}
    ).fetchall()
    traces = [row[0] for row in connection.execute(_TREE_TRACES, {"t": big}).fetchall()]
    connection.execute("CREATE TEMP TABLE wanted AS SELECT unnest($ids) AS id", {"ids": traces})
    after = start - 600 * 10**9  # the tree's lower bound: its root minus clock skew
    runs = connection.execute("SELECT run, count(*) FROM eventscope_ids GROUP BY run ORDER BY run")
    sizes = runs.fetchall()
    started = time.perf_counter()
    filters = {}
    for run, _ in sizes:
        keys = connection.execute("SELECT key FROM eventscope_ids WHERE run = $r", {"r": run})
        filters[run] = _build(keys.fetchnumpy()["key"].astype(np.uint64), args.bits, args.hashes)
    built = time.perf_counter() - started
    megabytes = sum(bits.nbytes for _, bits in filters.values()) / 2**20
    print(
        f"{len(traces):,} traces looked up; {sum(n for _, n in sizes):,} index rows in "
        f"{len(sizes)} runs; filters of {args.bits} bits a key, {args.hashes} hashes: "
        f"{megabytes:.0f} MiB, built in {built:.1f} s"
    )
    # a trace's index key (queries/id_index.py index_key: prefix 0, the hash's top 62 bits)
    probe = connection.execute("SELECT hash(id) >> 2 AS k FROM wanted").fetchnumpy()["k"]
    probe = probe.astype(np.uint64)
    for _ in range(3):
        started = time.perf_counter()
        every = connection.execute(_LOOKUP.format(runs=""), {"after": after}).fetchall()
        plain = time.perf_counter() - started
        started = time.perf_counter()
        flagged = [
            r for r, (size, bits) in filters.items() if _may_hold(probe, size, bits, args.hashes)
        ]
        probing = time.perf_counter() - started
        only = f"AND run IN ({', '.join(str(r) for r in flagged) or 'NULL'})"
        started = time.perf_counter()
        some = connection.execute(_LOOKUP.format(runs=only), {"after": after}).fetchall()
        restricted = time.perf_counter() - started
        print(
            f"every run {plain * 1000:.0f} ms | probing {probing * 1000:.1f} ms flags "
            f"{len(flagged)} of {len(sizes)} runs, lookup in those {restricted * 1000:.0f} ms | "
            f"same answer: {every == some}"
        )


if __name__ == "__main__":
    main()
