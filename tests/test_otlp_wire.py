"""OTLP export requests decoded the same from protobuf and from JSON (adapters/otel/wire.py).

Each request is built once with opentelemetry-proto's own classes; its protobuf bytes
are what an SDK sends, and its OTLP/JSON form is written out here by the rules of the
specification (hex ids, int64 as strings, lowerCamelCase), independently of the decoder.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from telemetryd.adapters.otel import wire

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")
LONG = "é" * 300  # a string past one byte of length prefix

VALUES: dict[str, Any] = {
    "text": "some text",
    "long": LONG,
    "empty": "",
    "small": 7,
    "negative": -5,
    "big": 2**62 + 1,
    "double": 637.704,
    "true": True,
    "false": False,
    "list": ["many", 3, [True]],
    "map": {"inner": {"deeper": 1.5}, "name": "x"},
}


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in value)
        return out
    out = AnyValue()
    out.kvlist_value.values.extend(KeyValue(key=k, value=any_value(v)) for k, v in value.items())
    return out


def json_value(value: Any) -> dict[str, Any]:
    """OTLP/JSON's AnyValue, by the specification (not by the decoder under test)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return {"arrayValue": {"values": [json_value(v) for v in value]}}
    return {
        "kvlistValue": {"values": [{"key": k, "value": json_value(v)} for k, v in value.items()]}
    }


def attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": json_value(v)} for k, v in values.items()]


