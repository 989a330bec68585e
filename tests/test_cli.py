"""The click CLI, run as the real `telemetryctl` executable: validate, help, and the
control commands (status, flush, rebuild, gc) against each kind of answer."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ctl, exchange
from telemetryd import wire
from test_client import Peer, answering, line

GOOD = b'{"type":"custom","name":"ok"}\n'


def test_validate_a_good_file_prints_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(GOOD + b"\n" + b'{"type":"skill","name":"pdf","success":true}\r\n')
    result = ctl("validate", str(path))
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")


def test_validate_names_each_bad_line(tmp_path: Path) -> None:
    lines = [
        GOOD,
        b'{"type":"api_request","tokens":{"source":"actual","input":"3","output":1}}\n',
        b"{not json\n",
        GOOD,
        b'{"type":"custom","name":"x","bogus":1}\n',
        b'{"type":"custom","name":"x","received_at":"2026-01-01T00:00:00Z"}\n',
        b'{"type":"run","attempt_id":"a"}\n',
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(lines))
    result = ctl("validate", str(path))
    assert result.returncode == 1
    out = result.stdout.decode().splitlines()
    assert out == [
        "line 2: $.tokens.input: Expected `int | null`, got `str`",
        "line 3: $: invalid JSON: JSON is malformed: object keys must be strings (byte 1)",
        "line 5: $: Object contains unknown field `bogus` (free-form data belongs in `attrs`)",
        "line 6: $.received_at: `received_at` is set by the daemon, never by clients",
        "line 7: $: Object missing required field `attempt_index`",
    ]


def test_validate_reads_stdin_and_checks_journal_lines(tmp_path: Path) -> None:
    journaled = (
        b'{"type":"custom","v":1,"id":"x","received_at":"2026-01-01T00:00:00Z","name":"n"}\n'
    )
    assert ctl("validate", "-", input=journaled).returncode == 1
    result = ctl("validate", "--journal", "-", input=journaled)
    assert (result.returncode, result.stdout) == (0, b"")


def test_help_lists_every_command() -> None:
    result = ctl("--help")
    assert result.returncode == 0
    listed = {
        line.split()[0]
        for line in result.stdout.decode().split("Commands:")[1].splitlines()
        if line.strip()
    }
    assert listed == {
        "alerts",
        "config",
        "export",
        "flush",
        "gc",
        "hook",
        "hooks",
        "import",
        "otel",
        "paths",
        "pricing",
        "query",
        "rebuild",
        "report",
        "reports",
        "reprice",
        "send",
        "service",
        "status",
        "statusline",
        "tail",
        "trace",
        "validate",
    }
    send = ctl("send", "--help")
    assert send.returncode == 0 and b"Usage: telemetryctl send" in send.stdout


def test_python_m_telemetryd_runs_the_daemon_entry_point() -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "telemetryd", "--version"], capture_output=True, check=False
    )
    assert result.returncode == 0 and result.stdout.startswith(b"telemetryd ")


def test_cli_reference_matches_the_commands() -> None:
    """docs/cli.md is generated from --help; a command or option that changed fails here."""
    from conftest import ROOT
    from telemetryd.client import clidoc

    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == clidoc.render(), "docs/cli.md is stale: run `make docs`"


def test_status_shows_the_store(daemon_factory: Any) -> None:
    """The store worker's state, materialized and pending events, last materialization,
    database size, rate."""
    daemon = daemon_factory(
        ["--set", "store.interval=3600", "--set", "store.pending-events=1000000"]
    ).start()
    lines = b"".join(b'{"type":"custom","name":"n%d"}\n' % i for i in range(3))
    assert exchange(daemon.events_socket, lines)[-1]["accepted"] == 3
    journal_bytes = sum(p.stat().st_size for p in daemon.journal_dir.glob("*.jsonl"))
    before = ctl("status")
    assert before.returncode == 0, before.stderr
    text = before.stdout.decode()
    assert re.search(r"^rate: [\d,.]+ events/s; 0 tail clients following$", text, re.M), text
    # No query yet: the store worker has not been needed, so it is not running.
    assert "store: worker stopped; it starts when needed (3 events to load)" in text, text
    assert journal_bytes > 0
    assert ctl("flush").returncode == 0
    after = ctl("status").stdout.decode()
    found = re.search(
        r"^store: 3 events materialized, 0 B of journal pending, "
        r"last materialized (\d+) s ago \((\S+)Z\), database ([\d.]+) (kB|MB)$",
        after,
        re.M,
    )
    assert found, after
    assert daemon.stop() == 0


# -- status and the other control commands: each kind of answer, its exit status --------------


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[[bytes], str]]:
    """A control socket (served by a thread) that answers each request with ``answer``."""
    made: list[Peer] = []

    def make(answer: bytes) -> str:
        made.append(Peer(tmp_path, answering(answer)))
        return made[-1].path

    yield make
    for peer in made:
        peer.close()


STATUS = {"ok": True, "version": "9.9", "pid": 4242, "uptime_s": 3.0, "accepted": 1,
          "rejected": 0, "duplicates": 0, "connections": 0,
          "journal": {"segments": 1, "bytes": 10, "durability": "interval"}}  # fmt: skip


@pytest.mark.parametrize(
    "answer, code, first",
    [
        (line(STATUS), 0, "telemetryd 9.9 is up (pid 4242, 3 s)"),
        (
            line(wire.Closing(wire.FORBIDDEN_PEER, "uid 7 may not connect")),
            1,
            "telemetryd is running but answered with an error: forbidden_peer: uid 7 may not",
        ),
        (
            line(wire.Closing(wire.BAD_REQUEST, "Invalid value 'status' - at `$.op`")),
            1,
            "telemetryd is running but answered with an error: bad_request: Invalid value",
        ),
        (
            line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over 64")),
            3,
            "telemetryd is up but busy: the daemon is busy: over 64",
        ),
        (
            line(wire.Closing(wire.SHUTTING_DOWN, "the daemon is shutting down")),
            3,
            "telemetryd is not running: the daemon is shutting down",
        ),
        (b"", 3, "telemetryd is not running: the daemon closed the connection without answering"),
        (b"<html>\n", 1, "telemetryd answered with something that makes no sense: the daemon"),
        (line({"ok": True}), 1, "telemetryd answered with something that makes no sense: the"),
    ],
)
def test_status_tells_each_answer_apart(
    fake: Callable[[bytes], str], answer: bytes, code: int, first: str
) -> None:
    result = ctl("status", "--socket", fake(answer))
    shown = (result.stdout if code == 0 else result.stderr).decode()
    assert result.returncode == code, result
    assert shown.startswith(first), shown
    assert "Traceback" not in result.stderr.decode()
    if code:
        assert shown.count("\n") == 1 and result.stdout == b""


def test_status_of_no_daemon_says_not_running(tmp_path: Path) -> None:
    result = ctl("status", "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 3
    assert (
        result.stderr.decode()
        == f"telemetryd is not running: no daemon socket at {tmp_path}/none.sock\n"
    )


DRY_RUN = {"ok": True, "dry_run": True, "deleted": ["a.jsonl"], "compressed": [],
           "events_deleted": None, "bytes_before": 9, "bytes_after": None}  # fmt: skip


@pytest.mark.parametrize(
    "args, answer, code, shown",
    [
        (["flush"], line({"ok": True, "materialized": 3}), 0, ""),
        (["rebuild"], line({"ok": True, "events": 12}), 0, "rebuilt: 12 events\n"),
        (
            ["rebuild"],
            line({"ok": True, "events": 205, "events_before": 360}),
            0,
            "rebuilt: 205 events (360 before: 155 fewer)\n",
        ),
        (["gc", "--dry-run"], line(DRY_RUN), 0, "would delete a.jsonl\njournal: 9 bytes\n"),
        (
            ["gc", "--dry-run"],
            line({**DRY_RUN, "deleted": []}),
            0,
            "nothing to delete, compact or compress now\njournal: 9 bytes\n",
        ),
        (["gc"], line(wire.Closing("gc_failed", "disk gone")), 1, "Error: disk gone\n"),
        (["rebuild"], line(wire.Closing("rebuild_failed", "no")), 1, "Error: no\n"),
        (
            ["flush"],
            line(wire.Closing(wire.TOO_MANY_CONNECTIONS, "over 64")),
            3,
            "Error: the daemon is busy: over 64\n",
        ),
        (["rebuild"], line({"ok": True}), 1, "Error: the daemon's reply is not an answer to"),
    ],
)
def test_control_commands_answer_from_the_typed_reply(
    fake: Callable[[bytes], str], args: list[str], answer: bytes, code: int, shown: str
) -> None:
    result = ctl(*args, "--socket", fake(answer))
    assert result.returncode == code, result
    assert (result.stdout if code == 0 else result.stderr).decode().startswith(shown)


@pytest.mark.parametrize("args", [["flush"], ["rebuild"], ["gc"], ["gc", "--dry-run"]])
def test_control_commands_without_a_daemon_say_it_is_not_running(
    tmp_path: Path, args: list[str]
) -> None:
    result = ctl(*args, "--socket", str(tmp_path / "none.sock"))
    assert (result.returncode, result.stdout) == (3, b"")  # (as status, query, report)
    assert result.stderr.decode() == (
        f"Error: telemetryd is not running: no daemon socket at {tmp_path}/none.sock\n"
    )
