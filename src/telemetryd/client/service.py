"""Install telemetryd as a user service: systemd units on Linux, a LaunchAgent on macOS.

What is written where::

    Linux   $XDG_CONFIG_HOME/systemd/user/telemetryd.socket   (default ~/.config)
            $XDG_CONFIG_HOME/systemd/user/telemetryd.service
    macOS   ~/Library/LaunchAgents/dev.telemetryd.plist

The files are rendered from the templates in ``systemd/`` and ``launchd/``
(shipped in the wheel as ``telemetryd/service_files/``): ``@EXECUTABLE@``
becomes the absolute path of the installed ``telemetryd``, and the socket and
state paths those the daemon itself will resolve (``TELEMETRYD_HOME`` when it
is set, which the unit then passes on to the daemon). The HTTP listener's TCP
socket comes from ``[http] address`` of the effective configuration (and is left
out, with AF_INET and AF_INET6 in ``RestrictAddressFamilies=``, when ``[http]
enabled = false``): reinstall after changing either.

Everything is a :class:`Plan` first: a list of steps (write a file, make a
directory, run a command, remove a path) computed from what is on disk now.
``--dry-run`` prints the plan; otherwise :func:`execute` carries it out. A
file whose content is already right is not rewritten and a running daemon is
restarted only when its files changed, so installing twice is harmless. The
platform is a parameter, so either platform's plan can be computed (and
printed) anywhere.
"""

from __future__ import annotations

import ipaddress
import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from telemetryd import config, paths
from telemetryd.errors import TelemetryError

Platform = Literal["linux", "darwin"]
PLATFORMS: tuple[Platform, ...] = ("linux", "darwin")

SOCKET_UNIT = "telemetryd.socket"
SERVICE_UNIT = "telemetryd.service"
LABEL = "dev.telemetryd"
PLIST = f"{LABEL}.plist"
LOG_FILE = "telemetryd.log"

_TEMPLATES = {
    SOCKET_UNIT: f"systemd/{SOCKET_UNIT}",
    SERVICE_UNIT: f"systemd/{SERVICE_UNIT}",
    PLIST: f"launchd/{PLIST}",
}


class ServiceError(TelemetryError):
    """The service cannot be installed or controlled here (no manager, a command failed)."""


# -- steps and plans ----------------------------------------------------------


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: str


@dataclass(frozen=True)
class MakeDir:
    path: str  # created with mode 0700, parents as needed


@dataclass(frozen=True)
class Remove:
    path: str  # a file, or a whole directory tree


@dataclass(frozen=True)
class Run:
    argv: tuple[str, ...]
    # Skip the command when this probe succeeds (e.g. "already loaded").
    unless: tuple[str, ...] = ()
    check: bool = True  # a failure is an error


Step = WriteFile | MakeDir | Remove | Run


@dataclass(frozen=True)
class Plan:
    platform: Platform
    steps: tuple[Step, ...]
    unchanged: tuple[str, ...] = ()  # files already up to date
    data_removed: tuple[str, ...] = ()  # collected data a step deletes

    def describe(self) -> str:
        """The plan as text: each file with its full content, each command as a shell line."""
        out = [f"==> unchanged: {path}" for path in self.unchanged]
        for step in self.steps:
            out.append(describe(step))
            if isinstance(step, WriteFile):
                out.append(step.content.rstrip("\n"))
        return "\n".join(out) + "\n" if out else ""


def describe(step: Step) -> str:
    """One line for a step: ``==> write PATH``, ``==> mkdir ...``, ``==> remove PATH``, ``$ CMD``.

    File contents never start a line with ``==> `` or ``$ ``, so the plan's text
    can be split back into its steps.
    """
    if isinstance(step, WriteFile):
        return f"==> write {step.path}"
    if isinstance(step, MakeDir):
        return f"==> mkdir -m 0700 {step.path}"
    if isinstance(step, Remove):
        return f"==> remove {step.path}"
    line = "$ " + shlex.join(step.argv)
    if step.unless:
        line += f"   # unless `{shlex.join(step.unless)}` succeeds"
    if not step.check:
        line += "   # a failure is ignored"
    return line


