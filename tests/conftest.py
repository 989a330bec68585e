"""Shared fixtures: a private state directory per test, and the real daemon in a subprocess.

The daemon reports readiness over ``NOTIFY_SOCKET`` (the sd_notify protocol), so
tests wait for ``READY=1`` on a real datagram socket instead of sleeping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TELEMETRYCTL = str(BIN / "telemetryctl")
READY_TIMEOUT = 20.0

# Property-based tests: a bounded number of examples in `make test`, many more in
# `make stress` (HYPOTHESIS_PROFILE=stress). No deadline: the machine is shared, and
# the examples drive a real daemon whose latency is not what these tests check.
settings.register_profile(
    "default",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "stress",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def short_home(prefix: str) -> Iterator[Path]:
    """Another daemon's TELEMETRYD_HOME: a fresh directory under /tmp (short, as
    :func:`state_home`'s), removed afterwards; a fixture's body (``yield from``)."""
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def state_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point all telemetryd state at a fresh short directory (socket paths must fit sun_path)."""
    home = Path(tempfile.mkdtemp(prefix="td-", dir="/tmp"))
    monkeypatch.setenv("TELEMETRYD_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("TELEMETRYD_") and name != "TELEMETRYD_HOME":
            monkeypatch.delenv(name)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    # Each test daemon's HTTP listener on a port of its own (never a real daemon's 4318).
    monkeypatch.setenv("TELEMETRYD_HTTP_ADDRESS", "127.0.0.1:0")
    yield home
    shutil.rmtree(home, ignore_errors=True)


# Where each agent's files are, by environment: the import tests unset them all.
AGENT_OVERRIDES = (
    "CLAUDE_CONFIG_DIR",
    "GEMINI_DATA_DIR",
    "COPILOT_HOME",
    "COPILOT_CONFIG_DIR",
    "OPENCODE_DATA_DIR",
    "XDG_DATA_HOME",
    "AMP_DATA_DIR",
)


@pytest.fixture
def agent_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME in tmp and no agent's override (CODEX_HOME under it): an import's defaults
    never reach the real agents' files."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in AGENT_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CODEX_HOME", str(home / ".codex"))
    return home


@pytest.fixture
def default_http_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default `[http] address` for tests that render or install it (``state_home``
    gives daemons port 0)."""
    monkeypatch.delenv("TELEMETRYD_HTTP_ADDRESS", raising=False)


class Daemon:
    """The real `telemetryd` in a subprocess, on real sockets under ``home``."""

    def __init__(self, home: Path, args: list[str] | None = None) -> None:
        self.home = home
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.notify_path = str(home / "notify.sock")
        self.notifications: list[str] = []
        self._notify: socket.socket | None = None
        self.log_path = home / "daemon.log"

    @property
    def events_socket(self) -> str:
        return str(self.home / "run" / "events.sock")

    @property
    def control_socket(self) -> str:
        return str(self.home / "run" / "control.sock")

    @property
    def journal_dir(self) -> Path:
        return self.home / "journal"

    def start(self, *, env: dict[str, str] | None = None, wait: bool = True) -> Daemon:
        if self._notify is None:
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(self.notify_path)
        environ = dict(os.environ, NOTIFY_SOCKET=self.notify_path, TELEMETRYD_HOME=str(self.home))
        environ.update(env or {})
        self.notifications.clear()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "telemetryd", *self.args],
                env=environ,
                stdout=log,
                stderr=log,
            )
        if wait:
            self.wait_for("READY=1")
        return self

    def wait_for(self, field: str, timeout: float = READY_TIMEOUT) -> None:
        """Block until the daemon sends a notify message containing ``field``."""
        assert self._notify is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while field not in self.notifications:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon did not report {field} (exit {self.proc.poll()}):\n{self.log()}"
                )
            self._notify.settimeout(min(remaining, 0.5))
            try:
                message = self._notify.recv(4096).decode()
            except TimeoutError:
                continue
            self.notifications.extend(message.split("\n"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def http_address(self) -> str:
        """host:port of the HTTP listener (on a port of its own: see ``state_home``)."""
        from telemetryd.client import control

        reply = control.status(self.control_socket)
        assert reply["http"] and reply["http"]["listening"], reply.get("http")
        return str(reply["http"]["address"])

    def journal_events(self) -> list[dict[str, Any]]:
        """Every line of every segment, parsed (a parse failure fails the test)."""
        out = []
        for path in sorted(self.journal_dir.glob("*.jsonl")):
            data = path.read_bytes()
            assert not data or data.endswith(b"\n"), f"{path} ends in a torn line"
            out.extend(json.loads(line) for line in data.splitlines())
        return out


def connect(path: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def read_replies(sock: socket.socket) -> list[dict[str, Any]]:
    """Read reply lines until the daemon closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def exchange(path: str, payload: bytes) -> list[dict[str, Any]]:
    """Send ``payload``, half-close, and return every reply line."""
    with connect(path) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return read_replies(sock)


def summary(lines: int, accepted: int, rejected: int = 0, duplicates: int = 0) -> dict[str, Any]:
    """The summary line the daemon sends for a connection with these counts."""
    return {
        "ok": True,
        "lines": lines,
        "accepted": accepted,
        "rejected": rejected,
        "duplicates": duplicates,
    }


def ctl(
    *args: str, input: bytes | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[bytes]:
    """Run the installed `telemetryctl` for real."""
    return subprocess.run(
        [TELEMETRYCTL, *args], input=input, capture_output=True, timeout=timeout, check=False
    )


@pytest.fixture
def daemon_factory(state_home: Path) -> Iterator[Any]:
    made: list[Daemon] = []

    def make(args: list[str] | None = None, home: Path | None = None) -> Daemon:
        daemon = Daemon(home or state_home, args)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.close()


@pytest.fixture
def running_daemon(daemon_factory: Any) -> Iterator[Daemon]:
    daemon = daemon_factory().start()
    yield daemon
    daemon.stop()


def with_stdin_open(
    argv: list[str], parts: list[bytes], wait: float
) -> tuple[int, bytes, bytes, float]:
    """Run ``argv``, write ``parts`` to its stdin 0.2 s apart and keep stdin open (a
    writer that holds its end of the pipe): its exit status within ``wait`` seconds,
    stdout, stderr and how long it took."""
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        started = time.monotonic()
        for n, part in enumerate(parts):
            if n:
                time.sleep(0.2)
            proc.stdin.write(part)
            proc.stdin.flush()
        try:
            status = proc.wait(timeout=wait)
        finally:
            proc.stdin.close()
        return status, proc.stdout.read(), proc.stderr.read(), time.monotonic() - started
