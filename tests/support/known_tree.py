"""The known tree the browser tests look at, as OTLP protobuf spans.

A request that fans out through parent/child edges and span links across traces, with a
correlation-only edge (audit), an error and its redelivery (inventory), a dead-lettered,
so lost, delivery (loyalty), a processed-twice duplicate (analytics), an out-of-order
delivery (billing handles OrderConfirmed, sequence 2, before OrderPlaced, sequence 1), and
a span name and an attribute that try to inject HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector_process import Collector
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from otlp_requests import PROTOBUF, traces

XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_VALUE = "</script><script>alert(2)</script>"


def _attrs(**values: object) -> list[KeyValue]:
    out = []
    for key, value in values.items():
        key = key.replace("__", ".")
        if isinstance(value, bool):
            any_value = AnyValue(bool_value=value)
        elif isinstance(value, int):
            any_value = AnyValue(int_value=value)
        else:
            any_value = AnyValue(string_value=str(value))
        out.append(KeyValue(key=key, value=any_value))
    return out


_KINDS = {
    "server": trace_pb2.Span.SPAN_KIND_SERVER,
    "producer": trace_pb2.Span.SPAN_KIND_PRODUCER,
    "consumer": trace_pb2.Span.SPAN_KIND_CONSUMER,
    "client": trace_pb2.Span.SPAN_KIND_CLIENT,
    "internal": trace_pb2.Span.SPAN_KIND_INTERNAL,
}


@dataclass(frozen=True)
class Node:
    """One span of the known tree; times are ms after the request started."""

    key: str
    service: str
    name: str
    kind: str
    trace: str
    start_ms: float
    duration_ms: float
    parent: str | None = None
    link_to: str | None = None
    error: bool = False
    attributes: dict[str, object] = field(default_factory=dict)


def _hex(n: int, width: int) -> str:
    return f"{n:0{width}x}"


TRACES = {name: _hex(0xE5C0_0000 + i, 32) for i, name in enumerate("ABCDEFGH", start=1)}
EVENT_PLACED = "evt-order-placed-1"
EVENT_CONFIRMED = "evt-order-confirmed-1"
EVENT_PAYMENT = "evt-payment-1"
EVENT_AUDIT = "evt-audit-1"
CORRELATION = "corr-4711"


def _event(event_id: str, event_type: str, destination: str) -> dict[str, object]:
    return {
        "messaging__system": "bus",
        "messaging__destination__name": destination,
        "messaging__message__id": event_id,
        "cloudevents__event_type": event_type,
        "messaging__message__conversation_id": CORRELATION,
    }


def _delivery(
    event: dict[str, object],
    group: str,
    handler: str,
    attempt: int,
    outcome: str,
    published_ms: float,
) -> dict[str, object]:
    return {
        **event,
        "messaging__operation__type": "process",
        "messaging__consumer__group__name": group,
        "eventscope__handler": handler,
        "eventscope__delivery__attempt": attempt,
        "eventscope__outcome": outcome,
        "eventscope__publish_time": published_ms,
    }


_PLACED = {
    **_event(EVENT_PLACED, "OrderPlaced", "orders"),
    "cloudevents__event_subject": "order-1",
    "eventscope__entity__sequence": 1,
}
_CONFIRMED = {
    **_event(EVENT_CONFIRMED, "OrderConfirmed", "orders"),
    "cloudevents__event_subject": "order-1",
    "eventscope__entity__sequence": 2,
}
_PAYMENT = _event(EVENT_PAYMENT, "PaymentRequested", "payments")
_AUDIT = _event(EVENT_AUDIT, "AuditRecorded", "audit")

#: The request and everything that happened because of it.
KNOWN_TREE: tuple[Node, ...] = (
    Node("request", "api", "POST /orders", "server", "A", 0, 40,
         attributes={"http.request.method": "POST", "xss.note": XSS_VALUE,
                     "messaging__message__conversation_id": CORRELATION}),
    Node("insert", "api", "INSERT orders", "client", "A", 2, 6, parent="request"),
    Node("send_placed", "api", "send orders", "producer", "A", 10, 2, parent="request",
         attributes={**_PLACED, "messaging__operation__type": "send"}),
    Node("send_confirmed", "api", "send orders", "producer", "A", 8, 1, parent="request",
         attributes={**_CONFIRMED, "messaging__operation__type": "send"}),
    Node("billing_confirmed", "billing", "process orders", "consumer", "A", 15, 4,
         parent="send_confirmed",
         attributes=_delivery(_CONFIRMED, "billing", "charge", 1, "ok", 8)),
    Node("billing", "billing", "process orders", "consumer", "A", 25, 30, parent="send_placed",
         attributes=_delivery(_PLACED, "billing", "charge", 1, "ok", 10)),
    Node("send_payment", "billing", "send payments", "producer", "A", 40, 2, parent="billing",
         attributes={**_PAYMENT, "messaging__operation__type": "send"}),
    Node("email", "email", "process orders", "consumer", "B", 60, 80, link_to="send_placed",
         attributes=_delivery(_PLACED, "email", "send_confirmation", 1, "ok", 10)),
    Node("analytics_1", "analytics", "process orders", "consumer", "C", 30, 5,
         link_to="send_placed",
         attributes=_delivery(_PLACED, "analytics", "count_order", 1, "ok", 10)),
    Node("analytics_2", "analytics", "process orders", "consumer", "D", 90, 5,
         link_to="send_placed",
         attributes=_delivery(_PLACED, "analytics", "count_order", 2, "ok", 10)),
    Node("inventory_1", "inventory", "process orders", "consumer", "E", 20, 12,
         link_to="send_placed", error=True,
         attributes=_delivery(_PLACED, "inventory", "reserve", 1, "error", 10)),
    Node("inventory_2", "inventory", "process orders", "consumer", "E", 150, 15,
         link_to="send_placed",
         attributes=_delivery(_PLACED, "inventory", "reserve", 2, "ok", 10)),
    Node("loyalty", "loyalty", "process orders", "consumer", "F", 35, 4, link_to="send_placed",
         error=True,
         attributes=_delivery(_PLACED, "loyalty", "award_points", 1, "dead_lettered", 10)),
    Node("ledger", "ledger", "process payments", "consumer", "G", 70, 20,
         link_to="send_payment",
         attributes=_delivery(_PAYMENT, "ledger", "book", 1, "ok", 40)),
    Node("audit", "audit", XSS_NAME, "consumer", "H", 200, 10,
         attributes={**_delivery(_AUDIT, "audit", "record", 1, "ok", 190),
                     "xss.payload": XSS_VALUE}),
)  # fmt: skip


#: Requests beside the known tree (for the requests list): (service, name, error, children).
OTHER_REQUESTS = (
    ("web", "GET /orders/1", False, 0),
    ("web", "GET /orders/2", True, 0),
    ("refunds", "POST /refunds", False, 2),
)


def other_request_spans(start_ns: int) -> dict[str, list[trace_pb2.Span]]:
    """Small requests, a second apart, starting a minute after ``start_ns``."""
    services: dict[str, list[trace_pb2.Span]] = {}
    for i, (service, name, error, children) in enumerate(OTHER_REQUESTS, start=1):
        trace = bytes.fromhex(_hex(0xF00D_0000 + i, 32))
        root = bytes.fromhex(_hex(0xF00D_0000 + i * 16, 16))
        start = start_ns + (60 + i) * 1_000_000_000
        spans = services.setdefault(service, [])
        code = trace_pb2.Status.STATUS_CODE_ERROR if error else 0
        spans.append(
            trace_pb2.Span(
                trace_id=trace,
                span_id=root,
                name=name,
                kind=_KINDS["server"],
                start_time_unix_nano=start,
                end_time_unix_nano=start + 5_000_000,
                status=trace_pb2.Status(code=code),
                attributes=_attrs(http__request__method=name.split()[0]),
            )
        )
        for c in range(children):
            spans.append(
                trace_pb2.Span(
                    trace_id=trace,
                    span_id=bytes.fromhex(_hex(0xF00D_0000 + i * 16 + c + 1, 16)),
                    parent_span_id=root,
                    name="UPDATE payments",
                    kind=_KINDS["client"],
                    start_time_unix_nano=start + 1_000_000,
                    end_time_unix_nano=start + 2_000_000,
                )
            )
    return services


@dataclass(frozen=True)
class Shop:
    """The populated collector and where the known tree landed."""

    collector: Collector
    start_ns: int
    span_ids: dict[str, str]

    @property
    def root(self) -> str:
        """The request's trace id."""
        return TRACES["A"]

    def trace_of(self, key: str) -> str:
        """The trace id of node ``key``."""
        node = next(n for n in KNOWN_TREE if n.key == key)
        return TRACES[node.trace]


