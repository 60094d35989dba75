"""A reproduction of a DuckDB 1.5.5 deadlock, without eventscope: lowering ``threads``
while a DuckLake commit runs hangs DuckDB's thread pool for good.

    python benchmarks/relaunch_deadlock.py            # DuckLake, DuckDB catalog file: hangs
    python benchmarks/relaunch_deadlock.py --table    # a plain table: runs on (no deadlock)

One thread inserts into a DuckLake table and commits, in a loop; another switches
``threads`` between 2 and 1 on another connection of the same database. ``SET threads``
takes effect when a query ends (``ClientContext::CleanupInternal`` calls
``TaskScheduler::RelaunchThreads``); lowering the count joins every worker thread while
holding the scheduler's ``thread_lock``. A DuckLake commit runs its catalog queries on an
internal connection, and its ``PhysicalTransaction`` task may run on a worker thread: when
that nested query ends, its cleanup calls ``RelaunchThreads`` on the worker, which waits
for ``thread_lock``, which the joining thread holds while it waits for that worker. gdb
shows both in ``TaskScheduler::RelaunchThreads`` (the ducklake extension's copy of it on
the worker). Typically within a few hundred commits. With ``--table`` the same loop on a
plain table runs on: no nested query ends on a worker. eventscope therefore lowers the
count only when nothing runs in DuckDB (collector/_database.py, ``Database._inside``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import duckdb


def _extension(module: str, name: str) -> str:
    package = __import__(module)
    folder = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    return str(folder / f"{name}.duckdb_extension")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", action="store_true", help="a plain table instead of a lake")
    parser.add_argument("--seconds", type=float, default=60, help="give up after this long")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="relaunch-")
    config = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    db = duckdb.connect(os.path.join(folder, "main.duckdb"), config=config)
    table = "t"
    if not args.table:
        db.execute(f"INSTALL '{_extension('duckdb_extension_ducklake', 'ducklake')}'")
        db.execute("LOAD ducklake")
        db.execute(f"ATTACH 'ducklake:{folder}/meta.ducklake' AS lake (DATA_PATH '{folder}/d/')")
        table = "lake.t"
    db.execute(f"CREATE TABLE {table} (i BIGINT, s VARCHAR)")
    db.execute("SET threads = 1")
    done = {"commits": 0, "toggles": 0}

    def commit() -> None:
        cursor = db.cursor()
        while True:
            cursor.execute("BEGIN")
            cursor.execute(f"INSERT INTO {table} SELECT range, 'x' FROM range(1000)")
            cursor.execute("COMMIT")
            done["commits"] += 1

    def toggle() -> None:
        cursor = db.cursor()
        while True:
            for threads in (2, 1):
                cursor.execute(f"SET threads = {threads}")
                cursor.execute("SELECT 1").fetchall()  # its end relaunches the pool
            done["toggles"] += 1

    for work in (commit, toggle):
        threading.Thread(target=work, daemon=True).start()
    last, still, started = dict(done), 0, time.monotonic()
    while time.monotonic() - started < args.seconds:
        time.sleep(1)  # watching two threads from outside; no event to wait on
        still = still + 1 if done == last else 0
        last = dict(done)
        if still >= 5:
            print(
                f"DEADLOCK after {done['commits']} commits and {done['toggles']} toggles "
                f"(pid {os.getpid()}: gdb -p {os.getpid()} -batch -ex 'thread apply all bt')"
            )
            os._exit(1)  # the hung threads cannot be joined
    print(
        f"no deadlock in {args.seconds:g} s: {done['commits']} commits, {done['toggles']} toggles"
    )
    os._exit(0)


if __name__ == "__main__":
    main()
