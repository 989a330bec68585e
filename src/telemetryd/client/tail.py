"""`telemetryctl tail`: events as the daemon journals them.

Dispatched before click is imported, like `query`, and built on the protocol
client (:mod:`telemetryd.client.control`) and :mod:`telemetryd.fastjson` only.
The daemon sends the last ``-n`` matching events of its current journal segment,
then (with ``-f``) every new matching event as it is written; lines it had to skip
because this client read too slowly are announced by a ``{"dropped": N}`` line,
reported here on stderr.
"""

from __future__ import annotations

import os
import sys

from telemetryd import fastjson
from telemetryd.client import protocol
from telemetryd.client.argv import UsageError, arguments
from telemetryd.client.control import Control
from telemetryd.errors import DaemonBusy, DaemonError, DaemonUnavailable, ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

FORMATS = ("ndjson", "table")
MAX_BACKLOG = protocol.MAX_TAIL_BACKLOG

USAGE = """\
Usage: telemetryctl tail [OPTIONS]

  Print the last events the daemon journaled and, with -f, every new one as it is
  written. Filters may be repeated; an event is printed when it matches one value
  of each filter given.

  Examples:
    telemetryctl tail -f
    telemetryctl tail -f --type tool_result --session "$SESSION_ID"
    telemetryctl tail -n 100 --source codex --format ndjson > recent.jsonl

Options:
  -f, --follow          keep printing new events until interrupted
  -n, --lines N         events to print from the current journal segment first
                        (default 10; 0 for none)
  -t, --type TYPE       only events of this type
  -s, --session ID      only events of this session
  --source SOURCE       only events from this source
  --format FORMAT       table (default on a terminal) or ndjson (the journal lines)
  --socket PATH         control socket (default: from TELEMETRYD_HOME / XDG)
  -h, --help            show this message

Exit status: 0 done (or the reader of the output went away), 1 the daemon answered
with an error (or a reply that makes no sense), 2 usage error, 3 the daemon is not
running, stopped, or too busy to take the connection, 130 interrupted.
"""


class Options:
    def __init__(self) -> None:
        self.follow = False
        self.lines = 10
        self.types: list[str] = []
        self.sessions: list[str] = []
        self.sources: list[str] = []
        self.format: str | None = None
        self.socket: str | None = None
        self.help = False

    def request(self) -> dict[str, Any]:
        message: dict[str, Any] = {"op": "tail", "backlog": self.lines, "follow": self.follow}
        for key in ("types", "sessions", "sources"):
            if getattr(self, key):
                message[key] = getattr(self, key)
        return message


def parse(argv: list[str]) -> Options:
    opts = Options()
    for arg, option, value in arguments(argv):
        if option in ("-f", "--follow"):
            opts.follow = True
        elif option in ("-n", "--lines"):
            text = value()
            if not text.isdigit() or int(text) > MAX_BACKLOG:
                raise UsageError(f"{option} expects a count from 0 to {MAX_BACKLOG}, got {text!r}")
            opts.lines = int(text)
        elif option in ("-t", "--type"):
            opts.types.append(value())
        elif option in ("-s", "--session"):
            opts.sessions.append(value())
        elif option == "--source":
            opts.sources.append(value())
        elif option == "--format":
            opts.format = value()
            if opts.format not in FORMATS:
                raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
        elif option == "--socket":
            opts.socket = value()
        elif option in ("-h", "--help"):
            opts.help = True
        else:
            raise UsageError(f"unexpected argument: {arg}")
    return opts


# -- output ---------------------------------------------------------------------------


