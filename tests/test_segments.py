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


def test_usage_files_are_their_segments_and_read_first(tmp_path: Path) -> None:
    stem = "20261121T233532Z-000007"
    names = [f"{stem}.jsonl", f"{stem}.jsonl.gz", f"{stem}.usage.jsonl", f"{stem}.usage.jsonl.gz"]
    assert [segments.segment_seq(name) for name in names] == [7, 7, 7, 7]
    assert segments.segment_seq(f"{stem}.usage.json") is None
    assert segments.segment_seq(f"{stem}.other.jsonl") is None  # not a timestamp-seq stem
    assert [segments.is_usage(name) for name in names] == [False, False, True, True]
    assert segments.usage_path(f"/j/{stem}.jsonl.gz", compressed=True) == f"/j/{names[3]}"
    assert segments.usage_path(f"/j/{stem}.jsonl", compressed=False) == f"/j/{names[2]}"
    # Of the files one segment has at a time, readers take: the usage file (it exists
    # only once the store recorded it), and of two alike the plain one.
    for present, read in [
        ([0, 1], 0),  # compression under way
        ([1, 3], 3),  # compaction stopped after its rename
        ([0, 3], 3),
        ([2, 3], 2),  # a usage file being compressed
        ([0, 1, 2, 3], 2),
    ]:
        for old in tmp_path.iterdir():
            old.unlink()
        for index in present:
            (tmp_path / names[index]).write_bytes(b"")
        assert segments.chosen(str(tmp_path)) == [(7, str(tmp_path / names[read]))]
    assert segments.strays(str(tmp_path)) == []
