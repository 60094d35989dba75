"""Plotly figures built in Python (``plotly.graph_objects``), sent as ``fig.to_json()``.

The page puts each figure's JSON in a ``<script type="application/json">`` block; the
static script draws it with ``Plotly.newPlot``. Times are sent as epoch milliseconds and
the x axes are typed ``date``, so the browser shows them in its own time zone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import plotly.graph_objects as go
from eventscope.queries import (
    HandlerLatency,
    LatencyHistogram,
    LatencyRow,
    LatencyStats,
    Overview,
    Topology,
)

__all__ = [
    "activity",
    "figure_json",
    "latency_histogram",
    "percentiles_over_time",
    "short_labels",
    "topology_sankey",
    "wait_vs_processing",
]

_LAYOUT: dict[str, Any] = {
    "margin": {"l": 48, "r": 16, "t": 28, "b": 36},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "legend": {"orientation": "h", "y": -0.18},
    "hovermode": "x unified",
}


#: Figures with nothing to zoom or pan (maps, treemaps) show no toolbar over their labels.
_NO_TOOLBAR = {"modebar": False}


def _local_time_x(since_ns: int | None = None, until_ns: int | None = None) -> dict[str, Any]:
    """An x axis of epoch milliseconds that the page turns into the browser's local time
    (Plotly itself has no time zones), spanning [since, until] when given."""
    meta: dict[str, Any] = {"local_time_x": True}
    if since_ns is not None and until_ns is not None:
        meta["local_time_range"] = [_ms(since_ns), _ms(until_ns)]
    # below a second between ticks, every tick with its milliseconds (Plotly's own format
    # drops trailing zeros: 14.518, 14.52, 14.522)
    stops = [{"dtickrange": [None, 1000], "value": "%H:%M:%S.%L"}]
    return {"xaxis": {"type": "date", "tickformatstops": stops}, "meta": meta}


def _plain(text: object) -> str:
    """Untrusted text for a Plotly label: Plotly reads a few HTML-like tags in labels
    (``<b>``, ``<a href>`` …); with ``<`` and ``&`` as entities, it shows them as text."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def short_labels(keys: Sequence[str | None]) -> dict[str | None, str]:
    """Display names for ``keys`` without the dotted prefix they all share: handlers named
    by qualified name (``shop.handlers.<locals>.billing``) read as ``billing``."""
    names = [k for k in keys if k]
    prefix = ""
    if len(names) > 1:
        common = names[0]
        for name in names[1:]:
            while not name.startswith(common):
                common = common[:-1]
        prefix = common[: common.rfind(".") + 1]
    return {k: (k[len(prefix) :] if k else "(none)") for k in keys}


def figure_json(fig: go.Figure) -> str:
    """The figure as JSON text (escaped for the page by the template's ``json_block``)."""
    return fig.to_json(validate=False)


def _ms(ns: int) -> float:
    return ns / 1_000_000


def activity(summary: Overview, anomalies: dict[str, list[int]] | None = None) -> str:
    """Spans, requests, errors, publishes and failed deliveries per time bucket, plus
    ``anomalies`` (name -> count per bucket: lost, duplicated) when given."""
    x = [_ms(b.start_ns) for b in summary.activity]
    since, until = summary.since_ns, summary.until_ns
    if summary.activity:  # the buckets' span: the data's, when the query fitted them to it
        since = summary.activity[0].start_ns
        until = summary.activity[-1].start_ns + summary.bucket_ns
    bucket_ms = _ms(summary.bucket_ns)
    fig = go.Figure(layout={**_LAYOUT, **_local_time_x(since, until), "height": 300})
    for name, values, colour in (
        ("spans", [b.spans for b in summary.activity], "#4e79a7"),
        ("requests", [b.requests for b in summary.activity], "#59a14f"),
        ("events published", [b.publishes for b in summary.activity], "#9c755f"),
        ("deliveries", [b.deliveries for b in summary.activity], "#76b7b2"),
        ("errors", [b.errors for b in summary.activity], "#e15759"),
        ("failed deliveries", [b.failed_deliveries for b in summary.activity], "#f28e2b"),
    ):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=values,
                name=name,
                mode="lines",
                line_shape="hv",
                line={"color": colour, "width": 2},
            )
        )
    for i, ((name, values), colour) in enumerate(
        zip((anomalies or {}).items(), ("#b07aa1", "#edc948"), strict=False)
    ):
        # side by side inside their bucket, as the lines' steps are (bars centred on the
        # bucket's start hung half outside the axis, which begins there)
        fig.add_trace(
            go.Bar(
                x=x,
                y=values,
                width=bucket_ms * 0.4,
                offset=bucket_ms * (0.1 + 0.4 * i),
                name=f"{name} events",
                marker_color=colour,
                opacity=0.8,
            )
        )
    return figure_json(fig)


