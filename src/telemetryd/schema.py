"""The JSON Schemas telemetryd publishes, generated from the code.

``python -m telemetryd.schema DIR`` (``make schema``) writes
``DIR/event-v<SCHEMA_VERSION>.schema.json`` (the event model, :mod:`telemetryd.events`)
and ``DIR/ats-v<ats.VERSION>.schema.json`` (``attrs.ats``, the agentic telemetry spec
metadata kept on tool events: :func:`build_ats`, from the field tables of
:mod:`telemetryd.adapters.ats`): one file per version, committed, and checked against
:func:`generate` and :func:`generate_ats` by a test. The Structs are the source; on top of what
``msgspec.json.schema`` derives from them this adds only what it cannot:

- the tri-state rules of ``tokens`` (``Tokens.__post_init__``), as ``if`` / ``then``;
- a ``pattern`` on timestamps, because validators need not assert ``format: date-time``;
- ``readOnly`` on ``received_at``: the daemon sets it, and rejects producers that do.

Rules no JSON Schema states (``reasoning`` at most ``output``, a real calendar date, the
configured limits on line and ``attrs`` size) are the daemon's; docs/events.md lists them.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from typing import Any

import msgspec

from telemetryd import events
from telemetryd.adapters import ats

DRAFT = "https://json-schema.org/draft/2020-12/schema"
FILENAME = f"event-v{events.SCHEMA_VERSION}.schema.json"
ATS_FILENAME = f"ats-v{ats.VERSION}.schema.json"

# RFC 3339 date-time with an offset, the form producers send (the daemon also takes a
# space for "T" and +hhmm offsets, and checks the calendar: no 2026-02-30, no leap second).
TIMESTAMP_PATTERN = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)


def _requires(source: str, *fields: str, types: dict[str, str]) -> dict[str, Any]:
    return {
        "if": {"properties": {"source": {"const": source}}, "required": ["source"]},
        "then": {"required": list(fields), "properties": {f: {"type": types[f]} for f in fields}},
    }


TOKEN_RULES = [
    _requires("actual", "input", "output", types={"input": "integer", "output": "integer"}),
    _requires(
        "estimated",
        "estimated_total",
        "tokenizer",
        types={"estimated_total": "integer", "tokenizer": "string"},
    ),
]


def _polish(node: Any) -> None:
    """Dedent docstring descriptions and add the timestamp pattern, everywhere in ``node``."""
    if isinstance(node, list):
        for child in node:
            _polish(child)
    elif isinstance(node, dict):
        if isinstance(node.get("description"), str):
            node["description"] = inspect.cleandoc(node["description"])
        if node.get("format") == "date-time":
            node["pattern"] = TIMESTAMP_PATTERN
        for child in node.values():
            _polish(child)


def build() -> dict[str, Any]:
    """The schema of one event of the current version, as a dict."""
    schema = msgspec.json.schema(events.AnyEvent)
    defs: dict[str, Any] = schema["$defs"]
    defs["Tokens"]["allOf"] = TOKEN_RULES
    for definition in defs.values():
        received_at = definition.get("properties", {}).get("received_at")
        if received_at is not None:
            received_at["readOnly"] = True
    _polish(schema)
    schema["$schema"] = DRAFT
    schema["$comment"] = "Generated from telemetryd.events by `make schema`; do not edit."
    schema["title"] = f"telemetryd event, schema v{events.SCHEMA_VERSION}"
    schema["description"] = (
        "One telemetry event: a JSON object on one line of the events socket, a spool file "
        "or the journal. `type` selects the event's fields; see docs/events.md."
    )
    return schema


def generate() -> str:
    """The schema file's text: sorted keys, 2-space indent, a trailing newline."""
    return _text(build())


def _text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# -- attrs.ats ----------------------------------------------------------------------------

UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# RFC 3339 date-time as adapters/ats.py checks it (a leap second 60 included).
ATS_DATETIME_PATTERN = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
    r"(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
_ATS_KINDS: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "bool": {"type": "boolean"},
    "ratio": {"type": "number", "minimum": 0, "maximum": 1},
    "semver": {"type": "string", "pattern": ats.SEMVER_PATTERN},
    "hash8": {"type": "string", "pattern": ats.HASH8_PATTERN},
    "decision_id": {"type": "string", "pattern": ats.DECISION_ID_PATTERN},
    "uuid": {"type": "string", "format": "uuid", "pattern": UUID_PATTERN},
    "datetime": {"type": "string", "format": "date-time", "pattern": ATS_DATETIME_PATTERN},
    "strings": {"type": "array", "items": {"type": "string"}},
    "chain": {"type": "array", "items": {"$ref": "#/$defs/caller"}},
    "migration": {"$ref": "#/$defs/migration"},
}


def _ats_field(kind: str, nullable: bool, extra: Any) -> dict[str, Any]:
    if kind == "enum":
        values = list(extra) + ([None] if nullable else [])
        return {"type": ["string", "null"] if nullable else "string", "enum": values}
    node = dict(_ATS_KINDS[kind])
    if not nullable:
        return node
    if "$ref" in node:
        return {"anyOf": [node, {"type": "null"}]}
    node["type"] = [node["type"], "null"]
    return node


