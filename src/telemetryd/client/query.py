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

from telemetryd.client import fastjson, output
from telemetryd.client.argv import UsageError, arguments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

USAGE = """\
Usage: telemetryctl query [OPTIONS] SQL

  Run one read-only SQL statement (SELECT, EXPLAIN, CALL, PRAGMA) over the
  telemetry database and print the result. SQL may be - to read it from stdin.

  Examples:
    telemetryctl query "select * from cost_by_model(days := 7)"
    telemetryctl query --format csv "select * from api_requests" > requests.csv
    telemetryctl query --param s=abc "select * from sessions where session_id = $s"

Options:
  -f, --format FORMAT   table (default on a terminal), csv (default otherwise),
                        tsv, json, ndjson, markdown
  -p, --param NAME=VAL  bind $NAME (VAL is JSON if it parses, else a string); repeatable
  --timeout SECONDS     stop the query after this long (default: the daemon's, 30 s)
  --socket PATH         control socket (default: from TELEMETRYD_HOME / XDG)
  -h, --help            show this message

Exit status: 0 done, 1 the query failed (DuckDB's message on stderr),
2 usage error, 3 neither the daemon nor the database file is available.
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
            text = value()
            try:
                opts.timeout = float(text)
            except ValueError:
                raise UsageError(f"--timeout expects seconds, got {text!r}") from None
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


def control_socket() -> str:
    """The control socket path, without importing platformdirs when the rule is simple."""
    home = os.environ.get("TELEMETRYD_HOME")
    if home:
        return os.path.join(os.path.abspath(os.path.expanduser(home)), "run", "control.sock")
    from telemetryd import paths

    return os.path.join(os.path.dirname(paths.events_socket_fast()), paths.CONTROL_SOCKET)


def ask_daemon(opts: Options, out: output.Writer) -> int:
    """Stream the daemon's answer into ``out``; Unavailable when it does not answer."""
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
        carry = b""
        started = False
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                if not started:
                    raise Unavailable("the daemon closed the connection without answering")
                sys.stderr.write("telemetryctl query: the daemon closed the connection early\n")
                return EXIT_FAILED
            lines = (carry + chunk).split(b"\n")
            carry = lines.pop()
            for line in lines:
                reply = fastjson.loads(line.decode())
                started = True
                if "rows" in reply and isinstance(reply["rows"], list):
                    out.rows(reply["rows"])
                elif "columns" in reply:
                    out.start(reply["columns"])
                elif reply.get("ok"):
                    out.end()
                    return EXIT_OK
                else:
                    if reply.get("error") in ("too_many_connections", "forbidden_peer"):
                        raise Unavailable(str(reply.get("message")))
                    sys.stderr.write(f"{reply.get('message')}\n")
                    return EXIT_FAILED
    finally:
        sock.close()


def ask_file(opts: Options, out: output.Writer) -> int:
    """The daemon is down: read the database file directly (read-only, same sandbox)."""
    from telemetryd import paths
    from telemetryd import query as sandbox

    database = paths.resolve().database
    if not os.path.exists(database):
        raise Unavailable(f"and there is no database at {database} yet")
    try:
        con = sandbox.open_readonly(database)
        try:
            result = sandbox.Query(con.cursor())
            try:
                out.start([list(c) for c in result.run(opts.sql or "", opts.params)])
                for batch in result.batches():
                    out.rows([list(row) for row in batch])
                out.end()
            finally:
                result.close()
        finally:
            con.close()
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
