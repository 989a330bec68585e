"""The servers under test, each in a fresh short directory under /tmp.

:class:`Telemetryd` is the real daemon (``python -m telemetryd``) with a fresh
``TELEMETRYD_HOME`` and default configuration, ready once it sends ``READY=1``
on ``NOTIFY_SOCKET`` (the sd_notify protocol, as the tests do). :class:`Rsyslog`
and :class:`SocatSink` are the baselines: rsyslogd (imptcp on a Unix socket ->
omfile) and a raw ``socat`` byte copy from a Unix socket to a file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import BenchError

READY_TIMEOUT = 20.0
# When set (``--profile``), each daemon runs under cProfile and writes
# ``<PROFILE_DIR>/<label>.prof`` at exit (the last run of a label wins).
PROFILE_DIR: Path | None = None
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU of a process (all its threads) so far, and of its reaped children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / _TICK


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak resident) and VmRSS of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TELEMETRYD_") and k != "NOTIFY_SOCKET"
    }
    env.update(extra)
    return env


def _wait_connectable(path: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if os.path.exists(path):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                except OSError:
                    pass
                else:
                    return
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not listen on {path} within {READY_TIMEOUT:g} s")
        time.sleep(0.01)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def count_lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                total += block.count(b"\n")
    return total


class Server:
    """A server process in its own temporary directory; a context manager."""

    name = "server"
    socket_path = ""
    proc: subprocess.Popen[bytes] | None = None

    def __init__(self, prefix: str, home: Path | None = None) -> None:
        """A new directory under /tmp, removed at close; or ``home``, which is kept."""
        self.owned = home is None
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")) if home is None else home
        self.log_path = self.dir / "server.log"

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid, children=True)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise BenchError(f"{self.name} did not stop within {timeout:g} s of SIGTERM") from None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.owned:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        return _tail(self.log_path)


class Telemetryd(Server):
    """The real daemon, default configuration (durability ``interval``)."""

    name = "telemetryd"

    def __init__(
        self, args: list[str] | None = None, label: str = "telemetryd", home: Path | None = None
    ) -> None:
        super().__init__("tdb-", home)
        self.args = list(args or [])
        self.label = label
        self.socket_path = str(self.dir / "run" / "events.sock")
        self.journal_dir = self.dir / "journal"
        self.spool_dir = self.dir / "spool"

    def start(self) -> None:
        notify_path = str(self.dir / "notify.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(notify_path)  # left by an earlier run in a kept home
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        env = _clean_env(TELEMETRYD_HOME=str(self.dir), NOTIFY_SOCKET=notify_path)
        try:
            with open(self.log_path, "ab") as log:
                command = [sys.executable, "-m", "telemetryd"]
                if PROFILE_DIR is not None:
                    wrapper = str(Path(__file__).with_name("profiled.py"))
                    command = [sys.executable, wrapper, str(PROFILE_DIR / f"{self.label}.prof")]
                self.proc = subprocess.Popen(
                    [*command, *self.args],
                    env=env,
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            deadline = time.monotonic() + READY_TIMEOUT
            seen: list[str] = []
            while "READY=1" not in seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise BenchError(
                        f"telemetryd did not report READY=1 (exit {self.proc.poll()}):\n"
                        + self.log()
                    )
                notify.settimeout(min(remaining, 0.5))
                with contextlib.suppress(TimeoutError):
                    seen.extend(notify.recv(4096).decode().split("\n"))
        finally:
            notify.close()

    def segments(self) -> list[Path]:
        return sorted(self.journal_dir.glob("*.jsonl"))

    def journal_lines(self) -> int:
        return count_lines(self.segments())

    def journal_ids(self) -> list[str]:
        import msgspec

        class IdOnly(msgspec.Struct):
            id: str

        decoder = msgspec.json.Decoder(IdOnly)
        ids = []
        for path in self.segments():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                raise BenchError(f"{path} ends in a torn line")
            ids.extend(decoder.decode(line).id for line in data.splitlines())
        return ids

    def spooled(self) -> int:
        try:
            return len(os.listdir(self.spool_dir))
        except FileNotFoundError:
            return 0


RSYSLOG_CONF = """\
global(workDirectory="{dir}" maxMessageSize="64k")
main_queue(queue.type="FixedArray" queue.size="{queue_size}" queue.dequeueBatchSize="{batch}")
module(load="imptcp" threads="2")
template(name="raw" type="string" string="%rawmsg%\\n")
ruleset(name="bench") {{
  action(type="omfile" file="{out}" template="raw" flushOnTXEnd="on"
         ioBufferSize="{io_buffer}" asyncWriting="off" flushInterval="1")
}}
input(type="imptcp" path="{sock}" unlink="on" ruleset="bench")
"""


def rsyslogd_path() -> str | None:
    return shutil.which("rsyslogd") or (
        "/usr/sbin/rsyslogd" if os.access("/usr/sbin/rsyslogd", os.X_OK) else None
    )


class FileSink(Server):
    """A baseline that appends what it receives to ``self.out``."""

    out: Path

    def output_size(self) -> int:
        try:
            return self.out.stat().st_size
        except FileNotFoundError:
            return 0

    def output_lines(self) -> int:
        return count_lines([self.out]) if self.out.exists() else 0


class Rsyslog(FileSink):
    """rsyslogd in the foreground: imptcp on a Unix socket (2 threads) -> omfile, raw message.

    Fair settings: ``flushOnTXEnd="on"`` writes each batch when it is done (the
    default holds the last buffer for up to a second), a 256 KiB write buffer,
    1024-message dequeue batches, no fsync (like durability ``interval``).
    """

    name = "rsyslogd"

    def __init__(
        self, queue_size: int = 100_000, batch: int = 1024, io_buffer: str = "256k"
    ) -> None:
        super().__init__("rsb-")
        self.socket_path = str(self.dir / "in.sock")
        self.out = self.dir / "out.log"
        self.settings = {"queue_size": queue_size, "batch": batch, "io_buffer": io_buffer}

    def config_text(self) -> str:
        return RSYSLOG_CONF.format(
            dir=self.dir, out=self.out, sock=self.socket_path, **self.settings
        )

    def start(self) -> None:
        binary = rsyslogd_path()
        if binary is None:
            raise BenchError("rsyslogd is not installed")
        conf = self.dir / "rsyslog.conf"
        conf.write_text(self.config_text())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-n", "-f", str(conf), "-i", str(self.dir / "rsyslogd.pid")],
                env=_clean_env(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        _wait_connectable(self.socket_path, self.proc, self.log_path, "rsyslogd")


class SocatSink(FileSink):
    """The physical limit: ``socat -u UNIX-LISTEN:sock,fork OPEN:file,creat,append``.

    One forked copy per connection; each copies bytes to the shared file
    (O_APPEND) in 256 KiB reads and closes the connection at EOF.
    """

    name = "socat"

    def __init__(self, block: int = 262144) -> None:
        super().__init__("sob-")
        self.socket_path = str(self.dir / "in.sock")
        self.out = self.dir / "out.log"
        self.block = block

    def start(self) -> None:
        binary = shutil.which("socat")
        if binary is None:
            raise BenchError("socat is not installed")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "-u",
                    "-b",
                    str(self.block),
                    f"UNIX-LISTEN:{self.socket_path},fork,backlog=256",
                    f"OPEN:{self.out},creat,append",
                ],
                env=_clean_env(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        _wait_connectable(self.socket_path, self.proc, self.log_path, "socat")


class NullServer(Server):
    """``bench/nullserver.py``: the events protocol with no work behind it (the ceiling)."""

    name = "null server"

    def __init__(self) -> None:
        super().__init__("nsb-")
        self.socket_path = str(self.dir / "in.sock")

    def start(self) -> None:
        script = str(Path(__file__).with_name("nullserver.py"))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, script, self.socket_path],
                env=_clean_env(),
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        _wait_connectable(self.socket_path, self.proc, self.log_path, "null server")