def logs_request() -> tuple[bytes, bytes]:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.resource.attributes.extend([KeyValue(key="service.name", value=any_value("agent"))])
    sl = rl.scope_logs.add()
    sl.scope.name, sl.scope.version = "lib", "1.2"
    record = sl.log_records.add(
        time_unix_nano=0,  # unset: observed time stands in
        observed_time_unix_nano=1_700_000_000_123_456_789,
        severity_number=13,
        severity_text="WARN",
        trace_id=TRACE,
        span_id=SPAN,
        event_name="thing.happened",
    )
    record.body.CopyFrom(any_value({"nested": ["body", 1]}))
    record.attributes.extend(KeyValue(key=k, value=any_value(v)) for k, v in VALUES.items())
    record.attributes.append(KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\xff")))
    as_json = {
        "resourceLogs": [
            {
                "resource": {"attributes": attributes({"service.name": "agent"})},
                "scopeLogs": [
                    {
                        "scope": {"name": "lib", "version": "1.2"},
                        "logRecords": [
                            {
                                "timeUnixNano": "0",
                                "observedTimeUnixNano": "1700000000123456789",
                                "severityNumber": 13,
                                "severityText": "WARN",
                                "traceId": TRACE.hex().upper(),  # any case
                                "spanId": SPAN.hex(),
                                "eventName": "thing.happened",
                                "body": json_value({"nested": ["body", 1]}),
                                "attributes": attributes({**VALUES, "raw": b"\x00\xff"}),
                                "droppedAttributesCount": 0,  # known, unused
                                "someFutureField": {"x": 1},  # unknown: ignored
                            }
                        ],
                    }
                ],
            }
        ]
    }
    return request.SerializeToString(), json.dumps(as_json).encode()


def test_logs_decode_the_same_from_protobuf_and_json() -> None:
    protobuf, as_json = logs_request()
    from_pb = wire.decode("logs", "protobuf", protobuf)
    from_json = wire.decode("logs", "json", as_json)
    assert from_pb == from_json
    (group,) = from_pb
    assert group.scope.service == "agent" and (group.scope.name, group.scope.version) == (
        "lib",
        "1.2",
    )
    (record,) = group.logs
    assert record.time_ns == 1_700_000_000_123_456_789
    assert (record.trace_id, record.span_id) == (TRACE.hex(), SPAN.hex())
    assert (record.severity_number, record.event_name) == (13, "thing.happened")
    assert record.body == {"nested": ["body", 1]}
    assert record.attrs == {**VALUES, "raw": base64.b64encode(b"\x00\xff").decode()}


def test_spans_and_metrics_decode_the_same_from_protobuf_and_json() -> None:
    request = ExportTraceServiceRequest()
    span = (
        request.resource_spans.add()
        .scope_spans.add()
        .spans.add(
            trace_id=TRACE,
            span_id=SPAN,
            parent_span_id=PARENT,
            name="chat",
            kind=3,
            start_time_unix_nano=1_000,
            end_time_unix_nano=2_000_000_000,
        )
    )
    span.attributes.extend([KeyValue(key="gen_ai.usage.input_tokens", value=any_value(10))])
    span.status.code, span.status.message = 2, "boom"
    span.events.add(name="exception", time_unix_nano=1_500)
    as_json = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE.hex(),
                                "spanId": SPAN.hex(),
                                "parentSpanId": PARENT.hex(),
                                "name": "chat",
                                "kind": 3,
                                "startTimeUnixNano": 1000,  # a number is accepted too
                                "endTimeUnixNano": "2000000000",
                                "attributes": attributes({"gen_ai.usage.input_tokens": 10}),
                                "status": {"code": 2, "message": "boom"},
                                "events": [{"name": "exception", "timeUnixNano": "1500"}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    from_pb = wire.decode("traces", "protobuf", request.SerializeToString())
    assert from_pb == wire.decode("traces", "json", json.dumps(as_json).encode())
    decoded = from_pb[0].spans[0]
    assert (decoded.parent_span_id, decoded.status_code, decoded.events[0].name) == (
        PARENT.hex(),
        2,
        "exception",
    )

    metrics = ExportMetricsServiceRequest()
    scope = metrics.resource_metrics.add().scope_metrics.add()
    counter = scope.metrics.add(name="token.usage", unit="tokens")
    counter.sum.aggregation_temporality = 1
    counter.sum.is_monotonic = True
    counter.sum.data_points.add(as_int=42, time_unix_nano=5, start_time_unix_nano=4)
    histogram = scope.metrics.add(name="latency", unit="ms")
    histogram.histogram.aggregation_temporality = 2
    histogram.histogram.data_points.add(count=3, sum=7.5, min=1.0, max=4.0, time_unix_nano=5)
    metrics_json = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "token.usage",
                                "unit": "tokens",
                                "sum": {
                                    "aggregationTemporality": 1,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {
                                            "asInt": "42",
                                            "timeUnixNano": "5",
                                            "startTimeUnixNano": "4",
                                        }
                                    ],
                                },
                            },
                            {
                                "name": "latency",
                                "unit": "ms",
                                "histogram": {
                                    "aggregationTemporality": 2,
                                    "dataPoints": [
                                        {
                                            "count": "3",
                                            "sum": 7.5,
                                            "min": 1.0,
                                            "max": 4.0,
                                            "timeUnixNano": "5",
                                        }
                                    ],
                                },
                            },
                        ]
                    }
                ]
            }
        ]
    }
    points = wire.decode("metrics", "protobuf", metrics.SerializeToString())
    assert points == wire.decode("metrics", "json", json.dumps(metrics_json).encode())
    total, latency = points[0].points
    assert (total.kind, total.value, total.temporality, total.monotonic) == (
        "sum",
        42,
        "delta",
        True,
    )
    assert (latency.kind, latency.count, latency.sum, latency.temporality) == (
        "histogram",
        3,
        7.5,
        "cumulative",
    )


