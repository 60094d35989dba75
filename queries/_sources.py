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

from collections.abc import Iterable
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from ._scratch import Scratch, id_table
from ._source_sql import (
    ALL_TIME,
    DELIVERY_SELECT,
    FAR_FUTURE_NS,
    LEDGER_FALLBACK,
    RESOLVE,
    WINDOW,
    needy_spans,
    publishes_sql,
    record_deliveries,
    records_without_publish_time,
    span_deliveries,
)
from .latency_rollup import all_published

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
_RECORDS = f"""
SELECT EXISTS (SELECT 1 FROM logs WHERE record_kind = 'deliver' AND {WINDOW.format(column="time")}),
       EXISTS (SELECT 1 FROM logs WHERE record_kind = 'publish' AND {WINDOW.format(column="time")})
"""


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

    ``event_ids`` restricts both to those event ids (the tree's marks). ``params`` holds the
    window parameters the SQL texts need. ``published``: the caller knows that every
    delivery of the window carries its publish time, so the window is not searched for
    those that do not (also taken where the latency rollup has no gap in the window).
    ``delivered_at`` / ``published_at``: only the deliveries / publishes that started at
    one of these times (column ``t``, TIMESTAMP_NS): the few rows of the window that
    :func:`.ledger_keys.duplicate_times` names.
    """

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        event_ids: Iterable[str] | None = None,
        published: bool = False,
        delivered_at: pa.Table | None = None,
        published_at: pa.Table | None = None,
    ) -> None:
        self._cursor = cursor
        self.params: dict[str, Any] = window_params(since_ns, until_ns)
        self._event_ids = None if event_ids is None else sorted(set(event_ids))
        self._published = published
        self._delivered_at = delivered_at
        self._published_at = published_at
        self._scratch = Scratch(cursor)
        self._resolved: str | None = None
        self.deliveries = ""
        self.publishes = ""

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

    def _at(self, times: pa.Table | None) -> tuple[str, tuple[str, ...] | None]:
        """The window of one side's rows (those at ``times`` when given), and the windows
        of the spans its event records may stand for: wherever a record read at one of
        ``times`` has its span, that span has a key row of the same event there too
        (queries/ledger_keys.py), or no event id."""
        if times is None:
            return WINDOW, None
        at = WINDOW + f" AND {{column}} IN (SELECT t FROM {self.register(times)})"
        return at, (at, WINDOW + " AND message_id IS NULL")

    def _build(self) -> None:
        id_filter = ""
        if self._event_ids is not None:
            ids = self.register(id_table(self._event_ids))
            id_filter = f" AND message_id IN (SELECT event_id FROM {ids})"
        delivered = self._at(self._delivered_at)
        published = self._at(self._published_at)
        # without event records in the window, no anti-join of records against spans
        delivers, publishes = self._cursor.execute(_RECORDS, self.params).fetchone() or (1, 1)
        publishes_text = publishes_sql(*published, records=bool(publishes))
        self.publishes = f"SELECT * FROM ({publishes_text}) WHERE true{id_filter}"
        parts = [f"SELECT * FROM ({span_deliveries(delivered[0])}) WHERE true{id_filter}"]
        if delivers:
            parts.append(f"SELECT * FROM ({record_deliveries(*delivered)}) WHERE true{id_filter}")
        window = delivered[0]
        # the latency rollup knows where every delivery carries its publish time
        if not self._published:
            bounds = (self.params["since"], self.params["until"])
            self._published = all_published(self._cursor, *bounds)
        missing = []
        without = records_without_publish_time(window)
        if (
            not self._published
            and self._cursor.execute(f"{without} LIMIT 1", self.params).fetchone()
        ):
            missing.append(without)
        needy = None
        if not self._published:
            needy = self._cursor.execute(needy_spans(window), self.params).to_arrow_table()
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
            self.deliveries = f"SELECT {select} FROM ({union}) u"
            return
        fallback = LEDGER_FALLBACK.format(
            publishes=publishes_sql(ALL_TIME), missing=" UNION ALL ".join(missing)
        )
        select = DELIVERY_SELECT.format(publish_time="coalesce(u.publish_time, g.first_publish)")
        self.deliveries = (
            f"SELECT {select} FROM ({union}) u "
            f"LEFT JOIN ({fallback}) g ON g.message_id = u.message_id"
        )

    def consumer_groups(self) -> list[str]:
        """Every consumer group with a delivery in the window, sorted (a cheap scan of two
        low-cardinality columns; the bit masks of the ledger queries are built on it)."""
        sql = _GROUPS
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
