"""The event model, schema v1.

Every event is one JSON object: an envelope shared by all types plus the fields
of its ``type`` (a tagged union). The Structs below *are* the schema: the JSON
Schema in ``schemas/`` is generated from them, and the journal stores each event
as ``ENCODER.encode(event)``. Field order is the Structs' order (the ``type`` tag
first), unset optional fields are omitted and ``attrs`` keys are sorted, so the
same event always encodes to the same bytes.

Evolution: a new field gets a default; a change that would make old journal
lines invalid bumps ``SCHEMA_VERSION``, and the daemon keeps reading every older
version it has written.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

SCHEMA_VERSION = 1

# The largest integer every JSON parser reads exactly (I-JSON, RFC 7493: a double's 53
# bits). Every count and duration is at most this, so each fits a BIGINT column and sums
# of a few of them (a derived token total) cannot overflow one.
MAX_INT = 2**53 - 1
NonNegInt = Annotated[int, Meta(ge=0, le=MAX_INT)]
Ratio = Annotated[float, Meta(ge=0.0, le=1.0)]
# Dollars one event may cost at most: far past any real request, and low enough that a
# sum over any number of rows stays finite (1e308 twice was infinity, left out of totals).
MAX_COST = 1e9
Money = Annotated[float, Meta(ge=0.0, le=MAX_COST)]
Timestamp = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a UTC offset")]
EventId = Annotated[str, Meta(min_length=1, max_length=128)]
Version = Annotated[int, Meta(ge=1, le=SCHEMA_VERSION)]


class _Strict(Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True, gc=False):
    """Options every struct of the model shares (subclasses inherit all but ``kw_only``)."""


class Tokens(_Strict, kw_only=True):
    """Token accounting, tri-state by ``source``.

    ``actual``: ``input`` and ``output`` are required; ``total`` is derived when
    absent. ``estimated``: ``estimated_total`` and ``tokenizer`` are required.
    ``unknown``: no counts are needed, and it is never an error.

    One convention for every provider: ``input`` counts uncached input only;
    ``cache_read`` / ``cache_creation`` count cached input read / written;
    ``output`` includes reasoning tokens, also kept in ``reasoning``.
    """

    source: Literal["actual", "estimated", "unknown"]
    input: NonNegInt | None = None
    output: NonNegInt | None = None
    cache_read: NonNegInt | None = None
    cache_creation: NonNegInt | None = None
    reasoning: NonNegInt | None = None
    total: NonNegInt | None = None
    estimated_total: NonNegInt | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        # (Runs for every api_request the daemon decodes: each attribute read once.)
        source = self.source
        if source == "actual":
            input_, output = self.input, self.output
            if input_ is None or output is None:
                raise ValueError("`actual` tokens need both `input` and `output`")
            reasoning = self.reasoning
            if reasoning is not None and reasoning > output:
                raise ValueError("`reasoning` is part of `output` and cannot exceed it")
            if self.total is None:
                total = input_ + output + (self.cache_read or 0) + (self.cache_creation or 0)
                if total > MAX_INT:
                    raise ValueError(
                        f"`input` + `output` + `cache_read` + `cache_creation` is {total}, "
                        f"over the largest count ({MAX_INT})"
                    )
                self.total = total
        elif source == "estimated" and (self.estimated_total is None or self.tokenizer is None):
            raise ValueError("`estimated` tokens need `estimated_total` and `tokenizer`")


class Agent(_Strict, kw_only=True):
    """Who did the work: the model and the agent (or sub-agent) running it."""

    model: str | None = None
    provider: str | None = None
    type: str | None = None
    id: str | None = None
    variant: str | None = None


class Task(_Strict, kw_only=True):
    """The unit of work an event belongs to, and which attempt at it."""

    id: str | None = None
    title: str | None = None
    attempt_id: str | None = None
    attempt_index: NonNegInt | None = None


class Event(_Strict, tag_field="type", kw_only=True):
    """The envelope every event carries. Subclasses add the fields of one type."""

    v: Version | None = None
    id: EventId | None = None
    ts: Timestamp | None = None
    source: str | None = None
    session_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    agent: Agent | None = None
    task: Task | None = None
    attrs: dict[str, Any] | None = None
    received_at: Timestamp | None = None


class _Session(Event, kw_only=True):
    cwd: str | None = None
    reason: str | None = None
    duration_ms: NonNegInt | None = None
    success: bool | None = None


class SessionStart(_Session, tag="session_start", kw_only=True):
    pass


class SessionEnd(_Session, tag="session_end", kw_only=True):
    pass


class _Activation(Event, kw_only=True):
    """A (sub-)agent activation; the agent itself is in the envelope's ``agent``."""

    duration_ms: NonNegInt | None = None
    tokens: Tokens | None = None
    success: bool | None = None


class AgentStart(_Activation, tag="agent_start", kw_only=True):
    pass


class AgentStop(_Activation, tag="agent_stop", kw_only=True):
    pass