@pytest.mark.parametrize(
    ("signal", "body", "named"),
    [
        ("logs", b'{"resourceLogs": 3}', "$.resourceLogs"),
        ("logs", b'{"resourceLogs": [', "not JSON"),
        ("traces", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"abc"}]}]}]}', "spanId"),
        (
            "logs",
            json.dumps(
                {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}
            ).encode(),
            "timeUnixNano",
        ),
        # another signal's request on this path (an exporter set up with the wrong path)
        ("logs", b'{"resourceSpans": [{"scopeSpans": []}]}', r"resourceSpans.*/v1/traces"),
        ("metrics", b'{"resourceLogs": []}', r"resourceLogs.*/v1/logs"),
        ("traces", b'{"resourceMetrics": [], "resourceSpans": []}', r"/v1/metrics"),
    ],
)
def test_bad_json_names_where(signal: wire.Signal, body: bytes, named: str) -> None:
    with pytest.raises(wire.BadRequest, match=named.replace("$", r"\$")):
        wire.decode(signal, "json", body)


def test_an_empty_request_of_the_paths_own_signal_is_a_success() -> None:
    assert wire.decode("logs", "json", b'{"resourceLogs": []}') == []
    assert wire.decode("metrics", "json", b'{"resourceMetrics": []}') == []
    assert wire.decode("traces", "json", b"{}") == []
    assert wire.decode("traces", "json", b'{"somethingElse": 1}') == []  # unknown: ignored


def test_bad_protobuf_is_a_bad_request() -> None:
    with pytest.raises(wire.BadRequest, match="protobuf"):
        wire.decode("logs", "protobuf", b"\x0a\xff\xff\xff\x0f junk")
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.trace_id = b"\x01\x02"  # not 16 bytes
    with pytest.raises(wire.BadRequest, match="trace_id"):
        wire.decode("logs", "protobuf", request.SerializeToString())
    for signal in ("metrics", "traces"):  # (their strict classes, and the mending walk)
        with pytest.raises(wire.BadRequest, match="protobuf"):
            wire.decode(signal, "protobuf", b"\x0a\x05\x12\x03\x0a\x10\xff junk")


def test_non_finite_doubles_and_all_zero_ids() -> None:
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add(trace_id=bytes(16))
    record.attributes.extend(
        [
            KeyValue(key="nan", value=any_value(math.nan)),
            KeyValue(key="inf", value=any_value(-math.inf)),
        ]
    )
    (decoded,) = wire.decode("logs", "protobuf", request.SerializeToString())[0].logs
    assert decoded.trace_id == ""  # all zero: no trace
    assert decoded.attrs == {"nan": "nan", "inf": "-inf"}  # JSON has no NaN: kept as text


