"""Read-only, sandboxed SQL over the telemetry database.

Used by the daemon (which owns the read-write connection and answers
`telemetryctl query` on its control socket) and by the client when the daemon
is stopped (it then opens the file read-only itself). One sandbox for both, in
layers, each of which would stop a write on its own:

1. :func:`classify` reads the statement before DuckDB runs anything: exactly one
   statement, of a reading type (SELECT, a PIVOT, CALL of a reading table
   function, a reading PRAGMA, or EXPLAIN of one of these: the statement inside
   an EXPLAIN is classified like any other, since ``EXPLAIN ANALYZE`` runs it),
   and no call of a built-in table function that is not known to only read
   (``checkpoint()``, ``query('...')``, ``read_text(...)``, ...), nor a table named
   like a file (``FROM 'x.csv'``, ``DESCRIBE 'dir/*.json'``: DuckDB would read it, and
   binding the statement, which layer 2 does, already opens it).
2. The plan: before running it, :class:`Query` asks DuckDB for the physical plan
   of the statement (``EXPLAIN (FORMAT JSON)``, which binds and plans but runs
   nothing) and refuses any operator that is not a read and any table function
   outside :data:`READ_TABLE_FUNCTIONS`. This sees through views, macros and
   the SQL text given to ``query()``.
3. The statement runs inside ``BEGIN TRANSACTION READ ONLY``.
4. :func:`harden` configures the database once, then locks the configuration:
   no file system access except ``allowed_dirs`` (the daemon's private load
   directory of transient copies, never the journal, the config or the spool;
   nothing at all for the client), no extension installs or autoloads, no
   Python replacement scans, memory and thread limits.

:class:`Query` can be interrupted from another thread: DuckDB has no timeout
setting, so the caller's timer calls :meth:`Query.interrupt`.

A statement that passed layers 1 and 2 is remembered with its parameters' values (the
last :data:`CHECKED_MAX` of them, in this process) and runs again without asking them
again: the same text with the same values binds to the same plan, since the views and
macros it may read are the store's own, which no query can change. Layers 3 and 4
apply to every run. (A report or a status bar asks the same query again and again;
checking it costs it a parse and a second planning, ~8 ms of a ~40 ms report.)

tests/test_sandbox.py holds a table of escapes, each tried through every layer
and both sides; a new finding adds a row there.

Only the store package (this module among it) imports duckdb.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb

from telemetryd.errors import TelemetryError

ALLOWED_STATEMENTS = frozenset({"SELECT", "EXPLAIN", "CALL", "PRAGMA", "MULTI"})
BATCH_ROWS = 2048
CHECKED_MAX = 128  # statements (with their parameters' values) remembered as checked

# PRAGMAs that only read (each is a table function underneath); every other PRAGMA
# changes a setting or the database.
READ_PRAGMAS = frozenset(
    {
        "collations",
        "database_list",
        "database_size",
        "functions",
        "metadata_info",
        "platform",
        "show",
        "show_databases",
        "show_tables",
        "show_tables_expanded",
        "storage_info",
        "table_info",
        "user_agent",
        "version",
    }
)

# Built-in table functions (and table macros) that only read the database or compute
# rows. Every other built-in one is refused: writers (checkpoint, enable_logging, ...),
# file readers (read_csv, read_text, glob, ...: queries read the database, not files),
# and query()/query_table-like indirections whose SQL is a string. A DuckDB upgrade
# that adds a table function leaves it refused until it is listed here.
READ_TABLE_FUNCTIONS = frozenset(
    {
        "duckdb_columns",
        "duckdb_constraints",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_functions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_memory",
        "duckdb_optimizers",
        "duckdb_schemas",
        "duckdb_sequences",
        "duckdb_settings",
        "duckdb_tables",
        "duckdb_temporary_files",
        "duckdb_types",
        "duckdb_variables",
        "duckdb_views",
        "generate_series",
        "histogram",
        "histogram_values",
        "json_each",
        "json_tree",
        "pg_timezone_names",
        "icu_calendar_names",
        "pragma_collations",
        "pragma_database_size",
        "pragma_metadata_info",
        "pragma_platform",
        "pragma_show",
        "pragma_storage_info",
        "pragma_table_info",
        "pragma_user_agent",
        "pragma_version",
        "range",
        "repeat",
        "repeat_row",
        "summary",
        "test_all_types",
        "unnest",
    }
)

# Every built-in table function and table macro of the DuckDB this was written for
# (``duckdb_functions()``: internal, of type table or table_macro; asking DuckDB at each
# start costs ~50 ms, a third of the store worker's cold start). A test holds it to the
# installed DuckDB: after an upgrade it names what to classify. A function missing here
# is still refused by the plan check, which allows READ_TABLE_FUNCTIONS only.
TABLE_FUNCTIONS = frozenset(
    {
        "add_grammar_extension",
        "arrow_scan",
        "arrow_scan_dumb",
        "checkpoint",
        "create_external_resource",
        "deregister_external_resource",
        "destroy_external_resource",
        "disable_logging",
        "disable_profiling",
        "duckdb_approx_database_count",
        "duckdb_available_metrics",
        "duckdb_columns",
        "duckdb_connection_count",
        "duckdb_constraints",
        "duckdb_coordinate_systems",
        "duckdb_databases",
        "duckdb_dependencies",
        "duckdb_dialects",
        "duckdb_eviction_queues",
        "duckdb_extension_repositories",
        "duckdb_extensions",
        "duckdb_external_file_cache",
        "duckdb_external_resource_types",
        "duckdb_external_resources",
        "duckdb_functions",
        "duckdb_grammar_extensions",
        "duckdb_indexes",
        "duckdb_keywords",
        "duckdb_live_query_metrics",
        "duckdb_log_contexts",
        "duckdb_logs",
        "duckdb_logs_parsed",
        "duckdb_memory",
        "duckdb_optimizers",
        "duckdb_prepared_statements",
        "duckdb_profiling_settings",
        "duckdb_schemas",
        "duckdb_secret_type_parameters",
        "duckdb_secret_types",
        "duckdb_secrets",
        "duckdb_sequences",
        "duckdb_settings",
        "duckdb_table_sample",
        "duckdb_tables",
        "duckdb_temporary_files",
        "duckdb_triggers",
        "duckdb_types",
        "duckdb_variables",
        "duckdb_views",
        "enable_logging",
        "enable_profiling",
        "force_checkpoint",
        "generate_series",
        "glob",
        "histogram",
        "histogram_values",
        "icu_calendar_names",
        "json_each",
        "json_execute_serialized_sql",
        "json_tree",
        "pandas_scan",
        "parquet_bloom_probe",
        "parquet_file_metadata",
        "parquet_full_metadata",
        "parquet_kv_metadata",
        "parquet_metadata",
        "parquet_page_index",
        "parquet_scan",
        "parquet_schema",
        "pg_timezone_names",
        "pragma_collations",
        "pragma_database_size",
        "pragma_metadata_info",
        "pragma_platform",
        "pragma_show",
        "pragma_storage_info",
        "pragma_table_info",
        "pragma_user_agent",
        "pragma_version",
        "python_arrow_scan",
        "python_map_function",
        "query",
        "query_table",
        "range",
        "read_blob",
        "read_csv",
        "read_csv_auto",
        "read_duckdb",
        "read_json",
        "read_json_auto",
        "read_json_objects",
        "read_json_objects_auto",
        "read_ndjson",
        "read_ndjson_auto",
        "read_ndjson_objects",
        "read_parquet",
        "read_single_csv_file",
        "read_single_json_file",
        "read_single_parquet_file",
        "read_text",
        "register_external_resource",
        "register_external_resource_type",
        "remove_grammar_extension",
        "repeat",
        "repeat_row",
        "seq_scan",
        "sniff_csv",
        "summary",
        "test_all_types",
        "test_vector_types",
        "truncate_duckdb_logs",
        "unnest",
        "which_secret",
    }
)
REFUSED_TABLE_FUNCTIONS = TABLE_FUNCTIONS - READ_TABLE_FUNCTIONS

# Physical operators that read and compute (DuckDB's PhysicalOperatorType names, as
# EXPLAIN prints them). A table function appears under its own name, with its name
# again under "Function"; those are checked against READ_TABLE_FUNCTIONS instead.
READ_OPERATORS = frozenset(
    {
        "ASOF_JOIN",
        "BLOCKWISE_NL_JOIN",
        "CHUNK_SCAN",
        "COLUMN_DATA_SCAN",
        "CROSS_PRODUCT",
        "CTE",
        "CTE_SCAN",
        "DELIM_SCAN",
        "DUMMY_SCAN",
        "EMPTY_RESULT",
        "EXPRESSION_SCAN",
        "FILTER",
        "HASH_GROUP_BY",
        "HASH_JOIN",
        "IE_JOIN",
        "LEFT_DELIM_JOIN",
        "LIMIT",
        "LIMIT_PERCENT",
        "NESTED_LOOP_JOIN",
        "ORDER_BY",
        "PARTITIONED_AGGREGATE",
        "PERFECT_HASH_GROUP_BY",
        "PIECEWISE_MERGE_JOIN",
        "PIVOT",
        "POSITIONAL_JOIN",
        "POSITIONAL_SCAN",
        "PROJECTION",
        "REC_CTE",
        "REC_CTE_SCAN",
        "REC_KEY_CTE",
        "REC_REC_CTE_SCAN",
        "RESERVOIR_SAMPLE",
        "RIGHT_DELIM_JOIN",
        "SEQ_SCAN",
        "STREAMING_LIMIT",
        "STREAMING_SAMPLE",
        "STREAMING_WINDOW",
        "TOP_N",
        "UNGROUPED_AGGREGATE",
        "UNION",
        "UNNEST",
        "WINDOW",
    }
)

_READ_ONLY = "queries are read-only"
# How a reading statement that holds a PIVOT may begin.
_MULTI_READS = frozenset({"from", "pivot", "select", "unpivot", "values", "with"})


class QueryError(TelemetryError):
    """A query failed or was refused; the message is DuckDB's own where it has one."""


