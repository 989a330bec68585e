"""JSON for the hook path, on CPython's C accelerator alone.

`telemetryctl send` and `hook` run on every tool call of an agent, so they avoid
both msgspec (~38 ms to import on the reference machine) and the `json` package
(whose decoder imports `re`, ~7 ms). CPython's `_json` module provides the C
string escaper and scanner that `json` itself uses; this module drives them
directly and falls back to `json` where `_json` is missing.

Standard library only and at the top of the package, so that both the client and
the adapters (which the hook runs in-process) use it without one importing the other.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs ~4 ms
if TYPE_CHECKING:
    from typing import Any

try:
    import _json

    _escape = _json.encode_basestring_ascii
    _escape_utf8 = _json.encode_basestring
except ImportError:  # not CPython
    import json as _stdjson

    _escape = _stdjson.encoder.encode_basestring_ascii
    _escape_utf8 = _stdjson.encoder.encode_basestring


def dumps(value: Any) -> str:
    """Compact JSON for dicts, lists, strings, ints, finite floats, bools and None, in
    ASCII. A lone UTF-16 surrogate in a string (Python reads one from JSON such as
    ``"\\ud800"``; no UTF-8 text holds one, and the daemon refuses its escape) is written
    as U+FFFD."""
    parts: list[str] = []
    _dump(value, parts.append)
    return "".join(parts)


def utf8_size(value: Any) -> int:
    """The bytes of :func:`dumps` ``(value)`` written in UTF-8 rather than ASCII escapes:
    what the value takes where it is stored."""
    parts: list[str] = []
    _dump(value, parts.append, _escape_utf8)
    return len("".join(parts).encode())


def _string(value: str, escape: Any = _escape) -> str:
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # (a surrogate code point: always a lone one in a str)
            value = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    return escape(value)  # type: ignore[no-any-return]


def _dump(value: Any, out: Any, escape: Any = _escape) -> None:
    if isinstance(value, str):
        out(_string(value, escape))
    elif value is None:
        out("null")
    elif value is True:
        out("true")
    elif value is False:
        out("false")
    elif isinstance(value, int):
        out(int.__repr__(value))
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} is not valid in JSON")
        out(float.__repr__(value))
    elif isinstance(value, dict):
        out("{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            if not first:
                out(",")
            first = False
            out(_string(key, escape))
            out(":")
            _dump(item, out, escape)
        out("}")
    elif isinstance(value, (list, tuple)):
        out("[")
        for index, item in enumerate(value):
            if index:
                out(",")
            _dump(item, out, escape)
        out("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


_ESCAPES: Any = None  # the pattern of without_lone_surrogates, compiled on first use


def without_lone_surrogates(raw: bytes) -> bytes | None:
    """JSON text ``raw`` with U+FFFD for each escape of a lone UTF-16 surrogate (a
    ``\\ud83d`` not followed by its low half, a low half alone); None when it has none.
    JSON.stringify writes one for a string cut inside an emoji (a tool's output cut to
    length), and msgspec, like the daemon, refuses it; a pair stays as it is.

    The escapes are read from left to right, each whole (``\\\\`` is one, so the text
    ``\\\\ud83d`` is a backslash and ``ud83d``, not half of a pair)."""
    global _ESCAPES
    if _ESCAPES is None:
        import re  # (~7 ms: only when a text needs it)

        # a pair of halves (12 bytes), one half (6: alone), or any other escape (2)
        _ESCAPES = re.compile(
            rb"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
            rb"|u[dD][89a-fA-F][0-9a-fA-F]{2}|.)",
            re.DOTALL,
        )
    lone = 0

    def repair(match: Any) -> bytes:
        nonlocal lone
        escape: bytes = match.group(0)
        if len(escape) != 6:
            return escape
        lone += 1
        return b"\\ufffd"

    repaired = _ESCAPES.sub(repair, raw)
    return repaired if lone else None


_SCAN: Any = None  # the patterns of shallow, compiled on first use
# How deep JSON from an agent is read when it nests deeper than a decoder's recursion
# goes (a tool's input can be anything the model wrote): deeper values are read as "…".
# Events keep far less (attrs nest at most `ingest.max-attrs-depth`, itself at most 64).
MAX_DEPTH = 100


def shallow(raw: bytes, max_depth: int = MAX_DEPTH) -> bytes | None:
    """JSON text ``raw`` with each array or object nested deeper than ``max_depth``
    replaced by the string ``"…"``; None when nothing nests that deep. A payload that
    nests deeper than a decoder's recursion allows (a tool's input, as an agent passes
    it on) is read this way instead of being lost whole. Text that is not JSON stays as
    it is (its decoder then says what is wrong with it).

    One pass, in time linear in the text: each string is skipped whole from its opening
    quote (a string never closed ends the scan: the rest is inside it)."""
    global _SCAN
    if _SCAN is None:
        import re

        _SCAN = (
            re.compile(rb'[\[\]{}"]'),  # what the scan stops at
            re.compile(rb'(?:[^"\\]++|\\.)*+"', re.DOTALL),  # a string's rest (possessive)
        )
    structural, string_rest = _SCAN
    pieces: list[bytes] = []
    depth = 0
    copied = 0  # raw[:copied] is in pieces
    cut = -1  # where the value being cut starts
    position = 0
    while (found := structural.search(raw, position)) is not None:
        token = raw[found.start()]
        position = found.end()
        if token == 0x22:  # a string: skipped whole (brackets in it are text)
            rest = string_rest.match(raw, position)
            if rest is None:
                break  # never closed
            position = rest.end()
        elif token in b"[{":
            depth += 1
            if depth == max_depth + 1:
                cut = found.start()
        else:
            if depth == max_depth + 1 and cut >= 0:
                pieces.append(raw[copied:cut])
                pieces.append('"…"'.encode())
                copied = position
                cut = -1
            depth -= 1
    if not pieces:
        return None
    pieces.append(raw[copied:])
    return b"".join(pieces)


def mended(raw: bytes, deep: bool) -> bytes | None:
    """JSON text ``raw`` that a decoder refused, mended for its refusal: nesting past its
    recursion (``deep``) cut at :data:`MAX_DEPTH` (:func:`shallow`), else escapes of lone
    UTF-16 surrogates as U+FFFD (:func:`without_lone_surrogates`); None when there is
    nothing of that kind to mend. Both run in linear time (any refused text comes here)."""
    return shallow(raw) if deep else without_lone_surrogates(raw)


def pretty(value: Any, indent: int = 2) -> str:
    """``json.dumps(value, indent=indent, ensure_ascii=False)``, byte for byte, for
    dicts with string keys, lists, tuples, strings, ints, floats (NaN and the
    infinities as ``json`` writes them), bools and None: what `telemetryctl report
    --json` prints, without importing ``json``."""
    parts: list[str] = []
    _pretty(value, parts.append, " " * indent, "\n")
    return "".join(parts)


def _pretty(value: Any, out: Any, step: str, newline: str) -> None:
    if isinstance(value, str):
        out(_escape_utf8(value))
    elif value is None:
        out("null")
    elif value is True:
        out("true")
    elif value is False:
        out("false")
    elif isinstance(value, int):
        out(int.__repr__(value))
    elif isinstance(value, float):
        if value != value:
            out("NaN")
        elif value == float("inf"):
            out("Infinity")
        elif value == float("-inf"):
            out("-Infinity")
        else:
            out(float.__repr__(value))
    elif isinstance(value, dict):
        if not value:
            out("{}")
            return
        inner = newline + step
        out("{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            out(inner if first else "," + inner)
            first = False
            out(_escape_utf8(key))
            out(": ")
            _pretty(item, out, step, inner)
        out(newline + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out("[]")
            return
        inner = newline + step
        out("[")
        for index, item in enumerate(value):
            out("," + inner if index else inner)
            _pretty(item, out, step, inner)
        out(newline + "]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _Context:
    # The attributes the C scanner reads from a json.JSONDecoder.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)
    memo: dict[str, str] = {}  # noqa: RUF012


try:
    _scan: Any = _json.make_scanner(_Context())  # type: ignore[arg-type]  # duck-typed
except NameError:  # not CPython
    _scan = None

_WS = " \t\n\r"


def loads(text: str) -> Any:
    """Parse one JSON document; ValueError names the character where it went wrong."""
    if _scan is None:
        return _stdjson.loads(text)
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _scan(text, start)
    except ValueError:  # from _no_constant, or the scanner's own JSONDecodeError
        raise
    except Exception:
        # The C scanner reports most errors through json.decoder, which it expects
        # to be imported already; on this (rare) path, let `json` explain the error.
        import json

        json.loads(text, parse_constant=_no_constant)
        raise ValueError("invalid JSON") from None
    finally:
        _Context.memo.clear()
    if text[end:].strip(_WS):
        raise ValueError(f"unexpected data after the JSON value at character {end}")
    return value
