"""`telemetryctl query`: SQL over the telemetry database, answered by the daemon.

Like `send`, this path is dispatched before click is imported and uses only
``_socket``/``_json``/``_csv``: the whole process should cost a fraction of a
fresh process that imports duckdb. The daemon materializes pending events
first, so an event acknowledged before the query started is in its result.
With the daemon stopped, the client opens the database read-only itself
(importing duckdb only then) and warns that recent events may be missing.
"""

from __future__ import annotations

import os
import sys
import time

from telemetryd import fastjson
from telemetryd.client import output
from telemetryd.client.argv import UsageError, arguments
from telemetryd.errors import DaemonBusy, ProtocolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from collections.abc import Iterator
    from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

DEFAULT_TIMEOUT = 30.0  # the daemon's default (store.query-timeout), for the file too
MAX_TIMEOUT = 3600.0  # wire.MAX_QUERY_TIMEOUT (wire imports msgspec: too slow here)
# The longest reply line the daemon sends (wire.MAX_REPLY_LINE): one row of a result is
# at most 64 MiB as JSON.
MAX_REPLY_LINE = 64 * 1024 * 1024 + 1024
_RECV = 1 << 18

USAGE = """\
Usage: telemetryctl query [OPTIONS] SQL

  Run one read-only SQL statement over the telemetry database and print the
  result: SELECT (DESCRIBE, SHOW, SUMMARIZE, PIVOT), EXPLAIN [ANALYZE] of one,
  CALL of a table function that reads, or a PRAGMA that reads. SQL may be - to
  read it from stdin. When events acknowledged before the query are not in the
  database yet (loading failed), the answer says so on stderr.

  Examples:
    telemetryctl query "select * from cost_by_model(days := 7)"
    telemetryctl query --format csv "select * from api_requests" > requests.csv
    telemetryctl query --param s=abc "select * from sessions where session_id = $s"

Options:
  -f, --format FORMAT   table (default on a terminal), csv (default otherwise),
                        tsv, json, ndjson, markdown
  -p, --param NAME=VAL  bind $NAME (VAL is JSON if it parses, else a string); repeatable
  --timeout SECONDS     stop the query (waiting for a free query slot and sending
                        the result included) after this long (default: the
                        daemon's, 30 s; at most 3600)
  --socket PATH         control socket (default: from TELEMETRYD_HOME / XDG)
  -h, --help            show this message

Exit status: 0 done, 1 the query failed (DuckDB's message on stderr),
2 usage error, 3 neither the daemon nor the database file is available, or the
daemon is too busy to take the connection.
"""


class Unavailable(Exception):
    """The daemon did not answer (not a query error)."""


class Options:
    def __init__(self) -> None:
        self.sql: str | None = None
        self.format: str | None = None
        self.params: dict[str, Any] = {}
        self.timeout: float | None = None
        self.socket: str | None = None
        self.help = False


def parse(argv: list[str]) -> Options:
    opts = Options()
    for arg, option, value in arguments(argv):
        if option in ("-f", "--format"):
            opts.format = value()
            if opts.format not in output.FORMATS:
                raise UsageError(f"--format must be one of {', '.join(output.FORMATS)}")
        elif option in ("-p", "--param"):
            item = value()
            name, sep, raw = item.partition("=")
            if not sep or not name:
                raise UsageError(f"--param expects NAME=VALUE, got {item!r}")
            try:
                opts.params[name] = fastjson.loads(raw)
            except ValueError:
                opts.params[name] = raw
        elif option == "--timeout":
            opts.timeout = seconds(option, value())
        elif option == "--socket":
            opts.socket = value()
        elif option in ("-h", "--help"):
            opts.help = True
        elif opts.sql is None and (arg == "-" or not arg.startswith("-")):
            opts.sql = sys.stdin.read() if arg == "-" else arg
        else:
            raise UsageError(f"unexpected argument: {arg}")
    if opts.sql is None and not opts.help:
        raise UsageError("give the SQL to run (or - to read it from stdin)")
    return opts


def seconds(option: str, text: str) -> float:
    """A timeout option's value: a number of seconds above 0 (at most MAX_TIMEOUT)."""
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not 0 < number < float("inf"):  # also refuses nan
        raise UsageError(f"{option} expects a number of seconds above 0, got {text!r}")
    return min(number, MAX_TIMEOUT)


# -- reply lines: the one reader of control replies for query, tail, hook and the CLI ----


class Replies:
    """Complete reply lines from the daemon on ``sock``.

    Chunks are kept in a list and joined once per newline, so a long line costs linear
    time; a line longer than ``max_line`` is a ProtocolError, and a last line the daemon
    did not finish (no newline before the connection closed) is never returned: ``cut``
    says there was one. With a ``deadline`` (time.monotonic()), reads past it raise
    TimeoutError.
    """

    def __init__(
        self, sock: _socket.socket, deadline: float | None = None, max_line: int = MAX_REPLY_LINE
    ) -> None:
        self.sock = sock
        self.deadline = deadline
        self.max_line = max_line
        self.cut = False

    def batches(self) -> Iterator[list[bytes]]:
        """The complete lines of each read (lists, possibly empty), until the daemon closes."""
        pending: list[bytes] = []
        size = 0
        while True:
            if self.deadline is not None:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the daemon did not answer in time")
                self.sock.settimeout(remaining)
            chunk = self.sock.recv(_RECV)
            if not chunk:
                self.cut = size > 0
                return
            if b"\n" not in chunk:
                pending.append(chunk)
                size += len(chunk)
                if size > self.max_line:
                    raise ProtocolError(
                        f"a reply line from the daemon is over {self.max_line} bytes"
                    )
                continue
            pending.append(chunk)
            lines = b"".join(pending).split(b"\n")
            rest = lines.pop()
            pending = [rest] if rest else []
            size = len(rest)
            if any(len(line) > self.max_line for line in lines):
                raise ProtocolError(f"a reply line from the daemon is over {self.max_line} bytes")
            yield lines

    def lines(self) -> Iterator[bytes]:
        for lines in self.batches():
            yield from lines


