"""Error classes: a category, a confidence and a fingerprint for every error message.

The rules are data: :data:`RULES`, checked in order on the lower-cased message (the
first whose pattern matches gives the category and its confidence), then
:data:`STATUS_RULES` on the HTTP status code when the producer gave one, then the
fallback of the error's kind (:data:`FALLBACK`). A producer's own category is kept
(mapped through :data:`PRODUCER_ALIASES` where it names one of ours differently).

The fingerprint groups occurrences of the same kind of error: the message lower-cased,
with URLs, request ids, UUIDs, provider ids (``req_...``, ``toolu_...``), single- and
back-quoted values, paths, hex and numbers replaced by placeholders (:data:`NORMALISERS`,
applied in order), whitespace collapsed and cut to :data:`MAX_NORMALISED` characters:
the *normalised text*. The fingerprint is the first 16 hex digits of its SHA-256, short
enough to group by and stable across versions as long as the normalisers are. Double
quotes are left alone: API errors carry JSON, whose quoted keys and types are the kind
of the error (the ids, numbers and paths inside it are still normalised).

The store applies the same rules in SQL (:func:`sql_macros`, installed with the views:
``error_rule``, ``error_normalised``, ``error_fingerprint``), so that the ``errors``
view classifies every error, old ones too, and a change of rules needs no journal
rewrite. Every pattern is written in the syntax that Python's ``re`` (ASCII mode) and
DuckDB's RE2 share: no look-around, no back-references; tests/test_errorclass.py holds
the two to the same answers. docs/errors.md lists the table (held to it by a test).

Pure Python and the standard library only: the daemon and the client may import it.
"""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

CATEGORIES = (
    "rate_limit",
    "overloaded",
    "auth",
    "permission",
    "content_policy",
    "context_length",
    "timeout",
    "network",
    "api_error",
    "model_error",
    "tool_failure",
    "other",
)

KINDS = ("error", "tool", "api")  # error events, failed tool results, failed API requests


class Rule(NamedTuple):
    category: str
    confidence: float
    patterns: tuple[str, ...]  # alternatives, matched anywhere in the lower-cased message

    @property
    def regex(self) -> str:
        return "|".join(f"(?:{p})" for p in self.patterns)


class StatusRule(NamedTuple):
    category: str
    confidence: float
    low: int  # HTTP status codes low..high (inclusive)
    high: int


