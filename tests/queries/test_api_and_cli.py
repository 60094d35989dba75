"""The three interfaces agree: the JSON API of a running collector, `eventscope query` with
``--url`` and with ``--db``, and the Python API, on the synthetic workload."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import known_workload
import pytest
from aiohttp.test_utils import TestClient, TestServer
from eventscope.collector import Settings, create_app
from eventscope.collector._cli import main
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
from known_workload import Workload

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def _rows(records: tuple[Any, ...]) -> dict[str, Any]:
    return {"count": len(records), "rows": [r.to_json() for r in records]}


def expected(db: duckdb.DuckDBPyConnection, workload: Workload) -> dict[str, Any]:
    """API path -> the Python API's answer, as JSON."""
    t1 = workload.trace("t1")
    return {
        "requests": requests(db).to_json(),
        "requests?sort=-size&limit=2": requests(db, sort="-size", limit=2).to_json(),
        f"tree/{t1}": fanout_tree(db, t1).to_json(),
        "tree/c3": fanout_tree(db, "c3").to_json(),
        "tree/c3?horizon=5ms": fanout_tree(db, "c3", horizon_ns=5_000_000).to_json(),
        "latency?group_by=consumer_group": handler_latency(db, group_by="consumer_group").to_json(),
        "events/lost": _rows(lost_events(db)),
        "events/duplicates": _rows(duplicate_events(db)),
        "events/orphans": _rows(orphan_deliveries(db)),
        "events/out-of-order": _rows(out_of_order(db)),
        "events/versions": _rows(version_mix(db)),
        "topology": topology(db).to_json(),
    }


async def _serve(path: Path, workload: Workload, use: Callable[[TestClient], Any]) -> Any:
    app = create_app(Settings(db=str(path), decode_workers=0))
    async with TestServer(app) as server, TestClient(server) as client:
        for signal, body in (("traces", workload.traces), ("logs", workload.logs)):
            response = await client.post(f"/v1/{signal}", data=body, headers=PROTOBUF)
            assert response.status == 200  # answered after the commit: no waiting needed
        return await use(client)


