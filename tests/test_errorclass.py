"""Error classes (telemetryd/errorclass.py): real error messages, each with where it was
seen and the category a person reading it would give; the same answers from the rules
in SQL (the store's macros); fingerprints that group one kind of error and tell kinds
apart; a producer's own category kept; the errors view over every source of errors on a
real database; docs/errors.md held to the table."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from telemetryd import errorclass
from telemetryd import events as ev
from telemetryd.store import sandbox
from telemetryd.store.database import Store

CC = "https://github.com/anthropics/claude-code/issues/"
CODEX = "https://github.com/openai/codex/issues/"
GEMINI = "https://github.com/google-gemini/gemini-cli/issues/"
OPENAI_DOCS = (
    "https://platform.openai.com/docs/guides/error-codes "
    "(quoted in https://community.openai.com/t/968465/4)"
)

# (source, message, expected category). Messages are copied as reported (an issue's
# title, body or log), only cut where a report goes on with a stack trace.
REAL_ERRORS: list[tuple[str, str, str]] = [
    # -- rate limits, quotas, billing
    (
        CODEX + "26057",
        "exceeded retry limit, last status: 429 Too Many Requests, "
        "request id: c6346410-8a50-495b-b711-08c6e4147c43",
        "rate_limit",
    ),
    (
        CODEX + "10550",
        "exceeded retry limit, last status: 429 Too Many Requests, "
        "request id: 9c84b52ce87fbe62-SJC",
        "rate_limit",
    ),
    (
        CODEX + "3899",
        "■ You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) "
        "or try again in 5 days 22 hours 11 minutes.",
        "rate_limit",
    ),
    (
        "https://github.com/james-6-23/codex2api/issues/9",
        '{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached",'
        '"plan_type":"free","resets_at":1775317531,"resets_in_seconds":602705}}',
        "rate_limit",
    ),
    (CC + "2087", "Claude AI usage limit reached|1749924000", "rate_limit"),
    (
        CC + "15064",
        "Claude usage limit reached. Your limit will reset at 9am (America/Chicago).",
        "rate_limit",
    ),
    (
        CC + "74079",
        "You've hit your session limit · resets 12:50am (America/Los_Angeles)",
        "rate_limit",
    ),
    (CC + "54698", "You've hit your limit · resets 1:30am (Asia/Dhaka)", "rate_limit"),
    (
        CC + "54698",
        'Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"This request '
        "would exceed your account's rate limit. Please try again later.\"},"
        '"request_id":"req_011CaYFzoBjAUaBYZZjpJHee"}',
        "rate_limit",
    ),
    (
        CC + "54566",
        'Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"Your '
        "credit balance is too low to access the Anthropic API. Please go to Plans & Billing "
        'to upgrade or purchase credits."},"request_id":"req_011CaXci6gfTVhUMdZHgjYRU"}',
        "rate_limit",
    ),
    (
        CC + "46277",
        "Credit balance too low · Add funds: https://platform.claude.com/settings/billing",
        "rate_limit",
    ),
    (
        GEMINI + "19976",
        "[API Error: Resource has been exhausted (e.g. check quota).]",
        "rate_limit",
    ),
    (
        GEMINI + "14811",
        '✕ [API Error: [{ "error": { "code": 429, "message": "Resource exhausted. Please try '
        "again later. Please refer to https://cloud.google.com/vertex-ai/generative-ai/docs/"
        'error-code-429 for more details."',
        "rate_limit",
    ),
    (
        OPENAI_DOCS,
        "429 - You exceeded your current quota, please check your plan and billing details",
        "rate_limit",
    ),
    (OPENAI_DOCS, "429 - Rate limit reached for requests", "rate_limit"),
    # -- overloaded
    (
        CC + "39745",
        'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded.'
        '\nhttps://docs.claude.com/en/api/errors"},"request_id":"req_011CZTEFvft13DajMTp9pp64"}',
        "overloaded",
    ),
    (
        CC + "87317",
        "API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again "
        "in a moment. If it persists, check https://status.claude.com/.",
        "overloaded",
    ),
    (
        CC + "7218",
        'API Error (529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},'
        '"request_id":null}) · Retrying in 4 seconds… (attempt 4/10)',
        "overloaded",
    ),
    (
        GEMINI + "7205",
        '[API Error: got status: UNAVAILABLE. {"error":{"code":503,"message":"The model is '
        'overloaded. Please try again later.","status":"UNAVAILABLE"}}]',
        "overloaded",
    ),
    (
        GEMINI + "23980",
        "No capacity available for model gemini-3-flash-preview on the server",
        "overloaded",
    ),
    (OPENAI_DOCS, "429 - The engine is currently overloaded, please try again later", "overloaded"),
    # -- authentication
    (
        CC + "6459",
        'API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"OAuth '
        'token has expired. Please obtain a new token or refresh your existing token."},'
        '"request_id":"req_011CSSdA5fqJCVm1m4XMjNks"}',
        "auth",
    ),
    (
        CC + "44930",
        'API Error: 401 {"type":"error","error":{"type":"authentication_error","message":'
        '"Invalid authentication credentials"},"request_id":"req_011CZqG3x3i7dqsprB5xnir7"}',
        "auth",
    ),
    (
        CC + "55469",
        "Error: Claude Code web sessions require authentication with a Claude.ai account. API "
        "key authentication is not sufficient. Please run /login to authenticate, or check your "
        "authentication status with /status.",
        "auth",
    ),
    (
        GEMINI + "4690",
        "✕ [API Error: API key not valid. Please pass a valid API key. (Status: INVALID_ARGUMENT)]",
        "auth",
    ),
    (OPENAI_DOCS, "401 - Incorrect API key provided", "auth"),
    # -- permission
    (
        "https://github.com/Ivy-Interactive/Ivy-Tendril/issues/1813",
        "Permission to use Bash has been denied because Claude Code is running in don't ask mode.",
        "permission",
    ),
    (
        "https://github.com/anthropics/claude-code-action/issues/20",
        "Claude requested permissions to use Bash, but you haven't granted it yet.",
        "permission",
    ),
    (
        "https://github.com/a1exlism/claude-code-cmd-fix-thinking-error/issues/1",
        "ls in '/Users/mayur/.claude/fix_claude_thinking_error.py' was blocked. For security, "
        "Claude Code may only list files in the allowed working directories for this session: "
        "'/Users/mayur/mayurstatic'.",
        "permission",
    ),
    (CC + "29538", "/usr/bin/bash: line 1: /c/Users/Zane: Permission denied", "permission"),
    (OPENAI_DOCS, "403 - Country, region, or territory not supported", "permission"),
    # -- content policy
    (
        CC + "61653",
        "API Error: Claude Code is unable to respond to this request, which appears to violate "
        "our Usage Policy (https://www.anthropic.com/legal/aup). Try rephrasing the request or "
        "attempting a different approach.",
        "content_policy",
    ),
    (
        CC + "3028",
        "API Error: Claude Code is unable to respond to this request, which appears to violate "
        "our Usage Policy (https://www.anthropic.com/legal/aup). Please double press esc to edit "
        "your last message or start a new session for Claude Code to assist with a different task.",
        "content_policy",
    ),
    # -- context length
    (
        CC + "228",
        'API Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"input '
        "length and `max_tokens` exceed context limit: 184915 + 20000 > 204648, decrease input "
        'length or `max_tokens` and try again"}}',
        "context_length",
    ),
    (
        CODEX + "2921",
        "stream disconnected before completion: Your input exceeds the context window of this "
        "model. Please adjust your input and try again.",
        "context_length",
    ),
    (
        CODEX + "14310",
        "Codex ran out of room in the model's context window. Start a new thread or clear "
        "earlier history before retrying.",
        "context_length",
    ),
    (
        "https://github.com/Alishahryar1/free-claude-code/issues/263",
        "The input (345516 tokens) is longer than the model's context length (262144 tokens). "
        "(request_id=req_123)",
        "context_length",
    ),
    (
        "https://github.com/ddalcu/mlx-serve/issues/66",
        "API Error: 400 Prompt exceeds maximum context length",
        "context_length",
    ),
    (
        "https://github.com/lbjlaq/Antigravity-Manager/issues/763",
        "Prompt is too long (server-side context limit reached).",
        "context_length",
    ),
    # -- timeouts
    (
        CC + "4699",
        "API Error (Request timed out.) · Retrying in 1 seconds… (attempt 2/10)",
        "timeout",
    ),
    (CC + "2728", "API Error: Request timed out.", "timeout"),
    (CC + "6266", "AxiosError: timeout of 5000ms exceeded", "timeout"),
    (CC + "3505", "Command timed out after 2m 0.0s", "timeout"),
    (
        "https://github.com/farion1231/cc-switch/issues/5831",
        "API Error: The operation timed out",
        "timeout",
    ),
    # -- network
    (
        CC + "4064",
        "API Error (Connection error.) · Retrying in 34 seconds… (attempt 8/10)",
        "network",
    ),
    (CC + "4064", "TypeError (fetch failed)", "network"),
    (CC + "42949", "API Error: Unable to connect to API (ECONNRESET)", "network"),
    (CC + "57222", "Failed to connect to api.anthropic.com: ECONNRESET", "network"),
    (
        CODEX + "12207",
        "stream disconnected before completion: error sending request for url "
        "(https://chatgpt.com/backend-api/codex/responses)",
        "network",
    ),
    (
        CODEX + "41895",
        "stream disconnected before completion: An error occurred while processing your request. "
        "You can retry your request, or contact us through our help center at help.openai.com if "
        "the error persists. Please include the request ID cfaf2c7c-7a57-4817-92fc-4e18058311df "
        "in your message.",
        "network",
    ),
    (
        "https://github.com/router-for-me/CLIProxyAPI/issues/2410",
        "stream disconnected before completion: stream closed before response.completed",
        "network",
    ),
    # -- server-side API errors and invalid requests
    (OPENAI_DOCS, "500 - The server had an error while processing your request", "api_error"),
    (
        GEMINI + "15425",
        '[API Error: [{ "error": { "code": 400, "message": "Request contains an invalid '
        'argument.", "errors": [ { "message": "Request contains an invalid argument.", '
        '"domain": "global", '
        '"reason": "badRequest" } ], "status": "INVALID_ARGUMENT" } } ]]',
        "api_error",
    ),
    (
        "https://github.com/router-for-me/CLIProxyAPI/issues/2016",
        '{ "error": { "message": "No tool call found for function call output with call_id '
        'call_nOWDnpBmdz4KqHWu8nM0q90k.", "type": "invalid_request_error", "param": "input", '
        '"code": null } }',
        "api_error",
    ),
    # -- the model's own failures
    (
        GEMINI + "8567",
        "✕ [API Error: Model stream ended with an invalid chunk or missing finish reason.]",
        "model_error",
    ),
    # -- tools
    (CC + "968", "Error: String to replace not found in file.", "tool_failure"),
    (
        CC + "2046",
        "Error: File has not been read yet. Read it first before writing to it.",
        "tool_failure",
    ),
    (
        "https://github.com/QwenLM/qwen-code/issues/797",
        "Failed to edit, 0 occurrences found for old_string in /home/zhengxinhang/workspace/anax/"
        "src/knowledgegraph/workflow/extract_ontology.py. No edits made. The exact text in "
        "old_string was not found. Ensure you're not escaping content incorrectly and check "
        "whitespace, indentation, and context. Use read_file tool to verify.",
        "tool_failure",
    ),
    (
        CC + "52886",
        "Error: EISDIR: illegal operation on a directory, read "
        "'/home/thiagodecarvalhogalvao/_git/caas-api/src/modules/contents/dtos'",
        "tool_failure",
    ),
]


def test_the_table_is_big_enough_and_covers_every_category_but_other() -> None:
    assert len(REAL_ERRORS) >= 40
    assert {c for _, _, c in REAL_ERRORS} == set(errorclass.CATEGORIES) - {"other"}
    assert all(s.startswith("https://") for s, _, _ in REAL_ERRORS)


@pytest.mark.parametrize(("source", "message", "expected"), REAL_ERRORS)
def test_real_errors_get_their_category(source: str, message: str, expected: str) -> None:
    found = errorclass.classify(message)
    assert found.category == expected, source
    assert found.source == "rule" and 0 < found.confidence <= 1


@pytest.fixture(scope="module")
def macros() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute(errorclass.sql_macros())
    yield con
    con.close()


def test_sql_gives_the_same_answers_as_python(macros: duckdb.DuckDBPyConnection) -> None:
    """Every real message, and a few made-up edge cases, through both implementations."""
    messages = [m for _, m, _ in REAL_ERRORS] + [
        "",
        "HTTP status 429",
        "error 503",
        "Tab\there  and\n\nnewlines  ",
        "ÉCHEC: accès refusé à C:\\Users\\Zoé\\file.txt (0x80070005)",
        "don't 'quoted' it's `back` 12:50am 3.5s v2.1.85 deadbeef 0xFF",
    ]
    for message in messages:
        for status in (None, 429, 503, 418, 500):
            rule, normalised, fingerprint = macros.execute(
                "SELECT error_rule($m, $s), error_normalised($m), error_fingerprint($m)",
                {"m": message, "s": status},
            ).fetchone() or (None, None, None)
            found = errorclass.rule_for(message, status)
            table = list(errorclass.RULES) + list(errorclass.STATUS_RULES)
            in_sql = (
                None if rule is None else (table[rule - 1].category, table[rule - 1].confidence)
            )
            assert in_sql == found, (message, status)
            assert normalised == errorclass.normalise(message), message
            assert fingerprint == errorclass.fingerprint(message), message


def test_the_status_code_decides_when_the_message_says_nothing() -> None:
    assert errorclass.classify("Overloaded", status=429).category == "overloaded"  # words win
    assert errorclass.classify("Request failed", kind="api", status=429) == (
        "rate_limit",
        0.8,
        "rule",
    )
    assert errorclass.classify("Request failed", kind="api", status=503).category == "overloaded"
    assert errorclass.classify("Request failed", kind="api", status=418).category == "api_error"
    assert errorclass.classify("Request failed", kind="api") == ("api_error", 0.3, "rule")
    assert errorclass.classify("boom", kind="tool") == ("tool_failure", 0.5, "rule")
    assert errorclass.classify("boom") == ("other", 0.1, "rule")


def test_a_producers_category_is_kept() -> None:
    # Claude Code's StopFailure error types: ours where they name one of ours.
    assert errorclass.classify("whatever", producer_category="rate_limit") == (
        "rate_limit",
        1.0,
        "producer",
    )
    assert errorclass.classify("x", producer_category="authentication_failed").category == "auth"
    assert errorclass.classify("x", producer_category="max_output_tokens").category == "model_error"
    # a category of its own stays as it is, with the producer's confidence when given
    kept = errorclass.classify("Overloaded", producer_category="api", producer_confidence=0.9)
    assert kept == ("api", 0.9, "producer")


# Pairs of real messages that differ only in ids, numbers, paths, quoted values or case.
SAME_KIND = [
    (
        "exceeded retry limit, last status: 429 Too Many Requests, request id: "
        "c6346410-8a50-495b-b711-08c6e4147c43",  # openai/codex#26057
        "Exceeded retry limit, last status: 429 Too Many Requests, request id: "
        "01d37902-b882-4fa9-961a-35e251d81208",  # openai/codex#26061
    ),
    (
        "exceeded retry limit, last status: 429 Too Many Requests, request id: "
        "c6346410-8a50-495b-b711-08c6e4147c43",  # openai/codex#26057
        "exceeded retry limit, last status: 429 Too Many Requests, request id: "
        "9c84b52ce87fbe62-SJC",  # openai/codex#10550
    ),
    (
        'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded.'
        '\nhttps://docs.claude.com/en/api/errors"},"request_id":"req_011CZTEFvft13DajMTp9pp64"}',
        'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded.'
        '\n     https://docs.claude.com/en/api/errors"},"request_id":"req_011CZTL4nhJHacjs381KS9GM"}',
    ),  # both anthropics/claude-code#39745
    (
        "You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try "
        "again in 5 days 22 hours 11 minutes.",  # openai/codex#3899
        "You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) or try "
        "again in 4 days 6 hours 37 minutes.",  # openai/codex#4095
    ),
    (
        'Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"Your credit '
        "balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade "
        'or purchase credits."},"request_id":"req_011CaXci6gfTVhUMdZHgjYRU"}',  # claude-code#54566
        'Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"Your credit '
        "balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade "
        'or purchase credits."},"request_id":"req_011Cdv3KhLWWi3ErrDsuQTYM"}',  # claude-code#85675
    ),
    (
        # both anthropics/claude-code#2046
        "API Error (Request timed out.) · Retrying in 1 seconds… (attempt 1/10)",
        "API Error (Request timed out.) · Retrying in 18 seconds… (attempt 6/10)",
    ),
    (
        'API Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"input '
        "length and `max_tokens` exceed context limit: 184915 + 20000 > 204648, decrease input "
        'length or `max_tokens` and try again"}}',  # claude-code#228
        'API Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"input '
        "length and `max_tokens` exceed context limit: 95769 + 8000 > 104698, decrease input "
        'length or `max_tokens` and try again"}}',  # numbers of other lengths
    ),
    (
        "ls in '/Users/mayur/.claude/fix.py' was blocked",
        "ls in '/home/someone/else/file.txt' was blocked",
    ),
    (
        "Error: EISDIR: illegal operation on a directory, read /home/a/_git/caas-api/src/dtos",
        "Error: EISDIR: illegal operation on a directory, read /srv/b/c",
    ),
    (
        "tool_use ids were found without tool_result blocks immediately after: "
        "toolu_01A09q90qw90lq917835lq9",
        "tool_use ids were found without tool_result blocks immediately after: "
        "toolu_015Y6Nrz4mfG1Fe5cx8hZ3Pq",
    ),
    ("Error 0x80070005 at 0x7ffd1234abcd", "Error 0xdeadbeef at 0x1f2e3d4c5b6a"),
]

DIFFERENT_KINDS = [
    "API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again.",
    "API Error: 401 OAuth token has expired. Please obtain a new token.",
    "exceeded retry limit, last status: 429 Too Many Requests, request id: x-1",
    "exceeded retry limit, last status: 503 Service Unavailable, request id: x-1",
    "Error: String to replace not found in file.",
    "Error: File has not been read yet. Read it first before writing to it.",
    "Permission to use Bash has been denied",
    "Permission to use Edit has been denied",
]


@pytest.mark.parametrize(("first", "second"), SAME_KIND)
def test_one_kind_of_error_has_one_fingerprint(first: str, second: str) -> None:
    assert errorclass.fingerprint(first) == errorclass.fingerprint(second)
    assert re.fullmatch(r"[0-9a-f]{16}", errorclass.fingerprint(first))


def test_different_kinds_have_different_fingerprints() -> None:
    prints = {errorclass.fingerprint(m) for m in DIFFERENT_KINDS}
    assert len(prints) == len(DIFFERENT_KINDS)
    # "429" and "503" are numbers, yet the words after them keep the two apart
    assert errorclass.normalise(DIFFERENT_KINDS[2]) == (
        "exceeded retry limit, last status: <n> too many requests, request id: <id>"
    )


def test_normalised_text_placeholders() -> None:
    assert errorclass.normalise(
        "Read '/tmp/a b.txt' at https://x.io/p?q=1 for toolu_01ABCDEFGH in "
        "C:\\Users\\me\\x.txt, id 123e4567-e89b-12d3-a456-426614174000, 3.5s, 0xff"
    ) == ("read '<str>' at <url> for <id> in <path>, id <uuid>, <n>s, <hex>")
    assert errorclass.normalise("x" * 600) == "x" * errorclass.MAX_NORMALISED
    assert errorclass.normalise(None) == ""


def test_rules_name_known_categories_and_valid_patterns() -> None:
    for rule in errorclass.RULES:
        assert rule.category in errorclass.CATEGORIES and 0 < rule.confidence <= 1
        re.compile(rule.regex)
    for srule in errorclass.STATUS_RULES:
        assert srule.category in errorclass.CATEGORIES and srule.low <= srule.high
    assert set(errorclass.PRODUCER_ALIASES.values()) <= set(errorclass.CATEGORIES)
    assert {c for c, _ in errorclass.FALLBACK.values()} <= set(errorclass.CATEGORIES)


def test_docs_hold_the_rule_table() -> None:
    """docs/errors.md lists the table between its markers, as :func:`docs_table` makes
    it (regenerate: python -c 'from tests.test_errorclass import write_docs; write_docs()')."""
    text = DOCS.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    assert text[start:end] == "\n" + docs_table() + "\n"


DOCS = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
BEGIN = "<!-- rules: generated from telemetryd/errorclass.py by tests/test_errorclass.py -->"
END = "<!-- end of rules -->"


def _cell(text: str) -> str:
    return "`" + text.replace("|", "\\|") + "`"


def docs_table() -> str:
    lines = [
        "| # | category | confidence | matches (lower-cased message; any of) |",
        "|---|---|---|---|",
    ]
    for index, rule in enumerate(errorclass.RULES, 1):
        patterns = "<br>".join(_cell(p) for p in rule.patterns)
        lines.append(f"| {index} | {rule.category} | {rule.confidence} | {patterns} |")
    lines += ["", "| HTTP status | category | confidence |", "|---|---|---|"]
    for srule in errorclass.STATUS_RULES:
        codes = str(srule.low) if srule.low == srule.high else f"{srule.low}–{srule.high}"
        lines.append(f"| {codes} | {srule.category} | {srule.confidence} |")
    lines += ["", "| kind | fallback category | confidence |", "|---|---|---|"]
    for kind, (category, confidence) in errorclass.FALLBACK.items():
        lines.append(f"| {kind} | {category} | {confidence} |")
    lines += ["", "| producer's category | ours |", "|---|---|"]
    for name, ours in errorclass.PRODUCER_ALIASES.items():
        lines.append(f"| `{name}` | {ours} |")
    lines += ["", "| # | fingerprint normaliser (pattern) | replacement |", "|---|---|---|"]
    for index, (pattern, replacement) in enumerate(errorclass.NORMALISERS, 1):
        lines.append(f"| {index} | {_cell(pattern)} | {_cell(replacement)} |")
    return "\n".join(lines)


def write_docs() -> None:
    text = DOCS.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOCS.write_text(text[:start] + "\n" + docs_table() + "\n" + text[end:], encoding="utf-8")


# -- the errors view, on a real database ----------------------------------------------


def _lines() -> list[bytes]:
    """Error events (with and without a producer's category), failed and good tool
    results, failed and good API requests, from the real messages above."""
    out: list[Any] = []
    base = {"session_id": "s1", "source": "claude-code", "received_at": "2026-03-01T10:00:00Z"}
    for n, (_, message, _) in enumerate(REAL_ERRORS):
        ts = f"2026-03-01T10:{n // 60:02d}:{n % 60:02d}Z"
        match n % 4:
            case 0:
                out.append(ev.Error(id=f"err-{n}", ts=ts, message=message, **base))
            case 1:
                tool = ev.Tool(name="Bash", use_id=f"u{n}", success=False, error=message)
                out.append(ev.ToolResult(id=f"tool-{n}", ts=ts, tool=tool, **base))
            case 2:
                out.append(
                    ev.ApiRequest(
                        id=f"api-{n}",
                        ts=ts,
                        tokens=ev.Tokens(source="unknown"),
                        success=False,
                        error=message,
                        **base,
                    )
                )
            case _:  # an error event whose producer named its category (StopFailure)
                out.append(
                    ev.Error(id=f"err-{n}", ts=ts, message=message, category="server_error", **base)
                )
    ok_tool = ev.Tool(name="Read", use_id="ok", success=True)
    out += [
        ev.ToolResult(id="tool-ok", ts="2026-03-01T11:00:00Z", tool=ok_tool, **base),
        ev.ApiRequest(
            id="api-ok",
            ts="2026-03-01T11:00:01Z",
            tokens=ev.Tokens(source="actual", input=1, output=1),
            success=True,
            **base,
        ),
        ev.ApiRequest(  # no message: the status code in attrs decides
            id="api-status",
            ts="2026-03-01T11:00:02Z",
            tokens=ev.Tokens(source="unknown"),
            success=False,
            attrs={"status_code": 429},
            **base,
        ),
        ev.ApiRequest(  # Codex names its status code so
            id="api-codex",
            ts="2026-03-01T11:00:03Z",
            tokens=ev.Tokens(source="unknown"),
            success=False,
            attrs={"http.response.status_code": 401},
            **base,
        ),
    ]
    return [ev.ENCODER.encode(ev.DECODER.decode(ev.ENCODER.encode(e))) + b"\n" for e in out]


SELECT_ERRORS = (
    "SELECT event_id, kind, category, category_source, confidence, fingerprint, "
    "normalised, status_code FROM errors"
)


def test_the_errors_view_classifies_every_source(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    lines = _lines()
    (journal / "20260301T100000Z-000001.jsonl").write_bytes(b"".join(lines))
    with Store(str(tmp_path / "telemetry.duckdb")) as store:
        assert store.materialize(str(journal)) == len(lines)
        with store.cursor() as cur:
            rows = cur.execute(SELECT_ERRORS).fetchall()

    # Independently: what each event should give, from the table and errorclass.classify.
    expected: dict[str, tuple[Any, ...]] = {}
    for n, (_, message, category) in enumerate(REAL_ERRORS):
        kind, event_id = [("error", "err"), ("tool", "tool"), ("api", "api"), ("error", "err")][
            n % 4
        ]
        if n % 4 == 3:
            row = ("api_error", "producer", 1.0)  # server_error, renamed
        else:
            row = (category, "rule", errorclass.classify(message, kind=kind).confidence)
        fp, norm = errorclass.fingerprint(message), errorclass.normalise(message)
        expected[f"{event_id}-{n}"] = (kind, *row, fp, norm, None)
    expected["api-status"] = ("api", "rate_limit", "rule", 0.8, errorclass.fingerprint(""), "", 429)
    expected["api-codex"] = ("api", "auth", "rule", 0.8, errorclass.fingerprint(""), "", 401)

    # The read-only, sandboxed path (`telemetryctl query` with the daemon stopped) sees the
    # same rows: the macros are in the database file, not in the connection that made it.
    con = sandbox.open_readonly(str(tmp_path / "telemetry.duckdb"))
    try:
        query = sandbox.Query(con.cursor())
        query.run(SELECT_ERRORS)
        assert sorted(row for batch in query.batches() for row in batch) == sorted(rows)
        query.close()
    finally:
        con.close()

    got = {row[0]: row[1:] for row in rows}
    assert len(rows) == len(got) == len(expected)  # the good tool result and request: no row
    assert got == expected
    by_kind = Counter(row[1] for row in rows)
    assert by_kind == {
        "error": sum(1 for n in range(len(REAL_ERRORS)) if n % 4 in (0, 3)),
        "tool": sum(1 for n in range(len(REAL_ERRORS)) if n % 4 == 1),
        "api": sum(1 for n in range(len(REAL_ERRORS)) if n % 4 == 2) + 2,
    }
