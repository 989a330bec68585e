"""telemetryd's token counts against ccusage's, agent by agent, on one tree of files.

    python -m bench.parity install   ccusage 20 into bench/.deps/ccusage20 (npm; `make bench-deps`)
    python -m bench.parity           the comparison (also `python -m bench --only parity`)

Issue 11 asks that `telemetryctl import`, then the sums of ``api_requests`` per day and
model, equal ``ccusage daily --json --offline`` and its per-agent commands token for
token. This runs that on a tree of every supported agent's files
(:mod:`bench.agent_tree` at a small size: the repository's fixtures and the captured
samples, in each agent's format and default place under a fake ``HOME``, fresh ids
per copy):

- **telemetryd**: a fresh daemon (:class:`bench.procs.Telemetryd`), ``telemetryctl
  import --settle 0`` (every agent found), then per source, UTC day and model the sums
  of the stored ``api_request`` events' token columns (``telemetryctl query``).
- **ccusage**: ccusage 20 (its Rust build, with a command per agent; ccusage 18, which
  bench/reports.py times, reads Claude Code alone), ``ccusage <agent> daily --json
  --offline --breakdown`` with ``TZ=UTC`` and ``HOME`` the tree.

A row (agent, day, model) matches when its input, cache reads and cache writes are
equal and its output is equal, or equal once the reasoning telemetryd counts in output
and ccusage leaves out is taken away (Gemini CLI's thoughts, OpenCode's reasoning,
Copilot's Gemini rows: README, "Import"). Codex requests without a model are
``unknown`` here and ``gpt-5`` in ccusage (README): compared under ccusage's name. A row
only one side has is a difference. The figure is the rows that differ (target: none);
each difference is listed in the note.

The costs are compared too, per (agent, day, model) (per day for Codex: ccusage gives
no cost per model there): a row whose costs are more than 1% apart, or that only one
side prices, is listed. The issue asks them to agree where both price the model the same
way; where they do not, README's "Prices" says why (long-context tiers, the price at the
request's time, models one source prices differently or not at all), and the note
names each row.

A second figure counts the differences no documented reading explains (target: none).
The one such reading in ccusage 20 that the tree meets is R19's: of a span in Copilot
CLI's OpenTelemetry export, ccusage subtracts only the cache reads from
``gen_ai.usage.input_tokens``, so its input is telemetryd's plus the span's cache
writes, and its cache writes are telemetryd's or fewer (it does not read
``cache_creation_input_tokens``). A row is explained when its other counts are equal
and its input and cache writes differ exactly so (README, "GitHub Copilot CLI").

ccusage 20 ships its binary in per-platform npm packages (``@ccusage/ccusage-linux-x64``):
where npm cannot fetch them, the comparison is skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench import BenchError, agent_tree, json_of, npm_install
from bench.procs import Telemetryd
from bench.send import telemetryctl

CCUSAGE_VERSION = "20.0.24"  # (20.0.26 has no Linux binary published)
CCUSAGE_ROOT = Path(__file__).resolve().parent / ".deps" / "ccusage20"
CCUSAGE = CCUSAGE_ROOT / "node_modules" / ".bin" / "ccusage"
# ccusage's command -> telemetryd's sources (Copilot CLI's session-state files are
# copilot-cli; the spans of its OpenTelemetry export, mapped as the OTLP listener maps
# them, copilot)
AGENTS = {
    "claude": ("claude-code",),
    "codex": ("codex",),
    "gemini": ("gemini-cli",),
    "copilot": ("copilot-cli", "copilot"),
    "opencode": ("opencode",),
    "amp": ("amp",),
}
FILES = 120  # the tree's size (agent_tree's small mix)
TIMEOUT = 300  # seconds for one command

Log = Callable[[str], None]
Counts = tuple[int, int, int, int, int]  # input, output, cache read, cache write, reasoning

_SQL = """
SELECT source, strftime(CAST(ts AS DATE), '%Y-%m-%d') AS day, agent_model AS model,
    sum(tokens_input)::BIGINT AS i, sum(tokens_output)::BIGINT AS o,
    sum(coalesce(tokens_cache_read, 0))::BIGINT AS r,
    sum(coalesce(tokens_cache_creation, 0))::BIGINT AS w,
    sum(coalesce(tokens_reasoning, 0))::BIGINT AS reasoning,
    sum(cost_usd) AS cost, count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced
FROM events WHERE type = 'api_request' AND tokens_source = 'actual'
GROUP BY ALL ORDER BY ALL
"""
COST_APART = 0.01  # costs further apart than this (relative) are listed


def install() -> Path:
    """ccusage 20 into bench/.deps/ccusage20 with npm; its executable."""
    return npm_install(CCUSAGE_ROOT, f"ccusage@{CCUSAGE_VERSION}", CCUSAGE)


def _summed(rows: Iterable[tuple[tuple[str, str], Counts]]) -> dict[tuple[str, str], Counts]:
    """The counts of rows with the same key added up."""
    out: dict[tuple[str, str], Counts] = {}
    for key, counts in rows:
        before = out.get(key)
        out[key] = counts if before is None else tuple(map(sum, zip(before, counts, strict=True)))  # type: ignore[assignment]
    return out


Costs = dict[tuple[str, str], float | None]  # (day, model) -> USD; None: not priced


def _ours(env: dict[str, str]) -> tuple[dict[tuple[str, str, str], Counts], dict[Any, Any]]:
    """The token sums per (source, day, model), and the costs likewise (None: a request
    of it has no price)."""
    counts, costs = {}, {}
    for row in json_of([telemetryctl(), "query", "--format", "json", _SQL], env, TIMEOUT):
        key = (row["source"], row["day"], row["model"])
        counts[key] = (row["i"], row["o"], row["r"], row["w"], row["reasoning"])
        costs[key] = None if row["unpriced"] else row["cost"]
    return counts, costs


def _theirs(command: str, home: Path) -> tuple[dict[tuple[str, str], Counts], Costs]:
    """ccusage's token counts per (day, model), and its costs likewise (for Codex per
    day: the model is ``""``)."""
    env = {**agent_tree.clean_env(home), "TZ": "UTC"}
    argv = [str(CCUSAGE), command, "daily", "--json", "--offline", "--breakdown"]
    out: dict[tuple[str, str], Counts] = {}
    costs: Costs = {}
    for day in json_of(argv, env, TIMEOUT).get("daily", []):
        # (a list of breakdowns, or for Codex a dict by model)
        rows = [(r["modelName"], r) for r in day.get("modelBreakdowns", [])]
        rows += list((day.get("models") or {}).items())
        for model, row in rows:
            out[(day["date"], model)] = (
                row["inputTokens"], row["outputTokens"], row["cacheReadTokens"],
                row["cacheCreationTokens"], 0,
            )  # fmt: skip
            if "cost" in row:
                costs[(day["date"], model)] = row["cost"]
        if "models" in day:
            costs[(day["date"], "")] = day.get("costUSD")
    return out, costs


def compare_costs(ours: Costs, theirs: Costs, codex: bool) -> tuple[int, list[str]]:
    """(rows compared, each whose costs are more than :data:`COST_APART` apart, or
    priced by one side only) of one agent."""
    if codex:  # (ccusage's Codex costs are per day)
        by_day: Costs = {}
        for (day, _), cost in ours.items():
            before = by_day.get((day, ""), 0.0)
            by_day[(day, "")] = None if before is None or cost is None else before + cost
        ours = by_day
    apart = []
    keys = sorted(set(ours) | set(theirs))
    for key in keys:
        mine, other = ours.get(key), theirs.get(key)
        if (
            mine is not None
            and other is not None
            and abs(mine - other) <= COST_APART * max(abs(mine), abs(other))
        ):
            continue
        shown = ["unpriced" if cost is None else f"${cost:.6g}" for cost in (mine, other)]
        apart.append(f"{key[0]} {key[1] or '(the day)'}: telemetryd {shown[0]}, ccusage {shown[1]}")
    return len(keys), apart


def _span_writes_in_input(mine: Counts, other: Counts, span_writes: int) -> bool:
    """Whether a row differs as R19 documents: ccusage's input is telemetryd's plus the
    export's span cache writes, its cache writes telemetryd's less none or some of
    those, the rest equal."""
    i, o, r, w, reasoning = mine
    their_i, their_o, their_r, their_w, _ = other
    return (
        span_writes > 0
        and their_i == i + span_writes
        and w - span_writes <= their_w <= w
        and their_r == r
        and their_o in (o, o - reasoning)
    )


def compare(
    ours: dict[tuple[str, str], Counts],
    theirs: dict[tuple[str, str], Counts],
    codex: bool,
    span_writes: dict[tuple[str, str], int] | None = None,
) -> tuple[int, int, list[str], int]:
    """(rows compared, rows matched, each difference described, differences no
    documented reading explains) of one agent; ``span_writes``: the cache writes of
    Copilot's export spans in each row (:func:`_span_writes_in_input`)."""
    if codex:  # (no model: `unknown` here, `gpt-5` in ccusage)
        ours = _summed(((d, "gpt-5" if m == "unknown" else m), c) for (d, m), c in ours.items())
    keys = sorted(set(ours) | set(theirs))
    matched = unexplained = 0
    differences = []
    for key in keys:
        mine, other = ours.get(key), theirs.get(key)
        if mine is not None and other is not None:
            i, o, r, w, reasoning = mine
            if (i, r, w) == other[:1] + other[2:4] and other[1] in (o, o - reasoning):
                matched += 1
                continue
            writes = (span_writes or {}).get(key, 0)
            if _span_writes_in_input(mine, other, writes):
                differences.append(
                    f"{key[0]} {key[1]}: telemetryd {mine}, ccusage {other}"
                    f" (R19: the spans' {writes} cache writes are input in ccusage)"
                )
                continue
        unexplained += 1
        differences.append(f"{key[0]} {key[1]}: telemetryd {mine}, ccusage {other}")
    return len(keys), matched, differences, unexplained


