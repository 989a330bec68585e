"""What every OTLP mapper shares: values, times, ids, and attrs that stay in bounds.

``attrs`` of a mapped event holds the record's own attributes (and the
resource's under ``resource``), minus content, cut to size:

- content is dropped, its length kept as ``<key>_length``: prompt and response
  text, tool input and output, raw API bodies, GenAI message attributes
  (:data:`CONTENT`);
- a string is cut to :data:`MAX_TEXT` characters, a list to :data:`MAX_ITEMS`
  items, an object to :data:`MAX_ITEMS` keys, nesting below :data:`MAX_NEST`
  levels becomes text;
- the whole stays under :data:`ATTRS_BUDGET` bytes encoded, or three quarters of
  ``ingest.max-attrs-bytes`` when that is less (:data:`ATTRS_LIMIT`: the daemon
  rejects attrs over it, 16 KiB by default): the longest strings are cut further,
  then the largest keys dropped (named in ``otel.dropped``);
- a tool's agentic telemetry spec metadata, found in its input before the input is
  dropped, is ``ats`` (adapters/ats.py bounds it to 4 KiB), never cut by the above.
"""

from __future__ import annotations

import contextvars
import itertools
import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from telemetryd import fastjson
from telemetryd.adapters import ats, ids
from telemetryd.adapters.claude_code import MAX_PROMPT

MAX_TEXT = 1000  # characters of one string value in attrs
MAX_ERROR = 1000  # characters of an error message field
MAX_ITEMS = 64  # items of one list, keys of one object
MAX_NEST = 3  # container levels inside one attribute value
ATTRS_BUDGET = 12 * 1024  # bytes of encoded attrs (the daemon's default limit is 16 KiB)
MAX_COUNT = 2**53 - 1  # events.MAX_INT
REDACTED = frozenset({"<REDACTED>", "[REDACTED]", "REDACTED"})

# Attributes that hold content (the text itself, not metadata about it).
CONTENT = frozenset(
    {
        # Claude Code
        "prompt",
        "user_prompt",
        "response",
        "body",
        "tool_input",
        "tool_parameters",
        "full_command",
        "bash_command",
        "hook_definitions",
        "new_context",
        "system_prompt_preview",
        "user_system_prompt",
        "response.model_output",
        # Codex
        "arguments",
        "output",
        # Gemini CLI
        "request_text",
        "response_text",
        "function_args",
        # GenAI semantic conventions and Copilot
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.definitions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.prompt",
        "gen_ai.completion",
        "copilot_chat.hook_input",
        "copilot_chat.hook_output",
        "github.copilot.tool.parameters.command",
        "github.copilot.message",
    }
)
CONTENT_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.")
# Keys of Claude Code's `tool_parameters` JSON that are metadata, kept as `tool.<key>`.
TOOL_PARAMETER_KEYS = (
    "mcp_server_name",
    "mcp_tool_name",
    "skill_name",
    "subagent_type",
    "git_commit_id",
)
# Span events that carry content in their attributes (only their name and time are kept).
CONTENT_EVENTS = frozenset(
    {
        "tool.output",
        "gen_ai.content.prompt",
        "gen_ai.content.completion",
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.choice",
    }
)
SESSION_KEYS = (
    "session.id",
    "conversation.id",
    "gen_ai.conversation.id",
    "copilot_chat.session_id",
    "session_id",
)
MODEL_KEYS = ("model", "gen_ai.response.model", "gen_ai.request.model")
SPAN_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}

_ENCODER = msgspec.json.Encoder(order="sorted")
_SIZER = msgspec.json.Encoder().encode


# -- values ----------------------------------------------------------------------------


def text(value: Any) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def cut(value: str, limit: int = MAX_TEXT) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def count(value: Any) -> int | None:
    """A count from 0 to 2^53 - 1: an int, an integral float, or decimal digits in a
    string (Codex sends some token counts as strings, OTLP/JSON int64 as strings)."""
    if type(value) is int:  # (the usual case, first)
        return value if 0 <= value <= MAX_COUNT else None
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit()) or len(value) > 16:  # (not "²")
            return None
        value = int(value)
    elif isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_COUNT:
        return value
    return None