def read_reply(line: bytes) -> dict[str, Any]:
    """One reply line as an object. ProtocolError when it is not one, DaemonBusy when
    the daemon turned the connection away for load (too many connections)."""
    try:
        reply = fastjson.loads(line.decode())
    except (UnicodeDecodeError, ValueError):
        reply = None
    if not isinstance(reply, dict):
        shown = line[:80] + (b"..." if len(line) > 80 else b"")
        raise ProtocolError(
            f"the daemon sent a malformed reply line ({len(line)} bytes): {shown!r}"
        )
    if reply.get("error") == "too_many_connections":
        raise DaemonBusy(f"the daemon is busy: {reply.get('message')}")
    return reply


def control_socket() -> str:
    """The control socket path, without importing platformdirs when the rule is simple."""
    home = os.environ.get("TELEMETRYD_HOME")
    if home:
        return os.path.join(os.path.abspath(os.path.expanduser(home)), "run", "control.sock")
    from telemetryd import paths

    return os.path.join(os.path.dirname(paths.events_socket_fast()), paths.CONTROL_SOCKET)


def ask_daemon(opts: Options, out: output.Writer) -> int:
    """Stream the daemon's answer into ``out``; Unavailable when it does not answer,
    DaemonBusy when it is too busy to, ProtocolError when its reply makes no sense."""
    import _socket

    request: dict[str, Any] = {"op": "query", "sql": opts.sql}
    if opts.params:
        request["params"] = opts.params
    if opts.timeout is not None:
        request["timeout"] = opts.timeout
    path = opts.socket or control_socket()
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        try:
            sock.connect(path)
        except OSError as exc:
            raise Unavailable(f"no daemon on {path} ({exc.strerror or exc})") from None
        sock.sendall((fastjson.dumps(request) + "\n").encode())
        # Results can take as long as the query's own timeout; the daemon enforces it.
        sock.settimeout(None)
        started = False
        for line in Replies(sock).lines():
            reply = read_reply(line)
            if "rows" in reply and isinstance(reply["rows"], list):
                out.rows(reply["rows"])
            elif "columns" in reply:
                out.start(reply["columns"])
            elif reply.get("ok"):
                out.end()
                if reply.get("warning"):
                    sys.stderr.write(f"telemetryctl query: warning: {reply['warning']}\n")
                return EXIT_OK
            elif reply.get("error") == "forbidden_peer":
                raise Unavailable(str(reply.get("message")))
            else:
                sys.stderr.write(f"{reply.get('message')}\n")
                return EXIT_FAILED
            started = True
        if not started:
            raise Unavailable("the daemon closed the connection without answering")
        sys.stderr.write("telemetryctl query: the daemon closed the connection early\n")
        return EXIT_FAILED
    finally:
        sock.close()


def ask_file(opts: Options, out: output.Writer) -> int:
    """The daemon is down: read the database file directly (read-only, same sandbox),
    for at most the query's timeout (the file stays locked while it is open)."""
    import threading

    from telemetryd import paths
    from telemetryd.store import sandbox

    database = paths.resolve().database
    if not os.path.exists(database):
        raise Unavailable(f"and there is no database at {database} yet")
    timeout = opts.timeout or DEFAULT_TIMEOUT
    try:
        con = sandbox.open_readonly(database)
        try:
            result = sandbox.Query(con.cursor())
            timer = threading.Timer(timeout, result.interrupt)
            timer.daemon = True
            timer.start()
            try:
                out.start([list(c) for c in result.run(opts.sql or "", opts.params)])
                for batch in result.batches():
                    out.rows([list(row) for row in batch])
                out.end()
            finally:
                timer.cancel()
                result.close()
        finally:
            con.close()
    except sandbox.QueryInterrupted:
        sys.stderr.write(f"the query ran longer than its {timeout:g} s\n")
        return EXIT_FAILED
    except sandbox.QueryError as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_FAILED
    return EXIT_OK


def main(argv: list[str]) -> int:
    try:
        opts = parse(argv)
    except UsageError as exc:
        sys.stderr.write(f"telemetryctl query: {exc}\n")
        return EXIT_USAGE
    if opts.help:
        sys.stdout.write(USAGE)
        return EXIT_OK
    fmt = opts.format or ("table" if sys.stdout.isatty() else "csv")
    started = time.monotonic()
    try:
        return ask_daemon(opts, output.writer(fmt, sys.stdout))
    except Unavailable as down:
        reason = str(down)
    except BrokenPipeError:  # `| head`: the reader is gone, and so is the need to print
        return EXIT_OK
    except DaemonBusy as busy:  # up, so its file is locked: nothing to fall back on
        sys.stderr.write(f"telemetryctl query: {busy}; try again shortly\n")
        return EXIT_UNAVAILABLE
    except (ProtocolError, OSError) as exc:
        sys.stderr.write(f"telemetryctl query: {exc}\n")
        return EXIT_FAILED
    if time.monotonic() - started > 1.0:
        reason += " (after waiting)"
    sys.stderr.write(
        f"telemetryctl query: warning: {reason}; reading the database file directly, "
        "so events not yet materialized are missing\n"
    )
    try:
        return ask_file(opts, output.writer(fmt, sys.stdout))
    except Unavailable as missing:
        sys.stderr.write(f"telemetryctl query: the daemon is not running {missing}\n")
        return EXIT_UNAVAILABLE