# Words first (most specific kinds first: a context-length error also says "invalid
# request", a quota error may mention an API key), bare status numbers in the text last.
RULES: tuple[Rule, ...] = (
    Rule(
        "content_policy",
        0.9,
        (
            r"usage policy",
            r"violat\w* (?:our|the) (?:\w+ )?polic",
            r"content[ _-]?(?:policy|filter|management)",
            r"safety (?:system|filter|settings)",
            r"blocked (?:due to|for) safety",
            r"finish_?reason\W{0,3}safety",
            r"prohibited content",
            r"\brecitation\b",
        ),
    ),
    Rule(
        "context_length",
        0.95,
        (
            r"context (?:length|window|limit|size)",
            r"context_length",
            r"prompt is too long",
            r"too many (?:input )?tokens",
            r"input token count",
            r"exceeds? the maximum number of tokens",
            r"maximum (?:context|input) length",
        ),
    ),
    Rule(
        "context_length",
        0.6,
        (r"request_too_large", r"request entity too large", r"prompt exceeds"),
    ),
    Rule(
        "overloaded",
        0.95,
        (
            r"overloaded",
            r"no capacity available",
            r"\bat capacity\b",
            r"high demand",
            r"server is busy",
        ),
    ),
    Rule(
        "rate_limit",
        0.9,
        (
            r"rate[ _-]?limit",
            r"too many requests",
            r"usage[ _]limit",
            r"(?:session|weekly|daily|monthly) limit",
            r"hit your (?:\w+ )?limit",
            r"\bquota",
            r"resource[ _]?(?:has been )?exhausted",
            r"credit balance",
            r"billing",
            r"spend(?:ing)? limit",
            r"throttl",
            r"tokens per (?:minute|day)",
        ),
    ),
    Rule(
        "auth",
        0.9,
        (
            r"authenticat",
            r"unauthori[sz]ed",
            r"invalid[ _-]?(?:x-)?api[ _-]?key",
            r"api[ _]key (?:not valid|not found|is invalid|expired)",
            r"incorrect api key",
            r"api_key_invalid",
            r"(?:oauth|access|auth|refresh) token",
            r"token (?:has )?expired",
            r"run /login",
            r"not logged in",
            r"invalid credentials",
            r"must be a member of an organization",
        ),
    ),
    Rule(
        "permission",
        0.85,
        (
            r"permission",
            r"forbidden",
            r"not[ _]allowed",
            r"access denied",
            r"\beacces\b",
            r"\beperm\b",
            r"operation not permitted",
            r"was blocked",
            r"haven't granted",
            r"has been denied",
            r"region,? or territory",
            r"not supported in your (?:country|region)",
        ),
    ),
    Rule(
        "timeout",
        0.9,
        (
            r"timed? ?out",
            r"deadline[ _]exceeded",
            r"\betimedout\b",
            r"took too long",
        ),
    ),
    Rule(
        "network",
        0.85,
        (
            r"connection (?:error|reset|refused|closed|lost|aborted)",
            r"\beconn(?:reset|refused|aborted)\b",
            r"\benotfound\b",
            r"\beai_again\b",
            r"\bepipe\b",
            r"socket hang up",
            r"socket connection was closed",
            r"fetch failed",
            r"network (?:error|is unreachable)",
            r"unable to connect",
            r"failed to connect",
            r"error sending request",
            r"stream disconnected",
            r"stream closed before",
            r"getaddrinfo",
            r"certificate",
        ),
    ),
    Rule(
        "model_error",
        0.8,
        (
            r"model stream ended",
            r"invalid chunk",
            r"missing finish reason",
            r"empty response",
            r"model produced invalid",
            r"malformed[ _](?:function|tool)[ _]call",
            r"output token maximum",
            r"max_output_tokens",
            r"no candidates",
        ),
    ),
    Rule(
        "tool_failure",
        0.85,
        (
            r"string to replace (?:was )?not found",
            r"old_string",
            r"\b0 occurrences found",
            r"file has not been read yet",
            r"file has been modified since read",
            r"file does not exist",
            r"no such file or directory",
            r"\benoent\b",
            r"\beisdir\b",
            r"\benotdir\b",
            r"exit code [1-9]",
            r"exited with (?:code|status) [1-9]",
            r"command not found",
            r"command failed",
            r"inputvalidationerror",
            r"tool_use_error",
        ),
    ),
    Rule(
        "api_error",
        0.75,
        (
            r"internal server error",
            r"internal error",
            r"server_error",
            r"server had an error",
            r"error occurred while processing your request",
            r"\bapi_error\b",
            r"bad gateway",
            r"invalid_request",
            r"invalid request",
            r"invalid[ _]argument",
            r"not_found_error",
            r"no tool call found",
            r"tool_use ids were found without tool_result",
        ),
    ),
    Rule("rate_limit", 0.7, (r"\b429\b",)),
    Rule("overloaded", 0.7, (r"\b(?:529|503)\b", r"\bunavailable\b")),
    Rule("auth", 0.6, (r"\b401\b",)),
    Rule("permission", 0.6, (r"\b403\b",)),
    Rule("timeout", 0.6, (r"\b(?:408|504)\b",)),
    Rule("api_error", 0.5, (r"\b(?:400|404|409|422|500|502)\b", r"api error")),
)