def test_answers_in_each_encoding() -> None:
    assert wire.success("logs", "json") == b"{}"
    partial = json.loads(wire.success("logs", "json", 2, "bad record"))
    assert partial == {"partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "bad record"}}
    assert (
        json.loads(wire.success("traces", "json", 1, "x"))["partialSuccess"]["rejectedSpans"] == "1"
    )
    answer = ExportLogsServiceResponse.FromString(wire.success("logs", "protobuf", 3, "why"))
    assert (answer.partial_success.rejected_log_records, answer.partial_success.error_message) == (
        3,
        "why",
    )
    assert wire.success("metrics", "protobuf") == b""
    assert json.loads(wire.status("json", 3, "bad")) == {"code": 3, "message": "bad"}
    status = wire.status("protobuf", 3, "é" * 100)  # a message past one byte of length
    assert status[:2] == b"\x08\x03" and status.endswith("é".encode() * 100)


# -- log attributes: encoded KeyValues read directly, the ones met before from a table -------


def _one_record(pairs: list[KeyValue]) -> bytes:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().attributes.extend(pairs)
    return request.SerializeToString()


def _attrs_of(body: bytes) -> dict[str, Any]:
    (group,) = wire.decode("logs", "protobuf", body)
    (record,) = group.logs
    return record.attrs


def test_log_attributes_decode_the_same_every_time_and_in_every_layout() -> None:
    pairs = [KeyValue(key=k, value=any_value(v)) for k, v in VALUES.items()]
    pairs += [
        KeyValue(key="k" * 200, value=any_value("a key past one byte of length")),
        KeyValue(key="unset"),  # no value
        KeyValue(key="dup", value=any_value(1)),
        KeyValue(key="dup", value=any_value("last")),  # the last one wins, as in a map
    ]
    expected = {**VALUES, "k" * 200: "a key past one byte of length", "unset": None}
    expected["dup"] = "last"
    body = _one_record(pairs)
    assert [_attrs_of(body) for _ in range(3)] == [expected] * 3  # (2nd, 3rd: from the table)
    # Fields in another order (value before key) are still a KeyValue.
    value = any_value("swapped").SerializeToString()
    swapped = b"\x12" + bytes([len(value)]) + value + b"\x0a\x01s"
    record = b"\x32" + bytes([len(swapped)]) + swapped
    body = b"\x0a" + _len(b"\x12" + _len(b"\x12" + _len(record)))
    assert _attrs_of(body) == {"s": "swapped"}


def _len(data: bytes) -> bytes:
    """``data`` with its length as a protobuf varint in front."""
    size, prefix = len(data), bytearray()
    while size >= 0x80:
        prefix.append(size & 0x7F | 0x80)
        size >>= 7
    prefix.append(size)
    return bytes(prefix) + data


def test_a_broken_attribute_is_a_bad_request() -> None:
    record = b"\x32" + _len(b"\x0a\x05k")  # a KeyValue cut short
    body = b"\x0a" + _len(b"\x12" + _len(b"\x12" + _len(record)))
    with pytest.raises(wire.BadRequest, match="attribute"):
        wire.decode("logs", "protobuf", body)


# Half an emoji as JavaScript producers write it: U+D83D, the high half of U+1F600.
# protobufjs encodes the lone surrogate in three bytes (not UTF-8); JSON.stringify
# writes the escape. Either way the text reads with U+FFFD (one per byte that is not
# UTF-8, as Python's "replace" reads them), and the request keeps every record.
LONE = "\ud83d"
LONE_BYTES = b"\xed\xa0\xbd"
PLACE = b"~~~"  # (what the tests write, then swap for LONE_BYTES: the same length)


def test_text_that_is_not_utf8_is_read_with_replacement_characters_in_protobuf() -> None:
    logs = ExportLogsServiceRequest()
    scope_logs = logs.resource_logs.add().scope_logs.add()
    scope_logs.scope.name = "SCOPE~~~"
    for n in range(3):
        record = scope_logs.log_records.add()
        record.time_unix_nano = 1_700_000_000_000_000_000 + n
        record.body.string_value = f"body {n}" + ("~~~" if n == 1 else "")
        record.attributes.extend(
            [
                KeyValue(key="plain", value=any_value(f"v{n}")),
                KeyValue(key="KEY~~~" if n == 1 else "key", value=any_value("cut ~~~ here")),
                KeyValue(key="nested", value=any_value({"inner": ["deep ~~~"]})),
            ]
        )
    body = logs.SerializeToString().replace(PLACE, LONE_BYTES)
    (group,) = wire.decode("logs", "protobuf", body)
    assert group.scope.name == "SCOPE\ufffd\ufffd\ufffd"
    assert [r.body for r in group.logs] == ["body 0", "body 1\ufffd\ufffd\ufffd", "body 2"]
    cut = "cut \ufffd\ufffd\ufffd here"
    assert [r.attrs for r in group.logs] == [
        {"plain": "v0", "key": cut, "nested": {"inner": ["deep \ufffd\ufffd\ufffd"]}},
        {
            "plain": "v1",
            "KEY\ufffd\ufffd\ufffd": cut,
            "nested": {"inner": ["deep \ufffd\ufffd\ufffd"]},
        },
        {"plain": "v2", "key": cut, "nested": {"inner": ["deep \ufffd\ufffd\ufffd"]}},
    ]

    traces = ExportTraceServiceRequest()
    span = traces.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = TRACE, SPAN, "span ~~~"
    span.attributes.add(key="gen_ai.prompt", value=any_value("x" * 200 + "~~~"))
    # (the ids are bytes fields: a 0xED byte in one is data, never text to mend)
    span.parent_span_id = b"\xed\xa0\xbd\x01\x02\x03\x04\x05"
    body = traces.SerializeToString().replace(PLACE, LONE_BYTES)
    (group,) = wire.decode("traces", "protobuf", body)
    (read,) = group.spans
    assert read.name == "span \ufffd\ufffd\ufffd"
    assert read.attrs == {"gen_ai.prompt": "x" * 200 + "\ufffd\ufffd\ufffd"}
    assert (read.trace_id, read.span_id) == (TRACE.hex(), SPAN.hex())
    assert read.parent_span_id == "eda0bd0102030405"


def test_text_that_is_not_unicode_is_read_with_replacement_characters_in_json() -> None:
    record = {
        "timeUnixNano": "1700000000000000000",
        "body": {"stringValue": "cut " + LONE},
        "attributes": [{"key": "k", "value": {"stringValue": LONE + " and more"}}],
    }
    request = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record, {"body": {}}]}]}]}
    text = json.dumps(request)  # (ensure_ascii: the escape, as JSON.stringify writes it)
    assert "\\ud83d" in text
    (group,) = wire.decode("logs", "json", text.encode())
    assert group.logs[0].body == "cut \ufffd"
    assert group.logs[0].attrs == {"k": "\ufffd and more"}
    raw = json.dumps(request, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert LONE_BYTES in raw  # bytes that are not UTF-8, as some writers send them
    (group,) = wire.decode("logs", "json", raw)
    assert group.logs[0].body == "cut \ufffd\ufffd\ufffd"
    assert group.logs[0].attrs == {"k": "\ufffd\ufffd\ufffd and more"}
    with pytest.raises(wire.BadRequest, match="not JSON"):
        wire.decode("logs", "json", text.encode()[:-1])  # (still broken: cut short)


def test_an_integer_attribute_in_any_layout_reads_as_protobuf_reads_it() -> None:
    """AnyValue bytes are read by hand where they are one varint ``int_value``; any other
    layout (two fields, the last winning; a varint cut short) is protobuf's to read."""
    layouts = {
        "one int": b"\x18\x96\x01",  # 150
        "a negative int": AnyValue(int_value=-(2**63)).SerializeToString(),
        "int, then int": b"\x18\x01\x18\x02",  # the last one wins: 2
        "int, then bool": b"\x18\x05\x10\x01",  # the last one wins: True
        "a tag alone": b"\x18",
        "a varint cut short": b"\x18\x01\x02",
        "a varint with no end": b"\x18\x80\x80",
    }
    for name, encoded in layouts.items():
        pair = b"\x0a\x01n\x12" + _len(encoded)
        record = b"\x32" + _len(pair)
        body = b"\x0a" + _len(b"\x12" + _len(b"\x12" + _len(record)))
        try:
            value = AnyValue.FromString(encoded)
        except Exception:  # protobuf cannot read it: a bad request
            with pytest.raises(wire.BadRequest):
                wire.decode("logs", "protobuf", body)
            continue
        which = value.WhichOneof("value")
        expected = getattr(value, which) if which else None
        for _ in range(2):  # (the second time from the table of attributes met)
            assert _attrs_of(body) == {"n": expected}, name


def test_json_integers_and_ids_out_of_their_range_are_bad_requests() -> None:
    """OTLP/JSON's 64-bit integers are JSON numbers or decimal strings within the field's
    range (int64 values, fixed64 times and counts); ids are exact hex."""

    def logs(record: dict[str, Any]) -> bytes:
        record = {"timeUnixNano": "1700000000000000000", **record}
        return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode()

    def attr(value: Any) -> dict[str, Any]:
        return {"attributes": [{"key": "n", "value": {"intValue": value}}]}

    good = {
        "-9223372036854775808": -(2**63),
        "9223372036854775807": 2**63 - 1,
        "0": 0,
        "-12": -12,
        2**63 - 1: 2**63 - 1,
    }
    for given, expected in good.items():
        (group,) = wire.decode("logs", "json", logs(attr(given)))
        assert group.logs[0].attrs == {"n": expected}
    (group,) = wire.decode("logs", "json", logs({"timeUnixNano": str(2**64 - 1)}))
    assert group.logs[0].time_ns == 2**64 - 1
    bad_records = [
        attr("9223372036854775808"),  # past int64
        attr(-(2**63) - 1),
        attr("1_000"),  # Python's spelling, not JSON's
        attr(" 12 "),
        attr("+5"),
        attr("١٢"),  # digits, but not ASCII ones
        attr(""),
        {"timeUnixNano": "99999999999999999999"},  # past fixed64
        {"timeUnixNano": "-5"},
        {"observedTimeUnixNano": -1, "timeUnixNano": 0},
        {"traceId": "00112233445566778899aabbccddee  "},  # whitespace: 15 bytes
        {"spanId": "0011 2233445566 "},
    ]
    for record in bad_records:
        with pytest.raises(wire.BadRequest):
            wire.decode("logs", "json", logs(record))
    gauge = {"name": "g", "gauge": {"dataPoints": [{"asInt": "99999999999999999999"}]}}
    histogram = {"name": "h", "histogram": {"dataPoints": [{"count": "-3"}]}}
    for metric in (gauge, histogram):
        body = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}
        with pytest.raises(wire.BadRequest):
            wire.decode("metrics", "json", json.dumps(body).encode())


