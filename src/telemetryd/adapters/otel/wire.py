"""OTLP export requests, protobuf or JSON, into :mod:`.records`; and the answers.

Both encodings of the OTLP specification (opentelemetry-proto, ``docs/specification.md``),
one module each:

- **protobuf** (``application/x-protobuf``, :mod:`.otlp_protobuf`): parsed with
  opentelemetry-proto's generated classes, imported on the first protobuf request only
  (the daemon's idle footprint stays without them);
- **JSON** (``application/json``, :mod:`.otlp_json`): decoded straight into msgspec
  Structs (lowerCamelCase names, unknown fields ignored). 64-bit integers may come as
  decimal strings or numbers, trace and span ids as hex (any case), enums as integers,
  doubles also as ``"NaN"``/``"Infinity"`` strings.

A body that is not a request of the signal's shape raises :class:`BadRequest` naming
where (msgspec's path, or protobuf's message). Ids of the wrong length are a bad
request too; an all-zero id is no id. A log record whose ``timeUnixNano`` is 0 takes
``observedTimeUnixNano``. Attribute values nest at most :data:`MAX_DEPTH` levels
(deeper ones are cut to their text).

The answers (:func:`success`, :func:`status`) are the service's response messages and
``google.rpc.Status``, in the request's encoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import msgspec

if TYPE_CHECKING:
    from telemetryd.adapters.otel.records import Scoped

Signal = Literal["logs", "metrics", "traces"]
Encoding = Literal["protobuf", "json"]
MAX_DEPTH = 16


class BadRequest(Exception):
    """The body is not an export request of the signal's shape."""


TEMPORALITY = {1: "delta", 2: "cumulative"}  # AggregationTemporality; 0 is unspecified
KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")  # Metric.data


def finite(number: float | None) -> float | str | None:
    """JSON (and so the journal) has no NaN or infinity: those are kept as text."""
    if number is None or math.isfinite(number):
        return number
    return str(number)


def real(number: float | None) -> float | None:
    """A histogram's sum, min or max: None when it is not a finite number."""
    return number if number is None or math.isfinite(number) else None


_SCALARS = (str, int, float, bool, type(None))


class SeenAttributes:
    """Encoded attributes (one KeyValue's bytes, protobuf or JSON) met before -> (key,
    value). An agent's records repeat most of their attributes (session, version,
    model, ...), so most are found here without a look inside. Only short ones
    (``max_bytes``) with a scalar value are kept (immutable, so sharing them is safe), in
    two generations of at most ``max_size`` each (the newer one full, it becomes the
    older one, and what is found there moves back to the newer): a producer cannot grow
    it, and a stream of values seen once does not push out the ones that repeat. (The
    daemon's mapping threads may share one: each step is one dict operation.)"""

    def __init__(self, parse: Callable[[bytes], tuple[str, Any]], max_size: int = 1024) -> None:
        self.parse = parse  # an attribute's bytes -> (key, value); BadRequest if malformed
        self.max_size = max_size
        self.max_bytes = 128
        self.generations: list[dict[bytes, tuple[str, Any]]] = [{}, {}]  # newer, older

    def attrs(self, raws: Sequence[bytes]) -> tuple[dict[str, Any], bool]:
        """The attributes as a dict of plain values (a key given twice keeps its last
        value, as protobuf's maps do), and whether every value is short and a scalar
        (records.LogRecord.plain: what is kept here is)."""
        seen = self.generations
        newer = seen[0]
        found = list(map(newer.get, raws))
        misses = found.count(None)
        plain = True
        if misses:
            # (each miss found by index: no exception ends the search)
            older = seen[1]
            parse = self.parse
            max_bytes = self.max_bytes
            max_size = self.max_size
            at = -1
            for _ in range(misses):
                at = found.index(None, at + 1)
                raw = raws[at]
                pair = older.get(raw)
                if pair is None:
                    pair = parse(raw)
                    if len(raw) > max_bytes or type(pair[1]) not in _SCALARS:
                        found[at] = pair
                        plain = False
                        continue
                found[at] = pair
                newer[raw] = pair
                if len(newer) >= max_size:
                    seen[1], seen[0] = newer, {}
                    newer = seen[0]
        return dict(found), plain  # type: ignore[arg-type]


class _TopLevel(msgspec.Struct, rename="camel"):
    resource_logs: msgspec.Raw = msgspec.Raw()  # (left undecoded: empty when absent)
    resource_metrics: msgspec.Raw = msgspec.Raw()
    resource_spans: msgspec.Raw = msgspec.Raw()


_TOP_LEVEL = msgspec.json.Decoder(_TopLevel)


def signal_of(body: bytes) -> Signal | None:
    """Which signal an OTLP/JSON request is, from its one top-level key (None: not one)."""
    try:
        top = _TOP_LEVEL.decode(body)
    except msgspec.DecodeError:
        return None
    found: list[Signal] = []
    if top.resource_logs:
        found.append("logs")
    if top.resource_metrics:
        found.append("metrics")
    if top.resource_spans:
        found.append("traces")
    return found[0] if len(found) == 1 else None


def decode(signal: Signal, encoding: Encoding, body: bytes) -> list[Scoped]:
    """The records of one export request; raises :class:`BadRequest`. An empty body is
    an empty request (no records)."""
    if not body:
        return []
    if encoding == "json":
        from telemetryd.adapters.otel import otlp_json

        return otlp_json.decode(signal, body)
    from telemetryd.adapters.otel import otlp_protobuf

    return otlp_protobuf.decode(signal, body)


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
    from telemetryd.adapters.otel.otlp_protobuf import classes

    response = classes()[signal][1]()
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
    return b"\x08" + varint(code) + b"\x12" + varint(len(text)) + text


def varint(number: int) -> bytes:
    """``number`` (0 or more) as a protobuf varint."""
    out = bytearray()
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)