def _ns_to_ms(value: float | None) -> float | None:
    return None if value is None else value / 1_000_000


def wait_vs_processing(latency: HandlerLatency) -> str:
    """Median queue wait and processing per row, stacked: where the time goes."""
    rows = list(reversed(latency.rows[:30]))
    labels = short_labels([r.key for r in latency.rows])
    keys = [_plain(labels[r.key]) for r in rows]
    fig = go.Figure(
        layout={
            **_LAYOUT,
            "barmode": "stack",
            "hovermode": "y unified",
            "height": max(220, 26 * len(rows) + 90),
            "xaxis": {"title": {"text": "median, ms"}},
            "margin": {**_LAYOUT["margin"], "l": 160},
        }
    )
    fig.add_trace(
        go.Bar(
            y=keys,
            x=[_ns_to_ms(r.stats.queue_wait.p50) for r in rows],
            name="queue wait",
            orientation="h",
            marker_color="#b5c4dc",
        )
    )
    fig.add_trace(
        go.Bar(
            y=keys,
            x=[_ns_to_ms(r.stats.processing.p50) for r in rows],
            name="processing",
            orientation="h",
            marker_color="#4e79a7",
        )
    )
    return figure_json(fig)


def _decade_ticks(low_ms: float, high_ms: float) -> dict[str, Any]:
    """A log axis over [low, high] labelled with units at 1, 2 and 5 of each power of ten
    (``2 ms``, ``5 ms``, ``10 ms``; only the powers of ten when it spans many): Plotly's
    own labels (``2 5 10 2 5``) do not say which power of ten they are in."""
    low, high = max(low_ms, 1e-6), max(high_ms, low_ms, 1e-6)
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    steps = (1, 2, 5) if last - first <= 3 else (1,)
    values = [
        step * 10.0**k
        for k in range(first, last + 1)
        for step in steps
        if low / 1.5 <= step * 10.0**k <= high * 1.5
    ]
    return {
        "tickvals": values,
        "ticktext": [_duration_label(v) for v in values],
        "range": [math.log10(low / 1.5), math.log10(high * 1.5)],
    }


def _duration_label(ms: float) -> str:
    for unit, size in (("s", 1000.0), ("ms", 1.0), ("µs", 1e-3), ("ns", 1e-6)):
        if ms >= size * 0.999:
            return f"{ms / size:.3g} {unit}"
    return f"{ms * 1e6:g} ns"


def latency_histogram(histogram: LatencyHistogram) -> str:
    """Processing and queue wait of one key, in logarithmic bins."""
    filled = [b for b in (*histogram.queue_wait, *histogram.processing) if b.count]
    ticks = _decade_ticks(
        min((b.low_ns for b in filled), default=10**6) / 1e6,
        max((b.high_ns for b in filled), default=10**6) / 1e6,
    )
    fig = go.Figure(
        layout={
            **_LAYOUT,
            "barmode": "overlay",
            "height": 300,
            "bargap": 0.02,
            "xaxis": {"type": "log", "title": {"text": "duration (log scale)"}, **ticks},
            "yaxis": {"title": {"text": "deliveries"}},
        }
    )
    for name, bins, colour in (
        ("queue wait", histogram.queue_wait, "#b5c4dc"),
        ("processing", histogram.processing, "#4e79a7"),
    ):
        fig.add_trace(
            go.Bar(
                x=[(b.low_ns * b.high_ns) ** 0.5 / 1e6 for b in bins],
                width=[(b.high_ns - b.low_ns) / 1e6 for b in bins],
                y=[b.count for b in bins],
                name=name,
                marker_color=colour,
                opacity=0.75,
                customdata=[[b.low_ns / 1e6, b.high_ns / 1e6] for b in bins],
                hovertemplate="%{customdata[0]:.3g}–%{customdata[1]:.3g} ms: %{y}<extra>"
                + name
                + "</extra>",
            )
        )
    return figure_json(fig)


