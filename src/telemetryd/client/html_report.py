"""The HTML report: one self-contained page of charts and tables, as one HTML file.

:func:`render` turns :class:`telemetryd.client.pictures.Pictures` into the page: a
header with the period and its totals, then a section per subject, each with a heading,
a "Numbers from" line naming the command that prints the same numbers, and a chart
(:mod:`telemetryd.client.html_charts`), a table, or a line saying there is nothing;
:func:`draw_early` draws each section's charts as its query ends, while slower queries
still run, and :func:`render` takes them. The file opens offline: BokehJS is inlined
(``bokeh.resources.INLINE``, only the core bundle: no widgets, tables, WebGL or MathJax),
the data travels inside the page as Bokeh's document JSON, and nothing in it refers to
anything outside (no CDN, font or image).
Tables carry each number's full value in ``data-value``. With nothing at all to show
the page is plain HTML that says so (:data:`EMPTY_PAGE`), without any JavaScript.

Why Bokeh: its inline bundle is 1.3 MB, so a page with years of history stays far under
the 5 MB goal; Plotly's full bundle alone is 4.8 MB (its partial bundles are not in the
Python package), and Altair's inline page needs vl-convert to bundle Vega at run time
(seconds on the first run). docs/html-report.md has the details.

Imported by `telemetryctl report --html` only: never by send, hook, statusline, query or
the daemon (tests/test_html_report.py holds them to it). Needs the ``report`` extra.
"""

from __future__ import annotations

import html
import warnings
import zoneinfo
from datetime import datetime

from bokeh.document import Document
from bokeh.embed import file_html
from bokeh.resources import INLINE

from telemetryd import __version__
from telemetryd.client import html_charts, pictures, reports
from telemetryd.client.html_charts import money, or_missing, percent
from telemetryd.errors import TelemetryError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bokeh.models import Model

CHARTS = html_charts.CHARTS
EMPTY_PAGE = "Nothing recorded yet"


# -- tables --------------------------------------------------------------------------------


def _cell(text: str, value: Any = None, numeric: bool = False) -> str:
    attrs = ""
    if value is not None:
        attrs += f' data-value="{html.escape(str(value))}"'
    if numeric:
        attrs += ' class="num"'
    return f"<td{attrs}>{html.escape(text)}</td>"


