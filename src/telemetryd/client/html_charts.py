"""The HTML report's charts (Bokeh figures), one builder per chart.

Each chart is a Bokeh figure with a ``name`` (:data:`CHARTS`), a title, axis labels
with their units and a legend (a colour bar for the heat map); its ``ColumnDataSource``
carries the chart's name with ``-source`` appended, so a test or a curious user can read
the very numbers drawn (``Bokeh.documents[0].get_model_by_name("cost-per-day-source")
.data`` in the browser's console).

Stacked charts have a column per model (``m:<model>``: the 12 most expensive of the
period, :func:`top_models`, each with one colour on every chart; the rest summed as
``m:other models``) beside ``total``, so a day's stack adds up to its ``total``, which is
the report's ``totalCost``. Days are drawn at their date (UTC midnight on the axis,
which Bokeh shows as that date), times at their wall-clock time in the report's time
zone; a short period still gets an axis of a week or two, so one day is a bar, not the
whole plot.

Imported by :mod:`telemetryd.client.html_report` only. Needs the ``report`` extra.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, date, datetime, timedelta

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

from telemetryd.client import blocks as blocks_api
from telemetryd.client import pictures, reports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from bokeh.models import Range
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


def _local(stamp: str, zone: zoneinfo.ZoneInfo) -> str:
    """An RFC 3339 time as people read it in ``zone`` (``-`` when there is none)."""
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return "-"
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M")


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


def or_missing(value: str | None, missing: str) -> str:
    return missing if value is None or value == "" else value


def unique(labels: list[str]) -> list[str]:
    """``labels`` with a repeat numbered (``x (2)``): an axis's categories must differ
    (a project "" and none at all are both "(no project)")."""
    seen: set[str] = set()
    out = []
    for text in labels:
        candidate, n = text, 1
        while candidate in seen:
            n += 1
            candidate = f"{text} ({n})"
        seen.add(candidate)
        out.append(candidate)
    return out


def _short(name: str, width: int = 48) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def money(usd: float) -> str:
    return reports.money(usd) if abs(usd) >= 0.01 or usd == 0 else f"${usd:.4f}"


def percent(share: float | None) -> str:
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


def per_day(name: str, report: reports.Report, key: str, zone: str, named: list[str]) -> Figure:
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


def by_value(
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
    values = [or_missing(value, missing) for value, _ in kept]
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
    values = unique(values)
    shown = [_short(v) for v in values]
    if len(set(shown)) < len(shown):
        shown = values
    raw: list[str | None] = [value for value, _ in kept]
    if rest:
        raw.append(values[-1])
    data: dict[str, list[Any]] = {
        "value": raw,  # as the report's JSON has it (null: none)
        what: values,
        "label": shown,
        "total": costs,
        **columns,
    }
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


def blocks_chart(report: blocks_api.Report, zone_name: str) -> Figure:
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


def tool_charts(tools: list[dict[str, Any]]) -> list[Figure]:
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


def heatmap(rows: list[dict[str, Any]]) -> Figure:
    names = [f"{or_missing(r['provider'], 'unknown provider')} · {r['category']}" for r in rows]
    data: dict[str, list[Any]] = {
        "day": [str(r["day"])[:10] for r in rows],
        "x": [_day_ms(str(r["day"])[:10]) for r in rows],
        "row": names,
        "provider": [or_missing(r["provider"], "unknown") for r in rows],
        "category": [str(r["category"]) for r in rows],
        "errors": [int(r["errors"]) for r in rows],
        "requests": [int(r["requests"]) for r in rows],
        "per_request": [
            "-" if r["errors_per_request"] is None else f"{float(r['errors_per_request']):.3f}"
            for r in rows
        ],
    }
    factors = sorted(set(names), reverse=True)
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


def per_day_counts(
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


def rate_limits(rows: list[dict[str, Any]], zone_name: str) -> Figure:
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
            # (for the hover: the times in the zone of the axis)
            "recorded": [_local(str(r["ts"]), zone) for r in points],
            "resets": [_local(str(r["resets_at"] or ""), zone) for r in points],
        }
        key = metric.rsplit(".", 1)[1]
        source = ColumnDataSource(data, name=f"rate-limits-{key}-source")
        plot.step(x="x", y="used", mode="after", source=source, color=color, legend_label=label)
        renderers.append(
            plot.scatter(x="x", y="used", size=6, source=source, color=color, legend_label=label)
        )
    plot.add_tools(
        HoverTool(
            tooltips=[("recorded", "@recorded"), ("used", "@used{0.0}%"), ("resets at", "@resets")],
            renderers=renderers,
        )
    )
    _legend_outside(plot)
    return plot
