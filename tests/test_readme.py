"""The README's Quick start, run as a user runs it: its shell block, word for word,
against the real daemon (a fresh one under the test's TELEMETRYD_HOME)."""

from __future__ import annotations

import re
import subprocess

from conftest import ROOT, Daemon


def quick_start() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"^## Quick start\n.*?^```sh\n(.*?)^```$", text, re.S | re.M)
    assert found is not None, "README.md has no Quick start shell block"
    return found.group(1)


def test_the_quick_start_runs_as_written(running_daemon: Daemon) -> None:
    script = quick_start()
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT,  # (`. .venv/bin/activate` is relative to the checkout)
        capture_output=True,
        timeout=120,
        check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert '{"ok":true,"lines":1,"accepted":1,"rejected":0,"duplicates":0}' in out
    assert "claude-sonnet-4-5,1200,340,0.0087" in out  # (the query's CSV, not a terminal)
    assert "trace 4bf92f3577b34da6a3ce929d0e0e4736  session s1" in out
    assert "└─ Bash" in out
    assert len(running_daemon.journal_events()) == 3
