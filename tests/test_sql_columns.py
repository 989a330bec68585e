"""The store's columns follow the event Structs: ``events.py``, ``sql/load.sql`` and
``sql/schema.sql`` agree.

``events.py`` is the schema. Every field of every type in the tagged union, nested
Structs flattened the way ``load.sql`` does (``agent.model`` -> ``agent_model``), must
be read by ``load.sql`` with a DuckDB type that holds it, and land in a column of the
``events`` table of ``schema.sql`` with such a type; and every column must come from a
field. DuckDB's ``read_json`` ignores keys it is not told about, so without this a
field added to ``events.py`` alone would be dropped at load without a word.

The static checks read ``load.sql``'s column types from DuckDB itself (``DESCRIBE``
of its ``read_json`` call) and the table from a database built with ``schema.sql``.
The load check then runs ``load.sql`` on one fully populated event of every type and
compares each column with the field it holds: ``INSERT INTO events SELECT`` is
positional, so a select list out of order with the table shows only there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import msgspec.inspect as mi
import pytest

from telemetryd import events as ev

Path_ = tuple[str, ...]  # a field's path in the journal line: ("agent", "model")

# Fields whose column is not their flattened path. Every one is deliberate:
RENAMED: dict[Path_, str] = {
    # the run's retry counts, named for what they count
    ("retry_count", "same_model"): "retry_same_model",
    ("retry_count", "reroute"): "retry_reroute",
    # elapsed times keep their unit at the end, like duration_ms
    ("elapsed_ms", "wall"): "elapsed_wall_ms",
    ("elapsed_ms", "llm"): "elapsed_llm_ms",
    ("elapsed_ms", "tools"): "elapsed_tools_ms",
    # a prompt's length: `length` alone says nothing in a table of every type
    ("length",): "prompt_length",
}
# Fields that are deliberately not stored, with the reason. None today.
NOT_STORED: dict[Path_, str] = {}
# Columns the store fills itself rather than from a journal field. None today.
COMPUTED: dict[str, str] = {
    "price_source": "what priced a computed cost, set by the store as it loads (store/pricing.py)",
}

# DuckDB types that hold each kind of msgspec type without loss.
_COMPATIBLE: dict[type[mi.Type], set[str]] = {
    mi.StrType: {"VARCHAR"},
    mi.LiteralType: {"VARCHAR"},
    mi.IntType: {"BIGINT", "HUGEINT"},  # INTEGER too when the bounds fit it (_compatible)
    mi.FloatType: {"DOUBLE"},
    mi.BoolType: {"BOOLEAN"},
    mi.DateTimeType: {"TIMESTAMP", "TIMESTAMP WITH TIME ZONE"},
    mi.DictType: {"JSON"},
}


def _sql(name: str) -> str:
    return resources.files("telemetryd").joinpath("sql", name).read_text()


def _unwrap(t: mi.Type) -> mi.Type:
    """The type of a field's value: without ``| None`` and ``Annotated`` metadata."""
    while True:
        if isinstance(t, mi.Metadata):
            t = t.type
        elif isinstance(t, mi.UnionType):
            rest = [u for u in t.types if not isinstance(u, mi.NoneType)]
            if len(rest) != 1:
                raise AssertionError(f"a field of type {t} has no single column type")
            t = rest[0]
        else:
            return t


def _event_types() -> list[mi.StructType]:
    union = mi.type_info(ev.AnyEvent)
    assert isinstance(union, mi.UnionType)
    types = [t for t in union.types if isinstance(t, mi.StructType)]
    assert len(types) == len(ev.EVENT_TYPES)
    return types


def _leaves(fields: tuple[mi.Field, ...], prefix: Path_ = ()) -> Iterator[tuple[Path_, mi.Type]]:
    """Every leaf of a Struct's fields: nested Structs flattened, free-form objects whole."""
    for field in fields:
        path = (*prefix, field.encode_name)
        t = _unwrap(field.type)
        if isinstance(t, mi.StructType):
            yield from _leaves(t.fields, path)
        else:
            yield path, t


def journal_fields() -> dict[Path_, dict[str, mi.Type]]:
    """Every field a journal line can carry: path -> {event type: its type}. The tag
    (``type``) is one of them."""
    out: dict[Path_, dict[str, mi.Type]] = {}
    for struct in _event_types():
        assert struct.tag_field is not None and isinstance(struct.tag, str)
        out.setdefault((struct.tag_field,), {})[struct.tag] = mi.StrType()
        for path, t in _leaves(struct.fields):
            out.setdefault(path, {})[struct.tag] = t
    return out


def column_for(path: Path_) -> str:
    return RENAMED.get(path, "_".join(path))


def _compatible(t: mi.Type, duck: str) -> bool:
    if isinstance(t, mi.IntType) and duck == "INTEGER":
        return (t.ge is not None and t.ge >= -(2**31)) and (t.le is not None and t.le < 2**31)
    return duck in _COMPATIBLE.get(type(t), set())


