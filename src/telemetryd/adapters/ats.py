"""Tool-call metadata of the agentic telemetry spec (ATS) -> ``attrs.ats`` of tool events.

The agentic telemetry spec (github.com/jonathan-kellerai/agentic-telemetry-spec,
Apache-2.0) puts a ``metadata`` object into a tool's input: ``source`` (the caller as
``<caller_type>:<caller_name>``), ``provenance`` (session -> agent -> skill/hook ->
tool), ``experiment`` (an A/B assignment), ``koth`` (Oracle and win/loss signals),
``decision`` (a decision id to join on) and ``_compat`` (schema version, legacy
markers). TaskCreate and TaskUpdate already use ``metadata`` for user data, so there
it sits under ``metadata._dgm`` and every other key of ``metadata`` is the user's.

:func:`from_tool_input` finds it in a tool's input (a hook's ``tool_input``, an OTLP
event's tool arguments) and returns what the tool event keeps as ``attrs.ats``
(``schemas/ats-v1.schema.json`` publishes the shape; docs/ats.md the views over it)::

    {"v": 1, "at": "metadata", "tier": 2, "valid": false,
     "errors": ["decision.decision_id: 'dec_1' does not match dec_YYYYMMDD_HHMMSS_NNNNNN"],
     "has_legacy_compat": false,
     "metadata": {"source": "skill:x", "provenance": {...}, "decision": {...}}}

- ``metadata`` keeps the spec's fields only, each value bounded (strings, lists); a
  key the spec does not define is named in ``errors`` but its value is not kept (it
  may be anyone's data, and the rest of a tool's input is never kept either). When
  the copy would not fit :data:`MAX_BYTES` it is cut further (``truncated``).
- ``valid`` says whether the metadata follows the spec: its JSON Schemas (types,
  enums, patterns, required keys, no unknown keys; the ``uuid`` and ``date-time``
  formats asserted) and the rules its documents state in words (a tier 1 tool carries
  ``koth`` and ``decision``; ``oracle_consulted: true`` needs the recommended agent
  and its confidence; an ``experiment_id`` needs a ``variant_id`` and the other way
  round). Metadata that does not follow it is still kept, with the reasons in
  ``errors`` (at most :data:`MAX_ERRORS`); the event is never refused for it.
- A pre-spec caller's ``{"source": "..."}`` alone is the legacy shape the spec keeps
  parseable: valid, tier 3, ``has_legacy_compat: true``.
- ``tier``: the spec's tier of the tool (1 AskUserQuestion, Task, Skill; 2 Bash,
  Write, ...; 3 the rest of its 24 tools); for another tool, from the blocks present
  (``experiment``: 1, ``koth`` or ``decision``: 2, else 3).

Only the spec's 24 tools are assumed to mean ATS by ``metadata``; any other tool
(an MCP tool with a ``metadata`` parameter of its own) only when its ``metadata``
is an object with ``provenance``, ``experiment``, ``koth``, ``decision`` or
``_compat``. Plain Python without ``re`` or ``json``: ``telemetryctl hook`` runs it on
every tool call that carries metadata.
"""

from __future__ import annotations

from telemetryd import fastjson

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: `telemetryctl hook` imports this module
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    Field: TypeAlias = tuple[str, bool, Any]  # (kind, nullable, extra)

VERSION = 1  # of the attrs.ats shape (schemas/ats-v1.schema.json)
SPEC = "agentic-telemetry-spec 1.0.0"
MAX_BYTES = 4096  # attrs.ats encoded, at most (the daemon's attrs limit is 16 KiB)
MAX_TEXT = 256  # characters of one string kept
MAX_ITEMS = 32  # items of one list kept
MAX_ERRORS = 10
MAX_ERROR_TEXT = 200

