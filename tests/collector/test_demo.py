"""`eventscope demo` runs the collector and a simulated shop whose telemetry lands in it."""

from __future__ import annotations

from pathlib import Path

from collector_process import eventscope


def _rows(db: Path, statement: str) -> list[dict]:
    import json

    result = eventscope("query", "sql", statement, "--db", str(db), "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_demo_fills_the_database_with_a_living_shop(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    run = eventscope(
        "demo", "--port", "0", "--db", str(db), "--orders", "60", "--rate", "60", "--seed", "4"
    )
    assert run.returncode == 0, run.stderr
    assert "done       60 orders sent" in run.stdout

    services = _rows(db, "SELECT DISTINCT service_name FROM spans ORDER BY 1")
    assert [r["service_name"] for r in services] == [
        "analytics",
        "api",
        "billing",
        "email",
        "fraud",
        "inventory",
        "ledger",
        "loyalty",
        "shipping",
    ]
    [requests] = _rows(db, "SELECT count(*) AS n FROM spans WHERE kind = 'server'")
    assert requests["n"] == 60
    # fraud samples 10% of traces: its other deliveries arrive as event records
    [fraud] = _rows(db, "SELECT count(*) AS n FROM deliveries WHERE consumer_group = 'fraud'")
    [payments] = _rows(
        db, "SELECT count(*) AS n FROM publishes WHERE event_type = 'PaymentRequested'"
    )
    [records] = _rows(db, "SELECT count(*) AS n FROM logs WHERE record_kind = 'deliver'")
    assert fraud["n"] == payments["n"] >= 60  # one each, sampled or not
    assert records["n"] > 0
    retried = _rows(db, "SELECT DISTINCT consumer_group FROM spans WHERE attempt > 1 ORDER BY 1")
    assert {r["consumer_group"] for r in retried} <= {"inventory", "loyalty"}
    assert retried, "the flaky inventory database makes some first attempts fail"
