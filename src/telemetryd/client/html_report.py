"""The HTML report: one self-contained page of charts (Bokeh) and tables.

:func:`render` turns :class:`telemetryd.client.pictures.Pictures` into one HTML file
that opens offline: BokehJS is inlined (``bokeh.resources.INLINE``, only the core
bundle: no widgets, tables, WebGL or MathJax), the data travels inside the page as
Bokeh's document JSON, and the page refers to nothing outside itself (no CDN, no font,
no image). Each chart is a Bokeh figure with a ``name`` (:data:`CHARTS`), a title, axis
labels with their units and a legend (a colour bar for the heat map); its
``ColumnDataSource`` carries the chart's name with ``-source`` appended, so a test or a
curious user can read the very numbers drawn (``Bokeh.documents[0]
.get_model_by_name("cost-per-day-source").data`` in the browser's console).

Stacked charts have a column per model (``m:<model>``, the 12 most expensive; the rest
summed as ``m:other models``) beside ``total``; a day's stack adds up to its
``total``, which is the report's ``totalCost``. Days are drawn at their date (UTC
midnight on the axis, which Bokeh shows as that date), times at their wall-clock time in
the report's time zone. Numbers in the tables carry their full value in ``data-value``.

Why Bokeh: its inline bundle is 1.3 MB, so a page with years of history stays far under
the 5 MB goal; Plotly's full bundle alone is 4.8 MB (its partial bundles are not in the
Python package), and Altair's inline page needs vl-convert to bundle Vega at run time
(seconds on the first run). docs/html-report.md has the details.

Imported by `telemetryctl report --html` only: never by send, hook, statusline, query or
the daemon (tests/test_html_report.py holds them to it). Needs the ``report`` extra.
"""

from __future__ import annotations

import html
import zoneinfo
from datetime import UTC, date, datetime, timedelta

from bokeh.embed import file_html
from bokeh.models import (
    BasicTicker,
    ColumnDataSource,
    DataRange1d,
    FactorRange,
    HoverTool,
    LinearColorMapper,
    NumeralTickFormatter,
    Range1d,
)
from bokeh.models.annotations import ColorBar, Title
from bokeh.models.axes import Axis
from bokeh.palettes import Category20, YlOrRd9
from bokeh.plotting import figure
from bokeh.resources import INLINE

from telemetryd import __version__
from telemetryd.client import blocks as blocks_api
from telemetryd.client import pictures, reports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bokeh.models import Model, Range
    from bokeh.models.renderers import DataRenderer
    from bokeh.plotting import figure as Figure

# Every chart the page can hold, in page order (a section without data has none).
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
STACKED = 12  # models named in a stack; the rest summed as OTHER
BARS = 20  # projects, agents or tools drawn as bars; the rest summed (or left out)
OTHER = "other models"
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
PALETTE = list(Category20[20])
GREY = "#b0b0b0"
TOOLS = "pan,xwheel_zoom,box_zoom,reset,save"
EMPTY_PAGE = "Nothing recorded yet"


# -- helpers -------------------------------------------------------------------------------


def _day_ms(day: str) -> int:
    """A local date at UTC midnight, in epoch ms: Bokeh shows it as that date."""
    return (date.fromisoformat(day) - date(1970, 1, 1)).days * DAY_MS


def _wall_ms(epoch_ms: int, zone: zoneinfo.ZoneInfo) -> int:
    """The wall-clock time in ``zone`` of an instant, as if it were UTC (Bokeh's axes
    show UTC)."""
    when = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    offset = when.astimezone(zone).utcoffset() or timedelta()
    return epoch_ms + int(offset.total_seconds() * 1000)


def _iso_ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _colors(count: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(count)]