TOOL_TIERS = {
    "AskUserQuestion": 1,
    "Task": 1,
    "Skill": 1,
    "Bash": 2,
    "Write": 2,
    "Edit": 2,
    "SendMessage": 2,
    "EnterPlanMode": 2,
    "ExitPlanMode": 2,
    "Read": 3,
    "Glob": 3,
    "Grep": 3,
    "WebSearch": 3,
    "WebFetch": 3,
    "TaskCreate": 3,
    "TaskUpdate": 3,
    "TaskList": 3,
    "TaskGet": 3,
    "TeamCreate": 3,
    "TeamDelete": 3,
    "ToolSearch": 3,
    "NotebookEdit": 3,
    "TaskOutput": 3,
    "TaskStop": 3,
}
NESTED = frozenset({"TaskCreate", "TaskUpdate"})  # ATS at metadata._dgm
TIER1_REQUIRED = ("koth", "decision")  # tools/{ask-user-question,task,skill}.schema.json
BLOCKS = ("source", "provenance", "experiment", "koth", "decision", "_compat")
MARKERS = ("provenance", "experiment", "koth", "decision", "_compat")

# The spec's enums (schemas/goals/*.schema.json); null is allowed where noted below.
CALLER_TYPES = ("skill", "agent", "hook", "main")
ASSIGNMENT_METHODS = ("random", "deterministic", "oracle_guided")
TREATMENT_GROUPS = ("control", "treatment")
KOTH_DOMAINS = (
    "architecture",
    "planning",
    "editing",
    "review",
    "tooling",
    "data",
    "security",
    "cross_cutting",
)
OUTCOME_SIGNALS = ("win", "loss", "draw", "pending")
QUESTION_TYPES = (
    "architecture",
    "approval",
    "feature_selection",
    "binary_choice",
    "priority",
    "config",
    "workflow",
    "tooling",
    "naming",
)
INTENTS = ("exploration", "editing", "review", "planning", "autonomous")
SIGNAL_TYPES = ("pre_decision", "post_decision", "outcome")
DECISION_DOMAINS = (
    "frontend",
    "backend",
    "devops",
    "planning",
    "tooling",
    "data",
    "security",
    "cross_cutting",
)

# The spec's patterns, as its JSON Schemas write them (the published schema repeats them;
# the checks below are plain code).
SOURCE_PATTERN = "^(skill|agent|hook|main):.+$"
SEMVER_PATTERN = "^\\d+\\.\\d+\\.\\d+$"
HASH8_PATTERN = "^[0-9a-f]{8}$"
DECISION_ID_PATTERN = "^dec_[0-9]{8}_[0-9]{6}_[0-9]{6}$"

