"""The store worker as the daemon runs it: a child process that owns DuckDB, started when
needed, stopped when idle, killed and restarted without costing ingest or an event.
Real daemon, real worker processes, real signals."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, connect, ctl, exchange, read_replies, summary

DaemonFactory = Callable[..., Daemon]
ROUNDS = int(os.environ.get("TELEMETRYD_STRESS_ROUNDS", "20"))


def children(daemon: Daemon) -> list[int]:
    """The daemon's live store worker processes (a killed one stays a zombie until
    reaped); its ingest workers (daemon/ingest_workers.py, started by big writes) are not
    counted."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    live = []
    for child in map(int, text.split()):
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state != "Z" and b"telemetryd.daemon.ingest_worker" not in command:
            live.append(child)
    return live


def maps_duckdb(pid: int) -> bool:
    return "duckdb" in Path(f"/proc/{pid}/maps").read_text()


def wait_until(check: Callable[[], bool], seconds: float = 20.0) -> None:
    """Poll a process state that nothing announces (a child's exit), within a bound."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def count(*extra: str) -> tuple[int, int]:
    result = ctl(
        "query",
        "--format",
        "json",
        *extra,
        "select count(*) as n, count(distinct id) as d from events",
    )
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)[0]
    return int(row["n"]), int(row["d"])


def events(prefix: str, number: int, size: int = 0) -> bytes:
    pad = {"pad": "p" * size} if size else {}
    return b"".join(
        json.dumps({"type": "custom", "id": f"{prefix}-{n}", "name": prefix, "attrs": pad}).encode()
        + b"\n"
        for n in range(number)
    )


def test_the_daemon_never_maps_duckdb_and_the_worker_exits_when_idle(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(["--set", "store.idle-exit=1"]).start()
    assert daemon.proc is not None
    assert not maps_duckdb(daemon.proc.pid)
    assert exchange(daemon.events_socket, events("a", 10)) == [summary(10, 10)]
    assert count() == (10, 10)
    [worker] = children(daemon)
    assert maps_duckdb(worker)
    assert not maps_duckdb(daemon.proc.pid)
    wait_until(lambda: not children(daemon))  # idle for a second: the worker exits
    assert not maps_duckdb(daemon.proc.pid)
    status = json.loads(ctl("status", "--json").stdout)
    assert status["store"]["worker"]["state"] == "stopped"
    assert count() == (10, 10)  # and the next query starts it again
    assert "store worker stopped (idle)" in daemon.log()
    assert daemon.stop() == 0
    assert not children(daemon) if daemon.proc.poll() is None else True


def nice_values(pid: int) -> dict[str, int]:
    """Each thread's nice value (Linux keeps one per thread), by thread name and id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            stat = (task / "stat").read_text()
            name, fields = stat.split("(", 1)[1].rsplit(")", 1)
            out[f"{name} {task.name}"] = int(fields.split()[16])
    return out


def test_every_thread_of_the_worker_runs_at_a_lower_priority(
    daemon_factory: DaemonFactory,
) -> None:
    """DuckDB's threads too: they start when the database opens, which begins before the
    worker's imports are done, and take their nice value from the thread that starts them."""
    daemon = daemon_factory().start()
    assert daemon.proc is not None
    assert exchange(daemon.events_socket, events("a", 10)) == [summary(10, 10)]
    assert count() == (10, 10)
    [worker] = children(daemon)
    threads = nice_values(worker)
    assert len(threads) > 2  # the worker's own, DuckDB's
    assert set(threads.values()) == {10}, threads
    assert set(nice_values(daemon.proc.pid).values()) == {0}
    # Out of memory (a query's values are not all under DuckDB's limit), the kernel
    # ends the worker first, not the daemon.
    from telemetryd.store.worker import OOM_SCORE_ADJ

    assert Path(f"/proc/{worker}/oom_score_adj").read_text().strip() == str(OOM_SCORE_ADJ)
    inherited = Path("/proc/self/oom_score_adj").read_text()
    assert Path(f"/proc/{daemon.proc.pid}/oom_score_adj").read_text() == inherited
    assert daemon.stop() == 0