def known_tree_spans(
    start_ns: int, nodes: tuple[Node, ...] = KNOWN_TREE
) -> tuple[dict[str, str], dict[str, list[trace_pb2.Span]]]:
    """The known tree (or other ``nodes``) as OTLP spans grouped by service; and each
    node's span id."""
    span_ids = {n.key: _hex(0xB0B0_0000 + i, 16) for i, n in enumerate(nodes, start=1)}
    by_key = {n.key: n for n in nodes}
    services: dict[str, list[trace_pb2.Span]] = {}
    for node in nodes:
        start = start_ns + int(node.start_ms * 1e6)
        attributes = dict(node.attributes)
        if "eventscope__publish_time" in attributes:
            attributes["eventscope__publish_time"] = start_ns + int(
                float(attributes["eventscope__publish_time"]) * 1e6  # type: ignore[arg-type]
            )
        links = []
        if node.link_to is not None:
            target = by_key[node.link_to]
            link = trace_pb2.Span.Link(
                trace_id=bytes.fromhex(TRACES[target.trace]),
                span_id=bytes.fromhex(span_ids[target.key]),
            )
            links.append(link)
        status = trace_pb2.Status(
            code=trace_pb2.Status.STATUS_CODE_ERROR if node.error else 0,
            message="inventory database timed out" if node.error else "",
        )
        span = trace_pb2.Span(
            trace_id=bytes.fromhex(TRACES[node.trace]),
            span_id=bytes.fromhex(span_ids[node.key]),
            parent_span_id=bytes.fromhex(span_ids[node.parent]) if node.parent else b"",
            name=node.name,
            kind=_KINDS[node.kind],
            start_time_unix_nano=start,
            end_time_unix_nano=start + int(node.duration_ms * 1e6),
            attributes=_attrs(**attributes),
            links=links,
            status=status,
        )
        if node.error:
            span.events.add(
                time_unix_nano=start + 1_000_000,
                name="exception",
                attributes=_attrs(exception__type="TimeoutError", exception__message=XSS_NAME),
            )
        services.setdefault(node.service, []).append(span)
    return span_ids, services


def post_known_tree(server: Collector, start_ns: int) -> dict[str, str]:
    """POST the known tree (one request per service) and wait for each commit."""
    span_ids, services = known_tree_spans(start_ns)
    for service, spans in other_request_spans(start_ns).items():
        services.setdefault(service, []).extend(spans)
    for service, spans in services.items():
        status, _, body = server.post("/v1/traces", traces(*spans, service=service), PROTOBUF)
        assert status == 200, body
    return span_ids
