"""Journal segment files: the on-disk contract that every reader of the journal shares.

In ``journal/``::

    20261121T233532Z-000007.jsonl      a segment: canonical events, one per "\\n"-ended line
    20261121T233532Z-000007.jsonl.gz   the same bytes gzipped (closed and materialized)
    20261121T233532Z-000007.usage.jsonl[.gz]
                                       the segment's usage lines (model requests), kept
                                       after the rest of it aged out (store/retention.py)

A segment's name is exactly ``<UTC time it was opened, %Y%m%dT%H%M%SZ>-<sequence>``
plus ``.jsonl`` or ``.jsonl.gz`` (``.usage.jsonl`` or ``.usage.jsonl.gz`` once only its
usage is kept), and it is a regular file. Anything else in the
directory (``x.jsonl.bak``, a directory or a symlink named like a segment, a FIFO)
is not a segment: readers ignore it, and it is logged once. Names starting with a
dot are temporary files of telemetryd's own (a compression or a salvage under way)
and are ignored silently.

A segment is written by the daemon alone (0600 while it grows, in a 0700 directory)
and, once closed, never again: the daemon makes it read-only (:data:`CLOSED_MODE`)
when it closes it, and at start every segment it finds (one a crashed daemon left
writable, after its torn last line is cut off).

A segment's content is its uncompressed bytes: offsets into a segment (the store's
``loaded_bytes``) count those, whether the file is plain or gzipped, so a segment
compressed after it was partly loaded is read on from the same offset. While several
files of a segment exist, one is read (:func:`preference`): the usage file once there
is one (it appears only after the store has recorded that the segment holds nothing
else: the other file is a leftover to delete), and of two files alike the plain one
(compression under way).

A damaged ``.gz`` (truncated, 0 bytes, corrupt) yields what it can and then raises
one of :data:`DAMAGE_ERRORS`; :func:`check` says how much of it can be trusted, and
the store salvages that prefix into a plain segment and moves the damaged file to
``quarantine/`` (daemon/store.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import msgspec

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"
GZ_SUFFIX = SUFFIX + ".gz"  # a closed segment compressed by retention
USAGE_SUFFIX = ".usage" + SUFFIX  # only the segment's usage lines, kept by retention
USAGE_GZ_SUFFIX = USAGE_SUFFIX + ".gz"
_SUFFIXES = (USAGE_GZ_SUFFIX, USAGE_SUFFIX, GZ_SUFFIX, SUFFIX)  # the longest first
CLOSED_MODE = 0o400  # a closed segment's permissions: never written again
DAMAGE_ERRORS = (EOFError, zlib.error)
READ_ERRORS = (OSError, EOFError, zlib.error)  # damage, or the file system failed
_READ_BLOCK = 4 * 1024 * 1024
_SCAN_BLOCK = 64 * 1024  # read size when looking for a line end

_reported_lock = threading.Lock()
_reported: set[str] = set()
_reporting = [True]  # the store worker leaves the reports to the daemon


def quiet() -> None:
    """Stop logging files that are not segments (in a process whose daemon does)."""
    _reporting[0] = False


def stem(name: str) -> str | None:
    """``20261121T233532Z-000007`` of any of a segment's file names (None: not one)."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def segment_seq(name: str) -> int | None:
    """The sequence number in a segment's file name, or None if it is not a segment name."""
    found = stem(name)
    if found is None:
        return None
    head, dash, seq = found.rpartition("-")
    if not (dash and seq.isascii() and seq.isdigit() and _is_timestamp(head)):
        return None
    return int(seq)


def _is_timestamp(text: str) -> bool:
    """``20261121T233532Z``."""
    return (
        len(text) == 16
        and text[8] == "T"
        and text[15] == "Z"
        and (text[:8] + text[9:15]).isascii()
        and (text[:8] + text[9:15]).isdigit()
    )


def is_compressed(path: str) -> bool:
    return path.endswith(GZ_SUFFIX)


def is_usage(path: str) -> bool:
    """Whether ``path`` holds only a segment's usage (retention kept it, the rest went)."""
    return path.endswith((USAGE_SUFFIX, USAGE_GZ_SUFFIX))


