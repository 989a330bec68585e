"""`telemetryctl report` before click (client/report_main.py) against the click command
(client/report_cli.py): the same bytes on stdout and stderr and the same exit status for
every option, on real history imported into the real daemon, with the daemon stopped,
and without one; the command lines the fast path declines reach click; the two declare
the same options; and the fast path imports nothing heavy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from conftest import Daemon, exchange, summary
from telemetryd.client import report_main
from telemetryd.client.report_cli import report_group
from test_report import history  # noqa: F401 (the fixture: samples imported)

# The fast path as `telemetryctl` runs it, leaving a note of whether click was loaded.
FAST = (
    "import os, sys\n"
    "from telemetryd.client.main import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "finally:  # click exits from within main\n"
    "    with open(os.environ['REPORT_MAIN_NOTE'], 'w') as note:\n"
    "        note.write('click' if 'click' in sys.modules else 'fast')\n"
    "sys.exit(code)\n"
)
# The click command, never the fast path.
CLICK = (
    "import sys\n"
    "from telemetryd.client.cli import cli\n"
    "sys.exit(cli.main(args=sys.argv[1:], prog_name='telemetryctl') or 0)\n"
)

Run = tuple[int, bytes, bytes]


def run(code: str, args: list[str], env: dict[str, str]) -> Run:
    result = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, timeout=60, check=False
    )
    return result.returncode, result.stdout, result.stderr


def both(args: list[str], tmp_path: Path, **env: str) -> tuple[Run, str]:
    """Both paths' (exit status, stdout, stderr), which must be equal, and which way the
    fast path went ('fast', or 'click' when it handed the command line on)."""
    note = tmp_path / "note"
    note.unlink(missing_ok=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRYD_TIMEZONE")}
    environ.update(env, REPORT_MAIN_NOTE=str(note))
    fast = run(FAST, ["report", *args], environ)
    slow = run(CLICK, ["report", *args], environ)
    assert fast == slow, (args, fast, slow)
    return fast, note.read_text()


# Every option and value at least once, in every format, each kind.
COMBOS = [
    ["daily"],
    ["daily", "--json"],
    ["daily", "-j", "-z", "Pacific/Auckland"],
    ["daily", "--format", "json", "--breakdown", "--timezone=Asia/Kathmandu"],
    ["daily", "-f", "csv", "-b", "--by", "model"],
    ["daily", "--format=tsv", "--since", "2026-01-09", "--until", "20260110"],
    ["daily", "-f", "markdown", "-b", "-s", "20260101", "-z", "UTC"],
    ["daily", "-b", "--by", "project", "--source", "claude-code"],
    ["daily", "--source", "codex", "-f", "csv"],
    ["daily", "--source", "nobody"],  # no rows: a message on stderr
    ["daily", "--source", "nobody", "--json"],
    ["weekly", "-z", "UTC"],
    ["weekly", "-w", "monday", "--json", "--by", "source"],
    ["weekly", "--start-of-week=saturday", "-f", "markdown", "-b"],
    ["weekly", "-f", "csv", "--by", "agent", "-u", "2026-02-01"],
    ["monthly", "-b"],
    ["monthly", "--json", "--by", "model", "--breakdown"],
    ["monthly", "-f", "tsv", "-b", "--by", "source", "-z", "America/St_Johns"],
    ["session", "-z", "UTC"],
    ["session", "--json", "-b"],
    ["session", "-f", "csv", "--by", "model", "--until", "2025-12-31"],
    ["session", "-f", "markdown", "-b", "--since", "2026-02-01", "-z", "Pacific/Auckland"],
    ["session", "--format", "tsv", "--source", "claude-code", "-j"],  # --json wins
    ["blocks"],
    ["blocks", "--json", "-z", "Pacific/Auckland"],
    ["blocks", "-f", "csv", "--since", "2026-01-09"],
    ["blocks", "-f", "markdown", "-u", "2026-01-09", "-z", "UTC"],
    ["blocks", "--active"],  # none active: a message on stderr
    ["blocks", "-a", "--json"],
    ["blocks", "-f", "tsv", "-j", "-z", "Asia/Kathmandu"],
    ["daily", "-z", "UTC", "-z", "Pacific/Auckland", "-f", "csv", "-f", "json"],  # last wins
]


def test_the_fast_path_prints_what_click_prints(
    history: list[dict[str, Any]],  # noqa: F811
    running_daemon: Daemon,
    tmp_path: Path,
) -> None:
    # Beside the imported history: a project whose name holds an ANSI escape (click
    # takes it out when stdout is not a terminal), and a model without a price.
    extra = [
        {
            "type": "api_request",
            "id": f"odd{n}",
            "ts": f"2026-01-09T23:5{n}:00.000Z",
            "session_id": f"odd-session-{n}",
            "attrs": {"project": "/home/\x1b[31mred\x1b[0m/project"},
            "agent": {"model": "no-such-model-x"},
            "tokens": {"source": "actual", "input": 7 * n, "output": 3, "cache_read": 11},
        }
        for n in range(1, 3)
    ]
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in extra)
    assert exchange(running_daemon.events_socket, payload) == [summary(2, 2)]
    ways = []
    for args in COMBOS:
        (code, out, err), way = both(args, tmp_path)
        assert code == 0, (args, err)
        ways.append(way)
        if "--json" in args or "-j" in args or "json" in args:
            json.loads(out)
    assert set(ways) == {"fast"}  # none of these needed click
    # What the runs printed is the history: the daily totals are the requests'.
    (_, out, _), _ = both(["daily", "--json", "-z", "UTC"], tmp_path)
    totals = json.loads(out)["totals"]
    assert totals["inputTokens"] == sum(r["input"] for r in history) + 7 + 14
    assert totals["requests"] == len(history) + 2
    (_, table, _), _ = both(["session", "-z", "UTC"], tmp_path)
    assert b"/home/red/project" in table and b"\x1b" not in table
    assert b"+?" in table  # the unpriced model's cost is marked
    # The default zone: TELEMETRYD_TIMEZONE, else TZ, else /etc/localtime.
    for env in ({"TELEMETRYD_TIMEZONE": "Pacific/Auckland"}, {"TZ": "Asia/Kathmandu"}):
        (code, out, _), way = both(["daily", "--json"], tmp_path, **env)
        assert (code, way) == (0, "fast")
    (_, auckland, _), _ = both(["daily", "--json", "-z", "Pacific/Auckland"], tmp_path)
    (_, by_env, _), _ = both(["daily", "--json"], tmp_path, TELEMETRYD_TIMEZONE="Pacific/Auckland")
    assert by_env == auckland
    # The control socket named by the environment (here: one nobody listens on, so the
    # file is read instead, with the same warning on both paths).
    (code, out, err), way = both(
        ["daily", "--json"], tmp_path, TELEMETRYD_CONTROL_SOCKET=str(tmp_path / "none.sock")
    )
    assert (code, way) == (3, "fast")  # the daemon holds the file: nothing to read
    assert err.startswith(b"Error: ")


def test_with_the_daemon_stopped_and_without_one(
    history: list[dict[str, Any]],  # noqa: F811
    running_daemon: Daemon,
    tmp_path: Path,
) -> None:
    assert running_daemon.stop() == 0
    for args in (["daily", "-z", "UTC"], ["blocks", "--json"], ["session", "-f", "csv"]):
        (code, out, err), way = both(args, tmp_path)
        assert (code, way) == (0, "fast"), err
        assert err.startswith(b"warning: telemetryd is not running; read the database file")
        assert out
    databases = list(running_daemon.home.rglob("*.duckdb"))
    assert len(databases) == 1
    for path in databases[0].parent.glob(databases[0].name + "*"):
        path.unlink()  # and its WAL, if any
    (code, out, err), way = both(["daily"], tmp_path)
    assert (code, out, way) == (3, b"", "fast")
    assert err.startswith(b"Error: telemetryd is not running: ") and b"no database" in err


@pytest.mark.parametrize(
    ("args", "status"),
    [
        ([], 2),  # click's usage
        (["--help"], 0),
        (["daily", "--help"], 0),
        (["daily", "-h"], 0),
        (["yearly"], 2),
        (["daily", "-bj"], 3),  # a cluster of short options: click takes it (no daemon: 3)
        (["daily", "-zUTC"], 3),  # a value attached to a short option: likewise
        (["daily", "--source", "--json"], 3),  # a value like an option: likewise
        (["daily", "--by", "day"], 2),
        (["daily", "-f", "JSON"], 2),
        (["daily", "--since", "2026-02-30"], 2),
        (["daily", "--until", "yesterday"], 2),
        (["daily", "--since", "2026-12-07", "--until", "2026-12-01"], 2),  # (no day in both)
        (["blocks", "-u", "20261201", "-s", "20261207"], 2),
        (["daily", "-z", "Mars/Olympus_Mons"], 2),
        (["daily", "--json=yes"], 2),
        (["daily", "--since"], 2),
        (["daily", "extra"], 2),
        (["daily", "--active"], 2),
        (["blocks", "--breakdown"], 2),
        (["monthly", "-w", "monday"], 2),
        (["weekly", "-w", "Monday"], 2),
    ],
)
def test_what_the_fast_path_declines_goes_to_click(
    args: list[str], status: int, tmp_path: Path
) -> None:
    (code, out, err), way = both(args, tmp_path)
    assert (code, way) == (status, "click"), err
    if status == 0:
        assert out.startswith(b"Usage: telemetryctl report")
    elif status == 2:
        assert b"Error: " in err if args else err.startswith(b"Usage: telemetryctl report")
    else:
        assert err.startswith(b"Error: telemetryd is not running")


def test_a_bad_timezone_in_the_environment_goes_to_click(tmp_path: Path) -> None:
    (code, _, err), way = both(["daily"], tmp_path, TELEMETRYD_TIMEZONE="Nowhere/Else")
    assert (code, way) == (2, "click")
    assert b"unknown time zone 'Nowhere/Else'" in err


def _declared(command: click.Command) -> dict[str, tuple[str, Any]]:
    spec: dict[str, tuple[str, Any]] = {}
    for param in command.params:
        assert isinstance(param, click.Option) and param.name
        if param.is_flag:
            kind: Any = report_main.FLAG
        elif isinstance(param.type, click.Choice):
            kind = tuple(param.type.choices)
        else:
            kind = report_main.TEXT
        for spelling in [*param.opts, *param.secondary_opts]:
            spec[spelling] = (param.name, kind)
        assert param.envvar == report_main.ENVVARS.get(param.name), param.name
        assert not param.multiple and param.nargs == 1
    return spec


def test_the_fast_path_knows_every_option_of_the_click_command() -> None:
    assert set(report_group.commands) == set(report_main.SPECS)
    for name, command in report_group.commands.items():
        assert _declared(command) == report_main.SPECS[name], name


def test_the_fast_path_stays_import_light(
    history: list[dict[str, Any]],  # noqa: F811
) -> None:
    code = (
        "import sys; from telemetryd.client.main import main; "
        "rc = main(['report', 'daily', '--json', '-z', 'UTC']); "
        "heavy = ('click', 'msgspec', 'duckdb', 'anyio', 'json', 'dataclasses', 'asyncio'); "
        "heavy = sorted(m for m in heavy if m in sys.modules); "
        "sys.stderr.write(repr((rc, heavy)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=60, check=False
    )
    assert result.stderr.decode() == "(0, [])"
    assert json.loads(result.stdout)["totals"]["requests"] == len(history)
