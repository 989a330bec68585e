"""telemetryd's own events as OTLP, for forwarding (daemon/forward.py), and back.

The form on the wire is OTLP/JSON (``application/json``), built here from the journal's
lines without a protobuf class (docs/forward.md says why):

- **logs**: every event is one log record in the instrumentation scope
  :data:`SCOPE` (version :data:`SCOPE_VERSION`): its ``body`` is the canonical event,
  the journal line itself, as a string; ``timeUnixNano`` its ``ts``,
  ``observedTimeUnixNano`` its ``received_at``, ``eventName`` ``telemetryd.<type>``,
  ``traceId``/``spanId`` its trace and span ids when they are OTLP ids (32 and 16 hex
  digits), and the attributes ``telemetryd.event.id``, ``telemetryd.event.type``,
  ``telemetryd.source`` and ``session.id``, so a Collector and what it writes to can
  select and deduplicate without parsing the body. This is the lossless form: a
  receiving telemetryd takes the body as the event (:func:`forwarded_line`), so it
  keeps the same event, id and ``received_at`` included, however often it is resent.
- **traces**: ``span`` events whose trace and span ids are OTLP ids, as spans (start
  ``ts``, end ``ts + duration_ms``, status from ``success``/``error``, the event's
  ``attrs`` as attributes), for tracing back ends;
- **metrics**: ``metric`` events as one data point each: a ``counter`` is a monotonic
  sum (delta unless ``attrs.temporality`` says ``cumulative``), a ``gauge`` a gauge, a
  ``histogram`` a histogram without buckets (``value`` its sum, ``attrs.count``,
  ``min``, ``max``).

Spans and data points of :data:`SCOPE` carry ``telemetryd.event.id`` too; a receiving
telemetryd maps none of them (the same events come as log records), so forwarding every
signal to another telemetryd still gives it each event once.

The resource names the sender: ``service.name`` ``telemetryd``, ``service.version``,
``host.name``, and the ``[forward] resource`` attributes.
"""

from __future__ import annotations

import contextlib
import math
from datetime import UTC, datetime
from typing import Any

import msgspec

SCOPE = "telemetryd.forward"
SCOPE_VERSION = "1"
SIGNALS = ("logs", "traces", "metrics")
ID_KEY = "telemetryd.event.id"
TYPE_KEY = "telemetryd.event.type"
SOURCE_KEY = "telemetryd.source"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX = frozenset("0123456789abcdef")
_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
_encode = msgspec.json.Encoder().encode


class _Head(msgspec.Struct, gc=False):
    """The envelope fields a log record shows outside its body (the rest is skipped)."""

    type: str = ""
    id: str = ""
    ts: datetime | None = None
    received_at: datetime | None = None
    source: str | None = None
    session_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None


_HEADS = msgspec.json.Decoder(_Head)


class Requests(msgspec.Struct, gc=False):
    """One batch of journal lines as export requests: ``bodies`` per signal (only the
    signals that have records), ``records`` per signal, and ``events`` selected (by
    type) of the ``lines`` read; ``skipped`` lines could not be read as events."""

    bodies: dict[str, bytes]
    records: dict[str, int]
    events: int
    lines: int
    skipped: int = 0


def resource(extra: dict[str, str], host: str, version: str) -> bytes:
    """The ``resource`` object of every request (JSON)."""
    attrs = {"service.name": "telemetryd", "service.version": version}
    if host:
        attrs["host.name"] = host
    attrs.update(extra)
    return _encode({"attributes": [_kv(key, value) for key, value in attrs.items()]})