def preference(path: str) -> int:
    """Which of a segment's files to read: the lowest. A usage file (it exists only once
    the store has recorded the segment as holding nothing else), then plain before
    gzipped (a compression under way leaves both, the plain one still whole)."""
    return (0 if is_usage(path) else 2) + (1 if is_compressed(path) else 0)


def usage_path(path: str, *, compressed: bool) -> str:
    """The usage file of the segment that ``path`` (any of its files) belongs to."""
    directory, name = os.path.split(path)
    found = stem(name)
    if found is None:
        raise ValueError(f"{path} is not a journal segment")
    return os.path.join(directory, found + (USAGE_GZ_SUFFIX if compressed else USAGE_SUFFIX))


def list_segments(directory: str) -> list[tuple[int, str]]:
    """``(seq, path)`` of every segment file, oldest first (compressed ones included).

    Anything else in ``directory`` is skipped and logged once per name."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            seq = segment_seq(entry.name)
            if seq is None:
                _report(entry.path, "not a journal segment name")
                continue
            try:
                regular = entry.is_file(follow_symlinks=False)
            except OSError:
                regular = False
            if not regular:
                _report(entry.path, "named like a segment but not a regular file")
                continue
            found.append((seq, entry.path))
    return sorted(found)


def strays(directory: str) -> list[str]:
    """The names in ``directory`` that readers ignore (for `status`)."""
    out = []
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if segment_seq(entry.name) is None or not entry.is_file(follow_symlinks=False):
                out.append(entry.name)
    return sorted(out)


def _report(path: str, why: str) -> None:
    if not _reporting[0]:
        return
    with _reported_lock:
        if path in _reported:
            return
        _reported.add(path)
    log.warning("journal: ignoring %s (%s)", path, why)


def chosen(directory: str) -> list[tuple[int, str]]:
    """``(seq, path)`` per segment, oldest first: one file per segment, the one to read
    while several exist (:func:`preference`). A missing directory has no segments."""
    try:
        found = list_segments(directory)
    except FileNotFoundError:
        return []
    return pick(found)


def pick(found: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Of ``(seq, path)`` pairs, the file to read per segment (:func:`preference`)."""
    picked: dict[int, str] = {}
    for seq, path in found:
        if seq not in picked or preference(path) < preference(picked[seq]):
            picked[seq] = path
    return sorted(picked.items())