# When no rule matches the message: the producer's HTTP status code, if any.
STATUS_RULES: tuple[StatusRule, ...] = (
    StatusRule("rate_limit", 0.8, 429, 429),
    StatusRule("overloaded", 0.8, 529, 529),
    StatusRule("overloaded", 0.7, 503, 503),
    StatusRule("auth", 0.8, 401, 401),
    StatusRule("permission", 0.7, 403, 403),
    StatusRule("timeout", 0.7, 408, 408),
    StatusRule("timeout", 0.7, 504, 504),
    StatusRule("context_length", 0.5, 413, 413),
    StatusRule("api_error", 0.6, 500, 599),
    StatusRule("api_error", 0.5, 400, 499),
)

# When neither matches: by the error's kind.
FALLBACK: dict[str, tuple[str, float]] = {
    "tool": ("tool_failure", 0.5),
    "api": ("api_error", 0.3),
    "error": ("other", 0.1),
}

# Producers' own category names for ours (Claude Code's StopFailure `error_type`, and
# Anthropic's / OpenAI's / Google's error types). Any other producer category is kept
# as it is.
PRODUCER_ALIASES: dict[str, str] = {
    "authentication_failed": "auth",
    "authentication_error": "auth",
    "oauth_org_not_allowed": "permission",
    "permission_error": "permission",
    "permission_denied": "permission",
    "billing_error": "rate_limit",
    "insufficient_quota": "rate_limit",
    "rate_limit_error": "rate_limit",
    "resource_exhausted": "rate_limit",
    "overloaded_error": "overloaded",
    "unavailable": "overloaded",
    "invalid_request": "api_error",
    "invalid_request_error": "api_error",
    "server_error": "api_error",
    "max_output_tokens": "model_error",
    "request_too_large": "context_length",
    "context_length_exceeded": "context_length",
    "deadline_exceeded": "timeout",
    "unknown": "other",
}

