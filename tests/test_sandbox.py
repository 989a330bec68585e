"""The query sandbox under attack: every known escape, tried in-process on the store the
daemon opens, through the running daemon, and through the daemon-down client; plus
generated SQL that wraps writes in EXPLAIN, CTEs, subqueries and table functions.

The escape table grows with every finding: add a row, never a special case. Each row
must be refused, and no file under the state directory (journal, config, database)
may change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Daemon, ctl, exchange, summary
from telemetryd import config, paths
from telemetryd.store import sandbox
from telemetryd.store.database import Store
from telemetryd.store.service import open_store

SEGMENT = "20260301T100000Z-000001.jsonl"

# (name, SQL, what the refusal says). {journal}, {segment}, {config}, {home}, {load} are
# the victim's paths. Sources: the adversarial probe of issue 8, then each later finding.
ESCAPES: list[tuple[str, str, str]] = [
    # The probe of the core promises (session 26): binding these opened the file, and
    # DESCRIBE answered with its header.
    ("describe a file in the load directory", "describe '{load}/x.csv'", "names a file"),
    ("summarize a glob", "summarize '{load}/*.csv'", "names a file"),
    ("a file after a comma", "select * from events, '{load}/x.csv' t", "names a file"),
    ("a file as a quoted name", 'select * from "{load}/x.json"', "names a file"),
    ("a pivot of a file", "pivot '{load}/x.csv' on a using count(*)", "names a file"),
    ("a file in a subquery", "select (select count(*) from 'x.parquet')", "names a file"),
    (
        "explain analyze copy over a journal segment",
        "EXPLAIN ANALYZE COPY (SELECT 1) TO '{segment}' (FORMAT csv)",
        "COPY statements are not allowed",
    ),
    (
        "explain analyze copy replacing the whole journal",
        "explain analyze copy (select * from events) to '{journal}' "
        "(format json, partition_by (type), overwrite)",
        "COPY statements are not allowed",
    ),
    (
        "explain analyze copy over config.toml",
        "explain analyze copy (select 'allowed-uids = [0, 65534]' as line) to '{config}' "
        "(header false, quote '')",
        "COPY statements are not allowed",
    ),
    (
        "explain with options, comments and odd case",
        "ExPlAiN /* hi */ AnAlYzE (FORMAT JSON) -- there\n COPY (SELECT 1) TO '{segment}'",
        "COPY statements are not allowed",
    ),
    (
        "explain analyze copy of a pivot (a MULTI statement)",
        "explain analyze copy (pivot events on type using count(*)) to '{segment}'",
        "COPY statements are not allowed",
    ),
    (
        "copy of a pivot",
        "copy (pivot events on type using count(*)) to '{segment}'",
        "COPY statements are not allowed",
    ),
    ("checkpoint", "checkpoint", "checkpoint() is not allowed"),
    ("force checkpoint", "force checkpoint", "force_checkpoint() is not allowed"),
    ("call checkpoint", "call checkpoint()", "checkpoint() is not allowed"),
    ("checkpoint in from", "select * from checkpoint()", "checkpoint() is not allowed"),
    ("quoted checkpoint", 'select * from main."CheckPoint"()', "checkpoint() is not allowed"),
    (
        "checkpoint inside query()",
        "select * from query('select * from checkpoint()')",
        "query() is not allowed",
    ),
    ("enable logging to a file", "call enable_logging()", "enable_logging() is not allowed"),
    ("pragma enable_object_cache", "pragma enable_object_cache", "PRAGMA enable_object_cache"),
    ("pragma enable_profiling", "pragma enable_profiling", "PRAGMA enable_profiling"),
    (
        "pragma profiling output",
        "pragma profiling_output = '{config}'",
        "PRAGMA profiling_output is not allowed",
    ),
    ("pragma threads", "pragma threads = 64", "PRAGMA threads is not allowed"),
    ("update extensions", "update extensions", "UPDATE EXTENSIONS statements are not allowed"),
    ("install", "install httpfs", "INSTALL statements are not allowed"),
    ("load", "load json", "LOAD statements are not allowed"),
    ("set", "set threads = 8", "SET statements are not allowed"),
    ("reset", "reset threads", "RESET statements are not allowed"),
    ("attach", "attach '{home}/other.duckdb' as other", "ATTACH statements are not allowed"),
    ("export", "export database '{home}/exported'", "EXPORT statements are not allowed"),
    ("vacuum", "vacuum", "VACUUM statements are not allowed"),
    ("insert", "insert into meta values ('k', 'v')", "INSERT statements are not allowed"),
    (
        "explain analyze insert",
        "explain analyze insert into meta values ('k', 'v')",
        "INSERT statements are not allowed",
    ),
    ("delete in a CTE", "with x as (delete from meta returning 1) select * from x", "read-only"),
    ("drop", "drop table events", "DROP statements are not allowed"),
    ("read a journal file", "select * from read_text('{segment}')", "read_text() is not allowed"),
    (
        "read the load directory",
        "select * from read_json('{load}/*.jsonl')",
        "read_json() is not allowed",
    ),
    ("glob the home", "select * from glob('{home}/*')", "glob() is not allowed"),
    (  # stopped by the file access settings (layer 4): the journal is not readable to SQL
        "replacement scan of a journal file",
        "select * from '{segment}'",
        "names a file",  # (before session 26: DuckDB's "file system operations are disabled")
    ),
    ("two statements", "select 1; select 2", "one statement per query, got 2"),
    ("no statement", "  -- nothing\n", "one statement per query, got 0"),
]

# Reads that must keep working (the sandbox refuses writes, not questions).
READS: list[tuple[str, str]] = [
    ("select", "select count(*) from events"),
    ("a report macro", "select * from cost_by_model(days := 7)"),
    ("a view", "select count(*) from api_requests"),
    ("pivot", "pivot events on type using count(*)"),
    ("pivot in a subquery", "select * from (pivot events on type using count(*))"),
    ("describe", "describe events"),
    ("summarize", "summarize select type from events"),
    ("show tables", "show tables"),
    ("pragma table_info", "pragma table_info('events')"),
    ("call pragma_table_info", "call pragma_table_info('events')"),
    ("explain", "explain select * from events"),
    ("explain analyze", "explain analyze select count(*) from events"),
    ("explain analyze a pivot", "explain analyze pivot events on type using count(*)"),
    ("metadata", "select count(*) from duckdb_tables()"),
    (
        "recursive cte",
        "with recursive r(n) as (select 1 union all select n + 1 from r "
        "where n < 3) select sum(n) from r",
    ),
    ("range", "select sum(range) from range(10)"),
    ("version", "select version()"),
]


def victim_paths(home: Path) -> dict[str, str]:
    return {
        "home": str(home),
        "journal": str(home / "journal"),
        "segment": str(home / "journal" / SEGMENT),
        "config": str(home / "config.toml"),
        "load": str(home / "load"),
    }


def snapshot(home: Path) -> dict[str, tuple[int, str]]:
    """Size and hash of every file under ``home`` but the daemon's sockets and log."""
    out = {}
    for path in sorted(home.rglob("*")):
        relative = str(path.relative_to(home))
        if path.is_dir() or path.is_socket() or relative in ("daemon.log", "notify.sock"):
            continue
        out[relative] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def fill(home: Path, count: int = 20) -> None:
    """A journal segment and a config file: what an escape would want to overwrite."""
    (home / "journal").mkdir(mode=0o700, exist_ok=True)
    lines = [
        {
            "v": 1,
            "id": f"ev-{n}",
            "ts": "2026-03-01T10:00:00.000Z",
            "received_at": "2026-03-01T10:00:00.000Z",
            "type": "api_request",
            "agent": {"model": "claude-sonnet-4-5"},
            "tokens": {"source": "actual", "input": 10, "output": 5},
        }
        for n in range(count)
    ]
    (home / "journal" / SEGMENT).write_text("".join(json.dumps(e) + "\n" for e in lines))
    (home / "config.toml").write_text("[ingest]\nallowed-uids = []\n")


