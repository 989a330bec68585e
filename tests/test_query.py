"""The query sandbox on a real DuckDB file, and `telemetryctl query` reading the file
directly while the daemon is stopped (through the one-shot store process)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest

from conftest import Daemon, ctl, exchange
from telemetryd import wire
from telemetryd.client import query as query_client
from telemetryd.client import store_process
from telemetryd.store import sandbox as query


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "t.duckdb"
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    with duckdb.connect(str(path)) as con:
        con.execute(
            "create table events as select range as i, 'e' || range as name from range(5000)"
        )
        con.execute("create table victims as select 42 as v")
    return path


@pytest.fixture
def hardened(database: Path, tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(database))
    query.harden(con, allowed_dirs=[str(tmp_path / "journal")])
    yield con
    con.close()


def run(con: duckdb.DuckDBPyConnection, sql: str, **params: object) -> list[tuple[object, ...]]:
    q = query.Query(con.cursor())
    try:
        q.run(sql, params)
        return [row for batch in q.batches() for row in batch]
    finally:
        q.close()


ESCAPES = {
    "delete in a CTE": "with x as (delete from victims returning 1) select * from x",
    "insert": "insert into victims values (1)",
    "copy to": "copy events to '/tmp/telemetryd-escape.csv'",
    "read_text outside": "select * from read_text('{outside}')",
    "attach": "attach '{tmp}/other.duckdb' as other",
    "install": "install httpfs",
    "load": "load json",
    "set": "set threads = 8",
    "reset": "reset threads",
    "python variable": "select * from some_python_list",
    "two statements": "select 1; select 2",
    "create": "create table t2 (a int)",
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_every_escape_is_refused_and_the_next_query_works(
    name: str, hardened: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    some_python_list = [1, 2, 3]  # noqa: F841  (what a replacement scan would find)
    sql = ESCAPES[name].format(outside=tmp_path / "outside.txt", tmp=tmp_path)
    with pytest.raises(query.QueryError) as refused:
        run(hardened, sql)
    assert str(refused.value)  # a message, from DuckDB or from the statement check
    assert run(hardened, "select count(*) from victims") == [(1,)]
    assert run(hardened, "select v from victims") == [(42,)]
    assert not (tmp_path / "other.duckdb").exists()


def test_statement_check_names_what_it_refused(hardened: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(query.QueryError, match="LOAD statements are not allowed"):
        run(hardened, "load json")
    with pytest.raises(query.QueryError, match="one statement per query, got 2"):
        run(hardened, "select 1; select 2")


def test_parameters_bind(hardened: duckdb.DuckDBPyConnection) -> None:
    assert run(hardened, "select name from events where i = $i", i=7) == [("e7",)]


def test_a_long_query_is_interrupted_and_the_connection_stays_usable(
    hardened: duckdb.DuckDBPyConnection,
) -> None:
    q = query.Query(hardened.cursor())
    timer = threading.Timer(0.2, q.interrupt)
    timer.start()
    try:
        with pytest.raises(query.QueryInterrupted):
            q.run("select count(*) from range(100000000000) a")
    finally:
        timer.cancel()
        q.close()
    assert run(hardened, "select 1 + 1") == [(2,)]


def test_results_come_in_bounded_batches(hardened: duckdb.DuckDBPyConnection) -> None:
    q = query.Query(hardened.cursor())
    try:
        q.run("select i from events order by i")
        sizes = [len(batch) for batch in q.batches(rows=1000)]
    finally:
        q.close()
    assert sizes == [1000] * 5


# -- `telemetryctl query` with the daemon stopped: reads the file, warns ---------------------


@pytest.fixture
def home_database(state_home: Path) -> Path:
    path = state_home / "telemetry.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(
            "create table api_requests as select * from (values "
            "('claude-sonnet-4-5', 1200, 0.012), ('gpt-5', 800, 0.02), "
            "('claude-sonnet-4-5', 300, 0.003)) t(model, input_tokens, cost_usd)"
        )
    return path


def test_query_without_the_daemon_reads_the_file_and_warns(home_database: Path) -> None:
    sql = (
        "select model, sum(input_tokens) as tokens, count(*) as n from api_requests "
        "group by model order by model"
    )
    result = ctl("query", "--format", "csv", sql)
    assert result.returncode == 0, result.stderr
    assert b"events not yet materialized are missing" in result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout.decode())))
    assert rows == [
        ["model", "tokens", "n"],
        ["claude-sonnet-4-5", "1500", "2"],
        ["gpt-5", "800", "1"],
    ]


@pytest.mark.parametrize("fmt", ["json", "ndjson", "tsv", "markdown", "table"])
def test_output_formats(home_database: Path, fmt: str) -> None:
    sql = "select model, input_tokens from api_requests where input_tokens > $n order by 2"
    result = ctl("query", "--format", fmt, "--param", "n=500", sql)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    if fmt == "json":
        assert json.loads(out) == [
            {"model": "gpt-5", "input_tokens": 800},
            {"model": "claude-sonnet-4-5", "input_tokens": 1200},
        ]
    elif fmt == "ndjson":
        assert [json.loads(line) for line in out.splitlines()] == [
            {"model": "gpt-5", "input_tokens": 800},
            {"model": "claude-sonnet-4-5", "input_tokens": 1200},
        ]
    elif fmt == "tsv":
        assert out == "model\tinput_tokens\ngpt-5\t800\nclaude-sonnet-4-5\t1200\n"
    elif fmt == "markdown":
        assert out.splitlines() == [
            "| model | input_tokens |",
            "|---|---|",
            "| gpt-5 | 800 |",
            "| claude-sonnet-4-5 | 1200 |",
        ]
    else:
        assert out.splitlines() == [
            "model              input_tokens",
            "-----------------  ------------",
            "gpt-5                       800",
            "claude-sonnet-4-5          1200",
            "(2 rows)",
        ]


def test_columns_of_one_name_are_all_in_json_and_cells_stay_on_their_row(
    home_database: Path,
) -> None:
    """A join's `a.id, b.id` are two columns: JSON and NDJSON keyed each row by name, so
    the second overwrote the first. A value holding a newline or a tab broke the table's
    rows apart."""
    sql = "select 1 as a, 2 as a, 3 as a_1, 4 as A, 'x' || chr(10) || 'y' || chr(9) || 'z' as t"
    expected = {"a": 1, "a_2": 2, "a_1": 3, "A": 4, "t": "x\ny\tz"}
    for fmt in ("json", "ndjson"):
        result = ctl("query", "--format", fmt, sql)
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout) if fmt == "json" else [json.loads(result.stdout)]
        assert rows == [expected]
        assert list(rows[0]) == ["a", "a_2", "a_1", "A", "t"]  # (in the columns' order)
    table = ctl("query", "--format", "table", sql)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.decode().splitlines()
    assert len(lines) == 4 and lines[2].split() == ["1", "2", "3", "4", "x\\ny\\tz"]


def test_sql_that_begins_with_a_comment_or_follows_a_double_dash(home_database: Path) -> None:
    """SQL that begins with a `-- comment` (a .sql file given as "$(cat file)") was
    taken for an unknown option; `--` ends the options."""
    commented = "-- totals\nselect count(*) as n from api_requests"
    for argv in ([commented], ["--", commented], ["--format", "csv", "--", "select 2 as n"]):
        result = ctl("query", "--format", "csv", *argv)
        assert result.returncode == 0, (argv, result.stderr)
        assert result.stdout.splitlines()[0] == b"n", argv
    assert ctl("query", "--frobnicate", "select 1").returncode == 2  # (still an option)


def test_nan_and_infinities_are_spelled_out_not_turned_into_null(home_database: Path) -> None:
    """JSON has no NaN or infinity; they used to arrive as null, a missing value."""
    sql = (
        "select x, x::float as f, 'nan'::double as n from (values "
        "(1.5::double), ('nan'::double), ('inf'::double), ('-inf'::double), (null)) t(x)"
    )
    result = ctl("query", "--format", "json", sql)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"x": 1.5, "f": 1.5, "n": "NaN"},
        {"x": "NaN", "f": "NaN", "n": "NaN"},
        {"x": "Infinity", "f": "Infinity", "n": "NaN"},
        {"x": "-Infinity", "f": "-Infinity", "n": "NaN"},
        {"x": None, "f": None, "n": "NaN"},
    ]
    table = ctl("query", "--format", "table", "select 'inf'::double as big, 2.5 as small")
    assert table.stdout.decode().splitlines()[2].split() == ["Infinity", "2.5"]


def test_query_errors_reach_the_user_verbatim(home_database: Path) -> None:
    result = ctl("query", "select nope from api_requests")
    assert result.returncode == 1
    assert b'Referenced column "nope" not found' in result.stderr


def test_query_with_neither_daemon_nor_database(state_home: Path) -> None:
    result = ctl("query", "select 1")
    assert result.returncode == 3
    assert b"no database at" in result.stderr


# -- the store process that answers while the daemon is stopped (the client's side) -----------
#
# `python -m telemetryd.store query --database PATH` gets the control socket's query
# request on stdin and writes its reply lines on stdout. Here a fake of it prints fixed
# lines; `store_process.command` is where the client takes the command from.


@pytest.fixture
def fake_store(
    state_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], Path]:
    """Install a fake store process running ``body`` (Python; ``out(text)`` writes a
    reply line); returns where it keeps the request line it read. A database file
    exists (empty: the fake never opens it)."""
    (state_home / "telemetry.duckdb").write_bytes(b"")
    request = tmp_path / "request.json"

    def install(body: str) -> Path:
        script = tmp_path / "store.py"
        script.write_text(
            "import sys, time\n"
            f"open({str(request)!r}, 'wb').write(sys.stdin.buffer.readline())\n"
            "def out(text):\n"
            "    sys.stdout.write(text + '\\n'); sys.stdout.flush()\n" + body + "\n"
        )
        monkeypatch.setattr(
            store_process, "command", lambda database: [sys.executable, str(script)]
        )
        return request

    return install


def run_query(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = query_client.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


ANSWER = """
out('{"columns":[["model","VARCHAR"],["n","BIGINT"]]}')
out('{"rows":[["gpt-5",1],["claude-sonnet-4-5",2]]}')
out('{"ok":true,"row_count":2,"elapsed_ms":1.5}')
"""


def test_the_store_command_is_the_store_package(state_home: Path) -> None:
    assert store_process.command("/x/t.duckdb") == [
        sys.executable, "-m", "telemetryd.store", "query", "--database", "/x/t.duckdb"
    ]  # fmt: skip


def test_without_the_daemon_a_store_process_answers(
    fake_store: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    request = fake_store(ANSWER)
    code, out, err = run_query(capsys, "--param", "n=5", "select $n")
    assert (code, out) == (0, "model,n\ngpt-5,1\nclaude-sonnet-4-5,2\n")
    assert err.startswith("telemetryctl query: warning: no daemon socket at ")
    assert err.endswith("events not yet materialized are missing\n") and err.count("\n") == 1
    sent = msgspec.json.decode(request.read_bytes(), type=wire.ControlRequest)
    assert sent == wire.QueryRequest(sql="select $n", params={"n": 5}, timeout=30.0)


def test_the_store_process_warning_reaches_stderr(
    fake_store: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_store(ANSWER.replace('"elapsed_ms":1.5', '"elapsed_ms":1.5,"warning":"stale: 3 events"'))
    code, out, err = run_query(capsys, "--format", "ndjson", "select 1")
    assert code == 0 and out.splitlines()[0] == '{"model":"gpt-5","n":1}'
    assert err.splitlines()[1] == "telemetryctl query: warning: stale: 3 events"


@pytest.mark.parametrize(
    "body, code, message",
    [
        (
            'out(\'{"error":"query_failed","message":"Binder Error: nope"}\'); sys.exit(1)',
            1,
            "Binder Error: nope",
        ),
        (
            'out(\'{"error":"store_unavailable","message":"lock held"}\'); sys.exit(3)',
            3,
            "telemetryctl query: the database cannot be opened: lock held",
        ),
        (
            "sys.exit(1)",
            1,
            "telemetryctl query: the store process ended without answering (exit status 1)",
        ),
        (
            """out('{"columns":[["a","INTEGER"]]}'); out('{"columns":[]}')""",
            1,
            "telemetryctl query: the daemon's answer to a query makes no sense: columns twice",
        ),
    ],
)
def test_what_the_store_process_answers_reaches_the_user_in_one_line(
    fake_store: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    body: str,
    code: int,
    message: str,
) -> None:
    fake_store(body)
    got, _, err = run_query(capsys, "select 1")
    assert got == code
    assert err.splitlines()[1:] == [message]


def test_a_store_process_that_runs_too_long_is_killed(
    fake_store: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_process, "GRACE", 0.2)
    fake_store("time.sleep(60)")
    started = time.monotonic()
    code, _, err = run_query(capsys, "--timeout", "0.3", "select 1")
    assert time.monotonic() - started < 10
    assert code == 1
    assert err.splitlines()[1:] == ["the query ran longer than its 0.3 s"]


def test_the_query_path_without_the_daemon_never_imports_the_store(
    fake_store: Callable[[str], Path], tmp_path: Path
) -> None:
    fake_store(ANSWER)
    code = (
        "import sys; from telemetryd.client import query, store_process; "
        f"store_process.command = lambda db: [sys.executable, {str(tmp_path / 'store.py')!r}]; "
        "rc = query.main(['--format', 'csv', 'select 1']); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('duckdb', 'msgspec') "
        "or m.startswith(('telemetryd.store', 'telemetryd.daemon'))); "
        "sys.stderr.write(repr((rc, heavy)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout == "model,n\ngpt-5,1\nclaude-sonnet-4-5,2\n"
    assert result.stderr.endswith("(0, [])"), result.stderr


# -- through the running daemon ----------------------------------------------------------------


def test_read_your_writes(running_daemon: Daemon) -> None:
    for n in range(5):
        sent = ctl(
            "send",
            "--type",
            "api_request",
            "--model",
            f"m{n}",
            "--input-tokens",
            "7",
            "--output-tokens",
            "1",
        )
        assert sent.returncode == 0, sent.stderr
        result = ctl("query", "--format", "csv", "select count(*) from api_requests")
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().splitlines() == ["count_star()", str(n + 1)]


def test_daemon_query_timeout_and_next_query(running_daemon: Daemon) -> None:
    slow = ctl("query", "--timeout", "0.5", "select count(*) from range(100000000000)")
    assert slow.returncode == 1
    # (the first query also starts the store worker, which its 0.5 s may count)
    assert b"ran longer than its 0.5 s" in slow.stderr or (
        b"did not finish within its 0.5 s" in slow.stderr
    )
    fast = ctl("query", "--format", "csv", "select 40 + 2 as answer")
    assert fast.stdout == b"answer\n42\n"


@pytest.mark.parametrize(
    "sql, message",
    [
        ("copy (select 1) to '/tmp/x.csv'", b"COPY statements are not allowed"),
        ("with x as (delete from events returning 1) select * from x", b"read-only mode"),
        ("select * from read_text('/etc/hostname')", b"read_text() is not allowed"),
        ("attach '/tmp/other.duckdb' as o", b"ATTACH statements are not allowed"),
        ("set threads = 8", b"SET statements are not allowed"),
    ],
)
def test_escapes_refused_through_the_daemon(
    running_daemon: Daemon, sql: str, message: bytes
) -> None:
    refused = ctl("query", sql)
    assert refused.returncode == 1 and message in refused.stderr
    assert ctl("query", "--format", "csv", "select 1 as one").stdout == b"one\n1\n"


def test_queries_while_eight_clients_ingest(running_daemon: Daemon) -> None:
    per_client = 400
    stop = threading.Event()
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            payload = b"".join(
                json.dumps({"type": "custom", "name": f"c{n}", "id": f"c{n}-{i}"}).encode() + b"\n"
                for i in range(per_client)
            )
            replies = exchange(running_daemon.events_socket, payload)
            assert replies[-1]["accepted"] == per_client
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    counts = []
    while any(t.is_alive() for t in threads) or not counts:
        result = ctl("query", "--format", "csv", "select count(*) from events")
        assert result.returncode == 0, result.stderr
        counts.append(int(result.stdout.decode().splitlines()[1]))
    for t in threads:
        t.join()
    stop.set()
    assert not errors
    assert counts == sorted(counts)  # never goes backwards
    final = ctl("query", "--format", "csv", "select count(distinct id) as n from events")
    assert final.stdout == f"n\n{8 * per_client}\n".encode()


def test_rebuild_gives_the_same_answers(running_daemon: Daemon) -> None:
    payload = b"".join(
        json.dumps(
            {
                "type": "api_request",
                "id": f"r{i}",
                "agent": {"model": f"m{i % 3}"},
                "tokens": {"source": "actual", "input": i, "output": 2 * i},
            }
        ).encode()
        + b"\n"
        for i in range(300)
    )
    exchange(running_daemon.events_socket, payload + payload)  # the repeats are duplicates
    sql = (
        "select model, sum(input_tokens), sum(output_tokens), count(*) from api_requests "
        "group by 1 order by 1"
    )
    before = ctl("query", "--format", "csv", sql)
    rebuilt = ctl("rebuild")
    assert rebuilt.returncode == 0 and rebuilt.stdout == b"rebuilt: 300 events (300 before)\n"
    after = ctl("query", "--format", "csv", sql)
    assert before.stdout == after.stdout
    assert after.stdout.decode().splitlines()[1:] == [
        f"m{k},{sum(range(k, 300, 3))},{2 * sum(range(k, 300, 3))},100" for k in range(3)
    ]


def test_query_path_stays_import_light(running_daemon: Daemon) -> None:
    """The query client must not pay for click, msgspec or duckdb while the daemon answers."""
    import subprocess
    import sys

    code = (
        "import sys; from telemetryd.client.main import main; "
        "rc = main(['query', '--format', 'csv', 'select 1']); "
        "heavy = ('click', 'msgspec', 'duckdb', 'anyio', 're'); "
        "heavy = sorted(m for m in heavy if m in sys.modules); "
        "sys.stderr.write(repr((rc, heavy)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.stderr.decode() == "(0, [])"


def test_a_query_cannot_fill_the_disk_with_spill_files(daemon_factory: Any) -> None:
    """Past the memory limit DuckDB spills to files beside the database, by default up
    to 90% of the disk's free space: one sort of a "read-only" query could fill the
    journal's disk. The store caps them (store.max-temp-bytes, and half the free space);
    past that the query fails with DuckDB's reason, and the next one runs."""
    daemon = daemon_factory(["--set", f"store.max-temp-bytes={64 * 2**20}"]).start()
    setting = ctl("query", "--format", "csv", "select current_setting('max_temp_directory_size')")
    assert setting.stdout.splitlines()[1] == b"64.0 MiB", setting.stderr
    big = "select count(*) from (select distinct repeat('x', 100) || range from range(5000000))"
    result = ctl("query", big, timeout=120)
    assert result.returncode == 1, result.stderr
    assert b"max_temp_directory_size" in result.stderr and b"max-temp-bytes" in result.stderr
    assert ctl("query", "--format", "csv", "select 41 + 1").stdout == b"(41 + 1)\n42\n"
    assert daemon.stop() == 0