class QueryInterrupted(QueryError):
    """The query was stopped (its timeout ran out)."""


def harden(
    con: duckdb.DuckDBPyConnection,
    *,
    allowed_dirs: list[str],
    memory_limit: str = "1GB",
    threads: int = 2,
    max_temp_bytes: int = 4 * 2**30,
) -> None:
    """Restrict what SQL on ``con``'s database may do, for good (the settings are locked).
    Spill files get ``max_temp_bytes`` at most, and half the free space of their disk
    (DuckDB's own default is 90% of it: one sort could fill the journal's disk)."""
    settings = [
        ("max_temp_directory_size", f"{_temp_cap(con, max_temp_bytes)}B"),
        ("allowed_directories", list(allowed_dirs)),
        ("enable_external_access", False),
        ("autoinstall_known_extensions", False),
        ("autoload_known_extensions", False),
        ("python_enable_replacements", False),
        ("memory_limit", memory_limit),
        # Buffer blocks come from memory kept for them, up to the limit: by default,
        # evicting a block at the limit hands freed memory back to the system, to be
        # faulted in again for the next block (17% of the CPU of a Parquet export of 10M
        # events, docs/export.md). Kept memory is touched only as blocks are used.
        ("block_allocator_memory", memory_limit),
        ("threads", threads),
    ]
    for name, value in settings:
        # GLOBAL: every cursor made later must inherit it (some default per session).
        con.execute(f"SET GLOBAL {name} = ?", [value])
    con.execute("SET GLOBAL lock_configuration = true")