@pytest.fixture
def store(state_home: Path) -> Iterator[Store]:
    """The store exactly as the daemon opens it (same hardening, same allowed directory)."""
    fill(state_home)
    opened = open_store(paths.resolve(), config.Store())
    opened.materialize(str(state_home / "journal"))
    yield opened
    opened.close()


def run(store: Store, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    query = sandbox.Query(store.cursor())
    try:
        query.run(sql, params)
        return [row for batch in query.batches() for row in batch]
    finally:
        query.close()


@pytest.mark.parametrize("name, sql, message", ESCAPES, ids=[e[0] for e in ESCAPES])
def test_escape_is_refused_in_process(
    store: Store, state_home: Path, name: str, sql: str, message: str
) -> None:
    before = snapshot(state_home)
    with pytest.raises(sandbox.QueryError) as refused:
        run(store, sql.format(**victim_paths(state_home)))
    assert message in str(refused.value)
    assert snapshot(state_home) == before
    assert run(store, "select count(*) from events") == [(20,)]


@pytest.mark.parametrize("name, sql", READS, ids=[r[0] for r in READS])
def test_reads_still_work(store: Store, name: str, sql: str) -> None:
    assert run(store, sql) is not None


def test_every_view_passes_the_plan_check(store: Store) -> None:
    with store.cursor() as con:
        views = [
            name
            for (name,) in con.execute(
                "select view_name from duckdb_views() where not internal order by 1"
            ).fetchall()
        ]
    assert len(views) >= 5
    for view in views:
        run(store, f'select * from "{view}" limit 1')


def test_every_report_macro_passes_the_plan_check(store: Store) -> None:
    """Each of our table macros (sql/macros.sql) runs as a query; a parameter without a
    default is given NULL."""
    with store.cursor() as con:
        macros = con.execute(
            "select function_name, parameters from duckdb_functions() "
            "where function_type = 'table_macro' and not internal order by 1"
        ).fetchall()
    assert {"cost_by_model", "model_quality", "tool_reliability"} <= {m for m, _ in macros}
    required = {"trace": ["trace_id"], "ab_results": ["experiment_id"]}
    for name, _ in macros:
        args = ", ".join("NULL" for _ in required.get(name, []))
        run(store, f'select * from "{name}"({args}) limit 1')


def test_every_builtin_table_function_is_classified() -> None:
    """A DuckDB upgrade adds table functions: the list of built-ins must then be updated
    (each new one is refused until someone reads what it does and lists it as a read).
    The allow-list names only functions that exist."""
    import duckdb

    with duckdb.connect() as con:
        builtin = {
            name
            for (name,) in con.execute(
                "select function_name from duckdb_functions() "
                "where internal and function_type in ('table', 'table_macro')"
            ).fetchall()
        }
    assert builtin == sandbox.TABLE_FUNCTIONS, (
        f"new: {sorted(builtin - sandbox.TABLE_FUNCTIONS)}, "
        f"gone: {sorted(sandbox.TABLE_FUNCTIONS - builtin)}"
    )
    assert builtin >= sandbox.READ_TABLE_FUNCTIONS
    for writer in ("checkpoint", "force_checkpoint", "enable_logging", "query", "read_text"):
        assert writer in sandbox.REFUSED_TABLE_FUNCTIONS


def test_a_table_function_missing_from_the_lists_is_refused_by_the_plan_check(
    store: Store,
) -> None:
    """Layer 2 allows only READ_TABLE_FUNCTIONS: a function the static list does not know
    (as after a DuckDB upgrade) still cannot run."""
    with store.cursor() as con:
        with pytest.raises(sandbox.QueryError, match=r"checkpoint\(\) is not allowed"):
            sandbox.check_plan(con, "select * from checkpoint()")
        sandbox.check_plan(con, "select * from range(3)")


def test_every_escape_through_the_daemon_and_without_it(daemon_factory: Any) -> None:
    """The same table, answered by the running daemon, then by the client reading the
    file itself while the daemon is down. Files stay as they were; the daemon keeps
    acknowledging into the segment it writes."""
    daemon: Daemon = daemon_factory()
    home = daemon.home
    (home / "config.toml").write_text("[ingest]\nallowed-uids = []\n")
    daemon.start()
    payload = b"".join(
        json.dumps({"type": "custom", "name": "n", "id": f"c{n}"}).encode() + b"\n"
        for n in range(10)
    )
    assert exchange(daemon.events_socket, payload) == [summary(10, 10)]
    segment = next((home / "journal").glob("*.jsonl"))
    targets = victim_paths(home) | {"segment": str(segment)}
    assert ctl("query", "select 1").returncode == 0  # the events are in the database now
    before = snapshot(home)
    for name, sql, message in ESCAPES:
        refused = ctl("query", sql.format(**targets))
        assert refused.returncode == 1, (name, refused.stdout)
        assert message.encode() in refused.stderr, (name, refused.stderr)
        assert b"Traceback" not in refused.stderr
    assert snapshot(home) == before
    after = ctl("query", "--format", "csv", "select count(*) as n from events")
    assert after.stdout == b"n\n10\n"
    assert exchange(daemon.events_socket, b'{"type":"custom","name":"later"}\n') == [summary(1, 1)]
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()

    before = snapshot(home)
    for name, sql, message in ESCAPES:
        refused = ctl("query", sql.format(**targets))
        assert refused.returncode == 1, (name, refused.stdout)
        assert message.encode() in refused.stderr, (name, refused.stderr)
        assert b"Traceback" not in refused.stderr
    assert snapshot(home) == before
    daemon.start()
    assert ctl("query", "--format", "csv", "select count(*) as n from events").stdout == (
        b"n\n11\n"
    )
    assert daemon.stop() == 0


# -- generated SQL ------------------------------------------------------------------------

WRITES = [
    "COPY (SELECT 1) TO '{segment}'",
    "COPY events TO '{journal}' (FORMAT json, PARTITION_BY (type), OVERWRITE)",
    "COPY (SELECT 'x') TO '{config}' (HEADER false)",
    "EXPORT DATABASE '{home}/x'",
    "INSERT INTO meta VALUES ('a', 'b')",
    "DELETE FROM events",
    "UPDATE meta SET value = 'x'",
    "CREATE TABLE t AS SELECT 1",
    "DROP TABLE events",
    "ATTACH '{home}/a.duckdb' AS a",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "CALL checkpoint()",
    "CALL enable_logging()",
    "PRAGMA enable_profiling",
    "PRAGMA profiling_output = '{config}'",
    "SET threads = 3",
    "INSTALL json",
    "LOAD json",
    "VACUUM",
]
SOURCES = [
    "checkpoint()",
    "force_checkpoint()",
    "query('COPY (SELECT 1) TO ''{segment}''')",
    "query('SELECT * FROM checkpoint()')",
    "read_text('{segment}')",
    "read_json('{journal}/*.jsonl')",
    "glob('{home}/*')",
    "'{segment}'",
    "enable_logging()",
    '"checkpoint"()',
    "main.checkpoint()",
]
WRAPPERS = [
    "{}",
    "EXPLAIN {}",
    "EXPLAIN ANALYZE {}",
    "explain analyze (format json) {}",
    "EXPLAIN /* c */ ANALYZE {}",
    "WITH x AS ({}) SELECT * FROM x",
    "SELECT * FROM ({})",
    "SELECT (SELECT count(*) FROM ({}))",
    "{};",
    "-- c\n{}",
]


def _case(text: str, upper: bool) -> str:
    return text.upper() if upper else text.lower()


sql_attacks = st.one_of(
    st.builds(
        lambda wrap, write: wrap.format(write),
        st.sampled_from(WRAPPERS),
        st.sampled_from(WRITES),
    ),
    st.builds(
        lambda wrap, source: wrap.format(f"SELECT * FROM {source}"),
        st.sampled_from(WRAPPERS),
        st.sampled_from(SOURCES),
    ),
    st.builds(
        lambda wrap, write, upper: _case(wrap, upper).format(write),
        st.sampled_from(WRAPPERS),
        st.sampled_from(WRITES),
        st.booleans(),
    ),
)


@pytest.mark.properties
@given(sql=sql_attacks)
def test_generated_sql_never_changes_a_file(sql: str, state_home: Path) -> None:
    """Whatever the wrapping, a write is refused (or fails) and no file changes."""
    home = state_home
    if not (home / "journal" / SEGMENT).exists():
        fill(home)
    store = open_store(paths.resolve(), config.Store())
    try:
        store.materialize(str(home / "journal"))
        before = snapshot(home)
        text = sql.format(**victim_paths(home))
        with contextlib.suppress(sandbox.QueryError):
            run(store, text)
        assert snapshot(home) == before, text
        assert run(store, "select count(*) from events") == [(20,)]
    finally:
        store.close()


def test_a_checked_statement_is_not_checked_again_with_the_same_values(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    classified: list[str] = []
    planned: list[str] = []
    real_classify, real_check_plan = sandbox.classify, sandbox.check_plan

    def classify(sql: str, con: Any) -> sandbox.Statement:
        classified.append(sql)
        return real_classify(sql, con)

    def check_plan(cursor: Any, sql: str, params: Any = None) -> None:
        planned.append(sql)
        real_check_plan(cursor, sql, params)

    monkeypatch.setattr(sandbox, "classify", classify)
    monkeypatch.setattr(sandbox, "check_plan", check_plan)
    sql = "SELECT count(*) FROM events WHERE type = $t /* checked once */"
    for _ in range(3):
        assert run(store, sql, {"t": "api_request"}) == [(20,)]  # fill()'s requests
    assert (len(classified), len(planned)) == (1, 1)
    # Other values, and other statements, are checked again.
    assert run(store, sql, {"t": "error"}) == [(0,)]
    assert run(store, sql + " ", {"t": "api_request"}) == [(20,)]
    assert (len(classified), len(planned)) == (3, 3)
    # A refused statement is refused every time: it is never remembered.
    for _ in range(2):
        with pytest.raises(sandbox.QueryError, match="not allowed"):
            run(store, "COPY events TO 'x.csv' /* refused */")
    assert classified.count("COPY events TO 'x.csv' /* refused */") == 2
    # Only the last CHECKED_MAX statements are remembered.
    monkeypatch.setattr(sandbox, "CHECKED_MAX", 2)
    for n in range(3):
        run(store, f"SELECT {n} /* evicts */")
    run(store, "SELECT 0 /* evicts */")
    assert classified.count("SELECT 0 /* evicts */") == 2
    run(store, "SELECT 2 /* evicts */")
    assert classified.count("SELECT 2 /* evicts */") == 1