# Field tables: name -> (kind, nullable, extra). Kinds: str, bool, ratio (a number from 0
# to 1), enum (extra: the values), semver, hash8, decision_id, uuid, datetime, strings (a
# list of strings), chain (a list of CHAIN_ITEM objects), migration (a MIGRATION object).
PROVENANCE: dict[str, Field] = {
    "session_id": ("uuid", False, None),
    "agent_id": ("uuid", True, None),
    "caller_type": ("enum", False, CALLER_TYPES),
    "caller_name": ("str", False, None),
    "caller_chain": ("chain", False, None),
    "project_path_hash": ("hash8", True, None),
    "timestamp_utc": ("datetime", True, None),
}
PROVENANCE_REQUIRED = ("session_id", "caller_type", "caller_name")
CHAIN_ITEM: dict[str, Field] = {
    "caller_type": ("enum", False, CALLER_TYPES),
    "caller_name": ("str", False, None),
    "agent_id": ("uuid", True, None),
}
CHAIN_ITEM_REQUIRED = ("caller_type", "caller_name")
EXPERIMENT: dict[str, Field] = {
    "template_id": ("str", True, None),
    "template_version": ("semver", True, None),
    "experiment_id": ("str", True, None),
    "variant_id": ("str", True, None),
    "assignment_method": ("enum", True, ASSIGNMENT_METHODS),
    "treatment_group": ("enum", True, TREATMENT_GROUPS),
}
KOTH: dict[str, Field] = {
    "oracle_consulted": ("bool", False, None),
    "oracle_recommended_agent": ("str", True, None),
    "oracle_recommendation_confidence": ("ratio", True, None),
    "agents_in_options": ("strings", True, None),
    "koth_domain": ("enum", True, KOTH_DOMAINS),
    "outcome_signal": ("enum", True, OUTCOME_SIGNALS),
    "question_type": ("enum", True, QUESTION_TYPES),
}
KOTH_REQUIRED = ("oracle_consulted",)
DECISION: dict[str, Field] = {
    "decision_id": ("decision_id", True, None),
    "intent_classification": ("enum", True, INTENTS),
    "entity_id": ("hash8", True, None),
    "signal_type": ("enum", True, SIGNAL_TYPES),
    "parent_decision_id": ("decision_id", True, None),
    "decision_domain": ("enum", True, DECISION_DOMAINS),
}
COMPAT: dict[str, Field] = {
    "schema_version": ("semver", False, None),
    "legacy_source": ("str", True, None),
    "migrated_from": ("migration", True, None),
    "is_legacy_compat": ("bool", False, None),
}
COMPAT_REQUIRED = ("schema_version",)
MIGRATION: dict[str, Field] = {
    "tool_name": ("str", False, None),
    "old_schema_version": ("semver", False, None),
    "migration_date": ("datetime", False, None),
}
MIGRATION_REQUIRED = ("tool_name", "old_schema_version", "migration_date")
GOALS: dict[str, tuple[dict[str, Field], tuple[str, ...]]] = {
    "provenance": (PROVENANCE, PROVENANCE_REQUIRED),
    "experiment": (EXPERIMENT, ()),
    "koth": (KOTH, KOTH_REQUIRED),
    "decision": (DECISION, ()),
    "_compat": (COMPAT, COMPAT_REQUIRED),
}
NESTED_FIELDS: dict[str, tuple[dict[str, Field], tuple[str, ...]]] = {
    "chain": (CHAIN_ITEM, CHAIN_ITEM_REQUIRED),
    "migration": (MIGRATION, MIGRATION_REQUIRED),
}

_HEX = frozenset("0123456789abcdefABCDEF")
_LOWER_HEX = frozenset("0123456789abcdef")
_DIGITS = frozenset("0123456789")
_LINE_ENDS = frozenset("\n\r\u2028\u2029")  # what `.` in a JSON Schema pattern does not match


# -- finding it -------------------------------------------------------------------------


def from_tool_input(tool_name: Any, tool_input: Any) -> dict[str, Any] | None:
    """``attrs.ats`` for a tool call with input ``tool_input``, or None when it carries
    no ATS metadata (see the module docstring for where it is looked for)."""
    if not isinstance(tool_input, dict):
        return None
    meta = tool_input.get("metadata")
    if meta is None:
        return None
    name = tool_name if isinstance(tool_name, str) else ""
    if name in NESTED:
        if not isinstance(meta, dict) or meta.get("_dgm") is None:
            return None  # the user's own metadata, without ATS in it
        return check(meta["_dgm"], name, "metadata._dgm")
    if name in TOOL_TIERS or (isinstance(meta, dict) and any(k in meta for k in MARKERS)):
        return check(meta, name, "metadata")
    return None


def from_arguments(tool_name: Any, arguments: Any) -> dict[str, Any] | None:
    """:func:`from_tool_input` for tool arguments that may be JSON text (OTLP)."""
    if isinstance(arguments, str):
        if '"metadata"' not in arguments:
            return None
        try:
            arguments = fastjson.loads(arguments)
        except ValueError:  # cut short by the agent, or not JSON at all
            return None
    return from_tool_input(tool_name, arguments)


# -- checking it ------------------------------------------------------------------------