class ApiRequest(Event, tag="api_request", kw_only=True):
    """One model request: its tokens and cost."""

    tokens: Tokens
    cost_usd: Money | None = None
    cost_source: Literal["reported", "computed", "unknown"] | None = None
    duration_ms: NonNegInt | None = None
    success: bool | None = None
    error: str | None = None


class Tool(_Strict, kw_only=True):
    name: str
    use_id: str | None = None
    success: bool | None = None
    error: str | None = None
    # A hash of the tool's input (adapters/ids.py input_digest): equal inputs, equal
    # digests, whatever path reported them; the input itself is content, not kept.
    input_digest: Annotated[str, Meta(max_length=64)] | None = None


class ToolCall(Event, tag="tool_call", kw_only=True):
    tool: Tool
    duration_ms: NonNegInt | None = None


class ToolResult(Event, tag="tool_result", kw_only=True):
    tool: Tool
    duration_ms: NonNegInt | None = None


class Skill(Event, tag="skill", kw_only=True):
    name: str
    success: bool | None = None
    duration_ms: NonNegInt | None = None


class Error(Event, tag="error", kw_only=True):
    message: str
    category: str | None = None
    fingerprint: str | None = None
    confidence: Ratio | None = None


class RetryCount(_Strict, kw_only=True):
    same_model: NonNegInt = 0
    reroute: NonNegInt = 0


class Elapsed(_Strict, kw_only=True):
    wall: NonNegInt
    llm: NonNegInt | None = None
    tools: NonNegInt | None = None


class Run(Event, tag="run", kw_only=True):
    """One attempt at a task: retries, elapsed times, tokens and how it ended."""

    attempt_id: str
    attempt_index: NonNegInt
    retry_count: RetryCount
    elapsed_ms: Elapsed
    tokens: Tokens
    outcome: Literal["done", "blocked", "redo"]
    outcome_reason: str | None = None


class Log(Event, tag="log", kw_only=True):
    """A structured log line; ``trace_id`` / ``span_id`` in the envelope tie it to a trace."""

    level: Literal["trace", "debug", "info", "warning", "error", "critical"]
    component: str
    event: str
    fields: dict[str, Any] | None = None


class Metric(Event, tag="metric", kw_only=True):
    name: str
    value: float
    kind: Literal["counter", "gauge", "histogram"]
    unit: str | None = None


class Alert(Event, tag="alert", kw_only=True):
    severity: Literal["info", "warning", "error", "critical"]
    kind: str
    message: str


class Prompt(Event, tag="prompt", kw_only=True):
    """A user prompt was submitted. Its text is content, not metadata: only its length."""

    length: NonNegInt | None = None


class Span(Event, tag="span", kw_only=True):
    """One span of a trace (an OpenTelemetry span): the envelope's ``trace_id``,
    ``span_id`` and ``parent_span_id`` place it in its trace, ``ts`` is its start."""

    name: str
    kind: Literal["internal", "server", "client", "producer", "consumer"] | None = None
    duration_ms: NonNegInt | None = None
    success: bool | None = None
    error: str | None = None


class Custom(Event, tag="custom", kw_only=True):
    """Anything else: a name, with the data in ``attrs``."""

    name: str


AnyEvent = (
    SessionStart
    | SessionEnd
    | AgentStart
    | AgentStop
    | ApiRequest
    | ToolCall
    | ToolResult
    | Skill
    | Error
    | Run
    | Log
    | Metric
    | Alert
    | Prompt
    | Span
    | Custom
)

EVENT_TYPES: tuple[str, ...] = tuple(str(cls.__struct_config__.tag) for cls in AnyEvent.__args__)

DECODER = msgspec.json.Decoder(AnyEvent)
ENCODER = msgspec.json.Encoder(order="deterministic")


# Error codes for a line that is not a valid event (the wire protocol reuses them).
INVALID_JSON = "invalid_json"
INVALID_UTF8 = "invalid_utf8"
INVALID_EVENT = "invalid_event"
LINE_TOO_LONG = "line_too_long"
ATTRS_TOO_LARGE = "attrs_too_large"
ATTRS_TOO_DEEP = "attrs_too_deep"
RECEIVED_AT_SET = "received_at_set"
# Not the line's fault: processing it failed unexpectedly (a bug). Only that line is lost.
INTERNAL_ERROR = "internal_error"