def _temp_cap(con: duckdb.DuckDBPyConnection, most: int) -> int:
    """``most``, or half the free space of the temp directory's disk when that is less
    (at least 64 MiB: loads spill too)."""
    row = con.execute("SELECT current_setting('temp_directory')").fetchone()
    where = os.path.abspath(str(row[0]) if row and row[0] else ".")
    while not os.path.exists(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)  # (made when something first spills)
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return most
    return max(64 * 2**20, min(most, free // 2))


# -- layer 1: the statement text ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement that passed :func:`classify`: its type, and the SQL whose plan
    :class:`Query` checks before running it (None: nothing to plan, a read PRAGMA)."""

    kind: str
    plan: str | None


def classify(sql: str, con: duckdb.DuckDBPyConnection) -> Statement:
    """Refuse anything but one read statement, naming what was found. ``con`` parses it
    (and runs nothing): the module-level ``duckdb.extract_statements`` would first open
    DuckDB's default in-memory database, ~15 ms and a few MB in a process that has just
    started, as the store worker has for the first query it answers."""
    try:
        statements = con.extract_statements(sql)
        kinds = [str(statement.type).rpartition(".")[2] for statement in statements]
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    except ValueError:  # a statement type the Python API has no name for (UPDATE EXTENSIONS)
        raise _refused(_leading_words(sql)) from None
    if len(kinds) != 1:
        raise QueryError(f"one statement per query, got {len(kinds)}")
    kind = kinds[0]
    tokens = _Tokens(sql)
    if kind not in ALLOWED_STATEMENTS:
        if tokens.word(0) == "pragma":  # a PRAGMA that sets something parses as SET
            _check_pragma(tokens)
        # Named as written: INSTALL parses as a LOAD statement.
        raise _refused(tokens.word(0).upper() if tokens.word(0).isalpha() else kind)
    _check_calls(tokens)
    _check_file_names(sql, tokens, con)
    if kind == "MULTI":
        # What DuckDB makes of a statement holding a PIVOT (it first reads the pivot's
        # values): EXPLAIN of such a statement, or a reading statement around it.
        first = tokens.word(0)
        if first != "explain" and first not in _MULTI_READS and not tokens.is_operator(0, "("):
            raise _refused(first.upper() or "these")
    if kind == "EXPLAIN" or tokens.word(0) == "explain":
        inner = classify(_explained(tokens), con)
        if inner.kind == "EXPLAIN":
            raise QueryError("EXPLAIN of an EXPLAIN is not allowed")
        return Statement(kind, inner.plan)
    if kind == "PRAGMA":
        _check_pragma(tokens)
        return Statement(kind, None)
    return Statement(kind, sql)


def _refused(what: str) -> QueryError:
    return QueryError(
        f"{what} statements are not allowed: {_READ_ONLY} "
        "(SELECT, PIVOT, EXPLAIN, CALL of a table function that reads, a PRAGMA that reads)"
    )


class _Tokens:
    """The tokens of a SQL text (DuckDB's own tokenizer), comments left out."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        tokens = duckdb.tokenize(sql)
        ends = [start for start, _ in tokens[1:]] + [len(sql)]
        self.items = [
            (start, end, kind)
            for (start, kind), end in zip(tokens, ends, strict=True)
            if kind != duckdb.token_type.comment
        ]

    def __len__(self) -> int:
        return len(self.items)

    def text(self, index: int) -> str:
        start, end, _ = self.items[index]
        return self.sql[start:end].strip()

    def kind(self, index: int) -> Any:
        return self.items[index][2]

    def start(self, index: int) -> int:
        return self.items[index][0]

    def word(self, index: int) -> str:
        """The token as a name: unquoted, lower case ("" for operators and constants)."""
        if index >= len(self) or self.kind(index) not in (
            duckdb.token_type.identifier,
            duckdb.token_type.keyword,
        ):
            return ""
        text = self.text(index)
        if text.startswith('"') and text.endswith('"') and len(text) >= 2:
            text = text[1:-1].replace('""', '"')
        return text.lower()

    def is_operator(self, index: int, prefix: str) -> bool:
        return (
            index < len(self)
            and self.kind(index) == duckdb.token_type.operator
            and self.text(index).startswith(prefix)
        )


def _leading_words(sql: str) -> str:
    tokens = _Tokens(sql)
    words = []
    for index in range(min(len(tokens), 2)):
        word = tokens.word(index)
        if not word:
            break
        words.append(word.upper())
    return " ".join(words) or "these"


def _check_calls(tokens: _Tokens) -> None:
    """Refuse a call of a built-in table function that is not a known read."""
    refused = _refused_functions()
    for index in range(len(tokens) - 1):
        name = tokens.word(index)
        if name in refused and tokens.is_operator(index + 1, "("):
            raise QueryError(f"{name}() is not allowed in a query: {_READ_ONLY}")


# A table named with one of these is a file to DuckDB's replacement scans (a path, an
# extension, a glob); the store's tables, views and a query's CTEs have plain names.
_FILE_CHARACTERS = frozenset("./\\*?")
# What may name a table directly after it (the parser's tree covers the rest).
_TABLE_WORDS = frozenset({"from", "join", "describe", "summarize", "pivot", "unpivot"})


def _check_file_names(sql: str, tokens: _Tokens, con: duckdb.DuckDBPyConnection) -> None:
    """Refuse a table reference that names a file, before anything binds it: from the
    parser's tree (``json_serialize_sql``, which runs nothing), or where the parser
    cannot serialize the statement (PIVOT, ...), the name written right after FROM,
    JOIN, DESCRIBE, SUMMARIZE or PIVOT."""
    names: list[str] = []
    try:
        [(text,)] = con.execute("SELECT json_serialize_sql($sql)", {"sql": sql}).fetchall()
        tree = json.loads(text)
    except (duckdb.Error, ValueError):
        tree = {"error": True}
    if not tree.get("error"):
        for node in _walk_tree(tree):
            if node.get("type") == "BASE_TABLE" and not node.get("schema_name"):
                names.append(str(node.get("table_name", "")))
    else:
        for index in range(1, len(tokens)):
            if tokens.word(index - 1) in _TABLE_WORDS:
                name = tokens.text(index)
                if tokens.kind(index) == duckdb.token_type.string_const or name.startswith('"'):
                    names.append(name[1:-1])
    for name in names:
        if _FILE_CHARACTERS.intersection(name):
            raise QueryError(f"{name!r} names a file as a table: a query may open no file")


def _walk_tree(tree: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``tree`` (without recursion: a tree may be deep)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _explained(tokens: _Tokens) -> str:
    """The statement inside ``EXPLAIN [ANALYZE] [(options)] [ANALYZE] <statement>``."""
    index = 1  # past EXPLAIN
    if tokens.word(index) == "analyze":
        index += 1
    if tokens.is_operator(index, "("):
        depth = 0
        while index < len(tokens):
            text = tokens.text(index) if tokens.kind(index) == duckdb.token_type.operator else ""
            depth += text.count("(") - text.count(")")
            index += 1
            if depth <= 0:
                break
    if tokens.word(index) == "analyze":
        index += 1
    if index >= len(tokens):
        raise QueryError("EXPLAIN of what? No statement follows it")
    return tokens.sql[tokens.start(index) :]


def _check_pragma(tokens: _Tokens) -> None:
    name = tokens.word(1)
    if name not in READ_PRAGMAS or tokens.is_operator(2, "="):
        raise QueryError(
            f"PRAGMA {name or '?'} is not allowed: {_READ_ONLY} "
            f"(PRAGMAs that read: {', '.join(sorted(READ_PRAGMAS))})"
        )


def _refused_functions() -> frozenset[str]:
    """The built-in table functions and table macros that are not known to only read."""
    return REFUSED_TABLE_FUNCTIONS


# -- layer 2: the plan --------------------------------------------------------------


_PLAN = "EXPLAIN (FORMAT JSON) "


def check_plan(cursor: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> None:
    """Refuse ``sql`` if its physical plan holds anything but reads (runs nothing).
    DuckDB's errors (a typo, say) are the query's: they show its text, not the EXPLAIN
    that planned it."""
    try:
        rows = cursor.execute(_PLAN + sql, params).fetchall()
    except duckdb.Error as exc:
        raise type(exc)(_as_typed(str(exc))) from None
    for _, text in rows:
        for node in _walk(json.loads(text)):
            name = str(node.get("name", "")).strip()
            info = node.get("extra_info")
            function = info.get("Function") if isinstance(info, dict) else None
            if isinstance(function, str):
                if function.lower() not in READ_TABLE_FUNCTIONS:
                    raise QueryError(
                        f"{function.lower()}() is not allowed in a query: {_READ_ONLY}"
                    )
            elif name not in READ_OPERATORS:
                raise QueryError(f"the plan has a {name} operator: {_READ_ONLY}")


def _as_typed(message: str) -> str:
    """DuckDB's ``message`` about the planned statement, its ``LINE n:`` quote (and the
    caret line under it) without the EXPLAIN the user did not type."""
    lines = message.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("LINE ") and _PLAN in line:
            lines[i] = line.replace(_PLAN, "", 1)
            caret = lines[i + 1] if i + 1 < len(lines) else ""
            if caret.startswith(" " * (len(_PLAN) + len("LINE 1: "))) and caret.strip():
                lines[i + 1] = caret[len(_PLAN) :]
    return "\n".join(lines)


def _walk(nodes: Any) -> Iterator[dict[str, Any]]:
    stack = list(nodes) if isinstance(nodes, list) else [nodes]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            children = node.get("children")
            if isinstance(children, list):
                stack.extend(children)


# -- running a query ----------------------------------------------------------------


class Query:
    """One query on its own cursor, in a read-only transaction.

    Give it a cursor of its own (``con.cursor()``), which it closes; then
    :meth:`run` it (blocking). :meth:`interrupt` may be called from another
    thread at any time, before or during the run.
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor: duckdb.DuckDBPyConnection | None = cursor
        self._lock = threading.Lock()
        self.interrupted = False

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
        """Check and execute ``sql``; return ``(name, type)`` of each result column."""
        cursor = self._live()
        bound = dict(params) if params else None
        key = _checked_key(sql, bound)
        checked = key is not None and _checked.get(key)
        statement = classify(sql, cursor) if not checked else None
        try:
            cursor.execute("BEGIN TRANSACTION READ ONLY")
            if statement is not None:
                if statement.plan is not None:
                    check_plan(cursor, statement.plan, bound)
                if key is not None:
                    _checked.add(key)
            cursor.execute(sql, bound)
        except duckdb.Error as exc:
            raise self._error(exc) from None
        self._live()  # interrupted before the statement began: do not return its result
        return [(str(d[0]), str(d[1])) for d in cursor.description or []]

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[list[tuple[Any, ...]]]:
        """The result, ``rows`` at a time (never all of it in memory at once)."""
        while True:
            try:
                batch = self._live().fetchmany(rows)
            except duckdb.Error as exc:
                raise self._error(exc) from None
            if not batch:
                return
            yield batch

    def interrupt(self) -> None:
        """Stop the query (the timeout); the connection stays usable."""
        with self._lock:
            self.interrupted = True
            if self._cursor is not None:
                self._cursor.interrupt()

    def close(self) -> None:
        with self._lock:
            cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with contextlib.suppress(duckdb.Error):  # it may have ended with an error
                cursor.execute("ROLLBACK")
            cursor.close()

    def _live(self) -> duckdb.DuckDBPyConnection:
        if self.interrupted or self._cursor is None:
            raise QueryInterrupted("the query was interrupted")
        return self._cursor

    def _error(self, exc: duckdb.Error) -> QueryError:
        if self.interrupted:
            return QueryInterrupted("the query was interrupted")
        message = str(exc)
        if "max_temp_directory_size" in message:  # (its advice, a PRAGMA, is locked here)
            message = (
                "the query needs more disk for its spill files than telemetryd allows "
                "([store] max-temp-bytes, at most half the disk's free space): " + message
            )
        return QueryError(message)


class _Checked:
    """The keys of the last CHECKED_MAX statements that passed both checks."""

    def __init__(self) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bool:
        with self._lock:
            if key not in self._keys:
                return False
            self._keys.move_to_end(key)
            return True

    def add(self, key: str) -> None:
        with self._lock:
            self._keys[key] = None
            self._keys.move_to_end(key)
            while len(self._keys) > CHECKED_MAX:
                self._keys.popitem(last=False)


_checked = _Checked()


def _checked_key(sql: str, params: dict[str, Any] | None) -> str | None:
    """The text and the parameters' values, as one key (None: values that JSON cannot
    say exactly, which are checked every time)."""
    try:
        values = json.dumps(params, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return f"{values}\0{sql}"


def open_readonly(path: str) -> duckdb.DuckDBPyConnection:
    """The database file, read-only, sandboxed (for use while the daemon is stopped)."""
    try:
        con = duckdb.connect(path, read_only=True)
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
    harden(con, allowed_dirs=[])
    return con
