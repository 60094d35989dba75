"""A module that is not installed is looked for once, not on every DuckDB statement."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Run in a fresh interpreter: the finder stays for the life of a process.
_SCRIPT = textwrap.dedent(
    """
    import importlib.machinery, json, sys
    import duckdb
    from eventscope.collector._missing_modules import remember_missing

    searched = []
    find_spec = importlib.machinery.PathFinder.find_spec

    def counting(name, path=None, target=None):
        if name == "pandas":
            searched.append(name)
        return find_spec(name, path, target)

    importlib.machinery.PathFinder.find_spec = counting
    connection = duckdb.connect()

    def statements():
        for n in range(5):
            assert connection.execute("SELECT $n + 1", {"n": n}).fetchone() == (n + 1,)

    statements()
    before = len(searched)
    assert remember_missing() == {"pandas"}
    assert remember_missing() == {"pandas"}
    finders = [f for f in sys.meta_path if type(f).__name__ == "_Missing"]
    assert len(finders) == 1, finders  # a second call adds no second finder
    searched.clear()
    statements()
    try:
        import pandas  # noqa: F401
    except ImportError as exc:
        assert exc.name == "pandas", exc.name
    else:
        raise AssertionError("pandas imported")
    import pyarrow as pa  # pyarrow looks for pandas too
    assert pa.array([1, 2]).to_pylist() == [1, 2]
    print(json.dumps({"before": before, "after": len(searched)}))
    """
)


def test_duckdb_statements_stop_searching_for_pandas_once_it_is_remembered_missing() -> None:
    try:
        import pandas  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pandas is installed here: nothing is searched for again")
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["before"] >= 5  # at least once a statement, as DuckDB 1.5.5 does
    assert counts["after"] == 0
