"""Deliveries and publishes for one query (:class:`Sources`), over :mod:`._source_sql`.

The public views ``deliveries`` and ``publishes`` say the same in one SQL text each; the
queries use :class:`Sources` instead, which is much faster on large files: consumer spans
that carry their publish time are read straight from ``spans`` (one scan, columns pruned,
zone maps on time), while the few without it (stock instrumentations, batch spans) are
fetched first, resolved through their producer spans, and registered as a small Arrow
table that the main query unions in.

Names of registered tables are generated here, never taken from users; every value from
users is a bound parameter.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ._scratch import Scratch, id_table
from ._source_sql import (
    ALL_TIME,
    DELIVERY_SELECT,
    FAR_FUTURE_NS,
    LEDGER_FALLBACK,
    RECORD_COLUMNS,
    RESOLVE,
    WINDOW,
    SpanSource,
    needy_spans,
    publishes_sql,
    record_deliveries,
    record_span_keys,
    records_without_publish_time,
    span_columns,
    span_deliveries,
)
from .latency_rollup import all_published
from .ledger_keys import RowTimes, stretches

__all__ = ["ALL_TIME", "Sources", "id_table", "publishes_sql", "window_params"]


_GROUPS = """
SELECT DISTINCT coalesce(consumer_group, service_name) FROM spans
WHERE kind = 'consumer' AND start_time >= make_timestamp_ns($since)
  AND start_time < make_timestamp_ns($until)
UNION
SELECT DISTINCT coalesce(consumer_group, service_name) FROM logs
WHERE record_kind = 'deliver' AND time >= make_timestamp_ns($since)
  AND time < make_timestamp_ns($until)
"""


# Whether the window holds `deliver` / `publish` event records (a look at a small table).
_IN_WINDOW = WINDOW.format(column="time")
_RECORDS = f"""
SELECT EXISTS (SELECT 1 FROM logs WHERE record_kind = 'deliver' AND {_IN_WINDOW}{{ids}}),
       EXISTS (SELECT 1 FROM logs WHERE record_kind = 'publish' AND {_IN_WINDOW}{{ids}})
