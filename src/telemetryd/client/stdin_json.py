"""A hook's or the status line's JSON on stdin, which its writer may keep open.

Claude Code writes one JSON object to a hook's (and the status line's) stdin; whatever
wrote it, or a child of that which inherited the pipe, may keep its end open, so the
object is taken as soon as it is whole, and given up after a wait. Standard library C
pieces only: both commands must start fast.
"""

from __future__ import annotations

import os
import time

from telemetryd import fastjson

TYPE_CHECKING = False
if TYPE_CHECKING:  # (typing imports re: ~10 ms a status line does without)
    from typing import Any


def _payload(data: bytes) -> Any:
    """The payload's JSON; what nests deeper than Python's recursion allows is cut at
    :data:`fastjson.MAX_DEPTH`, as the daemon's ``http`` hooks cut it."""
    try:
        return fastjson.loads(data.decode("utf-8", "replace"))
    except RecursionError:
        cut = fastjson.shallow(data)
        if cut is None:
            raise ValueError("it nests too deeply") from None
        return fastjson.loads(cut.decode("utf-8", "replace"))


def read(stream: Any, limit: int, wait: float) -> Any:
    """The JSON on ``stream``, parsed (:func:`_payload`): at its end, or as soon as what
    came is one whole JSON object, for whatever wrote it (or a child of that, which
    inherited the pipe) may keep its end open. Raises OverflowError past ``limit`` bytes
    (a tool's whole output, say: not worth holding the agent), TimeoutError when no whole
    payload came within ``wait`` seconds, ValueError when it is not JSON."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # (not a file: read to its end)
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise OverflowError from None
        return _payload(data)
    import select

    deadline = time.monotonic() + wait
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return _payload(b"".join(chunks))
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise OverflowError
        if chunk.rstrip().endswith(b"}"):
            try:
                return _payload(b"".join(chunks))
            except ValueError:
                pass  # (not whole yet)
