"""The state behind the ledger series of ``/metrics``, and their Prometheus text.

Every series is keyed by a *label set* — (event type, destination, consumer group), the
group ``""`` on the producer side — plus one label of its own (outcome, reason, kind or
histogram bucket). The state keeps:

- ``settled``: totals of what lies before the watermark, added once and persisted;
- ``exposed``: what ``/metrics`` last showed. An evaluation shows ``settled`` plus the
  *live* part it counted after the watermark, but never less than before, so a counter
  moves only forward, across restarts too (both are persisted in the database).

Label sets are capped: past ``max_label_sets`` a new one is folded into ``other`` (and
what was folded is counted). A label set's series show 0 at the evaluation that first sees
it, so that Prometheus' ``increase()`` sees its first events (a series that is born at 5
increases by nothing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eventscope.queries import LATENCY_BUCKETS

__all__ = ["FAMILIES", "OTHER", "LedgerState", "Observation", "escape_label"]

OTHER = "other"
OUTCOMES = ("ok", "error", "duplicate_skipped", "dead_lettered")
REASONS = ("never_delivered", "all_attempts_failed", "dead_lettered")
DELIVERY_KINDS = ("processed_twice", "suppressed", "redelivered_after_failure", "redelivered")
_BUCKET_LABELS = tuple(str(i) for i in range(len(LATENCY_BUCKETS) + 1))

Triple = tuple[str, str, str]
#: (family, event type, destination, consumer group, label)
SeriesId = tuple[str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class _Family:
    metric: str
    kind: str  # counter, histogram
    label: str | None  # the series' own label name
    help: str


#: family -> how it is exposed.
FAMILIES = {
    "published": _Family(
        "eventscope_events_published_total", "counter", None,
        "Events published (each event once, spans and event records together).",
    ),
    "deliveries": _Family(
        "eventscope_deliveries_total", "counter", "outcome",
        "Deliveries handled, by outcome (ok, error, duplicate_skipped, dead_lettered, other).",
    ),
    "lost": _Family(
        "eventscope_events_lost_total", "counter", "reason",
        "Events an expected consumer group never handled, counted once past the grace "
        "period, by reason (never_delivered, all_attempts_failed, dead_lettered).",
    ),
    "duplicated": _Family(
        "eventscope_events_duplicated_total", "counter", "kind",
        "Events delivered more than once to a group (kind processed_twice, suppressed, "
        "redelivered_after_failure, redelivered) or published more than once "
        "(published_twice, consumer_group empty); counted once its second delivery is past "
        "the grace period.",
    ),
    "processing": _Family(
        "eventscope_handler_processing_seconds", "histogram", None,
        "How long handlers ran (handler start to end).",
    ),
    "queue_wait": _Family(
        "eventscope_handler_queue_wait_seconds", "histogram", None,
        "How long events waited before a handler started (publish to handler start).",
    ),
}  # fmt: skip
_ZEROS: dict[str, tuple[str, ...]] = {
    "deliveries": OUTCOMES,
    "lost": REASONS,
    "duplicated": DELIVERY_KINDS,
    "processing": (*_BUCKET_LABELS, "sum"),
    "queue_wait": (*_BUCKET_LABELS, "sum"),
}
_FOLDED: SeriesId = ("folded", "", "", "", "")
#: Most losses and duplicates remembered; beyond it the oldest go, and late data older
#: than what is remembered is no longer counted.
MAX_COUNTED = 20_000


@dataclass(frozen=True, slots=True)
class Observation:
    """A count (or a sum of seconds) for one series, before or after the watermark."""

    family: str
    labels: Triple
    label: str
    value: float
    settled: bool


def escape_label(value: str) -> str:
    """A label value as the text exposition format writes it (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class LedgerState:
    """Watermark, settled totals, what was shown, the label sets, and the pending gauge."""

    def __init__(self, max_label_sets: int) -> None:
        self.max_label_sets = max_label_sets
        #: Events published (deliveries started) before this are settled: counted for good.
        self.watermark_ns: int | None = None
        self.label_sets: dict[Triple, None] = {}
        self.settled: dict[SeriesId, float] = {}
        self.exposed: dict[SeriesId, float] = {}
        self.pending: dict[Triple, int] = {}
        #: Losses and duplicates already counted, with their time: (event id, group, kind)
        #: -> ns. Data that arrives late (its time before the watermark, within the look-back
        #: window) is counted once by this, not again; entries older than the window go.
        self.counted: dict[tuple[str, str, str], int] = {}
        #: ``counted`` holds every key from this time on (older ones may have been dropped).
        self.counted_from = 0
        self._fresh: set[Triple] = set()

    def fold(self, labels: Triple) -> Triple:
        """``labels`` if tracked (or room is left), else the ``other`` label set."""
        if labels in self.label_sets:
            return labels
        if len(self.label_sets) >= self.max_label_sets:
            labels = (OTHER, OTHER, OTHER if labels[2] else "")
            if labels in self.label_sets:
                return labels
        self.label_sets[labels] = None
        self._fresh.add(labels)
        return labels

    def advance(
        self,
        watermark_ns: int,
        observations: Iterable[Observation],
        pending: Iterable[tuple[Triple, int]],
    ) -> None:
        """Take one evaluation: add the settled part, recount the live part, show both."""
        live: dict[SeriesId, float] = {}
        for seen in observations:
            labels = self.fold(seen.labels)
            target = self.settled if seen.settled else live
            sid: SeriesId = (seen.family, *labels, seen.label)
            target[sid] = target.get(sid, 0) + seen.value
            if labels != seen.labels and seen.family in ("published", "deliveries"):
                target[_FOLDED] = target.get(_FOLDED, 0) + seen.value
        self.pending = {}
        for labels, count in pending:
            folded = self.fold(labels)
            self.pending[folded] = self.pending.get(folded, 0) + count
        shown: dict[SeriesId, float] = {}
        for sid in self.settled.keys() | live.keys() | self.exposed.keys():
            value = max(self.settled.get(sid, 0) + live.get(sid, 0), self.exposed.get(sid, 0))
            shown[sid] = 0 if sid[1:4] in self._fresh else value
        self.exposed = shown
        self.watermark_ns = watermark_ns
        self._fresh.clear()

    def count_once(self, key: tuple[str, str, str], time_ns: int, settled_ns: int) -> bool:
        """Whether to count ``key`` (event id, group, ``lost`` or ``duplicated``) at
        ``time_ns``: yes if that is after the last watermark (``settled_ns``: never looked
        at before), else only if it was not counted yet — late data. Remembers it."""
        if time_ns < settled_ns and (key in self.counted or time_ns < self.counted_from):
            return False
        if len(self.counted) >= MAX_COUNTED:
            oldest = min(self.counted, key=self.counted.__getitem__)
            self.counted_from = max(self.counted_from, self.counted.pop(oldest) + 1)
        self.counted[key] = time_ns
        return True

    def forget_before(self, time_ns: int) -> None:
        """Drop remembered keys older than ``time_ns`` (outside every future window)."""
        self.counted = {k: t for k, t in self.counted.items() if t >= time_ns}

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> str:
        """What is persisted: watermark, label sets, settled and shown values (non-zero)."""
        series = [
            [*sid, self.settled.get(sid, 0), self.exposed.get(sid, 0)]
            for sid in sorted(self.settled.keys() | self.exposed.keys())
            if self.settled.get(sid, 0) or self.exposed.get(sid, 0)
        ]
        return json.dumps(
            {
                "version": 1,
                "watermark_ns": self.watermark_ns,
                "label_sets": [list(t) for t in self.label_sets],
                "series": series,
                "counted": [[*key, t] for key, t in self.counted.items()],
                "counted_from": self.counted_from,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str, max_label_sets: int) -> LedgerState:
        """The state persisted by :meth:`to_json` (raises ValueError when it is not)."""
        document: Any = json.loads(text)
        if not isinstance(document, dict) or document.get("version") != 1:
            raise ValueError("not a version 1 ledger state")
        state = cls(max_label_sets)
        state.watermark_ns = document["watermark_ns"]
        state.label_sets = {(str(a), str(b), str(c)): None for a, b, c in document["label_sets"]}
        state.counted = {
            (str(e), str(g), str(k)): int(t) for e, g, k, t in document.get("counted", ())
        }
        state.counted_from = int(document.get("counted_from", 0))
        for family, event_type, destination, group, label, settled, exposed in document["series"]:
            sid: SeriesId = (family, event_type, destination, group, label)
            if settled:
                state.settled[sid] = settled
            if exposed:
                state.exposed[sid] = exposed
        return state

    # ------------------------------------------------------------------ exposition

    def render(self) -> str:
        """The ledger series in the Prometheus text format."""
        lines: list[str] = []
        for family, spec in FAMILIES.items():
            lines += [f"# HELP {spec.metric} {spec.help}", f"# TYPE {spec.metric} {spec.kind}"]
            values = self._family_values(family)
            if spec.kind == "histogram":
                lines += _histogram_lines(spec.metric, values)
                continue
            for (labels, label), value in sorted(values.items()):
                names = _labels(labels, family != "published")
                if spec.label is not None:
                    names += f',{spec.label}="{escape_label(label)}"'
                lines.append(f"{spec.metric}{{{names}}} {_number(value)}")
        lines += [
            "# HELP eventscope_events_pending Events published within the grace period that "
            "an expected consumer group has not handled yet.",
            "# TYPE eventscope_events_pending gauge",
        ]
        for labels in sorted(t for t in self.label_sets if t[2]):
            count = self.pending.get(labels, 0)
            lines.append(f"eventscope_events_pending{{{_labels(labels, True)}}} {count}")
        lines += [
            "# HELP eventscope_ledger_label_sets Label sets (event type, destination, group) "
            "the ledger series track.",
            "# TYPE eventscope_ledger_label_sets gauge",
            f"eventscope_ledger_label_sets {len(self.label_sets)}",
            "# HELP eventscope_ledger_folded_total Publishes and deliveries counted under the "
            "label set 'other' because the cap on label sets was reached.",
            "# TYPE eventscope_ledger_folded_total counter",
            f"eventscope_ledger_folded_total {_number(self.exposed.get(_FOLDED, 0))}",
        ]
        return "\n".join(lines) + "\n"

    def _family_values(self, family: str) -> dict[tuple[Triple, str], float]:
        """Every series of a family: zeros for each tracked label set, then the shown values."""
        values: dict[tuple[Triple, str], float] = {}
        for labels in self.label_sets:
            if family == "published" and not labels[2]:
                values[labels, ""] = 0
            elif family == "duplicated" and not labels[2]:
                values[labels, "published_twice"] = 0
            elif labels[2]:
                for label in _ZEROS.get(family, ()):
                    values[labels, label] = 0
        for sid, value in self.exposed.items():
            if sid[0] == family:
                values[sid[1:4], sid[4]] = value
        return values


def _labels(labels: Triple, with_group: bool) -> str:
    event_type, destination, group = labels
    text = f'event_type="{escape_label(event_type)}",destination="{escape_label(destination)}"'
    return text + (f',consumer_group="{escape_label(group)}"' if with_group else "")


def _histogram_lines(metric: str, values: dict[tuple[Triple, str], float]) -> list[str]:
    by_labels: dict[Triple, dict[str, float]] = {}
    for (labels, label), value in values.items():
        by_labels.setdefault(labels, {})[label] = value
    lines = []
    for labels in sorted(by_labels):
        buckets = by_labels[labels]
        names = _labels(labels, True)
        running = 0.0
        for index, bound in enumerate((*LATENCY_BUCKETS, float("inf"))):
            running += buckets.get(str(index), 0)
            le = "+Inf" if bound == float("inf") else repr(bound)
            lines.append(f'{metric}_bucket{{{names},le="{le}"}} {_number(running)}')
        lines.append(f"{metric}_sum{{{names}}} {_number(buckets.get('sum', 0))}")
        lines.append(f"{metric}_count{{{names}}} {_number(running)}")
    return lines


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
