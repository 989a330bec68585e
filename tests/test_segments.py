"""The line-end scans of daemon/segments.py that the journal's torn-tail repair and the
store's batches rely on, against Python's own search over the same bytes: lines
shorter and longer than a read block, and ranges that start or end mid-line."""

from __future__ import annotations

import random
from pathlib import Path

from telemetryd.daemon import segments


def reference_last(data: bytes, start: int, end: int) -> int:
    cut = data.rfind(b"\n", start, end)
    return start if cut < 0 else cut + 1


def reference_next(data: bytes, pos: int, limit: int) -> int:
    cut = data.find(b"\n", pos, limit)
    return limit if cut < 0 else cut + 1


def test_line_ends_match_a_plain_search(tmp_path: Path) -> None:
    rng = random.Random(3)
    # Lines from empty to several 64 KiB blocks long, and a last one without its newline.
    lengths = [0, 1, 5, 65535, 65536, 65537, 200_000, 3, 131_072, 7]
    data = b"".join(b"x" * n + b"\n" for n in lengths) + b"torn"
    path = tmp_path / "20250101T000000Z-000001.jsonl"
    path.write_bytes(data)
    points = {0, len(data)} | {rng.randrange(len(data) + 1) for _ in range(300)}
    newlines = [i for i, byte in enumerate(data) if byte == 0x0A]
    points |= {i + d for i in newlines for d in (-1, 0, 1, 2) if 0 <= i + d <= len(data)}
    ordered = sorted(points)
    for _ in range(2000):
        start, end = sorted(rng.sample(ordered, 2))
        assert segments.last_line_end(str(path), start, end) == reference_last(data, start, end)
        assert segments.next_line_end(str(path), start, end) == reference_next(data, start, end)
    assert segments.last_line_end(str(path), 0, len(data)) == len(data) - len(b"torn")
    assert segments.last_line_end(str(path), 5, 5) == 5
