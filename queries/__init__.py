"""eventscope.queries — the read side: SQL over the public schema behind typed functions.

Every function takes a DuckDB connection or cursor first and returns frozen records
(``to_json()`` gives the API's JSON). Times are integer nanoseconds since the epoch.

- :func:`fanout_tree` — everything that happened because of one request, across traces;
- :func:`requests` — originating requests with the size and health of their trees;
- :func:`handler_latency` — count, throughput, errors, processing and queue-wait percentiles;
- :func:`lost_events`, :func:`duplicate_events`, :func:`orphan_deliveries`,
  :func:`out_of_order` (:func:`out_of_order_page`: a count and a page of it),
  :func:`version_mix` — the event ledger;
- :func:`topology` — the choreography map (:func:`topology_parts`: all of it but the lost
  events, which a caller may read at the same time);
- :func:`overview`, :func:`latency_histogram`, :func:`span_detail` — what the UI's overview,
  handler and span panels show;
- :func:`run_sql` — one read-only SELECT;
- :func:`parse_params` — query-string text into the typed parameters of one of those reads
  (``RequestsParams``, ``TreeParams`` …, each with a ``run``): what the API, the pages and
  the CLI all parse with;
- :data:`schema` (``eventscope.queries.schema``) — the public schema's one owner: tables,
  the collector's Arrow schemas, promoted columns, ``SCHEMA_VERSION``;
- :func:`ledger_totals` — the ledger's counts per (event type, destination, group), for
  the collector's ``/metrics`` series;
- :func:`gc_paused` — the cyclic garbage collector paused while many small objects are
  built (a tree here; decoded rows in the collector).

Imports only go collector → ui → queries: nothing here imports those packages.
"""

from ._duplicates import DUPLICATE_KINDS, duplicate_events, orphan_deliveries
from ._errors import (
    BadParameter,
    EventscopeError,
    NotFound,
    NotReadOnly,
    QueryError,
    ResultTooLarge,
)
from ._gc import gc_paused
from ._histogram import LatencyBin, LatencyHistogram, latency_histogram
from ._latency import GROUP_BY, handler_latency
from ._ledger import DEFAULT_GRACE_NS, lost_events
from ._ledger import SKEW_NS as LEDGER_SKEW_NS
from ._ledger_totals import LATENCY_BUCKETS, TotalRow, ledger_totals
from ._order import out_of_order, out_of_order_page, version_mix
from ._overview import ActivityBucket, EventTypeSummary, Overview, ServiceSummary, overview
from ._params import (
    MAX_WHOLE,
    DuplicatesParams,
    LatencyParams,
    LostParams,
    OrphansParams,
    OutOfOrderParams,
    RequestsParams,
    SqlParams,
    TopologyParams,
    TreeParams,
    VersionsParams,
    Window,
    parse_choice,
    parse_int,
    parse_params,
)
from ._records import (
    DuplicateEvent,
    LostEvent,
    OrphanDelivery,
    OutOfOrderDelivery,
    VersionCount,
    VersionMix,
    fields_are_json,
    to_json_value,
)
from ._records_stats import (
    HandlerLatency,
    LatencyBucket,
    LatencyRow,
    LatencyStats,
    Percentiles,
    Topology,
    TopologyEdge,
)
from ._records_tree import (
    CriticalHop,
    DuplicateMark,
    FanoutTree,
    LostMark,
    PlacedNode,
    RequestPage,
    RequestSummary,
    TreeNode,
)
from ._requests import SORTS, requests
from ._span_detail import LinkedSpan, SpanDetail, SpanEvent, span_detail
from ._sql import SqlResult, check_read_only, run_sql
from ._times import format_time, now_ns, parse_duration, parse_time
from ._topology import TopologyParts, topology, topology_parts
from ._tree import fanout_tree
from ._views import VIEWS_SQL

__all__ = [
    "DEFAULT_GRACE_NS",
    "DUPLICATE_KINDS",
    "GROUP_BY",
    "LATENCY_BUCKETS",
    "LEDGER_SKEW_NS",
    "MAX_WHOLE",
    "SORTS",
    "VIEWS_SQL",
    "ActivityBucket",
    "BadParameter",
    "CriticalHop",
    "DuplicateEvent",
    "DuplicateMark",
    "DuplicatesParams",
    "EventTypeSummary",
    "EventscopeError",
    "FanoutTree",
    "HandlerLatency",
    "LatencyBin",
    "LatencyBucket",
    "LatencyHistogram",
    "LatencyParams",
    "LatencyRow",
    "LatencyStats",
    "LinkedSpan",
    "LostEvent",
    "LostMark",
    "LostParams",
    "NotFound",
    "NotReadOnly",
    "OrphanDelivery",
    "OrphansParams",
    "OutOfOrderDelivery",
    "OutOfOrderParams",
    "Overview",
    "Percentiles",
    "PlacedNode",
    "QueryError",
    "RequestPage",
    "RequestSummary",
    "RequestsParams",
    "ResultTooLarge",
    "ServiceSummary",
    "SpanDetail",
    "SpanEvent",
    "SqlParams",
    "SqlResult",
    "Topology",
    "TopologyEdge",
    "TopologyParams",
    "TopologyParts",
    "TotalRow",
    "TreeNode",
    "TreeParams",
    "VersionCount",
    "VersionMix",
    "VersionsParams",
    "Window",
    "check_read_only",
    "duplicate_events",
    "fanout_tree",
    "fields_are_json",
    "format_time",
    "gc_paused",
    "handler_latency",
    "latency_histogram",
    "ledger_totals",
    "lost_events",
    "now_ns",
    "orphan_deliveries",
    "out_of_order",
    "out_of_order_page",
    "overview",
    "parse_choice",
    "parse_duration",
    "parse_int",
    "parse_params",
    "parse_time",
    "requests",
    "run_sql",
    "span_detail",
    "to_json_value",
    "topology",
    "topology_parts",
    "version_mix",
]