class Invalid(Exception):
    """One line is not a valid event. ``code`` is short and stable; ``message`` names the
    field (``path``, in msgspec's ``$.a.b`` form) or the limit."""

    def __init__(self, code: str, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def explain(exc: Exception, line: bytes) -> Invalid:
    """Turn a decoding failure of ``line`` into an :class:`Invalid` naming the problem."""
    if isinstance(exc, RecursionError):
        return Invalid(INVALID_JSON, "invalid JSON: nested too deeply")
    message = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        message, sep, path = message.rpartition(" - at `")
        if not sep:
            message, path = str(exc), "$`"
        path = path[:-1]
        if message.startswith("Invalid value") and path == "$.type":
            message = f"unknown event type {message[len('Invalid value ') :]}"
        elif message.startswith("Object contains unknown field"):
            message += " (free-form data belongs in `attrs`)"
        return Invalid(INVALID_EVENT, message, path)
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as err:
        return Invalid(INVALID_UTF8, f"invalid UTF-8 at byte {err.start}")
    # msgspec calls a lone surrogate escape "Input data was truncated" when it ends the
    # string, and "invalid utf-16 surrogate pair" otherwise.
    if message == "Input data was truncated" or "surrogate" in message:
        lone = _lone_surrogate(line)
        if lone is not None:
            return lone
    return Invalid(INVALID_JSON, f"invalid JSON: {message}")


# A backslash escape that matters here: an escaped backslash (skipped), a surrogate pair
# (fine), or a surrogate on its own (the problem).
_ESCAPES = re.compile(
    rb"\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)


def _lone_surrogate(line: bytes) -> Invalid | None:
    """The first ``\\uD800``-``\\uDFFF`` escape in ``line`` that is not half of a pair,
    with the path of the string that holds it when the line parses otherwise."""
    escape = next(
        (m[0] for m in _ESCAPES.finditer(line) if len(m[0]) == 6),
        None,
    )
    if escape is None:
        return None
    message = (
        f"invalid unicode escape `{escape.decode()}`: a lone UTF-16 surrogate "
        "(one not paired with another) is not a character"
    )
    path = "$"
    try:
        # The standard library's parser keeps lone surrogates: find the string (or key).
        stack: list[tuple[Any, str]] = [(json.loads(line), "$")]
    except (ValueError, RecursionError):
        stack = []
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if any("\ud800" <= char <= "\udfff" for char in value):
                path = where
                break
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                name = f"{where}.{key}" if key.isidentifier() else f"{where}[{json.dumps(key)}]"
                if any("\ud800" <= char <= "\udfff" for char in key):
                    stack.append((key, where))
                stack.append((item, name))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{n}]") for n, item in reversed(list(enumerate(value))))
    return Invalid(INVALID_JSON, message, path)


def _depth_over(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((v, depth + 1) for v in children if isinstance(v, (dict, list)))
    return False


def check_producer_rules(
    event: Event, line: bytes, *, max_attrs_bytes: int, max_attrs_depth: int
) -> Invalid | None:
    """What a valid event must also satisfy to be accepted from a producer: no
    ``received_at``, and the free-form objects (``attrs``, and a log's ``fields``)
    within the size and depth limits."""
    if event.ts is not None:
        try:
            to_utc_ms(event.ts)
        except Invalid as invalid:
            return invalid
    if event.received_at is not None:
        return Invalid(
            RECEIVED_AT_SET,
            "`received_at` is set by the daemon, never by clients",
            "$.received_at",
        )
    for name, value in (("attrs", event.attrs), ("fields", getattr(event, "fields", None))):
        if value is None:
            continue
        # The raw line bounds both measures, so most events skip the exact checks.
        if line.count(b"{") + line.count(b"[") > max_attrs_depth and _depth_over(
            value, max_attrs_depth
        ):
            return Invalid(
                ATTRS_TOO_DEEP,
                f"`{name}` nests deeper than the limit of {max_attrs_depth}",
                f"$.{name}",
            )
        if len(line) > max_attrs_bytes:
            size = len(ENCODER.encode(value))
            if size > max_attrs_bytes:
                return Invalid(
                    ATTRS_TOO_LARGE,
                    f"`{name}` is {size} bytes, over the limit of {max_attrs_bytes}",
                    f"$.{name}",
                )
    return None


# What decoding one line may raise: malformed or invalid JSON, bad UTF-8 inside a
# string, and nesting deep enough to exhaust the decoder's recursion limit.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def decode(line: bytes) -> AnyEvent:
    """Decode one line into a typed event, or raise :class:`Invalid`.

    This validates what a producer controls; the daemon adds the limits of its
    configuration and the fields it owns (``id``, ``ts``, ``received_at``, ``v``).
    """
    try:
        event: AnyEvent = DECODER.decode(line)
        return event
    except DECODE_ERRORS as exc:
        raise explain(exc, line) from None


def to_utc_ms(ts: datetime) -> datetime:
    """``ts`` in UTC, truncated to milliseconds (the canonical precision).

    Raises :class:`Invalid` for a time that is valid with its offset but out of
    range once in UTC (``9999-12-31T23:59:59-01:00``).
    """
    try:
        if ts.tzinfo is not UTC:
            ts = ts.astimezone(UTC)
    except OverflowError:
        raise Invalid(
            INVALID_EVENT, "timestamp is out of range once converted to UTC", "$.ts"
        ) from None
    return ts.replace(microsecond=ts.microsecond - ts.microsecond % 1000)