class Producer:
    """Keeps acknowledging producers busy in a thread: batches of events with ids over
    fresh connections, each waiting for its summary within a bound."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.acked = 0
        self.slowest = 0.0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        batch = 0
        while not self._stop.is_set():
            payload = events(f"p{batch}", 100)
            started = time.monotonic()
            try:
                with connect(self.daemon.events_socket, timeout=10) as sock:
                    sock.sendall(payload)
                    sock.shutdown(socket.SHUT_WR)
                    reply = b""
                    while chunk := sock.recv(65536):
                        reply += chunk
                assert json.loads(reply.splitlines()[-1]) == summary(100, 100), reply
            except BaseException as exc:
                self.errors.append(exc)
                return
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.acked += 100
            batch += 1
            self._stop.wait(0.02)


def kill_worker(daemon: Daemon) -> int:
    """SIGKILL the one store worker and wait until it is dead: a killed process stays
    alive (not yet a zombie) while the kernel tears it down, and a caller waiting for
    "one worker" must not mistake the dying one for its successor."""
    wait_until(lambda: len(children(daemon)) == 1)
    [worker] = children(daemon)
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: worker not in children(daemon))
    return worker


@pytest.mark.slow
def test_killing_the_worker_mid_load_and_mid_query_costs_nothing(
    daemon_factory: DaemonFactory,
) -> None:
    """20 rounds: kill -9 the worker while it loads a bulk of events and while it answers
    a query. Ingest never stops acknowledging; the query in flight gets a clear error
    within its timeout (one the killed worker had not yet taken is the next worker's);
    the next query works and holds every acknowledged event once."""
    daemon = daemon_factory(["--set", "store.pending-events=1000000"]).start()
    rng = random.Random(7)
    bulk = 0
    in_flight = 0  # queries the killed worker had taken
    with Producer(daemon) as producer:
        for round_ in range(ROUNDS):
            # A bulk of events, then a load that is killed part way.
            payload = events(f"bulk{round_}", 20_000, size=100)
            assert exchange(daemon.events_socket, payload)[-1]["accepted"] == 20_000
            bulk += 20_000
            flush = threading.Thread(target=ctl, args=("flush",), kwargs={"timeout": 60})
            flush.start()
            wait_until(lambda: len(children(daemon)) == 1)
            time.sleep(rng.uniform(0.0, 0.3))
            kill_worker(daemon)
            flush.join(60)
            # A query in flight: a clear error within its timeout.
            results: list[Any] = []
            slow = threading.Thread(
                target=lambda out=results: out.append(
                    ctl("query", "--timeout", "5", "select count(*) from range(100000000000)")
                ),
                daemon=True,
            )
            started = time.monotonic()
            slow.start()
            wait_until(lambda: len(children(daemon)) == 1)
            time.sleep(rng.uniform(0.05, 0.5))
            kill_worker(daemon)
            slow.join(30)
            [answer] = results
            if answer.returncode == 3:  # the store is unavailable
                assert b"store worker" in answer.stderr, answer.stderr
                in_flight += 1
            else:  # (killed before it took the query: the next worker ran it)
                assert answer.returncode == 1, answer.stdout
                assert b"within its 5 s" in answer.stderr or b"than its 5 s" in answer.stderr
            assert time.monotonic() - started < 5 + 10
            # The next query: every acknowledged event, once.
            total, distinct = count()
            assert total == distinct
            assert total >= bulk
        assert not producer.errors, producer.errors[0]
    assert in_flight >= ROUNDS // 2
    total, distinct = count()
    assert total == distinct == bulk + producer.acked
    assert producer.slowest < 5.0  # acknowledgements never waited on the store
    log = daemon.log()
    assert log.count("killed by SIGKILL") >= 2 * ROUNDS
    assert "Traceback" not in log
    assert daemon.stop() == 0


def test_a_query_the_killed_worker_had_not_taken_is_answered_by_the_next(
    daemon_factory: DaemonFactory,
) -> None:
    """A request still in the worker socket's backlog when the worker is killed is the
    next worker's to answer. (A query sent between a worker's death and the daemon
    noticing it failed with "ask again": the SIGSTOP makes that window as wide as
    need be.) `status` answers meanwhile, with the store's last figures."""
    # (no analysis: its request would wait in the backlog too)
    daemon = daemon_factory(["--set", "analyzer.enabled=false"]).start()
    assert exchange(daemon.events_socket, events("a", 5)) == [summary(5, 5)]
    assert count() == (5, 5)
    [worker] = children(daemon)
    os.kill(worker, signal.SIGSTOP)  # it takes no more connections
    answers: list[tuple[int, int]] = []
    asking = threading.Thread(target=lambda: answers.append(count()), daemon=True)
    try:
        asking.start()
        wait_until(lambda: _worker_status(daemon)["requests"] >= 1)
        time.sleep(0.3)  # (connected: in the backlog)
    finally:
        os.kill(worker, signal.SIGKILL)
        asking.join(30)
    assert answers == [(5, 5)]
    assert "killed by SIGKILL" in daemon.log()
    assert _worker_status(daemon)["state"] == "running"
    assert daemon.stop() == 0