def _table(name: str, head: list[str], rows: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "\n".join(f"<tr>{row}</tr>" for row in rows)
    return f'<table id="{name}"><thead><tr>{cells}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


def _quality_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        out.append(
            _cell(or_missing(r["model"], "unknown"))
            + _cell(f"{int(r['attempts']):,}", r["attempts"], True)
            + _cell(percent(r["success_rate"]), r["success_rate"], True)
            + _cell(money(float(r["avg_cost_usd"] or 0)), r["avg_cost_usd"], True)
            + _cell(f"{float(r['avg_errors'] or 0):.2f}", r["avg_errors"], True)
            + _cell(percent(r["retry_rate"]), r["retry_rate"], True)
            + _cell(f"{float(r['score']):.3f}" if r["score"] is not None else "-", r["score"], True)
        )
    head = ["model", "attempts", "success rate", "avg cost", "avg errors", "retry rate", "score"]
    return _table("model-quality", head, out)


def _alerts_table(alerts: list[dict[str, Any]], zone: zoneinfo.ZoneInfo) -> str:
    newest = list(reversed(alerts))[: pictures.ALERTS_LISTED]
    out = []
    for a in newest:
        when = datetime.fromisoformat(str(a["timestamp"]).replace("Z", "+00:00"))
        local = when.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
        out.append(
            _cell(local, a["timestamp"])
            + _cell(str(a.get("severity") or ""))
            + _cell(str(a.get("rule") or ""))
            + _cell(str(a.get("session_id") or "-"))
            + _cell(str(a.get("message") or ""))
        )
    table = _table("alerts", ["time", "severity", "rule", "session", "message"], out)
    if len(alerts) > len(newest):
        more = len(alerts) - len(newest)
        table += f'<p class="note">and {more:,} older (telemetryctl alerts --json lists all).</p>'
    return table


# -- the page ------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 0 auto; padding: 16px 24px 48px; max-width: 1280px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 32px 0 4px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.meta, p.source, p.note { color: #555; margin: 2px 0 8px; }
p.source code { font-size: 12px; }
p.none { color: #777; font-style: italic; }
p.failed { color: #a40000; }
p.empty { font-size: 18px; margin: 48px 0; }
.totals { display: flex; gap: 28px; flex-wrap: wrap; margin: 12px 0; }
.totals div { background: #f5f6f8; border-radius: 6px; padding: 8px 14px; }
.totals b { display: block; font-size: 20px; }
.chart { margin: 8px 0 16px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f5f6f8; }
"""

TEMPLATE = """
{% block postamble %}<style>{{ css }}</style>{% endblock %}
{% block contents %}
{{ header | safe }}
{% for part in parts %}
{{ part.before | safe }}
{% if part.chart %}<div class="chart">{{ embed(roots[part.chart]) }}</div>{% endif %}
{{ part.after | safe }}
{% endfor %}
{% endblock %}
"""

PLAIN = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title><style>{css}</style></head>
<body>
{header}
</body>
</html>
"""


class _Part:
    def __init__(self, before: str = "", chart: str | None = None, after: str = "") -> None:
        self.before, self.chart, self.after = before, chart, after


def _section(title: str, source: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n" + _source(source)


def _source(text: str) -> str:
    return f'<p class="source">Numbers from <code>{html.escape(text)}</code></p>'


def _none(what: str = "Nothing recorded in this period.") -> str:
    return f'<p class="none">{html.escape(what)}</p>'


def _header(got: pictures.Pictures, title: str) -> str:
    options = got.options
    if options.since is None and options.until is None:
        span = "all history"
    else:
        span = (
            f"{options.since.isoformat() if options.since else 'the beginning'} to "
            f"{options.until.isoformat() if options.until else 'the latest'}"
        )
    generated = options.now.astimezone(zoneinfo.ZoneInfo(options.timezone))
    lines = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(span)}, days in {html.escape(options.timezone)}. '
        f"Generated {generated.strftime('%Y-%m-%d %H:%M %Z')} by telemetryctl "
        f"{html.escape(__version__)}.</p>",
    ]
    if got.from_file:
        lines.append(
            '<p class="note">telemetryd was not running: read from the database file, '
            "so events not yet loaded into it are missing.</p>"
        )
    if got.warning:
        lines.append(f'<p class="note">warning: {html.escape(got.warning)}</p>')
    return "\n".join(lines)


def _totals(got: pictures.Pictures) -> str:
    total = got.daily.totals()
    sessions = sum(int(r["sessions"]) for r in got.sessions)
    cost = reports.money(total.cost) + ("+?" if total.unpriced else "")
    figures = [
        ("cost", cost, total.cost),
        ("tokens", reports.number(total.total), total.total),
        ("model requests", reports.number(total.requests), total.requests),
        ("sessions", reports.number(sessions), sessions),
        ("alerts", reports.number(len(got.alerts)), len(got.alerts)),
    ]
    cells = "".join(
        f'<div id="total-{name.replace(" ", "-")}" data-value="{value}">'
        f"<b>{html.escape(text)}</b>{html.escape(name)}</div>"
        for name, text, value in figures
    )
    return f'<div class="totals">{cells}</div>'


def _charts(name: str, data: Any, options: pictures.Options, named: list[str]) -> list[Model]:
    """The charts of one section (a field of :class:`pictures.Pictures`) from its figures;
    none when it has nothing to show. ``named``: the models with a colour of their own."""
    zone = options.timezone
    if name == "daily":
        if not data.rows:
            return []
        return [
            html_charts.per_day("cost-per-day", data, "cost", zone, named),
            html_charts.per_day("tokens-per-day", data, "tokens", zone, named),
        ]
    if name in ("by_project", "by_agent"):
        what, missing = (
            ("project", "(no project)") if name == "by_project" else ("agent", "(no agent type)")
        )
        if not data.rows:
            return []
        return [html_charts.by_value(f"cost-by-{what}", what, data, missing, named)]
    if name == "blocks":
        if not any(not b.gap for b in data.blocks):
            return []
        return [html_charts.blocks_chart(data, zone)]
    if name == "tools":
        return list(html_charts.tool_charts(data))
    if name == "provider_errors":
        return [html_charts.heatmap(data)] if data else []
    if name == "sessions":
        if not data:
            return []
        per_day: dict[str, dict[str, int]] = {}
        for r in data:
            per_day.setdefault(r["day"], {})[r["source"]] = int(r["sessions"])
        return [
            html_charts.per_day_counts(
                "sessions-per-day",
                "Sessions started per day, by source",
                "sessions started",
                zone,
                "source",
                per_day,
            )
        ]
    if name == "alerts":
        if not data:
            return []
        per_day = {}
        for a in data:
            day = pictures._local_day(str(a["timestamp"]), options)
            rule = str(a.get("rule") or "alert")
            per_day.setdefault(day, {})[rule] = per_day.get(day, {}).get(rule, 0) + 1
        return [
            html_charts.per_day_counts(
                "alerts-per-day", "Alerts per day, by rule", "alerts", zone, "rule", per_day
            )
        ]
    if name == "rate_limits":
        return [html_charts.rate_limits(data, zone)] if data else []
    return []  # model_quality: a table


DRAWN = ("daily", "by_project", "by_agent", "blocks", "tools", "provider_errors", "sessions",
         "alerts", "rate_limits")  # fmt: skip


def draw_early(pending: pictures.Pending) -> dict[str, list[Model]]:
    """The charts of each section, drawn as its query ends while the others still run
    (``daily`` first: the other charts colour models as it does). A query that failed,
    or the daemon going away, ends the drawing: :meth:`pictures.Pending.result` says
    why, and :func:`render` draws what is missing."""
    drawn: dict[str, list[Model]] = {}
    try:
        daily = pending.section("daily")
        named = html_charts.top_models(daily)
        drawn["daily"] = _charts("daily", daily, pending.options, named)
        for name in pending.finished():
            if name in DRAWN and name not in drawn:
                drawn[name] = _charts(name, pending.section(name), pending.options, named)
    except TelemetryError:
        pass
    return drawn


def render(
    got: pictures.Pictures,
    title: str = "telemetryd report",
    drawn: dict[str, list[Model]] | None = None,
) -> str:
    """The page, as one string of HTML; ``drawn``: charts :func:`draw_early` drew from
    the same queries."""
    header = _header(got, title)
    if got.empty():
        text = (
            f"{EMPTY_PAGE}: telemetryd holds no model requests, tool calls, errors, "
            "sessions or alerts for this period. Import past sessions (telemetryctl import) "
            "or install the hooks (telemetryctl hooks install claude-code), then make the "
            "report again."
        )
        body = header + f'\n<p class="empty" id="empty">{html.escape(text)}</p>'
        return PLAIN.format(title=html.escape(title), css=CSS, header=body)
    options = got.options
    span = " ".join(options.span_args())
    days = got.days
    charts: list[Model] = []
    parts: list[_Part] = []
    named = html_charts.top_models(got.daily)
    early = drawn or {}

    def add(before: str, chart: Model | None = None, after: str = "") -> None:
        if chart is not None:
            charts.append(chart)
        parts.append(_Part(before, chart.name if chart is not None else None, after))

    def nothing(key: str, what: str = "Nothing recorded in this period.") -> str:
        if key in got.failed:
            text = f"Left out: the query failed: {got.failed[key]}"
            return f'<p class="failed">{html.escape(text)}</p>'
        return _none(what)

    def section(key: str, heading: str, source: str, empty: str, note: str = "") -> None:
        """One section: its charts, else a line saying there is nothing (or why)."""
        found = early[key] if key in early else _charts(key, getattr(got, key), options, named)
        if not found:
            add(_section(heading, source) + nothing(key, empty))
            return
        after = (
            _alerts_table(got.alerts, zoneinfo.ZoneInfo(options.timezone))
            if key == "alerts"
            else ""
        )
        add(_section(heading, source) + note, found[0], after if len(found) == 1 else "")
        for chart in found[1:]:
            add("", chart)

    if not {"daily", "sessions", "alerts"} & set(got.failed):
        add(_totals(got))
    source = f"telemetryctl report daily --json {span}"
    if got.daily.rows:
        cost, tokens = (
            early["daily"] if "daily" in early else _charts("daily", got.daily, options, named)
        )
        add(_section("Cost per day", source), cost)
        add(_section("Tokens per day", source), tokens)
    else:
        add(_section("Cost and tokens per day", source) + nothing("daily"))
    for what, key in (("project", "by_project"), ("agent", "by_agent")):
        source = f"telemetryctl report daily --by {what} --json {span} (summed over the days)"
        section(key, f"Cost by {what}", source, "Nothing recorded in this period.")
    source = f"telemetryctl report blocks --json {span}"
    section("blocks", "5-hour windows", source, "No Claude usage in this period.")
    source = f'telemetryctl query "select * from tool_reliability(days := {days})"'
    section("tools", "Tools: failures and durations", source, "Nothing recorded in this period.")
    source = f'telemetryctl query "select * from provider_reliability(days := {days})"'
    section(
        "provider_errors",
        "Errors by provider and category",
        source,
        "Nothing recorded in this period.",
        '<p class="note">Failed tool results are left out: they are not the provider\'s. '
        "Days are UTC days.</p>",
    )
    source = "the sessions view: sessions per local day of started, by source"
    section("sessions", "Sessions", source, "Nothing recorded in this period.")
    source = f"telemetryctl alerts --json --since {options.since or '1970-01-01'}"
    section("alerts", "Alerts", source, "No alerts in this period.")
    source = f'telemetryctl query "select * from model_quality(days := {days})"'
    if got.model_quality:
        add(_section("Model quality", source) + _quality_table(got.model_quality))
    else:
        add(
            _section("Model quality", source)
            + nothing("model_quality", "No attempts (run events) in this period.")
        )
    source = "metric events claude_code.rate_limits.* (telemetryctl statusline records them)"
    section(
        "rate_limits",
        "Rate-limit use",
        source,
        "Not recorded: the status line records it for Claude.ai subscribers.",
    )
    # One document, its models collected once: Bokeh recomputes them on every root added
    # otherwise (quadratic in the charts).
    document = Document()
    with document.models.freeze():
        for root in charts:
            document.add_root(root)
    with warnings.catch_warnings():
        # A sum past 2**53 (JavaScript's exact integers) is drawn and shown to a
        # browser's precision, 15 digits and more: no warning on stderr for that.
        warnings.filterwarnings("ignore", message="out of range integer")
        return file_html(
            document,
            INLINE,
            title,
            template=TEMPLATE,
            template_variables={"css": CSS, "header": header, "parts": parts},
        )
