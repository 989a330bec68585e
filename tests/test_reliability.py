"""Reliability: the real daemon killed, stopped and shut down under load; the spool.

The contract under test (DESIGN.md §3, §4, §7): an event covered by a summary the
daemon sent is in the journal, exactly once, whatever happens to the daemon
afterwards; a client resending what was never acknowledged cannot make an id
appear twice; `telemetryctl send` never loses an event and never hangs a hook.

The kill -9 test runs 20 rounds; ``TELEMETRYD_STRESS_ROUNDS=200`` (``make stress``)
runs more.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, ctl, exchange, summary

# Read at import: the autouse `state_home` fixture clears TELEMETRYD_* variables.
ROUNDS = max(20, int(os.environ.get("TELEMETRYD_STRESS_ROUNDS") or 0))
CLIENTS = 8
BATCH = 8  # events between two sync requests
WAIT = 30.0  # a deadline for things that must happen, never a pause
SYNC = b'{"op":"sync"}\n'


# -- helpers -------------------------------------------------------------------


class Replies:
    """Reply lines from one connection, read with bounded chunks."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self) -> dict[str, Any]:
        """The next reply line; EOFError when the daemon closed the connection."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply


def open_stream(path: str) -> socket.socket:
    """Like conftest's ``connect``, but closes the socket when the connect fails."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(WAIT)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def event_line(event_id: str, client: int) -> bytes:
    event = {"type": "custom", "name": "reliability", "id": event_id, "attrs": {"client": client}}
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


