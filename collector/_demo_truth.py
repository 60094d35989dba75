"""What the demo shop broke on purpose: its own ledger of publishes and deliveries.

The shop writes down every publish and every handler run as it happens (event id, consumer
group, outcome), independently of the telemetry. From that ledger :class:`GroundTruth`
derives the lost and duplicated events by the definitions in docs/queries.md, so a test
(or a curious user, with ``eventscope demo --truth FILE``) can hold what eventscope
reports against what really happened.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["GroundTruth", "Outcome"]

Outcome = Literal["ok", "error", "duplicate_skipped", "dead_lettered"]
#: A delivery with one of these outcomes is final: no redelivery follows.
_SETTLED = ("ok", "duplicate_skipped", "dead_lettered")


@dataclass(slots=True)
class _Event:
    topic: str
    event_type: str
    publishes: int = 0
    #: group -> (start time, outcome) of each handler run
    deliveries: dict[str, list[tuple[int, Outcome]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )


class GroundTruth:
    """The shop's ledger; tells which events were lost or duplicated, and when all settled.

    Args:
        groups: topic -> the consumer groups subscribed to it.
    """

    def __init__(self, groups: dict[str, list[str]]) -> None:
        self._groups = groups
        self._events: dict[str, _Event] = {}
        self._pending = 0
        self._settled = asyncio.Event()
        self._settled.set()

    def published(self, event_id: str, topic: str, event_type: str) -> None:
        """One publish of ``event_id``, written down before it is sent: a consumer may
        handle it before the broker confirms it."""
        event = self._events.setdefault(event_id, _Event(topic, event_type))
        event.publishes += 1
        self._pending += len(self._groups.get(topic, ()))
        if self._pending:
            self._settled.clear()

    def dropped(self, topic: str) -> None:
        """The broker dropped the last publish to ``topic`` as a duplicate (JetStream's
        deduplication): no group gets this copy."""
        self._pending -= len(self._groups.get(topic, ()))
        if self._pending <= 0:
            self._settled.set()

    def delivered(self, event_id: str, group: str, outcome: Outcome, *, started_ns: int) -> None:
        """One handler run of ``group`` for ``event_id``, started at ``started_ns``, ended
        with ``outcome``."""
        event = self._events.get(event_id)
        if event is None:  # not ours (cannot happen with per-run names)
            return
        event.deliveries[group].append((started_ns, outcome))
        if outcome in _SETTLED:
            self._pending -= 1
            if self._pending <= 0:
                self._settled.set()

    @property
    def pending(self) -> int:
        """Deliveries published but not settled yet (ok, skipped or dead-lettered)."""
        return self._pending

    async def settled(self) -> None:
        """Wait until every delivery published so far is settled."""
        await self._settled.wait()

    def lost(self) -> list[dict[str, str]]:
        """(event, group) pairs with no successful delivery, with the reason."""
        rows = []
        for event_id, event in self._events.items():
            for group in self._groups.get(event.topic, ()):
                outcomes = [o for _, o in event.deliveries.get(group, [])]
                if any(o in ("ok", "duplicate_skipped") for o in outcomes):
                    continue
                if not outcomes:
                    reason = "never_delivered"
                elif "dead_lettered" in outcomes:
                    reason = "dead_lettered"
                else:
                    reason = "all_attempts_failed"
                rows.append({"event_id": event_id, "consumer_group": group, "reason": reason})
        return sorted(rows, key=lambda r: (r["event_id"], r["consumer_group"]))

    def duplicates(self) -> list[dict[str, Any]]:
        """(event, group) pairs delivered more than once, with the most serious kind; and
        event ids published more than once (group None, ``published_twice``)."""
        rows: list[dict[str, Any]] = []
        for event_id, event in self._events.items():
            if event.publishes > 1:
                rows.append(
                    {"event_id": event_id, "consumer_group": None, "kind": "published_twice"}
                )
            for group, runs in event.deliveries.items():
                if len(runs) > 1:
                    outcomes = [o for _, o in sorted(runs)]
                    rows.append(
                        {"event_id": event_id, "consumer_group": group, "kind": _kind(outcomes)}
                    )
        return sorted(rows, key=lambda r: (r["event_id"], r["consumer_group"] or ""))

    def to_json(self) -> dict[str, Any]:
        """Publishes, lost and duplicated events, as ``eventscope demo --truth`` writes them."""
        return {
            "events": len(self._events),
            "publishes": sum(e.publishes for e in self._events.values()),
            "lost": self.lost(),
            "duplicates": self.duplicates(),
        }


def _kind(outcomes: list[Outcome]) -> str:
    """The duplicate kind of one (event, group)'s deliveries, in start order."""
    if outcomes.count("ok") >= 2:
        return "processed_twice"
    if "duplicate_skipped" in outcomes:
        return "suppressed"
    failed = [i for i, o in enumerate(outcomes) if o in ("error", "dead_lettered")]
    if failed and failed[0] < len(outcomes) - 1:
        return "redelivered_after_failure"
    return "redelivered"
