"""`telemetryd.fastjson`: the hook path's JSON, held to the standard library's answers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telemetryd import fastjson

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**64,
    -(2**70),
    10**40,
    0.0,
    -0.0,
    1.5,
    0.1,
    -2.5e-8,
    1e16,
    1e300,
    5e-324,
    "",
    "plain",
    'quote " backslash \\ slash /',
    "controls \b\f\n\r\t \x00 \x1f \x7f",
    "unicode é ü ß 日本語 \u2028 \u2029",
    "astral 😀 𝄞",
    [],
    {},
    [1, "two", 3.0, None, True, [], {}],
    {"a": {"b": {"c": [1, {"d": [None, {"e": "deep"}]}]}}},
    {"é": "key with accent", "": "empty key", "k\n": "escaped key"},
    {"type": "tool_result", "tool": {"name": "Bash", "success": True}, "duration_ms": 412},
    [[[[[[[[[[["ten deep"]]]]]]]]]]],
]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_dumps_matches_the_stdlib_byte_for_byte(value: Any) -> None:
    assert fastjson.dumps(value) == _compact(value)


@pytest.mark.parametrize(
    "value",
    [
        *VALUES,
        float("nan"),
        float("inf"),
        [float("-inf"), {"x": [{}, []]}],
        ("a", (1,)),
        "lone surrogate \ud800 \udfff",
    ],  # (pretty writes what it is given, as json does)
    ids=lambda v: repr(v)[:40],
)
def test_pretty_matches_the_stdlib_indented_byte_for_byte(value: Any) -> None:
    for indent in (2, 4, 0):
        assert fastjson.pretty(value, indent) == json.dumps(
            value, indent=indent, ensure_ascii=False
        )


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=20,
    )
)
def test_pretty_matches_the_stdlib_on_any_value(value: Any) -> None:
    assert fastjson.pretty(value) == json.dumps(value, indent=2, ensure_ascii=False)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_round_trips(value: Any) -> None:
    text = fastjson.dumps(value)
    assert json.loads(text) == value
    assert fastjson.loads(text) == value
    assert fastjson.loads(json.dumps(value, indent=2, ensure_ascii=False)) == value
    assert fastjson.loads(f" \t\r\n{_compact(value)}\n ") == value


def test_floats_and_big_ints_keep_their_type_and_value() -> None:
    text = '{"big": 123456789012345678901234567890, "f": 1.0, "e": 1E3, "neg": -0.0}'
    parsed = fastjson.loads(text)
    assert parsed == json.loads(text)
    assert isinstance(parsed["big"], int) and parsed["big"] == 123456789012345678901234567890
    assert isinstance(parsed["f"], float) and isinstance(parsed["e"], float)
    assert str(parsed["neg"]) == "-0.0"


def test_loads_decodes_escapes_like_the_stdlib() -> None:
    text = r'"\u00e9\ud83d\ude00\n\t\"\\\/\b\f\u0000"'
    assert fastjson.loads(text) == json.loads(text) == 'é😀\n\t"\\/\b\f\x00'


def test_tuples_encode_as_arrays() -> None:
    assert fastjson.dumps({"t": (1, "a")}) == '{"t":[1,"a"]}'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), [1.0, float("nan")]])
def test_dumps_rejects_non_finite_floats(value: Any) -> None:
    with pytest.raises(ValueError, match="not valid in JSON"):
        fastjson.dumps(value)


@pytest.mark.parametrize(
    "value", [{1: "int key"}, {None: 1}, {"ok": {2.5: "nested"}}], ids=["int", "none", "nested"]
)
def test_dumps_rejects_non_string_keys(value: Any) -> None:
    with pytest.raises(TypeError, match="keys must be strings"):
        fastjson.dumps(value)


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object()], ids=["bytes", "set", "object"])
def test_dumps_rejects_other_types(value: Any) -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        fastjson.dumps(value)


@pytest.mark.parametrize(
    "text",
    ["NaN", "Infinity", "-Infinity", "[1, NaN]", '{"a": Infinity}', '{"a": [-Infinity]}'],
)
def test_loads_rejects_nan_and_infinity(text: str) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        fastjson.loads(text)


@pytest.mark.parametrize("text", ['{"a": 1} x', "1 2", "[] []", '"a""b"', "{}}", " null,"])
def test_loads_rejects_trailing_data(text: str) -> None:
    with pytest.raises(json.JSONDecodeError, match="Extra data"):
        json.loads(text)
    with pytest.raises(ValueError) as caught:
        fastjson.loads(text)
    # The position is where the first value ended.
    _, end = json.JSONDecoder().raw_decode(text, len(text) - len(text.lstrip()))
    assert _position(str(caught.value)) == end


MALFORMED = [
    "",
    "   ",
    "{",
    "[1,",
    '{"a":}',
    '{"a" 1}',
    '{"a":1,}',
    "[1 2]",
    "tru",
    "nul",
    '"unterminated',
    '"bad escape \\x"',
    '"\\ud83d\\u12"',
    '"raw control \x01 character"',
    "{'single': 1}",
    "01",
    "-",
    "1.",
    "@",
]


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_input_is_a_value_error_with_the_stdlib_position(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as stdlib:
        json.loads(text)
    with pytest.raises(ValueError) as caught:
        fastjson.loads(text)
    assert _position(str(caught.value)) == stdlib.value.pos, caught.value


def test_malformed_input_without_json_imported_still_names_the_position() -> None:
    """The hook process never imports `json`; errors must still be ValueErrors with a position."""
    script = """
