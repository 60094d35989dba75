"""The `eventscope` command: version, settings errors, read-only `query sql` in every form."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import eventscope.collector as collector_package
import pytest
from collector_process import Collector, eventscope
from otlp_requests import PROTOBUF, span, traces


def test_version_is_printed_by_the_command_and_the_module() -> None:
    from importlib.metadata import version

    assert eventscope("--version").stdout.strip() == f"eventscope {version('eventscope')}"
    module = subprocess.run(
        [sys.executable, "-m", "eventscope.collector", "--version"], capture_output=True, text=True
    )
    assert module.stdout.strip() == f"eventscope {version('eventscope')}"


def test_packages_install_under_the_eventscope_namespace_only(tmp_path: Path) -> None:
    probe = (
        "import importlib.util as u; "
        "print([n for n in ('collector', 'instrumentation', 'ui', 'queries') if u.find_spec(n)]); "
        "print([n for n in ('collector', 'instrumentation', 'ui', 'queries') "
        "if u.find_spec('eventscope.' + n)])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path
    )
    bare, namespaced = result.stdout.splitlines()
    assert bare == "[]"
    assert namespaced == "['collector', 'instrumentation', 'ui', 'queries']"


def test_the_public_surface_of_the_collector_changes_only_on_purpose() -> None:
    assert sorted(collector_package.__all__) == sorted(
        [
            "RUNNER_OPTIONS",
            "BadRequest",
            "ConfigError",
            "LogBatch",
            "Overloaded",
            "PayloadTooLarge",
            "QueryTimeout",
            "Settings",
            "SpanWriter",
            "StorageError",
            "TraceBatch",
            "Unauthorized",
            "UnsupportedMediaType",
            "__version__",
            "create_app",
            "decode_logs",
            "decode_traces",
            "parse_logs",
            "parse_traces",
            "serve",
        ]
    )


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"EVENTSCOPE_PORT": "abc"}, "EVENTSCOPE_PORT: 'abc' is not an integer"),
        ({"EVENTSCOPE_MAX_BODY_BYTES": "lots"}, "EVENTSCOPE_MAX_BODY_BYTES: 'lots' is not a size"),
        ({"EVENTSCOPE_PORT": "70000"}, "port: 70000 is not a TCP port"),
        ({"EVENTSCOPE_DB_MEMORY_LIMIT": "all"}, "EVENTSCOPE_DB_MEMORY_LIMIT: 'all' is not a size"),
    ],
)
def test_a_malformed_setting_is_one_line_naming_it_and_exit_code_2(env, words, tmp_path) -> None:
    result = eventscope("serve", "--db", str(tmp_path / "x.duckdb"), env=env)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"eventscope: error: {words}")


def test_a_missing_folder_for_the_database_is_a_clear_error(tmp_path: Path) -> None:
    result = eventscope("serve", "--db", str(tmp_path / "nowhere" / "x.duckdb"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--port", "--ui-port"])
def test_a_port_in_use_is_one_line_and_leaves_no_database_behind(flag, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ports = {"--port": "0", "--ui-port": "0", flag: port}
        result = eventscope(
            "serve",
            "--db",
            str(tmp_path / "x.duckdb"),
            "--decode-workers",
            "0",
            *(word for item in ports.items() for word in item),
        )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"eventscope: error: cannot listen on 127.0.0.1:{port}: ")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def stored(collector: Collector) -> Collector:
    assert collector.post("/v1/traces", traces(span("alpha"), span("beta")), PROTOBUF)[0] == 200
    return collector


REFUSED = [
    ("INSERT INTO spans SELECT * FROM spans", "only SELECT statements are allowed"),
    ("DROP TABLE spans", "only SELECT statements are allowed"),
    ("COPY spans TO '/tmp/leak.csv'", "only SELECT statements are allowed"),
    ("SELECT * FROM read_csv('/etc/passwd')", "the table function read_csv() is not allowed"),
    ("SELECT * FROM '/etc/hostname'", "'/etc/hostname' is not one of the eventscope tables"),
    ("SELECT 1; DELETE FROM spans", "2 statements given"),
    ("ATTACH '/tmp/other.duckdb'", "only SELECT statements are allowed"),
]


@pytest.mark.parametrize(("statement", "words"), REFUSED)
def test_query_sql_refuses_writes_and_file_reads_through_the_server(stored, statement, words):
    result = eventscope("query", "sql", statement, "--url", stored.url)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert words in line
    assert len(stored.sql("SELECT * FROM spans")) == 2


@pytest.mark.parametrize(("statement", "words"), REFUSED)
def test_query_sql_refuses_writes_and_file_reads_on_the_file(stored, statement, words):
    assert stored.stop() == 0
    result = eventscope("query", "sql", statement, "--db", str(stored.db))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert words in line
    assert len(stored.sql("SELECT * FROM spans", via_url=False)) == 2


def test_query_sql_prints_a_table_json_and_csv(stored: Collector) -> None:
    statement = "SELECT name, kind, length(span_id) AS id_len FROM spans ORDER BY name"
    table = eventscope("query", "sql", statement, "--url", stored.url).stdout.splitlines()
    assert table[0].split() == ["name", "kind", "id_len"]
    assert table[2].split() == ["alpha", "internal", "16"]
    as_json = json.loads(
        eventscope("query", "sql", statement, "--url", stored.url, "--format", "json").stdout
    )
    assert as_json == [
        {"name": "alpha", "kind": "internal", "id_len": 16},
        {"name": "beta", "kind": "internal", "id_len": 16},
    ]
    csv = eventscope("query", "sql", statement, "--url", stored.url, "--format", "csv").stdout
    assert csv.splitlines() == ["name,kind,id_len", "alpha,internal,16", "beta,internal,16"]


@pytest.mark.parametrize("via_url", [True, False])
def test_query_sql_refuses_to_read_the_database_file_itself(stored, via_url) -> None:
    # DuckDB would try to attach the file; its error message is not even valid UTF-8.
    if not via_url:
        assert stored.stop() == 0
    where = ["--url", stored.url] if via_url else ["--db", str(stored.db)]
    result = eventscope("query", "sql", f"SELECT * FROM '{stored.db}'", *where)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"refused: '{stored.db}' is not one of the eventscope tables" in line
    assert len(stored.sql("SELECT * FROM spans", via_url=via_url)) == 2


def test_query_sql_on_a_file_in_use_points_to_the_url(stored: Collector) -> None:
    result = eventscope("query", "sql", "SELECT 1", "--db", str(stored.db))
    assert result.returncode == 2
    assert "open in a running collector" in result.stderr


def test_query_sql_errors_name_the_problem(stored: Collector) -> None:
    result = eventscope("query", "sql", "SELECT nope FROM spans", "--url", stored.url)
    assert result.returncode == 2
    assert 'sql: Binder Error: Referenced column "nope" not found' in result.stderr
    result = eventscope("query", "sql", "SELECT 1", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach a collector at http://127.0.0.1:9" in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "limit"),
    [
        (("--db-memory-limit", "300MiB"), {}, 300 * 2**20),
        ((), {"EVENTSCOPE_DB_MEMORY_LIMIT": "300MiB"}, 300 * 2**20),
        ((), {}, 448 * 2**20),  # bounded by default, whatever the size of the data
    ],
)
def test_the_database_memory_limit_is_set_by_flag_or_environment(
    args, env, limit, tmp_path
) -> None:
    server = Collector(tmp_path / "limited.duckdb", *args, env=env).start()
    try:
        metrics = server.get("/metrics")[1].splitlines()
        [line] = [m for m in metrics if m.startswith("eventscope_db_memory_limit_bytes ")]
    finally:
        server.stop()
    assert line == f"eventscope_db_memory_limit_bytes {limit}"