class _Check:
    """One metadata object's check: the reasons it does not follow the spec (the first
    :data:`MAX_ERRORS`, and how many), and whether the copy kept lost anything."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.count = 0
        self.truncated = False

    def error(self, path: str, message: str) -> None:
        self.count += 1
        if len(self.errors) < MAX_ERRORS:
            text = f"{path}: {message}" if path else message
            if len(text) > MAX_ERROR_TEXT:
                text = text[: MAX_ERROR_TEXT - 1] + "…"
            self.errors.append(text)

    def keep(self, value: Any) -> Any:
        """A scalar as kept: a string cut to :data:`MAX_TEXT`, numbers, booleans and null
        as they are; an array or object where the spec wants a scalar is not kept (null:
        the error names its type)."""
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                self.truncated = True
                return value[: MAX_TEXT - 1] + "…"
            return value
        if value is None or isinstance(value, (bool, int)):
            return value
        if isinstance(value, float) and value == value and abs(value) != float("inf"):
            return value
        return None

    def items(self, value: list[Any]) -> list[Any]:
        if len(value) > MAX_ITEMS:
            self.truncated = True
        return value[:MAX_ITEMS]

    def metadata(self, meta: dict[str, Any], tool_name: str) -> dict[str, Any]:
        kept: dict[str, Any] = {}
        for key in meta:
            if key not in BLOCKS:
                self.error(_path("", key), "not a key of the spec (its value is not kept)")
        for key in ("source", "provenance"):
            if key not in meta:
                self.error(key, "required")
        if TOOL_TIERS.get(tool_name) == 1:
            for key in TIER1_REQUIRED:
                if key not in meta:
                    self.error(key, f"required for {tool_name} (a tier 1 tool)")
        if "source" in meta:
            source = meta["source"]
            if not isinstance(source, str):
                self.error("source", f"expected a string, got {_kind(source)}")
            elif not _is_source(source):
                self.error("source", f"{_show(source)} is not <skill|agent|hook|main>:<name>")
            kept["source"] = self.keep(source)
        for key, (fields, required) in GOALS.items():
            if key in meta:
                kept[key] = self.object(meta[key], key, fields, required)
        experiment = meta.get("experiment")
        if isinstance(experiment, dict):
            has_experiment = experiment.get("experiment_id") is not None
            has_variant = experiment.get("variant_id") is not None
            if has_experiment != has_variant:
                missing = "variant_id" if has_experiment else "experiment_id"
                self.error(f"experiment.{missing}", "required when the other is set")
        koth = meta.get("koth")
        if isinstance(koth, dict) and koth.get("oracle_consulted") is True:
            for key in ("oracle_recommended_agent", "oracle_recommendation_confidence"):
                if koth.get(key) is None:
                    self.error(f"koth.{key}", "required when oracle_consulted is true")
        return kept

    def object(
        self, value: Any, path: str, fields: dict[str, Field], required: tuple[str, ...]
    ) -> Any:
        """``value`` checked against ``fields``; its known fields' values, bounded."""
        if not isinstance(value, dict):
            self.error(path, f"expected an object, got {_kind(value)}")
            return self.keep(value)
        kept: dict[str, Any] = {}
        for key in value:
            if key not in fields:
                self.error(_path(path, key), "not a field of the spec (its value is not kept)")
        for key in required:
            if key not in value:
                self.error(_path(path, key), "required")
        for key, (kind, nullable, extra) in fields.items():
            if key in value:
                kept[key] = self.field(value[key], _path(path, key), kind, nullable, extra)
        return kept

    def field(self, item: Any, where: str, kind: str, nullable: bool, extra: Any) -> Any:
        if item is None:
            if not nullable:
                self.error(where, f"expected {_expected(kind)}, got null")
            return None
        if kind in NESTED_FIELDS:
            fields, required = NESTED_FIELDS[kind]
            if kind != "chain":
                return self.object(item, where, fields, required)
            if not isinstance(item, list):
                self.error(where, f"expected an array, got {_kind(item)}")
                return self.keep(item)
            kept = [
                self.object(link, f"{where}[{n}]", fields, required) for n, link in enumerate(item)
            ]
            return self.items(kept)
        if kind == "strings":
            if not isinstance(item, list):
                self.error(where, f"expected an array of strings, got {_kind(item)}")
                return self.keep(item)
            for n, option in enumerate(item):
                if not isinstance(option, str):
                    self.error(f"{where}[{n}]", f"expected a string, got {_kind(option)}")
            return [self.keep(option) for option in self.items(item)]
        problem = _problem(kind, item, extra)
        if problem:
            self.error(where, problem)
        return self.keep(item)