def _figure(
    name: str,
    title: str,
    x: tuple[str, Range, str | None],
    y: tuple[str, Range, str | None],
    *,
    dates: bool = False,
    height: int = 340,
) -> Figure:
    """A chart: ``x`` and ``y`` are (label with unit, range, tick format or None)."""
    plot = figure(
        name=name,
        title=Title(text=title, text_font_size="14px"),
        x_axis_label=x[0],
        y_axis_label=y[0],
        x_range=x[1],
        y_range=y[1],
        x_axis_type="datetime" if dates else "linear",
        height=height,
        sizing_mode="stretch_width",
        tools=TOOLS,
        toolbar_location="above",
    )
    plot.toolbar.logo = None
    for axes, tick in ((plot.below, x[2]), (plot.left, y[2])):
        if tick is not None:
            for axis in axes:
                if isinstance(axis, Axis):
                    axis.formatter = NumeralTickFormatter(format=tick)
                    if tick == COUNT:  # no tick between two whole numbers
                        axis.ticker = BasicTicker(min_interval=1)
    return plot


def _from_zero() -> DataRange1d:
    return DataRange1d(start=0)


def _factors(labels: list[str]) -> FactorRange:
    """Categories top to bottom in the order given."""
    return FactorRange(factors=list(reversed(labels)))


def _span(xs: list[int], pad: int, least: int) -> Range1d:
    """A time range around ``xs`` (epoch ms), at least ``least`` wide: a single day is
    a bar, not the whole plot."""
    low, high = min(xs) - pad, max(xs) + pad
    if high - low < least:
        middle = (low + high) // 2
        low, high = middle - least // 2, middle + least // 2
    return Range1d(start=low, end=high)


MONEY = "$0,0.00"
COUNT = "0,0"
TOKENS = "0.[0]a"


def _legend_outside(plot: Figure) -> None:
    """The legend right of the plot, so that it never covers the data; a click hides a
    series."""
    legend = plot.legend[0]
    legend.click_policy = "hide"
    legend.label_text_font_size = "11px"
    plot.add_layout(legend, "right")


def _label(value: str | None, missing: str) -> str:
    return missing if value is None or value == "" else value


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def _money(usd: float) -> str:
    return reports.money(usd) if abs(usd) >= 0.01 or usd == 0 else f"${usd:.4f}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


# -- stacks by model -----------------------------------------------------------------------


def top_models(report: reports.Report) -> list[str]:
    """The models named in the page's stacks, each with its own colour everywhere: the
    most expensive over the report (then the most tokens, then by name)."""
    summed: dict[str, reports.Usage] = {}
    for row in report.rows:
        for name, used in row.models.items():
            summed.setdefault(name, reports.Usage()).add(used)
    ranked = sorted(summed, key=lambda m: (-summed[m].cost, -summed[m].total, m))
    return ranked if len(ranked) <= STACKED else ranked[: STACKED - 1]


def _amount(usage: reports.Usage, key: str) -> float:
    return usage.cost if key == "cost" else float(usage.total)


def _stack_columns(
    rows: list[dict[str, reports.Usage]], key: str, named: list[str]
) -> tuple[list[str], list[str], dict[str, list[float]]]:
    """Column names, legend labels and values per model (and OTHER) of each row."""
    labels = list(named)
    if any(m not in named for models in rows for m in models):
        labels.append(OTHER)
    columns: dict[str, list[float]] = {f"m:{label}": [] for label in labels}
    for models in rows:
        other = 0.0
        for label in named:
            used = models.get(label)
            columns[f"m:{label}"].append(_amount(used, key) if used else 0)
        for model, used in models.items():
            if model not in named:
                other += _amount(used, key)
        if OTHER in labels:
            columns[f"m:{OTHER}"].append(other)
    return list(columns), labels, columns


def _model_colors(labels: list[str], named: list[str]) -> list[str]:
    return [GREY if label == OTHER else PALETTE[named.index(label) % 20] for label in labels]


