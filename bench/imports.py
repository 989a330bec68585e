"""`telemetryctl import` (every agent found) on a tree of every supported agent's files.

    python -m bench --only import            1 GB of big sessions, 9,000 small files
    python -m bench --only import --quick    100 MB, 900 files
    python -m bench --only import --profile  the imports under cProfile, their top functions

The trees come from :mod:`bench.agent_tree` (the fixtures and samples of Claude Code,
Codex, Gemini CLI, Copilot CLI, OpenCode and Amp, repeated with fresh ids and dates,
at each agent's default place under a fake ``HOME``); what each agent's import must
count is known from the tree's build, and checked on every run.

Part 1, the big tree (about 1 GB, most of it in sessions of megabytes): a dry run, then
``runs`` imports (at most 3), each into a fresh daemon: MB/s over the tree's bytes and
the import's peak RSS (its reader processes included: :func:`_run_import`); the daemon
must have journaled every event sent, its database must hold each once, and after a
second import with ``--rescan`` (every file read again) still each once.

Part 2, the small tree (about 9,000 files of single sessions, every agent): imported
into a fresh daemon, then imported again ``runs`` times (at least 5) with nothing new,
the default incremental path (each file's size, mtime and inode against the state of
the last import): whole-process wall time, every agent's files unchanged, 0 added.

Part 3 (Claude Code alone, :func:`generate`): the older figure of ``import
claude-code`` on 100 MB (one 70 MB transcript and 4 MB ones), kept for comparison with
earlier runs. bench/reports.py times the 300 MB import and ``report daily`` against
ccusage.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BenchError, agent_tree, procs
from bench.procs import Telemetryd
from bench.send import telemetryctl

SAMPLE = Path(
    "/work/shared/samples/claude-code/transcripts/spotter_tool_heavy_session_v2.1.38.jsonl"
)
MIXED = {"quick": (100, 900), "full": (1024, 9000)}  # (MB of big sessions, small files)
CLAUDE_ONLY_MB = (70, 30)  # (one big file, the rest)
SMALL_FILE_MB = 4
PROFILED = (
    "import cProfile, sys\n"
    "out = sys.argv[1]\n"
    "sys.argv = ['telemetryctl', *sys.argv[2:]]\n"
    "from telemetryd.client.main import main\n"
    "profile = cProfile.Profile()\n"
    "try:\n"
    "    profile.runcall(main)\n"
    "except SystemExit:\n"
    "    pass\n"
    "finally:\n"
    "    profile.dump_stats(out)\n"
)

Log = Callable[[str], None]


def _cached(env: dict[str, str], workdir: Path) -> dict[str, str]:
    """``env`` with bytecode cached under ``workdir``, as on an installed system (this
    environment may turn caching off: every run would compile every module)."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "import-pycache")
    return env