def _worker_status(daemon: Daemon) -> dict[str, Any]:
    from telemetryd.client import control

    worker: dict[str, Any] = control.status(daemon.control_socket)["store"]["worker"]
    return worker


@pytest.fixture
def failing_worker(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment in which the store worker dies at start (out of memory), and
    only the worker: it is the one process that gets TELEMETRYD_STORE_FD."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if os.environ.get('TELEMETRYD_STORE_FD'):\n"
        "    sys.stderr.write('simulated: cannot allocate memory\\n')\n"
        "    os._exit(1)\n"
    )
    yield {"PYTHONPATH": str(site)}


def test_a_worker_that_cannot_start_is_reported_and_ingest_goes_on(
    daemon_factory: DaemonFactory, failing_worker: dict[str, str]
) -> None:
    daemon = daemon_factory().start(env=failing_worker)
    assert exchange(daemon.events_socket, events("a", 50)) == [summary(50, 50)]
    failed = ctl("query", "--timeout", "5", "select count(*) from events")
    assert failed.returncode == 3  # the store is unavailable
    assert b"store worker" in failed.stderr and b"exit status" in failed.stderr
    sent = ctl("send", "--type", "custom", "--name", "still-acked")
    assert sent.returncode == 0 and sent.stderr == b""
    status = json.loads(ctl("status", "--json").stdout)
    worker = status["store"]["worker"]
    assert worker["state"] == "failed" and "exited unexpectedly" in worker["error"]
    assert status["accepted"] == 51
    assert "store worker exited unexpectedly" in daemon.log()
    assert daemon.stop() == 0
    assert len(daemon.journal_events()) == 51


def test_the_worker_exits_when_the_daemon_dies_and_a_new_daemon_starts_its_own(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory().start()
    assert exchange(daemon.events_socket, events("a", 5)) == [summary(5, 5)]
    assert count() == (5, 5)
    [worker] = children(daemon)
    daemon.kill()  # kill -9: the worker's stdin closes
    wait_until(lambda: not Path(f"/proc/{worker}").exists() or _zombie(worker))
    daemon.start()
    assert exchange(daemon.events_socket, events("b", 5)) == [summary(5, 5)]
    assert count() == (10, 10)
    assert daemon.stop() == 0
    assert "the daemon went away; the store worker stops" in daemon.log()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _flood(daemon: Daemon, seconds: float) -> int:
    """Stream events as fast as one connection takes them for ``seconds``: how many (all
    acknowledged)."""
    chunks = [events(f"flood{n}", 2000) for n in range(8)]
    sent = 0
    with connect(daemon.events_socket, timeout=60) as sock:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.sendall(chunks[sent // 2000 % 8].replace(b"flood", f"f{sent}-".encode()))
            sent += 2000
        sock.shutdown(socket.SHUT_WR)
        replies = read_replies(sock)
    assert replies[-1] == summary(sent, sent), replies[-3:]
    return sent


def _watch_store(daemon: Daemon, seen: list[dict[str, Any]], stop: threading.Event) -> None:
    from telemetryd.client import control

    while not stop.wait(0.05):
        seen.append(control.status(daemon.control_socket)["store"])


@pytest.mark.parametrize("yield_max", [30, 0])
def test_timed_loads_wait_while_ingest_is_busy_and_the_store_catches_up(
    daemon_factory: DaemonFactory, yield_max: int
) -> None:
    """A flood (far over 5,000 events a second) makes the timed loads wait (`status` says
    since when, with the events waiting); once it ends the store loads them all without
    being asked. With ``store.yield-max`` 0 no load waits."""
    from telemetryd.client import control

    daemon = daemon_factory(
        [
            "--set",
            "store.pending-events=2000",
            "--set",
            "store.interval=0.2",
            "--set",
            f"store.yield-max={yield_max}",
        ]
    ).start()
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_store, args=(daemon, seen, stop))
    watcher.start()
    try:
        total = _flood(daemon, 3.0)
    finally:
        stop.set()
        watcher.join()
    waiting = [store for store in seen if store.get("yielding_since")]
    if yield_max:
        assert waiting, seen[-3:]
        assert max(store["pending_events"] for store in waiting) >= 2000
    else:
        assert not waiting
    deadline = time.monotonic() + 60
    while True:
        store = control.status(daemon.control_socket)["store"]
        if store.get("events") == total and not store.get("yielding_since"):
            break
        assert time.monotonic() < deadline, store
        time.sleep(0.1)
    assert (store["yields"] > 0) == bool(yield_max)
    assert count() == (total, total)
    assert daemon.stop() == 0