def test_a_query_that_grows_the_process_past_its_cap_is_stopped(
    hardened: duckdb.DuckDBPyConnection,
) -> None:
    """DuckDB's memory limit covers its buffers, not a value a query computes: one
    repeat() of 300 MB (a gigabyte when the probe found it) grows the process past it.
    The query slots stop a query once the process's resident memory passes their cap,
    answer why, and the next query runs."""
    import anyio

    from telemetryd.store.queries import Queries, resident_bytes

    now = resident_bytes()
    assert now is not None  # (Linux: /proc/self/statm)

    def ask(queries: Queries, sql: str) -> dict[str, object]:
        replies: list[bytes] = []

        async def send(line: bytes) -> None:
            replies.append(line)

        async def open_cursor() -> tuple[duckdb.DuckDBPyConnection, None]:
            return hardened.cursor(), None

        request = wire.QueryRequest(sql=sql, timeout=60)
        anyio.run(queries.answer, request, send, open_cursor)
        last: dict[str, object] = msgspec.json.decode(replies[-1])
        return last

    capped = Queries(slots=2, memory_cap=now + 100 * 2**20)
    big = "select length(repeat('x', n)) from (select 300000000 + i as n from events limit 1)"
    last = ask(capped, big)
    assert last["error"] == wire.QUERY_FAILED, last
    assert "the store worker's memory reached" in str(last["message"])
    assert ask(capped, "select count(*) from events")["ok"] is True
    assert ask(Queries(slots=1), big)["ok"] is True  # (no cap: the same query answers)


