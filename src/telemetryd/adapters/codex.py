"""Codex rollouts (``$CODEX_HOME/sessions/**/rollout-*.jsonl``) -> api_request records.

A rollout is one JSON object per line: ``session_meta`` (session id, cwd,
provider), ``turn_context`` (the model of the turn), ``response_item`` and
``event_msg`` lines. Token usage is in ``event_msg`` lines of type
``token_count``::

    {"type": "event_msg", "payload": {"type": "token_count", "info": {
        "total_token_usage": {...cumulative...}, "last_token_usage": {...this request...}},
        "rate_limits": {...}}}

``info`` is null on rate-limit-only updates, and Codex re-emits the last
``token_count`` unchanged (same cumulative total) after some events. So a
request is counted once per *change* of ``total_token_usage``: with its
``last_token_usage`` when present, else the difference from the previous
total. A total lower than the previous one starts over (a new context).

A forked or sub-agent rollout (its first ``session_meta`` names ``forked_from_id``
or ``source.subagent.thread_spawn.parent_thread_id``) opens with a copy of the
parent's history, ancestors' ``session_meta`` lines and ``token_count`` events
included, every line re-stamped to the fork instant. Those counts were the
parent's: the ``token_count`` lines stamped within :data:`REPLAY_WINDOW_S` of the
fork instant (the first ``session_meta``'s time) or of the previous copied one only
move the cumulative baseline, and counting starts with the first one after them
(its ``last_token_usage``, else its difference from the replayed total). Once a
later one is seen the burst is over for good. Without a readable fork time nothing
is skipped. The first ``session_meta`` names the rollout's session: the copied
ancestors' do not.

The record id is derived from the session and the cumulative total, which is
what identifies a request in its session: importing a rollout again (or a copy
of it) gives the same ids. Plain dicts, no imports: also usable from hooks.
"""

from __future__ import annotations

from telemetryd.adapters import usage as usage_mod

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

SOURCE = "codex"
REPLAY_WINDOW_S = 2.0  # a fork's copied history is stamped within this of the fork
FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
    "total_tokens",
)


def _counts(raw: Any) -> tuple[int, ...] | None:
    if not isinstance(raw, dict):
        return None
    values = []
    for field in FIELDS:
        value = raw.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = 0
        values.append(int(value))
    return tuple(values)


def session_from_name(name: str) -> str | None:
    """The session id at the end of ``rollout-<time>-<uuid>.jsonl``."""
    stem = name[:-6] if name.endswith(".jsonl") else name
    if len(stem) >= 36 and stem[-36:].count("-") == 4:
        return stem[-36:]
    return None


class Rollout:
    """Reads one rollout's lines in order; :meth:`feed` returns a record per counted request.

    A record: ``key`` (session, cumulative counts) for the event id, ``tokens``,
    ``model``, ``provider``, ``ts``, ``session_id``, ``cwd``.
    """

    def __init__(
        self, session_id: str | None = None, fallback: str = "", label: str | None = None
    ) -> None:
        self.session_id = session_id
        self.fallback = fallback  # identifies the rollout when it names no session
        self.label = label  # its events' session when it names none (the file's name)
        self.model: str | None = None
        self.provider: str | None = None
        self.cwd: str | None = None
        self.previous: tuple[int, ...] | None = None
        self.reemitted = 0  # token_count lines that repeated the previous total
        self.replayed = 0  # token_count lines of a parent's history copied into a fork
        self.meta_seen = False
        self.fork_until: float | None = None  # end of the replay burst (epoch seconds)

    def feed(self, line: Any) -> dict[str, Any] | None:
        if not isinstance(line, dict):
            return None
        kind = line.get("type")
        payload = line.get("payload")
        if not isinstance(payload, dict):
            return None
        if kind == "session_meta":
            self._meta(payload, line.get("timestamp"))
            return None
        if kind == "turn_context":
            model = payload.get("model")
            if isinstance(model, str) and model:
                self.model = model
            cwd = payload.get("cwd")
            if isinstance(cwd, str) and cwd:
                self.cwd = cwd
            return None
        if kind != "event_msg" or payload.get("type") != "token_count":
            return None
        info = payload.get("info")
        if not isinstance(info, dict):
            return None  # rate limits only
        model = info.get("model")
        if isinstance(model, str) and model:
            self.model = model
        total = _counts(info.get("total_token_usage"))
        last = info.get("last_token_usage")
        if total is not None and total == self.previous:
            self.reemitted += 1
            return None
        if self.fork_until is not None:
            when = _epoch(line.get("timestamp"))
            if when is not None and when <= self.fork_until:
                self.replayed += 1  # the parent's count, copied: only the baseline moves
                self.fork_until = max(self.fork_until, when + REPLAY_WINDOW_S)  # a long copy
                if total is not None:
                    self.previous = total
                return None
            self.fork_until = None  # the burst is over, for good
        if isinstance(last, dict) and _counts(last) is not None:
            raw = last
        elif total is not None:
            previous = self.previous
            if previous is None or any(t < p for t, p in zip(total, previous, strict=True)):
                previous = (0,) * len(FIELDS)  # first count, or a fresh context
            raw = {f: t - p for f, t, p in zip(FIELDS, total, previous, strict=True)}
        else:
            return None
        if total is not None:
            self.previous = total
        tokens = usage_mod.tokens_from_usage(raw)
        if tokens.get("source") != "actual":
            return None
        ts = line.get("timestamp")
        return {
            "key": (self.session_id or self.fallback, total, ts, _counts(raw)),
            "tokens": tokens,
            "model": self.model,
            "provider": self.provider,
            "ts": ts if isinstance(ts, str) else None,
            "session_id": self.session_id or self.label,
            "cwd": self.cwd,
        }

    def _meta(self, payload: dict[str, Any], ts: Any) -> None:
        if self.meta_seen:
            return  # a copied ancestor's (a fork's replay): the rollout's own came first
        self.meta_seen = True
        if is_fork(payload):
            self.fork_until = _epoch(ts if isinstance(ts, str) else payload.get("timestamp"))
            if self.fork_until is not None:
                self.fork_until += REPLAY_WINDOW_S
        session = payload.get("id")
        if isinstance(session, str) and session:
            self.session_id = session
        provider = payload.get("model_provider")
        if isinstance(provider, str) and provider:
            self.provider = provider
        cwd = payload.get("cwd")
        if isinstance(cwd, str) and cwd:
            self.cwd = cwd