def encode(
    data: bytes,
    *,
    signals: tuple[str, ...] | list[str],
    types: frozenset[str],
    resource_json: bytes,
) -> Requests:
    """The export requests for ``data`` (complete journal lines, each ending in a newline).

    ``types``: the event types to send (empty: all). A line that is not an event (never
    written by the daemon, but a journal is a file) is skipped and counted."""
    logs: list[bytes] = []
    spans: list[bytes] = []
    points: list[bytes] = []
    want_logs = "logs" in signals
    want_spans = "traces" in signals
    want_points = "metrics" in signals
    decode = _HEADS.decode
    lines = data.split(b"\n")
    lines.pop()  # (after the last newline)
    events = skipped = 0
    for line in lines:
        try:
            head = decode(line)
        except msgspec.DecodeError:
            skipped += 1
            continue
        if types and head.type not in types:
            continue
        events += 1
        if want_logs:
            logs.append(_log_record(head, line))
        if want_spans and head.type == "span":
            span = _span(head, line)
            if span is not None:
                spans.append(span)
        elif want_points and head.type == "metric":
            point = _metric(head, line)
            if point is not None:
                points.append(point)
    bodies: dict[str, bytes] = {}
    records: dict[str, int] = {}
    for signal, items, outer, inner in (
        ("logs", logs, b'{"resourceLogs":[{"resource":', b'"scopeLogs":'),
        ("traces", spans, b'{"resourceSpans":[{"resource":', b'"scopeSpans":'),
        ("metrics", points, b'{"resourceMetrics":[{"resource":', b'"scopeMetrics":'),
    ):
        if not items:
            continue
        key = {"logs": b"logRecords", "traces": b"spans", "metrics": b"metrics"}[signal]
        bodies[signal] = b"".join(
            (
                outer,
                resource_json,
                b",",
                inner,
                b'[{"scope":{"name":"' + SCOPE.encode() + b'","version":"',
                SCOPE_VERSION.encode(),
                b'"},"' + key + b'":[',
                b",".join(items),
                b"]}]}]}",
            )
        )
        records[signal] = len(items)
    return Requests(bodies, records, events, len(lines), skipped)


def _ns(moment: datetime | None) -> int:
    if moment is None:
        return 0
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _otlp_id(value: str | None, size: int) -> str:
    """``value`` when it is an OTLP id of ``size`` bytes (lowercase hex, not all zero)."""
    if value is None or len(value) != 2 * size or not _HEX.issuperset(value):
        return ""
    return value if value.strip("0") else ""


def _string(value: str) -> bytes:
    return b'{"stringValue":' + _encode(value) + b"}"


_RECORD = (
    b'{"timeUnixNano":"%d","observedTimeUnixNano":"%d","eventName":"telemetryd.%s",'
    b'"body":{"stringValue":"%s"},"attributes":['
    b'{"key":"telemetryd.event.id","value":{"stringValue":%s}},'
    b'{"key":"telemetryd.event.type","value":{"stringValue":"%s"}}%s]%s}'
)


def _log_record(head: _Head, line: bytes) -> bytes:
    # The line is canonical JSON: no raw control characters, so escaping quotes and
    # backslashes makes it a JSON string. (A type is a tag of the model: [a-z_].)
    body = line.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    kind = head.type.encode()
    more = b""
    if head.source:
        more += (
            b',{"key":"telemetryd.source","value":{"stringValue":' + _encode(head.source) + b"}}"
        )
    if head.session_id:
        more += b',{"key":"session.id","value":{"stringValue":' + _encode(head.session_id) + b"}}"
    ids = b""
    trace_id = _otlp_id(head.trace_id, 16)
    if trace_id:
        ids = b',"traceId":"' + trace_id.encode() + b'"'
        span_id = _otlp_id(head.span_id, 8)
        if span_id:
            ids += b',"spanId":"' + span_id.encode() + b'"'
    return _RECORD % (
        _ns(head.ts),
        _ns(head.received_at),
        kind,
        body,
        _encode(head.id),
        kind,
        more,
        ids,
    )


# -- traces and metrics: fewer events, built from the whole event ------------------------