def percentiles_over_time(row: LatencyRow, since_ns: int, until_ns: int) -> str:
    """p50 / p95 / p99 of processing and p50 / p95 of queue wait per time bucket."""
    x = [_ms(b.start_ns) for b in row.buckets]
    fig = go.Figure(
        layout={
            **_LAYOUT,
            **_local_time_x(since_ns, until_ns),
            "height": 300,
            "yaxis": {"title": {"text": "ms"}},
        }
    )
    series: tuple[tuple[str, Callable[[LatencyStats], float | None], str, str], ...] = (
        ("processing p50", lambda s: s.processing.p50, "#4e79a7", "solid"),
        ("processing p95", lambda s: s.processing.p95, "#4e79a7", "dash"),
        ("processing p99", lambda s: s.processing.p99, "#4e79a7", "dot"),
        ("queue wait p50", lambda s: s.queue_wait.p50, "#9c755f", "solid"),
        ("queue wait p95", lambda s: s.queue_wait.p95, "#9c755f", "dash"),
    )
    for name, pick, colour, dash in series:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[_ns_to_ms(pick(b.stats)) for b in row.buckets],
                name=name,
                mode="lines+markers",
                line={"color": colour, "dash": dash, "width": 2},
            )
        )
    return figure_json(fig)


def topology_sankey(topology: Topology) -> str:
    """The choreography map: producer services → event types on destinations → consumer
    groups; a link's width is its event count, its hover the latency and loss."""
    nodes: dict[str, int] = {}
    labels: list[str] = []
    colours: list[str] = []

    def node(key: str, label: str, colour: str) -> int:
        if key not in nodes:
            nodes[key] = len(labels)
            labels.append(label)
            colours.append(colour)
        return nodes[key]

    source, target, value, colour, text = [], [], [], [], []
    published: dict[tuple[int, int], int] = {}
    for edge in topology.edges:
        topic_label = _plain(f"{edge.event_type or '?'} @ {edge.destination or '?'}")
        who = edge.producer or "(never seen published)"
        producer = node("p:" + who, _plain(who), "#59a14f")
        topic = node(f"t:{edge.event_type}\u241f{edge.destination}", topic_label, "#9c755f")
        published[(producer, topic)] = max(published.get((producer, topic), 0), edge.published)
        if edge.consumer_group is None:
            continue
        group = node("g:" + edge.consumer_group, _plain(edge.consumer_group), "#4e79a7")
        source.append(topic)
        target.append(group)
        value.append(max(edge.deliveries, 1))
        colour.append("rgba(200,50,58,0.55)" if edge.lost else "rgba(78,121,167,0.35)")
        p50 = _ns_to_ms(edge.processing.p50)
        wait = _ns_to_ms(edge.queue_wait.p50)
        text.append(
            f"{edge.deliveries} deliveries, {edge.handled} handled, {edge.errors} failed, "
            f"{edge.lost} lost, {edge.duplicates} duplicated<br>"
            f"median processing {p50 if p50 is None else round(p50, 2)} ms, "
            f"queue wait {wait if wait is None else round(wait, 2)} ms"
        )
    for (producer, topic), count in published.items():
        source.insert(0, producer)
        target.insert(0, topic)
        value.insert(0, max(count, 1))
        colour.insert(0, "rgba(89,161,79,0.35)")
        text.insert(0, f"{count} events published")
    fig = go.Figure(
        layout={
            **_LAYOUT,
            "height": max(320, 36 * len(labels)),
            "margin": {"l": 8, "r": 8, "t": 8, "b": 8},
            "meta": _NO_TOOLBAR,
        }
    )
    fig.add_trace(
        go.Sankey(
            arrangement="snap",
            node={"label": labels, "color": colours, "pad": 18, "thickness": 16},
            link={
                "source": source,
                "target": target,
                "value": value,
                "color": colour,
                "customdata": text,
                "hovertemplate": "%{customdata}<extra></extra>",
            },
        )
    )
    return figure_json(fig)
