"""OTLP export requests, protobuf or JSON, into :mod:`.records`; and the answers.

Both encodings of the OTLP specification (opentelemetry-proto, ``docs/specification.md``):

- **protobuf** (``application/x-protobuf``): parsed with opentelemetry-proto's generated
  classes, imported on the first protobuf request only (the daemon's idle footprint
  stays without them);
- **JSON** (``application/json``): decoded straight into the msgspec Structs below
  (lowerCamelCase names, unknown fields ignored). 64-bit integers may come as decimal
  strings or numbers, trace and span ids as hex (any case), enums as integers, doubles
  also as ``"NaN"``/``"Infinity"`` strings.

A body that is not a request of the signal's shape raises :class:`BadRequest` naming
where (msgspec's path, or protobuf's message). Ids of the wrong length are a bad
request too; an all-zero id is no id. A log record whose ``timeUnixNano`` is 0 takes
``observedTimeUnixNano``. Attribute values nest at most :data:`MAX_DEPTH` levels
(deeper ones are cut to their text).

The answers (:func:`success`, :func:`status`) are the service's response messages and
``google.rpc.Status``, in the request's encoding.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any, Literal

import msgspec
from msgspec import Struct

from telemetryd.adapters.otel.records import LogRecord, Point, Scope, Scoped, Span, SpanEvent

Signal = Literal["logs", "metrics", "traces"]
Encoding = Literal["protobuf", "json"]
MAX_DEPTH = 16


class BadRequest(Exception):
    """The body is not an export request of the signal's shape."""


# -- OTLP/JSON as msgspec Structs -----------------------------------------------------

Int64 = int | str


class _AnyValue(Struct, rename="camel", gc=False):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: Int64 | None = None
    double_value: float | str | None = None
    array_value: _ArrayValue | None = None
    kvlist_value: _KvList | None = None
    bytes_value: str | None = None


class _KeyValue(Struct, rename="camel", gc=False):
    key: str = ""
    value: _AnyValue | None = None


class _ArrayValue(Struct, rename="camel", gc=False):
    values: list[_AnyValue] = []


class _KvList(Struct, rename="camel", gc=False):
    values: list[_KeyValue] = []


class _Resource(Struct, rename="camel", gc=False):
    attributes: list[_KeyValue] = []


class _Scope(Struct, rename="camel", gc=False):
    name: str = ""
    version: str = ""


class _LogRecord(Struct, rename="camel", gc=False):
    time_unix_nano: Int64 = 0
    observed_time_unix_nano: Int64 = 0
    severity_number: int | str = 0
    severity_text: str = ""
    body: _AnyValue | None = None
    attributes: list[_KeyValue] = []
    trace_id: str = ""
    span_id: str = ""
    event_name: str = ""


class _ScopeLogs(Struct, rename="camel", gc=False):
    scope: _Scope | None = None
    log_records: list[_LogRecord] = []


class _ResourceLogs(Struct, rename="camel", gc=False):
    resource: _Resource | None = None
    scope_logs: list[_ScopeLogs] = []


class _LogsRequest(Struct, rename="camel", gc=False):
    resource_logs: list[_ResourceLogs] = []


class _Status(Struct, rename="camel", gc=False):
    code: int | str = 0
    message: str = ""


class _SpanEvent(Struct, rename="camel", gc=False):
    time_unix_nano: Int64 = 0
    name: str = ""
    attributes: list[_KeyValue] = []


class _Span(Struct, rename="camel", gc=False):
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    name: str = ""
    kind: int | str = 0
    start_time_unix_nano: Int64 = 0
    end_time_unix_nano: Int64 = 0
    attributes: list[_KeyValue] = []
    events: list[_SpanEvent] = []
    status: _Status | None = None


class _ScopeSpans(Struct, rename="camel", gc=False):
    scope: _Scope | None = None
    spans: list[_Span] = []


class _ResourceSpans(Struct, rename="camel", gc=False):
    resource: _Resource | None = None
    scope_spans: list[_ScopeSpans] = []


class _TracesRequest(Struct, rename="camel", gc=False):
    resource_spans: list[_ResourceSpans] = []


class _DataPoint(Struct, rename="camel", gc=False):
    """Number, histogram, exponential-histogram and summary points in one shape."""

    attributes: list[_KeyValue] = []
    start_time_unix_nano: Int64 = 0
    time_unix_nano: Int64 = 0
    as_double: float | str | None = None
    as_int: Int64 | None = None
    count: Int64 | None = None
    sum: float | str | None = None
    min: float | str | None = None
    max: float | str | None = None


