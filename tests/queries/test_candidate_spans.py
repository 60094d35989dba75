"""Duplicated events and orphan deliveries read from the copies of their spans
(queries/candidate_spans.py) are those the raw rows give: an event that becomes a
duplicate a minute after its first delivery was merged (its earlier spans copied then),
one published twice, one redelivered within a minute, one seen only through event
records, deliveries never published, and a late span after the merge (its minute read
raw)."""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
from eventscope.queries import duplicate_events, lost_events, orphan_deliveries
from eventscope.queries._lost_keys import lost_keys
from eventscope.queries._orphan_keys import orphan_keys
from eventscope.queries.candidate_spans import META
from eventscope.queries.ledger_events import compact, merged_to
from eventscope.queries.ledger_keys import RowTimes, duplicate_times
from eventscope.queries.schema import create_schema
from otlp_builder import PRODUCER, Otlp, delivered, load, messaging, published, without_rollup

MINUTE = 60 * 10**9
SECOND = 10**9
BASE = 1_700_000_040 * 10**9  # on a whole minute
WINDOW = {"since_ns": BASE, "until_ns": BASE + 7 * MINUTE}


def _published_again(otlp: Otlp, event: str, at: float) -> None:
    """A second publish of ``event`` (another span, another service)."""
    attrs = messaging("send", "orders", event, event_type="OrderPlaced")
    otlp.span(
        "api-retry", "send", PRODUCER, trace=event, span=f"p2-{event}", start=at, ms=1, attrs=attrs
    )


def _delivery_record(otlp: Otlp, event: str, at: float) -> None:
    """A ``deliver`` event record of ``event`` to billing (its span sampled out)."""
    attrs = messaging(
        "process",
        "orders",
        event,
        group="billing",
        event_type="OrderPlaced",
        outcome="ok",
        published_ns=otlp.at(at - 5),
    )
    otlp.record("billing", "deliver", trace=event, span=f"r-{event}-{at}", start=at, attrs=attrs)


def _load(cursor: duckdb.DuckDBPyConnection, *adds: tuple[Any, ...]) -> None:
    otlp = Otlp(BASE)
    for add, *args in adds:
        if add is delivered and len(args) == 3:
            delivered(otlp, args[0], args[1], outcome=args[2])
        else:
            add(otlp, *args)
    load(cursor, *otlp.bodies())


def _answer(cursor: duckdb.DuckDBPyConnection) -> set[tuple[str, str | None, str]]:
    """The duplicates and orphans of :data:`WINDOW`: from the copies, which must equal
    those read without them and those of the raw rows."""
    found: set[tuple[str, str | None, str]] = set()
    reads: list[tuple[Any, dict[str, Any]]] = [
        (duplicate_events, {}),
        (orphan_deliveries, {"grace_ns": 0}),
        (lost_events, {"grace_ns": 0}),
    ]
    for read, options in reads:
        fast = read(cursor, **WINDOW, **options)
        assert fast == without_rollup(cursor, META, read, **WINDOW, **options)
        assert fast == without_rollup(cursor, "ledger_keys_v2_from", read, **WINDOW, **options)
        found.update(
            (row.event_id, row.consumer_group, getattr(row, "kind", read.__name__)) for row in fast
        )
    return found