async def test_the_json_api_answers_what_the_python_api_answers(
    tmp_path: Path, db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    want = expected(db, workload)
    assert want["tree/c3?horizon=5ms"]["size"] < want["tree/c3"]["size"]  # the horizon cuts

    async def ask(client: TestClient) -> dict[str, Any]:
        got = {}
        for path in want:
            response = await client.get(f"/api/{path}")
            assert response.status == 200, (path, await response.text())
            got[path] = await response.json()
        return got

    assert await _serve(tmp_path / "api.duckdb", workload, ask) == want


BAD = [
    ("events/lost?grace=5%20minutes", 400, "grace: '5 minutes' is not a duration"),
    ("requests?since=yesterday", 400, "since: 'yesterday' is not a time"),
    ("requests?since=1h&until=2h", 400, "since: must be before until"),
    ("latency?group_by=colour", 400, "group_by: must be one of"),
    ("requests?colour=red", 400, "colour: is not a parameter here"),
    ("requests?limit=0", 400, "limit: must be between 1 and 10000"),
    ("requests?sort=colour", 400, "sort: must be one of"),
    ("events/lost?subscriptions=orders", 400, "subscriptions: 'orders' is not SUBJECT:GROUP"),
    ("tree/no-such-id", 404, "root: no span has"),
    ("tree/c3?horizon=soon", 400, "horizon: 'soon' is not a duration"),
    # Times and durations beyond DuckDB's nanosecond timestamps (were 500s).
    ("requests?since=9999-12-31T23:59:59Z", 400, "since: '9999-12-31T23:59:59Z' is out of range"),
    ("latency?until=0001-01-01", 400, "until: '0001-01-01' is out of range"),
    (
        "events/lost?lookback=1000000000000000000000000s",
        400,
        "lookback: '1000000000000000000000000s' is too long",
    ),
]


async def test_bad_parameters_are_answered_with_their_name_and_what_is_wrong(
    tmp_path: Path, workload: Workload
) -> None:
    async def ask(client: TestClient) -> list[tuple[str, int, str]]:
        answers = []
        for path, _, _ in BAD:
            response = await client.get(f"/api/{path}")
            answers.append((path, response.status, (await response.json())["error"]))
        return answers

    answers = await _serve(tmp_path / "bad.duckdb", workload, ask)
    for (path, status, words), (_, got_status, error) in zip(BAD, answers, strict=True):
        assert got_status == status and words in error, (path, got_status, error)


BAD_PAGES = [
    ("/requests?page=99999999999999999999", "page: must be at most 1,000,000,000"),
    ("/requests?page=0", "page: must be at least 1"),
    ("/handlers?since=0001-01-01", "since: &#39;0001-01-01&#39; is out of range"),
    ("/events?until=9999999999999999999", "until: &#39;9999999999999999999&#39; is out of range"),
]


async def test_bad_parameters_on_pages_are_a_400_page_saying_what_is_wrong(
    tmp_path: Path, workload: Workload
) -> None:
    async def ask(client: TestClient) -> list[tuple[int, str]]:
        return [
            (response.status, await response.text())
            for response in [await client.get(path) for path, _ in BAD_PAGES]
        ]

    answers = await _serve(tmp_path / "pages.duckdb", workload, ask)
    for (path, words), (status, html) in zip(BAD_PAGES, answers, strict=True):
        assert status == 400 and words in html, (path, status, html[-2000:])


async def test_bodies_that_are_not_utf8_are_a_400_not_a_crash(
    tmp_path: Path, workload: Workload
) -> None:
    async def ask(client: TestClient) -> list[tuple[int, str]]:
        answers = []
        for path, content_type in [
            ("/api/sql", "application/json"),
            ("/api/sql", "text/plain"),
            ("/login", "application/x-www-form-urlencoded"),
        ]:
            response = await client.post(
                path, data=b"\xff\xfe", headers={"Content-Type": content_type}
            )
            answers.append((response.status, await response.text()))
        return answers

    [json_sql, text_sql, login] = await _serve(tmp_path / "utf8.duckdb", workload, ask)
    assert json_sql[0] == text_sql[0] == 400 and "body: is not text in utf-8" in json_sql[1]
    assert login == (400, "the form is not valid UTF-8 form data")


async def test_sql_answers_hold_integers_wider_than_64_bits_and_nan_as_json_null(
    tmp_path: Path, db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    # The API's encoder (orjson) writes neither: the first goes through json.dumps, and
    # the second is null, which a browser's JSON.parse reads (NaN is not JSON).
    statements = [
        "SELECT 170141183460469231731687303715884105727 AS wide, count(*) AS spans FROM spans",
        "SELECT exp(1000.0) - exp(1000.0) AS nothing, exp(1000.0) AS endless, 1.5 AS half",
    ]

    async def ask(client: TestClient) -> list[str]:
        answers = []
        for statement in statements:
            response = await client.post("/api/sql", json={"q": statement})
            assert response.status == 200, (statement, await response.text())
            answers.append(await response.text())
        return answers

    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    wide, nan = [
        json.loads(a, parse_constant=strict)
        for a in await _serve(tmp_path / "wide.duckdb", workload, ask)
    ]
    [(spans,)] = db.execute("SELECT count(*) FROM spans").fetchall()
    assert wide["rows"] == [{"wide": 2**127 - 1, "spans": spans}]
    assert nan["rows"] == [{"nothing": None, "endless": None, "half": 1.5}]


async def _store_only(client: TestClient) -> None:
    """Ask the collector nothing: the test reads the file it committed."""


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    main(["query", *argv])
    return capsys.readouterr().out


CLI = {
    "requests": ["requests"],
    "tree/c3": ["tree", "c3"],
    "tree/c3?horizon=5ms": ["tree", "c3", "--horizon", "5ms"],
    "latency?group_by=consumer_group": ["latency", "--group-by", "consumer_group"],
    "events/lost": ["lost"],
    "events/duplicates": ["duplicates"],
    "events/orphans": ["orphans"],
    "events/out-of-order": ["out-of-order"],
    "events/versions": ["versions"],
    "topology": ["topology"],
}


async def test_the_cli_prints_the_api_json_from_a_collector_and_from_the_file(
    tmp_path: Path,
    db: duckdb.DuckDBPyConnection,
    workload: Workload,
    capsys: pytest.CaptureFixture[str],
) -> None:
    want = expected(db, workload)
    path = tmp_path / "cli.duckdb"

    async def ask(client: TestClient) -> dict[str, Any]:
        url = str(client.make_url("/")).rstrip("/")
        got = {}
        for key, argv in CLI.items():
            out = await asyncio.to_thread(_cli, capsys, *argv, "--url", url, "--format", "json")
            got[key] = json.loads(out)
        return got

    remote = await _serve(path, workload, ask)
    local = {
        key: json.loads(_cli(capsys, *argv, "--db", str(path), "--format", "json"))
        for key, argv in CLI.items()
    }
    wanted = {key: want[key] for key in CLI}
    assert remote == wanted
    assert local == wanted


def test_cli_tables_fit_80_columns_and_name_the_lost_events(
    tmp_path: Path,
    workload: Workload,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # an 80-column terminal
    path = tmp_path / "tables.duckdb"
    asyncio.run(_serve(path, workload, _store_only))
    for argv in CLI.values():
        out = _cli(capsys, *argv, "--db", str(path))
        assert max(len(line) for line in out.splitlines()) <= 80, (argv, out)
    lost = _cli(capsys, "lost", "--db", str(path))
    assert [line.split()[2:] for line in lost.splitlines()[2:]] == [
        ["e3", "email", "never"],
        ["e6", "ledger", "dead"],
        ["e16", "email", "never"],
    ]
    csv = _cli(capsys, "duplicates", "--db", str(path), "--format", "csv")
    assert csv.splitlines()[0] == "first,event_id,group,kind,n"


def test_a_bad_flag_value_is_one_line_and_exit_code_2(
    tmp_path: Path, workload: Workload, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "flags.duckdb"
    asyncio.run(_serve(path, workload, _store_only))
    with pytest.raises(SystemExit) as exited:
        main(["query", "lost", "--grace", "soon", "--db", str(path)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "grace: 'soon' is not a duration" in err


async def test_the_collectors_grace_setting_is_the_default_of_the_api_and_the_pages(
    tmp_path: Path,
) -> None:
    fresh = known_workload.build(base_ns=time.time_ns() - 60 * 10**9)  # a minute old
    for grace, lost in ((None, False), (30 * 10**9, True)):
        settings = Settings(db=str(tmp_path / f"grace-{grace}.duckdb"), decode_workers=0)
        if grace is not None:
            settings = dataclasses.replace(settings, grace=grace)
        app = create_app(settings)
        async with TestServer(app) as server, TestClient(server) as client:
            for signal, body in (("traces", fresh.traces), ("logs", fresh.logs)):
                response = await client.post(f"/v1/{signal}", data=body, headers=PROTOBUF)
                assert response.status == 200
            found = await (await client.get("/api/events/lost")).json()
            assert (found["count"] > 0) is lost, (grace, found)
            page = await (await client.get("/events?kind=lost&since=1h")).text()
            email = [row for row in found["rows"] if row["consumer_group"] == "email"]
            assert (bool(email) and email[0]["event_id"] in page) is lost
            # a request's own grace still wins
            found = await (await client.get("/api/events/lost?grace=10m")).json()
            assert found["count"] == 0


def test_cli_tables_cut_only_what_does_not_fit_and_csv_holds_whole_values(
    tmp_path: Path,
    workload: Workload,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "whole.duckdb"
    asyncio.run(_serve(path, workload, _store_only))
    handler = "billing.handlers.on_orderplaced"  # 31 characters
    monkeypatch.setenv("COLUMNS", "160")  # a wide terminal: nothing needs cutting
    latency = _cli(capsys, "latency", "--db", str(path))
    assert handler in latency.split()
    statement = "SELECT repeat('x', 40) AS wide, 'e' || 17 AS short"
    assert ("x" * 40) in _cli(capsys, "sql", statement, "--db", str(path)).split()
    monkeypatch.setenv("COLUMNS", "60")  # a narrow one: the widest column gives way, ids not
    narrow = _cli(capsys, "lost", "--db", str(path)).splitlines()
    assert max(map(len, narrow)) <= 60
    assert [line.split()[2] for line in narrow[2:]] == ["e3", "e6", "e16"]
    # CSV: ISO 8601 times to the nanosecond, full names, never cut, whatever the terminal
    monkeypatch.setenv("COLUMNS", "40")
    rows = list(csv.reader(_cli(capsys, "lost", "--db", str(path), "--format", "csv").splitlines()))
    assert rows[0] == ["time", "event_type", "event_id", "group", "reason"]
    lost = lost_events(duckdb.connect(str(path), read_only=True))
    assert rows[1] == [
        _iso(lost[0].published_ns),
        lost[0].event_type,
        "e3",
        "email",
        "never_delivered",
    ]
    rows = list(
        csv.reader(_cli(capsys, "latency", "--db", str(path), "--format", "csv").splitlines())
    )
    assert handler in [row[0] for row in rows]


def _iso(ns: int) -> str:
    seconds, rest = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest:09d}Z"


def test_without_a_database_the_cli_names_the_demos_file_when_there_is_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for demo, words in ((False, "pass --db PATH"), (True, "pass --db eventscope-demo.duckdb")):
        if demo:
            duckdb.connect("eventscope-demo.duckdb").close()
        with pytest.raises(SystemExit) as exited:
            main(["query", "lost"])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no database at 'eventscope.duckdb'" in err, err
        assert words in err, err
