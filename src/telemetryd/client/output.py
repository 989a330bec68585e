"""Query results on stdout: table, csv, tsv, json, ndjson, markdown.

Each writer gets the columns once, then rows batch by batch, then ``end()``.
csv, tsv, ndjson, json and markdown stream (a million-row export never holds
more than a batch); the aligned table needs every width first, so it buffers.
Import-light like the rest of the query path: ``_csv`` and ``_json`` only.
"""

from __future__ import annotations

import _csv

from telemetryd import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

FORMATS = ("table", "csv", "tsv", "json", "ndjson", "markdown")


def fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals (and thousands separators), a half rounded
    away from zero, as people round and as ccusage's figures (JavaScript's ``toFixed``)
    do: $0.125 is $0.13, 12.5% is 13% (Python's format rounds half to even: $0.12, 12%).
    Exact: the float's own value is rounded, not a product that rounding error moved."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    numerator, denominator = abs(value).as_integer_ratio()
    scale = 10**digits
    units, rest = divmod(numerator * scale, denominator)
    if 2 * rest >= denominator:
        units += 1
    whole, part = divmod(units, scale)
    sign = "-" if value < 0 and units else ""
    return f"{sign}{whole:,}" + (f".{part:0{digits}d}" if digits else "")


def text(value: Any, null: str = "") -> str:
    """One value as text: NULL as ``null``, nested values as JSON."""
    if value is None:
        return null
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (dict, list)):
        return fastjson.dumps(value)
    return str(value)


class Writer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.names: list[str] = []

    def start(self, columns: list[list[str]]) -> None:
        self.names = [name for name, _ in columns]

    def rows(self, rows: list[list[Any]]) -> None:
        raise NotImplementedError

    def end(self) -> None:
        pass


class Delimited(Writer):
    def __init__(self, out: TextIO, delimiter: str) -> None:
        super().__init__(out)
        self._writer = _csv.writer(
            out,
            delimiter=delimiter,
            quotechar='"',
            doublequote=True,
            lineterminator="\n",
            quoting=_csv.QUOTE_MINIMAL,
        )

    def start(self, columns: list[list[str]]) -> None:
        super().start(columns)
        self._writer.writerow(self.names)

    def rows(self, rows: list[list[Any]]) -> None:
        self._writer.writerows([[text(v) for v in row] for row in rows])


def unique(names: list[str]) -> list[str]:
    """Column names as JSON keys: a name met before gets ``_1``, ``_2`` ... (the first
    such name not taken), so that no column of a join (``a.id, b.id``) overwrites another."""
    taken = set(names)
    seen: set[str] = set()
    out = []
    for name in names:
        key = name
        n = 0
        while key in seen:
            n += 1
            key = f"{name}_{n}"
            if key in taken:
                key = name  # (another column's own name: go on counting)
        seen.add(key)
        out.append(key)
    return out


class NDJSON(Writer):
    def start(self, columns: list[list[str]]) -> None:
        super().start(columns)
        self.keys = unique(self.names)

    def rows(self, rows: list[list[Any]]) -> None:
        keys = self.keys
        self.out.write(
            "".join(fastjson.dumps(dict(zip(keys, row, strict=True))) + "\n" for row in rows)
        )


class JSON(Writer):
    """One JSON array of objects, written as it comes."""

    _first = True

    def start(self, columns: list[list[str]]) -> None:
        super().start(columns)
        self.keys = unique(self.names)
        self.out.write("[")

    def rows(self, rows: list[list[Any]]) -> None:
        for row in rows:
            self.out.write(
                ("\n" if self._first else ",\n")
                + fastjson.dumps(dict(zip(self.keys, row, strict=True)))
            )
            self._first = False

    def end(self) -> None:
        self.out.write("\n]\n" if not self._first else "]\n")


class Markdown(Writer):
    def start(self, columns: list[list[str]]) -> None:
        super().start(columns)
        self.out.write(_md_row(self.names) + "|" + "|".join("---" for _ in self.names) + "|\n")

    def rows(self, rows: list[list[Any]]) -> None:
        self.out.write("".join(_md_row([text(v) for v in row]) for row in rows))


def _md_row(cells: list[str]) -> str:
    escaped = [c.replace("|", "\\|").replace("\n", " ") for c in cells]
    return "| " + " | ".join(escaped) + " |\n"


class Table(Writer):
    """Aligned columns for a terminal; numbers right-aligned."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self._rows: list[list[str]] = []
        self._numeric: list[bool] = []

    def start(self, columns: list[list[str]]) -> None:
        super().start(columns)
        numeric = ("INT", "DOUBLE", "FLOAT", "DECIMAL", "REAL", "HUGEINT", "BIGINT", "UBIGINT")
        self._numeric = [any(k in kind.upper() for k in numeric) for _, kind in columns]

    def rows(self, rows: list[list[Any]]) -> None:
        self._rows.extend([_one_line(text(v, "NULL")) for v in row] for row in rows)

    def end(self) -> None:
        widths = [len(n) for n in self.names]
        for row in self._rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

        def line(cells: list[str], header: bool = False) -> str:
            parts = []
            for cell, width, numeric in zip(cells, widths, self._numeric, strict=True):
                parts.append(cell.rjust(width) if numeric and not header else cell.ljust(width))
            return "  ".join(parts).rstrip() + "\n"

        self.out.write(line(self.names, header=True))
        self.out.write("  ".join("-" * w for w in widths) + "\n")
        self.out.write("".join(line(row) for row in self._rows))
        count = len(self._rows)
        self.out.write(f"({count} row{'s' if count != 1 else ''})\n")


_CONTROLS = {n: f"\\x{n:02x}" for n in range(32)} | {10: "\\n", 13: "\\r", 9: "\\t"}


def _one_line(cell: str) -> str:
    """A table cell on one line: newlines, tabs and other control characters escaped
    (``\\n``, ``\\t``, ``\\x1b``), so that a value never breaks the rows apart."""
    return cell.translate(_CONTROLS) if not cell.isprintable() else cell


def writer(name: str, out: TextIO) -> Writer:
    if name == "csv":
        return Delimited(out, ",")
    if name == "tsv":
        return Delimited(out, "\t")
    if name == "ndjson":
        return NDJSON(out)
    if name == "json":
        return JSON(out)
    if name == "markdown":
        return Markdown(out)
    return Table(out)
