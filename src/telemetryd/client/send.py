"""`telemetryctl send`: deliver events from a hook script, fast, never hanging, never losing one.

This is the hot path: agents run it on every tool call. It imports only the
standard library's C pieces (``_socket``, ``_json``), parses its own options,
and talks to the daemon through :mod:`telemetryd.client.delivery`, within one
deadline. When the daemon is down, slow or out of disk it writes the events to the spool (every
event carries an id, so the daemon's later replay cannot count one twice) and
exits 0 with one warning on stderr; ``--strict`` makes that a failure instead. When
the spool cannot take them either (the disk is full), they are lost: one warning that
says so, and still exit 0 (a hook must not fail its agent).
Events the daemon rejects are reported and make the exit status 1.
"""

from __future__ import annotations

import os
import sys
import time

from telemetryd import fastjson
from telemetryd.client.argv import UsageError, arguments, env_seconds, seconds
from telemetryd.client.delivery import Delivery, deliver

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 75  # EX_TEMPFAIL, with --strict

DEFAULT_TIMEOUT = 1.0

USAGE = """\
Usage: telemetryctl send [OPTIONS] [-]

  Send one event built from options, or events read as JSON / NDJSON from
  stdin (-) or --file. Options and TELEMETRYD_* environment variables fill
  envelope fields the input leaves out. Prints nothing on success.

  Example (a PostToolUse hook):
    telemetryctl send --type tool_result --tool Bash --success --duration-ms 412

Event:
  --type TYPE             event type (session_start, api_request, tool_call, run, ...)
  --id ID                 idempotency key (default: a new UUIDv7)
  --ts TIME               RFC 3339 time of the event (default: when received)
  --session ID            session_id            [env TELEMETRYD_SESSION_ID]
  --source NAME           producer, e.g. claude-code  [env TELEMETRYD_SOURCE]
  --model NAME            agent.model           [env TELEMETRYD_MODEL]
  --provider NAME         agent.provider        [env TELEMETRYD_PROVIDER]
  --agent-type NAME       agent.type            [env TELEMETRYD_AGENT_TYPE]
  --agent-id ID           agent.id
  --task-id ID            task.id               [env TELEMETRYD_TASK_ID]
  --attempt-id ID         task.attempt_id       [env TELEMETRYD_ATTEMPT_ID]
  --attempt-index N       task.attempt_index    [env TELEMETRYD_ATTEMPT_INDEX]
  --trace-id ID / --span-id ID / --parent-span-id ID   [env TELEMETRYD_TRACE_ID, ...]
  --name NAME             name (skill, metric, custom)
  --tool NAME             tool.name; --tool-use-id ID sets tool.use_id
  --success / --failure   success (tool.success for tool events)
  --error TEXT            error (tool.error for tool events)
  --message TEXT          message (error, alert)
  --duration-ms N         duration_ms
  --cost-usd X            cost_usd
  --input-tokens N / --output-tokens N / --cache-read-tokens N /
  --cache-creation-tokens N / --reasoning-tokens N    actual token counts
  --estimated-tokens N --tokenizer NAME               estimated token count
  --attr KEY=VALUE        attrs.KEY (VALUE is JSON if it parses, else a string); repeatable
  --field PATH=VALUE      any field by dotted path, e.g. --field outcome=done; repeatable
  --usage-json PATH       tokens (and cost_usd, agent.model when present) from a raw SDK
                          usage object or response (OpenAI, Anthropic, Codex, Gemini,
                          Copilot, ...) read from PATH (- is stdin); the type defaults
                          to api_request

Input and delivery:
  -, --file PATH          read JSON or NDJSON events (- is stdin)
  --socket PATH           events socket (default: from TELEMETRYD_HOME / XDG)
  --timeout SECONDS       give up on the daemon after this long  [env TELEMETRYD_SEND_TIMEOUT]
  --strict                exit 75 instead of spooling when the daemon cannot take the events
  -v, --verbose           print the daemon's summary on stderr
  -h, --help              show this message

Exit status: 0 delivered or spooled (or neither, on a full disk: lost, with a
warning), 1 rejected as invalid, 2 usage error, 75 not delivered (--strict only).
"""