# -- where things go ----------------------------------------------------------


def current_platform() -> Platform:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "darwin"
    raise ServiceError(f"no supported service manager on {sys.platform} (systemd or launchd)")


def find_executable() -> str:
    """The absolute path of the ``telemetryd`` that belongs with this ``telemetryctl``."""
    beside = Path(sys.executable).parent / "telemetryd"
    if os.access(beside, os.X_OK):
        return str(beside.absolute())
    found = shutil.which("telemetryd")
    if found:
        return os.path.abspath(found)
    raise ServiceError(
        f"cannot find the telemetryd executable (not in {beside.parent}, not on PATH); "
        "install the package first"
    )


@dataclass(frozen=True)
class Layout:
    """The resolved paths a platform's service files refer to."""

    home: str | None  # TELEMETRYD_HOME, when set
    runtime_dir: str  # sockets (on Linux without TELEMETRYD_HOME: "%t/telemetryd")
    state_dir: str
    log_dir: str | None  # launchd's StandardOutPath/StandardErrorPath (journald on Linux)
    target_dir: str  # where the unit files or the plist are installed
    http_address: str | None = None  # [http] address, None when the listener is off

    @property
    def log_file(self) -> str | None:
        return os.path.join(self.log_dir, LOG_FILE) if self.log_dir else None


def layout(platform: Platform) -> Layout:
    """Paths as the daemon will resolve them under ``platform``'s service manager, and
    the HTTP listener's address from the effective configuration.

    On the platform it runs on this is :func:`telemetryd.paths.resolve`; for the
    other one (a dry run), platformdirs' rules for that platform.
    """
    return replace(_paths_layout(platform), http_address=http_address())


def _effective() -> config.Config:
    """The configuration the installed service will run with."""
    return config.load(paths.resolve().config_file)[0]


def http_address() -> str | None:
    """``[http] address`` of the effective configuration; None when ``enabled = false``."""
    settings = _effective()
    return settings.http.address if settings.http.enabled else None


def _paths_layout(platform: Platform) -> Layout:
    """The paths alone (see :func:`layout`)."""
    where = paths.resolve()
    native = sys.platform.startswith(platform)
    home = where.state_dir if os.environ.get(paths.ENV_HOME) else None
    if platform == "linux":
        config_home = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        target = os.path.join(config_home, "systemd", "user")
        if home is not None:
            return Layout(home, where.runtime_dir, home, None, target)
        from platformdirs.unix import Unix

        state = where.state_dir if native else Unix(paths.APP).user_state_dir
        # systemd hands the daemon its XDG_RUNTIME_DIR (%t), so %t/telemetryd is
        # where both the socket unit and the daemon put the sockets.
        return Layout(None, "%t/telemetryd", state, None, target)
    target = os.path.expanduser("~/Library/LaunchAgents")
    if home is not None:
        return Layout(home, where.runtime_dir, home, os.path.join(home, "log"), target)
    from platformdirs.macos import MacOS

    dirs = MacOS(paths.APP)
    if native:
        return Layout(None, where.runtime_dir, where.state_dir, dirs.user_log_dir, target)
    return Layout(None, dirs.user_runtime_dir, dirs.user_state_dir, dirs.user_log_dir, target)


# -- rendering ----------------------------------------------------------------


def render(platform: Platform, executable: str, where: Layout) -> dict[str, str]:
    """``{installed path: content}`` for the platform's service files."""
    if platform == "linux":
        values = _systemd_values(executable, where)
        return {
            os.path.join(where.target_dir, name): _substitute(_template(name), values)
            for name in (SOCKET_UNIT, SERVICE_UNIT)
        }
    return {os.path.join(where.target_dir, PLIST): _render_plist(executable, where)}