def number(value: Any) -> float | None:
    """A finite number (a numeric string too), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, (int, float)):
        result = float(value)
        return result if math.isfinite(result) else None
    return None


def flag(value: Any) -> bool | None:
    """A boolean, also from the strings ``"true"`` / ``"false"`` (Claude Code, Codex)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    return None


def first(attrs: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        found = text(attrs.get(key))
        if found:
            return found
    return None


# -- times -----------------------------------------------------------------------------


def iso(ns: int) -> str | None:
    """Nanoseconds since the epoch as RFC 3339 UTC with milliseconds and a ``Z``;
    None for 0 (unknown) or a time out of range."""
    if ns <= 0:
        return None
    seconds, rest = divmod(ns, 1_000_000_000)
    last = _LAST_SECOND[0]
    if last[0] != seconds:  # (records of one batch mostly share their second)
        # The day's date from datetime (once per day), the time of day from its parts:
        # the text datetime.fromtimestamp(seconds, UTC) gives, at a fifth of the cost.
        # (The first second out of range, year 10000, starts a day: it fails as before.)
        day, second = divmod(seconds, 86_400)
        date = _DAYS.get(day)
        if date is None:
            try:
                date = datetime.fromtimestamp(day * 86_400, UTC).date().isoformat()
            except (OverflowError, OSError, ValueError):
                return None
            if len(_DAYS) >= 4096:
                _DAYS.clear()
            _DAYS[day] = date
        minutes, second = divmod(second, 60)
        hours, minutes = divmod(minutes, 60)
        two = _TWO_DIGITS
        last = (seconds, f"{date}T{two[hours]}:{two[minutes]}:{two[second]}")
        _LAST_SECOND[0] = last  # (one store: threads that map at once see a whole pair)
    return last[1] + _MILLIS[rest // 1_000_000]


_LAST_SECOND: list[tuple[int, str]] = [(-1, "")]  # the last second iso() wrote, its text
_DAYS: dict[int, str] = {}  # day since the epoch -> its date, YYYY-MM-DD (iso())
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]  # iso()'s tails
# "00" to "99": a table, as a format spec ({n:02d}) costs ten times as much
_TWO_DIGITS = [f"{n:02d}" for n in range(100)]


def iso_text(value: Any) -> str | None:
    """An ISO 8601 timestamp with an offset (``event.timestamp``), normalized as :func:`iso`."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    moment = moment.astimezone(UTC)
    return (
        f"{moment.replace(tzinfo=None).isoformat(timespec='seconds')}"
        f".{moment.microsecond // 1000:03d}Z"
    )


def log_ts(record: Any) -> str | None:
    """A log record's time; its ``event.timestamp`` attribute when the record has none."""
    return iso(record.time_ns) or iso_text(record.attrs.get("event.timestamp"))


def prompt(
    event: dict[str, Any], attrs: dict[str, Any], raw: dict[str, Any], prompt_text: bool
) -> None:
    """A user prompt's ``length`` in ``event`` (its ``prompt_length``, else the length of
    its text); the text itself in ``attrs`` only with ``prompt_text`` (the agents send
    it when their own content flag is on; a redaction marker is no text)."""
    length = count(raw.get("prompt_length"))
    found = text(raw.get("prompt"))
    if found in REDACTED:
        found = None
    if length is None and found is not None:
        length = len(found)
    if length is not None:
        event["length"] = length
    if prompt_text and found is not None:
        attrs["prompt"] = cut(found, MAX_PROMPT)


def tool(
    event: dict[str, Any],
    attrs: dict[str, Any],
    raw: dict[str, Any],
    *,
    use_id_key: str,
    error_keys: tuple[str, ...] = (),
) -> str | None:
    """``event``'s ``tool`` for an agent's tool decision (``tool_call``: the decision and
    its source in ``attrs``) or tool result (``tool_result``: success, the error from the
    first of ``error_keys`` that is set unless it succeeded, duration); the use id
    (``raw[use_id_key]``), for the event's id."""
    found: dict[str, Any] = {"name": cut(text(raw.get("tool_name")) or "unknown", 200)}
    use_id = text(raw.get(use_id_key))
    if use_id:
        found["use_id"] = use_id
    tool_input = _tool_input(raw)
    digest = ids.input_digest(tool_input)
    if digest:
        found["input_digest"] = digest
    metadata = ats.from_tool_input(found["name"], tool_input)
    if metadata is not None:
        attrs["ats"] = metadata
    if event["type"] == "tool_result":
        success = flag(raw.get("success"))
        if success is not None:
            found["success"] = success
        error = next((t for t in (text(raw.get(k)) for k in error_keys) if t), None)
        if error and success is not True:
            found["error"] = cut(error, MAX_ERROR)
        duration = count(raw.get("duration_ms"))
        if duration is not None:
            event["duration_ms"] = duration
    else:
        for key in ("decision", "source"):
            value = text(raw.get(key))
            if value:
                attrs["decision" if key == "decision" else "decision_source"] = value
    event["tool"] = found
    return use_id


# Attributes that carry a tool's input as JSON text (Claude Code, Codex, Gemini CLI).
_TOOL_INPUT_KEYS = ("tool_input", "arguments", "function_args", "tool_parameters")


def _tool_input(raw: dict[str, Any]) -> Any:
    """The tool input an event carries (before content is dropped), parsed when it is
    JSON text: what :func:`telemetryd.adapters.ids.input_digest` digests as it does a
    hook's ``tool_input``, and where agentic telemetry spec metadata is looked for."""
    for key in _TOOL_INPUT_KEYS:
        value = raw.get(key)
        if isinstance(value, str) and value and value not in REDACTED:
            try:
                return fastjson.loads(value)
            except ValueError:  # not JSON: the text itself
                return value
        if isinstance(value, (dict, list)):
            return value
    return None


def duration_ms(start_ns: int, end_ns: int) -> int | None:
    if start_ns <= 0 or end_ns < start_ns:
        return None
    return (end_ns - start_ns) // 1_000_000


# -- attrs -----------------------------------------------------------------------------


def is_content(key: str) -> bool:
    return key in CONTENT or key.startswith(CONTENT_PREFIXES)


def length_of(value: Any) -> int | None:
    if isinstance(value, str):
        return None if value in REDACTED else len(value)
    if isinstance(value, (list, dict)):
        return len(value)
    return None


def _value(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return cut(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, dict)):
        if depth >= MAX_NEST:
            return cut(_ENCODER.encode(value).decode("utf-8", "replace"))
        if isinstance(value, list):
            return [_value(item, depth + 1) for item in value[:MAX_ITEMS]]
        out = {}
        for key, item in list(value.items())[:MAX_ITEMS]:
            out[cut(str(key), 200)] = _value(item, depth + 1)
        return out
    return value


def _tool_parameters(value: Any, out: dict[str, Any]) -> None:
    """The metadata keys of Claude Code's ``tool_parameters`` JSON (MCP server and tool,
    skill, sub-agent type, commit id), as ``tool.<key>``."""
    if not isinstance(value, str) or not value.startswith("{"):
        return
    try:
        parsed = msgspec.json.decode(value)
    except msgspec.DecodeError:
        return
    if isinstance(parsed, dict):
        for key in TOOL_PARAMETER_KEYS:
            found = text(parsed.get(key))
            if found:
                out[f"tool.{key}"] = cut(found, 200)


def value_of(value: Any) -> Any:
    """One attribute value cut to size."""
    return _value(value, 0)


# Keys that :func:`clean` copies as they are (neither content nor too long), as they are
# met; bounded, since a producer chooses them (past the bound, new keys take the long way).
_PLAIN_KEYS: set[str] = set()
_PLAIN_KEYS_MAX = 2048


def clean(attrs: dict[str, Any], plain: bool = False) -> dict[str, Any]:
    """``attrs`` without content (lengths kept) and with every value cut to size (the
    first ``4 * MAX_ITEMS`` keys). Runs for every record: plain short values, most of
    them, are copied as they are, and a record whose keys have all been met before as
    plain keys and whose values are all short scalars (``plain``: the decoder knows
    they are, records.LogRecord.plain) is copied whole."""
    if len(attrs) <= MAX_ITEMS * 4 and _PLAIN_KEYS.issuperset(attrs):
        if plain:
            return dict(attrs)
        for value in attrs.values():
            kind = type(value)
            if kind is str:
                if len(value) > MAX_TEXT:
                    break
            elif kind is float:
                if value - value != 0.0:  # NaN or infinite: kept as text (below)
                    break
            elif kind is not int and kind is not bool and value is not None:
                break
        else:
            return dict(attrs)
    out: dict[str, Any] = {}
    plain_keys = _PLAIN_KEYS
    for key, value in itertools.islice(attrs.items(), MAX_ITEMS * 4):
        if not isinstance(key, str):
            continue
        if key in CONTENT or key.startswith(CONTENT_PREFIXES):
            if key == "tool_parameters":
                _tool_parameters(value, out)
            length = length_of(value)
            if length is not None and f"{key}_length" not in attrs:
                out[f"{key}_length"] = length
            continue
        if len(key) > 200:
            key = cut(key, 200)
        elif len(plain_keys) < _PLAIN_KEYS_MAX and type(key) is str:
            plain_keys.add(key)
        kind = type(value)
        if kind is int or kind is bool or (kind is str and len(value) <= MAX_TEXT):
            out[key] = value
        else:
            out[key] = _value(value, 0)
    return out


def bound(attrs: dict[str, Any], budget: int = ATTRS_BUDGET) -> dict[str, Any]:
    """``attrs`` made to fit ``budget`` bytes encoded: long strings cut to 200
    characters, then the largest keys dropped (their names in ``otel.dropped``)."""
    if len(_SIZER(attrs)) <= budget:  # (the same size in any order of keys)
        return attrs
    return _shortened(attrs, budget)


def _shortened(attrs: dict[str, Any], budget: int) -> dict[str, Any]:

    def shorten(value: Any) -> Any:
        if isinstance(value, str):
            return cut(value, 200)
        if isinstance(value, list):
            return [shorten(item) for item in value]
        if isinstance(value, dict):
            return {key: shorten(item) for key, item in value.items()}
        return value

    attrs = {key: shorten(value) for key, value in attrs.items()}
    sizes = {key: len(_ENCODER.encode(value)) + len(key) + 4 for key, value in attrs.items()}
    total = sum(sizes.values())
    dropped: list[str] = []
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        if total <= budget - 1024:  # room for the list of dropped keys
            break
        total -= sizes[key]
        del attrs[key]
        dropped.append(cut(key, 100))
    if dropped:
        attrs["otel.dropped"] = dropped[:20]
    return attrs


# The last resource cleaned and its cleaned copy: the records of one scope share their
# resource's dict, so it is cleaned once per scope, not once per record. (The dict is
# held here, so its identity cannot be reused by another one meanwhile; the pair is
# stored in one step, so threads that map at once never see halves of two.)
_RESOURCE: list[tuple[dict[str, Any], dict[str, Any]]] = [({}, {})]


def with_resource(
    attrs: dict[str, Any], scope_resource: dict[str, Any], plain: bool = False
) -> dict[str, Any]:
    """:func:`clean` ``attrs`` (``plain``: as clean's), with the resource's cleaned
    attributes under ``resource``."""
    out = clean(attrs, plain)
    if scope_resource:
        last = _RESOURCE[0]
        if last[0] is not scope_resource:
            last = (scope_resource, clean(scope_resource))
            _RESOURCE[0] = last
        # (A copy each, unless finish() encodes attrs at once: nothing changes them then.)
        out["resource"] = last[1] if ENCODED_ATTRS.get() else dict(last[1])
    return out


def encode(value: Any) -> bytes:
    return _ENCODER.encode(value)


# -- envelope and ids --------------------------------------------------------------------


def envelope(
    event_type: str,
    *,
    source: str,
    ts: str | None,
    attrs: dict[str, Any],
    trace_id: str = "",
    span_id: str = "",
    parent_span_id: str = "",
) -> dict[str, Any]:
    """The fields every mapped event has: type, ts, source, session and trace ids."""
    event: dict[str, Any] = {"type": event_type}
    if ts:
        event["ts"] = ts
    event["source"] = source
    session = first(attrs, SESSION_KEYS)
    if session:
        event["session_id"] = session
    if trace_id:
        event["trace_id"] = trace_id
    if span_id:
        event["span_id"] = span_id
    if parent_span_id:
        event["parent_span_id"] = parent_span_id
    return event


def agent(model: str | None, provider: str | None, **more: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if model:
        out["model"] = model
    if provider:
        out["provider"] = provider
    out.update({key: value for key, value in more.items() if value})
    return out


def record_id(prefix: str, *parts: Any) -> str:
    """A deterministic id of a record without an id of its own: the same record (an
    exporter's retry of a batch) always gives the same id."""
    return ids.hashed_id(
        prefix,
        *(
            part if isinstance(part, str) else encode(part).decode("utf-8", "replace")
            for part in parts
        ),
    )


def level(severity_number: int, severity_text: str) -> str:
    """The log level of an OTLP severity (1-4 trace, 5-8 debug, 9-12 info, 13-16 warn,
    17-20 error, 21-24 fatal), from its text when the number is unset."""
    if 1 <= severity_number <= 24:
        return ("trace", "debug", "info", "warning", "error", "critical")[
            (severity_number - 1) // 4
        ]
    lowered = severity_text.strip().lower()
    for prefix, name in (
        ("trace", "trace"),
        ("debug", "debug"),
        ("warn", "warning"),
        ("err", "error"),
        ("fatal", "critical"),
        ("crit", "critical"),
    ):
        if lowered.startswith(prefix):
            return name
    return "info"


# Set while adapters/otel/export.py maps a request: finish() then gives attrs already
# encoded (the bytes that measured them), which is all the export does with them. (A
# context variable: each thread that maps has its own.)
ENCODED_ATTRS: contextvars.ContextVar[bool] = contextvars.ContextVar("encoded_attrs", default=False)
_CANONICAL = msgspec.json.Encoder(order="deterministic").encode  # events.ENCODER's order


# The bytes of encoded attrs a mapped event may have: ATTRS_BUDGET, or less where the
# daemon takes less (adapters/otel/export.py sets it from ingest.max-attrs-bytes), so
# that a record's attrs are cut to fit rather than the record lost.
ATTRS_LIMIT: contextvars.ContextVar[int] = contextvars.ContextVar(
    "attrs_limit", default=ATTRS_BUDGET
)


def finish(event: dict[str, Any], attrs: dict[str, Any]) -> dict[str, Any]:
    """``event`` with its attrs bounded. A tool's agentic telemetry spec metadata
    (``ats``, bounded on its own: adapters/ats.py) is kept whole; the rest fits what is
    left of :data:`ATTRS_LIMIT`. While :data:`ENCODED_ATTRS` is set, attrs that fit
    at once are given in their canonical encoding (bytes) instead of a dict."""
    budget = ATTRS_LIMIT.get()
    found = attrs.pop("ats", None) if attrs else None
    if found is not None:
        rest = bound(attrs, budget - len(encode(found))) if attrs else {}
        rest["ats"] = found
        event["attrs"] = rest
    elif attrs:
        if ENCODED_ATTRS.get():
            encoded = _CANONICAL(attrs)  # (the same size as in any other order of keys)
            if len(encoded) <= budget:
                event["attrs"] = encoded
                return event
            event["attrs"] = _shortened(attrs, budget)
        else:
            event["attrs"] = bound(attrs, budget)
    return event
