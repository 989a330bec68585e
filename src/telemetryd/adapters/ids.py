"""Event ids derived from the source's own identifiers: one real thing, one event.

Every adapter that can see the same thing through another path (a hook, an
OTLP export, a transcript import) derives its id with the functions here, so
the daemon's and the store's deduplication by ``id`` keep one row whatever
path brought it first:

- an API request: :func:`request_event_id` from the provider's request id
  (Anthropic's ``request-id`` header: ``request_id`` in Claude Code's OTLP
  events and spans, ``requestId`` in its transcripts; a response id
  elsewhere);
- a tool call or result: :func:`tool_event_id` from the session and the
  agent's tool-use id (the Claude Code hook's rule, which Codex hooks share);
- anything else seen on one path only: :func:`hashed_id` of what identifies it
  there, so that a producer's retry of the same batch gives the same ids.

Ids are at most 128 characters (the event model's limit); longer ones are
hashed. Plain Python, and ``hashlib`` only when a hash is needed:
``telemetryctl hook`` imports this on every tool call.
"""

from __future__ import annotations

from telemetryd import fastjson

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: `telemetryctl hook` imports this module
if TYPE_CHECKING:
    from typing import Any

MAX_ID = 128  # events.EventId's max_length


_blake2b: Any = None  # the hash function, imported on first use


def _digest(text: str) -> str:
    global _blake2b
    if _blake2b is None:
        try:  # the C module itself: `hashlib` loads OpenSSL first (~3 ms on the hook path)
            from _blake2 import blake2b
        except ImportError:
            from hashlib import blake2b
        _blake2b = blake2b
    return str(_blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest())


def bounded(text: str, prefix: str) -> str:
    """``text`` when it fits in an id, else ``prefix`` and a hash of it."""
    if len(text) <= MAX_ID:
        return text
    return prefix + _digest(text)


def request_event_id(provider: str, request_id: str) -> str:
    """The id of the ``api_request`` of the provider's request ``request_id``:
    ``req:<provider>:<request id>`` (``req:`` and a hash when that is too long)."""
    return bounded(f"req:{provider}:{request_id}", "req:")


def tool_event_id(kind: str, session: str, use_id: str) -> str:
    """The id of a ``tool_call`` / ``tool_result`` (``kind``) of the tool use
    ``use_id`` in ``session``: ``cc:<kind>:<session>:<use id>``. (The ``cc:`` prefix
    is historical: the Claude Code hook adapter introduced the rule.)"""
    return bounded(f"cc:{kind}:{session}:{use_id}", "cc:")


def agent_event_id(kind: str, session: str, agent_id: str) -> str:
    """The id of an ``agent_start`` / ``agent_stop`` of the sub-agent ``agent_id``."""
    return bounded(f"cc:{kind}:{session}:{agent_id}", "cc:")


def input_digest(value: Any) -> str | None:
    """The digest of a tool's input (``tool.input_digest``): a hash of its JSON with
    sorted keys, so the same input gives the same digest whichever path reported it
    (the hook's ``tool_input``, a transcript's ``tool_use`` input, an OTLP event's
    arguments). None when there is no input. The input itself is never kept.

    What nests deeper than :data:`DIGEST_DEPTH` counts as ``"…"``: below the depth at
    which each path cuts a payload too deep to decode (fastjson.MAX_DEPTH, counted from
    the payload's top), so a deep input has one digest whichever path it came by."""
    if value is None:
        return None
    try:
        text = fastjson.dumps(_sorted(value, 1))
    except (TypeError, ValueError, RecursionError):  # not JSON data
        return None
    return _digest(text)


DIGEST_DEPTH = 64  # (a tool input sits at most a few levels into any payload)


def _sorted(value: Any, depth: int) -> Any:
    if isinstance(value, dict | list) and depth > DIGEST_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {str(key): _sorted(value[key], depth + 1) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted(item, depth + 1) for item in value]
    return value


def alert_id(rule: str, *key: str) -> str:
    """The id of the analyzer's alert for one condition of ``rule`` (store/analyzer.py):
    ``alert:<rule>:<key ...>``. The same condition always gets the same id, so it is
    journaled once however often the analyzer finds it."""
    return bounded(":".join(("alert", rule, *key)), f"alert:{rule}:")


def hashed_id(prefix: str, *parts: str) -> str:
    """``prefix`` and a hash of ``parts`` (joined with NUL): a deterministic id for a
    record that has no id of its own."""
    return prefix + _digest("\0".join(parts))