def _per_day_chart(
    name: str, report: reports.Report, key: str, zone: str, named: list[str]
) -> Figure:
    rows = report.rows
    names, labels, columns = _stack_columns([r.models for r in rows], key, named)
    unit = "cost (USD)" if key == "cost" else "tokens (input + output + cache)"
    data: dict[str, list[Any]] = {
        "day": [r.key for r in rows],
        "x": [_day_ms(r.key) for r in rows],
        "total": [r.usage.cost if key == "cost" else r.usage.total for r in rows],
        **columns,
    }
    source = ColumnDataSource(data, name=f"{name}-source")
    title = (
        "Cost per day, by model" if key == "cost" else "Tokens per day, by model (all four kinds)"
    )
    plot = _figure(
        name,
        title,
        (f"day ({zone})", _span(data["x"], DAY_MS, 14 * DAY_MS), None),
        (unit, _from_zero(), MONEY if key == "cost" else TOKENS),
        dates=True,
    )
    renderers = plot.vbar_stack(
        names,
        x="x",
        width=DAY_MS * 0.8,
        source=source,
        color=_model_colors(labels, named),
        legend_label=labels,
    )
    fmt = MONEY if key == "cost" else COUNT
    _stack_hover(plot, renderers, names, labels, [("day", "@day")], "model", fmt)
    _legend_outside(plot)
    return plot


def _stack_hover(
    plot: Figure,
    renderers: list[Any],
    columns: list[str],
    labels: list[str],
    lead: list[tuple[str, str]],
    what: str,
    fmt: str,
) -> None:
    """A tooltip per series of a stack: its label, its value and the stack's total."""
    for renderer, column, label in zip(renderers, columns, labels, strict=True):
        plot.add_tools(
            HoverTool(
                renderers=[renderer],
                tooltips=[
                    *lead,
                    (what, label.replace("@", "(at)").replace("$", "(dollar)")),
                    ("value", "@{" + column + "}{" + fmt + "}"),
                    ("total", "@{total}{" + fmt + "}"),
                ],
            )
        )


def _by_chart(
    name: str, what: str, report: reports.Report, missing: str, named: list[str]
) -> Figure:
    """Cost per project (or agent) over the span, stacked by model: horizontal bars."""
    totals = pictures.totals_by(report)
    kept = totals[:BARS]
    rest = totals[BARS:]
    models: dict[str | None, dict[str, reports.Usage]] = {}
    for row in report.rows:
        into = models.setdefault(row.value, {})
        for model, used in row.models.items():
            into.setdefault(model, reports.Usage()).add(used)
    rows = [models[value] for value, _ in kept]
    values = [_label(value, missing) for value, _ in kept]
    costs = [usage.cost for _, usage in kept]
    if rest:
        merged: dict[str, reports.Usage] = {}
        for value, _ in rest:
            for model, used in models[value].items():
                merged.setdefault(model, reports.Usage()).add(used)
        rows.append(merged)
        values.append(f"{len(rest)} more")
        costs.append(sum(usage.cost for _, usage in rest))
    names, labels, columns = _stack_columns(rows, "cost", named)
    shown = [_short(v) for v in values]
    if len(set(shown)) < len(shown):
        shown = values
    data: dict[str, list[Any]] = {what: values, "label": shown, "total": costs, **columns}
    source = ColumnDataSource(data, name=f"{name}-source")
    plot = _figure(
        name,
        f"Cost by {what}, stacked by model",
        ("cost (USD)", _from_zero(), MONEY),
        (what, _factors(shown), None),  # the most expensive on top
        height=max(220, 80 + 26 * len(shown)),
    )
    renderers = plot.hbar_stack(
        names,
        y="label",
        height=0.7,
        source=source,
        color=_model_colors(labels, named),
        legend_label=labels,
    )
    lead = [(what, "@{" + what + "}")]
    _stack_hover(plot, renderers, names, labels, lead, "model", MONEY)
    _legend_outside(plot)
    return plot


# -- the other charts ----------------------------------------------------------------------