import sys
from telemetryd import fastjson
assert fastjson.loads('{"ok": [1, 2.5, "x"]}') == {"ok": [1, 2.5, "x"]}
assert "json" not in sys.modules and "re" not in sys.modules, sorted(sys.modules)
for text in ['{"a":}', '[1,', '"abc', 'tru', '{"a": 1} x']:
    for name in [m for m in sys.modules if m == "json" or m.startswith("json.")]:
        del sys.modules[name]  # each error takes the path where `json` is not loaded yet
    try:
        fastjson.loads(text)
    except ValueError as exc:
        print(type(exc).__name__, "|", exc)
    else:
        print("accepted", text)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout
    expected = [json_error_pos('{"a":}'), json_error_pos("[1,"), json_error_pos('"abc'), 0]
    for line, pos in zip(lines, expected, strict=False):
        assert not line.startswith("accepted"), line
        assert _position(line) == pos, line
    assert _position(lines[4]) == len('{"a": 1}')


def json_error_pos(text: str) -> int:
    with pytest.raises(json.JSONDecodeError) as caught:
        json.loads(text)
    return caught.value.pos


def _position(message: str) -> int:
    found = re.search(r"\b(?:char|character) (\d+)", message)
    assert found is not None, f"no position in {message!r}"
    return int(found.group(1))


def imported(source: str, package: str) -> list[str]:
    """Every module name an import statement in ``source`` (code of a module in
    ``package``) may bind, relative imports resolved, nested imports included."""
    import ast

    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def test_the_import_walk_sees_every_form() -> None:
    source = """
import telemetryd.client.send
def late():
    from telemetryd.client import query
    from .. import client
    from ..client.tail import main
"""
    found = imported(source, "telemetryd.adapters")
    for name in [
        "telemetryd.client.send",
        "telemetryd.client.query",
        "telemetryd.client",
        "telemetryd.client.tail",
    ]:
        assert name in found


def test_adapters_never_import_the_client() -> None:
    """Dependency direction (DESIGN.md): `adapters/` may not import `client/`, at module
    level or inside a function."""
    from pathlib import Path

    import telemetryd.adapters

    modules = sorted(Path(telemetryd.adapters.__file__).parent.glob("*.py"))
    assert len(modules) > 3  # the walk sees the real package
    found = {
        f"{module.name}: {name}"
        for module in modules
        for name in imported(module.read_text(), "telemetryd.adapters")
        if name == "telemetryd.client" or name.startswith("telemetryd.client.")
    }
    assert found == set()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (rb'"a\ud800b"', "a\ufffdb"),  # a high half alone
        (rb'"\ude00x"', "\ufffdx"),  # a low half alone
        (rb'"\ud83d\ud83d\ude00"', "\ufffd\U0001f600"),  # the second high half has its pair
        (rb'"\uD83D"', "\ufffd"),  # either case
        (rb'"\\\ud800"', "\\\ufffd"),  # an escaped backslash, then the escape
        # the text \ud83d (an escaped backslash) before a lone low half: no pair
        (rb'"\\ud83d\udc00"', "\\ud83d\ufffd"),
        (rb'"\\\\ud83d\udc00"', "\\\\ud83d\ufffd"),
        (rb'"\udc00\ud800"', "\ufffd\ufffd"),  # halves the wrong way round
    ],
)
def test_lone_surrogate_escapes_become_replacement_characters(raw: bytes, expected: str) -> None:
    repaired = fastjson.without_lone_surrogates(raw)
    assert repaired is not None and json.loads(repaired) == expected


