"""OTLP/JSON export requests into :mod:`.records` (adapters/otel/wire.py dispatches here).

The request is decoded straight into the msgspec Structs below, which follow the
specification's JSON mapping of opentelemetry-proto: lowerCamelCase names, unknown
fields ignored, 64-bit integers as decimal strings or numbers, trace and span ids as
hex (any case; :class:`~.wire.BadRequest` for another length), enums as integers or,
as proto3's JSON mapping also allows, by name (``"SEVERITY_NUMBER_ERROR"``: the OTLP
specification asks senders for integers, but some write names; a name not known is 0,
the field's "unspecified").
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from telemetryd.adapters.otel import forwarded
from telemetryd.adapters.otel.records import LogRecord, Point, Scope, Scoped, Span, SpanEvent
from telemetryd.adapters.otel.wire import (
    KINDS,
    MAX_DEPTH,
    TEMPORALITY,
    BadRequest,
    Signal,
    finite,
    real,
)

# OTLP/JSON's 64-bit integers: a JSON number or a decimal string (proto3's JSON mapping,
# which the decoders read in msgspec's lax mode: "12", 12, "1e3", never " 12 " or "1_0"),
# within the field's range: int64 values, fixed64 times and counts (whose upper bound,
# past what msgspec can check, _fixed() checks).
Int64 = Annotated[int, Meta(ge=-(1 << 63), le=(1 << 63) - 1)]
Fixed64 = Annotated[int, Meta(ge=0)]


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
    time_unix_nano: Fixed64 = 0
    observed_time_unix_nano: Fixed64 = 0
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
    time_unix_nano: Fixed64 = 0
    name: str = ""
    attributes: list[_KeyValue] = []


class _Span(Struct, rename="camel", gc=False):
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    name: str = ""
    kind: int | str = 0
    start_time_unix_nano: Fixed64 = 0
    end_time_unix_nano: Fixed64 = 0
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
    start_time_unix_nano: Fixed64 = 0
    time_unix_nano: Fixed64 = 0
    as_double: float | str | None = None
    as_int: Int64 | None = None
    count: Fixed64 | None = None
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
    "logs": msgspec.json.Decoder(_LogsRequest, strict=False),
    "metrics": msgspec.json.Decoder(_MetricsRequest, strict=False),
    "traces": msgspec.json.Decoder(_TracesRequest, strict=False),
}


_MAX_FIXED64 = (1 << 64) - 1

# opentelemetry-proto's enums by name (logs.proto, trace.proto, metrics.proto)
_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")  # 1-4, 5-8, ... 21-24
_SEVERITIES = {"SEVERITY_NUMBER_UNSPECIFIED": 0} | {
    f"SEVERITY_NUMBER_{level}{step + 1 if step else ''}": 4 * index + step + 1
    for index, level in enumerate(_LEVELS)
    for step in range(4)
}
_SPAN_KINDS = {
    f"SPAN_KIND_{name}": number
    for number, name in enumerate(
        ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
    )
}
_STATUS_CODES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_TEMPORALITIES = {
    "AGGREGATION_TEMPORALITY_UNSPECIFIED": 0,
    "AGGREGATION_TEMPORALITY_DELTA": 1,
    "AGGREGATION_TEMPORALITY_CUMULATIVE": 2,
}


def _enum(value: int | str, names: dict[str, int]) -> int:
    """An enum field: its number, or the number of its name (0 for a name not known)."""
    return value if isinstance(value, int) else names.get(value, 0)


def _fixed(value: int, where: str) -> int:
    """A fixed64 (a time, a count) read: at most 2^64 - 1."""
    if value > _MAX_FIXED64:
        raise BadRequest(f"{where}: {value} is out of the range of a fixed64")
    return value


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
        value = b""
    if len(value) != size:  # (fromhex passes over whitespace)
        raise BadRequest(f"{where}: {text!r} is not hex")
    return value.hex() if any(value) else ""


def _json_value(value: _AnyValue | None, depth: int = 0) -> Any:
    if value is None:
        return None
    if value.string_value is not None:
        return value.string_value
    if value.int_value is not None:
        return value.int_value
    if value.bool_value is not None:
        return value.bool_value
    if value.double_value is not None:
        return finite(_float(value.double_value, "doubleValue"))
    if depth >= MAX_DEPTH:
        return "…"
    if value.array_value is not None:
        return [_json_value(item, depth + 1) for item in value.array_value.values]
    if value.kvlist_value is not None:
        return {kv.key: _json_value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if value.bytes_value is not None:
        return value.bytes_value  # (already base64 in OTLP/JSON)
    return None


def _json_attrs(pairs: list[_KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in pairs:
        value = kv.value
        if value is not None:
            # (strings and integers, most attributes, read here: _json_value's first cases)
            text = value.string_value
            if text is not None:
                out[kv.key] = text
                continue
            number = value.int_value
            if number is not None:
                out[kv.key] = number
                continue
        out[kv.key] = _json_value(value)
    return out


def _json_scope(resource: _Resource | None, scope: _Scope | None) -> Scope:
    attrs = _json_attrs(resource.attributes) if resource is not None else {}
    if scope is None:
        return Scope(attrs)
    return Scope(attrs, scope.name, scope.version)


_TOP_KEYS: dict[Signal, str] = {
    "logs": "resourceLogs",
    "metrics": "resourceMetrics",
    "traces": "resourceSpans",
}
_TOP_LEVEL = msgspec.json.Decoder(dict[str, msgspec.Raw])


def _entries(request: Any) -> list[Any]:
    if isinstance(request, _LogsRequest):
        return request.resource_logs
    if isinstance(request, _TracesRequest):
        return request.resource_spans
    return request.resource_metrics  # type: ignore[no-any-return]


def _not_another_signal(signal: Signal, body: bytes) -> None:
    """BadRequest for a request of another signal posted to ``signal``'s path (it decodes
    as an empty request: its key is unknown here): an exporter set up with the wrong path
    would lose everything with a 200. An empty request of the path's own is a success."""
    try:
        keys = _TOP_LEVEL.decode(body)
    except msgspec.MsgspecError:
        return
    for other, key in _TOP_KEYS.items():
        if other != signal and key in keys:
            raise BadRequest(
                f"not an OTLP {signal} request: it holds {key}, an OTLP {other} request "
                f"(post it to /v1/{other})"
            )


