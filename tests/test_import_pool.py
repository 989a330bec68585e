"""Reader processes for `telemetryctl import` (client/import_pool.py): the same events,
in the same order, and the same summary as reading every file in one process; bounded;
a file that cannot be read is a problem named by its path, and the rest is imported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon
from telemetryd.adapters import pricing
from telemetryd.client import agent_files, import_pool, importer
from telemetryd.client.import_pool import Pool

pytestmark = pytest.mark.usefixtures("agent_home")

SAMPLES = Path("/work/shared/samples")
TRANSCRIPTS = SAMPLES / "claude-code" / "transcripts"
FIXTURES = Path(__file__).parent / "fixtures"


class Collected:
    """An event stream that keeps what it is given (the pool's side of EventStream)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._buffer = bytearray()
        self._pair = socket.socketpair()  # something select() finds writable

    def add(self, line: bytes) -> None:
        self.lines.append(line)

    def queue(self, lines: bytes, count: int | None = None) -> None:
        # The pool says how many lines it queues (it counts them from the events'
        # codes): it must be what they are.
        assert count is None or count == lines.count(b"\n"), (count, lines.count(b"\n"))
        self._buffer += lines

    @property
    def queued(self) -> int:
        return len(self._buffer)

    def fileno(self) -> int:
        return self._pair[0].fileno()

    def pump(self, readable: bool, writable: bool) -> None:
        if writable:  # the socket takes some of it
            part = bytes(self._buffer[:65536])
            del self._buffer[:65536]
            self.lines += part.splitlines()

    def close(self) -> None:
        self.lines += bytes(self._buffer).splitlines()
        self._buffer.clear()
        for end in self._pair:
            end.close()


def tree(root: Path) -> dict[str, list[Path]]:
    """Every agent's files, some of them copied (a copy's events repeat the first's)."""
    claude = root / "claude"
    for n, sample in enumerate(sorted(TRANSCRIPTS.glob("*.jsonl"))):
        (claude / f"p{n % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(sample, claude / f"p{n % 2}" / sample.name)
    first = sorted(claude.rglob("*.jsonl"))[0]
    shutil.copy(first, claude / "p1" / "zz-copy.jsonl")
    codex = root / "codex"
    codex.mkdir()
    for sample in sorted((SAMPLES / "codex").glob("rollout-*.jsonl")):
        shutil.copy(sample, codex / sample.name)
    gemini = root / "gemini"
    shutil.copytree(FIXTURES / "gemini", gemini)
    (gemini / "README.md").unlink()
    shutil.copy(
        FIXTURES / "gemini" / "vibecodingtracker_session_jsonl.lines-1-7.jsonl",
        gemini / "again.jsonl",
    )
    copilot = root / "copilot"
    for name in ("tokenstats_copilot-events.jsonl", "workshop_copilot-events.jsonl",
                 "built_resumed-session.jsonl"):  # fmt: skip
        (copilot / name.split(".")[0]).mkdir(parents=True)
        shutil.copy(FIXTURES / "copilot" / name, copilot / name.split(".")[0] / "events.jsonl")
    for name in ("export-1.jsonl", "export-2.jsonl"):  # an export and its copy
        shutil.copy(FIXTURES / "copilot" / "built_otel-export.jsonl", copilot / name)
    amp = root / "amp"
    amp.mkdir()
    for sample in sorted((FIXTURES / "amp").glob("*.json")):
        shutil.copy(sample, amp / f"T-{sample.stem}.json")
    shutil.copy(FIXTURES / "amp" / "tokenuze_basic.json", amp / "T-zz-copy.json")
    return {
        "claude-code": [claude],
        "codex": [codex],
        "gemini": [gemini],
        "copilot": [copilot],
        "opencode": [opencode_db(root / "opencode").parent],
        "amp": [amp],
    }


def opencode_db(root: Path) -> Path:
    """An OpenCode data directory: a database of the fixture's rows and the older message
    files, among them the twin of a row (one request)."""
    shutil.copytree(FIXTURES / "opencode" / "datadir", root)
    path = root / "opencode.db"
    db = sqlite3.connect(path)
    db.execute(
        "create table message (id text primary key, session_id text not null,"
        " time_created integer not null, time_updated integer not null, data text not null)"
    )
    rows = [
        json.loads(line)
        for line in (FIXTURES / "opencode" / "db_rows.jsonl").read_text().splitlines()
    ]
    db.executemany(
        "insert into message values (?, ?, ?, ?, ?)",
        [(r["id"], r["session_id"], r["time_created"], r["time_updated"], json.dumps(r["data"]))
         for r in rows],
    )  # fmt: skip
    db.commit()
    db.close()
    return path


def files_of(agent: str, given: list[Path]) -> list[Path]:
    if agent == "opencode":
        return agent_files.opencode_files(given, [])
    if agent == "copilot":
        return agent_files.copilot_files(given, [])
    return importer.discover(given, [], importer.patterns(agent))


def serial(agent: str, files: list[Path], **options: Any) -> tuple[list[bytes], dict[str, Any]]:
    sink = Collected()
    reader = importer.Importer(agent, sink=sink, prices=pricing.configured(), **options)  # type: ignore[arg-type]
    if agent == "copilot":
        reader.copilot_calls(p for p in files if agent_files.is_copilot_otel(p))
    for path in files:
        reader.read_file(path)
    sink.close()
    return sink.lines, reader.summary.as_dict()


def pooled(
    agent: str, files: list[Path], pool: Pool, **options: Any
) -> tuple[list[bytes], dict[str, Any], set[Path]]:
    stream = Collected()
    reader = importer.Importer(agent, sink=stream, prices=pricing.configured(), **options)  # type: ignore[arg-type]
    if agent == "copilot":  # the exports' model calls, read by the readers too
        exports = [p for p in files if agent_files.is_copilot_otel(p)]
        reader.model_calls = pool.copilot_calls(exports)
        assert reader.model_calls == importer.model_calls(exports)
        assert sum(len(times) for times in reader.model_calls.values()) > 0
    sized = []
    for path in files:
        parts = agent_files.opencode_parts(path, 3) if path.suffix == ".db" else None
        sized += [(path, p, 1) for p in parts] if parts else [(path, None, path.stat().st_size)]
    failed = pool.read(reader, import_pool.units(sized), stream)  # type: ignore[arg-type]
    stream.close()
    return stream.lines, reader.summary.as_dict(), failed


def same_summary(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Equal, but for the order in which floats were added and the counts of what was sent
    (the one-process reader counts ``sent`` as it adds to its sink, the same)."""
    for table in ("by_model", "by_day"):
        assert got[table].keys() == want[table].keys()
        for key, row in want[table].items():
            assert got[table][key] == pytest.approx(row), (table, key)
    rest = {k: v for k, v in got.items() if k not in ("by_model", "by_day", "elapsed_s")}
    assert rest == {k: v for k, v in want.items() if k not in ("by_model", "by_day", "elapsed_s")}


@pytest.mark.parametrize("agent", importer.AGENTS)
def test_readers_build_the_events_and_counts_of_one_process(
    agent: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(import_pool, "BATCH_FILES", 2)  # several batches, even here
    files = files_of(agent, tree(tmp_path)[agent])
    want_lines, want = serial(agent, files)
    assert want["requests"] > 0 and want["repeats"] > 0  # copies: repeats across files
    with Pool(2, min_bytes=0) as pool:
        got_lines, got, failed = pooled(agent, files, pool)
        assert len(pool.readers) == 2
        # The readers serve the next import too (another agent's, or a --since one).
        since = importer.datetime.fromisoformat("2026-01-01T00:00:00+00:00")
        again_lines, again, _ = pooled(agent, files, pool, since=since)
    assert failed == set()
    assert got_lines == want_lines  # the same events, in the same order
    same_summary(got, want)
    since_lines, since_want = serial(agent, files, since=since)
    assert again_lines == since_lines
    same_summary(again, since_want)
    assert len(pool.peak_rss_kb) == 2 and all(kb > 0 for kb in pool.peak_rss_kb)


def test_held_results_are_bounded_and_the_order_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for one batch only (held per reader, queued for the daemon), every
    file still comes through, in order."""
    monkeypatch.setattr(import_pool, "HELD_BYTES", 1)
    monkeypatch.setattr(import_pool, "QUEUED_BYTES", 1)
    monkeypatch.setattr(import_pool, "BATCH_FILES", 1)
    monkeypatch.setattr(importer, "OUTBOX_BYTES", 1)  # (read in this process: the same)
    files = files_of("claude-code", tree(tmp_path)["claude-code"])
    want_lines, want = serial("claude-code", files)
    with Pool(2, min_bytes=0) as pool:
        got_lines, got, _ = pooled("claude-code", files, pool)
    assert got_lines == want_lines
    same_summary(got, want)


def test_a_dead_reader_costs_its_file_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(import_pool, "BATCH_FILES", 1)
    files = files_of("amp", tree(tmp_path)["amp"])
    assert len(files) >= 4
    with Pool(2, min_bytes=0) as pool:
        pool._start()
        for reader in pool.readers:
            os.kill(reader.proc.pid, signal.SIGKILL)
        lines, summary, failed = pooled("amp", files, pool)
    # One batch (here one file) given to each reader is lost, with its path; the next
    # ones go back, to be read in this process (no reader is left).
    lost = {files[0], files[1]}
    assert failed == lost
    assert sorted(summary["rejections"]) == sorted(
        f"{p}: its reader process exited (status -9)" for p in lost
    )
    rest = [p for p in files if p not in lost]
    want_lines, want = serial("amp", rest)
    assert lines == want_lines
    assert summary["requests"] == want["requests"]


def test_an_import_that_stops_early_stops_its_readers_without_waiting_on_them(
    tmp_path: Path,
) -> None:
    """The importing side stops (its daemon went away, Ctrl-C) while a reader is writing
    more than its pipe holds: closing the pool ends the reader at once, quietly."""
    session = tmp_path / "big.jsonl"
    with session.open("w") as f:
        for n in range(40_000):  # ~25 MB of events out, far more than a pipe holds
            line = {
                "type": "assistant",
                "sessionId": "sess-big",
                "timestamp": f"2026-03-01T10:{n // 1000 % 60:02d}:{n % 60:02d}.000Z",
                "uuid": f"u-{n}",
                "requestId": f"req_{n:08d}",
                "message": {
                    "id": f"msg_{n:08d}",
                    "model": "claude-sonnet-4-5",
                    "role": "assistant",
                    "content": [{"type": "text", "text": "..."}],
                    "usage": {"input_tokens": n % 100, "output_tokens": 7},
                },
            }
            f.write(json.dumps(line) + "\n")
    pool = Pool(1, min_bytes=0)
    pool._start()
    [reader] = pool.readers
    pool._give(reader, [import_pool.AGENT, "claude-code", None, {}, {}, None, {}, []])
    pool._give(reader, [import_pool.UNIT, 0, [[str(session), None]]])
    time.sleep(1.0)  # it has filled its pipe by now, and waits on it
    assert reader.proc.poll() is None
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < import_pool.STOP_GRACE
    assert reader.proc.returncode is not None and pool.peak_rss_kb


def test_a_file_that_cannot_be_read_is_named_and_the_others_imported(
    running_daemon: Daemon, tmp_path: Path, state_home: Path
) -> None:
    root = tree(tmp_path)["claude-code"][0]
    gone: list[Path] = []

    def on_files(files: list[Path], total: int) -> None:  # between finding and reading
        gone.append(files[1])
        files[1].unlink()

    with Pool(2, min_bytes=0) as pool:
        summary = importer.run("claude-code", [root], on_files=on_files, pool=pool)
    assert summary.rejections == [f"{gone[0]}: No such file or directory"]
    assert summary.accepted == summary.sent > 0 and summary.rejected == 0
    journaled = running_daemon.journal_events()
    assert len(journaled) == summary.sent
    # Every file but the lost one is recorded as imported: it is read again next time.
    recorded = json.loads((state_home / "import" / "claude-code.json").read_text())["files"]
    assert str(gone[0]) not in recorded
    assert len(recorded) == summary.files - 1


def test_an_import_with_readers_into_the_daemon_then_again(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    given = tree(tmp_path)
    want = {}
    for agent in importer.AGENTS:
        want[agent] = serial(agent, files_of(agent, given[agent]))[0]
    with Pool(2, min_bytes=0) as pool:
        sent = {
            agent: importer.run(agent, given[agent], pool=pool, rescan=True)
            for agent in importer.AGENTS
        }
        again = {
            agent: importer.run(agent, given[agent], pool=pool, rescan=True)
            for agent in importer.AGENTS
        }
    for agent, summary in sent.items():
        assert summary.accepted == summary.sent == len(want[agent]), agent
    assert sum(s.accepted for s in again.values()) == 0
    journaled = running_daemon.journal_events()
    ids = [e["id"] for e in journaled]
    assert len(ids) == len(set(ids)) == sum(len(lines) for lines in want.values())
    assert set(ids) == {json.loads(line)["id"] for lines in want.values() for line in lines}


def test_the_number_of_readers_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert import_pool.default_size() == import_pool.MAX_READERS
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert import_pool.default_size() == 0  # one CPU: read in the importing process
    assert not Pool().wanted(1 << 40)
    assert not Pool(2).wanted(import_pool.MIN_BYTES - 1)
    assert Pool(2).wanted(import_pool.MIN_BYTES)


def test_readers_send_only_the_new_lines_of_grown_files(
    running_daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sizes an earlier import sent reach the readers: grown files read by them build
    the events of their new lines only, as one read here does."""
    monkeypatch.setattr(import_pool, "BATCH_FILES", 1)  # a batch per file: both readers read
    sample = Path("/work/shared/samples/claude-code/transcripts")
    files = {
        tmp_path / "a.jsonl": sample / "spotter_tool_heavy_session_v2.1.38.jsonl",
        tmp_path / "b.jsonl": sample / "sniffly_fed8ce56_session_v1.0.17.jsonl",
    }
    for path, source in files.items():
        path.write_bytes(b"".join(source.read_bytes().splitlines(True)[:11]))
    first = importer.run("claude-code", [tmp_path], socket_path=running_daemon.events_socket)
    assert first.accepted == first.sent > 0 and not first.rejected
    for path, source in files.items():
        with path.open("ab") as f:
            f.writelines(source.read_bytes().splitlines(True)[11:])
    here = importer.run("claude-code", [tmp_path], dry_run=True)
    with Pool(2, min_bytes=0) as pool:
        pooled = importer.run("claude-code", [tmp_path], dry_run=True, pool=pool)
        assert len(pool.readers) == 2
    assert here.files == 2 and here.earlier == first.sent
    assert pooled.as_dict() | {"elapsed_s": 0} == here.as_dict() | {"elapsed_s": 0}
