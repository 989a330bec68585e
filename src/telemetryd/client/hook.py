"""`telemetryctl hook claude-code`: one Claude Code hook payload on stdin -> events.

Claude Code runs this on every hook event it is configured for (`telemetryctl
hooks install claude-code` writes the configuration), PreToolUse and PostToolUse
included, so it is built like `send`: dispatched before click, standard library
C pieces only (no msgspec, click or ``re``), the protocol client with a deadline,
and the spool when the daemon is down. It always exits 0 and writes nothing on
stdout, which Claude Code reads, except the SessionStart usage context when
asked for (``--context``).

Tool durations: PostToolUse and PostToolUseFailure carry ``duration_ms`` since
Claude Code 2.1.119. For older versions the PreToolUse hook leaves the time in a
small file named after the tool use id under ``<runtime dir>/hooks/`` (next to the
events socket, on tmpfs where there is one), and the PostToolUse hook turns it
into ``duration_ms`` (which then includes any permission prompt) and removes it.
Files left behind by tools that never finished, and the status line's state files
of idle sessions, are swept at session start and end.

The mapping itself is in :mod:`telemetryd.adapters.claude_code`.
"""

from __future__ import annotations

import os
import sys
import time

from telemetryd import fastjson
from telemetryd.adapters import claude_code
from telemetryd.client import protocol, send, stdin_json
from telemetryd.client.argv import UsageError, arguments, env_seconds, seconds

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

USAGE = """\
Usage: telemetryctl hook AGENT [OPTIONS]

  Read one hook payload (JSON) on stdin and send the matching events to
  telemetryd, or spool them when it is down. Meant to be run by the agent:
  it always exits 0 and prints nothing on stdout (except --context output).
  The payload is taken once it is one whole JSON object (stdin may stay
  open); one that is not whole within 5 seconds is skipped.
  AGENT is claude-code, or codex (Codex sends Claude-compatible payloads).

  Example (what `telemetryctl hooks install claude-code` configures):
    telemetryctl hook claude-code

Options:
  --context        at SessionStart, print a short usage summary (cost and tokens
                   by model over 7 days, failing tools, sessions) for the agent's
                   context                          [env TELEMETRYD_HOOK_CONTEXT=1]
  --prompt-text    record the prompt text of UserPromptSubmit (default: length only)
                                                    [env TELEMETRYD_HOOK_PROMPT_TEXT=1]
  --socket PATH    events socket (default: from TELEMETRYD_HOME / XDG)
  --timeout SECONDS  give up on the daemon after this long (default 1)
  -h, --help       show this message
"""

AGENTS = {"claude-code": claude_code.SOURCE, "codex": "codex"}
STATE_DIR = "hooks"
STALE_SECONDS = 24 * 3600
# Files under STATE_DIR that sweep() removes once stale: tool timings, and what
# `statusline` last recorded per session (client/statusline.py).
STALE_PREFIXES = ("tool-", "statusline-")
CONTEXT_BUDGET = 1.5  # seconds for the whole SessionStart summary
CONTEXT_MAX = 9000  # characters; Claude Code caps additionalContext at 10,000
# Bytes of hook payload read at most. Claude Code's payloads are kilobytes (tool output
# in them is truncated); past this the payload is skipped, never held in memory.
MAX_PAYLOAD = 64 * 1024 * 1024
# Seconds a payload may take to arrive whole (the hooks installed time out at 10).
STDIN_WAIT = 5.0


class Options:
    def __init__(self) -> None:
        self.agent: str | None = None
        self.context = os.environ.get("TELEMETRYD_HOOK_CONTEXT", "") in ("1", "true", "yes")
        self.prompt_text = os.environ.get("TELEMETRYD_HOOK_PROMPT_TEXT", "") in ("1", "true", "yes")
        self.socket: str | None = None
        self.timeout = env_seconds("TELEMETRYD_SEND_TIMEOUT", send.DEFAULT_TIMEOUT, "hook")
        self.help = False


def parse(argv: list[str]) -> Options:
    opts = Options()
    for arg, option, value in arguments(argv):
        if option in ("--socket", "--timeout"):
            text = value()
            if option == "--socket":
                opts.socket = text
            else:
                try:
                    opts.timeout = seconds(option, text)
                except UsageError as exc:  # (the payload is still worth sending)
                    sys.stderr.write(f"telemetryctl hook: {exc}; using {opts.timeout:g}\n")
        elif option == "--context":
            opts.context = True
        elif option == "--prompt-text":
            opts.prompt_text = True
        elif option in ("-h", "--help"):
            opts.help = True
        elif opts.agent is None and not arg.startswith("-"):
            if arg not in AGENTS:
                raise UsageError(f"unknown agent {arg!r}; one of: {', '.join(AGENTS)}")
            opts.agent = arg
        else:
            raise UsageError(f"unexpected argument: {arg}")
    if opts.agent is None and not opts.help:
        raise UsageError(f"give the agent: one of {', '.join(AGENTS)}")
    return opts


# -- tool timing state ----------------------------------------------------------