def _valid_text(body: bytes) -> bytes | None:
    """``body`` with U+FFFD for each escape of a lone UTF-16 surrogate, else for each
    byte that is not UTF-8; None when it has neither. JSON.stringify, which OpenTelemetry
    JS's exporters use, writes the escape for a string cut inside an emoji (Gemini CLI
    cuts attributes at 1,000 characters): one such record must not lose the request."""
    from telemetryd import fastjson

    fixed = fastjson.without_lone_surrogates(body)
    if fixed is not None:
        return fixed
    try:
        body.decode()
    except UnicodeDecodeError:
        return body.decode("utf-8", "replace").encode()
    return None


def decode(signal: Signal, body: bytes) -> list[Scoped]:
    """The records of one OTLP/JSON export request of ``signal``. Text that is not
    Unicode (lone surrogates, bytes that are not UTF-8) is read with U+FFFD for it."""
    mends = 2  # (lone surrogates, then bytes that are not UTF-8)
    while True:
        try:
            request = _JSON_DECODERS[signal].decode(body)
            break
        except msgspec.ValidationError as exc:
            raise BadRequest(f"not an OTLP {signal} request: {exc}") from None
        except msgspec.DecodeError as exc:
            fixed = _valid_text(body) if mends else None
            if fixed is None:
                raise BadRequest(f"not JSON: {exc}") from None
            body = fixed
            mends -= 1
        except RecursionError:
            raise BadRequest(f"not an OTLP {signal} request: it nests too deeply") from None
    if not _entries(request):
        _not_another_signal(signal, body)
    out: list[Scoped] = []
    if isinstance(request, _LogsRequest):
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                scope = _json_scope(rl.resource, sl.scope)
                convert = _forwarded_log if scope.name == forwarded.SCOPE else _json_log
                logs = [convert(record) for record in sl.log_records]
                out.append(Scoped(scope, logs=logs))
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
    time_ns = _fixed(record.time_unix_nano, "timeUnixNano") or _fixed(
        record.observed_time_unix_nano, "observedTimeUnixNano"
    )
    return LogRecord(
        time_ns=time_ns,
        attrs=_json_attrs(record.attributes),
        body=_json_value(record.body),
        severity_number=_enum(record.severity_number, _SEVERITIES),
        severity_text=record.severity_text,
        event_name=record.event_name,
        trace_id=_hex_id(record.trace_id, 16, "traceId"),
        span_id=_hex_id(record.span_id, 8, "spanId"),
    )


def _forwarded_log(record: _LogRecord) -> LogRecord:
    """A record of another telemetryd's forwarding scope (:mod:`.forwarded`): its body
    is the event, which the daemon checks whole; its attributes only repeat fields of
    the body, so they are not read (decoding has checked their shape)."""
    return LogRecord(
        time_ns=_fixed(record.time_unix_nano, "timeUnixNano")
        or _fixed(record.observed_time_unix_nano, "observedTimeUnixNano"),
        attrs={},
        body=_json_value(record.body),
        severity_number=_enum(record.severity_number, _SEVERITIES),
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
        start_ns=_fixed(span.start_time_unix_nano, "startTimeUnixNano"),
        end_ns=_fixed(span.end_time_unix_nano, "endTimeUnixNano"),
        attrs=_json_attrs(span.attributes),
        parent_span_id=_hex_id(span.parent_span_id, 8, "parentSpanId"),
        kind=_enum(span.kind, _SPAN_KINDS),
        status_code=_enum(status.code, _STATUS_CODES) if status is not None else 0,
        status_message=status.message if status is not None else "",
        events=[
            SpanEvent(e.name, _fixed(e.time_unix_nano, "timeUnixNano"), _json_attrs(e.attributes))
            for e in span.events
        ],
    )


def _json_points(metric: _Metric) -> list[Point]:
    out: list[Point] = []
    for kind in KINDS:
        data: _Data | None = getattr(metric, kind)
        if data is None:
            continue
        temporality = _enum(data.aggregation_temporality, _TEMPORALITIES)
        for p in data.data_points:
            value: float | int | str | None = None
            if p.as_int is not None:
                value = p.as_int
            elif p.as_double is not None:
                value = finite(_float(p.as_double, "asDouble"))
            out.append(
                Point(
                    metric=metric.name,
                    kind=kind,
                    time_ns=_fixed(p.time_unix_nano, "timeUnixNano"),
                    attrs=_json_attrs(p.attributes),
                    unit=metric.unit,
                    temporality=TEMPORALITY.get(temporality, ""),
                    monotonic=data.is_monotonic,
                    start_ns=_fixed(p.start_time_unix_nano, "startTimeUnixNano"),
                    value=value if not isinstance(value, str) else None,
                    count=None if p.count is None else _fixed(p.count, "count"),
                    sum=real(_float(p.sum, "sum")),
                    min=real(_float(p.min, "min")),
                    max=real(_float(p.max, "max")),
                )
            )
    return out