def _run_import(args: list[str], env: dict[str, str], label: str = "import") -> dict[str, Any]:
    """Run one ``telemetryctl import ...``: wall time, peak RSS (MB) and its JSON summary.

    The peak RSS is the whole import's, its reader processes (client/import_pool.py)
    included: the largest sum of the tree's RSS, sampled every 10 ms, or the largest
    process's own peak (its ``VmHWM``, read with each sample), whichever is larger (a
    sum counts shared pages once per process: an upper bound)."""
    command = [telemetryctl(), "import", *args, "--json"]
    if procs.PROFILE_DIR is not None:
        command = [sys.executable, "-c", PROFILED, str(procs.PROFILE_DIR / f"{label}.prof"),
                   *command[1:]]  # fmt: skip
    out_path = Path(env["TELEMETRYD_HOME"]) / f"{label}.out"
    err_path = Path(env["TELEMETRYD_HOME"]) / f"{label}.err"
    start = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        with procs.TreeSampler(proc.pid, 0.01) as sampler:
            _, status = os.waitpid(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise BenchError(
            f"import {' '.join(args)} exited with {proc.returncode}: {err_path.read_text()[-800:]}"
        )
    return {
        "wall_s": elapsed,
        "peak_rss_mb": max(sampler.largest_hwm_kib, sampler.peak_kib) / 1024,
        "processes": sampler.most_processes,
        "summary": json.loads(out_path.read_bytes()),
    }


def _sent(summaries: dict[str, Any]) -> int:
    return sum(s["sent"] for s in summaries.values())


def _check_delivered(summaries: dict[str, Any], daemon: Telemetryd, what: str) -> None:
    """Every event sent accepted, none rejected, and all of them in the journal."""
    for agent, s in summaries.items():
        if s["accepted"] != s["sent"] or s["rejected"] or s["duplicates"]:
            raise BenchError(
                f"{what}, {agent}: sent {s['sent']}, accepted {s['accepted']}, "
                f"duplicates {s['duplicates']}, rejected {s['rejected']} {s['rejections'][:3]}"
            )
    journaled = daemon.journal_lines()
    if journaled != _sent(summaries):
        raise BenchError(f"{what}: {_sent(summaries)} events sent, {journaled} journaled")


def _check_nothing_added(summaries: dict[str, Any], what: str, files: int | None) -> None:
    added = {a: s["accepted"] for a, s in summaries.items() if s["accepted"]}
    if added:
        raise BenchError(f"{what} added events: {added}")
    if files is not None:
        unchanged = sum(s["files_unchanged"] for s in summaries.values())
        read = sum(s["files"] for s in summaries.values())
        if unchanged != files or read:
            raise BenchError(f"{what}: {read} files read, {unchanged} of {files} unchanged")


def _stored(env: dict[str, str]) -> int:
    """The events in the daemon's database (each id once), after loading the journal.
    (A re-import past the daemon's dedup window, ``ingest.dedup-window``, is journaled
    again, and accepted; the database keeps the first copy of an id.)"""
    sql = "select count(*) as n, count(distinct id) as ids from events"
    argv = [telemetryctl(), "query", "--format", "json", "--timeout", "600", sql]
    got = subprocess.run(argv, env=env, capture_output=True, check=False)
    if got.returncode != 0:
        raise BenchError(f"query: {got.stderr.decode()[-500:]}")
    row = json.loads(got.stdout)[0]
    if row["n"] != row["ids"]:
        raise BenchError(f"{row['n']} events stored, {row['ids']} ids")
    return int(row["n"])


def _per_agent(summaries: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each agent's part of one import: MB, seconds, MB/s, events."""
    out = {}
    for agent, s in summaries.items():
        mb = s["bytes"] / 2**20
        out[agent] = {"mb": mb, "s": s["elapsed_s"], "events": s["sent"] or s["requests"],
                      "mb_per_s": mb / s["elapsed_s"] if s["elapsed_s"] else 0.0}  # fmt: skip
    return out


def run_mixed(workdir: Path, runs: int, total_mb: int, log: Log) -> dict[str, Any]:
    """Part 1: the big tree."""
    home = workdir / f"agents-{total_mb}mb"
    started = time.monotonic()
    built = agent_tree.build(home, total_mb=total_mb)
    mb = built.bytes / 2**20
    log(f"  built {mb:.0f} MB, {built.files:,} files of 6 agents in {home} "
        f"({time.monotonic() - started:.0f} s)")  # fmt: skip
    want = agent_tree.expected(telemetryctl(), built)
    requests = int(sum(w["requests"] for w in want.values()))
    scratch = workdir / "import-dry"
    scratch.mkdir(exist_ok=True)
    dry_env = _cached(agent_tree.clean_env(home, scratch), workdir)
    dry = _run_import(["--dry-run"], dry_env, "import-dry-run")
    agent_tree.check(dry["summary"], want, "dry run")
    imports = []
    for i in range(min(runs, 3)):
        with Telemetryd(label="import") as daemon:
            env = _cached(agent_tree.clean_env(home, daemon.dir), workdir)
            real = _run_import([], env, f"import-mixed-{i}")
            agent_tree.check(real["summary"], want, "import")
            _check_delivered(real["summary"], daemon, "import")
            if i == 0:  # every file read again: the store keeps each event once
                stored = _stored(env)
                if stored != _sent(real["summary"]):
                    raise BenchError(f"{_sent(real['summary'])} events sent, {stored} stored")
                again = _run_import(["--rescan"], env, "import-rescan")
                if _stored(env) != stored:
                    raise BenchError(
                        f"import --rescan: {_stored(env)} events stored, {stored} before"
                    )
            if daemon.stop(timeout=300) != 0:
                raise BenchError(f"telemetryd exited badly:\n{daemon.log()}")
        imports.append(real)
        rate = mb / real["wall_s"]
        events = _sent(real["summary"])
        log(f"  import {mb:.0f} MB: {real['wall_s']:.1f} s, {rate:.0f} MB/s, {events:,} events, "
            f"peak RSS {real['peak_rss_mb']:.0f} MB ({real['processes']} processes)")  # fmt: skip
    agent_tree.remove(home)
    return {
        "input_mb": mb,
        "files": built.files,
        "requests": requests,
        "events": _sent(imports[0]["summary"]),
        "dry_run_s": dry["wall_s"],
        "dry_run_mb_per_s": mb / dry["wall_s"],
        "dry_run_peak_rss_mb": dry["peak_rss_mb"],
        "import_s": [r["wall_s"] for r in imports],
        "import_mb_per_s": [mb / r["wall_s"] for r in imports],
        "import_peak_rss_mb": [r["peak_rss_mb"] for r in imports],
        "rescan_s": again["wall_s"],
        "per_agent": _per_agent(imports[0]["summary"]),
        "dry_run_per_agent": _per_agent(dry["summary"]),
    }


def run_unchanged(workdir: Path, runs: int, total_files: int, log: Log) -> dict[str, Any]:
    """Part 2: the small tree, imported, then again with nothing new."""
    home = workdir / f"agents-{total_files}-files"
    built = agent_tree.build(home, total_files=total_files)
    log(f"  built {built.files:,} files, {built.bytes / 2**20:.0f} MB of 6 agents in {home}")
    want = agent_tree.expected(telemetryctl(), built)
    with Telemetryd(label="import-small") as daemon:
        env = _cached(agent_tree.clean_env(home, daemon.dir), workdir)
        first = _run_import([], env, "import-small")
        agent_tree.check(first["summary"], want, "import")
        _check_delivered(first["summary"], daemon, "import")
        again = []
        for i in range(max(runs, 5)):
            second = _run_import([], env, f"import-unchanged-{i}")
            _check_nothing_added(second["summary"], "import again", built.files)
            again.append(second)
        if daemon.stop(timeout=120) != 0:
            raise BenchError(f"telemetryd exited badly:\n{daemon.log()}")
    agent_tree.remove(home)
    seconds = [r["wall_s"] for r in again]
    log(f"  {built.files:,} files: first import {first['wall_s']:.1f} s, again with nothing "
        f"new {statistics.median(seconds) * 1000:.0f} ms (median of {len(seconds)})")  # fmt: skip
    return {
        "files": built.files,
        "input_mb": built.bytes / 2**20,
        "first_s": first["wall_s"],
        "events": _sent(first["summary"]),
        "unchanged_s": seconds,
        "unchanged_peak_rss_mb": [r["peak_rss_mb"] for r in again],
    }


# -- Claude Code alone (the older figures; bench/reports.py's 300 MB) ------------------------


def _templates() -> list[str]:
    """The sample's lines, each with placeholders for the ids and the time."""
    if SAMPLE.exists():
        lines = SAMPLE.read_text().splitlines()
    else:  # a minimal stand-in: two content blocks of one response, and a user line
        usage = {"input_tokens": 3, "cache_creation_input_tokens": 8490,
                 "cache_read_input_tokens": 18014, "output_tokens": 11}  # fmt: skip
        line = {"type": "assistant", "sessionId": "s", "timestamp": "2026-02-10T22:59:25.207Z",
                "requestId": "req_1", "uuid": "u",
                "message": {"id": "msg_1", "model": "claude-opus-4-6", "usage": usage,
                            "content": [{"type": "text", "text": "x" * 1500}]}}  # fmt: skip
        lines = [json.dumps(line)] * 2 + [json.dumps({"type": "user", "message": "y" * 3000})]
    out = []
    ids: dict[str, str] = {}  # each distinct message / request id -> its placeholder
    for text in lines:
        line = json.loads(text)
        message = line.get("message")
        found = [message.get("id")] if isinstance(message, dict) else []
        for value in [*found, line.get("requestId")]:
            if isinstance(value, str) and value:
                placeholder = ids.setdefault(value, f"{{ID{len(ids)}}}")
                text = text.replace(value, placeholder)
        if line.get("timestamp"):
            text = text.replace(line["timestamp"], "{TS}")
        out.append(text)
    return out


def generate(root: Path, big_mb: int, rest_mb: int) -> dict[str, int]:
    """Claude Code transcripts under ``root`` (a ``projects`` directory): one file of
    ``big_mb`` MB, the rest in 4 MB sessions; their size in bytes and lines."""
    templates = _templates()
    placeholders = (
        sum(t.count("{ID") for t in templates)
        and max(int(part.split("}")[0]) for t in templates for part in t.split("{ID")[1:]) + 1
    )
    root.mkdir(parents=True, exist_ok=True)
    written = lines = 0
    serial = 0

    def fill(path: Path, target: int) -> None:
        nonlocal written, lines, serial
        size = 0
        with open(path, "w") as f:
            while size < target:
                serial += 1
                day = 1 + serial % 28
                ts = f"2026-03-{day:02d}T12:{serial // 60 % 60:02d}:{serial % 60:02d}.000Z"
                chunk = "\n".join(templates).replace("{TS}", ts)
                for k in range(placeholders):
                    chunk = chunk.replace(f"{{ID{k}}}", f"id_{serial:012d}_{k}")
                chunk += "\n"
                f.write(chunk)
                size += len(chunk)
                lines += len(templates)
        written += size

    (root / "big-project").mkdir(exist_ok=True)
    fill(root / "big-project" / "big-session.jsonl", big_mb << 20)
    for i in range(max(1, rest_mb // SMALL_FILE_MB)):
        project = root / f"project-{i % 10}"
        project.mkdir(exist_ok=True)
        fill(project / f"session-{i:04d}.jsonl", SMALL_FILE_MB << 20)
    return {"bytes": written, "lines": lines}


def run_claude(workdir: Path, big_mb: int, rest_mb: int, log: Log) -> dict[str, Any]:
    root = workdir / f"transcripts-{big_mb + rest_mb}mb"
    made = generate(root, big_mb, rest_mb)
    log(f"  generated {made['bytes'] / 2**20:.0f} MB, {made['lines']:,} lines in {root}")
    with Telemetryd(label="import") as daemon:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRYD_")}
        env = _cached({**env, "TELEMETRYD_HOME": str(daemon.dir)}, workdir)
        dry = _run_import(["claude-code", str(root), "--dry-run"], env, "claude-dry-run")
        real = _run_import(["claude-code", str(root)], env, "claude-import")
        summary = real["summary"]
        _check_delivered({"claude-code": summary}, daemon, "import claude-code")
        again = _run_import(["claude-code", str(root), "--rescan"], env, "claude-rescan")
        _check_nothing_added({"claude-code": again["summary"]}, "import claude-code --rescan",
                             None)  # fmt: skip
        if daemon.stop(timeout=300) != 0:
            raise BenchError(f"telemetryd exited badly:\n{daemon.log()}")
    mb = made["bytes"] / 2**20
    row = {
        "input_mb": mb,
        "lines": made["lines"],
        "requests": summary["requests"],
        "dry_run_s": dry["wall_s"],
        "dry_run_mb_per_s": mb / dry["wall_s"],
        "dry_run_lines_per_s": made["lines"] / dry["wall_s"],
        "dry_run_peak_rss_mb": dry["peak_rss_mb"],
        "import_s": real["wall_s"],
        "import_mb_per_s": mb / real["wall_s"],
        "import_lines_per_s": made["lines"] / real["wall_s"],
        "import_events_per_s": summary["sent"] / real["wall_s"],
        "import_peak_rss_mb": real["peak_rss_mb"],
        "rescan_s": again["wall_s"],
    }
    log(
        f"  {mb:.0f} MB: dry run {row['dry_run_mb_per_s']:.0f} MB/s, import "
        f"{row['import_mb_per_s']:.0f} MB/s ({row['import_events_per_s']:,.0f} events/s), "
        f"peak RSS {row['import_peak_rss_mb']:.0f} MB"
    )
    agent_tree.remove(root)
    return row


def run(workdir: Path, runs: int, quick: bool, log: Log) -> dict[str, Any]:
    mode = "quick" if quick else "full"
    total_mb, total_files = MIXED[mode]
    out: dict[str, Any] = {}
    out["unchanged"] = run_unchanged(workdir, runs, total_files, log)
    out["mixed"] = run_mixed(workdir, runs, total_mb, log)
    out["sizes"] = [run_claude(workdir, *CLAUDE_ONLY_MB, log)]
    return out