def _systemd_values(executable: str, where: Layout) -> dict[str, str]:
    if where.home is None:
        read_write = f"{where.runtime_dir} {_unit_path(where.state_dir)}"
        environment = ""
    else:
        read_write = _unit_path(where.home)
        environment = "Environment=" + _unit_path(f"{paths.ENV_HOME}={where.home}")
    settings = _effective()
    # The continuous export's local directory ("-": the service starts before it exists).
    exports = settings.export.parquet_dir
    if exports and not config.is_url(exports):
        read_write += " " + _unit_path("-" + exports)
    else:
        exports = ""
    # A private /tmp would hide a state (or export) directory that lives under /tmp.
    hidden = _under_tmp(where.state_dir) or (bool(exports) and _under_tmp(exports))
    private_tmp = "no" if hidden else "yes"
    runtime = where.runtime_dir if where.home is None else where.runtime_dir.replace("%", "%%")
    families = "AF_UNIX"
    listen = ""
    if where.http_address is not None:
        families = "AF_UNIX AF_INET AF_INET6"
        host, port = _http_host_port(where.http_address)
        listen = f"ListenStream={f'[{host}]' if ':' in host else host}:{port}"
    return {
        "EXECUTABLE": _unit_path(executable).replace("$", "$$"),
        "RUNTIME_DIR": runtime,
        "READ_WRITE_PATHS": read_write,
        "ENVIRONMENT": environment,
        "PRIVATE_TMP": private_tmp,
        "HTTP_LISTEN": listen,
        "ADDRESS_FAMILIES": families,
        "MEMORY_MAX": f"{-(-settings.store.service_memory_max() // 2**20)}M",
    }


def _http_host_port(address: str) -> tuple[str, int]:
    """``[http] address`` as an IP address and a port for a service manager, which binds
    numeric addresses only: ``localhost`` is 127.0.0.1, another name is an error."""
    host, port = config.split_address(address)
    if port == 0:
        raise ServiceError(
            f"[http] address {address!r}: port 0 (any free port) cannot be bound by the "
            "service manager for the daemon; choose a port (4318 is OTLP/HTTP's)"
        )
    if host == "localhost":
        return "127.0.0.1", port
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ServiceError(
            f"[http] address {address!r}: the service manager binds the socket and needs an "
            "IP address (127.0.0.1:4318, [::1]:4318), not a host name"
        ) from None


