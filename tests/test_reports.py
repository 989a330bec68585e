"""`telemetryctl reports`: every report macro with its parameters and description, as the
real daemon's database (or, with the daemon stopped, the file) defines them."""

from __future__ import annotations

import json
from typing import Any

from conftest import Daemon, ctl
from telemetryd.client.reports_cli import declared_defaults

# The reports of issue 3, with their parameters and the defaults in sql/macros.sql.
EXPECTED = {
    "agent_usage_summary": [("days", "7")],
    "skill_frequency": [("days", "7")],
    "cost_by_model": [("days", "7")],
    "session_overview": [("session_id", "NULL"), ("days", "7")],
    "optimization_insights": [("days", "7")],
    "recent_event_count": [("type", "NULL"), ("seconds", "60")],
    "trace": [("trace_id", None)],
}


def listed(result_stdout: bytes) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(result_stdout)}


def test_every_report_is_listed_with_its_parameters(running_daemon: Daemon) -> None:
    result = ctl("reports", "--json")
    assert result.returncode == 0, result.stderr
    reports = listed(result.stdout)
    assert set(EXPECTED) <= set(reports)
    for name, parameters in EXPECTED.items():
        report = reports[name]
        assert [(p["name"], p["default"]) for p in report["parameters"]] == parameters, name
        description = report["description"]
        assert isinstance(description, str) and description and "\n" not in description

    text = ctl("reports")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.decode().splitlines()
    signatures = {line.split("  ")[0].strip(): line for line in lines}
    assert "cost_by_model(days := 7)" in signatures
    assert "session_overview(session_id := NULL, days := 7)" in signatures
    assert "trace(trace_id)" in signatures
    assert signatures["trace(trace_id)"].endswith(reports["trace"]["description"])


def test_reports_with_the_daemon_stopped_read_the_file(running_daemon: Daemon) -> None:
    assert ctl("reports").returncode == 0  # the store worker makes the database file
    assert running_daemon.stop() == 0
    result = ctl("reports", "--json")
    assert result.returncode == 0, result.stderr
    assert set(EXPECTED) <= set(listed(result.stdout))


def test_reports_without_daemon_or_database() -> None:
    result = ctl("reports")
    assert result.returncode == 1
    assert b"the daemon is not running" in result.stderr


def test_defaults_are_read_from_the_definitions() -> None:
    sql = """
        CREATE OR REPLACE MACRO a(days := 7) AS TABLE SELECT 1;
        create macro b(x, y := 'two') as table select 2;
        CREATE OR REPLACE MACRO scalar(z := 1) AS z + 1;
    """
    assert declared_defaults(sql) == {"a": {"days": "7"}, "b": {"y": "'two'"}}
