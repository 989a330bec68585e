"""One OTLP export request's body -> NDJSON events, the part of a request that needs no
event loop: inflating, decoding (:mod:`.wire`) and mapping (:mod:`.mapping`).

The daemon runs it for small requests, and an ingest worker process for big ones
(daemon/ingest_worker.py), so this module imports nothing of the daemon's.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import msgspec

from telemetryd.adapters.otel import wire

if TYPE_CHECKING:
    from telemetryd.adapters.otel.records import Scope

Mapper = Callable[["Scope", Any], list[dict[str, Any]]]  # one record's events

log = logging.getLogger(__name__)

SIGNALS: tuple[wire.Signal, ...] = ("logs", "metrics", "traces")
ENCODINGS: tuple[wire.Encoding, ...] = ("protobuf", "json")
_LINES = msgspec.json.Encoder().encode_lines
# attrs in the canonical encoding (events.ENCODER's: keys sorted at every level), so the
# daemon's check can put them into the event's line as they are.
_CANONICAL = msgspec.json.Encoder(order="deterministic").encode


class Mapped(msgspec.Struct, array_like=True, gc=False):
    """What a request's records gave: ``lines`` (NDJSON events), how many ``records``
    it held, how many of them could not be mapped, the first problem, and how many
    records were another telemetryd's forwarded events (:mod:`.forwarded`: their lines
    keep the ``received_at`` they were journaled with).

    ``attrs`` has one item per line: a mapped event's ``attrs``, left out of its line and
    encoded canonically (b"" when it has none, and for a forwarded event, whose line is
    whole): :meth:`telemetryd.daemon.ingest.Checker.check` takes them apart, so the
    attributes, most of an event, are encoded once and never decoded again."""

    lines: bytes
    records: int
    unmapped: int = 0
    problem: str = ""
    forwarded: int = 0
    attrs: list[bytes] = []


def whole_lines(mapped: Mapped) -> list[bytes]:
    """``mapped``'s events as whole lines, each with its attrs back in (for a reader: the
    daemon never needs them so)."""
    out = []
    for line, raw in zip(mapped.lines.splitlines(), mapped.attrs, strict=True):
        out.append(line[:-1] + b',"attrs":' + raw + b"}" if raw else line)
    return out


def gunzip(body: bytes, limit: int) -> bytes:
    """``body`` inflated: each of its gzip members in turn, as gzip's own readers take
    them (zero bytes after a member are padding), at most ``limit`` bytes in all (a gzip
    bomb stops there): OverflowError past it, zlib.error when it is not gzip, is cut
    short, or has something else after a member."""
    parts: list[bytes] = []
    size = 0
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = inflater.decompress(body, limit - size + 1)
        size += len(out)
        if size > limit or inflater.unconsumed_tail:
            raise OverflowError(limit)
        if not inflater.eof:
            raise zlib.error("the gzip stream is cut short")
        parts.append(out)
        body = inflater.unused_data.lstrip(b"\0")
        if not body:
            return b"".join(parts)  # (one part: the same bytes, not a copy)


def to_events(
    signal: wire.Signal,
    encoding: wire.Encoding,
    body: bytes,
    *,
    gzipped: bool = False,
    limit: int,
    prompt_text: bool = False,
    max_attrs: int | None = None,
) -> Mapped:
    """The events of one export request. Raises wire.BadRequest (undecodable),
    OverflowError (inflates past ``limit``) or zlib.error (a broken gzip body). A
    mapping that fails costs its record only. ``max_attrs``: the daemon's
    ``ingest.max-attrs-bytes``; attrs are cut to three quarters of it, when that is
    less than common.ATTRS_BUDGET."""
    from telemetryd.adapters.otel import common

    if gzipped and body:
        body = gunzip(body, limit)
    wanted = common.ENCODED_ATTRS.set(True)  # (finish() encodes attrs that fit at once)
    budget = common.ATTRS_BUDGET
    if max_attrs is not None:
        budget = min(budget, max_attrs * 3 // 4)
    bounded = common.ATTRS_LIMIT.set(budget)
    try:
        return _to_events(signal, encoding, body, prompt_text)
    finally:
        common.ATTRS_LIMIT.reset(bounded)
        common.ENCODED_ATTRS.reset(wanted)


def _to_events(
    signal: wire.Signal, encoding: wire.Encoding, body: bytes, prompt_text: bool
) -> Mapped:
    from telemetryd.adapters.otel import forwarded, mapping

    out: list[bytes] = []
    attrs: list[bytes] = []
    records = 0
    unmapped = 0
    problem = ""
    carried = 0
    for group in wire.decode(signal, encoding, body):
        scope = group.scope
        if scope.name == forwarded.SCOPE:
            # Another telemetryd's events: a log record's body is the event itself (its
            # id, so resending keeps one); its spans and data points repeat events that
            # its log records carry, so they give none.
            records += len(group.logs) + len(group.spans) + len(group.points)
            for record in group.logs:
                line = forwarded.forwarded_line(record.body)
                if line is None:
                    unmapped += 1
                    problem = problem or "a telemetryd.forward record's body is not an event"
                else:
                    out.append(line)
                    attrs.append(b"")
                    carried += 1
            continue
        mapper: Mapper
        items: list[Any]
        if signal == "logs":
            logs = mapping.log_events_with_text if prompt_text else mapping.log_events
            mapper = cast(Mapper, logs)
            items = group.logs
        elif signal == "traces":
            mapper, items = cast(Mapper, mapping.span_events), group.spans
        else:
            mapper, items = cast(Mapper, mapping.metric_events), group.points
        found: list[list[dict[str, Any]]] = []  # each record's events
        records += len(items)
        for item in items:
            try:
                events = mapper(scope, item)
            except Exception as exc:  # a bug in a mapper: the record is rejected, not the rest
                log.exception("mapping an OTLP %s record failed", signal)
                unmapped += 1
                problem = problem or f"a record could not be mapped: {type(exc).__name__}"
                continue
            if not events and signal == "metrics":  # (a value NaN, infinite or missing)
                unmapped += 1
                problem = problem or "a data point without a finite value was not kept"
            found.append(events)
        try:
            out.append(_encode([event for events in found for event in events], attrs))
        except Exception:  # (never seen) encoded record by record: only the culprit is lost
            for events in found:
                try:
                    out.append(_encode(events, attrs))
                except Exception as exc:
                    log.exception("encoding the events of an OTLP %s record failed", signal)
                    unmapped += 1
                    problem = problem or f"a record could not be mapped: {type(exc).__name__}"
    return Mapped(b"".join(out), records, unmapped, problem, carried, attrs)


def _encode(events: list[dict[str, Any]], attrs: list[bytes]) -> bytes:
    """``events``' lines without their attrs; each one's attrs (canonical) onto ``attrs``.
    When encoding fails, ``events`` and ``attrs`` are as they were."""
    popped = [event.pop("attrs", None) for event in events]
    try:
        # (bytes: common.finish encoded them already)
        found = [b"" if a is None else a if type(a) is bytes else _CANONICAL(a) for a in popped]
        lines = _LINES(events)
    except Exception:
        for event, a in zip(events, popped, strict=True):
            if a is not None:
                event["attrs"] = a
        raise
    attrs.extend(found)
    return lines