def _unit_path(text: str) -> str:
    """``text`` as one word of a unit file: ``%`` escaped, quoted when it has spaces."""
    text = text.replace("%", "%%")
    if re.search(r'[\s"\\]', text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _under_tmp(path: str) -> bool:
    real = os.path.realpath(path)
    return any(real == tmp or real.startswith(tmp + "/") for tmp in ("/tmp", "/var/tmp"))


def _render_plist(executable: str, where: Layout) -> str:
    assert where.log_file is not None
    values = {
        "EXECUTABLE": executable,
        "RUNTIME_DIR": where.runtime_dir,
        "LOG_FILE": where.log_file,
    }
    if where.http_address is not None:
        host, port = _http_host_port(where.http_address)
        values.update(HTTP_HOST=host, HTTP_PORT=str(port))
    else:
        values.update(HTTP_HOST="", HTTP_PORT="")
    data = _fill(plistlib.loads(_template(PLIST).encode()), values)
    if where.http_address is None:
        del data["Sockets"]["http"]
    else:  # launchd would listen on both families for a name; one address, one family
        family = "IPv6" if ":" in values["HTTP_HOST"] else "IPv4"
        data["Sockets"]["http"]["SockFamily"] = family
    if where.home is not None:
        data["EnvironmentVariables"] = {paths.ENV_HOME: where.home}
    return plistlib.dumps(data, sort_keys=False).decode()


def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _substitute(value, values)
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    return value


_PLACEHOLDER = re.compile(r"@([A-Z_]+)@")


def _substitute(text: str, values: dict[str, str]) -> str:
    """Replace ``@NAME@``; a line that was only a placeholder and renders empty is dropped."""
    out = []
    for line in text.splitlines(keepends=True):
        rendered = _PLACEHOLDER.sub(lambda m: values[m.group(1)], line)
        if rendered.strip() or not line.strip():
            out.append(rendered)
    return "".join(out)


def _template(name: str) -> str:
    """A template: packaged in the wheel, else from the source checkout (editable installs)."""
    relative = _TEMPLATES[name]
    packaged = resources.files("telemetryd").joinpath("service_files", *relative.split("/"))
    if packaged.is_file():
        return packaged.read_text()
    checkout = Path(__file__).resolve().parents[3] / relative
    if checkout.is_file():
        return checkout.read_text()
    raise ServiceError(f"the service template {relative} is missing from this installation")


# -- install / uninstall ------------------------------------------------------


def _systemctl(*args: str) -> tuple[str, ...]:
    return ("systemctl", "--user", *args)


def _launchd_domain() -> str:
    return f"gui/{os.getuid()}"


def plan_install(platform: Platform, executable: str | None = None) -> Plan:
    """What installing (or reinstalling) the service would do now."""
    where = layout(platform)
    if where.home is not None:
        for name in (paths.EVENTS_SOCKET, paths.CONTROL_SOCKET):
            paths.check_socket_path(os.path.join(where.runtime_dir, name))
    files = render(platform, executable or find_executable(), where)
    writes: list[Step] = []
    unchanged: list[str] = []
    for path, content in files.items():
        if _read(path) == content:
            unchanged.append(path)
        else:
            writes.append(WriteFile(path, content))
    # The daemon writes only below these; ReadWritePaths= needs them to exist.
    # (On Linux the socket unit makes the runtime directory.)
    dirs = [where.state_dir] if platform == "linux" else [where.runtime_dir, where.log_dir]
    steps: list[Step] = [
        MakeDir(d) for d in dict.fromkeys(dirs) if d is not None and not os.path.isdir(d)
    ]
    steps += writes
    changed = bool(writes)
    if platform == "linux":
        # Always: an earlier install may have written the files and failed before this.
        steps.append(Run(_systemctl("daemon-reload")))
        steps.append(Run(_systemctl("enable", "--now", SOCKET_UNIT)))
        if changed:  # a running daemon picks up the new unit
            steps.append(Run(_systemctl("try-restart", SERVICE_UNIT)))
    else:
        plist = next(iter(files))
        target = f"{_launchd_domain()}/{LABEL}"
        steps.append(Run(("launchctl", "enable", target)))
        if changed:
            steps.append(Run(("launchctl", "bootout", target), check=False))
            steps.append(Run(("launchctl", "bootstrap", _launchd_domain(), plist)))
        else:
            steps.append(
                Run(
                    ("launchctl", "bootstrap", _launchd_domain(), plist),
                    unless=("launchctl", "print", target),
                )
            )
    return Plan(platform, tuple(steps), tuple(unchanged))


def plan_uninstall(platform: Platform, *, purge: bool = False) -> Plan:
    """Stop the service and remove its files; with ``purge``, its state (and logs) too.

    Only paths: a configuration that no longer loads does not stand in the way."""
    where = _paths_layout(platform)
    names = (SOCKET_UNIT, SERVICE_UNIT) if platform == "linux" else (PLIST,)
    installed = [
        os.path.join(where.target_dir, n)
        for n in names
        if os.path.lexists(os.path.join(where.target_dir, n))
    ]
    steps: list[Step] = []
    if platform == "linux":
        # (without a user bus, systemctl fails: the files still go, as launchd's do)
        if installed:
            steps.append(
                Run(_systemctl("disable", "--now", SOCKET_UNIT, SERVICE_UNIT), check=False)
            )
        steps += [Remove(path) for path in installed]
        if installed:
            steps.append(Run(_systemctl("daemon-reload"), check=False))
    else:
        steps.append(Run(("launchctl", "bootout", f"{_launchd_domain()}/{LABEL}"), check=False))
        steps += [Remove(path) for path in installed]
    data: list[str] = []
    if purge:
        for directory in dict.fromkeys(d for d in (where.state_dir, where.log_dir) if d):
            _refuse_unsafe_purge(directory)
            if os.path.lexists(directory):
                data.append(directory)
    steps += [Remove(directory) for directory in data]
    return Plan(platform, tuple(steps), data_removed=tuple(data))


def _refuse_unsafe_purge(directory: str) -> None:
    real = os.path.realpath(directory)
    home = os.path.realpath(os.path.expanduser("~"))
    if real == "/" or home == real or home.startswith(real.rstrip("/") + "/"):
        raise ServiceError(f"refusing to remove {directory}: it holds your home directory")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return None


def execute(plan: Plan) -> None:
    """Carry out every step of ``plan`` in order; raises ServiceError on a failed command."""
    for step in plan.steps:
        run_step(step)


def run_step(step: Step) -> None:
    if isinstance(step, WriteFile):
        _write_atomically(step.path, step.content)
    elif isinstance(step, MakeDir):
        os.makedirs(step.path, mode=0o700, exist_ok=True)
    elif isinstance(step, Remove):
        if os.path.isdir(step.path) and not os.path.islink(step.path):
            shutil.rmtree(step.path)
        else:
            os.unlink(step.path)
    else:
        if step.unless and _run(step.unless).returncode == 0:
            return
        result = _run(step.argv)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            failed = f"`{shlex.join(step.argv)}` failed (exit {result.returncode})" + (
                f": {detail}" if detail else ""
            )
            if step.check:
                raise ServiceError(failed)
            sys.stderr.write(f"warning: {failed}; going on\n")


def _write_atomically(path: str, content: str) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".telemetryd-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _run(argv: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ServiceError(f"{argv[0]} not found: is there a {_manager(argv[0])} here?") from None


def _manager(tool: str) -> str:
    return "launchd user session" if tool == "launchctl" else "systemd user session"


# -- status and logs ----------------------------------------------------------


def status_argv(platform: Platform) -> list[str]:
    """The service manager's own view of the service."""
    if platform == "linux":
        return [*_systemctl("status", SOCKET_UNIT, SERVICE_UNIT)]
    return ["launchctl", "print", f"{_launchd_domain()}/{LABEL}"]


def logs_argv(platform: Platform, *, follow: bool = False, lines: int | None = None) -> list[str]:
    """The daemon's log: the user journal on Linux, the LaunchAgent's log file on macOS."""
    if platform == "linux":
        argv = ["journalctl", "--user", "-u", SERVICE_UNIT]
        if lines is not None:
            argv += ["-n", str(lines)]
        return argv + (["-f"] if follow else [])
    log_file = _paths_layout(platform).log_file
    assert log_file is not None
    argv = ["tail", "-n", str(lines if lines is not None else 100)]
    return [*argv, *(["-F"] if follow else []), log_file]


def passthrough(argv: list[str]) -> int:
    """Run ``argv`` on this terminal and return its exit status (its stderr passed on,
    with a word on what to do when systemctl reaches no user manager)."""
    systemctl = argv[0] == "systemctl"  # (journalctl -f runs on: its stderr goes through)
    try:
        done = subprocess.run(argv, check=False, stderr=subprocess.PIPE if systemctl else None)
    except FileNotFoundError:
        raise ServiceError(f"{argv[0]} not found: is there a {_manager(argv[0])} here?") from None
    if systemctl:
        sys.stderr.buffer.write(done.stderr)
        sys.stderr.flush()
        if b"Failed to connect to bus" in done.stderr:
            sys.stderr.write(NO_USER_MANAGER + "\n")
    return done.returncode


# What to do where ``systemctl --user`` reaches no user manager.
NO_USER_MANAGER = (
    "telemetryctl: no systemd user manager is reachable from here (no login session: su, "
    "ssh without a session, a container); log in as the user to manage the service, or "
    "run the daemon in the foreground (`telemetryd`, or `make run` in a checkout)"
)
