"""Read-only SQL over the public schema, for the console, the API and ``eventscope query sql``.

A statement is accepted only if DuckDB parses it as exactly one SELECT. The database
instances it runs on have external access switched off, so a SELECT that reads local files
(``read_csv``, ``FROM 'file.parquet'``, ``glob``) fails there too; that failure is reported
as refused, like a write.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import duckdb

from ._errors import BadParameter, NotReadOnly

__all__ = ["SqlResult", "check_read_only", "run_sql"]

_MISSING_TABLE = re.compile(r"Table with name (.+?) does not exist")
_DATABASE_FILE = re.compile(r'Cannot attach "|Database ".+" has multiple tables')
_PATH_LIKE = re.compile(r"[/\\~]|\.(csv|tsv|parquet|json|jsonl|ndjson|txt|gz|zst|db|duckdb)$", re.I)


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlResult:
    """Rows of one read-only query; values are JSON-compatible (times as ISO-8601 text)."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    #: True when more rows existed than the limit allowed.
    truncated: bool

    def as_dicts(self) -> list[dict[str, Any]]:
        """One dict per row, keyed by column name."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def to_json(self) -> dict[str, Any]:
        """The JSON the API returns: columns with types, rows as objects, truncation."""
        return {
            "columns": [
                {"name": n, "type": t} for n, t in zip(self.columns, self.types, strict=True)
            ],
            "rows": self.as_dicts(),
            "truncated": self.truncated,
        }


def check_read_only(connection: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but a single SELECT.

    Raises:
        BadParameter: the text is empty or is not valid SQL (names ``sql``).
        NotReadOnly: it is not exactly one SELECT statement.
    """
    if not sql or not sql.strip():
        raise BadParameter("sql", "is empty; give one SELECT statement")
    try:
        statements = connection.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadParameter("sql", _first_line(exc)) from exc
    if len(statements) != 1:
        raise NotReadOnly(f"refused: {len(statements)} statements given; run one SELECT at a time")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise NotReadOnly(
            f"refused: only SELECT statements are allowed (this is {kind.name}); "
            "the database is read-only here"
        )


def run_sql(connection: duckdb.DuckDBPyConnection, sql: str, *, limit: int) -> SqlResult:
    """Run one read-only SELECT and return at most ``limit`` rows. Blocking.

    Raises:
        BadParameter: the SQL is invalid or fails (unknown column, type error …).
        NotReadOnly: it writes, or reads local files.
    """
    check_read_only(connection, sql)
    try:
        relation = connection.sql(sql)
        columns = _unique(relation.columns)
        types = tuple(str(t) for t in relation.types)
        # DuckDB renders every type as JSON itself (nanosecond times, HUGEINT, nested).
        rows = relation.set_alias("q").limit(limit + 1).project("to_json(q)").fetchall()
    except duckdb.PermissionException as exc:
        raise NotReadOnly(
            f"refused: the statement reads local files ({_first_line(exc)}); "
            "only the eventscope tables can be queried"
        ) from exc
    except duckdb.InterruptException:
        raise
    except duckdb.CatalogException as exc:
        # With external access off, `FROM 'file.csv'` is not even tried as a file scan;
        # DuckDB reports a missing table named like a path. Say what really happened.
        missing = _MISSING_TABLE.search(str(exc))
        if missing and _PATH_LIKE.search(missing.group(1)):
            raise NotReadOnly(
                f"refused: the statement reads local files ({missing.group(1)}); "
                "only the eventscope tables can be queried"
            ) from exc
        raise BadParameter("sql", _first_line(exc)) from exc
    except duckdb.Error as exc:
        _refuse_database_file(_first_line(exc), exc)
        raise BadParameter("sql", _first_line(exc)) from exc
    except UnicodeDecodeError as exc:
        # DuckDB's message held bytes that are not UTF-8. Seen: `FROM 'its-own-file.duckdb'`
        # on the collector, which DuckDB tries to attach as a database ("Cannot attach \x80…").
        message = _first_line_of(exc.object.decode("utf-8", "replace"))
        _refuse_database_file(message, exc)
        raise BadParameter("sql", message) from exc
    decoded = tuple(tuple(json.loads(row[0]).values()) for row in rows[:limit])
    return SqlResult(columns=columns, types=types, rows=decoded, truncated=len(rows) > limit)


def _refuse_database_file(message: str, exc: BaseException) -> None:
    """`FROM 'x.duckdb'` on the database's own file: DuckDB reads it as a database (other
    files are refused by the disabled external access; this one is already open)."""
    if _DATABASE_FILE.search(message):
        raise NotReadOnly(
            f"refused: the statement reads a database file ({message}); "
            "only the eventscope tables can be queried"
        ) from exc


def _unique(names: list[str]) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}_{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return tuple(out)


def _first_line(exc: BaseException) -> str:
    return _first_line_of(str(exc)) or type(exc).__name__


def _first_line_of(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