def is_fork(meta: dict[str, Any]) -> bool:
    """Whether a ``session_meta`` payload is a forked or sub-agent rollout's, which opens
    with a copy of its parent's history."""
    forked = meta.get("forked_from_id")
    if isinstance(forked, str) and forked:
        return True
    source = meta.get("source")
    subagent = source.get("subagent") if isinstance(source, dict) else None
    spawn = subagent.get("thread_spawn") if isinstance(subagent, dict) else None
    parent = spawn.get("parent_thread_id") if isinstance(spawn, dict) else None
    return isinstance(parent, str) and bool(parent)


def _epoch(ts: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 time, or None."""
    if not isinstance(ts, str) or not ts:
        return None
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def key_text(record: dict[str, Any]) -> str:
    """The text the event id is hashed from: the session and the cumulative counts (the
    timestamp only when Codex gave no cumulative total)."""
    session, total, ts, counts = record["key"]
    if total is not None:
        return f"{session}\0total\0{','.join(map(str, total))}"
    return f"{session}\0at\0{ts}\0{','.join(map(str, counts or ()))}"


def api_request_event(record: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The ``api_request`` event of one counted request."""
    event: dict[str, Any] = {"type": "api_request", "id": event_id}
    if record["ts"]:
        event["ts"] = record["ts"]
    event["source"] = SOURCE
    if record["session_id"]:
        event["session_id"] = record["session_id"]
    agent: dict[str, Any] = {"model": record["model"] or "unknown"}
    if record["provider"]:
        agent["provider"] = record["provider"]
    event["agent"] = agent
    event["tokens"] = record["tokens"]
    attrs: dict[str, Any] = {"imported": True}
    if record["cwd"]:
        attrs["cwd"] = record["cwd"]
    event["attrs"] = attrs
    return event


def rollout_usage(lines: Iterable[str]) -> dict[str, Any]:
    """A (sub-agent's) rollout summed as :func:`claude_code.transcript_usage` sums a
    transcript: ``tokens``, ``requests``, ``model``, ``duration_ms``, ``malformed``."""
    from telemetryd.adapters import claude_code

    rollout = Rollout()
    sums = {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0, "reasoning": 0}
    requests = 0
    reader = claude_code.LineReader()
    for line in reader.parse(lines):
        record = rollout.feed(line)
        if record is not None:
            requests += 1
            for key in sums:
                sums[key] += record["tokens"].get(key) or 0
    out: dict[str, Any] = {"requests": requests, "malformed": reader.malformed}
    if requests:
        tokens: dict[str, Any] = {
            "source": "actual",
            "input": sums["input"],
            "output": sums["output"],
        }
        for key in ("cache_read", "cache_creation", "reasoning"):
            if sums[key]:
                tokens[key] = sums[key]
        tokens["total"] = (
            sums["input"] + sums["output"] + sums["cache_read"] + sums["cache_creation"]
        )
        out["tokens"] = tokens
    else:
        out["tokens"] = dict(usage_mod.UNKNOWN)
    if rollout.model:
        out["model"] = rollout.model
    span = reader.span_ms()
    if span is not None:
        out["duration_ms"] = span
    return out
