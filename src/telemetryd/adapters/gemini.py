"""Gemini CLI chat recordings (``~/.gemini/tmp/<project>/chats/``) -> api_request records.

Gemini CLI records each session in one of two formats:

- the older single JSON document, ``session-<time>-<id>.json``, rewritten whole on
  every turn: ``{"sessionId", "projectHash", "startTime", "lastUpdated",
  "messages": [...]}``;
- the newer JSONL recording, appended to: a header line ``{"sessionId",
  "projectHash", "startTime", "lastUpdated", "kind"}``, then one line per message
  and ``{"$set": {"lastUpdated": ...}}`` lines.

A message of ``type`` ``gemini`` is one model response; its ``tokens`` are
``{input, output, cached, thoughts, tool, total}`` (``input`` includes ``cached``;
``thoughts`` are apart from ``output``), converted by :func:`usage.gemini`, the
rule the OTLP mapper (``adapters/otel/gemini.py``) shares: input = input + tool −
cached, cache_read = cached, output = output + thoughts (also kept as
``reasoning``). Gemini CLI appends a message again, same ``id`` and same tokens,
once its tool calls are filled in: a record's key is (session, message ``id``), so
the importer counts it once (keeping the most complete copy, the later one), and
its event id, a hash of that key, is the same whatever file or import brought it.

As ccusage reads these files: the model is the record's, else the last one seen
earlier in the file (``unknown`` when none; ccusage drops such records); the time
is the record's ``timestamp`` (else ``created_at``), else the session's
``startTime`` / ``lastUpdated`` (single-JSON files only), else the file's mtime;
records whose counts are all zero are not requests.

Plain dicts, no imports beyond the adapters' own.
"""

from __future__ import annotations

from telemetryd.adapters import ids
from telemetryd.adapters import usage as usage_mod

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SOURCE = "gemini-cli"
PROVIDER = "google"
ID_PREFIX = "gm:"

# The names ccusage accepts for each count (Gemini CLI writes the first).
_NAMES = {
    "input": ("input", "prompt", "input_tokens", "prompt_tokens"),
    "output": ("output", "candidates", "output_tokens", "candidates_tokens"),
    "cached": ("cached", "cached_tokens"),
    "thoughts": ("thoughts", "reasoning", "thoughts_tokens", "reasoning_tokens"),
    "tool": ("tool", "tool_tokens"),
    "total": ("total", "total_tokens"),
}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _count(raw: dict[str, Any], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value != value or value in (float("inf"), float("-inf")):
            continue
        return max(0, int(value))
    return None


def tokens(raw: Any) -> dict[str, Any] | None:
    """A message's ``tokens`` in the model's convention; None when it holds none."""
    if not isinstance(raw, dict):
        return None
    counts = {key: _count(raw, names) for key, names in _NAMES.items()}
    if all(value is None for value in counts.values()):
        return None
    found = usage_mod.gemini(
        input=counts["input"] or 0,
        output=counts["output"] or 0,
        cached=counts["cached"],
        thoughts=counts["thoughts"],
        tool=counts["tool"],
        total=counts["total"],
    )
    if found.get("source") != "actual" or not found["total"]:
        return None  # all zero: not a request (ccusage skips these too)
    return found


class Session:
    """One recording, read in order: :meth:`header` with the document or header line's
    fields, :meth:`feed` with each message; ``feed`` returns a record per response.

    A record: ``key`` (session, message id) or None when the message has no id,
    ``tokens``, ``total``, ``sidechain`` (False: the keys :class:`claude_code.Dedup`
    reads), ``model``, ``ts``, ``session_id``.
    """

    def __init__(self, session_id: str, fallback_ts: str | None = None) -> None:
        self.session_id = session_id  # the file name's stem until a header names it
        self.fallback_ts = fallback_ts
        self.model: str | None = None

    def header(self, record: dict[str, Any], *, times: bool = False) -> None:
        """Take the session id (and, with ``times``, the start time as the fallback)."""
        session = _text(record.get("sessionId")) or _text(record.get("session_id"))
        if session:
            self.session_id = session
        if times:
            start = _text(record.get("startTime")) or _text(record.get("lastUpdated"))
            if start:
                self.fallback_ts = start

    def feed(self, record: Any, *, hint: bool = True) -> dict[str, Any] | None:
        """The record of one message (``hint``: use the file's last model as a fallback)."""
        if not isinstance(record, dict):
            return None
        model = _text(record.get("model"))
        if hint:
            self.header(record)
            if model:
                self.model = model
            model = model or self.model
        if record.get("type") != "gemini":
            return None
        counts = tokens(record.get("tokens"))
        if counts is None:
            return None
        message_id = _text(record.get("id"))
        ts = _text(record.get("timestamp")) or _text(record.get("created_at"))
        return {
            "key": None if message_id is None else (self.session_id, message_id),
            "tokens": counts,
            "total": counts["total"],
            "sidechain": False,
            "model": model,
            "ts": ts or self.fallback_ts,
            "session_id": self.session_id,
        }


def event_id(record: dict[str, Any]) -> str:
    """``gm:`` and a hash of the session and message id (a record with a key)."""
    session, message = record["key"]
    return ids.hashed_id(ID_PREFIX, session, message)


def api_request_event(record: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The ``api_request`` event of one response."""
    event: dict[str, Any] = {"type": "api_request", "id": event_id}
    if record["ts"]:
        event["ts"] = record["ts"]
    event["source"] = SOURCE
    if record["session_id"]:
        event["session_id"] = record["session_id"]
    event["agent"] = {"model": record["model"] or "unknown", "provider": PROVIDER}
    event["tokens"] = record["tokens"]
    event["attrs"] = {"imported": True}
    return event
