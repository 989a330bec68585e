"""The servers under test, each in a fresh short directory under /tmp.

:class:`Telemetryd` is the real daemon (``python -m telemetryd``) with a fresh
``TELEMETRYD_HOME`` and default configuration, ready once it sends ``READY=1``
on ``NOTIFY_SOCKET`` (the sd_notify protocol, as the tests do). The baselines:
:class:`Rsyslog` (imptcp on a Unix socket -> omfile, the raw message),
:class:`RsyslogJson` (the same with mmjsonparse: each line parsed as JSON and
written back out from the parsed tree), ``bench.syslogng.SyslogNg`` (json-parser,
the same shape) and :class:`SocatSink`, a raw ``socat`` byte copy to a file.

The daemon may run as more than one process (a store worker child): memory is
measured over the process tree (:func:`tree`, :class:`TreeSampler`).
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
import threading
import time
from pathlib import Path
from typing import Any, Self

import msgspec

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


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` (with its reaped children) and of its whole live tree: the
    daemon alone, and the daemon with its ingest workers and store worker."""
    own = cpu_seconds(pid, children=True)
    total = own
    for member in tree(pid)[1:]:
        try:
            total += cpu_seconds(member, children=True)
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue  # (gone meanwhile: its time is in its parent's once reaped)
    return own, total


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak resident) and VmRSS of a process, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB; 0 once it is gone (or a zombie)."""
    try:
        return memory_kib(pid).get("VmRSS", 0)
    except (FileNotFoundError, ProcessLookupError):
        return 0


def _children_by_scan(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry))
    return found


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``, started from any of its threads
    (``/proc/PID/task/*/children``; a scan of every process's parent where the kernel
    lacks that file)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return []
    if not os.path.exists(f"/proc/{pid}/task/{tasks[0]}/children"):
        return _children_by_scan(pid)
    found: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(child) for child in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
    return found


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children(current))
    return out


def tree_rss_kib(pid: int) -> dict[int, int]:
    """VmRSS of ``pid`` and of each descendant, in KiB."""
    return {member: rss_kib(member) for member in tree(pid)}


def maps_library(pid: int, name: str) -> bool:
    """Whether ``pid`` has a file whose path contains ``name`` mapped (``/proc/PID/maps``)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any(name in line for line in f)
    except (FileNotFoundError, ProcessLookupError):
        return False


class TreeSampler:
    """Samples the summed VmRSS of a process tree every ``interval`` seconds from a
    thread; a context manager. ``peak_kib`` is the largest sum seen, ``at_peak`` the
    per-process figures of that sample, ``most_processes`` the largest tree seen.

    A sum of RSS counts pages shared between processes (libraries, a forked child's
    untouched pages) once per process: an upper bound of what the tree holds.

    ``largest_hwm_kib`` is the largest ``VmHWM`` (a process's own peak RSS since its
    ``exec``) read off any process of the tree, which catches a peak between two
    samples. ``wait4``'s ``ru_maxrss`` cannot stand in for it: on Linux it starts from
    the forking process's RSS at the fork, so a child of a large bench process would
    report the bench's size."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.at_peak: dict[int, int] = {}
        self.samples = 0
        self.most_processes = 0
        self.largest_hwm_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        figures = {}
        for member in tree(self.pid):
            try:
                memory = memory_kib(member)
            except (FileNotFoundError, ProcessLookupError):
                memory = {}
            figures[member] = memory.get("VmRSS", 0)
            self.largest_hwm_kib = max(self.largest_hwm_kib, memory.get("VmHWM", 0))
        total = sum(figures.values())
        self.samples += 1
        self.most_processes = max(self.most_processes, len(figures))
        if total > self.peak_kib:
            self.peak_kib, self.at_peak = total, figures

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def wait_no_children(pid: int, timeout: float) -> float:
    """Wait until ``pid`` has no child processes (polled every 20 ms); the seconds it
    took. Raises :class:`BenchError` after ``timeout``."""
    start = time.monotonic()
    while children(pid):
        if time.monotonic() - start > timeout:
            raise BenchError(
                f"process {pid} still has children {children(pid)} after {timeout:g} s"
            )
        time.sleep(0.02)
    return time.monotonic() - start


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


def accepts_setting(setting: str) -> bool:
    """Whether the daemon knows ``--set setting`` (``section.key=value``): asked with
    ``telemetryd --check`` in a throwaway home, so new settings are used once they exist."""
    with tempfile.TemporaryDirectory(prefix="tdchk-", dir="/tmp") as home:
        proc = subprocess.run(
            [sys.executable, "-m", "telemetryd", "--check", "--set", setting],
            env=_clean_env(TELEMETRYD_HOME=home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
    return proc.returncode == 0


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

    def __enter__(self) -> Self:
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
            if PROFILE_DIR is not None:  # (SIGTERM: a profiled daemon writes its profile)
                self.proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(30)
            if self.proc.poll() is None:
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
        self,
        args: list[str] | None = None,
        label: str = "telemetryd",
        home: Path | None = None,
        pycache: Path | None = None,
    ) -> None:
        """``pycache``: the daemon and the processes it starts keep their bytecode there
        (``PYTHONPYCACHEPREFIX``), as an installed package has it; else they inherit this
        environment's setting (which may be ``PYTHONDONTWRITEBYTECODE``: every process
        compiles what it imports of the source tree each time it starts)."""
        super().__init__("tdb-", home)
        self.args = list(args or [])
        self.label = label
        self.pycache = pycache
        self.socket_path = str(self.dir / "run" / "events.sock")
        self.journal_dir = self.dir / "journal"
        self.spool_dir = self.dir / "spool"

    def analyses(self) -> int:
        """How many analyses the daemon's analyzer has run (from its status)."""
        from telemetryd.client import control

        status = control.status(str(self.dir / "run" / "control.sock"))
        return int((status.get("analyzer") or {}).get("runs", 0))

    def start(self) -> None:
        notify_path = str(self.dir / "notify.sock")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(notify_path)  # left by an earlier run in a kept home
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        # The HTTP listener on a free port: never a real daemon's 4318.
        env = _clean_env(
            TELEMETRYD_HOME=str(self.dir),
            NOTIFY_SOCKET=notify_path,
            TELEMETRYD_HTTP_ADDRESS="127.0.0.1:0",
        )
        if self.pycache is not None:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(self.pycache)
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
        ids: list[str] = []
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