def test_json_that_nests_too_deeply_is_a_bad_request() -> None:
    """Deeper than the decoder can go (past Python's recursion limit): a 400, not an
    error that would end an ingest worker or answer 500."""
    levels = 5000  # (written out as text: json.dumps cannot nest this deep either)
    value = '{"arrayValue":{"values":[' * levels + '{"stringValue":"leaf"}' + "]}}" * levels
    record = '{"timeUnixNano":"1","attributes":[{"key":"deep","value":' + value + "}]}"
    body = '{"resourceLogs":[{"scopeLogs":[{"logRecords":[' + record + "]}]}]}"
    json.loads(body.replace(value, "{}"))  # (the rest of it is well formed)
    with pytest.raises(wire.BadRequest, match="nests too deeply"):
        wire.decode("logs", "json", body.encode())


def _field(number: int, payload: bytes) -> bytes:
    return wire.varint(number << 3 | 2) + wire.varint(len(payload)) + payload


def test_values_nested_past_protobufs_limit_are_cut_as_json_cuts_them() -> None:
    """An attribute 150 maps deep (protobuf's parser stops at 100 messages, some 33
    levels): the request was a 400 and its other records were lost with it. Written
    out by hand: protobuf's own classes cannot encode it either."""
    levels = 150
    value = {"stringValue": "leaf"}
    encoded = _field(1, b"leaf")  # AnyValue.string_value
    for n in reversed(range(levels)):
        value = {"kvlistValue": {"values": [{"key": f"k{n}", "value": value}]}}
        pair = _field(1, f"k{n}".encode()) + _field(2, encoded)  # KeyValue
        encoded = _field(6, _field(1, pair))  # AnyValue.kvlist_value, KeyValueList.values
    deep = _field(1, b"deep") + _field(2, encoded)
    fine = _field(1, b"plain") + _field(2, _field(1, b"ok"))

    def record(n: int, *pairs: bytes) -> bytes:  # time, then the attributes
        return b"\x09" + n.to_bytes(8, "little") + b"".join(_field(6, p) for p in pairs)

    records = _field(2, record(1, fine, deep)) + _field(2, record(2, fine))
    body = _field(1, _field(2, records))  # ExportLogsServiceRequest.resource_logs.scope_logs
    as_json = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1", "attributes": [
            {"key": "plain", "value": {"stringValue": "ok"}}, {"key": "deep", "value": value},
        ]},
        {"timeUnixNano": "2", "attributes": [{"key": "plain", "value": {"stringValue": "ok"}}]},
    ]}]}]}  # fmt: skip
    (group,) = wire.decode("logs", "protobuf", body)
    (from_json,) = wire.decode("logs", "json", json.dumps(as_json).encode())
    assert [(r.time_ns, r.attrs) for r in group.logs] == [
        (r.time_ns, r.attrs) for r in from_json.logs
    ]
    first, second = group.logs
    kept = first.attrs["deep"]
    for n in range(wire.MAX_DEPTH):
        kept = kept[f"k{n}"]
    assert kept == "…" and second.attrs == {"plain": "ok"}
    # A span's (requests of the other signals are parsed whole: the same mending)
    span = _field(1, TRACE) + _field(2, SPAN) + _field(5, b"deep span") + _field(9, deep)
    (spans,) = wire.decode("traces", "protobuf", _field(1, _field(2, _field(2, span))))
    assert spans.spans[0].attrs == {"deep": first.attrs["deep"]}