@pytest.mark.parametrize("raw", [rb'"\ud83d\ude00"', rb'"\\ud800"', rb'"plain"', rb'"\u00e9"'])
def test_text_without_lone_surrogate_escapes_is_left_alone(raw: bytes) -> None:
    assert fastjson.without_lone_surrogates(raw) is None


def test_a_lone_surrogate_is_written_as_a_replacement_character() -> None:
    """The stdlib writes a lone surrogate as its escape, which the daemon refuses (and no
    UTF-8 text can hold it); dumps writes U+FFFD. loads reads one as the stdlib does."""
    assert fastjson.loads('"a\\ud800"') == json.loads('"a\\ud800"') == "a\ud800"
    value = {"k\udc00": ["x\ud800y", "é😀"]}
    written = fastjson.dumps(value)
    assert json.loads(written) == {"k\ufffd": ["x\ufffdy", "é😀"]}
    assert written.isascii()
    assert fastjson.utf8_size(value) == len(
        json.dumps(json.loads(written), ensure_ascii=False, separators=(",", ":")).encode()
    )


def _depth(value: object) -> int:
    """How deep arrays and objects nest in a decoded value (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def test_shallow_cuts_what_nests_deeper_and_keeps_the_rest() -> None:
    """Each array or object deeper than the limit becomes "…"; what is shallower, and
    brackets and quotes inside strings, stay as they were."""
    deep = '{"n":' * 3000 + "[1]" + "}" * 3000
    text = f'{{"s": "[{{\\"]}}", "deep": {deep}, "after": [1, {{"k": [2]}}], "z": "}}"}}'
    cut = fastjson.shallow(text.encode(), 5)
    assert cut is not None
    value = json.loads(cut)
    assert value["s"] == '[{"]}' and value["z"] == "}"
    assert value["after"] == [1, {"k": [2]}]  # (3 deep: within the limit)
    assert _depth(value) == 5
    inner = value["deep"]
    for _ in range(3):
        inner = inner["n"]
    assert inner == {"n": "…"}  # the object at depth 6 is cut, not its parent
    assert fastjson.shallow(b'{"a": [[1]], "b": "[[[[[["}', 3) is None
    assert fastjson.shallow(b'{"a": [[[', 2) is None  # (never closed: not JSON, left be)


def test_mended_mends_what_the_decoder_refused() -> None:
    """Depth for a recursion error, lone surrogates otherwise; each alone, so that a
    text with both is mended in two steps (as the readers and the http hook do)."""
    raw = ('{"t": "x\\ud800", "d": ' + "[" * 2000 + "]" * 2000 + "}").encode()
    cut = fastjson.mended(raw, deep=True)
    assert cut is not None and b"\\ud800" in cut
    fixed = fastjson.mended(cut, deep=False)
    assert fixed is not None
    value = json.loads(fixed)
    assert value["t"] == "x\ufffd" and _depth(value) == fastjson.MAX_DEPTH
    assert fastjson.mended(rb'{"a": [1]}', deep=True) is None
    assert fastjson.mended(rb'{"a": [1]}', deep=False) is None


def test_mending_an_unclosed_string_takes_one_pass() -> None:
    """A string never closed, full of escaped quotes (a payload cut short): the scan
    took time in the square of its length (each quote started a search to the end),
    80 KB froze the daemon for 25 s, and 4 MB, the largest hook payload, would for
    hours. Now one pass: these run within the test's timeout."""
    cut_short = b'{"hook_event_name": "PreToolUse", "x": [[["' + b'\\"' * 2_000_000
    assert fastjson.mended(cut_short, deep=True) is None
    assert fastjson.mended(cut_short, deep=False) is None
    deep_then_cut = b"[" * 5000 + b'"' + b'\\"' * 2_000_000
    assert fastjson.shallow(deep_then_cut, 100) is None  # (never closed: left be)
