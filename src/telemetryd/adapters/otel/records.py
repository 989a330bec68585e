"""OTLP's three signals as plain records, whatever the wire format they came in.

The decoders (:mod:`.wire`: OTLP/JSON through msgspec, OTLP/protobuf through
opentelemetry-proto's classes) turn an export request into a list of
:class:`Scoped` groups; the mappers (:mod:`.mapping` and the per-agent modules)
turn each record into events of the model. Attribute values are plain Python
(``str``, ``int``, ``float``, ``bool``, ``list``, ``dict``; bytes as base64
text); ids are lowercase hex, ``""`` when absent or all zero. Times are
nanoseconds since the Unix epoch, 0 when unknown.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class Scope(Struct, gc=False):
    """Where a group of records came from: the resource's attributes (``service.name``
    tells which agent) and the instrumentation scope."""

    resource: dict[str, Any]
    name: str = ""
    version: str = ""

    @property
    def service(self) -> str:
        name = self.resource.get("service.name")
        return name if isinstance(name, str) else ""


class LogRecord(Struct, gc=False):
    time_ns: int  # timeUnixNano, or observedTimeUnixNano when that is 0
    attrs: dict[str, Any]
    body: Any = None
    severity_number: int = 0
    severity_text: str = ""
    event_name: str = ""  # LogRecord.event_name (OTLP 1.5+)
    trace_id: str = ""
    span_id: str = ""
    # Every value of attrs is known to be plain (a string of at most common.MAX_TEXT
    # characters, an int, a bool, a finite float or None): common.clean need not look.
    plain: bool = False


class SpanEvent(Struct, gc=False):
    name: str
    time_ns: int
    attrs: dict[str, Any]


class Span(Struct, gc=False):
    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    parent_span_id: str = ""
    kind: int = 0  # SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, ...
    status_code: int = 0  # 0 unset, 1 ok, 2 error
    status_message: str = ""
    events: list[SpanEvent] = []


class Point(Struct, gc=False):
    """One data point of one metric."""

    metric: str
    kind: str  # "sum", "gauge", "histogram", "exponential_histogram", "summary"
    time_ns: int
    attrs: dict[str, Any]
    unit: str = ""
    temporality: str = ""  # "delta", "cumulative" (sums and histograms), else ""
    monotonic: bool = False
    start_ns: int = 0
    value: float | int | None = None  # sums and gauges
    count: int | None = None  # histograms and summaries
    sum: float | None = None
    min: float | None = None
    max: float | None = None


class Scoped(Struct, gc=False):
    """The records of one scope of one resource, as they arrived."""

    scope: Scope
    logs: list[LogRecord] = []
    spans: list[Span] = []
    points: list[Point] = []
