"""Where OpenCode and Amp keep their usage, and reading it for the importer.

OpenCode (see :mod:`telemetryd.adapters.opencode`): in each data directory, one
SQLite database (``opencode.db``, else the first ``opencode-<channel>.db`` by name, as
ccusage picks it) and then the older per-message files under ``storage/message/``.
The database is opened read-only (``mode=ro``; OpenCode may be writing it: SQLite's
own locking keeps the read consistent) and its ``message`` rows are read one at a
time. The database is read before the files of its directory, so a message in both is
counted from the database, as ccusage does. A database's identity for "unchanged since
the last import" includes its write-ahead log (``-wal``), where new rows sit until
SQLite checkpoints them.

Amp (see :mod:`telemetryd.adapters.amp`): every ``*.json`` under ``<dir>/threads``,
each one thread document, read whole (at most ``MAX_LINE`` bytes).

GitHub Copilot CLI (see :mod:`telemetryd.adapters.copilot`): its OpenTelemetry file
exports, read before the session-state ``events.jsonl`` files: the file
``COPILOT_OTEL_FILE_EXPORTER_PATH`` names, when set, and every ``*.jsonl`` under
``<Copilot's directory>/otel/`` (``COPILOT_HOME``, ``COPILOT_CONFIG_DIR``, else
``~/.copilot``: where tools that read these exports look; Copilot CLI has no default
path of its own).

The functions here only read; the importer (:mod:`telemetryd.client.importer`) sends.
"""

from __future__ import annotations

import functools
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import msgspec

from telemetryd import fastjson
from telemetryd.adapters import amp, copilot, opencode
from telemetryd.errors import TelemetryError

T = TypeVar("T")

if TYPE_CHECKING:
    from telemetryd.client.importer import Importer

_ANY = msgspec.json.Decoder()
_CHANNEL_DB = re.compile(r"opencode-[A-Za-z0-9_-]+\.db")


# -- where -----------------------------------------------------------------------------------