def _blocks_chart(report: blocks_api.Report, zone_name: str) -> Figure:
    zone = zoneinfo.ZoneInfo(zone_name)
    used = [b for b in report.blocks if not b.gap]
    middles = [_wall_ms(b.start, zone) + 5 * HOUR_MS // 2 for b in used]
    plot = _figure(
        "blocks",
        "Claude's 5-hour windows: cost of each",
        (f"window ({zone_name})", _span(middles, 5 * HOUR_MS, 2 * DAY_MS), None),
        ("cost (USD)", _from_zero(), MONEY),
        dates=True,
    )

    def source(blocks: list[blocks_api.Block], suffix: str) -> ColumnDataSource:
        data: dict[str, list[Any]] = {
            "id": [b.id for b in blocks],
            "start": [blocks_api.iso(b.start) for b in blocks],
            "x": [_wall_ms(b.start, zone) + 5 * HOUR_MS // 2 for b in blocks],
            "cost": [b.usage.cost for b in blocks],
            "tokens": [b.usage.total for b in blocks],
            "entries": [b.usage.requests for b in blocks],
            "models": [", ".join(b.models) for b in blocks],
        }
        return ColumnDataSource(data, name=f"blocks-{suffix}source")

    finished = [b for b in used if not b.active]
    active = [b for b in used if b.active]
    width = 5 * HOUR_MS * 0.9
    renderers: list[DataRenderer] = []
    if finished:
        renderers.append(
            plot.vbar(
                x="x", top="cost", width=width, source=source(finished, ""),
                color=PALETTE[0], legend_label="finished window",
            )
        )  # fmt: skip
    if active:
        block = active[0]
        projection = block.projection(report.now)
        if projection is not None:
            projected = ColumnDataSource(
                {
                    "x": [_wall_ms(block.start, zone) + 5 * HOUR_MS // 2],
                    "bottom": [block.usage.cost],
                    "top": [projection.total_cost],
                },
                name="blocks-projection-source",
            )
            plot.vbar(
                x="x", bottom="bottom", top="top", width=width, source=projected,
                fill_alpha=0.25, line_dash="dashed", color=PALETTE[2],
                legend_label="projected to the window's end",
            )  # fmt: skip
        renderers.append(
            plot.vbar(
                x="x", top="cost", width=width, source=source(active, "active-"),
                color=PALETTE[2], legend_label="active window",
            )
        )  # fmt: skip
    plot.add_tools(
        HoverTool(
            tooltips=[
                ("start", "@start"),
                ("requests", "@entries{0,0}"),
                ("tokens", "@tokens{0,0}"),
                ("cost", "@cost{$0,0.00}"),
                ("models", "@models"),
            ],
            renderers=renderers,
        )
    )
    _legend_outside(plot)
    return plot


def _tool_charts(tools: list[dict[str, Any]]) -> list[Figure]:
    out = []
    rated = [t for t in tools if t.get("failure_rate") is not None][:BARS]
    if rated:
        data = {
            "tool": [str(t["tool_name"]) for t in rated],
            "rate": [float(t["failure_rate"]) * 100 for t in rated],
            "failures": [int(t["failures"]) for t in rated],
            "results": [int(t["results"]) for t in rated],
            "calls": [int(t["calls"]) for t in rated],
        }
        plot = _figure(
            "tool-failure-rate",
            "Tool failure rate (the most used tools)",
            ("failure rate (% of results)", _from_zero(), None),
            ("tool", _factors([str(t["tool_name"]) for t in rated]), None),
            height=max(220, 80 + 24 * len(rated)),
        )
        bars = plot.hbar(
            y="tool", right="rate", height=0.7, color="#d62728",
            source=ColumnDataSource(data, name="tool-failure-rate-source"),
            legend_label="failures / results",
        )  # fmt: skip
        plot.add_tools(
            HoverTool(
                tooltips=[
                    ("tool", "@tool"),
                    ("failure rate", "@rate{0.0}%"),
                    ("failures", "@failures{0,0} of @results{0,0} results"),
                    ("calls", "@calls{0,0}"),
                ],
                renderers=[bars],
            )
        )
        _legend_outside(plot)
        out.append(plot)
    timed = [t for t in tools if t.get("p95_ms") is not None][:BARS]
    if timed:
        data = {
            "tool": [str(t["tool_name"]) for t in timed],
            "p50": [float(t["p50_ms"]) for t in timed],
            "p95": [float(t["p95_ms"]) for t in timed],
            "calls": [int(t["calls"]) for t in timed],
        }
        plot = _figure(
            "tool-duration",
            "Tool durations: p95 (bar) and p50 (dot)",
            ("duration (ms)", _from_zero(), COUNT),
            ("tool", _factors([str(t["tool_name"]) for t in timed]), None),
            height=max(220, 80 + 24 * len(timed)),
        )
        source = ColumnDataSource(data, name="tool-duration-source")
        bars = plot.hbar(
            y="tool", right="p95", height=0.7, color=PALETTE[0], source=source,
            legend_label="p95",
        )  # fmt: skip
        plot.scatter(x="p50", y="tool", size=9, color=PALETTE[6], source=source, legend_label="p50")
        plot.add_tools(
            HoverTool(
                tooltips=[
                    ("tool", "@tool"),
                    ("p95", "@p95{0,0.0} ms"),
                    ("p50", "@p50{0,0.0} ms"),
                    ("calls", "@calls{0,0}"),
                ],
                renderers=[bars],
            )
        )
        _legend_outside(plot)
        out.append(plot)
    return out


def _heatmap(rows: list[dict[str, Any]]) -> Figure:
    label = [f"{_label(r['provider'], 'unknown provider')} · {r['category']}" for r in rows]
    data: dict[str, list[Any]] = {
        "day": [str(r["day"])[:10] for r in rows],
        "x": [_day_ms(str(r["day"])[:10]) for r in rows],
        "row": label,
        "provider": [_label(r["provider"], "unknown") for r in rows],
        "category": [str(r["category"]) for r in rows],
        "errors": [int(r["errors"]) for r in rows],
        "requests": [int(r["requests"]) for r in rows],
        "per_request": [
            "-" if r["errors_per_request"] is None else f"{float(r['errors_per_request']):.3f}"
            for r in rows
        ],
    }
    factors = sorted(set(label), reverse=True)
    plot = _figure(
        "error-heatmap",
        "Errors per day, by provider and category",
        ("day (UTC)", _span(data["x"], DAY_MS, 7 * DAY_MS), None),
        ("provider · error category", FactorRange(factors=factors), None),
        dates=True,
        height=max(240, 100 + 26 * len(factors)),
    )
    high = max(data["errors"])
    mapper = LinearColorMapper(palette=list(reversed(YlOrRd9)), low=0, high=max(high, 1))
    cells = plot.rect(
        x="x",
        y="row",
        width=DAY_MS * 0.95,
        height=0.9,
        source=ColumnDataSource(data, name="error-heatmap-source"),
        fill_color={"field": "errors", "transform": mapper},
        line_color=None,
    )
    plot.add_tools(
        HoverTool(
            tooltips=[
                ("day", "@day"),
                ("provider", "@provider"),
                ("category", "@category"),
                ("errors", "@errors{0,0}"),
                ("requests", "@requests{0,0}"),
                ("errors per request", "@per_request"),
            ],
            renderers=[cells],
        )
    )
    bar = ColorBar(
        color_mapper=mapper, title="errors per day", width=12, name="error-heatmap-legend"
    )
    plot.add_layout(bar, "right")
    return plot


def _count_chart(
    name: str, title: str, y_label: str, zone: str, what: str, days: dict[str, dict[str, int]]
) -> Figure:
    """Counts per local day, stacked by a label (the largest first)."""
    ordered = sorted(days)
    summed: dict[str, int] = {}
    for counts in days.values():
        for key, n in counts.items():
            summed[key] = summed.get(key, 0) + n
    keys = sorted(summed, key=lambda k: (-summed[k], k))
    columns = {f"k:{k}": [days[d].get(k, 0) for d in ordered] for k in keys}
    data: dict[str, list[Any]] = {
        "day": ordered,
        "x": [_day_ms(d) for d in ordered],
        "total": [sum(days[d].values()) for d in ordered],
        **columns,
    }
    plot = _figure(
        name,
        title,
        (f"day ({zone})", _span(data["x"], DAY_MS, 14 * DAY_MS), None),
        (y_label, _from_zero(), COUNT),
        dates=True,
    )
    renderers = plot.vbar_stack(
        list(columns),
        x="x",
        width=DAY_MS * 0.8,
        source=ColumnDataSource(data, name=f"{name}-source"),
        color=_colors(len(keys)),
        legend_label=keys,
    )
    _stack_hover(plot, renderers, list(columns), keys, [("day", "@day")], what, COUNT)
    _legend_outside(plot)
    return plot


def _rate_limits_chart(rows: list[dict[str, Any]], zone_name: str) -> Figure:
    zone = zoneinfo.ZoneInfo(zone_name)
    xs = [_wall_ms(_iso_ms(str(r["ts"])), zone) for r in rows]
    plot = _figure(
        "rate-limits",
        "Plan rate-limit use (as Claude Code's status line reported it)",
        (f"time ({zone_name})", _span(xs, 10 * 60_000, 6 * HOUR_MS), None),
        ("used (%)", Range1d(start=0, end=105), None),
        dates=True,
    )
    labels = {
        "claude_code.rate_limits.five_hour": ("5-hour limit", PALETTE[0]),
        "claude_code.rate_limits.seven_day": ("7-day limit", PALETTE[2]),
    }
    renderers: list[DataRenderer] = []
    for metric, (label, color) in labels.items():
        points = [r for r in rows if r["name"] == metric]
        if not points:
            continue
        data = {
            "ts": [str(r["ts"]) for r in points],
            "x": [_wall_ms(_iso_ms(str(r["ts"])), zone) for r in points],
            "used": [float(r["value"]) for r in points],
            "resets_at": [str(r["resets_at"] or "-") for r in points],
        }
        key = metric.rsplit(".", 1)[1]
        source = ColumnDataSource(data, name=f"rate-limits-{key}-source")
        plot.step(x="x", y="used", mode="after", source=source, color=color, legend_label=label)
        renderers.append(
            plot.scatter(x="x", y="used", size=6, source=source, color=color, legend_label=label)
        )
    plot.add_tools(
        HoverTool(
            tooltips=[("recorded", "@ts"), ("used", "@used{0.0}%"), ("resets at", "@resets_at")],
            renderers=renderers,
        )
    )
    _legend_outside(plot)
    return plot


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
            _cell(_label(r["model"], "unknown"))
            + _cell(f"{int(r['attempts']):,}", r["attempts"], True)
            + _cell(_percent(r["success_rate"]), r["success_rate"], True)
            + _cell(_money(float(r["avg_cost_usd"] or 0)), r["avg_cost_usd"], True)
            + _cell(f"{float(r['avg_errors'] or 0):.2f}", r["avg_errors"], True)
            + _cell(_percent(r["retry_rate"]), r["retry_rate"], True)
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
            f"{options.until.isoformat() if options.until else 'today'}"
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


def render(got: pictures.Pictures, title: str = "telemetryd report") -> str:
    """The page, as one string of HTML."""
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
    zone = options.timezone
    span = " ".join(options.span_args())
    days = got.days
    charts: list[Model] = []
    parts: list[_Part] = []

    def add(before: str, chart: Model | None = None, after: str = "") -> None:
        if chart is not None:
            charts.append(chart)
        parts.append(_Part(before, chart.name if chart is not None else None, after))

    daily = got.daily
    named = top_models(daily)
    add(_totals(got))
    source = f"telemetryctl report daily --json {span}"
    if daily.rows:
        add(
            _section("Cost per day", source),
            _per_day_chart("cost-per-day", daily, "cost", zone, named),
        )
        add(
            _section("Tokens per day", source),
            _per_day_chart("tokens-per-day", daily, "tokens", zone, named),
        )
    else:
        add(_section("Cost and tokens per day", source) + _none())
    for report, what, missing in (
        (got.by_project, "project", "(no project)"),
        (got.by_agent, "agent", "(no agent type)"),
    ):
        source = f"telemetryctl report daily --by {what} --json {span} (summed over the days)"
        if report.rows:
            add(
                _section(f"Cost by {what}", source),
                _by_chart(f"cost-by-{what}", what, report, missing, named),
            )
        else:
            add(_section(f"Cost by {what}", source) + _none())
    source = f"telemetryctl report blocks --json {span}"
    if any(not b.gap for b in got.blocks.blocks):
        add(_section("5-hour windows", source), _blocks_chart(got.blocks, zone))
    else:
        add(_section("5-hour windows", source) + _none("No Claude usage in this period."))
    source = f'telemetryctl query "select * from tool_reliability(days := {days})"'
    tool_charts = _tool_charts(got.tools)
    if tool_charts:
        add(_section("Tools: failures and durations", source), tool_charts[0])
        for chart in tool_charts[1:]:
            add("", chart)
    else:
        add(_section("Tools: failures and durations", source) + _none())
    source = f'telemetryctl query "select * from provider_reliability(days := {days})"'
    if got.provider_errors:
        add(
            _section("Errors by provider and category", source)
            + '<p class="note">Failed tool results are left out: they are not the provider\'s. '
            "Days are UTC days.</p>",
            _heatmap(got.provider_errors),
        )
    else:
        add(_section("Errors by provider and category", source) + _none())
    source = "the sessions view: sessions per local day of their start, by source"
    if got.sessions:
        per_day: dict[str, dict[str, int]] = {}
        for r in got.sessions:
            per_day.setdefault(r["day"], {})[r["source"]] = int(r["sessions"])
        chart = _count_chart(
            "sessions-per-day",
            "Sessions started per day, by source",
            "sessions started",
            zone,
            "source",
            per_day,
        )
        add(_section("Sessions", source), chart)
    else:
        add(_section("Sessions", source) + _none())
    source = f"telemetryctl alerts --json --since {options.since or '1970-01-01'}"
    if got.alerts:
        tz = zoneinfo.ZoneInfo(zone)
        per_day = {}
        for a in got.alerts:
            day = pictures._local_day(str(a["timestamp"]), options)
            rule = str(a.get("rule") or "alert")
            per_day.setdefault(day, {})[rule] = per_day.get(day, {}).get(rule, 0) + 1
        chart = _count_chart(
            "alerts-per-day", "Alerts per day, by rule", "alerts", zone, "rule", per_day
        )
        add(_section("Alerts", source), chart, _alerts_table(got.alerts, tz))
    else:
        add(_section("Alerts", source) + _none("No alerts in this period."))
    source = f'telemetryctl query "select * from model_quality(days := {days})"'
    if got.model_quality:
        add(_section("Model quality", source) + _quality_table(got.model_quality))
    else:
        add(_section("Model quality", source) + _none("No attempts (run events) in this period."))
    source = "metric events claude_code.rate_limits.* (telemetryctl statusline records them)"
    if got.rate_limits:
        add(_section("Rate-limit use", source), _rate_limits_chart(got.rate_limits, zone))
    else:
        add(
            _section("Rate-limit use", source)
            + _none("Not recorded: the status line records it for Claude.ai subscribers.")
        )
    return file_html(
        charts,
        INLINE,
        title,
        template=TEMPLATE,
        template_variables={"css": CSS, "header": header, "parts": parts},
    )