def wait_until(predicate: Callable[[], bool], what: str, daemon: Daemon | None = None) -> None:
    """Poll ``predicate`` until it holds (for on-disk effects nothing reports)."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{daemon.log() if daemon else ''}")
        time.sleep(0.02)


def spool_files(home: Path) -> list[Path]:
    spool = home / "spool"
    return sorted(spool.glob("*.jsonl")) if spool.is_dir() else []


def status(daemon: Daemon) -> dict[str, Any]:
    with open_stream(daemon.control_socket) as sock:
        sock.sendall(b'{"op":"status"}\n')
        return Replies(sock).next()


def id_counts(daemon: Daemon) -> Counter[str]:
    return Counter(event["id"] for event in daemon.journal_events())


def assert_quarantine_holds_only_torn_lines(home: Path) -> None:
    quarantine = home / "quarantine"
    if not quarantine.exists():
        return
    for path in quarantine.iterdir():
        assert path.name.endswith(".jsonl.torn"), f"unexpected quarantine file {path.name}"
        data = path.read_bytes()
        # A torn line is the start of one event, cut before its newline.
        assert data.startswith(b"{"), data[:200]
        assert b"\n" not in data, data[:200]


def ms_floor(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- kill -9 under load ----------------------------------------------------------


class Aborted(Exception):
    pass


class Shared:
    """What the streaming clients and the test's main thread share."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.generation = 0  # daemon restarts so far
        self.acked = 0
        self.stopping = False
        self.aborted = False
        self.errors: list[BaseException] = []

    def add_acked(self, count: int) -> None:
        with self.cond:
            self.acked += count
            self.cond.notify_all()

    def restarted(self) -> None:
        with self.cond:
            self.generation += 1
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    def abort(self) -> None:
        with self.cond:
            self.aborted = True
            self.cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        with self.cond:
            self.errors.append(exc)
            self.cond.notify_all()

    def wait_restart(self, seen: int) -> None:
        """Block until the daemon was restarted after generation ``seen``."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.generation > seen or self.aborted, WAIT):
                raise AssertionError(f"no restart after generation {seen}")
            if self.aborted:
                raise Aborted

    def wait_acked(self, target: int) -> None:
        with self.cond:
            reached = self.cond.wait_for(lambda: self.acked >= target or bool(self.errors), WAIT)
            if self.errors:
                raise self.errors[0]
            if not reached:
                raise AssertionError(f"only {self.acked} events acked, waiting for {target}")


class StreamingClient:
    """Streams events with unique ids over one connection, syncing every BATCH events.

    Only the events a summary covered count as acknowledged. When the connection
    breaks, the client waits for the restart and resends everything unacknowledged.
    """

    def __init__(self, index: int, shared: Shared, path: str) -> None:
        self.index = index
        self.shared = shared
        self.path = path
        self.next_n = 0
        self.acked: set[str] = set()
        self.unacked: set[str] = set()  # sent at least once, no summary covered it yet
        self.broken = 0  # connections cut by a kill
        self.resent = 0
        self.duplicates = 0  # as reported by the daemon's summaries

    def run(self) -> None:
        try:
            self._run()
        except Aborted:
            pass
        except BaseException as exc:
            self.shared.fail(exc)

    def _run(self) -> None:
        while True:
            with self.shared.cond:
                seen = self.shared.generation
                if self.shared.aborted:
                    return
            try:
                sock = open_stream(self.path)
            except (FileNotFoundError, ConnectionRefusedError):
                self.shared.wait_restart(seen)
                continue
            try:
                with sock:
                    self._session(sock)
                return
            except TimeoutError:
                raise AssertionError(f"client {self.index}: a live daemon did not answer") from None
            except (EOFError, ConnectionError):
                self.broken += 1
                self.shared.wait_restart(seen)

    def _session(self, sock: socket.socket) -> None:
        replies = Replies(sock)
        resend = sorted(self.unacked)
        lines = events = accepted = duplicates = 0
        while True:
            if self.shared.aborted:
                raise Aborted
            if resend:
                ids, resend = resend[:BATCH], resend[BATCH:]
                self.resent += len(ids)
                fresh = False
            elif self.shared.stopping:
                return
            else:
                ids = [f"k{self.index}-{self.next_n + n:07d}" for n in range(BATCH)]
                self.next_n += BATCH
                self.unacked.update(ids)
                fresh = True
            payload = b"".join(event_line(event_id, self.index) for event_id in ids)
            half = len(payload) // 2  # two writes: a kill may land between them
            sock.sendall(payload[:half])
            sock.sendall(payload[half:] + SYNC)
            lines += len(ids) + 1
            events += len(ids)
            summary = replies.next()
            assert summary.get("ok") is True, summary
            assert summary["lines"] == lines, (summary, lines)
            assert summary["rejected"] == 0, summary
            assert summary["accepted"] + summary["duplicates"] == events, (summary, events)
            if fresh:  # ids never sent before cannot be duplicates
                assert summary["accepted"] - accepted == len(ids), (summary, accepted)
            self.duplicates += summary["duplicates"] - duplicates
            accepted, duplicates = summary["accepted"], summary["duplicates"]
            self.unacked.difference_update(ids)
            self.acked.update(ids)
            self.shared.add_acked(len(ids))


@pytest.mark.slow
@pytest.mark.timeout(120 + ROUNDS * 3)
def test_kill_9_under_load_keeps_every_acked_event_exactly_once(daemon_factory: Any) -> None:
    daemon: Daemon = daemon_factory().start()
    shared = Shared()
    clients = [StreamingClient(i, shared, daemon.events_socket) for i in range(CLIENTS)]
    threads = [threading.Thread(target=c.run, name=f"client-{c.index}") for c in clients]
    rng = random.Random(ROUNDS)
    for thread in threads:
        thread.start()
    try:
        for _ in range(ROUNDS):
            # Kill once some more acks came back, at a varying point of the stream.
            target = shared.acked + rng.randint(CLIENTS * BATCH // 2, CLIENTS * BATCH * 3)
            shared.wait_acked(target)
            daemon.kill()
            daemon.start()
            shared.restarted()
        shared.stop()  # every client resends what it has left, syncs and leaves
        for thread in threads:
            thread.join(WAIT)
            assert not thread.is_alive(), f"{thread.name} did not finish"
    except BaseException:
        shared.abort()
        daemon.kill()  # wakes the clients waiting for a reply
        for thread in threads:
            thread.join(WAIT)
        raise
    if shared.errors:
        raise shared.errors[0]
    assert daemon.stop() == 0, daemon.log()

    counts = id_counts(daemon)  # every line parses, no torn tail
    twice = sorted(event_id for event_id, n in counts.items() if n > 1)
    assert twice == [], f"{len(twice)} ids journaled more than once, e.g. {twice[:5]}"
    acked = set().union(*(c.acked for c in clients))
    missing = sorted(acked - counts.keys())
    assert missing == [], f"{len(missing)} acked events lost, e.g. {missing[:5]}"
    for client in clients:
        assert client.unacked == set(), f"client {client.index} left events unacknowledged"
    # Nothing journaled that no client sent (in the end, every sent event was acked).
    assert set(counts) == acked
    assert_quarantine_holds_only_torn_lines(daemon.home)
    # The kills really cut live streams, and unacknowledged events were resent.
    assert sum(c.broken for c in clients) >= ROUNDS
    assert sum(c.resent for c in clients) > 0


# -- SIGTERM under load ------------------------------------------------------------


class DrainingClient:
    """Pipelines events and sync requests until the daemon shuts down.

    A sender thread writes batches with a sync after each, without waiting; a
    reader thread records every reply. The daemon is always mid-stream.
    """

    PIPELINE = 4  # syncs in flight at most

    def __init__(self, index: int, shared: Shared, path: str) -> None:
        self.index = index
        self.shared = shared
        self.sock = open_stream(path)
        self.sent: list[str | None] = []  # per line written: the event id, None for a sync
        self.replies: list[dict[str, Any]] = []
        self.ended = ""
        self.window = threading.Semaphore(self.PIPELINE)
        self.done = threading.Event()

    def send(self) -> None:
        n = 0
        try:
            while not self.done.is_set():
                if not self.window.acquire(timeout=WAIT):
                    raise AssertionError(f"client {self.index}: no summary came back")
                ids = [f"t{self.index}-{n + i:07d}" for i in range(BATCH * 4)]
                n += len(ids)
                # Recorded before writing: the daemon may take part of what is written.
                self.sent.extend([*ids, None])
                for start in range(0, len(ids), BATCH):  # several writes, then the sync
                    chunk = ids[start : start + BATCH]
                    self.sock.sendall(b"".join(event_line(i, self.index) for i in chunk))
                self.sock.sendall(SYNC)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon stopped reading and closed; the reader has its last words
        except BaseException as exc:
            self.shared.fail(exc)

    def read(self) -> None:
        replies = Replies(self.sock)
        covered = 0
        try:
            while True:
                reply = replies.next()
                self.replies.append(reply)
                if reply.get("error") == "shutting_down":
                    continue  # may follow the final summary; EOF comes next
                assert reply.get("ok") is True and reply["rejected"] == 0, reply
                assert covered <= reply["lines"] <= len(self.sent), reply
                events = sum(1 for i in self.sent[covered : reply["lines"]] if i is not None)
                covered = reply["lines"]
                self.shared.add_acked(events)
                self.window.release()
        except EOFError:
            self.ended = "eof"
        except ConnectionResetError:
            self.ended = "reset"
        except BaseException as exc:
            self.shared.fail(exc)
        finally:
            self.done.set()
            self.window.release()  # a sender waiting for room sees `done`

    def summaries(self) -> list[dict[str, Any]]:
        return [reply for reply in self.replies if reply.get("ok")]

    def covered(self) -> set[str]:
        lines = max((r["lines"] for r in self.summaries()), default=0)
        return {event_id for event_id in self.sent[:lines] if event_id is not None}


def test_sigterm_under_load_acknowledges_and_journals_exactly_once(daemon_factory: Any) -> None:
    daemon: Daemon = daemon_factory().start()
    shared = Shared()
    clients = [DrainingClient(i, shared, daemon.events_socket) for i in range(CLIENTS)]
    threads = [
        threading.Thread(target=work, name=f"client-{c.index}-{work.__name__}")
        for c in clients
        for work in (c.send, c.read)
    ]
    for thread in threads:
        thread.start()
    try:
        shared.wait_acked(CLIENTS * BATCH * 64)
    finally:
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(WAIT)
            assert not thread.is_alive(), f"{thread.name} did not finish"
        for client in clients:
            client.sock.close()
    if shared.errors:
        raise shared.errors[0]
    assert daemon.proc.wait(WAIT) == 0, daemon.log()

    counts = id_counts(daemon)
    assert [i for i, n in counts.items() if n > 1] == []
    for client in clients:
        assert client.ended, f"client {client.index} saw no end of stream"
        # Before closing, the daemon summarises every line it processed; at most a
        # `shutting_down` notice may follow that final summary.
        last = max(i for i, reply in enumerate(client.replies) if reply.get("ok"))
        final, after = client.replies[last], client.replies[last + 1 :]
        assert all(r.get("error") == "shutting_down" for r in after), after
        processed = client.sent[: final["lines"]]
        assert final["accepted"] == sum(1 for i in processed if i is not None), final
        assert final["rejected"] == 0 and final["duplicates"] == 0, final
        mine = {i for i in counts if i.startswith(f"t{client.index}-")}
        covered = client.covered()
        assert covered - mine == set(), f"client {client.index}: acked events lost"
        # And nothing beyond what was processed was journaled.
        assert mine == covered, f"client {client.index}: {sorted(mine - covered)[:5]}"


# -- a daemon that is down or stopped ----------------------------------------------------


def test_send_with_the_daemon_down_spools_and_the_daemon_replays(
    daemon_factory: Any, state_home: Path
) -> None:
    before = ms_floor(datetime.now(UTC))
    result = ctl("send", "--type", "custom", "--name", "down", "--id", "down-1", "--timeout", "1")
    after = datetime.now(UTC)
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert result.stdout == b""
    warning = stderr.splitlines()
    assert len(warning) == 1 and warning[0].startswith("telemetryctl: warning:"), stderr
    files = spool_files(state_home)
    assert len(files) == 1 and str(files[0]) in warning[0], (files, stderr)
    assert json.loads(files[0].read_bytes())["id"] == "down-1"
    assert [p.name for p in (state_home / "spool").iterdir()] == [files[0].name]  # no temp file
    assert files[0].stat().st_mode & 0o777 == 0o600  # events are private to their user
    assert (state_home / "spool").stat().st_mode & 0o777 == 0o700

    started = ms_floor(datetime.now(UTC))
    daemon: Daemon = daemon_factory().start()
    wait_until(lambda: spool_files(state_home) == [], "the spool to be ingested", daemon)
    assert daemon.stop() == 0
    events = [e for e in daemon.journal_events() if e["id"] == "down-1"]
    assert len(events) == 1, events
    event = events[0]
    # `ts` is when the hook fired, not when the daemon replayed the spool.
    assert before <= utc(event["ts"]) <= after
    assert utc(event["received_at"]) >= started
    assert utc(event["ts"]) < started


def test_a_stopped_daemon_never_hangs_query_or_tail(daemon_factory: Any) -> None:
    """A daemon stopped (SIGSTOP) still accepts connections, so only a deadline on its
    answer ends the wait: `query` without --timeout waited the longest timeout (an hour),
    `tail` forever. Both now exit 3, naming why; once it runs again, both work."""
    from telemetryd.client.control import REPLY_GRACE, TAIL_TIMEOUT

    daemon: Daemon = daemon_factory().start()
    assert exchange(daemon.events_socket, b'{"type":"custom","name":"before"}\n') == [summary(1, 1)]
    assert daemon.proc is not None
    pid = daemon.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        for argv, wait in (
            (("query", "select count(*) from events"), REPLY_GRACE),
            (("tail", "-n", "1"), TAIL_TIMEOUT),
        ):
            started = time.monotonic()
            result = ctl(*argv, timeout=wait + 30)
            took = time.monotonic() - started
            assert result.returncode == 3, (argv, result.stderr)
            assert wait <= took < wait + 20, (argv, took)
            assert b"stopped" in result.stderr or b"did not answer" in result.stderr, result.stderr
    finally:
        os.kill(pid, signal.SIGCONT)
    result = ctl("query", "--format", "csv", "select count(*) from events")
    assert (result.returncode, result.stdout) == (0, b"count_star()\n1\n"), result.stderr
    result = ctl("tail", "-n", "1")
    assert result.returncode == 0 and b'"before"' in result.stdout, result.stderr
    assert daemon.stop() == 0


def test_a_stopped_daemon_never_hangs_send(daemon_factory: Any, state_home: Path) -> None:
    daemon: Daemon = daemon_factory(["--set", "spool.scan-interval=0.2"]).start()
    assert daemon.proc is not None
    pid = daemon.proc.pid
    os.kill(pid, signal.SIGSTOP)  # the socket still accepts connections; nothing answers
    try:
        result = ctl(
            "send", "--type", "custom", "--name", "stopped", "--id", "stop-1", "--timeout", "0.5"
        )
        stderr = result.stderr.decode()
        assert result.returncode == 0, stderr
        assert result.stdout == b""
        assert len(stderr.splitlines()) == 1 and "warning" in stderr, stderr
        files = spool_files(state_home)
        assert len(files) == 1, files
        assert json.loads(files[0].read_bytes())["id"] == "stop-1"

        strict = ctl(
            "send", "--type", "custom", "--name", "strict", "--id", "stop-strict",
            "--timeout", "0.5", "--strict",
        )  # fmt: skip
        assert strict.returncode == 75, strict.stderr
        assert strict.stdout == b""
        assert b"not delivered" in strict.stderr
        assert spool_files(state_home) == files  # --strict does not spool
    finally:
        os.kill(pid, signal.SIGCONT)

    wait_until(lambda: spool_files(state_home) == [], "the spool to be ingested", daemon)
    # Both stalled connections are still served after SIGCONT: stop-1 arrives twice (the
    # original delivery and the spool), stop-strict once.
    wait_until(
        lambda: (s := status(daemon))["accepted"] + s["duplicates"] >= 3,
        "the stalled deliveries to land",
        daemon,
    )
    counters = status(daemon)
    assert (counters["accepted"], counters["duplicates"], counters["rejected"]) == (2, 1, 0)
    assert daemon.stop() == 0
    counts = id_counts(daemon)
    assert counts["stop-1"] == 1
    assert counts["stop-strict"] == 1
    assert sum(counts.values()) == 2


# -- spool replay ---------------------------------------------------------------------


def _spool_line(event_id: str, **fields: Any) -> bytes:
    event = {"type": "custom", "name": "spooled", "id": event_id, **fields}
    return json.dumps(event).encode() + b"\n"


def test_spool_replay_is_idempotent(daemon_factory: Any, state_home: Path) -> None:
    # One of the ids is already journaled by an earlier run of the daemon.
    first: Daemon = daemon_factory().start()
    replies = exchange(first.events_socket, _spool_line("sp-0"))
    assert replies[-1]["accepted"] == 1
    assert first.stop() == 0

    content = b"".join(_spool_line(f"sp-{n}", attrs={"n": n}) for n in range(5))
    spool = state_home / "spool"
    spool.mkdir(mode=0o700, exist_ok=True)
    (spool / "1000-1-aaaa.jsonl").write_bytes(content)
    (spool / "1000-2-bbbb.jsonl").write_bytes(content.rstrip(b"\n"))  # last line unterminated
    (spool / "1000-4-empty.jsonl").write_bytes(b"")
    (spool / ".1000-3-cccc.tmp").write_bytes(_spool_line("sp-tmp"))  # a send still writing

    daemon = first.start()
    wait_until(lambda: spool_files(state_home) == [], "the spool to be ingested", daemon)
    assert daemon.stop() == 0
    counts = id_counts(daemon)
    assert counts == Counter({f"sp-{n}": 1 for n in range(5)})
    assert (spool / ".1000-3-cccc.tmp").exists()  # not renamed yet: not the daemon's to take
    assert not (state_home / "quarantine").exists()


def test_spool_file_with_bad_lines_is_quarantined(daemon_factory: Any, state_home: Path) -> None:
    content = b"".join(
        [
            _spool_line("q-1"),
            b'{"type": "bogus", "id": "q-2"}\n',
            b"not json at all\n",
            _spool_line("q-4", attrs={"k": "v"}),
            _spool_line("q-5", received_at="2026-01-01T00:00:00Z"),
        ]
    )
    spool = state_home / "spool"
    spool.mkdir(mode=0o700, exist_ok=True)
    (spool / "2000-1-dddd.jsonl").write_bytes(content)
    (spool / "2000-2-eeee.jsonl").write_bytes(_spool_line("q-good"))

    daemon: Daemon = daemon_factory().start()
    wait_until(lambda: spool_files(state_home) == [], "the spool to be ingested", daemon)
    assert daemon.stop() == 0  # the quarantine is complete once the daemon is gone

    assert sorted(id_counts(daemon).elements()) == ["q-1", "q-4", "q-good"]
    quarantine = state_home / "quarantine"
    kept = quarantine / "spool-2000-1-dddd.jsonl"
    assert kept.read_bytes() == content
    errors_file = quarantine / "spool-2000-1-dddd.jsonl.errors"
    errors = [json.loads(line) for line in errors_file.read_bytes().splitlines()]
    assert [(e["line"], e["error"]) for e in errors] == [
        (2, "invalid_event"),
        (3, "invalid_json"),
        (5, "received_at_set"),
    ]
    assert sorted(p.name for p in quarantine.iterdir()) == [
        "spool-2000-1-dddd.jsonl",
        "spool-2000-1-dddd.jsonl.errors",
    ]


def test_spool_file_larger_than_one_read_is_ingested_whole(
    daemon_factory: Any, state_home: Path
) -> None:
    # Well over the daemon's 256 KiB reads, so lines straddle read boundaries.
    ids = [f"big-{n:05d}" for n in range(6000)]
    content = b"".join(_spool_line(i, attrs={"pad": "x" * 40}) for i in ids)
    assert len(content) > 2 * 256 * 1024
    spool = state_home / "spool"
    spool.mkdir(mode=0o700, exist_ok=True)
    (spool / "3000-1-ffff.jsonl").write_bytes(content)

    daemon: Daemon = daemon_factory().start()
    wait_until(lambda: spool_files(state_home) == [], "the spool to be ingested", daemon)
    assert daemon.stop() == 0
    assert [event["id"] for event in daemon.journal_events()] == ids
    assert not (state_home / "quarantine").exists()
