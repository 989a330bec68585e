"""OTLP/protobuf export requests into :mod:`.records` (adapters/otel/wire.py dispatches here).

Imported on the first protobuf request: opentelemetry-proto's generated classes (and
protobuf's upb runtime) stay out of an idle daemon. Metrics and traces are read with
those classes; log records, the volume, with a look-alike message (below).
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from google.protobuf.message import DecodeError

from telemetryd.adapters.otel.records import LogRecord, Point, Scope, Scoped, Span, SpanEvent
from telemetryd.adapters.otel.wire import (
    MAX_DEPTH,
    TEMPORALITY,
    BadRequest,
    SeenAttributes,
    Signal,
    finite,
    real,
    varint,
)


def _pb_value(value: Any, depth: int = 0) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return finite(value.double_value)
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


def decode(signal: Signal, body: bytes) -> list[Scoped]:
    """The records of one OTLP/protobuf export request of ``signal``."""
    message = _lite_logs() if signal == "logs" else classes()[signal][0]
    request = _parse(message, body, f"not an OTLP {signal} request (protobuf)")
    out: list[Scoped] = []
    if signal == "logs":
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                seen = _SEEN.attrs
                bodies = _BODIES
                logs: list[LogRecord] = []
                add = logs.append
                for r in sl.log_records:
                    attrs, plain = seen(r.attributes[:])
                    # (a body is mostly the event's name: the last few met are kept)
                    body = r.body
                    value = bodies.get(body, _UNSEEN)
                    if value is _UNSEEN:
                        value = _raw_value(body)
                        if len(body) <= 128 and type(value) is str:
                            if len(bodies) >= 64:
                                bodies.clear()
                            bodies[body] = value
                    # (LogRecord's fields in order; an empty id is no id, without a call)
                    add(
                        LogRecord(
                            r.time_unix_nano or r.observed_time_unix_nano,
                            attrs,
                            value,
                            r.severity_number,
                            r.severity_text,
                            r.event_name,
                            _pb_id(trace, 16, "trace_id") if (trace := r.trace_id) else "",
                            _pb_id(span, 8, "span_id") if (span := r.span_id) else "",
                            plain,
                        )
                    )
                resource = _raw_attrs(rl.resource.attributes)
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
    temporality = TEMPORALITY.get(getattr(data, "aggregation_temporality", 0), "")
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
                point.value = real(p.as_double)
        else:
            point.count = p.count
            point.sum = real(p.sum)
            if kind != "summary":
                point.min = real(p.min) if p.HasField("min") else None
                point.max = real(p.max) if p.HasField("max") else None
        out.append(point)
    return out


# Log records are the volume (an agent sends one per request, tool call, prompt ...),
# and building a Python object for each attribute of opentelemetry-proto's classes costs
# more than everything else about a record. So logs are parsed with a message of the same
# wire format in which each KeyValue list is a `repeated bytes` (a message is
# length-delimited, as bytes are) and the body an AnyValue's raw bytes: upb hands over
# each attribute still encoded, a table of those met before gives most of them at once
# (_raw_attrs), and _key_value and _raw_value read the others' common layouts themselves.
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
        "Resource": [("attributes", 1, raw, many, "")],
        "Scope": [("name", 1, text, one, ""), ("version", 2, text, one, "")],
        "LogRecord": [
            ("time_unix_nano", 1, kind.TYPE_FIXED64, one, ""),
            ("severity_number", 2, kind.TYPE_INT32, one, ""),
            ("severity_text", 3, text, one, ""),
            ("body", 5, raw, one, ""),
            ("attributes", 6, raw, many, ""),
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
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    request = pool.FindMessageTypeByName(f"{package}.Request")
    _LITE.append(message_factory.GetMessageClass(request))
    return _LITE[0]


_DOUBLE = struct.Struct("<d")


def _raw_attrs(pairs: Any) -> dict[str, Any]:
    """Attributes (a repeated KeyValue, each still encoded: the look-alike's) as a dict
    of plain values (wire.SeenAttributes)."""
    return _SEEN.attrs(pairs[:])[0]


def _key_value(raw: bytes) -> tuple[str, Any]:
    """One encoded KeyValue: ``key`` (1) then ``value`` (2), each shorter than 128
    bytes, read here; any other layout by the real class."""
    size = len(raw)
    if size >= 2 and raw[0] == 0x0A and raw[1] < 0x80:
        end = 2 + raw[1]
        if end == size or (
            end + 2 <= size
            and raw[end] == 0x12
            and raw[end + 1] < 0x80
            and end + 2 + raw[end + 1] == size
        ):
            key = _text(raw[2:end])
            start = end + 4
            if start <= size and raw[start - 2] == 0x0A and start + raw[start - 1] == size:
                # (a string_value, the usual one, read here rather than by _raw_value)
                return key, _text(raw[start:])
            return key, _raw_value(raw[end + 2 :])
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    pair = _parse(KeyValue, raw, "an attribute is not a KeyValue")
    return pair.key, _pb_value(pair.value)


def _raw_value(raw: bytes) -> Any:
    """An AnyValue from its encoded bytes: strings, integers, doubles and booleans in one
    field read here, anything else (arrays, maps, bytes, odd encodings) by the real class."""
    size = len(raw)
    if not size:
        return None
    tag = raw[0]
    if tag == 0x0A and size > 1 and raw[1] < 0x80 and size == raw[1] + 2:  # string_value
        return _text(raw[2:])
    if tag == 0x18 and size <= 11:  # int_value, one varint and nothing after it
        number = 0
        shift = 0
        for byte in raw[1:-1]:
            if byte < 0x80:  # (a varint ends before the last byte: another layout)
                break
            number |= (byte & 0x7F) << shift
            shift += 7
        else:
            if size > 1 and raw[-1] < 0x80:
                number |= raw[-1] << shift
                return number - (1 << 64) if number >= 1 << 63 else number
    elif tag == 0x21 and size == 9:  # double_value
        return finite(_DOUBLE.unpack_from(raw, 1)[0])
    elif tag == 0x10 and size == 2:  # bool_value
        return raw[1] != 0
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    return _pb_value(_parse(AnyValue, raw, "an attribute value is not an AnyValue"))


def _text(raw: bytes) -> str:
    """UTF-8 ``raw`` as text; bytes that are not UTF-8 (a JavaScript string cut inside an
    emoji, as protobufjs encodes its lone surrogate) as U+FFFD."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def _parse(message: Any, data: bytes, problem: str) -> Any:
    """``message`` parsed from ``data``; one whose only faults are text that is not UTF-8
    (protobuf refuses a string field holding any) or values nested past protobuf's
    limit (100 messages: some 33 levels of maps in an attribute) is parsed mended
    (:func:`_valid_utf8`), as the OTLP/JSON decoder reads such text and values: one
    record's attribute never loses the request. BadRequest (``problem``: what it is
    not) otherwise."""
    try:
        return message.FromString(data)
    except (DecodeError, RecursionError) as exc:
        error = exc
    try:
        fixed = _valid_utf8(message.DESCRIPTOR, data)
    except _Broken:
        fixed = None
    if fixed is not None:
        try:
            return message.FromString(fixed)
        except (DecodeError, RecursionError):
            pass
    raise BadRequest(f"{problem}: {error}") from None


class _Broken(Exception):
    """Not a well-formed message of the type (its parser says what is wrong)."""


_STRING = 9  # FieldDescriptor.TYPE_STRING
_MESSAGE = 11  # FieldDescriptor.TYPE_MESSAGE


_ANY_VALUE = "opentelemetry.proto.common.v1.AnyValue"
_NESTED = (5, 6)  # AnyValue's array_value and kvlist_value
_CUT = b"\x0a\x03" + "…".encode()  # an AnyValue: string_value "…"


def _valid_utf8(descriptor: Any, data: bytes, depth: int = 0, values: int = 0) -> bytes | None:
    """The encoded message ``data`` of type ``descriptor`` with the text of each string
    field, at any depth, made valid UTF-8 (U+FFFD for what is not), and each array or
    map value ``MAX_DEPTH`` values deep (``values``: how many AnyValues hold this
    message) made "…", as the decoders read it (:func:`_pb_value`); None when nothing
    needed mending. Read field by field from the wire format; _Broken when ``data`` is
    not a well-formed message, or nests past protobuf's limit of 100 otherwise."""
    if depth > 100:
        raise _Broken
    is_value = descriptor.full_name == _ANY_VALUE
    out = bytearray()
    changed = False
    fields = descriptor.fields_by_number
    at = 0
    size = len(data)
    while at < size:
        start = at
        key, at = _read_varint(data, at)
        key_end = at
        kind = key & 7
        if kind == 0:
            _, at = _read_varint(data, at)
        elif kind == 1:
            at += 8
        elif kind == 5:
            at += 4
        elif kind == 2:
            length, body = _read_varint(data, at)
            at = body + length
            if at > size:
                raise _Broken
            field = fields.get(key >> 3)
            if is_value and values >= MAX_DEPTH and key >> 3 in _NESTED:
                return _CUT
            part = data[body:at]
            fixed: bytes | None = None
            if field is not None and field.type == _STRING:
                try:
                    part.decode()
                except UnicodeDecodeError:
                    fixed = part.decode("utf-8", "replace").encode()
            elif field is not None and field.type == _MESSAGE:
                fixed = _valid_utf8(field.message_type, part, depth + 1, values + is_value)
            if fixed is not None:
                out += data[start:key_end]
                out += varint(len(fixed))
                out += fixed
                changed = True
                continue
        else:  # (groups, long deprecated, and wire types that do not exist)
            raise _Broken
        if at > size:
            raise _Broken
        out += data[start:at]
    return bytes(out) if changed else None


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    number = 0
    shift = 0
    while at < len(data) and shift < 70:
        byte = data[at]
        at += 1
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return number, at
        shift += 7
    raise _Broken


_SEEN = SeenAttributes(_key_value)
_BODIES: dict[bytes, Any] = {}  # log record bodies met (short strings) -> value
_UNSEEN = object()
_PB: dict[Signal, tuple[Any, Any]] = {}


def classes() -> dict[Signal, tuple[Any, Any]]:
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