def test_waiting_and_loading_count_against_the_querys_timeout(
    hardened: duckdb.DuckDBPyConnection,
) -> None:
    """A query's timeout bounds the whole answer: what the wait for a slot and the load
    before it took is not given again to the query (a probe saw 6 s queries answer after
    12.7 s, past the client's own deadline). The query keeps at least a tenth of it."""
    import time

    import anyio

    from telemetryd.store.queries import MIN_RUN_SHARE, Queries

    def ask(sql: str, load_s: float, timeout: float) -> tuple[dict[str, object], float]:
        replies: list[bytes] = []

        async def send(line: bytes) -> None:
            replies.append(line)

        async def open_cursor() -> tuple[duckdb.DuckDBPyConnection, None]:
            await anyio.sleep(load_s)  # (as a load before the query would take)
            return hardened.cursor(), None

        request = wire.QueryRequest(sql=sql, timeout=timeout)
        started = time.monotonic()
        anyio.run(Queries(slots=1).answer, request, send, open_cursor)
        last: dict[str, object] = msgspec.json.decode(replies[-1])
        return last, time.monotonic() - started

    last, took = ask("select sleep_ms(3000)", load_s=1.2, timeout=2.0)
    assert last["error"] == wire.QUERY_TIMEOUT
    assert str(last["message"]).startswith("the query did not finish within its 2 s (it ran")
    assert took < 2.0 + 1.0  # (the query ran about 0.8 s, not 2 s more)
    last, _ = ask("select sleep_ms(3000)", load_s=2.5, timeout=2.0)  # no time was left
    assert last["error"] == wire.QUERY_TIMEOUT
    assert f"it ran for {2.0 * MIN_RUN_SHARE:.2g} s" in str(last["message"])
    last, _ = ask("select 42", load_s=1.2, timeout=2.0)
    assert last["ok"] is True


def test_an_error_quotes_the_query_as_typed(hardened: duckdb.DuckDBPyConnection) -> None:
    """The plan check's EXPLAIN showed in DuckDB's quote of the statement (`LINE 1:
    EXPLAIN (FORMAT JSON) select ...`), a statement the user never typed."""
    with pytest.raises(query.QueryError) as caught:
        run(hardened, "select * from event")
    lines = str(caught.value).splitlines()
    assert "EXPLAIN" not in str(caught.value)
    quoted = next(i for i, line in enumerate(lines) if line.startswith("LINE 1:"))
    assert lines[quoted] == "LINE 1: select * from event"
    assert lines[quoted + 1].index("^") == lines[quoted].index("event")