def _state_file(state_dir: str, payload: dict[str, Any]) -> str | None:
    use_id = payload.get("tool_use_id")
    if not isinstance(use_id, str) or not use_id:
        return None
    session = payload.get("session_id")
    raw = f"{session}-{use_id}" if isinstance(session, str) else use_id
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)[:200]
    return os.path.join(state_dir, f"tool-{safe}")


def _remember_start(state_dir: str, payload: dict[str, Any]) -> None:
    path = _state_file(state_dir, payload)
    if path is None:
        return
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, str(time.time_ns()).encode())
        finally:
            os.close(fd)
    except OSError:
        pass  # no duration for this one; never a failure of the hook


def _elapsed_since_start(state_dir: str, payload: dict[str, Any]) -> int | None:
    """Milliseconds since the PreToolUse of this tool use (None when unknown); forgets it."""
    path = _state_file(state_dir, payload)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            started = int(f.read(32) or b"0")
        os.unlink(path)
    except (OSError, ValueError):
        return None
    elapsed = (time.time_ns() - started) // 1_000_000
    return elapsed if elapsed >= 0 else None


def _forget_start(state_dir: str, payload: dict[str, Any]) -> None:
    path = _state_file(state_dir, payload)
    if path is not None:
        try:  # noqa: SIM105 - contextlib is one import too many on this path
            os.unlink(path)
        except OSError:
            pass


def sweep(state_dir: str, max_age: float = STALE_SECONDS) -> int:
    """Remove timing files older than ``max_age`` seconds (tools that never finished), and
    the status line's state files of sessions idle that long."""
    removed = 0
    cutoff = time.time() - max_age
    try:
        entries = list(os.scandir(state_dir))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.name.startswith(STALE_PREFIXES) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    return removed


# -- SessionStart context -------------------------------------------------------

CONTEXT_SQL = """\
SELECT * FROM (
    SELECT 'model' AS kind, model AS name, request_count AS n,
        coalesce(total_input, 0) + coalesce(total_output, 0) AS tokens, total_cost_usd AS cost
    FROM cost_by_model(days := 7)
    ORDER BY total_cost_usd DESC NULLS LAST, request_count DESC LIMIT 8)
UNION ALL
SELECT * FROM (
    SELECT 'tool', tool_name, count(*) FILTER (WHERE NOT success), count(*), NULL
    FROM tool_calls
    WHERE started >= utc_now() - INTERVAL 7 DAY AND success IS NOT NULL
    GROUP BY tool_name
    HAVING count(*) FILTER (WHERE NOT success) > 0
    ORDER BY 3 DESC, 2 LIMIT 5)
UNION ALL
SELECT 'sessions', NULL, count(*), NULL, NULL
FROM sessions WHERE started >= utc_now() - INTERVAL 7 DAY
UNION ALL
SELECT * FROM (
    SELECT 'alert', arg_max(message, timestamp), count(*), NULL, NULL
    FROM alerts
    WHERE source = 'telemetryd' AND timestamp >= utc_now() - INTERVAL 1 DAY
    GROUP BY rule
    ORDER BY max(timestamp) DESC LIMIT 5)
UNION ALL
SELECT 'budget', period, NULL, spent_usd, limit_usd FROM budget_use
"""


def _query(sql: str, budget: float) -> list[list[Any]] | None:
    """Rows of one query over the control socket within ``budget`` seconds, else None."""
    from telemetryd.client.control import Control
    from telemetryd.errors import TelemetryError

    deadline = time.monotonic() + budget
    rows: list[list[Any]] = []
    try:
        with Control(protocol.control_socket(), budget) as control:
            answer = control.query(sql, timeout=max(0.1, budget - 0.2), deadline=deadline)
            for reply in answer:
                if isinstance(reply, protocol.QueryRows):
                    rows.extend(reply.rows)
    except TelemetryError:
        return None
    return rows


