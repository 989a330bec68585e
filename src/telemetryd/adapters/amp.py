"""Amp's thread files (``~/.local/share/amp/threads/T-<uuid>.json``) -> api_request records.

Amp writes each thread as one JSON document, rewritten whole as the thread grows:
``{"v", "id", "created", "title", "messages": [...], "usageLedger": {"events": [...]}}``.
Usage sits in two places:

- ``usageLedger.events[]``, one per billed operation: ``{"id", "timestamp", "model",
  "credits", "tokens": {"input", "output", "total"?}, "operationType", "fromMessageId",
  "toMessageId"}``; ``input`` is uncached input; the cache reads and writes are on the
  assistant message the event points to (``toMessageId``);
- each assistant message's ``usage``: ``{"model", "inputTokens", "outputTokens",
  "cacheCreationInputTokens", "cacheReadInputTokens", "totalInputTokens", "credits",
  "timestamp"?, "totalTokens"?}``; threads without a ledger (Amp's current schema)
  have only these.

As ccusage reads them (``rust/crates/ccusage/src/adapter/amp/`` at 5816e640,
``parser.rs``):

- a thread needs a non-blank string ``id``; a file that is not JSON is skipped;
- when ``usageLedger.events`` is a list, its events are the requests (the messages'
  own usage is then only where the cache counts come from: the last assistant message
  with an integer ``messageId`` equal to ``toMessageId``); else each assistant message
  with a ``usage`` is one;
- an event needs a ``timestamp`` of the form ``YYYY-MM-DDTHH:MM:SS[.mmm]`` and ``Z`` or
  ``±HH:MM``, and a non-blank ``model`` (a message: its usage's, else its own); counts
  are non-negative JSON integers, anything else 0;
- a ``total`` (``totalTokens`` on a message) larger than the four counts: the rest
  goes to output when output is 0, else it is extra tokens priced as output (kept in
  ccusage's ``totalTokens``, not its ``outputTokens``); here it is output
  (:func:`usage.parts_and_total`); a request whose counts are all 0 is skipped;
- ``credits`` are kept in the event's ``attrs``; the cost is computed from the tokens.

The key is (thread id, ledger event id) or (thread id, message id); its hash is the
event id, so importing a thread again after Amp rewrote it adds only its new requests.
A request with no id of its own is keyed by its file and position.

Plain dicts, no imports beyond the adapters' own.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from telemetryd.adapters import ids
from telemetryd.adapters import usage as usage_mod

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SOURCE = "amp"
ID_PREFIX = "amp:"
I64 = 2**63


def _u64(value: Any) -> int:
    """A count as serde's ``as_u64`` takes it: a non-negative JSON integer, else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64:
        return value
    return 0


def _i64(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -I64 <= value < I64:
        return value
    return None


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


# A time of the form ccusage accepts: seconds or milliseconds, then ``Z`` or an offset
# (ASCII digits only: ``[0-9]``, not ``\d``, which takes any script's digits)
_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{3})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)


def timestamp(value: Any) -> str | None:
    """An RFC 3339 time as ccusage accepts it (seconds or milliseconds, ``Z`` or an
    offset), in UTC with milliseconds; None otherwise."""
    text = _text(value)
    if text is None or _TIME.fullmatch(text) is None:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _tokens(input: int, output: int, read: int, write: int, total: int) -> dict[str, Any] | None:
    if not (input or output or read or write or total):
        return None
    tokens = usage_mod.parts_and_total(
        input=input, output=output, cache_read=read, cache_write=write, total=total
    )
    return tokens if tokens["source"] == "actual" else None