# option -> dotted field path, for options that take a string value
_STRING_FIELDS = {
    "--id": "id",
    "--ts": "ts",
    "--session": "session_id",
    "--source": "source",
    "--model": "agent.model",
    "--provider": "agent.provider",
    "--agent-type": "agent.type",
    "--agent-id": "agent.id",
    "--task-id": "task.id",
    "--attempt-id": "task.attempt_id",
    "--trace-id": "trace_id",
    "--span-id": "span_id",
    "--parent-span-id": "parent_span_id",
    "--name": "name",
    "--message": "message",
    "--tool-use-id": "tool.use_id",
}
_INT_FIELDS = {
    "--attempt-index": "task.attempt_index",
    "--duration-ms": "duration_ms",
    "--input-tokens": "tokens.input",
    "--output-tokens": "tokens.output",
    "--cache-read-tokens": "tokens.cache_read",
    "--cache-creation-tokens": "tokens.cache_creation",
    "--reasoning-tokens": "tokens.reasoning",
    "--estimated-tokens": "tokens.estimated_total",
}
# envelope defaults a hook script can export once
_ENV_FIELDS = {
    "TELEMETRYD_SESSION_ID": "session_id",
    "TELEMETRYD_SOURCE": "source",
    "TELEMETRYD_MODEL": "agent.model",
    "TELEMETRYD_PROVIDER": "agent.provider",
    "TELEMETRYD_AGENT_TYPE": "agent.type",
    "TELEMETRYD_TASK_ID": "task.id",
    "TELEMETRYD_ATTEMPT_ID": "task.attempt_id",
    "TELEMETRYD_ATTEMPT_INDEX": "task.attempt_index",
    "TELEMETRYD_TRACE_ID": "trace_id",
    "TELEMETRYD_PARENT_SPAN_ID": "parent_span_id",
}
_TOOL_TYPES = ("tool_call", "tool_result")
_MODEL_TYPES = ("api_request", "run")  # where a missing model would skew cost by model
_TOKEN_TYPES = ("api_request", "run")  # where `tokens` is required


class Options:
    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}  # dotted path -> value, from flags
        self.attrs: dict[str, Any] = {}
        self.type: str | None = None
        self.tool: str | None = None
        self.success: bool | None = None
        self.error: str | None = None
        self.tokenizer: str | None = None
        self.cost: float | None = None
        self.input: str | None = None  # "-" or a path
        self.socket: str | None = None
        self.timeout = env_seconds("TELEMETRYD_SEND_TIMEOUT", DEFAULT_TIMEOUT, "send")
        self.strict = False
        self.verbose = False
        self.help = False
        self.usage: str | None = None  # --usage-json: "-" or a path


def _json_or_text(text: str) -> Any:
    try:
        return fastjson.loads(text)
    except ValueError:
        return text


