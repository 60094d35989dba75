"""Plotly figures built in Python (``plotly.graph_objects``), sent as ``fig.to_json()``.

The page puts each figure's JSON in a ``<script type="application/json">`` block; the
static script draws it with ``Plotly.newPlot``. Times are sent as epoch milliseconds and
the x axes are typed ``date``, so the browser shows them in its own time zone.
"""

from __future__ import annotations

import plotly.graph_objects as go
from eventscope.queries._overview import Overview

__all__ = ["activity", "figure_json"]

_LAYOUT = {
    "margin": {"l": 48, "r": 16, "t": 28, "b": 36},
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"family": "system-ui, sans-serif", "size": 12},
    "legend": {"orientation": "h", "y": -0.18},
    "hovermode": "x unified",
}


#: An x axis of epoch milliseconds that the page turns into the browser's local time.
_LOCAL_TIME_X = {"xaxis": {"type": "date"}, "meta": {"local_time_x": True}}


def figure_json(fig: go.Figure) -> str:
    """The figure as JSON text (escaped for the page by the template's ``json_block``)."""
    return fig.to_json(validate=False)


def _ms(ns: int) -> float:
    return ns / 1_000_000


def activity(summary: Overview) -> str:
    """Spans, requests, errors, publishes and failed deliveries per time bucket."""
    x = [_ms(b.start_ns) for b in summary.activity]
    fig = go.Figure(layout={**_LAYOUT, **_LOCAL_TIME_X, "height": 300})
    for name, values, colour in (
        ("spans", [b.spans for b in summary.activity], "#4e79a7"),
        ("requests", [b.requests for b in summary.activity], "#59a14f"),
        ("events published", [b.publishes for b in summary.activity], "#9c755f"),
        ("deliveries", [b.deliveries for b in summary.activity], "#76b7b2"),
        ("errors", [b.errors for b in summary.activity], "#e15759"),
        ("failed deliveries", [b.failed_deliveries for b in summary.activity], "#f28e2b"),
    ):
        fig.add_trace(go.Scatter(x=x, y=values, name=name, mode="lines", line_shape="hv",
                                 line={"color": colour, "width": 2}))  # fmt: skip
    return figure_json(fig)
