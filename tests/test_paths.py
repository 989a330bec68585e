"""Where telemetryd keeps things: TELEMETRYD_HOME, XDG, sun_path; `telemetryctl paths/status`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import TELEMETRYCTL, Daemon, ctl, exchange
from telemetryd import paths
from telemetryd.errors import PathError

DaemonFactory = Callable[..., Daemon]

CTL_KEYS = {
    "events_socket",
    "control_socket",
    "journal_dir",
    "spool_dir",
    "database",
    "config_file",
}


def test_home_layout() -> None:
    where = paths.resolve({"TELEMETRYD_HOME": "/srv/td"})
    assert where.events_socket == "/srv/td/run/events.sock"
    assert where.control_socket == "/srv/td/run/control.sock"
    assert where.journal_dir == "/srv/td/journal"
    assert where.spool_dir == "/srv/td/spool"
    assert where.quarantine_dir == "/srv/td/quarantine"
    assert where.database == "/srv/td/telemetry.duckdb"
    assert where.config_file == "/srv/td/config.toml"
    assert where.lock_file == "/srv/td/telemetryd.lock"
    assert set(where.as_dict()) >= CTL_KEYS | {"quarantine_dir", "lock_file"}


def test_home_is_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert paths.resolve({"TELEMETRYD_HOME": "rel"}).state_dir == str(tmp_path / "rel")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.resolve({"TELEMETRYD_HOME": "~/td"}).journal_dir == str(tmp_path / "td/journal")
    assert paths.resolve({"TELEMETRYD_HOME": "/a/b/../c/"}).state_dir == "/a/c"


def test_daemon_uses_the_home_layout(running_daemon: Daemon, state_home: Path) -> None:
    assert exchange(running_daemon.events_socket, b'{"type":"custom","name":"x"}') != []
    assert (state_home / "run" / "events.sock").is_socket()
    assert (state_home / "run" / "control.sock").is_socket()
    assert (state_home / "telemetryd.lock").is_file()
    assert [p.suffix for p in (state_home / "journal").iterdir()] == [".jsonl"]


def test_ctl_paths_json(state_home: Path) -> None:
    result = ctl("paths", "--json")
    assert result.returncode == 0, result.stderr
    where = json.loads(result.stdout)
    assert set(where) >= CTL_KEYS
    assert where["events_socket"] == str(state_home / "run" / "events.sock")
    assert where["control_socket"] == str(state_home / "run" / "control.sock")
    assert where["journal_dir"] == str(state_home / "journal")
    assert where["spool_dir"] == str(state_home / "spool")
    assert where["database"] == str(state_home / "telemetry.duckdb")
    assert where["config_file"] == str(state_home / "config.toml")
    text = ctl("paths")
    assert text.returncode == 0
    for key, value in where.items():
        assert any(line.split() == [key, value] for line in text.stdout.decode().splitlines()), key


def test_fast_socket_path_with_home(monkeypatch: pytest.MonkeyPatch, state_home: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/somewhere/else")
    assert paths.events_socket_fast() == paths.resolve().events_socket
    assert paths.events_socket_fast() == str(state_home / "run" / "events.sock")


@pytest.mark.parametrize(
    "kind", ["private", "missing", "mode-0755", "symlink", "empty", "relative"]
)
def test_fast_socket_path_agrees_with_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str
) -> None:
    """`telemetryctl send` (fast path) and the daemon (resolve) must pick the same socket,
    whatever state XDG_RUNTIME_DIR is in."""
    runtime = tmp_path / "xdg"
    if kind == "private":
        runtime.mkdir(mode=0o700)
    elif kind == "mode-0755":
        runtime.mkdir()
        runtime.chmod(0o755)
    elif kind == "symlink":
        target = tmp_path / "target"
        target.mkdir(mode=0o700)
        runtime.symlink_to(target)
    monkeypatch.delenv("TELEMETRYD_HOME")
    value = {"empty": "", "relative": "relative/run"}.get(kind, str(runtime))
    monkeypatch.setenv("XDG_RUNTIME_DIR", value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when it falls back
        fast = paths.events_socket_fast()
        resolved = paths.resolve().events_socket
    assert fast == resolved
    assert os.path.isabs(fast)  # (a relative one is ignored: hooks run in every project)
    if kind == "private":
        assert fast == str(runtime / "telemetryd" / "events.sock")


def test_no_python_warnings_without_xdg_runtime_dir(tmp_path: Path) -> None:
    """Hook scripts show stderr to the user: without XDG_RUNTIME_DIR (cron, su, containers)
    `telemetryctl` must not print Python warnings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"TELEMETRYD_HOME", "XDG_RUNTIME_DIR", "PYTHONWARNINGS"}
    }
    env.update(
        HOME=str(tmp_path),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    result = subprocess.run(
        [TELEMETRYCTL, "paths", "--json"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert json.loads(result.stdout)["journal_dir"] == str(tmp_path / "state/telemetryd/journal")
    assert result.stderr == b""


# -- sun_path -----------------------------------------------------------------------------


def test_socket_path_limit_is_exact() -> None:
    limit = paths.SUN_PATH_MAX - 1  # bytes, without the final NUL
    paths.check_socket_path("/" + "s" * (limit - 1))
    with pytest.raises(PathError, match="sun_path") as caught:
        paths.check_socket_path("/" + "s" * limit)
    assert str(paths.SUN_PATH_MAX) in str(caught.value)
    assert "TELEMETRYD_HOME" in str(caught.value)


def test_check_names_sun_path_for_a_long_home(state_home: Path) -> None:
    home = state_home / ("h" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "telemetryd", "--check"],
        env=dict(os.environ, TELEMETRYD_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "sun_path" in result.stderr
    assert str(home) in result.stderr


def test_longest_home_that_fits_really_binds(
    daemon_factory: DaemonFactory, state_home: Path
) -> None:
    tail = "/run/control.sock"  # the longer of the two socket names
    room = paths.SUN_PATH_MAX - 1 - len(str(state_home)) - 1 - len(tail)
    home = state_home / ("h" * room)
    assert len(str(home) + tail) == paths.SUN_PATH_MAX - 1
    home.mkdir()
    daemon = daemon_factory(home=home).start()
    assert exchange(str(home / "run" / "events.sock"), b'{"type":"custom","name":"x"}') == [
        {"ok": True, "lines": 1, "accepted": 1, "rejected": 0, "duplicates": 0}
    ]
    assert daemon.stop() == 0


# -- telemetryctl status ------------------------------------------------------------------


def test_status_up(running_daemon: Daemon) -> None:
    result = ctl("status")
    assert result.returncode == 0, result.stderr
    assert b"is up" in result.stdout
    as_json = ctl("status", "--json")
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["ok"] is True
    assert report["pid"] == running_daemon.proc.pid  # type: ignore[union-attr]
    assert report["paths"]["events_socket"] == running_daemon.events_socket


def test_status_down() -> None:
    result = ctl("status")
    assert result.returncode == 3
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("telemetryd is not running: ")


def test_status_down_with_a_stale_socket(state_home: Path) -> None:
    run = state_home / "run"
    run.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(run / "control.sock"))
    stale.close()
    result = ctl("status")
    assert result.returncode == 3
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("telemetryd is not running: ") and "control.sock" in line


def test_status_after_stop(running_daemon: Daemon) -> None:
    assert ctl("status").returncode == 0
    assert running_daemon.stop() == 0
    result = ctl("status")
    assert result.returncode == 3
    assert len(result.stderr.decode().splitlines()) == 1


# -- homes telemetryd cannot use (issue 8): one line naming the path and the problem ------


def telemetryd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "telemetryd", *args],
        env=dict(os.environ, TELEMETRYD_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("ERROR "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("char", ["?", "*", "[", "\\"])
@pytest.mark.parametrize("check", [True, False])
def test_a_home_duckdb_cannot_use_is_refused(state_home: Path, char: str, check: bool) -> None:
    """A `?` in TELEMETRYD_HOME gave a traceback at start: DuckDB reads it as a URL query in
    the database path (its WAL went to `/tmp/a.wal?b/...`); `*` and `[` are glob patterns
    where it reads the journal, and `\\` a path separator."""
    home = state_home / f"a{char}b"
    result = telemetryd(home, *(["--check"] if check else []))
    assert_one_line_error(
        result, f"state directory {str(home)!r}", f"contains {char}", "TELEMETRYD_HOME"
    )
    assert not home.exists()


def test_check_state_dir_accepts_the_usual_homes(state_home: Path) -> None:
    for home in (state_home, state_home / "new" / "deeper", state_home / "sp ace,#%{}'"):
        paths.check_state_dir(paths.Paths(str(home / "run"), str(home), str(home)))


def test_a_home_under_a_file_is_refused(state_home: Path) -> None:
    (state_home / "file").write_text("x")
    home = state_home / "file" / "home"
    assert_one_line_error(telemetryd(home), f"{home}: {state_home / 'file'} is not a directory")


def test_a_read_only_home_is_refused(state_home: Path) -> None:
    """A home the daemon cannot write gave a PermissionError traceback at start."""
    home = state_home / "ro"
    home.mkdir(mode=0o755)
    if os.getuid() == 0:  # root writes anywhere but into an immutable directory
        made = subprocess.run(["chattr", "+i", str(home)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.skip(f"cannot make a directory read-only for root here: {made.stderr!r}")
    else:
        home.chmod(0o555)
    try:
        for args in ([], ["--check"]):
            result = telemetryd(home, *args)
            assert_one_line_error(result, f"state directory {home}: it is not writable")
        result = telemetryd(home / "sub")
        assert_one_line_error(result, f"its parent {home} is not writable")
        assert list(home.iterdir()) == []
    finally:
        if os.getuid() == 0:
            subprocess.run(["chattr", "-i", str(home)], check=True)
        home.chmod(0o755)


@pytest.mark.parametrize("name", ["journal", "spool"])
def test_a_file_where_a_state_directory_belongs_is_one_line(state_home: Path, name: str) -> None:
    """What only starting finds out is reported the same way, naming the path."""
    (state_home / name).write_text("not a directory")
    result = telemetryd(state_home)
    assert_one_line_error(result, f"cannot start: {state_home / name}: File exists")
    assert not (state_home / "run" / "events.sock").exists()


def test_telemetryctl_with_such_a_home_answers_in_one_line(
    monkeypatch: pytest.MonkeyPatch, state_home: Path
) -> None:
    """The client commands that resolve paths never touch DuckDB's path rules without a
    database: they say the daemon is down (or spool), in one line, without a traceback."""
    home = state_home / "a?b"
    monkeypatch.setenv("TELEMETRYD_HOME", str(home))
    for args, code in [
        (["status"], 3),
        (["flush"], 3),
        (["query", "select 1"], 3),
        (["send", "--type", "custom", "--name", "x"], 0),
        (["paths"], 0),
        (["config", "show"], 0),
    ]:
        result = ctl(*args)
        assert result.returncode == code, (args, result)
        assert b"Traceback" not in result.stderr, (args, result.stderr)
        assert result.stderr.count(b"\n") <= 2, (args, result.stderr)