def _int(option: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{option} expects a whole number, got {text!r}") from None


def parse(argv: list[str]) -> Options:
    opts = Options()
    for arg, option, value in arguments(argv):
        if option in _STRING_FIELDS:
            opts.fields[_STRING_FIELDS[option]] = value()
        elif option in _INT_FIELDS:
            opts.fields[_INT_FIELDS[option]] = _int(option, value())
        elif option == "--type":
            opts.type = value()
        elif option == "--tool":
            opts.tool = value()
        elif option == "--success":
            opts.success = True
        elif option == "--failure":
            opts.success = False
        elif option == "--error":
            opts.error = value()
        elif option == "--tokenizer":
            opts.tokenizer = value()
        elif option == "--cost-usd":
            text = value()
            try:
                opts.cost = float(text)
            except ValueError:
                raise UsageError(f"--cost-usd expects a number, got {text!r}") from None
        elif option in ("--attr", "--field"):
            item = value()
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise UsageError(f"{option} expects KEY=VALUE, got {item!r}")
            target = opts.attrs if option == "--attr" else opts.fields
            target[key] = _json_or_text(raw)
        elif option == "--usage-json":
            opts.usage = value()
        elif option == "--file":
            opts.input = value()
        elif arg == "-":
            opts.input = "-"
        elif option == "--socket":
            opts.socket = value()
        elif option == "--timeout":
            opts.timeout = seconds(option, value())
        elif option == "--strict":
            opts.strict = True
        elif option in ("-v", "--verbose"):
            opts.verbose = True
        elif option in ("-h", "--help"):
            opts.help = True
        else:
            raise UsageError(f"no such option: {arg}")
    return opts


def _put(event: dict[str, Any], path: str, value: Any, *, override: bool = True) -> None:
    """Set a dotted ``path`` in ``event``; without ``override``, only where it is unset."""
    *parents, leaf = path.split(".")
    node = event
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            if child is not None and not override:
                return
            child = node[key] = {}
        node = child
    if override or node.get(leaf) is None:
        node[leaf] = value


def uuid7() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFFFFFFFFFF) << 80 | 0x7 << 76 | (rand >> 64 & 0xFFF) << 64
    value |= 0x2 << 62 | rand & 0x3FFFFFFFFFFFFFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _now_rfc3339() -> str:
    ns = time.time_ns()
    seconds, ms = divmod(ns // 1_000_000, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def build_events(opts: Options, stdin: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
    """The events to send: from the input, else from the options; defaults filled in.
    With each, where it came from, as errors name it: ``line 6`` of NDJSON input (blank
    lines are not sent, so the daemon's line numbers are not the input's), ``item 3`` of
    a JSON array, ``line 1`` for the event the options build."""
    if opts.input is not None:
        if opts.usage is not None:
            raise UsageError("--usage-json builds one event from options: not with - or --file")
        events, where = _read_input(opts.input, stdin)
        for event in events:
            if opts.type is not None:
                event.setdefault("type", opts.type)
            _fill(event, opts, override=False)
    else:
        if opts.usage is not None:
            opts.type = opts.type or "api_request"
        if opts.type is None:
            raise UsageError("give --type, or events on stdin (-) or with --file")
        event = {"type": opts.type}
        if opts.usage is not None:
            _apply_usage(event, opts, stdin)
        _fill(event, opts, override=True)
        events, where = [event], ["line 1"]
    return events, where


def _apply_usage(event: dict[str, Any], opts: Options, stdin: Any) -> None:
    """Tokens, cost and model from the raw SDK usage object named by ``--usage-json``."""
    if any(path.startswith("tokens.") for path in opts.fields) or opts.tokenizer is not None:
        raise UsageError("give either --usage-json or token counts, not both")
    text = _read_bytes(opts.usage or "-", stdin).decode("utf-8", "surrogateescape")
    try:
        raw = fastjson.loads(text.strip() or "null")
    except ValueError as exc:
        raise UsageError(f"--usage-json: {exc}") from None
    from telemetryd.adapters import usage  # only when asked: it is not on the plain path

    found = usage.normalize(raw)
    event["tokens"] = found["tokens"]
    if "cost_usd" in found and opts.cost is None and event["type"] == "api_request":
        event["cost_usd"] = found["cost_usd"]
        event["cost_source"] = "reported"
    if "model" in found:
        _put(event, "agent.model", found["model"])


def _fill(event: dict[str, Any], opts: Options, *, override: bool) -> None:
    kind = event.get("type")
    for path, value in opts.fields.items():
        _put(event, path, value, override=override)
    for name, path in _ENV_FIELDS.items():
        text = os.environ.get(name)
        if text:
            field: Any = int(text) if path == "task.attempt_index" and text.isdigit() else text
            _put(event, path, field, override=False)
    if opts.attrs:
        attrs = event.setdefault("attrs", {})
        if isinstance(attrs, dict):
            for key, value in opts.attrs.items():
                if override or key not in attrs:
                    attrs[key] = value
    in_tool = kind in _TOOL_TYPES
    if opts.tool is not None:
        _put(event, "tool.name", opts.tool, override=override)
    if opts.success is not None:
        _put(event, "tool.success" if in_tool else "success", opts.success, override=override)
    if opts.error is not None:
        _put(event, "tool.error" if in_tool else "error", opts.error, override=override)
    if opts.cost is not None:
        _put(event, "cost_usd", opts.cost, override=override)
    tokens = event.get("tokens")
    if isinstance(tokens, dict) and "source" not in tokens:
        if opts.tokenizer is not None or "estimated_total" in tokens:
            tokens["source"] = "estimated"
            if opts.tokenizer is not None:
                tokens["tokenizer"] = opts.tokenizer
        else:
            tokens["source"] = "actual"
    elif tokens is None and kind in _TOKEN_TYPES:
        event["tokens"] = {"source": "unknown"}
    if kind in _MODEL_TYPES:
        agent = event.get("agent")
        if not isinstance(agent, dict) or not agent.get("model"):
            _put(event, "agent.model", "unknown", override=False)
            _warn("no model given (--model or TELEMETRYD_MODEL); recorded as 'unknown'")
    if not event.get("id"):
        if event.get("id") == "":  # (an unset variable in a hook script, say: said, not fatal)
            _warn("the event's id is empty (ids are 1 to 128 characters): a fresh one is used")
        event["id"] = uuid7()
    if not event.get("ts"):
        event["ts"] = _now_rfc3339()  # when the hook fired, even if delivered later from the spool


def _read_bytes(source: str, stdin: Any) -> bytes:
    if source == "-":
        data: bytes = (stdin or sys.stdin.buffer).read()
        return data
    try:
        with open(source, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror}") from None


def _read_input(source: str, stdin: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The input's events, and where each is in it (:func:`build_events`)."""
    data = _read_bytes(source, stdin)
    text = data.decode("utf-8", "surrogateescape")
    stripped = text.strip()
    if not stripped:
        return [], []
    try:
        whole = fastjson.loads(stripped)  # one JSON object or array, maybe pretty-printed
    except ValueError:
        whole = None
    else:
        items = whole if isinstance(whole, list) else [whole]
        events = [_as_event(item, f"input item {n}") for n, item in enumerate(items, 1)]
        where = [f"item {n}" for n in range(1, len(events) + 1)]
        return events, where if isinstance(whole, list) else ["line 1"]
    events = []
    where = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                item = fastjson.loads(line)
            except ValueError as exc:
                raise UsageError(f"input line {number}: {exc}") from None
            events.append(_as_event(item, f"input line {number}"))
            where.append(f"line {number}")
    return events, where


def _as_event(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise UsageError(f"{where}: an event is a JSON object, got {type(item).__name__}")
    return item


def _warn(message: str) -> None:
    sys.stderr.write(f"telemetryctl: warning: {message}\n")


def unconfirmed(lines: list[str], delivery: Delivery) -> list[str]:
    """The lines a failed delivery leaves to spool: neither covered by a Summary (the
    daemon read them) nor rejected (they would be rejected again)."""
    bad = {reply.line for reply in delivery.rejected}
    return [
        line
        for number, line in enumerate(lines, 1)
        if number > delivery.acknowledged and number not in bad
    ]


def spool(lines: list[str]) -> str:
    """Write events to a new spool file (atomically: temp name, then rename)."""
    from telemetryd import paths

    directory = paths.spool_dir()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    name = f"{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}"
    temp = os.path.join(directory, f".{name}.tmp")
    final = os.path.join(directory, f"{name}.jsonl")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, ("\n".join(lines) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, final)
    except OSError:
        if os.path.exists(temp):  # (a full disk: leave nothing behind)
            os.unlink(temp)
        raise
    return final


def _invalid_locally(lines: list[str], where: list[str]) -> list[str]:
    """Apply the daemon's own rules before spooling (slow path only): an event it
    would reject later must fail now, where the hook author sees it (``where``: each
    line's place in the input)."""
    from telemetryd import config, events, paths
    from telemetryd.errors import TelemetryError

    try:
        limits = config.load(paths.resolve().config_file)[0].ingest
    except TelemetryError:
        limits = config.Ingest()  # the daemon will say what is wrong with its config
    problems = []
    for place, line in zip(where, lines, strict=True):
        raw = line.encode()
        try:
            if len(raw) > limits.max_line_bytes:
                raise events.Invalid(
                    events.LINE_TOO_LONG,
                    f"line is longer than the limit of {limits.max_line_bytes} bytes",
                )
            problem = events.check_producer_rules(
                events.decode(raw),
                raw,
                max_attrs_bytes=limits.max_attrs_bytes,
                max_attrs_depth=limits.max_attrs_depth,
            )
            if problem is not None:
                raise problem
        except events.Invalid as invalid:
            problems.append(f"{place}: {invalid.code}: {invalid}")
    return problems


def deliver_to(socket_path: str | None, payload: bytes, timeout: float) -> Delivery:
    """:func:`deliver` to ``socket_path``, by default the events socket; where no socket
    path can be worked out (an unusable runtime directory), a Delivery that failed, so
    that the events are spooled as when the daemon is down."""
    if socket_path is None:
        from telemetryd.errors import DaemonUnavailable, PathError
        from telemetryd.paths import events_socket_fast

        try:
            socket_path = events_socket_fast()
        except (PathError, OSError) as exc:
            delivery = Delivery()
            delivery.failure = DaemonUnavailable(str(exc))
            return delivery
    return deliver(socket_path, payload, timeout)


def main(argv: list[str]) -> int:
    try:
        opts = parse(argv)
        if opts.help:
            sys.stdout.write(USAGE)
            return EXIT_OK
        events, where = build_events(opts)
        lines = [fastjson.dumps(event) for event in events]
    except (UsageError, ValueError, TypeError) as exc:
        sys.stderr.write(f"telemetryctl send: {exc}\n")
        return EXIT_USAGE
    except RecursionError:
        sys.stderr.write("telemetryctl send: the input nests too deeply to read\n")
        return EXIT_USAGE
    if not lines:
        return EXIT_OK
    delivery = deliver_to(opts.socket, ("\n".join(lines) + "\n").encode(), opts.timeout)

    for reply in delivery.rejected:
        place = where[reply.line - 1] if 0 < reply.line <= len(where) else f"line {reply.line}"
        sys.stderr.write(
            f"telemetryctl send: {place}: {reply.error}: {reply.path or '$'}: {reply.message}\n"
        )
    if delivery.summary is not None:
        if opts.verbose:
            sys.stderr.write(fastjson.dumps(delivery.summary.as_dict()) + "\n")
        return EXIT_INVALID if delivery.rejected else EXIT_OK

    # Not delivered (or not confirmed). Lines a Summary covered are in the journal, and
    # rejected lines would be rejected again: spool the others.
    keep = unconfirmed(lines, delivery)
    if opts.strict:
        sys.stderr.write(f"telemetryctl send: not delivered: {delivery.failure}\n")
        return EXIT_UNAVAILABLE
    places = dict(zip(lines, where, strict=True))  # (a line sent twice: its last place)
    problems = _invalid_locally(keep, [places[line] for line in keep])
    if problems:
        for problem in problems:
            sys.stderr.write(f"telemetryctl send: {problem}\n")
        return EXIT_INVALID
    if keep:
        try:
            spooled = spool(keep)
        except OSError as exc:
            # Lost: but a hook must not fail its agent (--strict fails above, unspooled).
            sys.stderr.write(
                f"telemetryctl send: not delivered ({delivery.failure}) and cannot spool: {exc}"
                f"; {len(keep)} event(s) lost\n"
            )
            return EXIT_INVALID if delivery.rejected else EXIT_OK
        _warn(f"{delivery.failure}; {len(keep)} event(s) spooled to {spooled}")
    return EXIT_INVALID if delivery.rejected else EXIT_OK
