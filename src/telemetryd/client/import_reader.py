"""``python -m telemetryd.client.import_reader``: a reader process of ``telemetryctl import``.

It reads the files the importing process names, one at a time, with the same
:class:`~telemetryd.client.importer.Importer` an import in one process uses, and writes
back what each built (:class:`~telemetryd.client.importer.Outbox`): the events' lines,
their keys and what each counted, then the file's counts. It never connects to the
daemon and never writes a file; the importing process decides which events are new
across files, sends them and keeps the import's state (client/import_pool.py).

Messages, both ways: a 4-byte big-endian length, then a msgpack array.

- in (stdin): ``[AGENT, agent, since or None, model_calls, exported, live_after or
  None, imported_sizes, tier_starts]`` before an agent's files (all but the agent and
  ``since``: :class:`~telemetryd.client.importer.Importer`'s attributes; a reader never
  loads the prices: the importing process prices the summary's requests at the end);
  ``[UNIT, seq, [[path, part or None], ...]]`` for each batch of files, read one after
  the other (``part``: rows of a database); ``[CALLS, seq, paths]``: the model calls
  of Copilot CLI's OpenTelemetry exports (``importer.model_calls``);
- out (stdout): ``[CHUNK, seq, keys, codes, lines]`` as events are built, then
  ``[DONE, seq, counts, problems]`` once the batch is read (``counts``: the Summary's,
  ``problems``: ``[path, why]`` of each file that could not be read);
  ``[CALLS, seq, calls]`` answers a CALLS.

At end of input it exits 0.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from telemetryd.client import importer

AGENT, UNIT, CHUNK, DONE, CALLS = range(5)
_HEADER = 4

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


def decode(data: bytes | memoryview) -> list[Any]:
    message: list[Any] = _decoder.decode(data)
    return message


def decode_event(line: bytes) -> dict[str, Any]:
    event: dict[str, Any] = msgspec.json.decode(line)
    return event


def frame(message: list[Any]) -> bytes:
    body = _encoder.encode(message)
    return len(body).to_bytes(_HEADER, "big") + body


def read_frame(stream: BinaryIO) -> list[Any] | None:
    """The next message on ``stream``; None at its end."""
    header = stream.read(_HEADER)
    if len(header) < _HEADER:
        return None
    size = int.from_bytes(header, "big")
    body = stream.read(size)
    if len(body) < size:
        return None
    return decode(body)


_PLAIN = ("by_model", "by_day", "to_price")  # (fields that are not plain data)


def counts(summary: importer.Summary) -> dict[str, Any]:
    """A Summary's counts as plain data (:func:`summary_of` makes it again)."""
    out = {k: v for k, v in summary.__dict__.items() if k not in _PLAIN}
    out["by_model"] = {k: v.__dict__ for k, v in summary.by_model.items()}
    out["by_day"] = {k: v.__dict__ for k, v in summary.by_day.items()}
    out["to_price"] = [[*key, *sums] for key, sums in summary.to_price.items()]
    return out


def summary_of(data: dict[str, Any]) -> importer.Summary:
    data = dict(data)
    by_model = {k: importer.Totals(**v) for k, v in data.pop("by_model").items()}
    by_day = {k: importer.Totals(**v) for k, v in data.pop("by_day").items()}
    sums = importer.PRICE_SUMS
    to_price = {tuple(row[:-sums]): row[-sums:] for row in data.pop("to_price")}
    return importer.Summary(**data, by_model=by_model, by_day=by_day, to_price=to_price)


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    agent = "claude-code"
    since: datetime | None = None
    model_calls: dict[str, list[float]] = {}
    exported: dict[str, list[float]] = {}
    live_after: float | None = None
    imported_sizes: dict[str, int] = {}
    tier_starts: tuple[int, ...] = ()
    while (message := read_frame(inp)) is not None:
        if message[0] == AGENT:
            agent, since_text, model_calls, exported, live_after, imported_sizes = message[1:7]
            since = None if since_text is None else datetime.fromisoformat(since_text)
            tier_starts = tuple(message[7])
            continue
        if message[0] == CALLS:
            seq, paths = message[1:]
            out.write(frame([CALLS, seq, importer.model_calls(Path(p) for p in paths)]))
            out.flush()
            continue
        seq, files = message[1:]
        reader = importer.Importer(agent, since=since, live_after=live_after)
        reader.tier_starts = tier_starts
        reader.imported_sizes = imported_sizes
        reader.model_calls = model_calls
        reader.exported = exported

        def chunk(keys: bytes, codes: bytes, lines: bytes, seq: int = seq) -> None:
            out.write(frame([CHUNK, seq, keys, codes, lines]))

        reader.outbox = importer.Outbox(chunk)
        problems = []
        for path, part in files:
            try:
                reader.read_file(Path(path), None if part is None else tuple(part))
            except OSError as exc:
                problems.append([path, exc.strerror or str(exc)])
            except Exception as exc:  # a file it cannot read: said, and the next one read
                problems.append([path, f"{type(exc).__name__}: {exc}"])
        reader.outbox.flush()
        out.write(frame([DONE, seq, counts(reader.summary), problems]))
        out.flush()


def main() -> None:
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        # The import stopped (its Ctrl-C reaches the readers too): nothing to say.
        os._exit(1)


if __name__ == "__main__":
    main()