def _credits(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def records(thread: Any) -> list[dict[str, Any]]:
    """The records of one decoded thread file.

    A record: ``key`` ((thread id, ``ledger`` or ``message``, its id) or None),
    ``index`` (its position, for a key when it has no id), ``thread_id``, ``model``,
    ``ts`` (None when it is not of a form :func:`timestamp` reads: ccusage leaves such
    a request out, and so does the import, counting it), ``tokens``, ``credits``,
    ``operation``."""
    thread_id = _text(_get(thread, "id"))
    if thread_id is None:
        return []
    messages = _get(thread, "messages")
    messages = messages if isinstance(messages, list) else []
    events = _get(_get(thread, "usageLedger"), "events")
    if isinstance(events, list):
        return _ledger(thread_id, events, messages)
    return _messages(thread_id, messages)


def _ledger(thread_id: str, events: list[Any], messages: list[Any]) -> list[dict[str, Any]]:
    caches: dict[int, tuple[int, int]] = {}
    for message in messages:
        if _get(message, "role") != "assistant":
            continue
        number = _i64(_get(message, "messageId"))
        if number is None:
            continue
        use = _get(message, "usage")
        caches[number] = (
            _u64(_get(use, "cacheCreationInputTokens")),
            _u64(_get(use, "cacheReadInputTokens")),
        )
    found = []
    for index, event in enumerate(events):
        model = _text(_get(event, "model"))
        if model is None or not isinstance(event, dict) or "tokens" not in event:
            continue
        counts = event["tokens"]
        to = _i64(_get(event, "toMessageId"))
        write, read = caches.get(to, (0, 0)) if to is not None else (0, 0)
        tokens = _tokens(
            _u64(_get(counts, "input")),
            _u64(_get(counts, "output")),
            read,
            write,
            _u64(_get(counts, "total")),
        )
        if tokens is None:
            continue
        when = timestamp(_get(event, "timestamp"))
        event_id = _text(event.get("id"))
        found.append(
            {
                "key": (thread_id, "ledger", event_id) if event_id else None,
                "index": index,
                "thread_id": thread_id,
                "model": model,
                "ts": when,
                "tokens": tokens,
                "credits": _credits(event.get("credits")),
                "operation": _text(event.get("operationType")),
            }
        )
    return found


def _messages(thread_id: str, messages: list[Any]) -> list[dict[str, Any]]:
    found = []
    for index, message in enumerate(messages):
        if _get(message, "role") != "assistant" or "usage" not in message:
            continue
        use = message["usage"]
        model = _text(_get(use, "model")) or _text(_get(message, "model"))
        if model is None:
            continue
        tokens = _tokens(
            _u64(_get(use, "inputTokens")),
            _u64(_get(use, "outputTokens")),
            _u64(_get(use, "cacheReadInputTokens")),
            _u64(_get(use, "cacheCreationInputTokens")),
            _u64(_get(use, "totalTokens")),
        )
        if tokens is None:
            continue
        # ccusage takes the usage's time when it is a non-blank string, else the message's
        when = timestamp(_text(_get(use, "timestamp")) or _get(message, "timestamp"))
        number = message.get("messageId")
        if _i64(number) is not None:
            number = str(number)
        message_id = number if isinstance(number, str) and number else None
        found.append(
            {
                "key": (thread_id, "message", message_id) if message_id else None,
                "index": index,
                "thread_id": thread_id,
                "model": model,
                "ts": when,
                "tokens": tokens,
                "credits": _credits(_get(use, "credits")),
                "operation": None,
            }
        )
    return found


def event_id(key: tuple[str, str, str]) -> str:
    """``amp:`` and a hash of the thread id, the kind (ledger event or message) and its id."""
    return ids.hashed_id(ID_PREFIX, *key)


def api_request_event(record: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The ``api_request`` event of one ledger event or assistant message."""
    event: dict[str, Any] = {"type": "api_request", "id": event_id, "ts": record["ts"]}
    event["source"] = SOURCE
    event["session_id"] = record["thread_id"]
    event["agent"] = {"model": record["model"]}
    event["tokens"] = record["tokens"]
    attrs: dict[str, Any] = {"imported": True}
    if record["credits"] is not None:
        attrs["credits"] = record["credits"]
    if record["operation"]:
        attrs["operation"] = record["operation"]
    event["attrs"] = attrs
    return event