def _describe(t: mi.Type) -> str:
    name = type(t).__name__.removesuffix("Type").lower()
    if isinstance(t, mi.IntType) and t.le is not None:
        return f"int (up to {t.le})"
    return "free-form object" if name == "dict" else name


# -- what the SQL says ---------------------------------------------------------------------


def _read_json_call(load: str) -> str:
    """The ``read_json(...)`` call of ``load.sql``, parentheses matched."""
    start = load.index("read_json(")
    depth = 0
    for end in range(start + len("read_json"), len(load)):
        depth += {"(": 1, ")": -1}.get(load[end], 0)
        if depth == 0:
            return load[start : end + 1]
    raise AssertionError("load.sql: unbalanced parentheses in read_json(...)")


def _flatten_duck(name: str, t: duckdb.sqltypes.DuckDBPyType) -> Iterator[tuple[Path_, str]]:
    if t.id == "struct":
        for child, child_type in t.children:
            for path, duck in _flatten_duck(child, child_type):
                yield (name, *path), duck
    else:
        yield (name,), str(t)


@pytest.fixture(scope="module")
def line_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fully populated event of every type, as the journal holds them."""
    path = tmp_path_factory.mktemp("journal") / "events.jsonl"
    path.write_bytes(b"".join(ev.ENCODER.encode(e) + b"\n" for e in full_events()))
    return path


@pytest.fixture(scope="module")
def load_columns(line_file: Path) -> dict[Path_, str]:
    """What ``load.sql`` reads from each line: path -> DuckDB type."""
    with duckdb.connect() as con:
        rel = con.sql(
            f"SELECT * FROM {_read_json_call(_sql('load.sql'))}",
            params={"files": [str(line_file)], "lenient": False},
        )
        out: dict[Path_, str] = {}
        for name, t in zip(rel.columns, rel.types, strict=True):
            out.update(_flatten_duck(name, t))
    return out


@pytest.fixture(scope="module")
def table_columns() -> dict[str, str]:
    """The ``events`` table of ``schema.sql``: column -> DuckDB type, in order."""
    with duckdb.connect() as con:
        con.execute(_sql("schema.sql"))
        rows = con.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE table_name = 'events' ORDER BY column_index"
        ).fetchall()
    return dict(rows)


# -- the static checks ---------------------------------------------------------------------


def test_every_field_is_read_by_load_sql_with_a_type_that_holds_it(
    load_columns: dict[Path_, str],
) -> None:
    problems = []
    for path, by_type in journal_fields().items():
        if path in NOT_STORED:
            continue
        dotted = ".".join(path)
        types = ", ".join(sorted(by_type))
        if path not in load_columns:
            problems.append(
                f"field `{dotted}` ({types}) is not read by sql/load.sql: add it to its "
                f"read_json columns (and to the select list), or it is dropped at load"
            )
            continue
        for tag, t in by_type.items():
            if not _compatible(t, load_columns[path]):
                problems.append(
                    f"field `{dotted}` of {tag} is {_describe(t)}, but sql/load.sql reads it "
                    f"as {load_columns[path]}"
                )
    assert not problems, "\n".join(problems)


def test_load_sql_reads_no_key_that_no_event_has(load_columns: dict[Path_, str]) -> None:
    fields = journal_fields()
    extra = [".".join(p) for p in load_columns if p not in fields]
    assert not extra, f"sql/load.sql reads keys that no event type in events.py has: {extra}"


def test_every_field_has_a_column_with_a_type_that_holds_it(
    table_columns: dict[str, str],
) -> None:
    problems = []
    for path, by_type in journal_fields().items():
        if path in NOT_STORED:
            continue
        column = column_for(path)
        dotted = ".".join(path)
        if column not in table_columns:
            problems.append(
                f"field `{dotted}` ({', '.join(sorted(by_type))}) has no column `{column}` in "
                f"the events table of sql/schema.sql"
            )
            continue
        for tag, t in by_type.items():
            if not _compatible(t, table_columns[column]):
                problems.append(
                    f"field `{dotted}` of {tag} is {_describe(t)}, but column `{column}` is "
                    f"{table_columns[column]}"
                )
    assert not problems, "\n".join(problems)


def test_every_column_comes_from_a_field(table_columns: dict[str, str]) -> None:
    from_fields = {column_for(p) for p in journal_fields() if p not in NOT_STORED}
    orphans = [c for c in table_columns if c not in from_fields and c not in COMPUTED]
    assert not orphans, (
        f"columns of the events table that no field of events.py fills: {orphans} (a field "
        "was removed or renamed; or list the column in COMPUTED with why)"
    )


def test_the_exceptions_are_still_needed() -> None:
    fields = journal_fields()
    stale = [p for p in [*RENAMED, *NOT_STORED] if p not in fields]
    assert not stale, f"RENAMED / NOT_STORED name fields that events.py no longer has: {stale}"


# -- the load check ------------------------------------------------------------------------


class _Values:
    """A distinct valid value for each leaf, so a column swapped with another shows."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, tag: str, path: Path_, t: mi.Type) -> Any:
        self.n += 1
        n = self.n
        if isinstance(t, mi.StructType):
            return {
                f.encode_name: self(tag, (*path, f.encode_name), _unwrap(f.type)) for f in t.fields
            }
        if isinstance(t, mi.LiteralType):
            return t.values[n % len(t.values)]
        if isinstance(t, mi.StrType):
            return f"{tag}.{'.'.join(path)}"
        if isinstance(t, mi.BoolType):
            return n % 2 == 0
        if isinstance(t, mi.IntType):
            low = t.ge if t.ge is not None else 0
            high = t.le if t.le is not None else 2**53
            return min(max(1000 + n, low), high)
        if isinstance(t, mi.FloatType):
            value = n + 0.25
            return value if t.le is None or value <= t.le else t.le / 4
        if isinstance(t, mi.DateTimeType):
            return f"2026-01-02T03:04:{n % 60:02d}.{n % 1000:03d}Z"
        if isinstance(t, mi.DictType):
            return {"key": f"{tag}.{'.'.join(path)}", "n": n}
        raise AssertionError(f"{tag}.{'.'.join(path)}: no sample value for {t}")