def _value(value: Any, depth: int = 0) -> dict[str, Any]:
    """A JSON value as an OTLP ``AnyValue`` (JSON mapping)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return (
            {"intValue": str(value)} if -(2**63) <= value < 2**63 else {"stringValue": str(value)}
        )
    if isinstance(value, float):
        return {"doubleValue": value if math.isfinite(value) else str(value)}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, list) and depth < 8:
        return {"arrayValue": {"values": [_value(item, depth + 1) for item in value]}}
    if isinstance(value, dict) and depth < 8:
        items = [_kv(str(key), item, depth + 1) for key, item in value.items()]
        return {"kvlistValue": {"values": items}}
    if value is None:
        return {}
    return {"stringValue": _encode(value).decode()}


def _kv(key: str, value: Any, depth: int = 0) -> dict[str, Any]:
    return {"key": key, "value": _value(value, depth)}


def _common_attrs(event: dict[str, Any], head: _Head) -> list[dict[str, Any]]:
    out = [_kv(ID_KEY, head.id)]
    if head.source:
        out.append(_kv(SOURCE_KEY, head.source))
    if head.session_id:
        out.append(_kv("session.id", head.session_id))
    model = (event.get("agent") or {}).get("model")
    if isinstance(model, str):
        out.append(_kv("gen_ai.request.model", model))
    return out


def _span(head: _Head, line: bytes) -> bytes | None:
    trace_id = _otlp_id(head.trace_id, 16)
    span_id = _otlp_id(head.span_id, 8)
    if not trace_id or not span_id:
        return None
    event = msgspec.json.decode(line)
    start = _ns(head.ts)
    duration = event.get("duration_ms")
    end = start + int(duration) * 1_000_000 if isinstance(duration, int) else start
    attrs = _common_attrs(event, head)
    attrs.extend(_kv(str(key), value) for key, value in (event.get("attrs") or {}).items())
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": str(event.get("name") or "span"),
        "kind": _KINDS.get(event.get("kind") or "", 0),
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": attrs,
    }
    parent = _otlp_id(event.get("parent_span_id"), 8)
    if parent:
        span["parentSpanId"] = parent
    success = event.get("success")
    if success is True:
        span["status"] = {"code": 1}
    elif success is False:
        span["status"] = {"code": 2, "message": str(event.get("error") or "")}
    return _encode(span)


_POINT_KEYS = frozenset({"otel.kind", "temporality", "count", "min", "max", "start", "resource"})


def _metric(head: _Head, line: bytes) -> bytes | None:
    event = msgspec.json.decode(line)
    value = event.get("value")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    attrs = event.get("attrs") or {}
    point_attrs = _common_attrs(event, head)
    point_attrs.extend(_kv(str(k), v) for k, v in attrs.items() if k not in _POINT_KEYS)
    point: dict[str, Any] = {"timeUnixNano": str(_ns(head.ts)), "attributes": point_attrs}
    start = attrs.get("start")
    if isinstance(start, str):
        with contextlib.suppress(ValueError):
            point["startTimeUnixNano"] = str(_ns(datetime.fromisoformat(start)))
    temporality = 2 if attrs.get("temporality") == "cumulative" else 1
    kind = event.get("kind")
    metric: dict[str, Any] = {"name": str(event.get("name") or "metric")}
    if isinstance(event.get("unit"), str):
        metric["unit"] = event["unit"]
    if kind == "counter":
        point["asDouble"] = float(value)
        metric["sum"] = {
            "dataPoints": [point],
            "aggregationTemporality": temporality,
            "isMonotonic": True,
        }
    elif kind == "histogram":
        count = attrs.get("count")
        point["count"] = str(count if isinstance(count, int) and count >= 0 else 1)
        point["sum"] = float(value)
        for bound in ("min", "max"):
            if isinstance(attrs.get(bound), (int, float)) and math.isfinite(attrs[bound]):
                point[bound] = float(attrs[bound])
        metric["histogram"] = {"dataPoints": [point], "aggregationTemporality": temporality}
    else:
        point["asDouble"] = float(value)
        metric["gauge"] = {"dataPoints": [point]}
    return _encode(metric)


# -- the receiving side -------------------------------------------------------------------


def forwarded_line(body: Any) -> bytes | None:
    """The journal line a forwarded log record carries (its body), or None when the body
    is not one (not a string holding one JSON object on one line)."""
    if not isinstance(body, str) or not body.startswith("{") or "\n" in body:
        return None
    return body.encode("utf-8", "surrogatepass") + b"\n"
