"""The click CLI, run as the real `telemetryctl` executable: validate, help."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from conftest import ctl, exchange

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
        "config",
        "flush",
        "gc",
        "hook",
        "hooks",
        "import",
        "paths",
        "pricing",
        "query",
        "rebuild",
        "reports",
        "send",
        "service",
        "status",
        "tail",
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
