"""`telemetryctl report --html`: the page in real headless Chromium (Debian's `chromium`,
driven by Playwright), on real daemon data: the Claude Code and Codex samples imported as
tests/test_report.py imports them, and events sent for tools, errors, runs, the rate
limits (through the real `telemetryctl statusline`) and an alert raised by the analyzer.

What a person would check: the page loads offline without a console error or any
request beyond the file itself; every chart is drawn (a screenshot of each is not one
flat colour) with a title, axis labels and a legend; its numbers are the ones
`telemetryctl report ... --json`, `query` and `alerts --json` print, and, for what the
test sent itself, the ones computed here from what was sent.

One browser at a time, every wait bounded.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from PIL import Image, ImageStat
from playwright.sync_api import Page, sync_playwright

from conftest import TELEMETRYCTL, Daemon, ctl, exchange
from telemetryd.errors import DaemonError
from test_report import CLAUDE_LAYOUT, ROLLOUTS, TRANSCRIPTS

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000  # any one browser step
CHARTS = (
    "cost-per-day",
    "tokens-per-day",
    "cost-by-project",
    "cost-by-agent",
    "blocks",
    "tool-failure-rate",
    "tool-duration",
    "error-heatmap",
    "sessions-per-day",
    "alerts-per-day",
    "rate-limits",
)
NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.date().isoformat()
YESTERDAY = (NOW - timedelta(days=1)).date().isoformat()

# Tools only this test uses: (duration in ms, succeeded) per call.
TOOLS = {
    "mcp__probe__run": [
        (120, True), (340, False), (95, True), (2100, False), (60, True),
        (75, True), (500, True), (800, False), (45, True), (130, True),
    ],
    "mcp__probe__fetch": [(5, True), (7, True), (12, True), (9, True), (6, True)],
    "mcp__probe__edit": [(30, True), (44, False), (25, True), (31, True)],
}  # fmt: skip
# Errors per provider: (hours ago, message). The six rate limits within 30 s make one
# error spike (analyzer.error-spike-count=5 in 60 s).
ERRORS = {
    "anthropic": [(0.5 + s / 3600, "429 Too Many Requests: rate limit exceeded")
                  for s in (0, 5, 10, 15, 20, 25)]
    + [(30.0, "529 Overloaded"), (30.1, "529 Overloaded")],
    "openai": [(1.0, "Request timed out."), (31.0, "Request timed out.")],
}  # fmt: skip
# Attempts: (model, outcome, same-model retries).
RUNS = [
    ("claude-sonnet-4-5", "done", 0),
    ("claude-sonnet-4-5", "done", 1),
    ("claude-sonnet-4-5", "blocked", 0),
    ("gpt-5-codex", "done", 0),
    ("gpt-5-codex", "redo", 2),
]
# What the status line passes: (five-hour %, seven-day %), in turn.
RATE_LIMITS = [(23.4, 41.0), (30.0, 41.0), (57.5, 44.0)]
ODD_PROJECT = '</script><b class="x">&amp; $$x$$'


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def send(daemon: Daemon, events: list[dict[str, Any]]) -> None:
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    replies = exchange(daemon.events_socket, payload)
    assert replies[-1]["accepted"] == len(events), replies


def run_json(*args: str) -> Any:
    result = ctl(*args, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def query(sql: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = run_json("query", "--format", "json", sql)
    return rows


def statusline(five: float, seven: float, n: int) -> None:
    payload = {
        "session_id": "html-status",
        "model": {"id": "claude-opus-4-1", "display_name": "Opus 4.1"},
        "cost": {"total_cost_usd": 0.1 * (n + 1)},
        "rate_limits": {
            "five_hour": {"used_percentage": five, "resets_at": 1_900_000_000 + n},
            "seven_day": {"used_percentage": seven, "resets_at": 1_900_400_000},
        },
    }
    result = subprocess.run(
        [TELEMETRYCTL, "statusline"],
        input=json.dumps(payload).encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and result.stdout, result.stderr


def populate(daemon: Daemon, tmp_path: Path) -> None:
    """The samples imported, the test's own events sent, the analyzer's alert raised."""
    projects = tmp_path / "claude" / "projects"
    for name, where in CLAUDE_LAYOUT.items():
        (projects / where).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(TRANSCRIPTS / name, projects / where)
    sessions = tmp_path / "codex" / "sessions" / "2026" / "02" / "23"
    sessions.mkdir(parents=True)
    for rollout in ROLLOUTS:
        shutil.copy(rollout, sessions / rollout.name)
    for agent, root in (("claude-code", tmp_path / "claude"), ("codex", tmp_path / "codex")):
        result = ctl("import", agent, str(root), timeout=60)
        assert result.returncode == 0, result.stderr.decode()
    events: list[dict[str, Any]] = []
    start = NOW - timedelta(hours=2)
    for tool, calls in TOOLS.items():
        for n, (duration, ok) in enumerate(calls):
            began = start + timedelta(seconds=n * 10)
            use = {"name": tool, "use_id": f"{tool}-{n}"}
            events.append({"type": "tool_call", "ts": iso(began), "session_id": "html-s1",
                           "tool": use})  # fmt: skip
            result = {**use, "success": ok, **({} if ok else {"error": "exit status 1"})}
            events.append({"type": "tool_result", "session_id": "html-s1", "tool": result,
                           "ts": iso(began + timedelta(milliseconds=duration)),
                           "duration_ms": duration})  # fmt: skip
    for provider, errors in ERRORS.items():
        for n, (hours, message) in enumerate(errors):
            events.append({"type": "error", "id": f"html-{provider}-{n}",
                           "ts": iso(NOW - timedelta(hours=hours)), "session_id": "html-s2",
                           "agent": {"provider": provider}, "message": message})  # fmt: skip
    for n, (model, outcome, retries) in enumerate(RUNS):
        attempt = f"html-att-{n}"
        events.append({"type": "run", "ts": iso(NOW - timedelta(minutes=50 - n)),
                       "session_id": "html-s3", "agent": {"model": model},
                       "task": {"id": f"T-{n}", "attempt_id": attempt, "attempt_index": 0},
                       "attempt_id": attempt, "attempt_index": 0,
                       "retry_count": {"same_model": retries}, "elapsed_ms": {"wall": 60_000},
                       "tokens": {"source": "unknown"}, "outcome": outcome})  # fmt: skip
    events.append({"type": "api_request", "ts": iso(NOW - timedelta(hours=1)),
                   "session_id": "html-s4", "agent": {"model": "claude-sonnet-4-5",
                   "provider": "anthropic"}, "attrs": {"project": ODD_PROJECT},
                   "tokens": {"source": "actual", "input": 1000, "output": 200},
                   "cost_usd": 0.25, "cost_source": "reported"})  # fmt: skip
    events.append({"type": "api_request", "ts": iso(NOW - timedelta(hours=1)),
                   "session_id": "html-s5", "agent": {"model": "claude-sonnet-4-5"},
                   "attrs": {"project": ""}, "cost_usd": 0.5, "cost_source": "reported",
                   "tokens": {"source": "actual", "input": 10, "output": 20}})  # fmt: skip
    events.append({"type": "api_request", "ts": iso(NOW - timedelta(hours=1)),
                   "session_id": "html-s6", "agent": {"model": "claude-sonnet-4-5"},
                   "cost_usd": 0.125, "cost_source": "reported",
                   "tokens": {"source": "actual", "input": 10, "output": 20}})  # fmt: skip
    send(daemon, events)
    for n, (five, seven) in enumerate(RATE_LIMITS):
        statusline(five, seven, n)
    deadline = time.monotonic() + 30
    while not query("SELECT event_id FROM alerts WHERE rule = 'error_spike'"):
        assert time.monotonic() < deadline, "the analyzer raised no error spike"
        time.sleep(0.2)


@pytest.fixture
def filled(daemon_factory: Any, tmp_path: Path) -> Daemon:
    args = ["--set", "analyzer.interval=0.2", "--set", "analyzer.error-spike-count=5",
            "--set", "analyzer.error-spike-window=60"]  # fmt: skip
    daemon: Daemon = daemon_factory(args).start()
    populate(daemon, tmp_path)
    return daemon


# -- the browser ---------------------------------------------------------------------------


class Loaded:
    def __init__(self, page: Page, errors: list[str], requests: list[str]) -> None:
        self.page, self.errors, self.requests = page, errors, requests

    def source(self, name: str) -> dict[str, list[Any]]:
        data: dict[str, list[Any]] = self.page.evaluate(
            """name => {
                const model = Bokeh.documents[0].get_model_by_name(name);
                if (model === null) return null;
                const out = {};
                const data = model.data instanceof Map ? model.data : Object.entries(model.data);
                for (const [key, value] of data) out[key] = Array.from(value);
                return out;
            }""",
            name,
        )
        assert data is not None, f"no data source {name}"
        return data


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium that has no network to reach: one per test, closed after."""
    with tempfile.TemporaryDirectory(prefix="td-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
            timeout=WAIT_MS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            context.close()


def load(browser: Any, path: Path, charts: bool = True) -> Loaded:
    errors: list[str] = []
    requests: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    if charts:
        # Every root has a view, and BokehJS has drawn them (the document is idle).
        page.wait_for_function(
            """n => window.Bokeh && Bokeh.documents.length === 1
                  && Bokeh.documents[0].roots().length === n
                  && Bokeh.documents[0].is_idle""",
            arg=len(CHARTS),
            timeout=WAIT_MS,
        )
    return Loaded(page, errors, requests)


def not_blank(png: bytes) -> float:
    """The pixels' largest standard deviation over the RGB channels (0: one colour)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return max(ImageStat.Stat(image).stddev)


# -- the page ------------------------------------------------------------------------------


def test_the_page_in_chromium(filled: Daemon, browser: Any, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    made = ctl("report", "--html", str(out), "-z", "UTC", timeout=60)
    assert made.returncode == 0, made.stderr.decode()
    assert made.stderr.decode().startswith(f"wrote {out} (")
    text = out.read_text()
    assert len(text.encode()) < 5_000_000

    loaded = load(browser, out)
    page = loaded.page
    assert loaded.errors == []
    assert loaded.requests == [out.as_uri()]
    # Nothing outside the file: no element refers to anything (a script, a style, an image).
    assert page.evaluate("document.querySelectorAll('[src], [href], link, iframe').length") == 0

    # Every chart: there, with a title, axis labels and a legend, and drawn.
    for name in CHARTS:
        described = page.evaluate(
            """name => {
                const plot = Bokeh.documents[0].get_model_by_name(name);
                if (plot === null) return null;
                const legends = plot.right.concat(plot.center).filter(
                    m => m.type === "Legend" || m.type === "ColorBar");
                return {
                    title: plot.title.text,
                    x: plot.below[0].axis_label, y: plot.left[0].axis_label,
                    legend: legends.map(m => m.type === "Legend"
                        ? m.items.map(i => i.label.value) : [m.title]).flat(),
                    rows: plot.renderers.map(r => r.data_source.get_length()),
                };
            }""",
            name,
        )
        assert described is not None, f"{name} is not on the page"
        assert described["title"] and described["x"] and described["y"], described
        assert "(" in described["x"] + described["y"], f"{name}: no unit in {described}"
        assert described["legend"] and all(described["legend"]), described
        assert min(described["rows"]) > 0, described
    shots = page.locator("div.chart")
    assert shots.count() == len(CHARTS)
    for i in range(len(CHARTS)):
        assert not_blank(shots.nth(i).screenshot()) > 10, f"{CHARTS[i]} looks blank"
    whole = page.screenshot(full_page=True)
    (tmp_path / "report.png").write_bytes(whole)
    assert not_blank(whole) > 10

    # Cost and tokens per day: the numbers of `report daily --json`.
    daily = run_json("report", "daily", "--json", "-z", "UTC")
    cost = loaded.source("cost-per-day-source")
    tokens = loaded.source("tokens-per-day-source")
    assert cost["day"] == [row["date"] for row in daily["daily"]]
    assert cost["total"] == [row["totalCost"] for row in daily["daily"]]
    assert tokens["total"] == [row["totalTokens"] for row in daily["daily"]]
    for i, row in enumerate(daily["daily"]):
        for model in row["modelBreakdowns"]:
            assert cost["m:" + model["modelName"]][i] == model["cost"]
        stacked = sum(v[i] for k, v in cost.items() if k.startswith("m:"))
        assert stacked == pytest.approx(row["totalCost"], rel=1e-12)
        assert sum(v[i] for k, v in tokens.items() if k.startswith("m:")) == row["totalTokens"]
    total = page.locator("#total-cost")
    assert float(total.get_attribute("data-value") or "") == daily["totals"]["totalCost"]
    assert total.inner_text().startswith(f"${daily['totals']['totalCost']:,.2f}")

    # Cost by project and by agent: `report daily --by ... --json`, summed over the days.
    for what in ("project", "agent"):
        rows = run_json("report", "daily", "--by", what, "--json", "-z", "UTC")["daily"]
        expected: Counter[str | None] = Counter()
        for row in rows:
            expected[row[what]] += row["totalCost"]
        shown = loaded.source(f"cost-by-{what}-source")
        assert dict(zip(shown["value"], shown["total"], strict=True)) == pytest.approx(expected)
        assert len(set(shown["label"])) == len(shown["label"])  # categories must differ
    projects = loaded.source("cost-by-project-source")
    assert ODD_PROJECT in projects["project"]
    # No project and an empty one: both "(no project)" to a reader, two bars all the same.
    assert {"(no project)", "(no project) (2)"} <= set(projects["project"])

    # The 5-hour windows: `report blocks --json`.
    blocks = [b for b in run_json("report", "blocks", "--json", "-z", "UTC")["blocks"]
              if not b["isGap"]]  # fmt: skip
    drawn = loaded.source("blocks-source")
    if any(b["isActive"] for b in blocks):
        active = loaded.source("blocks-active-source")
        drawn = {k: drawn[k] + active[k] for k in drawn}
    assert sorted(drawn["id"]) == sorted(b["id"] for b in blocks)
    by_id = dict(zip(drawn["id"], drawn["cost"], strict=True))
    assert all(by_id[b["id"]] == b["costUSD"] for b in blocks)

    # Tools: the macro's numbers, and for the test's own tools, the ones computed here.
    reliability = query("select * from tool_reliability(days := 36525)")
    rates = loaded.source("tool-failure-rate-source")
    durations = loaded.source("tool-duration-source")
    for row in reliability[:20]:
        if row["failure_rate"] is not None:
            assert rates["rate"][rates["tool"].index(row["tool_name"])] == pytest.approx(
                row["failure_rate"] * 100
            )
    for tool, calls in TOOLS.items():
        failed = sum(not ok for _, ok in calls)
        assert rates["rate"][rates["tool"].index(tool)] == pytest.approx(failed / len(calls) * 100)
        spans = [float(d) for d, _ in calls]
        p95 = statistics.quantiles(spans, n=20, method="inclusive")[-1]
        assert durations["p95"][durations["tool"].index(tool)] == pytest.approx(p95)
        assert durations["p50"][durations["tool"].index(tool)] == statistics.median(spans)

    # The heat map: provider_reliability's rows; the test's days hold only its own errors.
    cells = loaded.source("error-heatmap-source")
    macro = query("select * from provider_reliability(days := 36525)")
    assert sorted(zip(cells["day"], cells["provider"], cells["category"], cells["errors"],
                      strict=True)) == sorted(
        (str(r["day"])[:10], r["provider"] or "unknown", r["category"], r["errors"])
        for r in macro
    )  # fmt: skip
    sent: Counter[tuple[str, str]] = Counter()
    for provider, errors in ERRORS.items():
        for hours, _ in errors:
            sent[((NOW - timedelta(hours=hours)).date().isoformat(), provider)] += 1
    shown_errors: Counter[tuple[str, str]] = Counter()
    for day, provider, n in zip(cells["day"], cells["provider"], cells["errors"], strict=True):
        if day in (TODAY, YESTERDAY, (NOW - timedelta(hours=31)).date().isoformat()):
            shown_errors[(day, provider)] += n
    assert shown_errors == sent

    # Sessions per day and source: the sessions view.
    started = query(
        "select strftime(started, '%Y-%m-%d') as day, coalesce(source, 'unknown') as source, "
        "count(*) as n from sessions where started is not null group by all"
    )
    per_day = loaded.source("sessions-per-day-source")
    drawn = {
        (day, column[2:]): n
        for column, counts in per_day.items()
        if column.startswith("k:")
        for day, n in zip(per_day["day"], counts, strict=True)
        if n
    }
    assert drawn == {(r["day"], r["source"]): r["n"] for r in started}
    assert sum(per_day["total"]) == sum(r["n"] for r in started) > 10

    # Alerts: `alerts --json`, in the chart and the table.
    alerts = run_json("alerts", "--json", "--since", "1970-01-01")["alerts"]
    assert [a["rule"] for a in alerts] == ["error_spike"]
    assert sum(loaded.source("alerts-per-day-source")["total"]) == len(alerts)
    row = page.locator("#alerts tbody tr")
    assert row.count() == 1
    assert alerts[0]["message"] in row.inner_text()

    # Model quality: the macro's numbers, and the success rates computed here.
    quality = query("select * from model_quality(days := 36525)")
    table = page.locator("#model-quality tbody tr")
    assert table.count() == len(quality) == 2
    for i, expected_row in enumerate(quality):
        cells_text = table.nth(i).locator("td")
        assert cells_text.nth(0).inner_text() == expected_row["model"]
        value = cells_text.nth(2).get_attribute("data-value")
        assert float(value or "") == expected_row["success_rate"]
        mine = [outcome for model, outcome, _ in RUNS if model == expected_row["model"]]
        assert expected_row["success_rate"] == pytest.approx(mine.count("done") / len(mine))

    # Rate limits: the values the status line was given, in order.
    five = loaded.source("rate-limits-five_hour-source")
    seven = loaded.source("rate-limits-seven_day-source")
    assert five["used"] == [f for f, _ in RATE_LIMITS]
    assert seven["used"] == list(dict.fromkeys(s for _, s in RATE_LIMITS))

    # The odd project name is text, nowhere markup.
    assert page.locator("b.x").count() == 0


def test_since_and_until_keep_their_days(filled: Daemon, tmp_path: Path) -> None:
    """Without the browser: the page's data (Bokeh's document JSON) for one day, the
    day of the requests (an hour ago: yesterday in the first hour of a UTC day)."""
    day = (NOW - timedelta(hours=1)).date().isoformat()
    out = tmp_path / "one-day.html"
    made = ctl("report", "--html", str(out), "-z", "UTC", "--since", day, "--until", day)
    assert made.returncode == 0, made.stderr.decode()
    daily = run_json("report", "daily", "--json", "-z", "UTC", "--since", day, "--until", day)
    assert [r["date"] for r in daily["daily"]] == [day]
    sources = page_sources(out.read_text())
    assert sources["cost-per-day-source"]["day"] == [day]
    assert sources["cost-per-day-source"]["total"] == [daily["daily"][0]["totalCost"]]
    assert set(sources["error-heatmap-source"]["day"]) == {day}
    # (the macros' days: from now back to the day's midnight, rounded up)
    assert f"tool_reliability(days := {1 if day == TODAY else 2})" in out.read_text()


def test_a_period_not_begun_is_an_empty_page(filled: Daemon) -> None:
    """`--since` a day to come: the page showed the last day's tools and model quality
    (the macros' days was at least 1) under "Nothing recorded in this period"."""
    from telemetryd.client import html_report, pictures

    future = (NOW + timedelta(days=400)).date()
    got = pictures.load(pictures.Options(timezone="UTC", since=future), filled.control_socket)
    assert got.days == 0
    assert (got.tools, got.model_quality, got.provider_errors, got.failed) == ([], [], [], {})
    assert got.empty()
    assert 'id="empty"' in html_report.render(got)
    everything = pictures.load(pictures.Options(timezone="UTC"), filled.control_socket)
    assert everything.tools and everything.model_quality  # (the test of the test)


def test_another_time_zone_moves_the_days(filled: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "auckland.html"
    made = ctl("report", "--html", str(out), "-z", "Pacific/Auckland")
    assert made.returncode == 0, made.stderr.decode()
    daily = run_json("report", "daily", "--json", "-z", "Pacific/Auckland")["daily"]
    utc = run_json("report", "daily", "--json", "-z", "UTC")["daily"]
    assert [r["date"] for r in daily] != [r["date"] for r in utc]  # (the test of the test)
    shown = page_sources(out.read_text())["cost-per-day-source"]
    assert shown["day"] == [r["date"] for r in daily]
    assert shown["total"] == [r["totalCost"] for r in daily]
    assert "day (Pacific/Auckland)" in out.read_text()
    # The rate limits' hover says when, as the axis does, in that zone (it said UTC)
    seven = page_sources(out.read_text())["rate-limits-seven_day-source"]
    auckland = datetime.fromtimestamp(1_900_400_000, ZoneInfo("Pacific/Auckland"))
    assert set(seven["resets"]) == {auckland.strftime("%Y-%m-%d %H:%M")}


def test_with_the_daemon_stopped_the_page_comes_from_the_file(
    filled: Daemon, tmp_path: Path
) -> None:
    daily = run_json("report", "daily", "--json", "-z", "UTC")
    assert filled.stop() == 0
    out = tmp_path / "stale.html"
    made = ctl("report", "--html", str(out), "-z", "UTC", timeout=90)
    assert made.returncode == 0, made.stderr.decode()
    assert "telemetryd is not running" in made.stderr.decode()
    text = out.read_text()
    assert "telemetryd was not running" in text
    assert page_sources(text)["cost-per-day-source"]["total"] == [
        r["totalCost"] for r in daily["daily"]
    ]


def test_a_failed_query_leaves_its_section_out(
    filled: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A section whose query the store cannot answer (out of memory, a timeout) says
    why; the rest of the page is there. The query is made to fail for real: it names a
    table the database lacks."""
    from telemetryd.client import html_report, pictures

    monkeypatch.setattr(pictures, "RATE_LIMITS_SQL", "SELECT * FROM no_such_table")
    got = pictures.load(pictures.Options(timezone="UTC"), filled.control_socket)
    assert list(got.failed) == ["rate_limits"] and "no_such_table" in got.failed["rate_limits"]
    assert got.rate_limits == [] and got.daily.rows and got.tools
    text = html_report.render(got)
    assert "Left out: the query failed: " in text
    sources = page_sources(text)
    assert "rate-limits-five_hour-source" not in sources and "cost-per-day-source" in sources
    # Out of memory: the setting that helps, not DuckDB's SET (a query cannot change it).
    assert pictures.reason(
        DaemonError("query_failed", "Out of Memory Error: could not allocate\nmore")
    ) == ("Out of Memory Error: could not allocate (raise [store] memory-limit in config.toml)")


@pytest.mark.parametrize("failing", [False, True])
def test_charts_drawn_while_queries_run_are_those_drawn_after(
    filled: Daemon, monkeypatch: pytest.MonkeyPatch, failing: bool
) -> None:
    """`report --html` draws each chart as its query ends: the page has the same data as
    one drawn after every query. A failed query stops the early drawing; the page then
    draws the rest."""
    from telemetryd.client import html_report, pictures

    if failing:
        monkeypatch.setattr(pictures, "RATE_LIMITS_SQL", "SELECT * FROM no_such_table")
    pending = pictures.start(pictures.Options(timezone="UTC"), filled.control_socket)
    drawn = html_report.draw_early(pending)
    got = pending.result()
    if failing:
        assert "rate_limits" not in drawn and list(got.failed) == ["rate_limits"]
    else:
        assert set(drawn) == set(html_report.DRAWN) and not got.failed
    assert drawn.get("daily")
    early = page_sources(html_report.render(got, drawn=drawn))
    late = page_sources(html_report.render(got))
    assert early == late
    assert "cost-per-day-source" in early and "error-heatmap-source" in early


def page_sources(text: str) -> dict[str, dict[str, Any]]:
    """Every named ColumnDataSource in the page's Bokeh document JSON."""
    found = re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', text,
                      re.S)  # fmt: skip
    assert found
    docs = json.loads(html.unescape(found.group(1)))
    out: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("name") == "ColumnDataSource" or node.get("type") == "object":
                attrs = node.get("attributes", {})
                if isinstance(attrs.get("name"), str) and "data" in attrs:
                    out[attrs["name"]] = plain(attrs["data"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(docs)
    return out


def plain(data: Any) -> dict[str, Any]:
    """Bokeh's serialized ``{"type": "map", "entries": [[key, value], ...]}``."""
    if isinstance(data, dict) and data.get("type") == "map":
        return {k: v for k, v in data["entries"]}
    return dict(data)


def test_an_empty_database_says_so(running_daemon: Daemon, browser: Any, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    made = ctl("report", "--html", str(out))
    assert made.returncode == 0, made.stderr.decode()
    loaded = load(browser, out, charts=False)
    assert loaded.errors == [] and loaded.requests == [out.as_uri()]
    assert loaded.page.locator("#empty").inner_text().startswith("Nothing recorded yet")
    assert not_blank(loaded.page.screenshot()) > 10
    assert out.stat().st_size < 10_000  # no charting library for nothing


def test_sums_past_javascripts_integers_draw_without_a_warning(
    running_daemon: Daemon, tmp_path: Path
) -> None:
    """Token sums past 2**53 (each request's input the largest count there may be) are
    drawn to a browser's precision, and Bokeh's "out of range integer" warning is not
    printed."""
    most = 2**53 - 1
    request = {
        "type": "api_request",
        "ts": iso(NOW - timedelta(hours=1)),
        "session_id": "huge",
        "agent": {"model": "claude-sonnet-4-5", "provider": "anthropic"},
        "tokens": {"source": "actual", "input": most, "output": 0},
    }
    send(running_daemon, [request] * 3)
    [row] = query("select sum(input_tokens) as n from api_requests")
    assert int(row["n"]) == 3 * most
    out = tmp_path / "huge.html"
    made = ctl("report", "--html", str(out), timeout=60)
    assert made.returncode == 0, made.stderr.decode()
    assert made.stderr.decode() == f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)\n"


# -- the command ---------------------------------------------------------------------------


def test_open_hands_the_file_to_the_opener(running_daemon: Daemon, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "opened"
    opener = bin_dir / ("open" if sys.platform == "darwin" else "xdg-open")
    opener.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}.tmp && mv {record}.tmp {record}\n'
    )
    opener.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    out = tmp_path / "page.html"
    made = subprocess.run(
        [TELEMETRYCTL, "report", "--html", str(out), "--open"],
        env=env, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    deadline = time.monotonic() + 20
    while not record.exists():
        assert time.monotonic() < deadline, "the opener was not run"
        time.sleep(0.05)
    assert record.read_text() == f"{out}\n"
    # No opener at all: the file is written, and the error says so.
    made = subprocess.run(
        [TELEMETRYCTL, "report", "--html", str(out), "--open"],
        env=dict(os.environ, PATH=str(tmp_path / "nothing")),
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 1
    assert "but cannot open it" in made.stderr.decode() and out.exists()


def test_bad_uses_are_refused_with_a_reason(running_daemon: Daemon, tmp_path: Path) -> None:
    made = ctl("report", "--html", str(tmp_path / "missing-dir" / "x.html"))
    assert made.returncode == 1
    assert "cannot write" in made.stderr.decode() and "No such file" in made.stderr.decode()
    made = ctl("report", "--html", str(tmp_path / "x.html"), "daily")
    assert made.returncode == 2 and "--html before a subcommand" in made.stderr.decode()
    made = ctl("report", "--open")
    assert made.returncode == 2 and "without --html FILE" in made.stderr.decode()
    made = ctl("report", "--html", "-", "--open")
    assert made.returncode == 2 and "--open needs a file" in made.stderr.decode()
    bare = ctl("report")
    assert bare.returncode == 2 and b"--html FILE" in bare.stderr  # (click's own way)
    assert not list(tmp_path.glob("*.tmp"))
    # `-`: the page on stdout.
    made = ctl("report", "--html", "-")
    assert made.returncode == 0 and made.stdout.startswith(b"<!DOCTYPE html>")


def test_without_the_extra_the_error_names_it(running_daemon: Daemon, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['bokeh'] = None; "
        "from telemetryd.client.main import main; "
        f"sys.exit(main(['report', '--html', {str(tmp_path / 'x.html')!r}]))"
    )
    made = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert made.returncode == 1
    assert "pip install 'telemetryd[report]'" in made.stderr.decode()
    assert not (tmp_path / "x.html").exists()


HEAVY = (
    "bokeh",
    "numpy",
    "telemetryd.client.html_charts",
    "telemetryd.client.html_report",
    "telemetryd.client.pictures",
)


@pytest.mark.parametrize(
    "command",
    [
        ["send", "--type", "custom", "--name", "x"],
        ["hook", "claude-code"],
        ["statusline", "--no-record"],
        ["query", "--format", "csv", "select 1"],
        ["report", "daily", "--json"],
    ],
)
def test_hot_commands_never_import_the_charts(running_daemon: Daemon, command: list[str]) -> None:
    code = (  # click's commands end in sys.exit: the modules are listed at exit
        "import atexit, sys; from telemetryd.client.main import main; "
        "atexit.register(lambda: sys.stderr.write("
        f"repr(sorted(m for m in {HEAVY!r} if m in sys.modules)))); "
        f"main({command!r})"
    )
    made = subprocess.run(
        [sys.executable, "-c", code], input=b"{}", capture_output=True, timeout=60, check=False
    )
    assert made.stderr.decode().endswith("[]"), made.stderr.decode()


def test_the_daemon_and_store_never_import_the_charts() -> None:
    """The daemon's and the store worker's modules, all imported: no charting library."""
    src = Path(__file__).resolve().parent.parent / "src" / "telemetryd"
    modules = sorted(
        "telemetryd." + ".".join(p.relative_to(src).with_suffix("").parts)
        for part in ("daemon", "store")
        for p in (src / part).rglob("*.py")
        if p.name != "__main__.py"
    )
    assert "telemetryd.daemon.main" in modules and "telemetryd.store.worker" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    made = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert made.returncode == 0, made.stderr.decode()
    assert made.stdout.decode().strip() == "[]"