def rsyslog_module(name: str) -> Path | None:
    """Where rsyslog's loadable module ``name`` (``mmjsonparse``) is, if installed.
    Debian ships mmjsonparse in the ``rsyslog`` package itself."""
    found = [
        *sorted(Path("/usr/lib").glob(f"*/rsyslog/{name}.so")),
        *(Path(d) / f"{name}.so" for d in ("/usr/lib/rsyslog", "/usr/lib64/rsyslog")),
    ]
    return next((path for path in found if path.exists()), None)


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


RSYSLOG_JSON_CONF = """\
global(workDirectory="{dir}" maxMessageSize="64k")
main_queue(queue.type="FixedArray" queue.size="{queue_size}" queue.dequeueBatchSize="{batch}")
module(load="imptcp" threads="2")
module(load="mmjsonparse")
template(name="parsed" type="string" string="%$!all-json-plain%\\n")
ruleset(name="bench") {{
  action(type="mmjsonparse" cookie="" useRawMsg="on")
  action(type="omfile" file="{out}" template="parsed" flushOnTXEnd="on"
         ioBufferSize="{io_buffer}" asyncWriting="off" flushInterval="1")
}}
input(type="imptcp" path="{sock}" unlink="on" ruleset="bench")
"""


class RsyslogJson(Rsyslog):
    """:class:`Rsyslog` with mmjsonparse: each raw line (``useRawMsg``, no ``@cee:``
    cookie) is parsed into rsyslog's JSON tree, and the file gets that tree written back
    out (``%$!all-json-plain%``), the nearest rsyslog gets to decode, validate,
    re-encode. A line that does not parse would come out as ``{"msg": "<the line>"}``:
    :func:`check_parsed` reads every output line to be sure none did. One main-queue
    worker, as for the raw copy: two (``queue.workerThreads="2"``) were no faster here
    (interleaved runs), the single omfile action being where the lines meet."""

    name = "rsyslogd+mmjsonparse"

    def config_text(self) -> str:
        return RSYSLOG_JSON_CONF.format(
            dir=self.dir, out=self.out, sock=self.socket_path, **self.settings
        )


class _ParsedAgent(msgspec.Struct):
    model: str


class _Parsed(msgspec.Struct):
    type: str
    agent: _ParsedAgent


def check_parsed(path: Path, expected: int, what: str) -> dict[str, Any]:
    """Every line of ``path`` is a JSON object re-encoded from a parsed event: it has a
    ``type`` and a nested ``agent.model`` (every benchmark payload event has both).
    Raises :class:`BenchError` naming the first line that is not; returns one sample."""
    decoder = msgspec.json.Decoder(_Parsed)
    lines = 0
    sample: dict[str, Any] = {}
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            try:
                parsed = decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise BenchError(
                    f"{what}: output line {lines} is not a parsed event ({exc}): {line[:200]!r}"
                ) from None
            if lines == 1:
                sample = {"type": parsed.type, "agent.model": parsed.agent.model}
    if lines != expected:
        raise BenchError(f"{what}: sent {expected} events, output has {lines} parsed lines")
    return sample


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