def _show(value: Any) -> str:
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:39] + "…"
        return "'" + text + "'"
    return _kind(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check(meta: Any, tool_name: str = "", at: str = "metadata") -> dict[str, Any]:
    """``attrs.ats`` for the metadata object ``meta`` of tool ``tool_name`` found at
    ``at``: checked, and copied within bounds."""
    state = _Check()
    out: dict[str, Any] = {"v": VERSION, "at": at}
    legacy = False
    kept: dict[str, Any] | None = None
    if not isinstance(meta, dict):
        state.error("", f"{at} is {_kind(meta)}, not an object")
    elif len(meta) == 1 and isinstance(meta.get("source"), str):
        legacy = True  # a pre-spec caller's {"source": "..."} (docs/05-backward-compat.md)
        kept = {"source": state.keep(meta["source"])}
    else:
        kept = state.metadata(meta, tool_name)
    compat = kept.get("_compat") if kept else None
    if isinstance(compat, dict) and compat.get("is_legacy_compat") is True:
        legacy = True
    out["tier"] = _tier(tool_name, kept, legacy)
    out["valid"] = state.count == 0
    if state.errors:
        out["errors"] = state.errors
        if state.count > len(state.errors):
            out["more_errors"] = state.count - len(state.errors)
    out["has_legacy_compat"] = legacy
    if kept is not None:
        out["metadata"] = kept
    if state.truncated:
        out["truncated"] = True
    return _fit(out)


def _tier(tool_name: str, kept: dict[str, Any] | None, legacy: bool) -> int:
    if legacy and kept is not None and len(kept) == 1:
        return 3
    tier = TOOL_TIERS.get(tool_name)
    if tier is not None:
        return tier
    if kept and kept.get("experiment") is not None:
        return 1
    if kept and (kept.get("koth") is not None or kept.get("decision") is not None):
        return 2
    return 3


def _expected(kind: str) -> str:
    return {
        "bool": "a boolean",
        "ratio": "a number",
        "chain": "an array",
        "migration": "an object",
        "strings": "an array of strings",
    }.get(kind, "a string")


def _problem(kind: str, value: Any, extra: Any) -> str | None:
    """What is wrong with a non-null ``value`` of a field of ``kind``, or None."""
    if kind == "bool":
        return None if isinstance(value, bool) else f"expected a boolean, got {_kind(value)}"
    if kind == "ratio":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {_kind(value)}"
        return None if 0 <= value <= 1 else f"{value!r} is not between 0 and 1"
    if not isinstance(value, str):
        return f"expected a string, got {_kind(value)}"
    if kind == "enum":
        return None if value in extra else f"{_show(value)} is not one of {', '.join(extra)}"
    if kind == "semver":
        return None if _is_semver(value) else f"{_show(value)} is not a version X.Y.Z"
    if kind == "hash8":
        return None if _is_hash8(value) else f"{_show(value)} is not 8 lowercase hex digits"
    if kind == "decision_id":
        if _is_decision_id(value):
            return None
        return f"{_show(value)} does not match dec_YYYYMMDD_HHMMSS_NNNNNN"
    if kind == "uuid":
        return None if is_uuid(value) else f"{_show(value)} is not a UUID"
    if kind == "datetime":
        return None if is_datetime(value) else f"{_show(value)} is not an RFC 3339 date-time"
    return None


def _path(path: str, key: str) -> str:
    key = key if len(key) <= 40 else key[:39] + "…"
    return f"{path}.{key}" if path else key


# -- the spec's patterns and formats, in plain code ---------------------------------------


def _is_source(value: str) -> bool:
    kind, sep, rest = value.partition(":")
    if not sep or kind not in CALLER_TYPES:
        return False
    # `.+$`: one or more characters other than line terminators after the first colon
    # (a later colon belongs to the name: `skill:plugin:skill`).
    return bool(rest) and not any(char in _LINE_ENDS for char in rest)


def _digits(text: str) -> bool:
    return bool(text) and all(char in _DIGITS for char in text)


def _is_semver(value: str) -> bool:
    parts = value.split(".")
    return len(parts) == 3 and all(_digits(part) for part in parts)


def _is_hash8(value: str) -> bool:
    return len(value) == 8 and all(char in _LOWER_HEX for char in value)


def _is_decision_id(value: str) -> bool:
    parts = value.split("_")
    return (
        len(parts) == 4
        and parts[0] == "dec"
        and [len(p) for p in parts[1:]] == [8, 6, 6]
        and all(_digits(p) for p in parts[1:])
    )


def is_uuid(value: str) -> bool:
    """RFC 4122's text form: 8-4-4-4-12 hexadecimal digits (either case)."""
    groups = value.split("-")
    return [len(g) for g in groups] == [8, 4, 4, 4, 12] and all(
        char in _HEX for group in groups for char in group
    )


def is_datetime(value: str) -> bool:
    """RFC 3339 ``date-time``: ``YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)``, a real
    calendar date, seconds up to 60 (a leap second), ``t`` and ``z`` in either case."""
    if len(value) < 20 or value[10] not in "Tt":
        return False
    date, clock = value[:10], value[11:]
    if date[4] != "-" or date[7] != "-":
        return False
    year, month, day = date[:4], date[5:7], date[8:]
    if not (_digits(year) and _digits(month) and _digits(day)):
        return False
    if clock[-1:] in ("Z", "z"):
        clock, offset = clock[:-1], ""
    else:
        if len(clock) < 6 or clock[-6] not in "+-" or clock[-3] != ":":
            return False
        clock, offset = clock[:-6], clock[-5:]
        if not (_digits(offset[:2]) and _digits(offset[3:])):
            return False
        if int(offset[:2]) > 23 or int(offset[3:]) > 59:
            return False
    whole, dot, fraction = clock.partition(".")
    if dot and not _digits(fraction):
        return False
    if len(whole) != 8 or whole[2] != ":" or whole[5] != ":":
        return False
    hour, minute, second = whole[:2], whole[3:5], whole[6:]
    if not (_digits(hour) and _digits(minute) and _digits(second)):
        return False
    y, m, d = int(year), int(month), int(day)
    if not 1 <= m <= 12 or d < 1:
        return False
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[m - 1]
    return d <= days and int(hour) <= 23 and int(minute) <= 59 and int(second) <= 60


# -- bounds -----------------------------------------------------------------------------


def _shrink(value: Any, text: int, items: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= text else value[: text - 1] + "…"
    if isinstance(value, list):
        return [_shrink(item, text, items) for item in value[:items]]
    if isinstance(value, dict):
        return {key: _shrink(item, text, items) for key, item in value.items()}
    return value


JOIN_KEYS = ("source", "experiment", "decision")  # what the views join on: kept longest


def _fit(out: dict[str, Any]) -> dict[str, Any]:
    """``out`` within :data:`MAX_BYTES` as stored (UTF-8): the strings and lists of the
    metadata's other blocks cut shorter, then only the blocks the views join on (an
    experiment's assignment, a decision id, the source) kept, then those cut shorter too,
    then the metadata left out (``truncated`` says so in each case)."""
    if fastjson.utf8_size(out) <= MAX_BYTES:
        return out
    if "metadata" in out:
        out["truncated"] = True
        meta = out["metadata"]
        joins = {key: value for key, value in meta.items() if key in JOIN_KEYS}
        for metadata in (
            {k: v if k in JOIN_KEYS else _shrink(v, 64, 8) for k, v in meta.items()},
            joins,  # (ids cut short would join nothing: they are kept whole while they fit)
            _shrink(joins, 64, 8),
        ):
            out["metadata"] = metadata
            if fastjson.utf8_size(out) <= MAX_BYTES:
                return out
        del out["metadata"]
    return out
