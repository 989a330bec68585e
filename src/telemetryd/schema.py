"""The JSON Schema of the event model, generated from :mod:`telemetryd.events`.

``python -m telemetryd.schema DIR`` (``make schema``) writes
``DIR/event-v<SCHEMA_VERSION>.schema.json``: one file per schema version, committed, and
checked against :func:`generate` by a test. The Structs are the source; on top of what
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

DRAFT = "https://json-schema.org/draft/2020-12/schema"
FILENAME = f"event-v{events.SCHEMA_VERSION}.schema.json"

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
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: str) -> str:
    """Write the schema file into ``directory``; return its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, FILENAME)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(generate())
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m telemetryd.schema DIR\n")
        return 2
    print(write(argv[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
