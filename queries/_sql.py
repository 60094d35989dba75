"""Read-only SQL over the public schema, for the console, the API and ``eventscope query sql``.

A statement runs only if DuckDB's own parser shows it to be one SELECT over the public
tables and views, calling only side-effect-free functions (an allowlist: ``_sql_check``).
The database instances it runs on also have external access switched off. Its result is
bounded in rows (``limit``) and in bytes (``max_bytes``): rows are fetched a chunk at a
time as JSON text and counting stops at the bound, so a huge result is refused without
ever being held whole.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import duckdb

from ._errors import BadParameter, NotReadOnly, ResultTooLarge
from ._sql_check import check_statement

__all__ = ["DEFAULT_MAX_RESULT_BYTES", "SqlResult", "check_read_only", "run_sql"]

#: Most bytes of JSON a result may hold (its rows as DuckDB renders them).
DEFAULT_MAX_RESULT_BYTES = 32 * 1024 * 1024
#: Rows DuckDB hands over at a time (one of its vectors); the byte bound is checked per chunk.
_CHUNK_ROWS = 2048


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
    """Refuse anything but one SELECT over the public schema with allowed functions.

    Raises:
        BadParameter: the text is empty, too long or not valid SQL (names ``sql``).
        NotReadOnly: it is not one SELECT, or reads or calls something not allowed.
    """
    check_statement(connection, sql)


def run_sql(
    connection: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    limit: int,
    max_bytes: int = DEFAULT_MAX_RESULT_BYTES,
) -> SqlResult:
    """Run one read-only SELECT and return at most ``limit`` rows. Blocking.

    Raises:
        BadParameter: the SQL is invalid or fails (unknown column, type error …).
        NotReadOnly: it is not one SELECT over the public schema (see ``check_read_only``).
        ResultTooLarge: its rows hold more than ``max_bytes`` bytes of JSON.
    """
    check_read_only(connection, sql)
    try:
        # A small streaming buffer: DuckDB computes little more than the chunk asked for.
        connection.execute("SET streaming_buffer_size = '64KiB'")
        relation = connection.sql(sql)
        columns = _unique(relation.columns)
        types = tuple(str(t) for t in relation.types)
        # DuckDB renders every type as JSON itself (nanosecond times, HUGEINT, nested).
        rendered = relation.set_alias("q").limit(limit + 1).project("to_json(q)")
        reader = rendered.to_arrow_reader(_CHUNK_ROWS)
        try:
            texts = _fetch_bounded(reader, max_bytes)
        finally:
            # Now, not when the exception is collected: a refused or interrupted result
            # holds what DuckDB produced ahead of the fetch (~180 MiB for a 1 GB result),
            # and an exception's traceback can live on in a reference cycle for a while.
            reader.close()
    except duckdb.PermissionException as exc:  # external access is off as well
        raise NotReadOnly(
            f"refused: the statement reads local files ({_first_line(exc)}); "
            "only the eventscope tables can be queried"
        ) from exc
    except (duckdb.InterruptException, duckdb.OutOfMemoryException, ResultTooLarge):
        raise  # stopped, or short of memory beside other work: not the statement's fault
    except duckdb.Error as exc:
        raise BadParameter("sql", _first_line(exc)) from exc
    except UnicodeDecodeError as exc:  # DuckDB's message held bytes that are not UTF-8
        raise BadParameter("sql", _first_line_of(exc.object.decode("utf-8", "replace"))) from exc
    decoded = tuple(tuple(json.loads(text).values()) for text in texts[:limit])
    return SqlResult(columns=columns, types=types, rows=decoded, truncated=len(texts) > limit)


def _fetch_bounded(reader: Any, max_bytes: int) -> list[str]:
    """The rows' JSON texts, a chunk at a time, refusing once they pass ``max_bytes``."""
    texts: list[str] = []
    size = 0
    for batch in reader:
        column = batch.column(0)
        size += column.nbytes
        if size > max_bytes:
            # nothing of it stays referenced from this frame by the exception's traceback
            texts.clear()
            del batch, column
            raise ResultTooLarge(
                f"the result holds more than {max_bytes:,} bytes (--max-result-bytes); "
                "select fewer columns or rows (a LIMIT, a narrower WHERE), or aggregate"
            )
        texts.extend(column.to_pylist())
    return texts


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
