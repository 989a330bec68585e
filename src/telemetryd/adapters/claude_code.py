"""Claude Code: hook payloads and transcripts -> events (plain dicts).

Two inputs, one vocabulary:

- **Hook payloads** (one JSON object on the hook's stdin): :func:`hook_events`
  maps each ``hook_event_name`` to the events of the model (table below).
- **Transcripts** (``~/.claude/projects/<project>/<session>.jsonl``, one JSON
  object per line): every assistant line carries the ``usage`` of the API
  response it belongs to. Claude Code writes one line per content block and
  repeats the usage on each, and may write a response more than once while it
  streams (``output_tokens`` 25, then 173). :class:`Dedup` keeps one entry per
  (``message.id``, ``requestId``): the one with the larger token total, then a
  non-sidechain one, then the later one. :func:`transcript_usage` sums a whole
  (sub-agent) transcript that way. Import also builds a transcript's tool, prompt
  and sub-agent events (:func:`tool_call_event` and the functions after it) with
  the hooks' ids.

=====================================  =================================================
hook event                             event
=====================================  =================================================
SessionStart / SessionEnd              session_start / session_end (cwd, reason)
UserPromptSubmit                       prompt (length; the text only when asked)
PreToolUse                             tool_call (tool name, use id)
PostToolUse / PostToolUseFailure       tool_result (success, error, duration_ms)
SubagentStart / SubagentStop           agent_start / agent_stop (agent type and id;
                                       on stop tokens, model and duration from the
                                       sub-agent's transcript)
Stop                                   custom ``stop``
StopFailure                            error (message, category = the error type)
PreCompact / PostCompact               custom ``pre_compact`` / ``post_compact``
Notification                           alert (severity info, kind = notification type)
anything else                          custom named after the hook event
=====================================  =================================================

Events carry ``source: claude-code``, the session id, ``agent`` (model when the
payload names one; type and id inside a sub-agent) and ``attrs`` with cwd,
prompt_id and permission_mode. Tool and sub-agent events get ids derived from
their use / agent id, so a hook installed twice (user and project settings)
records each once. Prompts, tool inputs and outputs are never recorded, except
the prompt text with ``prompt_text=True``.

Plain Python and no imports at module level: the hook runs on every tool call.
"""

from __future__ import annotations

from telemetryd.adapters import ids
from telemetryd.adapters import usage as usage_mod

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any

SOURCE = "claude-code"
PROVIDER = "anthropic"
MAX_TEXT = 2000  # characters kept of an error message or notification
MAX_PROMPT = 8000  # characters of prompt text, when it is recorded at all
SYNTHETIC_MODEL = "<synthetic>"  # Claude Code's own placeholder messages: no API call


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _model(payload: dict[str, Any]) -> str | None:
    model = payload.get("model")
    if isinstance(model, dict):  # {"id": ..., "display_name": ...}
        model = model.get("id") or model.get("display_name")
    return model if isinstance(model, str) and model else None


def _snake(name: str) -> str:
    return usage_mod.snake(name)