class _Data(Struct, rename="camel", gc=False):
    data_points: list[_DataPoint] = []
    aggregation_temporality: int | str = 0
    is_monotonic: bool = False


class _Metric(Struct, rename="camel", gc=False):
    name: str = ""
    unit: str = ""
    gauge: _Data | None = None
    sum: _Data | None = None
    histogram: _Data | None = None
    exponential_histogram: _Data | None = None
    summary: _Data | None = None


class _ScopeMetrics(Struct, rename="camel", gc=False):
    scope: _Scope | None = None
    metrics: list[_Metric] = []


class _ResourceMetrics(Struct, rename="camel", gc=False):
    resource: _Resource | None = None
    scope_metrics: list[_ScopeMetrics] = []


class _MetricsRequest(Struct, rename="camel", gc=False):
    resource_metrics: list[_ResourceMetrics] = []


_JSON_DECODERS: dict[Signal, msgspec.json.Decoder[Any]] = {
    "logs": msgspec.json.Decoder(_LogsRequest),
    "metrics": msgspec.json.Decoder(_MetricsRequest),
    "traces": msgspec.json.Decoder(_TracesRequest),
}
_TEMPORALITY = {1: "delta", 2: "cumulative"}
_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")


def _int(value: int | str | None, where: str) -> int:
    if value is None or isinstance(value, int):
        return value or 0
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{where}: {value!r} is not an integer") from None


def _float(value: float | str | None, where: str) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    try:
        return float(value)  # "NaN", "Infinity", "-Infinity", or a number as text
    except ValueError:
        raise BadRequest(f"{where}: {value!r} is not a number") from None


def _hex_id(text: str, size: int, where: str) -> str:
    """A JSON trace (16 bytes) or span (8 bytes) id as lowercase hex; "" for none."""
    if not text:
        return ""
    if len(text) != 2 * size:
        raise BadRequest(f"{where}: {text!r} is not {size} bytes of hex")
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise BadRequest(f"{where}: {text!r} is not hex") from None
    return value.hex() if any(value) else ""


def _json_value(value: _AnyValue | None, depth: int = 0) -> Any:
    if value is None:
        return None
    if value.string_value is not None:
        return value.string_value
    if value.int_value is not None:
        return _int(value.int_value, "intValue")
    if value.bool_value is not None:
        return value.bool_value
    if value.double_value is not None:
        return _finite(_float(value.double_value, "doubleValue"))
    if depth >= MAX_DEPTH:
        return "…"
    if value.array_value is not None:
        return [_json_value(item, depth + 1) for item in value.array_value.values]
    if value.kvlist_value is not None:
        return {kv.key: _json_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if value.bytes_value is not None:
        return value.bytes_value  # (already base64 in OTLP/JSON)
    return None


def _finite(number: float | None) -> float | str | None:
    """JSON (and so the journal) has no NaN or infinity: those are kept as text."""
    if number is None or math.isfinite(number):
        return number
    return str(number)


def _json_attrs(pairs: list[_KeyValue]) -> dict[str, Any]:
    return {kv.key: _json_value(kv.value) for kv in pairs}


def _json_scope(resource: _Resource | None, scope: _Scope | None) -> Scope:
    attrs = _json_attrs(resource.attributes) if resource is not None else {}
    if scope is None:
        return Scope(attrs)
    return Scope(attrs, scope.name, scope.version)


def _from_json(signal: Signal, body: bytes) -> list[Scoped]:
    try:
        request = _JSON_DECODERS[signal].decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"not an OTLP {signal} request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"not JSON: {exc}") from None
    out: list[Scoped] = []
    if isinstance(request, _LogsRequest):
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                logs = [_json_log(record) for record in sl.log_records]
                out.append(Scoped(_json_scope(rl.resource, sl.scope), logs=logs))
    elif isinstance(request, _TracesRequest):
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                spans = [_json_span(span) for span in ss.spans]
                out.append(Scoped(_json_scope(rs.resource, ss.scope), spans=spans))
    else:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                points = [point for metric in sm.metrics for point in _json_points(metric)]
                out.append(Scoped(_json_scope(rm.resource, sm.scope), points=points))
    return out


def _json_log(record: _LogRecord) -> LogRecord:
    time_ns = _int(record.time_unix_nano, "timeUnixNano") or _int(
        record.observed_time_unix_nano, "observedTimeUnixNano"
    )
    severity = record.severity_number
    return LogRecord(
        time_ns=time_ns,
        attrs=_json_attrs(record.attributes),
        body=_json_value(record.body),
        severity_number=severity if isinstance(severity, int) else 0,
        severity_text=record.severity_text,
        event_name=record.event_name,
        trace_id=_hex_id(record.trace_id, 16, "traceId"),
        span_id=_hex_id(record.span_id, 8, "spanId"),
    )


def _json_span(span: _Span) -> Span:
    trace_id = _hex_id(span.trace_id, 16, "traceId")
    span_id = _hex_id(span.span_id, 8, "spanId")
    status = span.status
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        name=span.name,
        start_ns=_int(span.start_time_unix_nano, "startTimeUnixNano"),
        end_ns=_int(span.end_time_unix_nano, "endTimeUnixNano"),
        attrs=_json_attrs(span.attributes),
        parent_span_id=_hex_id(span.parent_span_id, 8, "parentSpanId"),
        kind=span.kind if isinstance(span.kind, int) else 0,
        status_code=status.code if status is not None and isinstance(status.code, int) else 0,
        status_message=status.message if status is not None else "",
        events=[
            SpanEvent(e.name, _int(e.time_unix_nano, "timeUnixNano"), _json_attrs(e.attributes))
            for e in span.events
        ],
    )


