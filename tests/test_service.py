"""Service-manager integration: unit files, the plist, socket activation, the watchdog, install.

Real tools throughout: `systemd-analyze verify` on the rendered units,
`systemd-socket-activate` passing real listening sockets, a real datagram
socket for sd_notify. Nothing here runs `systemctl --user` or `launchctl`:
install is checked through its dry run and through its file steps alone, with
HOME pointed at a temporary directory.
"""

from __future__ import annotations

import json
import os
import plistlib
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from conftest import ROOT, ctl
from telemetryd.client import service
from telemetryd.daemon.service import Notifier, listen_fds, watchdog, watchdog_loop
from telemetryd.errors import ConfigError

EXECUTABLE = service.find_executable()
PLACEHOLDER = re.compile(r"@[A-Z_]+@")


def tool(name: str) -> str:
    """The path of a systemd tool; on Linux a missing one fails the test, never skips it."""
    if not sys.platform.startswith("linux"):
        pytest.skip(f"{name}: systemd exists only on Linux")
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run `make system-deps` (Debian package: systemd)")
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake HOME that does not exist yet; XDG variables (and conftest's port 0 for
    daemons) cleared so the defaults apply."""
    fake = tmp_path / "home"
    monkeypatch.setenv("HOME", str(fake))
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "TELEMETRYD_HTTP_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return fake


@pytest.fixture
def no_telemetryd_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TELEMETRYD_HOME")


def service_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`telemetryctl service ARGS` as a real subprocess (the group, before cli.py registers it)."""
    code = (
        "from telemetryd.client.service_cli import service_group; "
        "service_group(prog_name='telemetryctl service')"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# -- systemd units -------------------------------------------------------------


def verify(units: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze --user verify` on units written under tmp_path."""
    analyze = tool("systemd-analyze")
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    for path, content in units.items():
        (unit_dir / os.path.basename(path)).write_text(content)
    env = dict(
        os.environ,
        XDG_RUNTIME_DIR=str(runtime),
        HOME=str(tmp_path / "verify-home"),
        XDG_CONFIG_HOME=str(tmp_path / "verify-home" / ".config"),
    )
    return subprocess.run(
        [analyze, "--user", "verify", *(str(unit_dir / n) for n in sorted(os.listdir(unit_dir)))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def user_config(home: Path, text: str) -> None:
    """``text`` as the config.toml in the fake HOME's default config directory."""
    config_dir = home / ".config" / "telemetryd"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text(text)


def rendered_linux() -> dict[str, str]:
    return service.render("linux", EXECUTABLE, service.layout("linux"))


@pytest.mark.usefixtures("no_telemetryd_home", "default_http_address")
def test_rendered_units_pass_systemd_analyze_verify(home: Path, tmp_path: Path) -> None:
    units = rendered_linux()
    socket_unit = units[f"{home}/.config/systemd/user/telemetryd.socket"]
    service_unit = units[f"{home}/.config/systemd/user/telemetryd.service"]
    assert f"ExecStart={EXECUTABLE}\n" in service_unit
    assert os.path.isabs(EXECUTABLE) and os.access(EXECUTABLE, os.X_OK)
    assert f"ReadWritePaths=%t/telemetryd {home}/.local/state/telemetryd\n" in service_unit
    assert "ListenStream=%t/telemetryd/events.sock\n" in socket_unit
    assert "ListenStream=%t/telemetryd/control.sock\n" in socket_unit
    assert "ListenStream=127.0.0.1:4318\n" in socket_unit  # [http] address, the default
    assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n" in service_unit
    assert "Environment=" not in service_unit
    for content in units.values():
        assert not PLACEHOLDER.search(content)
    result = verify(units, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize("name", ["td", "td home%1"])
@pytest.mark.usefixtures("default_http_address")
def test_units_with_telemetryd_home_pass_verify(
    name: str, home: Path, state_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = state_home / name
    monkeypatch.setenv("TELEMETRYD_HOME", str(target))
    units = rendered_linux()
    service_unit = units[f"{home}/.config/systemd/user/telemetryd.service"]
    socket_unit = units[f"{home}/.config/systemd/user/telemetryd.socket"]
    escaped = str(target).replace("%", "%%")  # % starts a specifier in unit files
    quote = '"' if " " in name else ""
    assert f"ReadWritePaths={quote}{escaped}{quote}\n" in service_unit
    assert f"Environment={quote}TELEMETRYD_HOME={escaped}{quote}\n" in service_unit
    assert f"ListenStream={escaped}/run/events.sock\n" in socket_unit
    assert "PrivateTmp=no\n" in service_unit  # the state lives under /tmp here
    result = verify(units, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_verify_rejects_the_unrendered_template(tmp_path: Path) -> None:
    """The check has teeth: the template's placeholder is not an executable."""
    template = (ROOT / "systemd" / "telemetryd.service").read_text()
    units = {
        "telemetryd.service": template.replace("@", ""),
        "telemetryd.socket": (ROOT / "systemd" / "telemetryd.socket").read_text(),
    }
    result = verify(units, tmp_path)
    assert result.returncode != 0
    assert "EXECUTABLE" in result.stderr


def test_service_unit_keys() -> None:
    text = (ROOT / "systemd" / "telemetryd.service").read_text()
    lines = set(text.splitlines())
    for expected in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=@EXECUTABLE@",
        "WatchdogSec=30",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=@READ_WRITE_PATHS@",
        "UMask=0077",
        "RestrictAddressFamilies=@ADDRESS_FAMILIES@",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "MemoryMax=@MEMORY_MAX@",
        "OOMPolicy=continue",
    ]:
        assert expected in lines
    socket_lines = set((ROOT / "systemd" / "telemetryd.socket").read_text().splitlines())
    assert {"SocketMode=0600", "DirectoryMode=0700", "@HTTP_LISTEN@"} <= socket_lines


@pytest.mark.usefixtures("no_telemetryd_home")
@pytest.mark.parametrize(
    ("address", "listen"),
    [
        ("127.0.0.1:4318", "127.0.0.1:4318"),
        ("127.0.0.1:14318", "127.0.0.1:14318"),
        ("[::1]:4319", "[::1]:4319"),
        ("0.0.0.0:4318", "0.0.0.0:4318"),
        ("localhost:4320", "127.0.0.1:4320"),  # the service manager binds numbers only
    ],
)
def test_units_listen_on_the_configured_http_address(
    address: str, listen: str, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMETRYD_HTTP_ADDRESS", address)
    units = rendered_linux()
    socket_unit = units[f"{home}/.config/systemd/user/telemetryd.socket"]
    [tcp] = [
        line for line in socket_unit.splitlines() if re.fullmatch(r"ListenStream=[^/%]+", line)
    ]
    assert tcp == f"ListenStream={listen}"
    result = verify(units, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.usefixtures("no_telemetryd_home")
@pytest.mark.parametrize(("limit", "ceiling"), [(None, "4096M"), ("2GiB", "11264M")])
def test_the_services_memory_ceiling_follows_the_store_memory_limit(
    limit: str | None, ceiling: str, home: Path, tmp_path: Path
) -> None:
    """MemoryMax= is the store worker's query cap (4x [store] memory-limit, at least
    1 GiB) and 3 GiB more: 1 + 3 GiB by default, 8 + 3 GiB for a 2 GiB limit."""
    if limit is not None:
        user_config(home, f'[store]\nmemory-limit = "{limit}"\n')
    units = rendered_linux()
    service_unit = units[f"{home}/.config/systemd/user/telemetryd.service"]
    assert f"\nMemoryMax={ceiling}\nOOMPolicy=continue\n" in service_unit
    result = verify(units, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.usefixtures("no_telemetryd_home")
@pytest.mark.parametrize(
    ("parquet_dir", "extra"),
    [
        ("/srv/telemetry parquet", ' "-/srv/telemetry parquet"'),
        ("/srv/exports", " -/srv/exports"),
        ("s3://bucket/prefix", ""),
        (None, ""),
    ],
)
def test_the_service_may_write_the_continuous_exports_directory(
    parquet_dir: str | None, extra: str, home: Path, tmp_path: Path
) -> None:
    """ProtectSystem=strict leaves the service only ReadWritePaths=: the continuous
    export's local directory is one of them (its runs failed with a read-only file
    system under the installed service)."""
    if parquet_dir is not None:
        user_config(home, f'[export]\nparquet-dir = "{parquet_dir}"\n')
    units = rendered_linux()
    service_unit = units[f"{home}/.config/systemd/user/telemetryd.service"]
    lines = service_unit.splitlines()
    [paths_line] = [line for line in lines if line.startswith("ReadWritePaths=")]
    assert paths_line.endswith(f"/telemetryd{extra}"), paths_line
    result = verify(units, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.usefixtures("no_telemetryd_home")
def test_units_without_the_http_listener(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_config(home, '[http]\nenabled = false\naddress = "127.0.0.1:9"\n')
    units = rendered_linux()
    socket_unit = units[f"{home}/.config/systemd/user/telemetryd.socket"]
    service_unit = units[f"{home}/.config/systemd/user/telemetryd.service"]
    assert [line for line in socket_unit.splitlines() if line.startswith("ListenStream=")] == [
        "ListenStream=%t/telemetryd/events.sock",
        "ListenStream=%t/telemetryd/control.sock",
    ]
    assert "RestrictAddressFamilies=AF_UNIX\n" in service_unit
    assert not PLACEHOLDER.search(socket_unit + service_unit)
    result = verify(units, tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    plist = service.render("darwin", EXECUTABLE, service.layout("darwin"))
    data = plistlib.loads(next(iter(plist.values())).encode())
    assert sorted(data["Sockets"]) == ["control", "events"]


@pytest.mark.usefixtures("no_telemetryd_home")
def test_a_host_name_in_the_http_address_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMETRYD_HTTP_ADDRESS", "telemetry.lan:4318")
    with pytest.raises(service.ServiceError, match="needs an IP address"):
        rendered_linux()
    result = service_cli("install", "--dry-run", "--platform", "linux")
    assert result.returncode == 1
    assert "telemetry.lan:4318" in result.stderr and "IP address" in result.stderr


# -- launchd plist -------------------------------------------------------------


HTTP_SOCKET = {
    "SockNodeName": "127.0.0.1",
    "SockServiceName": "4318",
    "SockType": "stream",
    "SockFamily": "IPv4",
}


def check_plist(
    data: dict[str, object],
    executable: str,
    runtime_dir: str,
    http: dict[str, str] | None = HTTP_SOCKET,
) -> None:
    assert data["Label"] == "dev.telemetryd"
    assert data["ProgramArguments"] == [executable]
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False}
    assert isinstance(data["ThrottleInterval"], int)
    assert data["StandardOutPath"] == data["StandardErrorPath"]
    sockets: dict[str, object] = {
        name: {"SockPathName": f"{runtime_dir}/{name}.sock", "SockPathMode": 0o600}
        for name in ("events", "control")
    }
    if http is not None:
        sockets["http"] = http
    assert data["Sockets"] == sockets


@pytest.mark.usefixtures("no_telemetryd_home")
def test_plist_http_socket_follows_the_configured_address(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMETRYD_HTTP_ADDRESS", "[::1]:4319")
    plist = service.render("darwin", EXECUTABLE, service.layout("darwin"))
    data = plistlib.loads(next(iter(plist.values())).encode())
    ipv6 = {**HTTP_SOCKET, "SockNodeName": "::1", "SockServiceName": "4319", "SockFamily": "IPv6"}
    check_plist(data, EXECUTABLE, f"{home}/Library/Caches/TemporaryItems/telemetryd", ipv6)


def test_plist_template_parses_and_has_the_keys() -> None:
    with open(ROOT / "launchd" / "dev.telemetryd.plist", "rb") as f:
        data = plistlib.load(f)
    template_http = {
        "SockNodeName": "@HTTP_HOST@",
        "SockServiceName": "@HTTP_PORT@",
        "SockType": "stream",
    }
    check_plist(data, "@EXECUTABLE@", "@RUNTIME_DIR@", template_http)
    assert data["StandardOutPath"] == "@LOG_FILE@"
    assert "EnvironmentVariables" not in data


# -- install --dry-run, both platforms -----------------------------------------


def written(output: str, path: str) -> str:
    """The content the dry run shows for ``path``."""
    after = output.split(f"==> write {path}\n", 1)[1]
    return re.split(r"^(?:==> |\$ )", after, maxsplit=1, flags=re.M)[0]


@pytest.mark.usefixtures("no_telemetryd_home")
def test_install_dry_run_linux(home: Path) -> None:
    result = service_cli("install", "--dry-run", "--platform", "linux")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    unit_dir = home / ".config/systemd/user"
    assert f"==> mkdir -m 0700 {home}/.local/state/telemetryd\n" in out
    service_unit = written(out, f"{unit_dir}/telemetryd.service")
    assert f"ExecStart={EXECUTABLE}\n" in service_unit
    assert "ListenStream=%t/telemetryd/events.sock" in written(out, f"{unit_dir}/telemetryd.socket")
    commands = [line for line in out.splitlines() if line.startswith("$ ")]
    assert commands == [
        "$ systemctl --user daemon-reload",
        "$ systemctl --user enable --now telemetryd.socket",
        "$ systemctl --user try-restart telemetryd.service",
    ]
    assert not PLACEHOLDER.search(out)
    assert not home.exists()  # nothing written


@pytest.mark.usefixtures("no_telemetryd_home", "default_http_address")
def test_install_dry_run_darwin(home: Path) -> None:
    result = service_cli("install", "--dry-run", "--platform", "darwin")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    plist_path = f"{home}/Library/LaunchAgents/dev.telemetryd.plist"
    runtime = f"{home}/Library/Caches/TemporaryItems/telemetryd"
    data = plistlib.loads(written(out, plist_path).encode())
    check_plist(data, EXECUTABLE, runtime)
    assert data["StandardOutPath"] == f"{home}/Library/Logs/telemetryd/telemetryd.log"
    assert "EnvironmentVariables" not in data
    assert f"==> mkdir -m 0700 {runtime}\n" in out
    assert not PLACEHOLDER.search(out)
    uid = os.getuid()
    commands = [line for line in out.splitlines() if line.startswith("$ ")]
    assert commands == [
        f"$ launchctl enable gui/{uid}/dev.telemetryd",
        f"$ launchctl bootout gui/{uid}/dev.telemetryd   # a failure is ignored",
        f"$ launchctl bootstrap gui/{uid} {plist_path}",
    ]
    assert not home.exists()


@pytest.mark.usefixtures("default_http_address")
def test_install_dry_run_passes_telemetryd_home(
    home: Path, state_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = state_home / "svc"
    monkeypatch.setenv("TELEMETRYD_HOME", str(target))
    linux = service_cli("install", "--dry-run", "--platform", "linux").stdout
    unit = written(linux, f"{home}/.config/systemd/user/telemetryd.service")
    assert f"Environment=TELEMETRYD_HOME={target}\n" in unit
    assert f"ReadWritePaths={target}\n" in unit
    darwin = service_cli("install", "--dry-run", "--platform", "darwin").stdout
    data = plistlib.loads(
        written(darwin, f"{home}/Library/LaunchAgents/dev.telemetryd.plist").encode()
    )
    check_plist(data, EXECUTABLE, f"{target}/run")
    assert data["EnvironmentVariables"] == {"TELEMETRYD_HOME": str(target)}
    assert data["StandardOutPath"] == f"{target}/log/telemetryd.log"
    assert not target.exists() and not home.exists()


def test_other_platform_needs_dry_run() -> None:
    other = "darwin" if sys.platform.startswith("linux") else "linux"
    result = service_cli("install", "--platform", other)
    assert result.returncode == 2
    assert "only with --dry-run" in result.stderr


@pytest.mark.usefixtures("no_telemetryd_home")
@pytest.mark.parametrize("platform", service.PLATFORMS)
def test_reinstall_rewrites_nothing_and_uninstall_plan(
    platform: service.Platform, home: Path
) -> None:
    """Carry out only the file steps of an install, then plan again (no manager involved)."""
    for step in service.plan_install(platform).steps:
        if not isinstance(step, service.Run):
            service.run_step(step)
    files = service.render(platform, EXECUTABLE, service.layout(platform))
    assert all(Path(path).read_text() == content for path, content in files.items())
    assert all(Path(path).stat().st_mode & 0o777 == 0o644 for path in files)

    again = service.plan_install(platform)
    assert sorted(again.unchanged) == sorted(files)
    assert not [s for s in again.steps if isinstance(s, service.WriteFile | service.MakeDir)]
    if platform == "linux":
        assert again.steps == (
            service.Run(("systemctl", "--user", "daemon-reload")),
            service.Run(("systemctl", "--user", "enable", "--now", "telemetryd.socket")),
        )

    state = service.layout(platform).state_dir
    os.makedirs(state, exist_ok=True)  # as the daemon does once it runs
    removal = service.plan_uninstall(platform, purge=True)
    removed = [s.path for s in removal.steps if isinstance(s, service.Remove)]
    assert removed[: len(files)] == list(files)
    assert state in removed and removal.data_removed[0] == state
    kept = service.plan_uninstall(platform)
    assert kept.data_removed == () and state not in [getattr(s, "path", "") for s in kept.steps]
    if platform == "linux":
        assert kept.steps[0] == service.Run(
            ("systemctl", "--user", "disable", "--now", "telemetryd.socket", "telemetryd.service"),
            check=False,
        )
        assert kept.steps[-1] == service.Run(("systemctl", "--user", "daemon-reload"), check=False)


@pytest.fixture
def no_user_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemctl --user reaches no user manager, for real: an empty runtime directory and
    no session bus address (a container, an SSH session without lingering)."""
    if shutil.which("systemctl") is None:
        pytest.fail("systemctl is missing: `make system-deps` installs systemd")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)


@pytest.mark.usefixtures("no_telemetryd_home", "no_user_bus")
def test_uninstall_removes_the_units_where_systemctl_cannot_reach_a_user_manager(
    home: Path,
) -> None:
    """No user bus: `install` wrote the units and then failed; `uninstall` stopped at its
    first systemctl and left them, so the tool had no way back. Now it says so and
    removes them."""
    for path, content in rendered_linux().items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)
    result = service_cli("uninstall")
    assert result.returncode == 0, result.stderr
    assert "warning: `systemctl --user disable --now" in result.stderr
    assert not list((home / ".config" / "systemd" / "user").iterdir())


@pytest.mark.usefixtures("home", "no_user_bus")
def test_status_says_what_to_do_where_systemctl_reaches_no_user_manager() -> None:
    """`service status` passed on systemctl's "Failed to connect to bus" and nothing
    else; it now adds what that means and what to do instead."""
    result = service_cli("status")
    assert result.returncode != 0
    assert "Failed to connect to bus" in result.stderr
    assert result.stderr.rstrip().endswith(service.NO_USER_MANAGER)


def test_uninstall_needs_no_valid_configuration(
    home: Path, state_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (state_home / "config.toml").write_text("[http]\naddress = 4318\n")
    with pytest.raises(ConfigError, match=r"\$\.http\.address"):
        service.plan_install("linux")
    assert service.plan_uninstall("linux").platform == "linux"


def test_purge_refuses_a_home_that_holds_the_users_home(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEMETRYD_HOME", str(home.parent))
    with pytest.raises(service.ServiceError, match="holds your home directory"):
        service.plan_uninstall("linux", purge=True)


# -- LISTEN_FDS, for real under systemd-socket-activate -------------------------

REPORT_SOCKETS = """
import json, os, sys
from telemetryd.daemon.service import listen_fds
got = listen_fds()
report = {
    "sockets": {
        name: [s.getsockname(), s.fileno(), s.getblocking(), s.family.name, s.type.name]
        for name, s in got.items()
    },
    "left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    "inheritable": [os.get_inheritable(s.fileno()) for s in got.values()],
}
events = got["events"]
events.settimeout(10)
conn, _ = events.accept()
conn.recv(16)
conn.sendall(json.dumps(report).encode())
conn.close()
"""


@pytest.fixture
def activator() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started under systemd-socket-activate, killed if a test leaves them running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


@pytest.mark.parametrize(
    ("fdnames", "expected"),
    [
        ("events:control", "names from LISTEN_FDNAMES"),
        (None, "no LISTEN_FDNAMES: names from the paths"),
        ("telemetryd.socket:telemetryd.socket", "one .socket unit: names from the paths"),
    ],
)
def test_listen_fds_under_systemd_socket_activate(
    fdnames: str | None,
    expected: str,
    state_home: Path,
    tmp_path: Path,
    activator: list[subprocess.Popen[bytes]],
) -> None:
    program = tmp_path / "report_sockets.py"
    program.write_text(REPORT_SOCKETS)
    events, control = str(state_home / "events.sock"), str(state_home / "control.sock")
    argv = [tool("systemd-socket-activate"), "-l", events, "-l", control]
    argv += [f"--fdname={fdnames}"] if fdnames else []
    proc = subprocess.Popen(
        [*argv, sys.executable, str(program)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    activator.append(proc)
    assert proc.stderr is not None
    for path in (events, control):  # it reports each socket once it listens
        line = proc.stderr.readline().decode()
        assert line.startswith(f"Listening on {path} as "), line
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(30)
        client.connect(events)  # the first connection starts the program
        client.sendall(b"hello")
        report = json.loads(client.recv(65536))
    assert proc.wait(30) == 0, proc.stderr.read().decode()
    assert report["sockets"] == {
        "events": [events, 3, False, "AF_UNIX", "SOCK_STREAM"],
        "control": [control, 4, False, "AF_UNIX", "SOCK_STREAM"],
    }, expected
    assert report["left"] == []  # children will not inherit LISTEN_*
    assert report["inheritable"] == [False, False]


NOT_A_SOCKET = """
import os
from telemetryd.daemon.service import listen_fds
from telemetryd.errors import ConfigError
read_end, _ = os.pipe()
os.dup2(read_end, 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="events")
try:
    listen_fds()
except ConfigError as exc:
    print(exc)
"""


def test_listen_fds_refuses_a_descriptor_that_is_not_a_socket() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NOT_A_SOCKET], capture_output=True, text=True, timeout=30
    )
    assert result.stdout == (
        "descriptor 3 (events) passed by the service manager is not a socket\n"
    ), result.stderr


def test_listen_fds_for_another_process_or_absent() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "KEEP": "x"}
    assert listen_fds(env) == {}
    assert env == {"KEEP": "x"}  # removed all the same
    assert listen_fds({}) == {}
    assert listen_fds({"LISTEN_FDS": "2"}) == {}  # no LISTEN_PID: not for us
    mismatch = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "events"}
    with pytest.raises(ConfigError, match="does not name 2 descriptors"):
        listen_fds(mismatch)


REPORT_HTTP = """
import json, os, socket
from telemetryd.daemon.service import activated_sockets
got = activated_sockets()
report = {
    name: [s.family.name, s.type.name, s.getblocking(), s.getsockname()]
    for name, s in got.items()
}
http = got["http"]
http.settimeout(10)
conn, _ = http.accept()
conn.recv(16)
conn.sendall(json.dumps(report).encode())
conn.close()
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize(
    "fdnames",
    [
        None,  # no LISTEN_FDNAMES: the Unix ones by path, the TCP one by family
        "telemetryd.socket:telemetryd.socket:telemetryd.socket",  # one .socket unit
        "events:control:http",
    ],
)
def test_the_tcp_socket_passed_by_activation_is_http(
    fdnames: str | None,
    state_home: Path,
    tmp_path: Path,
    activator: list[subprocess.Popen[bytes]],
) -> None:
    program = tmp_path / "report_http.py"
    program.write_text(REPORT_HTTP)
    events, control = str(state_home / "events.sock"), str(state_home / "control.sock")
    port = free_port()
    argv = [tool("systemd-socket-activate"), "-l", events, "-l", control, "-l", f"127.0.0.1:{port}"]
    argv += [f"--fdname={fdnames}"] if fdnames else []
    argv += ["-E", "PYTHONPATH"]  # the activator passes on only what it is told to
    proc = subprocess.Popen(
        [*argv, sys.executable, str(program)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    activator.append(proc)
    assert proc.stderr is not None
    for _ in range(3):  # it reports each socket once it listens
        line = proc.stderr.readline().decode()
        assert line.startswith("Listening on "), line
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(b"hello")  # the first connection starts the program
        report = json.loads(client.makefile("rb").read())
    assert proc.wait(30) == 0, proc.stderr.read().decode()
    assert report == {
        "events": ["AF_UNIX", "SOCK_STREAM", False, events],
        "control": ["AF_UNIX", "SOCK_STREAM", False, control],
        "http": ["AF_INET", "SOCK_STREAM", False, ["127.0.0.1", port]],
    }


UDP_SOCKET = """
import os, socket
from telemetryd.daemon.service import listen_fds
from telemetryd.errors import ConfigError
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
os.dup2(udp.fileno(), 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
try:
    listen_fds()
except ConfigError as exc:
    print(exc)
"""


def test_listen_fds_refuses_a_socket_that_is_not_a_stream() -> None:
    result = subprocess.run(
        [sys.executable, "-c", UDP_SOCKET], capture_output=True, text=True, timeout=30
    )
    assert result.stdout == (
        "descriptor 3 passed by the service manager is not a listening Unix or TCP socket\n"
    ), result.stderr


# -- sd_notify: STATUS= and the watchdog on a real datagram socket --------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        yield path, sock


def received(sock: socket.socket) -> list[str]:
    messages = []
    sock.setblocking(False)
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_watchdog_interval_rules(notify_socket: tuple[str, socket.socket]) -> None:
    path, _ = notify_socket
    pid = str(os.getpid())

    def interval(**env: str) -> float | None:
        return Notifier(environ={"NOTIFY_SOCKET": path, **env}).watchdog_interval()

    assert interval(WATCHDOG_USEC="30000000") == 15.0
    assert interval(WATCHDOG_USEC="30000000", WATCHDOG_PID=pid) == 15.0
    assert interval(WATCHDOG_USEC="30000000", WATCHDOG_PID="1") is None  # someone else's
    assert interval() is None
    assert interval(WATCHDOG_USEC="0") is None
    assert interval(WATCHDOG_USEC="soon") is None
    assert Notifier(environ={"WATCHDOG_USEC": "30000000"}).watchdog_interval() is None


def test_watchdog_pings_repeatedly_at_about_the_interval(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, sock = notify_socket
    notifier = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    interval = notifier.watchdog_interval()
    assert interval == 0.05
    pings: list[str] = []

    async def collect() -> None:
        sock.setblocking(False)
        while True:
            await anyio.wait_readable(sock)
            pings.append(sock.recv(4096).decode())

    async def run_for(window: float) -> float:
        started = time.monotonic()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(collect)
            with anyio.move_on_after(window):
                await watchdog_loop(notifier)
            tasks.cancel_scope.cancel()
        return time.monotonic() - started

    elapsed = anyio.run(run_for, 1.0)
    assert set(pings) == {"WATCHDOG=1"}
    # About one ping per interval: never more than the window allows, and
    # repeatedly, even on a slow machine.
    assert 5 <= len(pings) <= elapsed / interval + 1, (len(pings), elapsed)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads a Linux sysctl")
def test_notify_never_blocks_on_a_receiver_that_does_not_read(
    notify_socket: tuple[str, socket.socket],
) -> None:
    """A full datagram queue (net.unix.max_dgram_qlen) drops the message instead of blocking."""
    path, sock = notify_socket
    notifier = Notifier(environ={"NOTIFY_SOCKET": path})
    with open("/proc/sys/net/unix/max_dgram_qlen") as f:
        queue = int(f.read())
    for _ in range(queue + 5):  # a blocking send would hang here
        notifier.notify("WATCHDOG=1")
    kept = received(sock)
    assert set(kept) == {"WATCHDOG=1"} and queue <= len(kept) < queue + 5  # the rest dropped


def test_watchdog_context_pings_only_while_its_body_runs(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, sock = notify_socket
    notifier = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})

    async def body() -> None:
        async with watchdog(notifier):
            await anyio.sleep(0.3)

    anyio.run(body)
    during = received(sock)
    assert during and set(during) == {"WATCHDOG=1"}
    time.sleep(0.2)  # two intervals: a leaked loop would have pinged by now
    assert received(sock) == []


def test_watchdog_loop_returns_without_a_watchdog(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, sock = notify_socket
    anyio.run(watchdog_loop, Notifier(environ={"NOTIFY_SOCKET": path}))
    assert received(sock) == []


def test_status_is_one_line(notify_socket: tuple[str, socket.socket]) -> None:
    path, sock = notify_socket
    notifier = Notifier(environ={"NOTIFY_SOCKET": path})
    notifier.status("disk full:\nrejecting events")
    notifier.notify("READY=1", "STATUS=up")
    assert received(sock) == ["STATUS=disk full: rejecting events", "READY=1\nSTATUS=up"]


# -- the real daemon, socket-activated ----------------------------------------------------


def _notifications(sock: socket.socket) -> list[str]:
    """Every notify message queued so far (non-blocking)."""
    out: list[str] = []
    sock.setblocking(False)
    while True:
        try:
            out.extend(sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            return out


def test_daemon_serves_on_sockets_passed_by_systemd(state_home: Path) -> None:
    """systemd-socket-activate owns the sockets and starts `python -m telemetryd` on the first
    connection; the daemon serves on the passed descriptors, says READY before it answers,
    pings the watchdog at half the asked interval, says STOPPING on SIGTERM and leaves the
    socket files (they are not its own) in place."""
    run_dir = state_home / "run"
    run_dir.mkdir(mode=0o700)
    events_path, control_path = run_dir / "events.sock", run_dir / "control.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(state_home / "notify.sock"))
    env = dict(
        os.environ,
        NOTIFY_SOCKET=str(state_home / "notify.sock"),
        WATCHDOG_USEC="400000",
    )
    log_path = state_home / "activated.log"
    log = open(log_path, "wb")  # noqa: SIM115  (closed in the finally below)
    activator = subprocess.Popen(
        [
            tool("systemd-socket-activate"),
            "-l",
            str(events_path),
            "-l",
            str(control_path),
            "-E",
            "TELEMETRYD_HOME",
            "-E",
            "NOTIFY_SOCKET",
            "-E",
            "WATCHDOG_USEC",
            sys.executable,
            "-m",
            "telemetryd",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 20
        while True:  # the activator binds the socket file first and listens a moment later
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(30)
            try:
                client.connect(str(events_path))  # this starts the daemon
                break
            except (FileNotFoundError, ConnectionRefusedError):
                client.close()
                assert time.monotonic() < deadline and activator.poll() is None
                time.sleep(0.01)
        with client:
            client.sendall(b'{"type":"custom","name":"activated"}\n')
            client.shutdown(socket.SHUT_WR)
            reply = client.makefile("rb").read()
        seen = _notifications(notify)
        assert "READY=1" in seen  # sent before the reply could be written
        assert json.loads(reply.splitlines()[-1])["accepted"] == 1
        notify.setblocking(True)
        notify.settimeout(5)
        pings = 0
        while pings < 3:  # at 0.2 s intervals: arrives well within the timeout
            pings += notify.recv(4096).decode().split("\n").count("WATCHDOG=1")
        activator.send_signal(15)
        assert activator.wait(30) == 0, log_path.read_text()
        notify.setblocking(False)
        assert "STOPPING=1" in _notifications(notify)
        assert events_path.exists() and control_path.exists()
        journal = b"".join(p.read_bytes() for p in (state_home / "journal").glob("*.jsonl"))
        assert b'"name":"activated"' in journal
    finally:
        if activator.poll() is None:
            activator.kill()
            activator.wait(10)
        notify.close()
        log.close()


def test_the_first_otlp_request_on_the_passed_http_socket_starts_and_reaches_the_daemon(
    state_home: Path,
) -> None:
    """With the HTTP address in the socket unit (as `service install` writes it), an
    agent's first export starts the daemon, which answers it on the passed socket."""
    import http.client

    from telemetryd import token

    run_dir = state_home / "run"
    run_dir.mkdir(mode=0o700)
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    secret = token.load_or_create(str(state_home / "http-token"))  # (as `otel env` makes it)
    log_path = state_home / "activated.log"
    log = open(log_path, "wb")  # noqa: SIM115  (closed in the finally below)
    activator = subprocess.Popen(
        [
            tool("systemd-socket-activate"),
            "-l", str(run_dir / "events.sock"),
            "-l", str(run_dir / "control.sock"),
            "-l", f"127.0.0.1:{port}",
            "-E", "TELEMETRYD_HOME",
            sys.executable, "-m", "telemetryd",
        ],
        env=dict(os.environ, TELEMETRYD_HTTP_ADDRESS=f"127.0.0.1:{port}"),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )  # fmt: skip
    try:
        body = (Path(__file__).parent / "fixtures" / "otlp-upstream" / "logs.json").read_bytes()
        deadline = time.monotonic() + 20
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/v1/logs", body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                break
            except ConnectionRefusedError:  # the activator has not bound it yet
                assert time.monotonic() < deadline and activator.poll() is None
                time.sleep(0.05)
            finally:
                conn.close()
        assert (response.status, answer) == (200, b"{}"), log_path.read_text()
        journal = b"".join(p.read_bytes() for p in (state_home / "journal").glob("*.jsonl"))
        assert b"Example log record" in journal
        activator.send_signal(15)
        assert activator.wait(30) == 0, log_path.read_text()
    finally:
        if activator.poll() is None:
            activator.kill()
            activator.wait(10)
        log.close()


def test_a_service_cannot_be_rendered_for_port_0(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Port 0 (any free port) suits a daemon started by hand, not a socket unit."""
    monkeypatch.setenv("TELEMETRYD_HTTP_ADDRESS", "127.0.0.1:0")
    result = ctl("service", "install", "--dry-run")
    assert result.returncode != 0
    assert b"port 0" in result.stderr and b"choose a port" in result.stderr


def test_a_passed_http_socket_elsewhere_than_the_configured_address_is_logged(
    state_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The socket unit keeps the address it was installed with; `otel env` hands agents
    the configured one. A mismatch (the config changed, the unit not reinstalled) is a
    warning that says what to do, and the same address is none."""
    from telemetryd import config, paths
    from telemetryd.daemon.main import _http_socket

    passed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    passed.bind(("127.0.0.1", 0))
    passed.listen()
    port = passed.getsockname()[1]
    try:
        for address, warned in ((f"127.0.0.1:{port}", False), (f"localhost:{port}", False),
                                (f"127.0.0.1:{port + 1}", True)):  # fmt: skip
            caplog.clear()
            settings = config.Http(address=address, require_token=False)
            found = _http_socket(paths.resolve(), settings, passed)
            assert found is not None and found.sock is passed
            said = [m for r in caplog.records if "service manager" in (m := r.getMessage())]
            assert bool(said) == warned, (address, said)
        assert f"127.0.0.1:{port}, but [http] address is 127.0.0.1:{port + 1}" in said[0]
    finally:
        passed.close()