def summary(event: dict[str, Any]) -> str:
    """What happened, in a few words: the tool, skill or model, outcome, duration, cost."""
    tool: dict[str, Any] = event.get("tool") or {}
    agent: dict[str, Any] = event.get("agent") or {}
    parts: list[str] = []
    what = (
        tool.get("name")
        or event.get("name")
        or event.get("event")
        or event.get("message")
        or event.get("reason")
        or event.get("outcome")
    )
    if what:
        parts.append(str(what))
    if event.get("type") in ("api_request", "session_start", "agent_start") and agent.get("model"):
        parts.append(str(agent["model"]))
    if agent.get("type") not in (None, "main"):
        parts.append(f"[{agent['type']}]")
    success = tool.get("success", event.get("success"))
    if success is not None:
        parts.append("ok" if success else "failed")
    tokens = event.get("tokens")
    if isinstance(tokens, dict) and tokens.get("input") is not None:
        parts.append(f"{tokens.get('input')}in/{tokens.get('output')}out")
    if event.get("cost_usd") is not None:
        parts.append(f"${event['cost_usd']:.4f}")
    if event.get("duration_ms") is not None:
        parts.append(f"{event['duration_ms']} ms")
    return " ".join(parts)


def table_line(line: bytes) -> bytes:
    """One event as an aligned line: time, type, source, session, summary."""
    try:
        event = fastjson.loads(line.decode())
    except ValueError:
        return line
    when = str(event.get("ts") or event.get("received_at") or "")
    when = when.replace("T", " ")[:23]
    session = str(event.get("session_id") or "-")
    text = (
        f"{when:<23}  {event.get('type', '?'):<14} {event.get('source') or '-':<12} "
        f"{session[:20]:<20}  {summary(event)}"
    )
    return text.rstrip().encode() + b"\n"


class Printer:
    """Event lines to stdout (as they came, or as a table); flushed after every read."""

    def __init__(self, fmt: str, out: BinaryIO) -> None:
        self.table = fmt == "table"
        self.out = out
        self.count = 0

    def header(self) -> None:
        if self.table:
            title = f"{'time (UTC)':<23}  {'type':<14} {'source':<12} {'session':<20}  what"
            self.out.write(title.encode() + b"\n")

    def events(self, lines: list[bytes]) -> None:
        self.count += len(lines)
        if self.table:
            self.out.write(b"".join([table_line(line) for line in lines]))
        else:
            self.out.write(b"".join([line + b"\n" for line in lines]))


# -- the connection ---------------------------------------------------------------------


def stream(opts: Options, printer: Printer) -> int:
    """Print the tail's events as they come; the exit status."""
    try:
        control = Control(opts.socket or protocol.control_socket())
    except DaemonBusy as busy:
        return _fail(f"{busy}; try again shortly", EXIT_UNAVAILABLE)
    except DaemonUnavailable as down:
        return _fail(f"the daemon is not running ({down})", EXIT_UNAVAILABLE)
    try:
        replies = control.tail(opts.request())
        printer.header()
        for reply in replies:
            if isinstance(reply, protocol.TailEvents):
                printer.events(reply.lines)
            elif isinstance(reply, protocol.TailDropped):
                sys.stderr.write(
                    f"telemetryctl tail: {reply.dropped} events skipped (read too slowly)\n"
                )
            else:
                printer.out.flush()
                return EXIT_OK
            printer.out.flush()
        raise AssertionError("a tail's replies end with TailDone or an error")
    except DaemonBusy as busy:
        return _fail(f"{busy}; try again shortly", EXIT_UNAVAILABLE)
    except DaemonUnavailable as gone:  # stopped, or closed the connection
        return _fail(str(gone), EXIT_UNAVAILABLE)
    except (DaemonError, ProtocolError) as exc:
        return _fail(str(exc), EXIT_FAILED)
    finally:
        control.close()


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"telemetryctl tail: {message}\n")
    return code


def main(argv: list[str]) -> int:
    try:
        opts = parse(argv)
    except UsageError as exc:
        sys.stderr.write(f"telemetryctl tail: {exc}\n")
        return EXIT_USAGE
    if opts.help:
        sys.stdout.write(USAGE)
        return EXIT_OK
    fmt = opts.format or ("table" if sys.stdout.isatty() else "ndjson")
    try:
        return stream(opts, Printer(fmt, sys.stdout.buffer))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `| head`: the reader is gone. Point stdout at /dev/null so that the flush at
        # exit does not complain a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
