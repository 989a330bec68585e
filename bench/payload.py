"""Realistic ~300-byte events, pre-built as bytes so the clients only copy them.

Half ``api_request`` (model, tokens, cost), half ``tool_call`` / ``tool_result``,
over a few sessions and models, each with a small ``attrs``. Events are padded
(``attrs.note``) to the target size, so every configuration sends the same bytes
per event; the variant with client ids spends part of that size on the id.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TARGET_BYTES = 300  # per event, without the newline
POOL = 4096  # distinct events, cycled

_MODELS = [
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-opus-4-1", "anthropic"),
    ("gpt-5-codex", "openai"),
    ("gemini-2.5-pro", "google"),
]
_TOOLS = ["Bash", "Read", "Edit", "Grep", "Write", "WebFetch"]
_SOURCES = ["claude-code", "codex", "gemini-cli"]


def _event(rng: random.Random, n: int, event_id: str | None) -> dict[str, object]:
    model, provider = rng.choice(_MODELS)
    session = f"{rng.getrandbits(128):032x}"
    session = f"{session[:8]}-{session[8:12]}-{session[12:16]}-{session[16:20]}-{session[20:]}"
    event: dict[str, object] = {"type": "api_request" if n % 2 == 0 else "tool_call"}
    if event_id is not None:
        event["id"] = event_id
    event["source"] = rng.choice(_SOURCES)
    event["session_id"] = session
    event["agent"] = {"model": model, "provider": provider}
    if event["type"] == "api_request":
        event["tokens"] = {
            "source": "actual",
            "input": rng.randint(10, 5000),
            "output": rng.randint(10, 4000),
            "cache_read": rng.randint(0, 60000),
        }
        event["cost_usd"] = round(rng.uniform(0.0001, 0.2), 5)
        event["duration_ms"] = rng.randint(200, 30000)
    else:
        event["tool"] = {"name": rng.choice(_TOOLS), "use_id": f"toolu_{rng.getrandbits(64):016x}"}
        event["duration_ms"] = rng.randint(1, 5000)
    event["attrs"] = {"repo": "telemetryd", "step": rng.randint(1, 200)}
    return event


def _line(event: dict[str, object]) -> bytes:
    text = json.dumps(event, separators=(",", ":"))
    short = TARGET_BYTES - len(text) - len(',"note":""')
    if short > 0:
        attrs = event["attrs"]
        assert isinstance(attrs, dict)
        attrs["note"] = "x" * short
        text = json.dumps(event, separators=(",", ":"))
    return text.encode() + b"\n"


def pool(seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [_line(_event(rng, n, None)) for n in range(POOL)]


def write_stream(path: Path, events: int, seed: int = 1) -> int:
    """A payload of ``events`` events without ids; returns its size in bytes."""
    lines = pool(seed)
    data = b"".join(lines[n % POOL] for n in range(events))
    path.write_bytes(data)
    return len(data)


def write_stream_with_ids(path: Path, events: int, client: int, seed: int = 1) -> int:
    """Like :func:`write_stream`, but every event carries a unique client-chosen id."""
    rng = random.Random(seed)
    placeholder = "bench-ccc-nnnnnnnnn"  # the ids have this fixed length
    parts = []
    for n in range(POOL):
        event = _event(rng, n, placeholder)
        head, _, tail = _line(event).partition(placeholder.encode())
        parts.append((head, tail))
    out = []
    for n in range(events):
        head, tail = parts[n % POOL]
        out.append(b"%sbench-%03d-%09d%s" % (head, client, n, tail))
    data = b"".join(out)
    path.write_bytes(data)
    return len(data)


def write_one(path: Path) -> int:
    """A single event (the hook pattern: one event per connection)."""
    data = pool()[1]  # a tool_call
    path.write_bytes(data)
    return len(data)