def _home(env: dict[str, str] | os._Environ[str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def _listed(value: str) -> list[Path]:
    return [Path(p.strip()).expanduser() for p in value.split(",") if p.strip()]


def opencode_roots(environ: dict[str, str] | None = None) -> list[Path]:
    """OpenCode's data directories: each of the comma-separated ``OPENCODE_DATA_DIR``
    (only those, when it is set: ccusage's override), else OpenCode's own,
    ``$XDG_DATA_HOME/opencode``, and ``~/.local/share/opencode`` (ccusage's default)."""
    env = os.environ if environ is None else environ
    given = env.get("OPENCODE_DATA_DIR")
    if given is not None:
        return list(dict.fromkeys(_listed(given)))
    found = []
    xdg = env.get("XDG_DATA_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():  # the XDG rule: a relative value is ignored
        found.append(Path(xdg) / "opencode")
    found.append(_home(env) / ".local" / "share" / "opencode")
    return list(dict.fromkeys(found))


def amp_roots(environ: dict[str, str] | None = None) -> list[Path]:
    """``<dir>/threads`` of Amp's data directory: each of the comma-separated
    ``AMP_DATA_DIR`` (only those, when it is set), else ``~/.local/share/amp``."""
    env = os.environ if environ is None else environ
    given = env.get("AMP_DATA_DIR")
    bases = _listed(given) if given is not None else [_home(env) / ".local" / "share" / "amp"]
    return [base / "threads" for base in dict.fromkeys(bases)]


def opencode_database(directory: Path) -> Path | None:
    """The database ccusage reads in a data directory: ``opencode.db``, else the first
    ``opencode-<channel>.db`` by name."""
    default = directory / "opencode.db"
    if default.is_file():
        return default
    try:
        names = sorted(p.name for p in directory.iterdir() if _CHANNEL_DB.fullmatch(p.name))
    except OSError:
        return None
    for name in names:
        if (directory / name).is_file():
            return directory / name
    return None


def walk(
    start: Path, globs: tuple[str, ...], unreadable: list[str] | None = None
) -> Iterator[tuple[str, str]]:
    """``(resolved, path)`` of each file under the directory ``start`` whose name matches
    one of ``globs``, as ``start.rglob(glob)`` and ``path.resolve()`` find them (a
    symbolic link to a directory below ``start`` is not followed; a link to a file is a
    file), as strings, at the cost of one directory read per directory: the names'
    types come with the directory (no ``stat`` per file), and a path is resolved only
    when it is a link (below the resolved ``start`` nothing else can need it). A
    directory that cannot be read (but for one gone meanwhile) is added to
    ``unreadable``, with why: the import names it as a problem."""
    join = os.path.join
    pending = [(str(start.resolve()), str(start))]
    while pending:
        real, shown = pending.pop()
        try:
            with os.scandir(real) as found:
                entries = list(found)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if unreadable is not None:
                unreadable.append(f"{shown}: the directory cannot be read: {exc.strerror or exc}")
            continue
        for entry in entries:
            name = entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((join(real, name), join(shown, name)))
                    continue
                if not any(fnmatchcase(name, glob) for glob in globs) or not entry.is_file():
                    continue
                resolved = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
            except OSError:
                continue
            yield resolved, join(shown, name)


def _json_files(directory: Path, unreadable: list[str] | None = None) -> list[tuple[str, Path]]:
    """``(resolved, path)`` of the ``*.json`` files under ``directory``, in path order."""
    found = sorted(walk(directory, ("*.json",), unreadable), key=_shown)
    return [(resolved, Path(path)) for resolved, path in found]


def _shown(found: tuple[str, str]) -> str:
    return found[1]


def opencode_files(
    given: Iterable[str | Path], roots: list[Path], unreadable: list[str] | None = None
) -> list[Path]:
    """The stores to read, in order: per data directory its database, then the files under
    ``storage/message``. A given file is read as it is (``.db``: a database); a given
    directory is a data directory when it holds a database or ``storage/``, else a
    directory of message files. (``unreadable``: as :func:`walk` has it.)"""
    named = [Path(p).expanduser() for p in given]
    starts = named or [r for r in roots if r.is_dir()]
    found: dict[str, Path] = {}
    for start in starts:
        if start.is_file():
            found.setdefault(str(start.resolve()), start)
        elif start.is_dir():
            database = opencode_database(start)
            if database is not None or (start / "storage").is_dir():
                picked = [(str(database.resolve()), database)] if database is not None else []
                messages = start / "storage" / "message"
                picked += _json_files(messages, unreadable) if messages.is_dir() else []
            else:
                picked = _json_files(start, unreadable)
            for resolved, path in picked:
                found.setdefault(resolved, path)
        elif named:
            raise TelemetryError(f"{start}: no such file or directory")
    return [Path(resolved) for resolved in found]


def copilot_bases(environ: dict[str, str] | os._Environ[str] | None = None) -> list[Path]:
    """Copilot CLI's directories: ``COPILOT_HOME`` (its own override) and
    ``COPILOT_CONFIG_DIR`` (ccusage's), each when set, else ~/.copilot."""
    env = os.environ if environ is None else environ
    given = [env.get(name, "").strip() for name in ("COPILOT_HOME", "COPILOT_CONFIG_DIR")]
    bases = [Path(p).expanduser() for p in given if p] or [_home(env) / ".copilot"]
    return list(dict.fromkeys(bases))


def copilot_otel_paths(environ: dict[str, str] | None = None) -> list[Path]:
    """Where Copilot CLI's OpenTelemetry file exports are: the exporter's file when
    ``COPILOT_OTEL_FILE_EXPORTER_PATH`` is set, and ``<dir>/otel`` of each directory."""
    env = os.environ if environ is None else environ
    found = [base / "otel" for base in copilot_bases(env)]
    named = env.get(copilot.OTEL_FILE_ENV, "").strip()
    if named:
        found.insert(0, Path(named).expanduser())
    return found


def is_copilot_otel(path: Path) -> bool:
    """Whether a Copilot file is taken for an OpenTelemetry export (read for its model
    calls before the sessions' events): any name but ``events.jsonl``. (Each line of
    either is read for what it is.)"""
    return path.name != "events.jsonl"


def copilot_files(
    given: Iterable[str | Path],
    sessions: list[Path],
    environ: dict[str, str] | None = None,
    unreadable: list[str] | None = None,
) -> list[Path]:
    """The files to read, OpenTelemetry exports first, then the ``sessions`` roots'
    ``events.jsonl``; each once. A given file is read as it is; a given directory gives
    every ``*.jsonl`` under it. (``unreadable``: as :func:`walk` has it.)"""
    named = [Path(p).expanduser() for p in given]
    found: dict[str, Path] = {}

    def add(start: Path, globs: tuple[str, ...]) -> None:
        for resolved, path in sorted(walk(start, globs, unreadable), key=_shown):
            found.setdefault(resolved, Path(path))

    if named:
        for start in named:
            if start.is_file():
                found.setdefault(str(start.resolve()), start)
            elif start.is_dir():
                add(start, ("*.jsonl",))
            else:
                raise TelemetryError(f"{start}: no such file or directory")
    else:
        for start in copilot_otel_paths(environ):
            if start.is_file():
                found.setdefault(str(start.resolve()), start)
            elif start.is_dir():
                add(start, ("*.jsonl",))
        for root in sessions:
            if root.is_dir():
                add(root, ("events.jsonl",))
    files = list(found.values())
    return [p for p in files if is_copilot_otel(p)] + [p for p in files if not is_copilot_otel(p)]


def identity(path: Path) -> list[int]:
    """Size, mtime and inode; for a database also its write-ahead log's size and mtime."""
    info = path.stat()
    ident = [info.st_size, info.st_mtime_ns, info.st_ino]
    if path.suffix == ".db":
        try:
            wal = Path(f"{path}-wal").stat()
        except OSError:
            return ident
        ident[1] = max(ident[1], wal.st_mtime_ns)
        ident.append(wal.st_size)
    return ident


# -- reading -----------------------------------------------------------------------------------


def _document(importer: Importer, f: BinaryIO) -> Any:
    """A whole JSON file, decoded; None (counted as malformed) when it is too long or not
    JSON."""
    from telemetryd.client.importer import MAX_LINE, read_whole

    summary = importer.summary
    data = read_whole(f)
    summary.bytes += len(data)
    summary.lines += 1
    if importer.progress is not None:
        importer.progress(len(data))
    if len(data) > MAX_LINE:
        summary.malformed += 1
        return None
    try:
        return lenient(_ANY.decode, data)
    except msgspec.DecodeError:
        summary.malformed += 1
        return None


def lenient(decode: Callable[[Any], T], data: bytes | str, mends: int = 2) -> T:
    """``decode(data)``; JSON text that msgspec refuses but :func:`fastjson.mended` can
    mend (escapes of lone UTF-16 surrogates, as in a message's text cut inside an emoji;
    nesting deeper than the decoder's recursion goes) is decoded mended, each kind of
    mending once at most. Raises msgspec.DecodeError as ``decode`` does (and for JSON
    that nests too deeply)."""
    try:
        return decode(data)
    except msgspec.ValidationError:
        raise
    except (msgspec.DecodeError, RecursionError) as exc:
        deep = isinstance(exc, RecursionError)
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        fixed = fastjson.mended(raw, deep) if mends else None
        if fixed is None:
            if deep:
                raise msgspec.DecodeError("JSON nests too deeply") from None
            raise
        return lenient(decode, fixed, mends - 1)


def _rows(
    importer: Importer, path: Path, part: tuple[int, int, int] | None = None
) -> Iterator[tuple[str, str, Any]]:
    """``(id, session_id, data)`` of each row of the database's ``message`` table (in the
    table's order; ``part``: those of rowids ``first`` to ``last``, the file's size counted by
    part 0). A file that is not such a database, or one locked past the timeout, raises
    sqlite3.Error: one problem in the summary, and the file is read again next time
    (Importer.read_or_note)."""
    summary = importer.summary
    size = path.stat().st_size
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        if part is None:
            cursor = connection.execute("SELECT id, session_id, data FROM message")
        else:
            cursor = connection.execute(
                "SELECT id, session_id, data FROM message WHERE rowid BETWEEN ? AND ?"
                " ORDER BY rowid",
                part[1:],
            )
            if part[0]:
                size = 0
        for row_id, session, data in cursor:
            summary.lines += 1
            if isinstance(row_id, str) and isinstance(session, str) and isinstance(data, str):
                yield row_id, session, data
            else:
                summary.malformed += 1
    finally:
        connection.close()
        summary.bytes += size
        if importer.progress is not None:
            importer.progress(size)


def opencode_parts(path: Path, rows: int) -> list[tuple[int, int, int]] | None:
    """A database's ``message`` rows in parts of about ``rows`` rows, by rowid
    ``(index, first, last)``, for reader processes; None: one part (too small, no rowids,
    or not such a database: reading it whole says why)."""
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except (OSError, sqlite3.Error):
        return None
    try:
        low, high, count = connection.execute(
            "SELECT min(rowid), max(rowid), count(*) FROM message"
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    if not isinstance(low, int) or not isinstance(high, int) or count <= rows:
        return None
    step = max(1, (high - low + 1) * rows // count)
    starts = range(low, high + 1, step)
    return [(n, first, min(first + step - 1, high)) for n, first in enumerate(starts)]


def read_opencode(
    importer: Importer, f: BinaryIO, path: Path, part: tuple[int, int, int] | None = None
) -> None:
    """One OpenCode store: a database (``part``: some of its rows) or a message file."""
    if path.suffix == ".db":
        for row_id, session, data in _rows(importer, path, part):
            try:
                found = opencode.record_of_json(data, row_id, session)
            except (msgspec.DecodeError, RecursionError):  # (rare: mended, as lenient does)
                try:
                    read = functools.partial(
                        opencode.record_of_json, row_id=row_id, row_session=session
                    )
                    found = lenient(read, data)
                except msgspec.DecodeError:
                    importer.summary.malformed += 1
                    continue
            _opencode_emit(importer, found, path, row_id)
        return
    message = _document(importer, f)
    if message is not None:
        _opencode_emit(importer, opencode.record(message), path, "")


def _opencode_emit(
    importer: Importer, record: dict[str, Any] | None, path: Path, position: str
) -> None:
    if record is None or importer.still_open(record, path):
        return
    if record["message_id"] is not None:
        event_id = opencode.event_id(record["message_id"])
    else:
        event_id = opencode.ID_PREFIX + "line-" + _hash(f"{path.resolve()}\0{position}")
    importer.emit_keyed(opencode.api_request_event(record, event_id))


def read_amp(importer: Importer, f: BinaryIO, path: Path) -> None:
    """One Amp thread file."""
    thread = _document(importer, f)
    if thread is None:
        return
    for record in amp.records(thread):
        if record["ts"] is None:
            importer.summary.dropped_times += 1
            continue
        if record["key"] is not None:
            event_id = amp.event_id(record["key"])
        else:
            event_id = amp.ID_PREFIX + "line-" + _hash(f"{path.resolve()}\0{record['index']}")
        importer.emit_keyed(amp.api_request_event(record, event_id))


def _hash(text: str) -> str:
    import hashlib

    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