def _tokens(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "?"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def context_text(rows: list[list[Any]]) -> str:
    """The usage summary for the agent's context, from :data:`CONTEXT_SQL` rows."""
    models = [r for r in rows if r and r[0] == "model"]
    tools = [r for r in rows if r and r[0] == "tool"]
    sessions = next((r[2] for r in rows if r and r[0] == "sessions"), 0)
    out = [f"telemetryd usage, last 7 days: {sessions} sessions."]
    if models:
        out.append("Cost and tokens (input + output) by model:")
        for _, name, requests, tokens, cost in (r[:5] for r in models):
            dollars = f"${cost:.2f}" if isinstance(cost, (int, float)) else "cost unknown"
            out.append(f"- {name}: {dollars}, {_tokens(tokens)} tokens, {requests} requests")
    if tools:
        out.append("Most failing tools:")
        for _, name, failed, total, _ in (r[:5] for r in tools):
            out.append(f"- {name}: {failed} of {int(total)} calls failed")
    budget = [r for r in rows if r and r[0] == "budget"]
    if budget:
        out.append("Budget use:")
        for _, period, _, spent, limit in (r[:5] for r in budget):
            name = "today" if period == "day" else "this month"
            out.append(f"- {name}: ${spent:.2f} of ${limit:.2f} ({spent / limit:.0%})")
    alerts = [r for r in rows if r and r[0] == "alert"]
    if alerts:
        out.append("Alerts of the last 24 hours (`telemetryctl alerts`):")
        for _, message, count, _, _ in (r[:5] for r in alerts):
            more = f" (and {count - 1} more like it)" if count > 1 else ""
            out.append(f"- {message}{more}")
    text = "\n".join(out)
    return text if len(text) <= CONTEXT_MAX else text[: CONTEXT_MAX - 1] + "…"


def print_context(budget: float = CONTEXT_BUDGET) -> None:
    """Print the SessionStart hook output with the summary; nothing when the daemon is down."""
    rows = _query(CONTEXT_SQL, budget)
    if rows is None:
        return
    output = {
        "hookSpecificOutput": {
            "hookEventName": "SessionStart",
            "additionalContext": context_text(rows),
        }
    }
    sys.stdout.write(fastjson.dumps(output) + "\n")
    sys.stdout.flush()


# -- the hook -------------------------------------------------------------------


def events_for(
    payload: dict[str, Any], opts: Options, state_dir: str | None
) -> list[dict[str, Any]]:
    """The events for one payload, with the timing state read or written as it needs."""
    name = payload.get("hook_event_name")
    duration = None
    subagent = None
    if state_dir is not None:
        if name == "PreToolUse":
            _remember_start(state_dir, payload)
        elif name in ("PostToolUse", "PostToolUseFailure"):
            if payload.get("duration_ms") is None:
                duration = _elapsed_since_start(state_dir, payload)
            else:
                _forget_start(state_dir, payload)
        elif name in ("SessionStart", "SessionEnd"):
            sweep(state_dir)
    if name == "SubagentStop":
        subagent = claude_code.subagent_usage(payload, AGENTS[opts.agent or "claude-code"])
    events = claude_code.hook_events(
        payload,
        duration_ms=duration,
        subagent=subagent,
        prompt_text=opts.prompt_text,
        source=AGENTS[opts.agent or "claude-code"],
    )
    for event in events:
        if not event.get("id"):
            event["id"] = send.uuid7()
        event.setdefault("ts", send._now_rfc3339())
    return events


def deliver(lines: list[str], socket_path: str | None, timeout: float) -> None:
    """Send ``lines``; spool what the daemon did not confirm (all of them when there is
    no ``socket_path``). Problems go to stderr."""
    delivery = send.deliver_to(socket_path, ("\n".join(lines) + "\n").encode(), timeout)
    for reply in delivery.rejected:
        sys.stderr.write(f"telemetryctl hook: rejected: {reply.error}: {reply.message}\n")
    if delivery.summary is None:
        keep = send.unconfirmed(lines, delivery)
        if keep:
            try:
                send.spool(keep)
            except OSError as exc:
                sys.stderr.write(
                    f"telemetryctl hook: not delivered ({delivery.failure}) and cannot spool: "
                    f"{exc}; {len(keep)} event(s) lost\n"
                )


def run(argv: list[str], stdin: Any = None) -> int:
    opts = parse(argv)
    if opts.help:
        sys.stdout.write(USAGE)
        return 0
    try:
        payload = stdin_json.read(stdin or sys.stdin.buffer, MAX_PAYLOAD, STDIN_WAIT)
    except OverflowError:
        sys.stderr.write(f"telemetryctl hook: the payload is over {MAX_PAYLOAD} bytes; skipped\n")
        return 0
    except TimeoutError:
        sys.stderr.write(
            f"telemetryctl hook: no whole payload on stdin within {STDIN_WAIT:g} s "
            "(it stayed open); skipped\n"
        )
        return 0
    except ValueError as exc:
        sys.stderr.write(f"telemetryctl hook: the payload is not JSON: {exc}\n")
        return 0
    if not isinstance(payload, dict):
        sys.stderr.write("telemetryctl hook: the payload is not a JSON object\n")
        return 0
    if opts.socket is None:
        from telemetryd.errors import PathError
        from telemetryd.paths import events_socket_fast

        try:
            opts.socket = events_socket_fast()
        except (PathError, OSError) as exc:  # (no runtime directory: spooled below)
            sys.stderr.write(f"telemetryctl hook: {exc}\n")
    state_dir = (
        None if opts.socket is None else os.path.join(os.path.dirname(opts.socket), STATE_DIR)
    )
    events = events_for(payload, opts, state_dir)
    deliver([fastjson.dumps(event) for event in events], opts.socket, opts.timeout)
    if opts.context and payload.get("hook_event_name") == "SessionStart":
        print_context()
    return 0


def main(argv: list[str]) -> int:
    """Exit status 0 whatever happens: a failing hook must not disturb the agent."""
    try:
        return run(argv)
    except UsageError as exc:
        sys.stderr.write(f"telemetryctl hook: {exc}\n")
    except BaseException as exc:  # a hook never breaks the agent, not even on a bug
        try:  # noqa: SIM105 - as above
            sys.stderr.write(f"telemetryctl hook: {type(exc).__name__}: {exc}\n")
        except BaseException:  # stderr closed
            pass
    return 0
