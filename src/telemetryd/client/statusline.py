"""`telemetryctl statusline`: Claude Code's status line, from the daemon's running totals.

Claude Code runs the status line command after each assistant message, with a JSON
object on stdin (model, session, cost, context window, and for subscribers the plan's
``rate_limits``), and shows the first line it prints. So this is built like `hook`:
dispatched before click, standard library C pieces only, one short deadline on the
daemon, and it never fails: whatever goes wrong, it prints what stdin holds and exits 0.

The figures that need history (today's cost, the active 5-hour window's) come from
one ``totals`` request on the control socket, which the daemon answers from memory
(daemon/totals.py): no DuckDB, no transcript scan, so the time does not grow with
history. "Today" is the local day (the request asks for the usage since local
midnight). This session's cost is Claude Code's own figure from stdin, or the
daemon's total of the session's requests when stdin has none.

Recorded events: each change of a ``rate_limits`` window (its used percentage or
reset time) and of the session's reported cost becomes a ``metric`` event
(docs/events.md, "Status line metrics"). A small state file per session (and one for
the rate limits, which are the account's) under ``<runtime dir>/hooks/`` remembers
what was last recorded, so an unchanged value costs no second connection; the event
ids are derived from the values, so two sessions seeing the same rate-limit change,
or a lost state file, make a duplicate the daemon (and the store) drop.
"""

from __future__ import annotations

import os
import sys
import time

from telemetryd import fastjson
from telemetryd.client import delivery as delivering
from telemetryd.client import protocol, send, stdin_json
from telemetryd.client.argv import UsageError, arguments, env_seconds, seconds
from telemetryd.client.output import fixed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

USAGE = """\
Usage: telemetryctl statusline [OPTIONS]

  Print Claude Code's status line: model, this session's cost, today's cost,
  the active 5-hour window's cost, time left and burn rate (once its requests
  span 5 minutes), context use, and the plan's rate-limit use (when Claude Code
  passes rate_limits). Reads the status JSON on stdin; answers from the daemon's
  running totals, and from stdin alone when the daemon is down. Always exits 0.
  Records each change of the rate limits and of the session's cost as metric
  events.

  Example (what `telemetryctl hooks install claude-code --statusline` configures):
    "statusLine": {"type": "command", "command": "telemetryctl statusline"}

Options:
  --no-record        record no events
  --socket PATH      events socket (default: from TELEMETRYD_HOME / XDG)
  --timeout SECONDS  give up on the daemon after this long (default 0.5)
                                             [env TELEMETRYD_STATUSLINE_TIMEOUT]
  -h, --help         show this message
"""

DEFAULT_TIMEOUT = 0.5
MAX_INPUT = 1024 * 1024  # Claude Code's status JSON is a few kilobytes
STDIN_WAIT = 2.0  # for the whole of it, should stdin stay open
STATE_DIR = "hooks"  # shared with `hook` (its sweep removes our stale files)
STATE_PREFIX = "statusline-"
SOURCE = "claude-code"
RATE_LIMITS = (("five_hour", "5h"), ("seven_day", "7d"))
SEP = " | "


class Options:
    def __init__(self) -> None:
        self.record = True
        self.socket: str | None = None
        self.timeout = env_seconds("TELEMETRYD_STATUSLINE_TIMEOUT", DEFAULT_TIMEOUT, "statusline")
        self.help = False


def parse(argv: list[str]) -> Options:
    opts = Options()
    for arg, option, value in arguments(argv):
        if option in ("--socket", "--timeout"):
            text = value()
            if option == "--socket":
                opts.socket = text
            else:
                opts.timeout = seconds(option, text)
        elif option == "--no-record":
            opts.record = False
        elif option in ("-h", "--help"):
            opts.help = True
        else:
            raise UsageError(f"unexpected argument: {arg}")
    return opts