def open_content(path: str) -> Content:
    """The segment's content (uncompressed), for reading. Opens regular files only
    (never follows a symlink, never blocks on a FIFO)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        raw = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return Content(raw, _Inflater(raw, path) if is_compressed(path) else None)


class Content:
    """A segment's uncompressed bytes, read in order; closes its file."""

    def __init__(self, raw: BinaryIO, inflater: _Inflater | None) -> None:
        self._raw = raw
        self.inflater = inflater

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (b"" at the end). A damaged ``.gz`` returns everything
        before the damage first, then raises one of :data:`DAMAGE_ERRORS`."""
        if self.inflater is None:
            return self._raw.read(size)
        return self.inflater.read(size)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Content:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Inflater:
    """gzip (one or more members) inflated a bounded piece at a time, so that a damaged
    file yields all it can and a crafted one cannot balloon in memory."""

    _IN = 64 * 1024
    _OUT = 1024 * 1024

    def __init__(self, raw: BinaryIO, path: str) -> None:
        self._raw = raw
        self._path = path
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._out = bytearray()
        self._error: BaseException | None = None
        self._done = False
        self._started = False
        self._total = 0  # bytes inflated so far
        self.verified = 0  # bytes of the members that ended whole (CRC and length right)

    def read(self, size: int) -> bytes:
        while len(self._out) < size and not self._done and self._error is None:
            try:
                self._step()
            except DAMAGE_ERRORS as exc:
                self._error = exc
        if not self._out and self._error is not None:
            raise self._error
        piece = bytes(self._out[:size])
        del self._out[:size]
        return piece

    def _step(self) -> None:
        inflate = self._inflate
        if inflate.unconsumed_tail:
            data = inflate.unconsumed_tail
        elif inflate.eof:  # a member ended: another may follow
            data = inflate.unused_data or self._raw.read(self._IN)
            if not data:
                self._done = True
                return
            self._inflate = inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        else:
            data = self._raw.read(self._IN)
            if not data:
                what = "is empty: not even a gzip header" if not self._started else "ends early"
                raise EOFError(f"{self._path} {what} (truncated)")
        self._started = True
        produced = inflate.decompress(data, self._OUT)
        self._total += len(produced)
        self._out += produced
        if inflate.eof:  # its CRC and length checked out
            self.verified = self._total


def last_line_end(path: str, start: int, end: int) -> int:
    """The offset just past the last newline in bytes [start, end) of the plain segment
    ``path``, or ``start`` when that range holds no complete line (a line still being
    written, or a torn one, is not a line until its newline)."""
    with open(path, "rb") as f:
        while end > start:
            begin = max(start, end - _SCAN_BLOCK)
            cut = os.pread(f.fileno(), end - begin, begin).rfind(b"\n")
            if cut >= 0:
                return begin + cut + 1
            end = begin
    return start


def next_line_end(path: str, pos: int, limit: int) -> int:
    """The offset just past the first newline at or after ``pos`` in the plain segment
    ``path`` (at most ``limit``): where a line too long for a batch of its own ends."""
    with open(path, "rb") as f:
        while pos < limit:
            block = os.pread(f.fileno(), min(_SCAN_BLOCK, limit - pos), pos)
            cut = block.find(b"\n")
            if cut >= 0:
                return pos + cut + 1
            pos += len(block)
    return limit


def check(path: str) -> tuple[BaseException | None, int]:
    """Read a compressed segment through: ``(None, size)`` when it is whole, else the
    damage and how many of its first bytes can be trusted. A truncated file's content
    is right up to where it stops (its complete lines count); a corrupt one's cannot
    be trusted past its last member that checked out (zlib sees corruption only at a
    member's CRC, after the wrong bytes came out)."""
    total = lines_end = 0
    with open_content(path) as content:
        try:
            while block := content.read(_READ_BLOCK):
                cut = block.rfind(b"\n")
                if cut >= 0:
                    lines_end = total + cut + 1
                total += len(block)
        except EOFError as exc:
            return exc, lines_end
        except zlib.error as exc:
            assert content.inflater is not None
            return exc, content.inflater.verified
    return None, total


class _IdOnly(msgspec.Struct):
    id: str | None = None


_ID_DECODER = msgspec.json.Decoder(_IdOnly)


def iter_ids(path: str) -> Iterator[str]:
    """The event ids in a segment, in order. A damaged ``.gz`` yields the ids of its
    good prefix, then raises one of :data:`DAMAGE_ERRORS`."""
    with open_content(path) as f:
        carry = b""
        while block := f.read(_READ_BLOCK):
            block = carry + block
            cut = block.rfind(b"\n") + 1
            carry = block[cut:]
            for line in block[:cut].splitlines():
                try:
                    event_id = _ID_DECODER.decode(line).id
                except msgspec.DecodeError:
                    continue
                if event_id is not None:
                    yield event_id


_JSON_DECODER = msgspec.json.Decoder()


def malformed_lines(path: str, start: int, end: int) -> Iterator[tuple[int, str]]:
    """The lines of segment ``path`` in its content bytes [start, end) (both at line ends)
    that are not events as JSON can hold them (not JSON, JSON that is not an object, or
    an object without ``id`` or ``type``: the load leaves those out too), in order: (the
    line's number in the segment, from 1; what is wrong). The lines
    before ``start`` are only counted. Blank lines are no events and no errors either."""
    number = 0  # lines read so far
    offset = 0  # where the next line starts
    carry = b""
    with open_content(path) as content:
        while block := content.read(min(_READ_BLOCK, end - offset - len(carry))):
            data = carry + block
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if offset + cut <= start:  # (lines before start: counted at C speed)
                number += data.count(b"\n", 0, cut)
                offset += cut
                continue
            for line in data[:cut].split(b"\n")[:-1]:
                number += 1
                if offset >= start and line.strip():
                    try:
                        value = _JSON_DECODER.decode(line)
                    except msgspec.DecodeError as exc:
                        yield number, str(exc)
                    else:
                        if not isinstance(value, dict):  # (an array or a number: no event)
                            yield number, f"not a JSON object but {type(value).__name__}"
                        elif value.get("id") is None or value.get("type") is None:
                            yield number, "a JSON object without id or type"
                offset += len(line) + 1
