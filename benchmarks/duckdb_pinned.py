"""The memory DuckDB can neither evict nor free, by how rows reach a table (no eventscope code).

DuckDB 1.5.5 keeps a 256 KiB buffer of insert ids for every row group that took rows from
more than one transaction into one vector of 2,048 rows, and per-row delete ids for every
row group with deleted rows, until the row group goes (a reopen frees the first kind, not
the second). This is why the collector's writer reopens the database file now and then
(docs/collector.md, *Memory*). Each case writes a new file under a 256 MiB limit, then
finds the least memory limit DuckDB accepts (what it cannot evict), in MiB:

- appends, one commit per checkpoint (each row group has one writer): the baseline;
- appends, two and five commits per checkpoint (the writer's case: many commits a row group);
- the same after closing and opening the file again;
- deletes of every tenth row of 100 full row groups, then of whole row groups.

    python benchmarks/duckdb_pinned.py            # ~30 s; prints each case and the ratios

With DuckDB 1.5.6, 2.0.1 or 1.4.4 every case prints 2 MiB (checked 2026-12-05).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

LIMIT_MIB = 256
COMMITS = 400
ROWS = 20_000  # a commit: ten vectors less a few rows, so two commits share a vector


def _pinned(connection: duckdb.DuckDBPyConnection) -> int:
    """The least memory limit (MiB, in steps of 2) DuckDB accepts now."""
    try:
        for mib in range(2, LIMIT_MIB + 2, 2):
            try:
                connection.execute(f"SET memory_limit = '{mib}MiB'")
                return mib
            except duckdb.Error:
                continue
        return LIMIT_MIB
    finally:
        connection.execute(f"SET memory_limit = '{LIMIT_MIB}MiB'")


def _open(path: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(path))
    connection.execute(f"SET memory_limit = '{LIMIT_MIB}MiB'")
    connection.execute("SET checkpoint_threshold = '100GB'")  # checkpoints only when told
    connection.execute("SET max_vacuum_tasks = 0")  # as the collector runs it
    return connection


def appends(folder: Path, commits_per_checkpoint: int) -> tuple[int, int, int]:
    """(row groups, MiB pinned after the appends, MiB pinned after a reopen)."""
    path = folder / f"appends-{commits_per_checkpoint}.duckdb"
    connection = _open(path)
    connection.execute("CREATE TABLE t (a BIGINT, b VARCHAR, t TIMESTAMP_NS)")
    for n in range(COMMITS):
        connection.execute(
            "INSERT INTO t SELECT i, 'x' || (i % 1000), make_timestamp_ns(i) "
            f"FROM range({n * (ROWS - 7)}, {(n + 1) * (ROWS - 7)}) r(i)"
        )
        if (n + 1) % commits_per_checkpoint == 0:
            connection.execute("CHECKPOINT")
    [(groups,)] = connection.execute(
        "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('t')"
    ).fetchall()
    return int(groups), _pinned(connection), _reopened(connection, path)


def deletes(folder: Path) -> tuple[int, int, int]:
    """MiB pinned: after scattered deletes in 100 row groups (+ checkpoint), after deleting
    the first 50 row groups whole, after a reopen."""
    path = folder / "deletes.duckdb"
    connection = _open(path)
    connection.execute("CREATE TABLE t AS SELECT i FROM range(100 * 122880) r(i)")
    connection.execute("DELETE FROM t WHERE i % 10 = 0")
    connection.execute("CHECKPOINT")
    scattered = _pinned(connection)
    connection.execute("DELETE FROM t WHERE i < 50 * 122880")
    connection.execute("CHECKPOINT")
    whole = _pinned(connection)
    return scattered, whole, _reopened(connection, path)


def _reopened(connection: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Close, open again, read the table: MiB pinned then."""
    connection.close()
    connection = _open(path)
    try:
        connection.execute("SELECT count(*) FROM t").fetchall()
        return _pinned(connection)
    finally:
        connection.close()


def main() -> None:
    print(f"duckdb {duckdb.__version__}, memory limit {LIMIT_MIB} MiB, {COMMITS} commits")
    with tempfile.TemporaryDirectory(prefix="duckdb-pinned-") as folder:
        base = None
        for per in (1, 2, 5):
            groups, pinned, after = appends(Path(folder), per)
            base = base or pinned
            print(
                f"appends, {per} commit(s) per checkpoint: {groups} row groups, "
                f"{pinned} MiB pinned ({pinned / base:.1f}x the one-commit case, "
                f"{pinned * 1024 / groups:.0f} KiB a row group), {after} MiB after a reopen"
            )
        scattered, whole, reopened = deletes(Path(folder))
        print(
            f"deletes: every tenth row of 100 row groups {scattered} MiB pinned; "
            f"the first 50 row groups deleted whole {whole} MiB; after a reopen {reopened} MiB"
        )


if __name__ == "__main__":
    main()