# -- reading stdin ----------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value else None  # (not NaN)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _epoch(value: Any) -> float | None:
    """A reset time: Unix seconds (what Claude Code sends) or an RFC 3339 string."""
    number = _number(value)
    if number is not None:
        return number / 1000 if number > 1e11 else number  # (milliseconds)
    text = _string(value)
    if text is None:
        return None
    from datetime import datetime

    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def context_percent(payload: dict[str, Any]) -> float | None:
    """How full the context window is: Claude Code's ``used_percentage``, else the
    current request's input (uncached, cache read and written) over the window's size."""
    window = _object(payload.get("context_window"))
    used = _number(window.get("used_percentage"))
    if used is not None:
        return used
    size = _number(window.get("context_window_size"))
    usage = _object(window.get("current_usage"))
    if not size or not usage:
        return None
    tokens = sum(
        _number(usage.get(name)) or 0.0
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return 100.0 * tokens / size


def rate_limits(payload: dict[str, Any]) -> list[tuple[str, str, float, float | None]]:
    """``(window, label, used percentage, resets at)`` per window Claude Code passed."""
    limits = _object(payload.get("rate_limits"))
    out = []
    for name, label in RATE_LIMITS:
        window = _object(limits.get(name))
        used = _number(window.get("used_percentage"))
        if used is not None:
            out.append((name, label, used, _epoch(window.get("resets_at"))))
    return out


def reported_cost(payload: dict[str, Any]) -> float | None:
    return _number(_object(payload.get("cost")).get("total_cost_usd"))


# -- the daemon's totals --------------------------------------------------------------


def local_midnight(now: float) -> float:
    """Today's start in the local time zone, as Unix seconds."""
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _parse_rfc3339(text: Any) -> float | None:
    """Unix seconds of the daemon's ``YYYY-MM-DDTHH:MM:SS[.fff]Z`` times."""
    if not isinstance(text, str) or len(text) < 20 or not text.endswith("Z"):
        return None
    try:
        year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
        hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
        fraction = float("0" + text[19:-1]) if text[19:-1] else 0.0
    except ValueError:
        return None
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil;
    # calendar.timegm would cost an import of `calendar` and `locale`).
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second + fraction


def fetch_totals(session: str | None, now: float, timeout: float) -> dict[str, Any] | str:
    """The daemon's totals reply, or a short word on why there is none."""
    from telemetryd.client.control import Control
    from telemetryd.errors import DaemonBusy, DaemonUnavailable, TelemetryError

    try:
        with Control(protocol.control_socket(), timeout) as control:
            reply = control.totals(session, timeout, since=_rfc3339(local_midnight(now)))
    except DaemonBusy:  # (a DaemonUnavailable too: first)
        return "telemetryd busy"
    except DaemonUnavailable:
        return "telemetryd down"
    except TelemetryError:
        return "telemetryd error"
    return dict(reply)


# -- the line -------------------------------------------------------------------------


def money(value: float) -> str:
    return "$" + fixed(value, 2)


def _usage_cost(tally: Any) -> str | None:
    """``$1.23`` for a UsageTotals object; ``+?`` when some requests had no cost."""
    if not isinstance(tally, dict):
        return None
    cost = _number(tally.get("cost_usd")) or 0.0
    unknown = tally.get("unknown_cost")
    return money(cost) + ("+?" if isinstance(unknown, int) and unknown > 0 else "")


def _duration(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def window_parts(window: Any, now: float) -> list[str]:
    """The active window's cost and time left, and its burn rate ($/h, as ccusage: the
    window's cost over the time from its first request to its last), once that time is
    :data:`RATE_MIN_SPAN` or more."""
    if not isinstance(window, dict):
        return []
    usage = _object(window.get("usage"))
    cost = _usage_cost(usage)
    end = _parse_rfc3339(window.get("end"))
    if cost is None or end is None:
        return []
    parts = [f"5h {cost} ({_duration(end - now)} left)"]
    rate = burn_rate(usage)
    if rate is not None:
        parts.append(f"{money(rate)}/h")
    return parts


# Seconds the window's requests must span before the line shows a burn rate: two
# requests a second apart made it $17,406/h at the start of every window.
RATE_MIN_SPAN = 300.0


def burn_rate(usage: dict[str, Any]) -> float | None:
    first = _parse_rfc3339(usage.get("first"))
    last = _parse_rfc3339(usage.get("last"))
    cost = _number(usage.get("cost_usd"))
    if first is None or last is None or cost is None or last - first < RATE_MIN_SPAN:
        return None
    return cost / (last - first) * 3600


def line(payload: dict[str, Any] | None, totals: dict[str, Any] | str | None, now: float) -> str:
    """The status line for ``payload`` (None: stdin was unreadable) and the daemon's
    ``totals`` (a reply, a word on why there is none, or None: not asked)."""
    parts: list[str] = []
    data = payload or {}
    model = _object(data.get("model"))
    name = _string(model.get("display_name")) or _string(model.get("id"))
    if name:
        parts.append(name)
    reply = totals if isinstance(totals, dict) else {}
    session = reported_cost(data)
    if session is not None:
        parts.append(f"session {money(session)}")
    elif reply.get("session"):
        parts.append(f"session {_usage_cost(reply['session'])}")
    today = _usage_cost(reply.get("since"))
    if today is not None:
        parts.append(f"today {today}")
    parts.extend(window_parts(reply.get("window"), now))
    context = context_percent(data)
    if context is not None:
        parts.append(f"ctx {fixed(context, 0)}%")
    limits = rate_limits(data)
    if limits:
        parts.append(
            "limit " + " ".join(f"{label} {fixed(used, 0)}%" for _, label, used, _ in limits)
        )
    if payload is None:
        parts.insert(0, "statusline: stdin is not Claude Code's status JSON")
    if isinstance(totals, str):
        parts.append(totals)
    return SEP.join(parts) or "telemetryd"


# -- recording changes ----------------------------------------------------------------


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:64]


def _changed(path: str, key: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(4096) != key
    except OSError:
        return True


def _remember(path: str, key: str) -> None:
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, key.encode())
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError:
        pass  # recorded again next time: the same id, a duplicate the daemon drops


def changes(
    payload: dict[str, Any], state_dir: str, now_text: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(state file, key, event)`` for each value that changed since it was last recorded."""
    session = _string(payload.get("session_id"))
    out = []
    for name, _, used, resets in rate_limits(payload):
        resets_text = _rfc3339(resets) if resets is not None else None
        key = f"{used!r}@{resets_text}"
        event: dict[str, Any] = {
            "type": "metric",
            "id": f"statusline-rate-limit-{name}-{resets_text or 'unknown'}-{used!r}",
            "ts": now_text,
            "source": SOURCE,
            "name": f"claude_code.rate_limits.{name}",
            "value": used,
            "kind": "gauge",
            "unit": "%",
        }
        if session is not None:
            event["session_id"] = session
        if resets_text is not None:
            event["attrs"] = {"resets_at": resets_text}
        out.append((os.path.join(state_dir, f"{STATE_PREFIX}rate-limit-{name}"), key, event))
    cost = reported_cost(payload)
    if cost is not None and session is not None:
        event = {
            "type": "metric",
            "id": f"statusline-session-cost-{_safe(session)}-{cost!r}",
            "ts": now_text,
            "source": SOURCE,
            "session_id": session,
            "name": "claude_code.session.cost_usd",
            "value": cost,
            "kind": "gauge",
            "unit": "USD",
        }
        model = _string(_object(payload.get("model")).get("id"))
        if model is not None:
            event["agent"] = {"model": model}
        figures = _object(payload.get("cost"))
        attrs = {
            key: figures[key]
            for key in (
                "total_duration_ms",
                "total_api_duration_ms",
                "total_lines_added",
                "total_lines_removed",
            )
            if _number(figures.get(key)) is not None
        }
        if attrs:
            event["attrs"] = attrs
        path = os.path.join(state_dir, f"{STATE_PREFIX}session-{_safe(session)}")
        out.append((path, repr(cost), event))
    return [(path, key, event) for path, key, event in out if _changed(path, key)]


def record(
    found: list[tuple[str, str, dict[str, Any]]], socket_path: str, timeout: float, up: bool
) -> None:
    """Send the changed values' events (spool them when the daemon is not ``up`` or
    does not confirm them), then remember them."""
    lines = [fastjson.dumps(event) for _, _, event in found]
    keep = lines
    if up:
        delivery = delivering.deliver(socket_path, ("\n".join(lines) + "\n").encode(), timeout)
        for reply in delivery.rejected:
            sys.stderr.write(f"telemetryctl statusline: rejected: {reply.error}: {reply.message}\n")
        keep = [] if delivery.summary is not None else send.unconfirmed(lines, delivery)
    if keep:
        try:
            send.spool(keep)
        except OSError as exc:
            sys.stderr.write(f"telemetryctl statusline: cannot spool: {exc}\n")
            return
    for path, key, _ in found:
        _remember(path, key)


# -- the command ----------------------------------------------------------------------


def read_payload(stdin: Any, wait: float) -> dict[str, Any] | None:
    """Claude Code's status JSON, as soon as it is whole (stdin may stay open: at most
    ``wait`` seconds); None when none came, or it is not a JSON object."""
    try:
        payload = stdin_json.read(stdin, MAX_INPUT, wait)
    except (OverflowError, TimeoutError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def run(argv: list[str], stdin: Any = None) -> int:
    opts = parse(argv)
    if opts.help:
        sys.stdout.write(USAGE)
        return 0
    now = time.time()
    deadline = time.monotonic() + opts.timeout
    payload = read_payload(stdin or sys.stdin.buffer, STDIN_WAIT)
    session = _string((payload or {}).get("session_id"))
    totals = fetch_totals(session, now, opts.timeout)
    sys.stdout.write(line(payload, totals, now) + "\n")
    sys.stdout.flush()
    if opts.record and payload is not None:
        if opts.socket is None:
            from telemetryd.paths import events_socket_fast

            opts.socket = events_socket_fast()
        state_dir = os.path.join(os.path.dirname(opts.socket), STATE_DIR)
        found = changes(payload, state_dir, send._now_rfc3339())
        if found:
            remaining = max(0.05, deadline - time.monotonic())
            record(found, opts.socket, remaining, up=isinstance(totals, dict))
    return 0


def main(argv: list[str]) -> int:
    """Exit status 0 whatever happens: Claude Code shows what we print, nothing else."""
    try:
        return run(argv)
    except UsageError as exc:
        sys.stdout.write(f"telemetryctl statusline: {exc}\n")
    except BaseException as exc:  # a status line never fails, not even on a bug
        try:  # noqa: SIM105 - contextlib is one import too many on this path
            sys.stdout.write(f"telemetryctl statusline: {type(exc).__name__}: {exc}\n")
        except BaseException:  # stdout closed
            pass
    return 0