"""


# Up to this many times are written into the SQL as literals (planned, not joined).
_LITERAL_TIMES = 512
# The columns of the spans read at a few times (``Sources(at=…)``): what the ledger's
# queries read of deliveries and publishes, and the ids where records must find their
# spans or spans their producers.
_AT_COLUMNS = frozenset(
    "kind start_time message_id consumer_group service_name outcome status_code attempt "
    "event_type destination correlation_id publish_time".split()
)
# Of publishes, what the ledger's queries show of them (≈25 ms less than all of the
# above for an hour's lost events' publishes at 100 M spans a day).
_AT_PUBLISH_COLUMNS = frozenset(
    "kind start_time message_id service_name event_type destination correlation_id".split()
)
_SPAN_IDS = frozenset({"trace_id", "span_id"})
_IDS = _SPAN_IDS | {"parent_span_id"}


#: The copies of candidates' spans and event records (queries/candidate_spans.py).
_COPIES = "eventscope_candidate_spans"
_RECORD_COPIES = "eventscope_candidate_records"
_RECORD_SELECT = ", ".join(RECORD_COLUMNS)


def _copied_or_not(times: pa.Table) -> list[tuple[str, pa.Table]]:
    """``times`` split by where their spans are read: the copies of candidates' spans
    (queries/candidate_spans.py) where column ``copied`` says so, ``spans`` otherwise."""
    if "copied" not in times.column_names:
        return [("spans", times)]
    compute: Any = pc  # (boolean masks)
    copied = compute.fill_null(times["copied"], False)
    return [
        (_COPIES, times.filter(copied).select(["t"])),
        ("spans", times.filter(compute.invert(copied)).select(["t"])),
    ]


#: The times a side reads raw spans at are read in up to this many stretches of time.
_STRETCHES = 8
#: Times this close (ns) are read in one stretch.
_STRETCH_GAP_NS = 60 * 10**9


def _stretches(times: pa.Table, most: int) -> list[tuple[int, int, pa.Table]]:
    """``times`` (column ``t``) cut where they are furthest apart (gaps of more than
    :data:`_STRETCH_GAP_NS`) into at most ``most`` stretches (``ledger_keys.stretches``),
    each as (first, last, its times): each is read with its own range. (One ``OR`` of
    ranges prunes no row group in DuckDB 1.5.5 — 125 ms where the two ranges read alone
    took 12 — and an ``IN`` list joined from a table none at all: the times read raw — the
    newest minutes', late ones', those before the copies — scanned the whole window, a
    day's spans for a day.)"""
    values = sorted(t for t in times.column("t").cast(pa.int64()).to_pylist() if t is not None)
    found = []
    start = 0
    for _, high in stretches([(t, t + _STRETCH_GAP_NS) for t in values], most):
        end = bisect.bisect_right(values, high, lo=start)
        some = values[start:end]
        found.append((some[0], some[-1], pa.table({"t": pa.array(some, pa.timestamp("ns"))})))
        start = end
    return found


def window_params(since_ns: int | None, until_ns: int | None) -> dict[str, int]:
    """The ``$since`` / ``$until`` parameters of the source SQL (open ends filled in)."""
    return {
        "since": 0 if since_ns is None else since_ns,
        "until": FAR_FUTURE_NS if until_ns is None else until_ns,
    }


class Sources:
    """The delivery and publish rows of one query, as SQL over registered helper tables.

    Use as a context manager on the cursor the query runs on::

        with Sources(cursor, since_ns=…, until_ns=…) as src:
            cursor.execute(f"SELECT … FROM ({src.deliveries}) d", src.params)

    ``event_ids`` restricts both to those event ids (the tree's marks; the first publishes
    of the topology's few events), and the search for the spans their event records may
    stand for to those records' traces. ``params`` holds the
    window parameters the SQL texts need. ``published``: the caller knows that every
    delivery of the window carries its publish time, so the window is not searched for
    those that do not (also taken where the latency rollup has no gap in the window).
    ``at``: only the deliveries and publishes that started at the times the ledger keys
    name (a window's few rows: :mod:`.ledger_keys`, :mod:`._lost_keys`): their spans are read
    once into a temporary table (from the copies of :mod:`.candidate_spans` at the times
    marked ``copied``, from ``spans`` at the others), which the rest reads, with only the
    columns the ledger
    reads (:data:`_AT_COLUMNS`; the others NULL): each column of a span read at a few
    thousand times costs ≈5-20 ms an hour at 100 M spans a day, the random ids most
    (read where records must find their spans, or ``publish_ids``: the caller shows them);
    ``at_columns``: more columns of deliveries the caller reads.
    """

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        event_ids: Iterable[str] | pa.Array[Any] | None = None,
        published: bool = False,
        at: RowTimes | None = None,
        publish_ids: bool = False,
        at_columns: Iterable[str] = (),
    ) -> None:
        self._cursor = cursor
        self.params: dict[str, Any] = window_params(since_ns, until_ns)
        self._event_ids: pa.Table | None = None
        if isinstance(event_ids, pa.Array):  # (distinct, no null: as the caller holds them)
            self._event_ids = pa.table({"event_id": event_ids.cast(pa.string())})
        elif event_ids is not None:
            self._event_ids = id_table(event_ids)
        self._published = published
        self._at_times = at
        self._publish_ids = publish_ids
        self._at_columns = frozenset(at_columns)
        self._scratch = Scratch(cursor)
        self._id_filter = ""
        self._resolved: str | None = None
        self._deliveries: Callable[[], str] | str = ""
        self._publishes: Callable[[], str] | str = ""

    def register(self, table: pa.Table) -> str:
        """A temporary copy of ``table`` until :meth:`close`; returns its generated name."""
        return self._scratch.table(table)

    def __enter__(self) -> Sources:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _at(
        self, times: pa.Table | None, kind: str, columns: frozenset[str], records: bool
    ) -> tuple[str, SpanSource, tuple[SpanSource, ...] | None, str]:
        """For one side (``kind``: consumer or producer spans): the window of its event
        records, where its spans are read from, where the spans its records may stand
        for are, and the table its records are read from. At ``times``: the spans at
        those times (their ``columns``), read once into a temporary table, and so the
        event records (where ``records``: the window holds some of this side); wherever a
        record read at one of ``times`` has its span, that span has a key row of the same
        event and group there too (queries/ledger_keys.py), or no event id."""
        if times is None:
            return WINDOW, ("spans", WINDOW), None, "logs"
        record_kind = "deliver" if kind == "consumer" else "publish"
        # the spans (and records) at times where they are copied from the copies, the
        # others raw
        none = WINDOW.format(column="start_time") + " AND false"  # (names the parameters)
        parts, record_parts = [], []
        for table, part in _copied_or_not(times):
            # the raw spans in stretches, each a range scan (zone maps); the copies, small,
            # in one (in stretches, an hour's 66 publishes took nine scans: 14 → 35 ms)
            stretched = _stretches(part, 1 if table == _COPIES else _STRETCHES)
            for low, high, some in stretched:
                where = (
                    f"{WINDOW} AND {{column}} >= make_timestamp_ns({low}) "
                    f"AND {{column}} <= make_timestamp_ns({high}) "
                    f"AND {{column}} IN ({self._times(some)})"
                )
                parts.append(
                    f"SELECT {span_columns(columns)} FROM {table} "
                    f"WHERE kind = '{kind}' AND {where.format(column='start_time')}"
                )
                record_parts.append(
                    f"SELECT {_RECORD_SELECT} FROM "
                    f"{_RECORD_COPIES if table == _COPIES else 'logs'} "
                    f"WHERE record_kind = '{record_kind}' AND {where.format(column='time')}"
                )
        spans = self._scratch.query(
            " UNION ALL ".join(parts) or f"SELECT {span_columns(columns)} FROM spans WHERE {none}",
            self.params,
        )
        # the records likewise: a day's records at the candidates' times were the whole
        # day's event records scanned (twice: the records, and the traces of their spans)
        records_from, records_window = "logs", WINDOW + " AND false"
        if records and record_parts:
            records_from = self._scratch.query(" UNION ALL ".join(record_parts), self.params)
            records_window = WINDOW
        here = (spans, WINDOW)  # (all of its rows: the window names the parameters)
        assert self._at_times is not None
        if not self._at_times.idless:
            return records_window, here, (here,), records_from
        idless = ("spans", WINDOW + " AND message_id IS NULL")
        return records_window, here, (here, idless), records_from

    def _twins(self, kind: str) -> str:
        """The SQL of the (trace, span) of the window's stored spans that its event
        records of ``kind`` may stand for, read once into a temporary table: the queries
        that read deliveries or publishes two or three times (the overview, out of order)
        searched the window's spans for them each time (≈55 ms an hour at 100 M spans a
        day). With ``event_ids``, only the spans of those events' records' traces: the
        records of other events are not read (the topology's first publishes of an hour's
        10,600 events at 100 M spans a day: the hour's publish records' traces searched,
        37 ms)."""
        sql = record_span_keys(kind, WINDOW, None, records_filter=self._id_filter)
        keys = self._scratch.query(sql, self.params)
        return f"SELECT trace_id, span_id FROM {keys}"

    def _times(self, times: pa.Table) -> str:
        """``times`` (column ``t``) as the SQL of an IN list: literal where they are few
        (DuckDB then filters the scan itself; each value costs ≈12 µs to plan), else a
        temporary table (joined after the scan)."""
        if times.num_rows > _LITERAL_TIMES:
            return f"SELECT t FROM {self.register(times)}"
        values = times.column("t").cast(pa.int64()).to_pylist()
        return ", ".join(f"make_timestamp_ns({t})" for t in values if t is not None) or "NULL"

    def _build(self) -> None:
        if self._event_ids is not None:
            ids = self.register(self._event_ids)
            self._id_filter = f" AND message_id IN (SELECT event_id FROM {ids})"
        id_filter = self._id_filter
        # without event records in the window, no anti-join of records against spans
        # (with ``event_ids``, of those events only: the topology's first publishes of an
        # hour's 2,900 duplicated events at 100 M spans a day have none, and the search for
        # the spans records stand for read the hour's producer spans, 23 ms)
        records = _RECORDS.format(ids=id_filter)
        delivers, publishes = self._cursor.execute(records, self.params).fetchone() or (1, 1)
        # the latency rollup knows where every delivery carries its publish time
        if not self._published:
            bounds = (self.params["since"], self.params["until"])
            self._published = all_published(self._cursor, *bounds)
        at = self._at_times
        # the ids: where records must find their spans, spans their producers
        delivered = _AT_COLUMNS | self._at_columns | (_SPAN_IDS if delivers else set())
        records_window, spans_from, span_sources, records_from = self._at(
            None if at is None else at.delivered,
            "consumer",
            delivered if self._published else delivered | _IDS,
            bool(delivers),
        )
        published = self._at(
            None if at is None else at.published,
            "producer",
            _AT_PUBLISH_COLUMNS | (_SPAN_IDS if publishes or self._publish_ids else set()),
            bool(publishes),
        )

        def publishes_text() -> str:  # (its records' spans read only when it is used)
            text = publishes_sql(
                published[0],
                published[2],
                records=bool(publishes),
                spans_from=published[1],
                span_keys=self._twins("publish") if publishes and at is None else None,
                records_from=published[3],
            )
            return f"SELECT * FROM ({text}) WHERE true{id_filter}"

        self._publishes = publishes_text

        self._deliveries = functools.partial(
            self._deliveries_sql,
            spans_from,
            (records_window, span_sources, records_from),
            bool(delivers),
            id_filter,
        )

    def _deliveries_sql(
        self,
        spans_from: SpanSource,
        records: tuple[str, tuple[SpanSource, ...] | None, str],
        delivers: bool,
        id_filter: str,
    ) -> str:
        """The SQL of the window's deliveries: consumer spans (of ``spans_from``), the
        ``deliver`` records (``records``: their window, where the spans they may stand for
        are, the table they are read from; ``delivers``: the window holds some) and the
        deliveries without a publish time resolved through their producers. Built on first
        use, as the publishes are: a read of publishes alone searched the window's spans
        for those its delivery records may stand for (≈40 ms an hour at 100 M spans a day)."""
        at = self._at_times
        records_window, span_sources, records_from = records
        table, window = spans_from
        parts = [f"SELECT * FROM ({span_deliveries(window, table)}) WHERE true{id_filter}"]
        if delivers:
            twins = self._twins("deliver") if at is None else None
            text = record_deliveries(records_window, span_sources, twins, records_from)
            parts.append(f"SELECT * FROM ({text}) WHERE true{id_filter}")
        missing = []
        without = records_without_publish_time(records_window, records_from)
        if (
            not self._published
            and self._cursor.execute(f"{without} LIMIT 1", self.params).fetchone()
        ):
            missing.append(without)
        needy = None
        if not self._published:
            needy = self._cursor.execute(needy_spans(window, table), self.params).to_arrow_table()
        if needy is not None and needy.num_rows:
            resolved = self._cursor.execute(
                RESOLVE.format(needy=self.register(needy))
            ).to_arrow_table()
            self._resolved = self.register(resolved)
            parts.append(f"SELECT * FROM {self._resolved} WHERE true{id_filter}")
            missing.append(f"SELECT message_id FROM {self._resolved} WHERE publish_time IS NULL")
        union = " UNION ALL ".join(parts)
        if not missing:  # every delivery knows its publish time: no join needed
            select = DELIVERY_SELECT.format(publish_time="u.publish_time")
            return f"SELECT {select} FROM ({union}) u"
        fallback = LEDGER_FALLBACK.format(
            publishes=publishes_sql(ALL_TIME), missing=" UNION ALL ".join(missing)
        )
        select = DELIVERY_SELECT.format(publish_time="coalesce(u.publish_time, g.first_publish)")
        return (
            f"SELECT {select} FROM ({union}) u "
            f"LEFT JOIN ({fallback}) g ON g.message_id = u.message_id"
        )

    @property
    def published(self) -> bool:
        """Whether every delivery of the window is known to carry its publish time (the
        caller said so, or the latency rollup has no gap there)."""
        return self._published

    @property
    def scratch(self) -> Scratch:
        """The temporary tables of this query (dropped with the others at the end)."""
        return self._scratch

    @property
    def deliveries(self) -> str:
        """The SQL of the window's deliveries (built on first use)."""
        if callable(self._deliveries):
            self._deliveries = self._deliveries()
        return self._deliveries

    @property
    def publishes(self) -> str:
        """The SQL of the window's publishes (built on first use)."""
        if callable(self._publishes):
            self._publishes = self._publishes()
        return self._publishes

    def consumer_groups(self) -> list[str]:
        """Every consumer group with a delivery in the window, sorted (a cheap scan of two
        low-cardinality columns; the bit masks of the ledger queries are built on it)."""
        sql = _GROUPS
        _ = self.deliveries  # (resolving the deliveries without a publish time finds groups)
        if self._resolved is not None:
            sql += (
                f" UNION SELECT DISTINCT coalesce(consumer_group, service_name) "
                f"FROM {self._resolved}"
            )
        return sorted(row[0] for row in self._cursor.execute(sql, self.params).fetchall())

    def close(self) -> None:
        """Drop the helper tables."""
        self._scratch.close()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