def full_events() -> list[ev.AnyEvent]:
    """One event of every type with every field set (tokens with every count)."""
    value = _Values()
    out = []
    for struct in _event_types():
        assert isinstance(struct.tag, str)
        fields = {
            f.encode_name: value(struct.tag, (f.encode_name,), _unwrap(f.type))
            for f in struct.fields
        }
        if "tokens" in fields:
            tokens = fields["tokens"]
            tokens["source"] = "actual"
            tokens["reasoning"] = tokens["output"] - 1  # part of the output
            tokens.pop("total")  # derived: input + output + cache
        line = msgspec.json.encode({"type": struct.tag, **fields})
        out.append(ev.DECODER.decode(line))
    return out


def _expected(event: ev.AnyEvent) -> dict[str, Any]:
    """column -> the value the line holds for it."""
    line = json.loads(ev.ENCODER.encode(event))
    out = {}
    for path in journal_fields():
        value: Any = line
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and path not in NOT_STORED:
            out[column_for(path)] = value
    return out


def _same(column: str, duck_type: str, got: Any, want: Any) -> bool:
    if duck_type.startswith("TIMESTAMP"):
        ts = datetime.fromisoformat(want.replace("Z", "+00:00")).astimezone(UTC)
        return bool(got == ts.replace(tzinfo=None) or got == ts)
    if duck_type == "JSON":
        return bool(json.loads(got) == want)
    return bool(got == want)


def test_load_sql_puts_every_field_in_its_column(
    line_file: Path, table_columns: dict[str, str]
) -> None:
    events = full_events()
    with duckdb.connect() as con:
        con.execute(_sql("schema.sql"))
        loaded = con.execute(_sql("load.sql"), {"files": [str(line_file)], "lenient": False})
        row = loaded.fetchone()
        assert row is not None and row[0] == len(events), f"load.sql loaded {row} rows"
        columns = list(table_columns)
        rows = {
            r[0]: dict(zip(columns, r, strict=True))
            for r in con.execute(f"SELECT {', '.join(columns)} FROM events").fetchall()
        }
    problems = []
    for event in events:
        expected = _expected(event)
        got = rows[expected["id"]]
        tag = expected["type"]
        problems += [
            f"{tag}: the line's `{column}` has no column to go to"
            for column in expected
            if column not in got
        ]
        for column in columns:
            if column in COMPUTED:
                continue
            if column not in expected:
                if got[column] is not None:
                    problems.append(f"{tag}: column `{column}` holds {got[column]!r}, want NULL")
            elif not _same(column, table_columns[column], got[column], expected[column]):
                problems.append(
                    f"{tag}: column `{column}` holds {got[column]!r}, want {expected[column]!r}"
                    " (load.sql's select list must follow the table's column order)"
                )
    assert not problems, "\n".join(problems)


def test_the_full_events_cover_every_field() -> None:
    """Guards the load check itself: between them, the sample events set every field."""
    covered = set()
    for event in full_events():
        covered |= set(_expected(event))
    missing = [column_for(p) for p in journal_fields() if column_for(p) not in covered]
    assert not missing


def test_rename_rules_match_the_schema_comment() -> None:
    """schema.sql documents the flattening; keep its examples true."""
    schema = _sql("schema.sql")
    for dotted, column in re.findall(r"(\w+\.\w+) -> (\w+)", schema):
        assert column_for(tuple(dotted.split("."))) == column, (dotted, column)