def _ats_object(
    fields: dict[str, Any], required: tuple[str, ...], description: str
) -> dict[str, Any]:
    node: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": {name: _ats_field(*spec) for name, spec in fields.items()},
        "additionalProperties": False,
    }
    if required:
        node["required"] = list(required)
    return node


def build_ats() -> dict[str, Any]:
    """The schema of ``attrs.ats`` on a tool event (adapters/ats.py), as a dict."""
    goal_names = {
        "provenance": "Caller identity chain: session -> agent -> skill/hook -> tool.",
        "experiment": "A/B test context: template and experiment assignment.",
        "koth": "KOTH/Oracle context: recommendation and win/loss signal.",
        "decision": "Decision Logger join keys.",
        "_compat": "Backward-compatibility markers.",
    }
    defs: dict[str, Any] = {
        "caller": _ats_object(
            ats.CHAIN_ITEM, ats.CHAIN_ITEM_REQUIRED, "One caller of provenance.caller_chain."
        ),
        "migration": _ats_object(ats.MIGRATION, ats.MIGRATION_REQUIRED, "_compat.migrated_from."),
    }
    metadata_properties: dict[str, Any] = {
        "source": {
            "type": "string",
            "pattern": ats.SOURCE_PATTERN,
            "description": "The caller as <caller_type>:<caller_name>.",
        }
    }
    for name, (fields, required) in ats.GOALS.items():
        key = name.lstrip("_")
        defs[key] = _ats_object(fields, required, goal_names[name])
        metadata_properties[name] = {"$ref": f"#/$defs/{key}"}
    defs["metadata"] = {
        "type": "object",
        "description": (
            "Tool metadata that follows the agentic telemetry spec "
            "(its schemas/base/base-metadata.schema.json with the goal schemas inlined)."
        ),
        "properties": metadata_properties,
        "required": ["source", "provenance"],
        "additionalProperties": False,
    }
    defs["legacy"] = {
        "type": "object",
        "description": "A pre-spec caller's metadata: a `source` string alone.",
        "properties": {"source": {"type": "string"}},
        "required": ["source"],
        "additionalProperties": False,
    }
    return {
        "$schema": DRAFT,
        "$comment": "Generated from telemetryd.adapters.ats by `make schema`; do not edit.",
        "title": f"telemetryd attrs.ats, v{ats.VERSION}",
        "description": (
            "The agentic telemetry spec's tool-call metadata as telemetryd keeps it in the "
            "`attrs.ats` of tool_call and tool_result events: where it was found, the tool's "
            "tier, whether it follows the spec (and why not), and the spec's fields of it, "
            "bounded. See docs/ats.md."
        ),
        "type": "object",
        "properties": {
            "v": {"const": ats.VERSION, "description": "The version of this shape."},
            "at": {
                "enum": ["metadata", "metadata._dgm"],
                "description": "Where in the tool input the metadata was.",
            },
            "tier": {"enum": [1, 2, 3], "description": "The spec's tier of the tool."},
            "valid": {"type": "boolean", "description": "Whether it follows the spec."},
            "errors": {
                "type": "array",
                "items": {"type": "string", "maxLength": ats.MAX_ERROR_TEXT},
                "minItems": 1,
                "maxItems": ats.MAX_ERRORS,
                "description": "Why it does not follow the spec: `path: reason`, the first few.",
            },
            "more_errors": {
                "type": "integer",
                "minimum": 1,
                "description": "How many more reasons there were than `errors` lists.",
            },
            "has_legacy_compat": {
                "type": "boolean",
                "description": "A pre-spec caller's `source` alone, or _compat.is_legacy_compat.",
            },
            "truncated": {
                "const": True,
                "description": "The metadata kept was cut to fit (strings, lists), or left out.",
            },
            "metadata": {
                "type": "object",
                "description": (
                    "The spec's fields of the metadata as sent (keys the spec does not define "
                    "are named in `errors`, not kept), strings and lists bounded."
                ),
            },
        },
        "required": ["v", "at", "tier", "valid", "has_legacy_compat"],
        "additionalProperties": False,
        "allOf": [
            {
                "if": {"properties": {"valid": {"const": True}}},
                "then": {"not": {"required": ["errors"]}},
                "else": {"required": ["errors"]},
            },
            {
                "if": {
                    "properties": {"valid": {"const": True}},
                    "not": {"required": ["truncated"]},
                },
                "then": {
                    "required": ["metadata"],
                    "properties": {
                        "metadata": {
                            "anyOf": [{"$ref": "#/$defs/metadata"}, {"$ref": "#/$defs/legacy"}]
                        }
                    },
                },
            },
        ],
        "$defs": defs,
    }


def generate_ats() -> str:
    """The ``attrs.ats`` schema file's text."""
    return _text(build_ats())


def write(directory: str) -> list[str]:
    """Write the schema files into ``directory``; return their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, text in ((FILENAME, generate()), (ATS_FILENAME, generate_ats())):
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m telemetryd.schema DIR\n")
        return 2
    for path in write(argv[0]):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