def _copied(times: RowTimes | None) -> list[tuple[int, bool]]:
    """(second after BASE, copied) of the times of deliveries and publishes read."""
    assert times is not None
    found = set()
    for side in (times.delivered, times.published):
        if side.num_rows:
            seconds = [(t - BASE) // SECOND for t in side.column("t").cast(pa.int64()).to_pylist()]
            found.update(zip(seconds, side.column("copied").to_pylist(), strict=True))
    return sorted(found)


def test_duplicates_from_the_copies_of_their_spans() -> None:
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    _load(  # minute 0: a published and handled; e published and handled
        cursor,
        (published, "a", 10_000.0),
        (delivered, "a", 20_000.0, "ok"),
        (published, "e", 40_000.0),
        (delivered, "e", 45_000.0, "ok"),
    )
    _load(  # minute 1: a handled again; minute 2: b published twice, c failed then
        # handled, o handled but never published, l never handled (lost: k of the same type
        # is handled by billing in that minute, so the merge lists l)
        cursor,
        (delivered, "a", 90_000.0, "ok"),
        (published, "b", 125_000.0),
        (_published_again, "b", 126_000.0),
        (delivered, "c", 150_000.0, "error"),
        (delivered, "c", 160_000.0, "ok"),
        (delivered, "o", 170_000.0, "ok"),
        (published, "l", 140_000.0),
        (published, "k", 141_000.0),
        (delivered, "k", 142_000.0, "ok"),
    )
    _load(  # minute 3: d seen twice through records only; minute 6: so that 0-3 merge
        cursor,
        (_delivery_record, "d", 190_000.0),
        (_delivery_record, "d", 200_000.0),
        (published, "z", 360_000.0),
    )
    before = _answer(cursor)
    assert before == {
        ("a", "billing", "processed_twice"),
        ("b", None, "published_twice"),
        ("c", "billing", "redelivered_after_failure"),
        ("d", "billing", "processed_twice"),
        ("c", "billing", "orphan_deliveries"),  # c, d and o are never published
        ("d", "billing", "orphan_deliveries"),
        ("o", "billing", "orphan_deliveries"),
        ("b", "billing", "lost_events"),  # b, l and z are never handled
        ("l", "billing", "lost_events"),
        ("z", "billing", "lost_events"),  # (z: after the merged minutes)
    }
    while compact(cursor, max_minutes=1):  # a minute at a time: a's first, alone
        pass
    assert merged_to(cursor) == BASE + 4 * MINUTE  # (minutes 4 and 5 hold no key)
    listed = cursor.execute(
        "SELECT e FROM (SELECT unnest(['a', 'b', 'c', 'd', 'e', 'l', 'o', 'z']) AS e) "
        "WHERE hash(e) IN (SELECT event_key FROM eventscope_candidate_events) ORDER BY e"
    ).fetchall()
    assert listed == [("a",), ("b",), ("c",), ("d",), ("l",), ("o",)]
    copies = cursor.execute(
        "SELECT message_id, kind, epoch_ns(start_time) - $base FROM eventscope_candidate_spans "
        "ORDER BY ALL",
        {"base": BASE},
    ).fetchall()
    assert copies == [  # a's publish and first delivery copied when minute 1 listed it
        ("a", "consumer", 20 * SECOND),
        ("a", "consumer", 90 * SECOND),
        ("a", "producer", 10 * SECOND),
        ("b", "producer", 125 * SECOND),
        ("b", "producer", 126 * SECOND),
        ("c", "consumer", 150 * SECOND),
        ("c", "consumer", 160 * SECOND),
        ("l", "producer", 140 * SECOND),
        ("o", "consumer", 170 * SECOND),
    ]
    records = cursor.execute(
        "SELECT message_id, record_kind, epoch_ns(time) - $base FROM eventscope_candidate_records "
        "ORDER BY ALL",
        {"base": BASE},
    ).fetchall()
    assert records == [("d", "deliver", 190 * SECOND), ("d", "deliver", 200 * SECOND)]
    times = duplicate_times(cursor, **WINDOW)
    assert _copied(times) == [
        (t, True) for t in (20, 90, 125, 126, 150, 160, 190, 200)
    ]  # every time from the copies: no raw span read back
    orphaned = orphan_keys(cursor, **WINDOW, judged=WINDOW["until_ns"])
    assert orphaned is not None
    assert _copied(orphaned[1]) == [(t, True) for t in (150, 160, 170, 190, 200)]
    unsubscribed = pa.table(
        {"subject": pa.array([], pa.string()), "consumer_group": pa.array([], pa.string())}
    )
    lost = lost_keys(
        cursor,
        **WINDOW,
        events_from=BASE,
        events_until=WINDOW["until_ns"],
        subscriptions=unsubscribed,
    )
    assert lost is not None
    assert _copied(lost.times) == [  # b's and l's publishes; z's not merged
        *((t, True) for t in (125, 126, 140)),
        (360, False),
    ]
    assert _answer(cursor) == before

    _load(cursor, (delivered, "e", 50_000.0, "ok"))  # late: e again in merged minute 0
    assert _late_marks(cursor) == []  # (e is not listed: none of its rows was copied)
    assert _copied(duplicate_times(cursor, **WINDOW)) == [
        (20, True),  # a's copies of minute 0 are whole
        (45, False),  # e: a candidate not listed, read raw
        (50, False),
        *((t, True) for t in (90, 125, 126, 150, 160, 190, 200)),
    ]
    assert _answer(cursor) == {*before, ("e", "billing", "processed_twice")}
    _load(cursor, (published, "y", 480_000.0))  # minute 8: the next merge lists e
    while compact(cursor, max_minutes=1):
        pass
    assert _copied(duplicate_times(cursor, **WINDOW)) == [
        (t, True) for t in (20, 45, 50, 90, 125, 126, 150, 160, 190, 200)
    ]  # e's rows of minute 0 copied when it was listed
    assert cursor.execute("SELECT count(*) FROM eventscope_candidate_pending").fetchall() == [(0,)]
    assert _answer(cursor) == {*before, ("e", "billing", "processed_twice")}
    _load(cursor, (delivered, "a", 30_000.0, "ok"))  # late: listed a again in minute 0
    assert _late_marks(cursor) == [(0, "a")]
    assert _copied(duplicate_times(cursor, **WINDOW)) == [
        (20, False),  # a's rows of minute 0: late, read raw
        (30, False),
        *((t, True) for t in (45, 50, 90, 125, 126, 150, 160, 190, 200)),  # (a's at 90 too)
    ]
    assert _answer(cursor) == {*before, ("e", "billing", "processed_twice")}
    # d's records are read from their copies, not from the stored records
    cursor.execute("UPDATE logs SET consumer_group = 'elsewhere' WHERE message_id = 'd'")
    found = {(row.event_id, row.consumer_group) for row in duplicate_events(cursor, **WINDOW)}
    assert ("d", "billing") in found
    cursor.close()


def _late_marks(cursor: duckdb.DuckDBPyConnection) -> list[tuple[int, str]]:
    """(second after BASE, event of a to z) of the late marks of listed events."""
    return cursor.execute(
        "SELECT epoch_ns(minute) - $base, e FROM eventscope_candidate_late_events "
        "JOIN (SELECT unnest(list_transform(range(97, 123), x -> chr(x::INTEGER))) AS e) "
        "ON event_key = hash(e) ORDER BY ALL",
        {"base": BASE},
    ).fetchall()


def test_rows_before_the_copies_are_read_raw() -> None:
    """f is handled at 0:10 and twice more 25 hours later: the merge of that minute looks
    a day back, lists f and copies its spans from then; a window over both days reads the
    first delivery raw (three deliveries, not two)."""
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    later = 25 * 3600_000.0
    _load(
        cursor,
        (published, "f", 5_000.0),
        (delivered, "f", 10_000.0, "ok"),
        (delivered, "f", later + 10_000.0, "ok"),
        (delivered, "f", later + 20_000.0, "ok"),
        (published, "z", later + 300_000.0),
    )
    while compact(cursor):
        pass
    window = {"since_ns": BASE, "until_ns": BASE + 26 * 3600 * SECOND}
    times = duplicate_times(cursor, **window)
    assert times is not None
    copied = times.delivered.to_pydict()
    seconds = [(_ns(t) - BASE) // SECOND for t in copied["t"]]
    assert sorted(zip(copied["copied"], seconds, strict=True)) == [
        (False, 10),  # before the copies
        (True, 25 * 3600 + 10),
        (True, 25 * 3600 + 20),
    ]
    [duplicate] = duplicate_events(cursor, **window)
    assert duplicate.deliveries == 3
    assert [duplicate] == list(
        without_rollup(cursor, "ledger_keys_v2_from", duplicate_events, **window)
    )
    cursor.close()


def _ns(value: Any) -> int:
    return int(pa.scalar(value, pa.timestamp("ns")).cast(pa.int64()).as_py())


def test_events_without_recent_copies_are_no_longer_listed() -> None:
    """f is handled twice at 0:10 and 0:20 (listed, its spans copied), then nothing for
    three days; the first merge past an hour boundary after that forgets it (the list stays
    as long as two days' events), and f handled again then is listed anew from the day
    before: no span of it copied twice, its old rows read raw."""
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    _load(
        cursor,
        (published, "f", 5_000.0),
        (delivered, "f", 10_000.0, "ok"),
        (delivered, "f", 20_000.0, "ok"),
        (published, "y", 300_000.0),
    )
    while compact(cursor):
        pass
    assert cursor.execute(
        "SELECT count(*) FROM eventscope_candidate_events WHERE event_key = hash('f')"
    ).fetchall() == [(1,)]
    # (ms after BASE) the first hour after three days, and a merge from 2 minutes before it
    edge = 3 * 24 * 3600_000 + (-(BASE // 10**6)) % 3600_000
    _load(
        cursor,
        (published, "g", edge - 120_000.0),
        (delivered, "g", edge - 119_990.0, "ok"),
        (delivered, "f", edge - 60_000.0, "ok"),
        (published, "z", edge + 300_000.0),
    )
    while compact(cursor):
        pass
    [(copied_from, copies, spans)] = cursor.execute(
        "SELECT (SELECT epoch_ns(copied_from) FROM eventscope_candidate_events "
        "        WHERE event_key = hash('f')), "
        "(SELECT count(*) FROM eventscope_candidate_spans WHERE message_id = 'f'), "
        "(SELECT count(*) FROM spans WHERE message_id = 'f')"
    ).fetchall()
    assert copied_from == BASE + (edge - 120_000) * 10**6 - 24 * 3600 * SECOND
    assert copies == spans == 4
    window = {"since_ns": BASE, "until_ns": BASE + edge * 10**6 + 3600 * SECOND}
    assert _copied(duplicate_times(cursor, **window)) == [
        (10, False),  # before f's copies start: raw
        (20, False),
        ((edge - 60_000) // 1000, True),
    ]
    [twice] = duplicate_events(cursor, **window)
    assert twice.deliveries == 3
    assert [twice] == list(
        without_rollup(cursor, "ledger_keys_v2_from", duplicate_events, **window)
    )
    cursor.close()


def test_events_seen_through_records_alone_stay_listed() -> None:
    """d is delivered twice through event records alone (no span to copy): a merge past an
    hour boundary a few hours later still lists it, so that its rows are read from the
    copies (none), not raw (a scan of the window's spans at each read)."""
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    edge = 3 * 3600_000 + (-(BASE // 10**6)) % 3600_000  # (ms after BASE) an hour's start
    _load(
        cursor,
        (_delivery_record, "d", 10_000.0),
        (_delivery_record, "d", 20_000.0),
        (published, "y", 300_000.0),
        (published, "g", edge - 120_000.0),
        (delivered, "g", edge - 119_990.0, "ok"),
        (published, "z", edge + 300_000.0),
    )
    while compact(cursor):
        pass
    assert merged_to(cursor) > BASE + edge * 10**6  # past the hour: the list was trimmed
    [(listed, copies)] = cursor.execute(
        "SELECT (SELECT count(*) FROM eventscope_candidate_events WHERE event_key = hash('d')), "
        "(SELECT count(*) FROM eventscope_candidate_spans WHERE message_id = 'd')"
    ).fetchall()
    assert (listed, copies) == (1, 0)
    window = {"since_ns": BASE, "until_ns": BASE + 5 * MINUTE}
    assert _copied(duplicate_times(cursor, **window)) == [(10, True), (20, True)]
    [twice] = duplicate_events(cursor, **window)
    assert (twice.event_id, twice.deliveries) == ("d", 2)
    assert [twice] == list(
        without_rollup(cursor, "ledger_keys_v2_from", duplicate_events, **window)
    )
    cursor.close()


def test_rows_the_key_copies_do_not_hold_are_read_from_the_keys() -> None:
    """The candidates' key rows come from their copies, and from the keys only where the
    copies cannot hold them: a's delivery in the newest, unmerged minutes; b's first
    delivery, merged before b was a candidate (b then a stray: not listed); a's delivery
    that arrives late in a merged minute — each found only in its own stretch of time."""
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    _load(
        cursor,
        (published, "a", 10_000.0),
        (delivered, "a", 20_000.0, "ok"),
        (delivered, "a", 90_000.0, "ok"),  # a listed when minute 1 is merged
        (published, "b", 125_000.0),
        (delivered, "b", 130_000.0, "ok"),
        (published, "z", 360_000.0),
    )
    while compact(cursor):
        pass
    assert merged_to(cursor) == BASE + 5 * MINUTE
    _load(cursor, (delivered, "b", 320_000.0, "ok"), (delivered, "a", 330_000.0, "ok"))
    twice = {(row.event_id, row.deliveries) for row in duplicate_events(cursor, **WINDOW)}
    assert twice == {("a", 3), ("b", 2)}
    assert _copied(duplicate_times(cursor, **WINDOW)) == [
        (20, True),  # a's, copied at the merges
        (90, True),
        (130, False),  # b's, in the keys alone
        (320, False),  # not merged yet
        (330, False),
    ]
    _answer(cursor)  # (every read: the same as read raw)
    _load(cursor, (delivered, "a", 40_000.0, "ok"))  # late, in merged minute 0
    twice = {(row.event_id, row.deliveries) for row in duplicate_events(cursor, **WINDOW)}
    assert twice == {("a", 4), ("b", 2)}
    _answer(cursor)
    cursor.close()