def envelope(payload: dict[str, Any], source: str = SOURCE) -> dict[str, Any]:
    """The fields every event of this payload shares."""
    event: dict[str, Any] = {"source": source}
    session = payload.get("session_id")
    if isinstance(session, str) and session:
        event["session_id"] = session
    agent: dict[str, Any] = {}
    model = _model(payload)
    if model:
        agent["model"] = model
    for key in ("agent_type", "agent_id"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            agent[key[len("agent_") :]] = value
    if agent:
        event["agent"] = agent
    attrs: dict[str, Any] = {}
    for key in ("cwd", "prompt_id", "permission_mode", "turn_id"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            attrs[key] = value
    effort = payload.get("effort")
    if isinstance(effort, dict) and isinstance(effort.get("level"), str):
        attrs["effort"] = effort["level"]
    elif isinstance(effort, str):
        attrs["effort"] = effort
    if attrs:
        event["attrs"] = attrs
    return event


def _tool(payload: dict[str, Any]) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": _text(payload.get("tool_name"), 200) or "unknown"}
    use_id = payload.get("tool_use_id")
    if isinstance(use_id, str) and use_id:
        tool["use_id"] = use_id
    digest = ids.input_digest(payload.get("tool_input"))
    if digest:
        tool["input_digest"] = digest
    return tool


def _ats(payload: dict[str, Any], attrs: dict[str, Any]) -> None:
    """The agentic telemetry spec's metadata in the tool's input, as ``attrs.ats``
    (:mod:`telemetryd.adapters.ats`, imported only for an input that has ``metadata``)."""
    tool_input = payload.get("tool_input")
    if isinstance(tool_input, dict) and "metadata" in tool_input:
        from telemetryd.adapters import ats

        found = ats.from_tool_input(payload.get("tool_name"), tool_input)
        if found is not None:
            attrs["ats"] = found


def _duration(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return int(value)


def hook_events(
    payload: dict[str, Any],
    *,
    duration_ms: int | None = None,
    subagent: dict[str, Any] | None = None,
    prompt_text: bool = False,
    source: str = SOURCE,
) -> list[dict[str, Any]]:
    """The events for one hook payload (no ``id``/``ts`` unless derived from the payload).

    ``duration_ms``: for PostToolUse(Failure) without its own ``duration_ms``, the
    time since the matching PreToolUse. ``subagent``: for SubagentStop, what
    :func:`transcript_usage` found in ``agent_transcript_path``. ``source``: the
    producer; Codex sends the same payloads.
    """
    name = payload.get("hook_event_name")
    name = name if isinstance(name, str) else ""
    event = envelope(payload, source)
    attrs: dict[str, Any] = event.get("attrs") or {}
    if name in ("SessionStart", "SessionEnd"):
        event["type"] = "session_start" if name == "SessionStart" else "session_end"
        cwd = attrs.pop("cwd", None)
        if cwd:
            event["cwd"] = cwd
        reason = payload.get("source") if name == "SessionStart" else payload.get("reason")
        if isinstance(reason, str) and reason:
            event["reason"] = reason
    elif name == "UserPromptSubmit":
        event["type"] = "prompt"
        prompt = payload.get("prompt")
        if isinstance(prompt, str):
            event["length"] = len(prompt)
            if prompt_text:
                attrs["prompt"] = _text(prompt, MAX_PROMPT)
    elif name == "PreToolUse":
        event["type"] = "tool_call"
        event["tool"] = _tool(payload)
        _ats(payload, attrs)
    elif name in ("PostToolUse", "PostToolUseFailure"):
        event["type"] = "tool_result"
        tool = _tool(payload)
        _ats(payload, attrs)
        failed = name == "PostToolUseFailure"
        response = payload.get("tool_response")
        if isinstance(response, dict) and response.get("success") is False:
            failed = True
        tool["success"] = not failed
        if failed:
            error = payload.get("error")
            if error is None and isinstance(response, dict):
                error = response.get("error")
            if error is not None:
                tool["error"] = _text(error)
            if payload.get("is_interrupt") is True:
                attrs["interrupted"] = True
        event["tool"] = tool
        own = _duration(payload.get("duration_ms"))
        if own is not None:
            event["duration_ms"] = own
        elif duration_ms is not None:
            event["duration_ms"] = duration_ms
    elif name in ("SubagentStart", "SubagentStop"):
        event["type"] = "agent_start" if name == "SubagentStart" else "agent_stop"
        agent = event.setdefault("agent", {})
        if name == "SubagentStop":
            found = subagent or {}
            if found.get("model") and "model" not in agent:
                agent["model"] = found["model"]
            event["tokens"] = found.get("tokens") or dict(usage_mod.UNKNOWN)
            if found.get("duration_ms") is not None:
                event["duration_ms"] = found["duration_ms"]
            if found.get("requests"):
                attrs["requests"] = found["requests"]
        if not agent:
            del event["agent"]
    elif name == "Stop":
        event["type"] = "custom"
        event["name"] = "stop"
    elif name == "StopFailure":
        event["type"] = "error"
        message = payload.get("error_message") or payload.get("error") or "turn ended by an error"
        event["message"] = _text(message)
        category = payload.get("error_type") or payload.get("error")
        if isinstance(category, str) and category:
            event["category"] = _text(category, 100)
    elif name in ("PreCompact", "PostCompact"):
        event["type"] = "custom"
        event["name"] = _snake(name)
        trigger = payload.get("trigger")
        if isinstance(trigger, str) and trigger:
            attrs["trigger"] = trigger
    elif name == "Notification":
        event["type"] = "alert"
        event["severity"] = "info"
        kind = payload.get("notification_type")
        event["kind"] = kind if isinstance(kind, str) and kind else "notification"
        event["message"] = _text(payload.get("message")) or ""
    else:
        event["type"] = "custom"
        event["name"] = _snake(name) if name else "claude_code_hook"
    if attrs:
        event["attrs"] = attrs
    else:
        event.pop("attrs", None)
    derived = _derived_id(event)
    if derived:
        event["id"] = derived
    return [event]


def _derived_id(event: dict[str, Any]) -> str | None:
    """Ids that make a repeated hook (installed twice) harmless: one per tool use or agent
    (:mod:`telemetryd.adapters.ids`: OTLP events of the same tool use get the same id)."""
    kind = event["type"]
    session = event.get("session_id", "")
    if kind in ("tool_call", "tool_result"):
        use_id = event["tool"].get("use_id")
        if use_id:
            return ids.tool_event_id(kind, session, use_id)
    elif kind in ("agent_start", "agent_stop"):
        agent_id = (event.get("agent") or {}).get("id")
        if agent_id:
            return ids.agent_event_id(kind, session, agent_id)
    return None


# -- transcripts ---------------------------------------------------------------


def request_key(line: dict[str, Any]) -> tuple[str, str] | None:
    """(message.id, requestId) of an assistant line, when both are there."""
    message = line.get("message")
    if not isinstance(message, dict):
        return None
    message_id = message.get("id")
    request_id = line.get("requestId")
    if isinstance(message_id, str) and isinstance(request_id, str) and message_id and request_id:
        return message_id, request_id
    return None


def tokens_total(tokens: dict[str, Any]) -> int:
    get = tokens.get
    return (
        (get("input") or 0)
        + (get("output") or 0)
        + (get("cache_read") or 0)
        + (get("cache_creation") or 0)
    )


def usage_parts(raw: dict[str, Any]) -> tuple[dict[str, Any], str | None, int | None] | None:
    """What a line's ``message.usage`` says, apart from the rest of the line: its tokens
    (None: not actual counts), its ``speed`` and its 1-hour cache writes. (The lines of one
    response repeat one usage: the importer keeps these per usage text.)"""
    tokens = usage_mod.tokens_from_usage(raw)
    if tokens.get("source") != "actual":
        return None
    speed = raw.get("speed")
    long_writes = None
    split = raw.get("cache_creation")
    if isinstance(split, dict):
        found = split.get("ephemeral_1h_input_tokens")
        if isinstance(found, int) and not isinstance(found, bool) and found > 0:
            long_writes = found  # priced apart (adapters/pricing.py)
    return tokens, speed if isinstance(speed, str) and speed else None, long_writes


def usage_entry(
    line: Any, parts: tuple[dict[str, Any], str | None, int | None] | None = None
) -> dict[str, Any] | None:
    """What one transcript line says about an API request, or None when it says nothing.

    Keys: ``key`` (message id, request id) or None, ``tokens``, ``total``, ``model``,
    ``ts``, ``session_id``, ``sidechain``, ``agent_id``, ``cost_usd``, ``uuid``.
    ``parts``: :func:`usage_parts` of the line's usage, when known already.
    """
    if not isinstance(line, dict):
        return None
    message = line.get("message")
    if not isinstance(message, dict):
        return None
    model = message.get("model")
    if model == SYNTHETIC_MODEL:
        return None
    if parts is None:
        raw = message.get("usage")
        if not isinstance(raw, dict):
            return None
        parts = usage_parts(raw)
        if parts is None:
            return None
    tokens, speed, long_writes = parts
    tokens = dict(tokens)
    get = line.get
    ts = get("timestamp")
    session = get("sessionId")
    agent_id = get("agentId")
    uuid = get("uuid")
    entry: dict[str, Any] = {
        "key": request_key(line),
        "tokens": tokens,
        "total": tokens_total(tokens),
        "model": model if isinstance(model, str) and model else None,
        "ts": ts if isinstance(ts, str) else None,
        "session_id": session if isinstance(session, str) else None,
        "sidechain": get("isSidechain") is True,
        "agent_id": agent_id if isinstance(agent_id, str) else None,
        "uuid": uuid if isinstance(uuid, str) else None,
        "cost_usd": None,
    }
    cost = get("costUSD")
    if (
        isinstance(cost, (int, float))
        and not isinstance(cost, bool)
        and 0 <= cost <= usage_mod.MAX_COST
    ):
        entry["cost_usd"] = float(cost)
    if speed:
        entry["speed"] = speed
    if long_writes:
        entry["cache_creation_1h"] = long_writes
    return entry


def better(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether ``new`` should replace ``old`` (same request): the larger token total,
    then a non-sidechain entry, then the later one."""
    if new["total"] != old["total"]:
        return bool(new["total"] > old["total"])
    if new["sidechain"] != old["sidechain"]:
        return not new["sidechain"]
    return True


class Dedup:
    """One entry per request among the entries fed in order.

    Entries of one request sit close together in a transcript, so only the last
    ``window`` distinct requests are held: an older one is final and is handed
    out by :meth:`add`. Memory stays bounded whatever the file size. Entries
    without a key (older transcripts) pass straight through.
    """

    def __init__(self, window: int = 2048) -> None:
        self.window = window
        self.pending: dict[tuple[str, str], dict[str, Any]] = {}  # insertion-ordered
        self.repeats = 0  # entries that repeated a pending request
        self.last: tuple[str, str] | None = None  # the key of the last entry fed

    def add(self, entry: dict[str, Any]) -> list[dict[str, Any]]:
        """Feed one entry; return the entries that became final."""
        key = entry["key"]
        if key is None:
            return [entry]
        self.last = key
        old = self.pending.get(key)
        if old is not None:
            self.repeats += 1
            if better(entry, old):
                self.pending[key] = entry
            return []
        self.pending[key] = entry
        if len(self.pending) <= self.window:
            return []
        oldest = next(iter(self.pending))
        return [self.pending.pop(oldest)]

    def flush(self) -> list[dict[str, Any]]:
        """Every pending entry (at the end of a file)."""
        out = list(self.pending.values())
        self.pending.clear()
        return out


def transcript_usage(lines: Iterable[str]) -> dict[str, Any]:
    """Sum a transcript's API requests (deduplicated): ``tokens`` (actual, or unknown
    when there are none), ``requests``, ``model`` (the one with the most requests),
    ``duration_ms`` (first to last timestamp), ``malformed`` lines."""

    dedup = Dedup(window=1 << 30)  # one transcript: keep every request
    reader = LineReader()
    for line in reader.parse(lines):
        entry = usage_entry(line)
        if entry is not None:
            dedup.add(entry)
    sums = UsageSums()
    for entry in dedup.flush():
        sums.add(entry)
    out = sums.result()
    out["malformed"] = reader.malformed
    span = reader.span_ms()
    if span is not None:
        out["duration_ms"] = span
    return out


class UsageSums:
    """Deduplicated entries summed: :meth:`result` gives ``requests``, ``tokens``
    (actual, or unknown when there are none) and ``model`` (the one with the most
    requests). Memory stays constant whatever the number of entries."""

    KINDS = ("input", "output", "cache_read", "cache_creation")

    def __init__(self) -> None:
        self.requests = 0
        self.sums = dict.fromkeys(self.KINDS, 0)
        self.models: dict[str, int] = {}

    def add(self, entry: dict[str, Any]) -> None:
        self.requests += 1
        for key in self.KINDS:
            self.sums[key] += entry["tokens"].get(key) or 0
        if entry["model"]:
            self.models[entry["model"]] = self.models.get(entry["model"], 0) + 1

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"requests": self.requests}
        if not self.requests:
            out["tokens"] = dict(usage_mod.UNKNOWN)
            return out
        sums = self.sums
        tokens: dict[str, Any] = {"source": "actual", "input": sums["input"]}
        tokens["output"] = sums["output"]
        for key in ("cache_read", "cache_creation"):
            if sums[key]:
                tokens[key] = sums[key]
        tokens["total"] = sum(sums.values())
        out["tokens"] = tokens
        if self.models:
            out["model"] = max(self.models.items(), key=lambda item: item[1])[0]
        return out


class LineReader:
    """Transcript lines as JSON values, for the usage sums: blank lines are skipped,
    malformed ones counted, and the first and last ``timestamp`` kept for the span."""

    def __init__(self) -> None:
        self.malformed = 0
        self.first: str | None = None
        self.last: str | None = None

    def parse(self, lines: Iterable[str]) -> Iterator[Any]:
        from telemetryd import fastjson

        for text in lines:
            if not text.strip():
                continue
            try:
                line = fastjson.loads(text)
            except ValueError:
                self.malformed += 1
                continue
            if isinstance(line, dict) and isinstance(line.get("timestamp"), str):
                self.first = self.first or line["timestamp"]
                self.last = line["timestamp"]
            yield line

    def span_ms(self) -> int | None:
        """Milliseconds from the first to the last timestamp, when both parse."""
        return _span_ms(self.first, self.last)


def _clock_us(ts: str) -> int | None:
    """Microseconds since midnight of a ``YYYY-MM-DDTHH:MM:SS.mmmZ`` time's clock (the
    shape transcripts write), when its clock reads as a valid time; else None."""
    if ts[13] != ":" or ts[16] != ":" or ts[19] != ".":
        return None
    hours, minutes, seconds, millis = ts[11:13], ts[14:16], ts[17:19], ts[20:23]
    digits = hours + minutes + seconds + millis
    if not (digits.isascii() and digits.isdigit()):
        return None
    h, m, sec = int(hours), int(minutes), int(seconds)
    if h > 23 or m > 59 or sec > 59:
        return None
    return ((h * 60 + m) * 60 + sec) * 1_000_000 + int(millis) * 1000


_DAYS_OK: dict[str, bool] = {}  # "YYYY-MM-DD" -> whether it is a valid date (bounded)


def _day_ok(day: str) -> bool:
    found = _DAYS_OK.get(day)
    if found is None:
        if len(_DAYS_OK) >= 4096:
            _DAYS_OK.clear()
        digits = day[:4] + day[5:7] + day[8:10]
        found = day[4] == "-" and day[7] == "-" and digits.isascii() and digits.isdigit()
        if found:  # (the datetime's parsing below says whether the date exists)
            found = _span_ms(day + "T00:00:00+00:00", day + "T00:00:00+00:00") == 0
        _DAYS_OK[day] = found
    return found


def _span_ms(first: str | None, last: str | None) -> int | None:
    if not first or not last:
        return None
    if (
        len(first) == 24
        and len(last) == 24
        and first[23] == "Z"
        and last[23] == "Z"
        and first[10] == "T"
        and first[:11] == last[:11]
        and _day_ok(first[:10])
    ):
        # Two times of one UTC day, as transcripts write them: the same difference as
        # the datetimes below give (timedelta.total_seconds() divides microseconds)
        start_us, end_us = _clock_us(first), _clock_us(last)
        if start_us is not None and end_us is not None:
            millis = int((end_us - start_us) / 1_000_000 * 1000)
            return millis if millis >= 0 else None
    global _datetime
    if _datetime is None:
        from datetime import datetime

        _datetime = datetime
    try:
        start = _datetime.fromisoformat(first.replace("Z", "+00:00"))
        end = _datetime.fromisoformat(last.replace("Z", "+00:00"))
    except ValueError:
        return None
    millis = int((end - start).total_seconds() * 1000)
    return millis if millis >= 0 else None


_datetime: Any = None  # datetime.datetime, imported on first use (hooks start fast)

MAX_TRANSCRIPT_BYTES = 256 << 20  # a hook reads at most this much (~3 s of parsing)


def read_transcript_usage(
    path: str, max_bytes: int = MAX_TRANSCRIPT_BYTES
) -> dict[str, Any] | None:
    """:func:`transcript_usage` of the file at ``path``; None when it cannot be read, is
    not a regular file or is larger than ``max_bytes`` (a hook must stay quick)."""
    try:
        return transcript_usage(regular_file_lines(path, max_bytes))
    except OSError:
        return None


def subagent_usage(payload: dict[str, Any], source: str = SOURCE) -> dict[str, Any] | None:
    """For a SubagentStop payload: the sub-agent's transcript (Claude Code) or rollout
    (Codex) at ``agent_transcript_path`` summed, or None (no path, unreadable)."""
    path = payload.get("agent_transcript_path")
    if not isinstance(path, str) or not path:
        return None
    if source == "codex":
        from telemetryd.adapters import codex

        try:  # regular files only, of bounded size: never /dev/zero or a FIFO
            return codex.rollout_usage(regular_file_lines(path))
        except OSError:
            return None
    return read_transcript_usage(path)


def regular_file_lines(path: str, max_bytes: int = MAX_TRANSCRIPT_BYTES) -> Iterator[str]:
    """The lines of the regular file at ``path`` (UTF-8, undecodable bytes kept as
    surrogates), reading at most ``max_bytes``; OSError when it is not a regular file
    (a FIFO, a device such as /dev/zero, a directory) or holds more than that.

    Nothing but a regular file is ever opened for reading: the path is checked before
    it is opened, and the open file again (``O_NONBLOCK``, so opening a FIFO swapped in
    meanwhile does not wait for a writer). A link is followed: its target is what is
    checked. A file that grows past ``max_bytes`` while it is read stops there with
    OSError."""
    import os
    import stat

    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f"{path} is not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if info.st_size > max_bytes:
            raise OSError(f"{path} is over {max_bytes} bytes")
        remaining = max_bytes
        while line := f.readline(remaining + 1):
            remaining -= len(line)
            if remaining < 0:
                raise OSError(f"{path} grew over {max_bytes} bytes while it was read")
            yield line.decode("utf-8", "surrogateescape")


def api_request_event(entry: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The ``api_request`` event of one deduplicated transcript entry."""
    event: dict[str, Any] = {"type": "api_request", "id": event_id}
    if entry["ts"]:
        event["ts"] = entry["ts"]
    event["source"] = SOURCE
    if entry["session_id"]:
        event["session_id"] = entry["session_id"]
    agent: dict[str, Any] = {"model": entry["model"] or "unknown", "provider": PROVIDER}
    if entry["sidechain"]:
        agent["type"] = "subagent"
    if entry["agent_id"]:
        agent["id"] = entry["agent_id"]
    event["agent"] = agent
    event["tokens"] = entry["tokens"]
    if entry["cost_usd"] is not None:
        event["cost_usd"] = entry["cost_usd"]
        event["cost_source"] = "reported"
    attrs: dict[str, Any] = {"imported": True}
    if entry.get("project"):
        attrs["project"] = entry["project"]  # the transcript's directory under projects/
    if entry.get("speed"):
        attrs["speed"] = entry["speed"]
    if entry.get("cache_creation_1h"):
        attrs["cache_creation_1h"] = entry["cache_creation_1h"]
    event["attrs"] = attrs
    return event


# -- transcripts: the rest of a session ------------------------------------------
#
# Import turns a transcript's tool uses, prompts and sub-agents into the events the
# hooks send, with the hooks' ids (adapters/ids.py), so a tool use or a sub-agent
# both hooked and imported is one row. Prompts have no id a hook payload shares.

COMMAND_WRAPPERS = (
    "<command-name>",
    "<command-message>",
    "<command-args>",
    "<local-command-stdout>",
    "<local-command-stderr>",
    "<local-command-caveat>",
    "<bash-input>",
    "<bash-stdout>",
    "<bash-stderr>",
)


def is_prompt(text: str, *, meta: bool, sidechain: bool) -> bool:
    """Whether a user line whose content is the string ``text`` is a typed prompt: not
    Claude Code's own (``isMeta``), not a sub-agent's task (``isSidechain``), not a
    slash command's or shell command's wrapper."""
    return not meta and not sidechain and not text.lstrip().startswith(COMMAND_WRAPPERS)


def imported_event(
    kind: str,
    ts: str | None,
    session: str | None,
    *,
    cwd: str | None = None,
    project: str | None = None,
    agent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The envelope of an event built from a transcript (``attrs.imported``, the
    working directory as ``attrs.cwd`` as the hooks put it, and the transcript's
    directory as ``attrs.project`` as for its requests)."""
    event: dict[str, Any] = {"type": kind}
    if ts:
        event["ts"] = ts
    event["source"] = SOURCE
    if session:
        event["session_id"] = session
    if agent:
        event["agent"] = agent
    attrs: dict[str, Any] = {"imported": True}
    if cwd:
        attrs["cwd"] = cwd
    if project:
        attrs["project"] = project
    event["attrs"] = attrs
    return event


def tool_call_event(
    event: dict[str, Any], name: str | None, use_id: str, event_id: str | None = None
) -> dict[str, Any]:
    """``event`` (an :func:`imported_event` envelope) as the ``tool_call`` of a
    ``tool_use`` block, with the PreToolUse hook's id (``event_id``, when known)."""
    event["tool"] = {"name": _text(name, 200) or "unknown", "use_id": use_id}
    event["id"] = event_id or ids.tool_event_id("tool_call", event.get("session_id", ""), use_id)
    return event


def tool_result_event(
    event: dict[str, Any],
    name: str | None,
    use_id: str,
    *,
    error: str | None,
    failed: bool,
    duration_ms: int | None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """``event`` as the ``tool_result`` of a ``tool_result`` block, with the
    PostToolUse hook's id (``event_id``, when known)."""
    tool: dict[str, Any] = {"name": _text(name, 200) or "unknown", "use_id": use_id}
    tool["success"] = not failed
    if failed and error:
        tool["error"] = _text(error)
    event["tool"] = tool
    if duration_ms is not None:
        event["duration_ms"] = duration_ms
    event["id"] = event_id or ids.tool_event_id("tool_result", event.get("session_id", ""), use_id)
    return event


def prompt_event(event: dict[str, Any], length: int, line_id: str) -> dict[str, Any]:
    """``event`` as a ``prompt`` of ``length`` characters (never its text), its id
    from the transcript line (``uuid``)."""
    event["length"] = length
    event["id"] = ids.hashed_id("cc:prompt:", event.get("session_id", ""), line_id)
    return event


def duration_ms(start: str | None, end: str | None) -> int | None:
    """Milliseconds from one transcript timestamp to a later one (None when either
    does not parse or the end is earlier)."""
    return _span_ms(start, end)


class AgentSums:
    """One sub-agent's activation as its transcript shows it: the requests (after
    :class:`Dedup`), summed as :func:`transcript_usage` sums them for the
    SubagentStop hook, and its first and last timestamps."""

    def __init__(self) -> None:
        self.usage = UsageSums()
        self.first: str | None = None
        self.last: str | None = None
        self.session: str | None = None
        self.cwd: str | None = None

    def seen(self, ts: str | None, session: str | None, cwd: str | None) -> None:
        if ts:
            self.first = self.first or ts
            self.last = ts
        self.session = self.session or session
        self.cwd = self.cwd or cwd

    def events(self, agent_id: str, project: str | None) -> list[dict[str, Any]]:
        """``agent_start`` and ``agent_stop`` with the SubagentStart/Stop hooks' ids."""
        session = self.session or ""
        agent: dict[str, Any] = {"type": "subagent", "id": agent_id}
        start = imported_event(
            "agent_start", self.first, self.session, cwd=self.cwd, project=project, agent=agent
        )
        start["id"] = ids.agent_event_id("agent_start", session, agent_id)
        stop = imported_event(
            "agent_stop", self.last, self.session, cwd=self.cwd, project=project, agent=dict(agent)
        )
        stop["id"] = ids.agent_event_id("agent_stop", session, agent_id)
        found = self.usage.result()
        if found.get("model"):
            stop["agent"]["model"] = found["model"]
        stop["tokens"] = found["tokens"]
        span = _span_ms(self.first, self.last)
        if span is not None:
            stop["duration_ms"] = span
        if found["requests"]:
            stop["attrs"]["requests"] = found["requests"]
        return [start, stop]
