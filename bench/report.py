"""Turn raw runs into figures (medians, ratios, targets) and print them as a table."""

from __future__ import annotations

import io
import pstats
import statistics
from pathlib import Path
from typing import Any

TARGETS = {
    "ingest_vs_rsyslog": (">=", 0.5, "x raw rsyslog"),
    "ingest_vs_rsyslog_json": (">=", 1.0, "x rsyslog+mmjsonparse"),
    "ingest_vs_syslog_ng": (">=", 1.0, "x syslog-ng json-parser"),
    "idle_rss": ("<=", 35, "MB"),
    "send_while_query": ("<=", 1.5, "x without"),
    "cold_query_vs_duckdb": ("<=", 1.5, "x fresh duckdb"),
    "conn_per_event": (">=", 20_000, "ev/s"),  # the process split's goal (was 30k before it)
    "send_vs_pass": ("<=", 2.0, "x python -c pass"),
    "hook_vs_pass": ("<=", 2.0, "x python -c pass"),
    "statusline_vs_pass": ("<=", 2.0, "x python -c pass"),
    "peak_rss": ("<=", 200, "MB"),
    "bulk_materialization": (">=", 800_000, "ev/s"),
    "query_vs_duckdb": ("<=", 0.3, "x fresh duckdb"),
    "report_vs_duckdb": ("<=", 0.3, "x fresh duckdb"),
    "report_vs_ccusage": ("<=", 0.3, "x ccusage daily"),
    "import_and_report_vs_ccusage": ("<=", 0.5, "x ccusage daily"),
    "import_rate": (">=", 150, "MB/s"),
    "import_peak_rss": ("<=", 250, "MB"),
    "import_unchanged": ("<=", 300, "ms"),
    "otlp_protobuf": (">=", 100_000, "rec/s"),
    "otlp_json": (">=", 50_000, "rec/s"),
    "http_hook_p50": ("<=", 2.0, "ms"),
    "http_hook_vs_spawn": (">=", 10, "x faster"),
    "analyzer_on_vs_off": (">=", 0.9, "x analyzer off"),
    "forward_rate": (">=", 50_000, "events/s"),
    "forward_idle_rss": ("<=", 35, "MB"),
    "export_parquet": (">=", 1_000_000, "ev/s"),
    "html_report_time": ("<=", 3000, "ms"),
    "html_report_size": ("<=", 5, "MB"),
    "parity_differences": ("<=", 0, "rows"),
}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _figure(
    name: str,
    values: list[float],
    unit: str,
    *,
    target: str | None = None,
    note: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    figure: dict[str, Any] = {
        "name": name,
        "median": _median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "unit": unit,
        "note": note,
    }
    if target is not None:
        op, goal, goal_unit = TARGETS[target]
        met = figure["median"] >= goal if op == ">=" else figure["median"] <= goal
        figure["target"] = f"{op} {goal:,g} {goal_unit}"
        figure["status"] = "PASS" if met else "MISS"
    figure.update(extra or {})
    return figure


def _cores(runs: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in runs if r.get(key) is not None]
    return f"{_median(values):.2f}" if values else "-"


def _hook_figures(hook: dict[str, Any] | None) -> list[dict[str, Any]]:
    """`telemetryctl hook claude-code` against python -c pass (bench/hook.py)."""
    if not hook:
        return []
    n = hook["iterations"]
    return [
        _figure(f"telemetryctl hook claude-code p50 ({n} runs)", [hook["hook_p50_ms"]], "ms",
                note=f"imports {hook['importtime']['hook_only_total_ms']:.1f} ms beyond python"),
        _figure("telemetryctl hook claude-code p95", [hook["hook_p95_ms"]], "ms",
                note=f"python -c pass p95 {hook['pass_p95_ms']:.1f} ms"),
        _figure("ratio hook p50 / pass p50", [hook["ratio_p50"]], "x", target="hook_vs_pass",
                note=f"pass p50 {hook['pass_p50_ms']:.1f} ms; p95 ratio {hook['ratio_p95']:.2f}"),
        _figure("ratio hook p50 / pass p50, ATS tier 1 metadata in the input",
                [hook["ats_ratio_p50"]], "x", target="hook_vs_pass",
                note=f"p50 {hook['hook_ats_p50_ms']:.1f} ms, p95 {hook['hook_ats_p95_ms']:.1f} ms"),
    ]  # fmt: skip


def _statusline_figures(statusline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """`telemetryctl statusline` against python -c pass, per history size (bench/statusline.py)."""
    if not statusline:
        return []
    out = []
    for events, size in statusline["sizes"].items():
        n = size["iterations"]
        out.append(
            _figure(
                f"statusline p50, {int(events):,} events stored ({n} runs)",
                [size["statusline_p50_ms"]],
                "ms",
                note=f"p95 {size['statusline_p95_ms']:.1f} ms; first totals after a start "
                f"{size['first_totals_ms']:.0f} ms",
            )
        )
        out.append(
            _figure(
                f"ratio statusline p50 / pass p50, {int(events):,} events",
                [size["ratio_p50"]],
                "x",
                target="statusline_vs_pass",
                note=f"pass p50 {size['pass_p50_ms']:.1f} ms",
            )
        )
    return out


def _otlp_figures(otlp: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The HTTP listener: OTLP records/s and the http hook's latency (bench/otlp.py)."""
    if not otlp:
        return []
    shape = f"{otlp['exporters']} exporters, batches of {otlp['batch']}"
    hook = otlp["hook"]
    return [
        _figure(f"OTLP protobuf log records/s ({shape})", otlp["protobuf"], "rec/s",
                target="otlp_protobuf", note=f"{otlp['protobuf_body_bytes']:,} B per batch"),
        _figure(f"OTLP JSON log records/s ({shape})", otlp["json"], "rec/s",
                target="otlp_json", note=f"{otlp['json_body_bytes']:,} B per batch"),
        *(
            _figure(f"OTLP {name}: seconds until the store holds every record", stored, "s",
                    note="after the last answer; `status` only, no flush")
            for name in ("protobuf", "json")
            if (stored := otlp.get(f"{name}_stored_s"))
        ),
        _figure(f"http hook POST p50, keep-alive ({hook['iterations']} posts)",
                [hook["http_p50_ms"]], "ms", target="http_hook_p50",
                note=f"p95 {hook['http_p95_ms']:.2f} ms"),
        _figure("spawned `telemetryctl hook` p50 / http hook p50", [hook["speedup_p50"]],
                "x", target="http_hook_vs_spawn",
                note=f"spawned p50 {hook['spawn_p50_ms']:.1f} ms, same payloads, in turn"),
    ]  # fmt: skip


def _analyzer_figures(analyzer: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Streaming ingest with the analyzer on and off (bench/analyzer.py)."""
    if not analyzer:
        return []
    runs = analyzer["runs"]
    on, off = runs["analyzer_on"], runs["analyzer_off"]
    analyses = _median([r.get("analyses", 0) for r in on])
    return [
        _figure("ingest, 8 clients, analyzer off (baseline)", [r["events_per_s"] for r in off],
                "ev/s", note=f"server {_cores(off, 'server_cpu_cores')} cores"),
        _figure("ingest, 8 clients, analyzer every 1 s", [r["events_per_s"] for r in on],
                "ev/s", note=f"server {_cores(on, 'server_cpu_cores')} cores, "
                f"{analyses:g} analyses during the stream"),
        _figure("ratio analyzer on / off", analyzer["ratios"], "x",
                target="analyzer_on_vs_off", note="per-run pairs, same repetition"),
    ]  # fmt: skip


def _forward_figures(forward: dict[str, Any] | None) -> list[dict[str, Any]]:
    """[forward]: A's journal into B over OTLP/HTTP (bench/forward.py)."""
    if not forward:
        return []
    cpu = (
        f"CPU while forwarding: A {_median(forward['cpu_a']):.0%}, "
        f"B {_median(forward['cpu_b']):.0%} of a core"
    )
    return [
        _figure(f"forwarding to a second telemetryd, {forward['events']:,} events",
                forward["rate"], "events/s", target="forward_rate",
                note=f"{forward['requests']} requests, {forward['body_bytes']:,} B gzipped; {cpu}"),
        _figure("B taking A's requests posted back to back (baseline)", forward["direct"],
                "events/s", note="B's ceiling for the same requests, one at a time"),
        _figure("idle RSS, forwarding on, 5 events forwarded", forward["idle_small_on_mb"],
                "MB", target="forward_idle_rss",
                note=f"forwarding off: {_median(forward['idle_small_off_mb']):.1f} MB"),
        _figure(f"A's idle RSS after forwarding {forward['events']:,} events",
                forward["idle_rss_mb"], "MB",
                note="store worker exited; includes the running totals of that journal"),
    ]  # fmt: skip


def _import_figures(imported: dict[str, Any] | None) -> list[dict[str, Any]]:
    """`telemetryctl import` on trees of every agent's files (bench/imports.py)."""
    out: list[dict[str, Any]] = []
    imported = imported or {}
    mixed = imported.get("mixed")
    if mixed:
        size = f"{mixed['input_mb']:,.0f} MB, {mixed['files']:,} files"
        agents = ", ".join(
            f"{agent} {a['mb']:.0f} MB {a['mb_per_s']:.0f} MB/s"
            for agent, a in mixed["per_agent"].items()
        )
        out.append(
            _figure(
                f"import (every agent) {size}, dry run",
                [mixed["dry_run_mb_per_s"]],
                "MB/s",
                note=f"peak RSS {mixed['dry_run_peak_rss_mb']:.0f} MB",
            )
        )
        out.append(
            _figure(
                f"import (every agent) {size} into the daemon",
                mixed["import_mb_per_s"],
                "MB/s",
                target="import_rate",
                note=f"{mixed['events']:,} events ({mixed['requests']:,} requests), counts "
                f"checked; {agents}; again with --rescan {mixed['rescan_s']:.1f} s, 0 added",
            )
        )
        out.append(
            _figure(
                f"import (every agent) {size}, peak RSS",
                mixed["import_peak_rss_mb"],
                "MB",
                target="import_peak_rss",
                note="the import and its reader processes (summed RSS sampled every 10 ms, "
                "or the largest process's own VmHWM, the larger)",
            )
        )
    unchanged = imported.get("unchanged")
    if unchanged:
        out.append(
            _figure(
                f"import again with nothing new, {unchanged['files']:,} files of every agent",
                [s * 1000 for s in unchanged["unchanged_s"]],
                "ms",
                target="import_unchanged",
                note=f"whole process; first import {unchanged['first_s']:.1f} s "
                f"({unchanged['input_mb']:.0f} MB, {unchanged['events']:,} events); 0 added",
            )
        )
    for row in imported.get("sizes", []):
        size = f"{row['input_mb']:.0f} MB"
        out.append(
            _figure(
                f"import claude-code {size} into the daemon",
                [row["import_mb_per_s"]],
                "MB/s",
                note=f"{row['import_lines_per_s']:,.0f} lines/s, "
                f"{row['import_events_per_s']:,.0f} events/s ({row['requests']:,} requests); "
                f"dry run {row['dry_run_mb_per_s']:.0f} MB/s; peak RSS "
                f"{row['import_peak_rss_mb']:.0f} MB; again with --rescan {row['rescan_s']:.1f} s",
            )
        )
    return out


def figures(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ingest = results.get("ingest")
    if ingest:
        runs = ingest["runs"]
        for name, label in ingest["configs"].items():
            out.append(
                _figure(
                    label,
                    [r["events_per_s"] for r in runs[name]],
                    "ev/s",
                    note=f"server {_cores(runs[name], 'server_cpu_cores')} cores "
                    f"({_median([r['server_cpu_us_per_event'] for r in runs[name]]):.2f} us/ev)"
                    + _daemon_share(runs[name])
                    + f", clients {_cores(runs[name], 'client_cpu_cores')} cores",
                )
            )

        def ratio(a: str, b: str) -> list[float]:
            return [
                x["events_per_s"] / y["events_per_s"] for x, y in zip(runs[a], runs[b], strict=True)
            ]

        baselines = (
            ("rsyslog_8", "raw rsyslog", "ingest_vs_rsyslog"),
            ("rsyslog_json_8", "rsyslog+mmjsonparse", "ingest_vs_rsyslog_json"),
            ("syslog_ng_8", "syslog-ng json-parser", "ingest_vs_syslog_ng"),
        )
        for key, what, target in baselines:
            if key not in runs:
                out.append(
                    {
                        "name": f"ratio telemetryd / {what}",
                        "skipped": ingest["skipped"].get(key, f"{what} skipped"),
                    }
                )
                continue
            note = "per-run pairs, same repetition"
            if runs[key] and "parsed_sample" in runs[key][0]:
                lines = runs[key][0]["output_lines"]
                note += f"; every output line parsed ({lines:,} per run)"
            out.append(
                _figure(
                    f"ratio telemetryd 8 clients / {what}",
                    ratio("td_8", key),
                    "x",
                    target=target,
                    note=note,
                )
            )
        if "rsyslog_8" in runs:
            out.append(
                _figure("ratio telemetryd 1 client / raw rsyslog", ratio("td_1", "rsyslog_8"), "x")
            )
        out.append(
            _figure("ratio telemetryd 8 clients / socat copy", ratio("td_8", "socat_8"), "x")
        )
        out.append(
            _figure(
                "telemetryd 8 clients peak RSS",
                [r["peak_rss_mb"] for r in runs["td_8"]],
                "MB",
            )
        )
    connection = results.get("conn")
    if connection:
        for key, label, target in (
            ("telemetryd", "connection per event", "conn_per_event"),
            ("null", "conn per event, null server (ceiling)", None),
        ):
            runs = connection["runs"][key]
            out.append(
                _figure(
                    label if key == "null" else f"{label}, {connection['clients']} processes",
                    [r["events_per_s"] for r in runs],
                    "ev/s",
                    target=target,
                    note=f"server {_cores(runs, 'server_cpu_cores')} cores "
                    f"({_median([r['server_cpu_us_per_event'] for r in runs]):.0f} us/ev)"
                    + (_daemon_share(runs) if key == "telemetryd" else "")
                    + f", clients {_cores(runs, 'client_cpu_cores')} cores "
                    f"({_median([r['client_cpu_us_per_event'] for r in runs]):.0f} us/ev)",
                )
            )
    sent = results.get("send")
    if sent:
        n = sent["iterations"]
        out.append(_figure(f"telemetryctl send p50 ({n} runs)", [sent["send_p50_ms"]], "ms"))
        out.append(_figure("telemetryctl send p95", [sent["send_p95_ms"]], "ms"))
        out.append(
            _figure(
                "telemetryctl send p50, no bytecode cache",
                [sent["send_nocache_p50_ms"]],
                "ms",
                note=f"p95 {sent['send_nocache_p95_ms']:.1f} ms; PYTHONDONTWRITEBYTECODE=1",
            )
        )
        out.append(_figure("python -c pass p50", [sent["pass_p50_ms"]], "ms"))
        out.append(_figure("python -c pass p95", [sent["pass_p95_ms"]], "ms"))
        out.append(
            _figure(
                "ratio send p50 / pass p50",
                [sent["ratio_p50"]],
                "x",
                target="send_vs_pass",
                note="interleaved runs",
            )
        )
    out.extend(_hook_figures(results.get("hook")))
    out.extend(_statusline_figures(results.get("statusline")))
    out.extend(_otlp_figures(results.get("otlp")))
    out.extend(_analyzer_figures(results.get("analyzer")))
    out.extend(_forward_figures(results.get("forward")))
    out.extend(_import_figures(results.get("import")))
    out.extend(_rss_figures(results.get("rss")))
    out.extend(_busy_figures(results.get("busy")))
    out.extend(_store_figures(results.get("store")))
    out.extend(_query_figures(results.get("query")))
    out.extend(_report_figures(results.get("reports")))
    out.extend(_parity_figures(results.get("parity")))
    out.extend(_export_figures(results.get("export")))
    out.extend(_html_figures(results.get("html")))
    out.extend(_macro_figures(results.get("macros")))
    return out


def _macro_figures(macros: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The analytics macros one at a time (bench/macros.py)."""
    if not macros:
        return []
    out = []
    for events, size in macros["sizes"].items():
        label = f"{int(events) / 1e6:g}M events"
        for name, row in size["macros"].items():
            failed = f"; {row['failed']} of {row['runs']} runs failed: {row['error']}"
            out.append(
                _figure(
                    f"{name}(days := 36525), {label}, alone",
                    row["ms"] or [float("nan")],
                    "ms",
                    note=f"peak RSS {row['peak_rss_mb']:.0f} MB (idle "
                    f"{size['idle_rss_mb']:.0f}), memory-limit {size['memory_limit']}, "
                    f"{row['rows']} rows" + (failed if row["failed"] else ""),
                )
            )
    return out


def _html_figures(html: dict[str, Any] | None) -> list[dict[str, Any]]:
    """`telemetryctl report --html` against `report daily --json` (bench/html.py)."""
    if not html:
        return []
    out = []
    for events, size in html["sizes"].items():
        label = f"{int(events) / 1e6:g}M events"
        out.append(
            _figure(
                f"telemetryctl report --html, {label}, worker warm",
                size["html_ms"],
                "ms",
                target="html_report_time" if int(events) <= 1_000_000 else None,
                note=f"in-process: queries {size['queries_ms']:.0f} ms, drawing "
                f"{size['render_ms']:.0f} ms; {size['days']} days"
                + (
                    f"; left out (query failed): {', '.join(size['left_out'])}"
                    if size.get("left_out")
                    else "; every section"
                ),
            )
        )
        out.append(
            _figure(
                f"telemetryctl report daily --json, {label} (baseline)",
                size["daily_ms"],
                "ms",
                note=f"{size['pairs']} interleaved pairs",
            )
        )
        out.append(
            _figure(
                f"report --html file size, {label}",
                [size["size_mb"]],
                "MB",
                target="html_report_size",
            )
        )
    return out


def _export_figures(export: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Parquet export against a bare DuckDB COPY of the same table (bench/export.py)."""
    if not export:
        return []
    events = export["events"]
    label = f"{events / 1e6:g}M events"
    rss = export.get("peak_rss_mb", {})

    def peak(kind: str) -> str:
        return f"; peak RSS {rss[kind]:.0f} MB" if kind in rss else ""

    out = [
        _figure(
            f"export parquet, {label} (a file per date and source; zstd)",
            [events / s for s in export["export_s"]],
            "ev/s",
            target="export_parquet",
            note=f"{export['files']} files; the store worker's memory limit and threads"
            + peak("export"),
        ),
        _figure(
            f"bare DuckDB COPY events TO one parquet file (zstd), {label}",
            [events / s for s in export["baseline_s"]],
            "ev/s",
            note="same threads, DuckDB's default memory limit (80% of RAM)" + peak("baseline"),
        ),
    ]
    if "limits_s" in export:
        out.append(
            _figure(
                f"bare DuckDB COPY events TO one parquet file (zstd), {label}, "
                "at the worker's limits",
                [events / s for s in export["limits_s"]],
                "ev/s",
                note="the worker's memory limit and threads, the export's writer options"
                + peak("limits"),
            )
        )
    out.append(
        _figure(
            f"export parquet, incremental: {export['incremental_events']:,} new events "
            f"on top of {label}",
            [export["incremental_s"]],
            "s",
            note="reads the new journal lines, joins them with the stored rows",
        )
    )
    return out


def _parity_figures(parity: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows (agent, day, model) whose tokens differ from ccusage 20's (bench/parity.py)."""
    if not parity:
        return []
    name = "import vs ccusage daily, rows (agent, day, model) that differ"
    if "skipped" in parity:
        return [{"name": name, "skipped": parity["skipped"]}]
    agents = parity["agents"]
    rows = sum(a["rows"] for a in agents.values())
    differing = sum(len(a["differences"]) for a in agents.values())
    per_agent = ", ".join(f"{s} {a['matched']}/{a['rows']}" for s, a in agents.items())
    note = f"ccusage {parity['ccusage']}, {parity['files']} files; equal: {per_agent}"
    for agent, found in agents.items():
        lines = found["differences"]
        if lines:  # (the first few; bench/results/latest.json has them all)
            more = f" and {len(lines) - 2} more" if len(lines) > 2 else ""
            note += f"; {agent}: " + "; ".join(lines[:2]) + more
    unexplained = sum(a.get("unexplained", len(a["differences"])) for a in agents.values())
    out = [
        _figure(name, [float(differing)], "rows", target="parity_differences",
                note=note, extra={"rows": rows}),
        _figure("  of them not explained by a documented reading (R19)",
                [float(unexplained)], "rows", target="parity_differences",
                note="bench/parity.py: ccusage keeps the cache writes of Copilot's export"
                " spans in their input"),
    ]  # fmt: skip
    if all("cost_rows" in a for a in agents.values()):
        apart = [f"{agent}: {line}" for agent, a in agents.items() for line in a["costs_apart"]]
        compared = sum(a["cost_rows"] for a in agents.values())
        note = f"{compared - len(apart)} of {compared} within 1%"
        if apart:
            more = f" and {len(apart) - 3} more" if len(apart) > 3 else ""
            note += "; " + "; ".join(apart[:3]) + more + " (README, Prices: why)"
        out.append(_figure("import vs ccusage daily, cost rows more than 1% apart",
                           [float(len(apart))], "rows", note=note))  # fmt: skip
    return out


def _report_figures(reports: dict[str, Any] | None) -> list[dict[str, Any]]:
    """`telemetryctl report daily` against a fresh duckdb process and ccusage
    (bench/reports.py)."""
    if not reports:
        return []
    out = []
    warm = reports["warm"]
    label = f"{warm['events'] / 1e6:g}M events"
    out.append(
        _figure(
            f"telemetryctl report daily --json, {label}, worker warm",
            warm["ctl_ms"],
            "ms",
            note=f"daemon-side {_median(warm['daemon_ms']):.0f} ms; {warm['days']} days",
        )
    )
    out.append(
        _figure(
            f"fresh duckdb process, the report's SQL, {label}",
            warm["fresh_ms"],
            "ms",
            note=f"{warm['sql_rows']:,} rows",
        )
    )
    out.append(
        _figure(
            f"ratio report daily / fresh duckdb, {label}",
            warm["ratios"],
            "x",
            target="report_vs_duckdb",
            note=f"{warm['pairs']} interleaved pairs",
        )
    )
    cc = reports["ccusage"]
    if "skipped" in cc:
        out.append({"name": "report daily vs ccusage daily", "skipped": cc["skipped"]})
        return out
    size = f"{cc['input_mb']:.0f} MB of Claude history"
    diffs = cc["token_diffs"]
    tokens = (
        f"daily tokens equal ({cc['ours_total_tokens']:,})"
        if not diffs
        else f"daily tokens DIFFER on {len(diffs)} counts, e.g. {'; '.join(diffs[:3])} "
        f"(ours/ccusage); totals {cc['ours_total_tokens']:,}/{cc['ccusage_total_tokens']:,}"
    )
    if "first_ms" in cc:
        out.append(
            _figure(
                f"first import claude-code + report daily --json, {size}",
                cc["first_ms"],
                "ms",
                note=f"a fresh daemon each time; the import alone "
                f"{_median(cc['first_import_ms']):,.0f} ms; {cc['requests']:,} requests, "
                f"{cc['events']:,} events, {cc['files']:,} files",
            )
        )
        out.append(
            _figure(
                f"ccusage {cc['ccusage_version']} daily --json --offline, {size}",
                cc["first_ccusage_ms"],
                "ms",
                note="run next to each first import",
            )
        )
        out.append(
            _figure(
                f"ratio first import + report daily / ccusage daily, {size}",
                cc["first_ratios"],
                "x",
                target="import_and_report_vs_ccusage",
                note=f"{cc['pairs']} pairs",
            )
        )
    out.append(
        _figure(
            f"telemetryctl report daily --json, after import, {size}",
            cc["ctl_ms"],
            "ms",
            note=f"{cc['requests']:,} requests, {cc['days']} days",
        )
    )
    out.append(
        _figure(
            f"ccusage {cc['ccusage_version']} daily --json --offline, {size}",
            cc["ccusage_ms"],
            "ms",
            note=f"cost ${cc['ccusage_total_cost']:,.2f} vs ours ${cc['ours_total_cost']:,.2f}",
        )
    )
    out.append(
        _figure(
            f"ratio report daily / ccusage daily, {size}",
            cc["ratios"],
            "x",
            target="report_vs_ccusage",
            note=f"{cc['pairs']} interleaved pairs; {tokens}",
        )
    )
    return out


def _rss_figures(rss: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Idle and flood memory over the daemon's process tree (bench/rss.py)."""
    if not rss:
        return []
    out = []
    idle = rss["idle"]
    last = idle["runs"][-1]
    if idle["worker_split"]:
        waited = _median([r["waited_for_worker_exit_s"] for r in idle["runs"]])
        how = f"after the store worker exited ({' '.join(idle['args'])}; {waited:.1f} s)"
    else:
        how = "worker not split yet: right after one query"
    out.append(
        _figure(
            "daemon idle RSS, after a query",
            [r["rss_mb"] for r in idle["runs"]],
            "MB",
            target="idle_rss",
            note=f"{how}; maps duckdb: {'yes' if last['maps_duckdb'] else 'no'}; "
            f"all processes right after the query "
            f"{_median([r['after_query_tree_rss_mb'] for r in idle['runs']]):.0f} MB; "
            f"at start {_median([r['started_rss_mb'] for r in idle['runs']]):.0f} MB",
        )
    )
    flood = rss["flood"]
    runs = flood["runs"]
    at_peak = max(runs, key=lambda r: r["tree_peak_rss_mb"])["tree_at_peak_mb"]
    parts = " + ".join(f"{mb:.0f}" for mb in sorted(at_peak, reverse=True))
    out.append(
        _figure(
            f"all processes peak RSS, {flood['clients']}-client flood while the store loads",
            [r["tree_peak_rss_mb"] for r in runs],
            "MB",
            target="peak_rss",
            note=f"sum of VmRSS over the process tree every {rss['sample_every_s'] * 1000:.0f} "
            f"ms; at the highest peak {parts} MB; until exit (final load) "
            f"{_median([r['tree_peak_to_exit_rss_mb'] for r in runs]):.0f} MB; daemon VmHWM "
            f"{_median([r['peak_rss_mb'] for r in runs]):.0f} MB; "
            f"{flood['clients']}x{flood['events_per_client']:,} events at "
            f"{_median([r['events_per_s'] for r in runs]):,.0f} ev/s",
        )
    )
    return out


def _busy_figures(busy: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Acknowledged sends while a long query runs (bench/busy.py)."""
    if not busy:
        return []
    seconds = busy["query_seconds"]
    return [
        _figure(
            f"acked send p95 while a {seconds:g} s query runs",
            [r["busy_p95_ms"] for r in busy["rounds"]],
            "ms",
            note=f"p50 {busy['busy_p50_ms']:.1f} ms; {busy['sends']:,} sends in all",
        ),
        _figure(
            "acked send p95 without it",
            [r["quiet_p95_ms"] for r in busy["rounds"]],
            "ms",
            note=f"p50 {busy['quiet_p50_ms']:.1f} ms",
        ),
        _figure(
            "ratio send p95 with / without a long query",
            busy["ratios"],
            "x",
            target="send_while_query",
            note=f"{len(busy['rounds'])} rounds, windows alternating; pooled p95 "
            f"{busy['busy_p95_ms']:.1f} / {busy['quiet_p95_ms']:.1f} ms",
        ),
    ]


def _store_figures(store: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Materialization (bench/store.py)."""
    if not store:
        return []
    n = store["events"]
    out = [
        _figure(
            f"bulk materialization, {n:,} events",
            [store["bulk_events_per_s"]],
            "ev/s",
            target="bulk_materialization",
            note=f"{store['bytes_per_event']} B/event; "
            f"database {store['database_bytes'] / 1e6:.0f} MB",
        ),
        _figure(
            f"steady state, {store['steady_batch']:,}-event loads, in process",
            [store["steady_events_per_s"]],
            "ev/s",
            note=f"median load {store['steady_median_ms']} ms on top of {n:,} events",
        ),
    ]
    ingest = store.get("under_ingest")
    if ingest:
        per_client = ingest["events"] // ingest["clients"]
        out.append(
            _figure(
                f"ingest with materializer, {ingest['clients']}x{per_client:,}",
                [ingest["ingest_events_per_s"]],
                "ev/s",
                note=f"{ingest['materialized_share_at_end']:.0%} in the database when ingest "
                f"ended ({ingest['loads_seen']} loads); "
                f"flush then took {ingest['flush_ms']:.0f} ms",
            )
        )
        out.append(
            _figure(
                "materialized under ingest, first byte to all loaded",
                [ingest["materialized_events_per_s"]],
                "ev/s",
            )
        )
    return out


def _query_figures(query: dict[str, Any] | None) -> list[dict[str, Any]]:
    """`telemetryctl query` against a fresh duckdb process, and freshness (bench/query.py)."""
    if not query:
        return []
    out = []
    for events, size in query["sizes"].items():
        label = f"{int(events) / 1e6:g}M events"
        build = size["build"]
        out.append(
            _figure(
                f"telemetryctl query cost_by_model, {label}",
                size["ctl_ms"],
                "ms",
                note=f"daemon-side {_median(size['daemon_ms']):.0f} ms; {size['rows']} rows",
            )
        )
        out.append(_figure(f"fresh duckdb process, {label}", size["fresh_ms"], "ms"))
        out.append(
            _figure(
                f"ratio query / fresh duckdb, {label}",
                size["ratios"],
                "x",
                target="query_vs_duckdb",
                note=f"{query['pairs']} interleaved pairs",
            )
        )
        if not build["cached"] or int(events) > 1_000_000:
            out.append(
                _figure(
                    f"bulk materialization, {label} (database build)",
                    [build["materialize_events_per_s"]],
                    "ev/s",
                    target="bulk_materialization",
                    note=("cached from " + build["built"]) if build["cached"] else "built now",
                )
            )
    cold = query.get("cold")
    if cold:
        label = f"{cold['events'] / 1e6:g}M events"
        out.append(
            _figure(
                f"telemetryctl query cost_by_model, {label}, store worker not running",
                cold["ctl_ms"],
                "ms",
                note=cold["method"],
            )
        )
        out.append(
            _figure(
                f"ratio cold query / fresh duckdb, {label}",
                cold["ratios"],
                "x",
                target="cold_query_vs_duckdb",
                note=f"{cold['pairs']} alternating pairs; fresh duckdb "
                f"{_median(cold['fresh_ms']):.0f} ms",
            )
        )
    if not query.get("big"):
        out.append({"name": "query at 10M events", "skipped": "opt-in: --big"})
    fresh = query.get("freshness")
    if fresh:
        note = (
            f"first query saw the event {fresh['first_query_saw_it']}/{fresh['sends']} times "
            f"({fresh['events'] / 1e6:g}M-event database)"
        )
        out.append(
            _figure("freshness p50, send exit -> visible", [fresh["p50_ms"]], "ms", note=note)
        )
        out.append(_figure("freshness p95", [fresh["p95_ms"]], "ms"))
    return out


def _number(value: float, unit: str) -> str:
    if unit == "ev/s":
        return f"{value:,.0f}"
    if unit == "x":
        return f"{value:.2f}"
    return f"{value:,.1f}"


def render(results: dict[str, Any]) -> str:
    rows = [("figure", "median", "min..max", "unit", "target", "", "notes")]
    for f in results["figures"]:
        if "skipped" in f:
            rows.append((f["name"], "skipped", "", "", "", "", f["skipped"]))
            continue
        spread = (
            f"{_number(f['min'], f['unit'])}..{_number(f['max'], f['unit'])}" if f["n"] > 1 else ""
        )
        rows.append(
            (
                f["name"],
                _number(f["median"], f["unit"]),
                spread,
                f["unit"],
                f.get("target", ""),
                f.get("status", ""),
                f["note"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    title = f"telemetryd benchmarks ({_context(results)})"
    if results.get("profiled"):
        title += " -- PROFILED: the daemon's figures are slowed down by cProfile"
    lines = ["", title, ""]
    for index, row in enumerate(rows):
        cells = [
            row[0].ljust(widths[0]),
            row[1].rjust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4].ljust(widths[4]),
            row[5].ljust(widths[5]),
            row[6],
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("-" * len(lines[-1]))
    sent = results.get("send")
    if sent:
        imports = sent["importtime"]
        lines += [
            "",
            f"send path imports (python -X importtime, bytecode cached, median of 5): "
            f"{imports['send_total_ms']:.1f} ms total vs {imports['pass_total_ms']:.1f} ms "
            f"for python -c pass; {imports['send_only_total_ms']:.1f} ms in modules only "
            f"send imports. Top (self / cumulative ms):",
        ]
        for item in imports["send_only_top"]:
            lines.append(
                f"  {item['module']:<36} {item['self_ms']:6.2f} {item['cumulative_ms']:7.2f}"
            )
    ingest = results.get("ingest")
    if ingest:
        sizes = ", ".join(f"{k} {v:.0f} B" for k, v in ingest["event_bytes"].items())
        lines += ["", f"bytes per event (incl. newline): {sizes}"]
        runs = ingest["runs"]
        versions = ingest.get("versions", {})
        if versions:
            lines.append(
                "baselines: "
                + "; ".join(f"{name} {version}" for name, version in versions.items())
                + ". The parsing ones write each event back out from its parsed tree "
                "(rsyslog %$!all-json-plain%, syslog-ng format-json); every output line "
                "was decoded and had the payload's type and agent.model."
            )
        python = _median([r["events_per_s"] for r in runs["socat_8"]])
        socat = _median([r["events_per_s"] for r in runs["socat_8_socat"]])
        daemon = _median([r["events_per_s"] for r in runs["td_8"]])
        lines.append(
            f"streaming clients: python raw sockets (sendall of a pre-built mmap'ed buffer). "
            f"Into the socat sink they push {python:,.0f} ev/s vs {socat:,.0f} with socat "
            f"clients, {python / daemon:.0f}x telemetryd's 8-client rate: not the bottleneck."
        )
    connection = results.get("conn")
    if connection:
        us = _median([r["client_cpu_us_per_event"] for r in connection["runs"]["null"]])
        lines.append(
            f"connection per event: the python clients cost ~{us:.0f} us CPU per event "
            f"(measured against the null server); at 30,000 ev/s they alone would use "
            f"{us * 30_000 / 1e6:.2f} of this machine's {results['machine']['cpus']} cores."
        )
    for name, error in results["errors"].items():
        lines += ["", f"FAILED {name}: {error.strip()}"]
    return "\n".join(lines) + "\n"


def _context(results: dict[str, Any]) -> str:
    machine = results["machine"]
    load = ", ".join(f"{x:.2f}" for x in machine["loadavg"])
    return (
        f"{results['runs']} runs, {machine['cpus']} CPUs, load {load} at start, "
        f"git {machine['git'] or '?'}, {results['elapsed_s']:.0f} s"
    )


def profiles(directory: Path, top: int = 15) -> str:
    """The functions each profiled daemon spent most of its own time in."""
    out = []
    for path in sorted(directory.glob("*.prof")):
        buffer = io.StringIO()
        stats = pstats.Stats(str(path), stream=buffer)
        stats.sort_stats("tottime").print_stats(top)
        text = buffer.getvalue()
        body = text[text.find("   ncalls") :] if "   ncalls" in text else text
        out += [
            "",
            f"profile {path.name} (last run; main thread; wall seconds by own time):",
            body.rstrip(),
        ]
    return "\n".join(out) + "\n"


def _daemon_share(runs: list[dict[str, Any]]) -> str:
    """For telemetryd, whose figure covers its process tree: the daemon process's part."""
    if not runs or "daemon_cpu_us_per_event" not in runs[0]:
        return ""
    return (
        f" of which the daemon {_cores(runs, 'daemon_cpu_cores')} cores "
        f"({_median([r['daemon_cpu_us_per_event'] for r in runs]):.2f} us/ev)"
    )