def run(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    del runs, quick  # (one comparison: counts do not vary)
    try:
        install()
    except (BenchError, subprocess.SubprocessError, OSError) as exc:
        log(f"  skipped: {exc}")
        return {"skipped": f"ccusage {CCUSAGE_VERSION} could not be installed: {exc}"}
    home = workdir / "parity-home"
    built = agent_tree.build(home, total_files=FILES)
    out: dict[str, Any] = {"files": built.files, "ccusage": CCUSAGE_VERSION, "agents": {}}
    with Telemetryd(label="parity") as daemon:
        env = agent_tree.clean_env(home, daemon.dir)
        json_of([telemetryctl(), "import", "--settle", "0", "--json"], env, TIMEOUT)
        ours, our_costs = _ours(env)
    # (the cache writes of Copilot's export spans, per day and model: source `copilot`)
    span_writes = {(d, m): c[3] for (s, d, m), c in ours.items() if s == "copilot"}
    for command, sources in AGENTS.items():
        mine = _summed(((d, m), c) for (s, d, m), c in ours.items() if s in sources)
        their_counts, their_costs = _theirs(command, home)
        rows, matched, differences, unexplained = compare(
            mine, their_counts, command == "codex", span_writes
        )
        costs: Costs = {}
        for (source, day, model), cost in our_costs.items():
            if source in sources:
                key = (day, "gpt-5" if command == "codex" and model == "unknown" else model)
                before = costs.get(key, 0.0)
                costs[key] = None if before is None or cost is None else before + cost
        cost_rows, apart = compare_costs(costs, their_costs, command == "codex")
        out["agents"][command] = {
            "rows": rows, "matched": matched, "differences": differences,
            "unexplained": unexplained, "cost_rows": cost_rows, "costs_apart": apart,
        }  # fmt: skip
        log(f"  {command}: {matched} of {rows} rows (day, model) equal" + "".join(
            f"\n    differs: {line}" for line in differences
        ) + f"; costs within 1%: {cost_rows - len(apart)} of {cost_rows}" + "".join(
            f"\n    cost apart: {line}" for line in apart
        ))  # fmt: skip
    if not any(a["rows"] for a in out["agents"].values()):
        raise BenchError("no rows on either side: the tree was not read")
    return out


def main(argv: list[str]) -> int:
    from bench.__main__ import main as harness

    if argv[:1] == ["install"]:
        # (optional, as ccusage 18 is: without it the comparison is skipped, with why)
        try:
            print(f"ccusage {CCUSAGE_VERSION}: {install()}")
        except (BenchError, OSError, subprocess.SubprocessError) as exc:
            sys.stderr.write(f"ccusage {CCUSAGE_VERSION} not installed ({exc}); parity skipped\n")
        return 0
    return harness(["--only", "parity", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