def test_the_table_of_attributes_met_stays_bounded() -> None:
    from telemetryd.adapters.otel import otlp_protobuf

    limit = otlp_protobuf._SEEN.max_size
    for start in range(0, 3 * limit, 500):
        pairs = [KeyValue(key="n", value=any_value(start + n)) for n in range(500)]
        request = ExportLogsServiceRequest()
        records = request.resource_logs.add().scope_logs.add().log_records
        for pair in pairs:
            records.add().attributes.append(pair)
        decoded = wire.decode("logs", "protobuf", request.SerializeToString())[0].logs
        assert [r.attrs["n"] for r in decoded] == list(range(start, start + 500))
        assert all(len(generation) <= limit for generation in otlp_protobuf._SEEN.generations)
    big = KeyValue(key="big", value=any_value("b" * 500))
    assert _attrs_of(_one_record([big])) == {"big": "b" * 500}
    assert big.SerializeToString() not in otlp_protobuf._SEEN.generations[0]  # (short ones only)


def test_a_record_is_plain_only_when_every_value_is_short_and_scalar() -> None:
    """LogRecord.plain lets common.clean copy attrs without looking at each value: it is
    set only when each one is (a table hit or a short scalar), and cleaning a record
    gives the same attrs with or without it."""
    from telemetryd.adapters.otel import common

    short = [KeyValue(key=k, value=any_value(v)) for k, v in (("a", "x"), ("n", 3), ("f", 0.5))]
    shapes = {
        "short": (short, True),
        "nan": ([*short, KeyValue(key="d", value=any_value(math.nan))], True),
        "text past the table": ([*short, KeyValue(key="t", value=any_value("t" * 900))], False),
        "text past MAX_TEXT": ([*short, KeyValue(key="t", value=any_value("t" * 5000))], False),
        "a list": ([*short, KeyValue(key="l", value=any_value([1, "two"]))], False),
        "a map": ([*short, KeyValue(key="m", value=any_value({"k": "v"}))], False),
    }
    for name, (pairs, plain) in shapes.items():
        for _ in range(2):  # (the second time, the short ones are table hits)
            (group,) = wire.decode("logs", "protobuf", _one_record(pairs))
            (record,) = group.logs
            assert record.plain is plain, name
            assert common.clean(record.attrs, record.plain) == common.clean(record.attrs), name