# The fingerprint's normalisers: (pattern, replacement) over the lower-cased message, in
# order. A replacement may name the pattern's first group as \1.
NORMALISERS: tuple[tuple[str, str], ...] = (
    (r"[a-z][a-z0-9+.-]*://[^\s\"'`<>)\]}]+", "<url>"),
    (r"(request[ _-]?id\W{0,3})[0-9a-z][0-9a-z_-]*", r"\1<id>"),
    (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>"),
    (
        r"\b(?:req|toolu|srvtoolu|msg|call|chatcmpl|resp|batch|file|run|thread|asst)"
        r"_[0-9a-z_]{6,}",
        "<id>",
    ),
    (r"(^|[^0-9a-z_])'[^'\n]*'", r"\1'<str>'"),
    (r"`[^`\n]*`", "`<str>`"),
    (r"(^|[\s\"'(=\[,])((?:[a-z]:|~|\.{1,2})?(?:[/\\][0-9a-z_.@+~-]+){2,}[/\\]?)", r"\1<path>"),
    (r"\b0x[0-9a-f]+\b", "<hex>"),
    (r"\b[0-9a-f]*(?:[0-9][0-9a-f]*[a-f]|[a-f][0-9a-f]*[0-9])[0-9a-f]*\b", "<hex>"),
    (r"[0-9]+(?:[.,:][0-9]+)*", "<n>"),
    (r"\s+", " "),
)
MAX_NORMALISED = 500  # characters of the normalised text kept (and hashed)
FINGERPRINT_HEX = 16  # hex digits of the SHA-256 kept

_RULES = tuple((re.compile(rule.regex, re.ASCII), rule) for rule in RULES)
_NORMALISERS = tuple((re.compile(p, re.ASCII), r) for p, r in NORMALISERS)


class Classified(NamedTuple):
    category: str
    confidence: float
    source: str  # "producer" or "rule"


def rule_for(message: str | None, status: int | None = None) -> tuple[str, float] | None:
    """The category and confidence the rules give ``message`` (and ``status``), or None
    when none matches."""
    lowered = (message or "").lower()
    for regex, rule in _RULES:
        if regex.search(lowered):
            return rule.category, rule.confidence
    if status is not None:
        for srule in STATUS_RULES:
            if srule.low <= status <= srule.high:
                return srule.category, srule.confidence
    return None


def classify(
    message: str | None,
    *,
    kind: str = "error",
    status: int | None = None,
    producer_category: str | None = None,
    producer_confidence: float | None = None,
) -> Classified:
    """The category of one error. A producer's own category wins (its confidence, else
    1); then the rules; then the kind's fallback."""
    if producer_category:
        category = PRODUCER_ALIASES.get(producer_category.lower(), producer_category)
        confidence = 1.0 if producer_confidence is None else producer_confidence
        return Classified(category, confidence, "producer")
    found = rule_for(message, status) or FALLBACK[kind]
    return Classified(found[0], found[1], "rule")


def normalise(message: str | None) -> str:
    """The message with its variable parts replaced by placeholders (module docstring)."""
    text = (message or "").lower()
    for regex, replacement in _NORMALISERS:
        text = regex.sub(replacement, text)
    return text.strip()[:MAX_NORMALISED]


def fingerprint(message: str | None) -> str:
    """A short stable hash of :func:`normalise` (``message``)."""
    return hashlib.sha256(normalise(message).encode()).hexdigest()[:FINGERPRINT_HEX]


# -- the same rules in SQL ----------------------------------------------------------


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_macros() -> str:
    """DuckDB macros that apply the tables above (the store installs them before the
    views): ``error_rule(message, status)`` the 1-based index of the first matching
    rule in ``error_rules()`` (rules, then status rules; NULL when none matches),
    ``error_normalised(message)`` and ``error_fingerprint(message)``."""
    whens = [
        f"WHEN regexp_matches(lower(message), {_literal(rule.regex)}) THEN {index}"
        for index, rule in enumerate(RULES, 1)
    ]
    whens += [
        f"WHEN status BETWEEN {rule.low} AND {rule.high} THEN {index}"
        for index, rule in enumerate(STATUS_RULES, len(RULES) + 1)
    ]
    case = "CASE\n    " + "\n    ".join(whens) + "\nEND"
    table = [(r.category, r.confidence) for r in RULES] + [
        (r.category, r.confidence) for r in STATUS_RULES
    ]
    categories = ", ".join(_literal(c) for c, _ in table)
    confidences = ", ".join(repr(float(v)) for _, v in table)
    fallback_cat = " ".join(
        f"WHEN {_literal(kind)} THEN {_literal(cat)}" for kind, (cat, _) in FALLBACK.items()
    )
    fallback_conf = " ".join(
        f"WHEN {_literal(kind)} THEN {conf!r}" for kind, (_, conf) in FALLBACK.items()
    )
    aliases = " ".join(
        f"WHEN {_literal(name)} THEN {_literal(ours)}" for name, ours in PRODUCER_ALIASES.items()
    )
    text = "lower(coalesce(message, ''))"
    for pattern, replacement in NORMALISERS:
        text = f"regexp_replace({text}, {_literal(pattern)}, {_literal(replacement)}, 'g')"
    return f"""-- Generated by telemetryd/errorclass.py (sql_macros): the error rules in SQL.
CREATE OR REPLACE MACRO error_rule(message, status) AS {case};
CREATE OR REPLACE MACRO error_rule_category(idx) AS [{categories}][idx];
CREATE OR REPLACE MACRO error_rule_confidence(idx) AS [{confidences}][idx];
CREATE OR REPLACE MACRO error_fallback_category(kind) AS CASE kind {fallback_cat} END;
CREATE OR REPLACE MACRO error_fallback_confidence(kind) AS CASE kind {fallback_conf} END;
CREATE OR REPLACE MACRO error_producer_category(category) AS
    CASE lower(category) {aliases} ELSE category END;
CREATE OR REPLACE MACRO error_normalised(message) AS
    left(trim({text}), {MAX_NORMALISED});
CREATE OR REPLACE MACRO error_fingerprint(message) AS
    left(sha256(error_normalised(message)), {FINGERPRINT_HEX});
"""
