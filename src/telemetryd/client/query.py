"""`telemetryctl query`: SQL over the telemetry database, answered by the daemon.

Like `send`, this path is dispatched before click is imported and uses only
``_socket``/``_json``/``_csv`` (through :mod:`telemetryd.client.protocol`): the
whole process should cost a fraction of a fresh process that imports duckdb. The
daemon materializes pending events first, so an event acknowledged before the query
started is in its result. With the daemon stopped, a one-shot store process
(:mod:`telemetryd.client.store_process`) reads the database file read-only and answers
in the control socket's protocol; the client warns that recent events may be missing.

``Replies``, ``read_reply`` and ``MAX_REPLY_LINE`` are the protocol client's, named
here too for the tests of the reply reader.
"""

from __future__ import annotations

import sys
import time

from telemetryd import fastjson
from telemetryd.client import output, protocol, store_process
from telemetryd.client.argv import UsageError, arguments
from telemetryd.client.control import Control
from telemetryd.client.protocol import MAX_REPLY_LINE, Replies, read_reply  # noqa: F401
from telemetryd.errors import (
    DaemonBusy,
    DaemonError,
    DaemonUnavailable,
    ProtocolError,
    StoreUnavailable,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

DEFAULT_TIMEOUT = 30.0  # the daemon's default (store.query-timeout), for the file too
MAX_TIMEOUT = protocol.MAX_QUERY_TIMEOUT

USAGE = """\
Usage: telemetryctl query [OPTIONS] SQL

  Run one read-only SQL statement over the telemetry database and print the
  result: SELECT (DESCRIBE, SHOW, SUMMARIZE, PIVOT), EXPLAIN [ANALYZE] of one,
  CALL of a table function that reads, or a PRAGMA that reads. SQL may be - to
  read it from stdin; SQL may begin with a -- comment, and anything after a
  lone -- is the SQL. When events acknowledged before the query are not in the
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

Exit status: 0 done, 1 the query failed (DuckDB's message on stderr) or the
daemon answered with another error, 2 usage error, 3 neither the daemon nor the
database is available (no database file, or it cannot be opened), or the daemon
is too busy to take the connection.
"""


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
        elif opts.sql is None and (arg == "-" or not option.startswith("-") or _is_sql(arg)):
            opts.sql = sys.stdin.read() if arg == "-" else arg
        else:
            raise UsageError(f"unexpected argument: {arg}")
    if opts.sql is None and not opts.help:
        raise UsageError("give the SQL to run (or - to read it from stdin)")
    return opts


def _is_sql(arg: str) -> bool:
    """Whether ``arg``, which starts with ``-``, is SQL rather than an option: SQL that
    begins with a ``--`` comment (an option's name holds no space or line break)."""
    return arg.startswith("--") and any(c.isspace() for c in arg)


def seconds(option: str, text: str) -> float:
    """A timeout option's value: a number of seconds above 0 (at most MAX_TIMEOUT)."""
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not 0 < number < float("inf"):  # also refuses nan
        raise UsageError(f"{option} expects a number of seconds above 0, got {text!r}")
    return min(number, MAX_TIMEOUT)


# -- answers ---------------------------------------------------------------------------


def ask_daemon(opts: Options, out: output.Writer) -> int:
    """Stream the daemon's answer into ``out`` and return the exit status; a failed
    query's message goes to stderr. DaemonUnavailable when the daemon does not answer
    at all (not running, or gone before answering), DaemonBusy when it is too busy to."""
    with Control(opts.socket or protocol.control_socket()) as control:
        replies = control.query(opts.sql or "", opts.params, opts.timeout)
        return _write(replies, out, daemon=True)


def ask_file(opts: Options, out: output.Writer) -> int:
    """The daemon is down: a store process reads the database file (read-only, same
    sandbox) for at most the query's timeout (the file stays locked while it is open);
    its answer goes into ``out``. DaemonUnavailable when there is no database file."""
    timeout = opts.timeout or DEFAULT_TIMEOUT
    replies = store_process.from_file(opts.sql or "", opts.params, timeout)
    return _write(replies, out, daemon=False)


def _write(
    replies: Iterator[protocol.QueryColumns | protocol.QueryRows | protocol.QueryDone],
    out: output.Writer,
    *,
    daemon: bool,
) -> int:
    """Copy a query's replies into ``out``; the exit status. Errors before the first
    reply that say nobody answered are raised (DaemonUnavailable, DaemonBusy); the
    rest end the query with a message on stderr."""
    started = False
    try:
        for reply in replies:
            if isinstance(reply, protocol.QueryRows):
                out.rows(reply.rows)
            elif isinstance(reply, protocol.QueryColumns):
                out.start(reply.columns)
            else:
                out.end()
                if reply.warning:
                    sys.stderr.write(f"telemetryctl query: warning: {reply.warning}\n")
                return EXIT_OK
            started = True
    except StoreUnavailable as exc:
        where = "the daemon's" if daemon else "the"
        sys.stderr.write(f"telemetryctl query: {where} database cannot be opened: {exc}\n")
        return EXIT_UNAVAILABLE
    except DaemonError as exc:  # the query failed: DuckDB's message, as it is
        sys.stderr.write(f"{exc.message}\n")
        return EXIT_FAILED
    except DaemonUnavailable as exc:
        if not started and daemon:
            raise  # nobody answered: the caller may read the file instead
        sys.stderr.write(f"telemetryctl query: {exc}\n")
        return EXIT_UNAVAILABLE if isinstance(exc, DaemonBusy) else EXIT_FAILED
    except ProtocolError as exc:
        sys.stderr.write(f"telemetryctl query: {exc}\n")
        return EXIT_FAILED
    raise AssertionError("a query's replies end with their QueryDone")


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
    except BrokenPipeError:  # `| head`: the reader is gone, and so is the need to print
        return EXIT_OK
    except DaemonBusy as busy:  # up, so its file is locked: nothing to fall back on
        sys.stderr.write(f"telemetryctl query: {busy}; try again shortly\n")
        return EXIT_UNAVAILABLE
    except DaemonUnavailable as down:
        reason = str(down)
    if time.monotonic() - started > 1.0:
        reason += " (after waiting)"
    sys.stderr.write(
        f"telemetryctl query: warning: {reason}; reading the database file directly, "
        "so events not yet materialized are missing\n"
    )
    try:
        return ask_file(opts, output.writer(fmt, sys.stdout))
    except BrokenPipeError:
        return EXIT_OK
    except DaemonUnavailable as missing:
        sys.stderr.write(f"telemetryctl query: the daemon is not running {missing}\n")
        return EXIT_UNAVAILABLE