def test_log_bodies_decode_the_same_every_time() -> None:
    """Short string bodies (an event's name, mostly) are remembered: the 2nd and 3rd
    decodings, from the table, give what the 1st did; so do bodies never kept."""
    from telemetryd.adapters.otel import otlp_protobuf

    bodies: list[Any] = [
        "claude_code.api_request",
        "",
        "b" * 500,
        7,
        1.5,
        True,
        {"nested": ["body", 1]},
        *(f"name {n}" for n in range(100)),  # (more than the table keeps)
    ]
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for value in bodies:
        records.add().body.CopyFrom(any_value(value))
    records.add()  # no body at all
    body = request.SerializeToString()
    for _ in range(3):
        (group,) = wire.decode("logs", "protobuf", body)
        assert [record.body for record in group.logs] == [*bodies, None]
    assert len(otlp_protobuf._BODIES) <= 64
    broken = b"\x2a" + _len(b"\x0a\x02\xff\xfe")  # a body whose string is not UTF-8
    request_body = b"\x0a" + _len(b"\x12" + _len(b"\x12" + _len(broken)))
    for _ in range(2):
        (group,) = wire.decode("logs", "protobuf", request_body)
        assert [record.body for record in group.logs] == ["\ufffd\ufffd"]


def test_an_event_that_cannot_be_encoded_costs_its_record_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The events of a request are encoded together; should one fail to encode (a bug
    in a mapper: fault injected here), the others are still encoded, record by record."""
    from telemetryd.adapters.otel import export, mapping

    real = mapping.log_events

    def faulty(scope: Any, record: Any, **kwargs: Any) -> list[dict[str, Any]]:
        events = real(scope, record, **kwargs)
        if record.attrs.get("n") == 2:
            events[0]["attrs"]["bad"] = object()  # (msgspec cannot encode it)
        return events

    monkeypatch.setattr(mapping, "log_events", faulty)
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for n in range(5):
        record = records.add(time_unix_nano=1_700_000_000_000_000_000 + n)
        record.attributes.append(KeyValue(key="n", value=any_value(n)))
    mapped = export.to_events("logs", "protobuf", request.SerializeToString(), limit=1 << 20)
    kept = [json.loads(line)["attrs"]["n"] for line in export.whole_lines(mapped)]
    assert len(mapped.attrs) == len(mapped.lines.splitlines()) == 4
    assert kept == [0, 1, 3, 4]
    assert (mapped.records, mapped.unmapped) == (5, 1)
    assert mapped.problem == "a record could not be mapped: TypeError"


def test_json_enums_by_name_read_as_their_numbers() -> None:
    """proto3's JSON mapping lets an enum be its name; the numbers are those of
    opentelemetry-proto's own enum descriptors. A name not known is 0 (unspecified)."""
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    def logs(severity: int | str) -> bytes:
        record = {"timeUnixNano": "1", "severityNumber": severity}
        return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).encode()

    def spans(kind: int | str, code: int | str) -> bytes:
        span = {
            "traceId": TRACE.hex(),
            "spanId": SPAN.hex(),
            "kind": kind,
            "status": {"code": code},
        }
        return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()

    def metrics(temporality: int | str) -> bytes:
        point = {"asInt": "3", "timeUnixNano": "5"}
        data = {"aggregationTemporality": temporality, "dataPoints": [point]}
        metric = {"name": "n", "sum": data}
        return json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}).encode()

    for value in logs_pb2.SeverityNumber.DESCRIPTOR.values:
        (named,) = wire.decode("logs", "json", logs(value.name))
        assert named == wire.decode("logs", "json", logs(value.number))[0]
        assert named.logs[0].severity_number == value.number
    kinds = trace_pb2.Span.SpanKind.DESCRIPTOR.values
    codes = trace_pb2.Status.StatusCode.DESCRIPTOR.values
    for kind, code in zip(kinds, [*codes, *codes], strict=True):
        (named,) = wire.decode("traces", "json", spans(kind.name, code.name))
        assert (named.spans[0].kind, named.spans[0].status_code) == (kind.number, code.number)
    for value in metrics_pb2.AggregationTemporality.DESCRIPTOR.values:
        (named,) = wire.decode("metrics", "json", metrics(value.name))
        assert named == wire.decode("metrics", "json", metrics(value.number))[0]
    assert (
        wire.decode("metrics", "json", metrics("AGGREGATION_TEMPORALITY_DELTA"))[0]
        .points[0]
        .temporality
        == wire.TEMPORALITY[1]
    )
    assert wire.decode("logs", "json", logs("LOUD"))[0].logs[0].severity_number == 0