def _json_points(metric: _Metric) -> list[Point]:
    out: list[Point] = []
    for kind in _KINDS:
        data: _Data | None = getattr(metric, kind)
        if data is None:
            continue
        temporality = data.aggregation_temporality
        for p in data.data_points:
            value: float | int | str | None = None
            if p.as_int is not None:
                value = _int(p.as_int, "asInt")
            elif p.as_double is not None:
                value = _finite(_float(p.as_double, "asDouble"))
            out.append(
                Point(
                    metric=metric.name,
                    kind=kind,
                    time_ns=_int(p.time_unix_nano, "timeUnixNano"),
                    attrs=_json_attrs(p.attributes),
                    unit=metric.unit,
                    temporality=_TEMPORALITY.get(temporality, "")
                    if isinstance(temporality, int)
                    else "",
                    monotonic=data.is_monotonic,
                    start_ns=_int(p.start_time_unix_nano, "startTimeUnixNano"),
                    value=value if not isinstance(value, str) else None,
                    count=None if p.count is None else _int(p.count, "count"),
                    sum=_real(_float(p.sum, "sum")),
                    min=_real(_float(p.min, "min")),
                    max=_real(_float(p.max, "max")),
                )
            )
    return out


def _real(number: float | None) -> float | None:
    return number if number is None or math.isfinite(number) else None


# -- OTLP/protobuf ----------------------------------------------------------------------


def _pb_value(value: Any, depth: int = 0) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return _finite(value.double_value)
    if which is None:
        return None
    if depth >= MAX_DEPTH:
        return "…"
    if which == "array_value":
        return [_pb_value(item, depth + 1) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _pb_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    return base64.b64encode(value.bytes_value).decode()


def _pb_attrs(pairs: Any) -> dict[str, Any]:
    return {kv.key: _pb_value(kv.value) for kv in pairs}


def _pb_id(raw: bytes, size: int, where: str) -> str:
    if not raw or not any(raw):
        return ""
    if len(raw) != size:
        raise BadRequest(f"{where}: {len(raw)} bytes, expected {size}")
    return raw.hex()


def _pb_scope(resource: Any, scope: Any) -> Scope:
    return Scope(_pb_attrs(resource.attributes), scope.name, scope.version)


def _from_protobuf(signal: Signal, body: bytes) -> list[Scoped]:
    from google.protobuf.message import DecodeError

    message = _lite_logs() if signal == "logs" else _pb_classes()[signal][0]
    try:
        request = message.FromString(body)
    except (DecodeError, RecursionError) as exc:
        raise BadRequest(f"not an OTLP {signal} request (protobuf): {exc}") from None
    out: list[Scoped] = []
    if signal == "logs":
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                logs = [
                    LogRecord(
                        time_ns=r.time_unix_nano or r.observed_time_unix_nano,
                        attrs={key: _raw_value(value) for key, value in r.attributes.items()},
                        body=_raw_value(r.body),
                        severity_number=r.severity_number,
                        severity_text=r.severity_text,
                        event_name=r.event_name,
                        trace_id=_pb_id(r.trace_id, 16, "trace_id"),
                        span_id=_pb_id(r.span_id, 8, "span_id"),
                    )
                    for r in sl.log_records
                ]
                resource = {key: _raw_value(value) for key, value in rl.resource.attributes.items()}
                scope = Scope(resource, sl.scope.name, sl.scope.version)
                out.append(Scoped(scope, logs=logs))
    elif signal == "traces":
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                spans = [
                    Span(
                        trace_id=_pb_id(s.trace_id, 16, "trace_id"),
                        span_id=_pb_id(s.span_id, 8, "span_id"),
                        name=s.name,
                        start_ns=s.start_time_unix_nano,
                        end_ns=s.end_time_unix_nano,
                        attrs=_pb_attrs(s.attributes),
                        parent_span_id=_pb_id(s.parent_span_id, 8, "parent_span_id"),
                        kind=s.kind,
                        status_code=s.status.code,
                        status_message=s.status.message,
                        events=[
                            SpanEvent(e.name, e.time_unix_nano, _pb_attrs(e.attributes))
                            for e in s.events
                        ],
                    )
                    for s in ss.spans
                ]
                out.append(Scoped(_pb_scope(rs.resource, ss.scope), spans=spans))
    else:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                points = [point for metric in sm.metrics for point in _pb_points(metric)]
                out.append(Scoped(_pb_scope(rm.resource, sm.scope), points=points))
    return out


def _pb_points(metric: Any) -> list[Point]:
    kind = metric.WhichOneof("data")
    if kind is None:
        return []
    data = getattr(metric, kind)
    temporality = _TEMPORALITY.get(getattr(data, "aggregation_temporality", 0), "")
    monotonic = bool(getattr(data, "is_monotonic", False))
    out: list[Point] = []
    for p in data.data_points:
        point = Point(
            metric=metric.name,
            kind=kind,
            time_ns=p.time_unix_nano,
            attrs=_pb_attrs(p.attributes),
            unit=metric.unit,
            temporality=temporality,
            monotonic=monotonic,
            start_ns=p.start_time_unix_nano,
        )
        if kind in ("gauge", "sum"):
            which = p.WhichOneof("value")
            if which == "as_int":
                point.value = p.as_int
            elif which == "as_double":
                point.value = _real(p.as_double)
        else:
            point.count = p.count
            point.sum = _real(p.sum)
            if kind != "summary":
                point.min = _real(p.min) if p.HasField("min") else None
                point.max = _real(p.max) if p.HasField("max") else None
        out.append(point)
    return out


# Log records are the volume (an agent sends one per request, tool call, prompt ...),
# and building a Python object for each attribute of opentelemetry-proto's classes costs
# more than everything else about a record. So logs are parsed with a message of the same
# wire format in which each KeyValue list is a map<string, bytes> (a map entry is a
# message {1: key, 2: value}, exactly KeyValue's layout) and the body an AnyValue's raw
# bytes: upb makes the dict in C, and _raw_value reads the common scalar values itself.
_LITE: list[Any] = []


def _lite_logs() -> Any:
    """The ExportLogsServiceRequest look-alike described above (built once)."""
    if _LITE:
        return _LITE[0]
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    kind = descriptor_pb2.FieldDescriptorProto
    package = "telemetryd.otlp_lite"
    proto = descriptor_pb2.FileDescriptorProto(
        name="telemetryd_otlp_lite.proto", package=package, syntax="proto3"
    )
    one, many = kind.LABEL_OPTIONAL, kind.LABEL_REPEATED
    text, raw, message = kind.TYPE_STRING, kind.TYPE_BYTES, kind.TYPE_MESSAGE
    # name -> [(field, number, type, label, message type)]; as in opentelemetry-proto's
    # logs.proto, resource.proto and common.proto, fields left out are skipped on parsing.
    shapes: dict[str, list[tuple[str, int, int, int, str]]] = {
        "Resource": [("attributes", 1, message, many, "Resource.AttributesEntry")],
        "Scope": [("name", 1, text, one, ""), ("version", 2, text, one, "")],
        "LogRecord": [
            ("time_unix_nano", 1, kind.TYPE_FIXED64, one, ""),
            ("severity_number", 2, kind.TYPE_INT32, one, ""),
            ("severity_text", 3, text, one, ""),
            ("body", 5, raw, one, ""),
            ("attributes", 6, message, many, "LogRecord.AttributesEntry"),
            ("trace_id", 9, raw, one, ""),
            ("span_id", 10, raw, one, ""),
            ("observed_time_unix_nano", 11, kind.TYPE_FIXED64, one, ""),
            ("event_name", 12, text, one, ""),
        ],
        "ScopeLogs": [
            ("scope", 1, message, one, "Scope"),
            ("log_records", 2, message, many, "LogRecord"),
        ],
        "ResourceLogs": [
            ("resource", 1, message, one, "Resource"),
            ("scope_logs", 2, message, many, "ScopeLogs"),
        ],
        "Request": [("resource_logs", 1, message, many, "ResourceLogs")],
    }
    for name, fields in shapes.items():
        made = proto.message_type.add(name=name)
        for field, number, type_, label, type_name in fields:
            added = made.field.add(name=field, number=number, type=type_, label=label)
            if type_name:
                added.type_name = f".{package}.{type_name}"
            if type_name.endswith("AttributesEntry"):  # map<string, bytes>
                entry = made.nested_type.add(name="AttributesEntry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=text, label=one)
                entry.field.add(name="value", number=2, type=raw, label=one)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    request = pool.FindMessageTypeByName(f"{package}.Request")
    _LITE.append(message_factory.GetMessageClass(request))
    return _LITE[0]


_DOUBLE = struct.Struct("<d")


def _raw_value(raw: bytes) -> Any:
    """An AnyValue from its encoded bytes: strings, integers, doubles and booleans in one
    field read here, anything else (arrays, maps, bytes, odd encodings) by the real class."""
    size = len(raw)
    if not size:
        return None
    tag = raw[0]
    if tag == 0x0A and size > 1 and raw[1] < 0x80 and size == raw[1] + 2:  # string_value
        try:
            return raw[2:].decode()
        except UnicodeDecodeError:
            raise BadRequest("an attribute's string_value is not UTF-8") from None
    if tag == 0x18 and size <= 11:  # int_value, a varint
        number = 0
        shift = 0
        for byte in raw[1:]:
            number |= (byte & 0x7F) << shift
            shift += 7
        if raw[-1] < 0x80:
            return number - (1 << 64) if number >= 1 << 63 else number
    elif tag == 0x21 and size == 9:  # double_value
        return _finite(_DOUBLE.unpack_from(raw, 1)[0])
    elif tag == 0x10 and size == 2:  # bool_value
        return raw[1] != 0
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    try:
        return _pb_value(AnyValue.FromString(raw))
    except (DecodeError, RecursionError) as exc:
        raise BadRequest(f"an attribute value is not an AnyValue: {exc}") from None


_PB: dict[Signal, tuple[Any, Any]] = {}


def _pb_classes() -> dict[Signal, tuple[Any, Any]]:
    """(request class, response class) per signal, imported on first use."""
    if not _PB:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as traces

        _PB["logs"] = (logs.ExportLogsServiceRequest, logs.ExportLogsServiceResponse)
        _PB["metrics"] = (
            metrics.ExportMetricsServiceRequest,
            metrics.ExportMetricsServiceResponse,
        )
        _PB["traces"] = (traces.ExportTraceServiceRequest, traces.ExportTraceServiceResponse)
    return _PB


def decode(signal: Signal, encoding: Encoding, body: bytes) -> list[Scoped]:
    """The records of one export request; raises :class:`BadRequest`. An empty body is
    an empty request (no records)."""
    if not body:
        return []
    if encoding == "json":
        return _from_json(signal, body)
    return _from_protobuf(signal, body)


# -- answers ----------------------------------------------------------------------------

_REJECTED = {"logs": "rejected_log_records", "metrics": "rejected_data_points"}
_REJECTED["traces"] = "rejected_spans"


def success(signal: Signal, encoding: Encoding, rejected: int = 0, message: str = "") -> bytes:
    """The ExportXServiceResponse: empty, or with ``partial_success`` when records were
    rejected (the client must not retry those)."""
    field = _REJECTED[signal]
    if encoding == "json":
        if not rejected and not message:
            return b"{}"
        camel = "".join(part.capitalize() if i else part for i, part in enumerate(field.split("_")))
        partial = {camel: str(rejected), "errorMessage": message}
        return msgspec.json.encode({"partialSuccess": partial})
    response = _pb_classes()[signal][1]()
    if rejected or message:
        setattr(response.partial_success, field, rejected)
        response.partial_success.error_message = message
    data: bytes = response.SerializeToString()
    return data


def status(encoding: Encoding, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` (``code`` a gRPC code, e.g. 3 INVALID_ARGUMENT) for an
    error answer. Protobuf by hand: two fields, so no googleapis package for it."""
    if encoding == "json":
        return msgspec.json.encode({"code": code, "message": message})
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)
