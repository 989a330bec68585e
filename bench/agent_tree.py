"""A directory tree of every supported agent's files, for the import benchmarks.

Built from the repository's fixtures and the real captured samples, in each agent's
own format and at its default location under a fake ``HOME`` (``telemetryctl import``
with no agent named finds them all there):

==============  ===============================================  ===========================
agent           where (under HOME)                               from
==============  ===============================================  ===========================
claude-code     .claude/projects/<project>/<session>.jsonl,      the spotter tool-heavy and
                ``<session>/subagents/agent-<id>.jsonl``         short sessions, its sub-agent
                                                                 and the sniffly session
                                                                 (samples, real)
codex           .codex/sessions/YYYY/MM/DD/rollout-…-<id>.jsonl  the two real rollouts
gemini          .gemini/tmp/<hash>/chats/session-….json[l]       the real JSONL recording
                                                                 (both parts) and the older
                                                                 single-JSON session
copilot         .copilot/session-state/<id>/events.jsonl,        the TokenStats and workshop
                .copilot/otel/export-N.jsonl                     events, the built OTel export
                                                                 (its torn last line cut)
opencode        .local/share/opencode/opencode.db (``message``   the built rows and the older
                rows), ``storage/message/<ses>/<msg>.json``      message files (the torn one
                                                                 and the db's twin left out)
amp             .local/share/amp/threads/T-<id>.json             the three usage fixtures
==============  ===============================================  ===========================

Each file repeats a template (one sample file, or a set of them) with fresh ids and
moved dates. A template's ids (UUIDs, Claude's ``msg_``/``req_``/``toolu_`` ids,
Copilot's event and span ids, OpenCode's ``msg_``/``ses_`` ids, Amp's thread and
ledger ids, ...) are replaced per copy, keeping their shape: the last 12 characters of
a long id become a hex serial (an id shorter than 16 gets it appended), so every copy
is new data and nothing is merged as a repeat. A session's own id is replaced once
per file, so a file of several copies is one session (a Claude Code session, a resumed
Copilot CLI session). Dates (``YYYY-MM-DD`` before a ``T``, epoch milliseconds and
OpenTelemetry's ``[seconds, nanos]``) move back by whole days, per file.

What the import must count is known without reading the tree: :func:`expected` runs
the importer on one file of each shape with 1 and 2 copies (a dry run), fits
``fixed + copies * per_copy`` to each count and token total, and multiplies out what
:func:`build` wrote.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import BenchError

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SAMPLES = Path("/work/shared/samples")
CLAUDE_SAMPLES = SAMPLES / "claude-code" / "transcripts"
AGENTS = ("claude-code", "codex", "gemini", "copilot", "opencode", "amp")
# Variables that point an agent elsewhere: unset, so HOME's defaults are read.
OVERRIDES = ("CLAUDE_CONFIG_DIR", "GEMINI_DATA_DIR", "COPILOT_HOME", "COPILOT_CONFIG_DIR",
             "COPILOT_OTEL_FILE_EXPORTER_PATH", "OPENCODE_DATA_DIR", "XDG_DATA_HOME",
             "AMP_DATA_DIR", "CODEX_HOME")  # fmt: skip
COUNTS = ("requests", "tool_calls", "tool_results", "prompts", "agents", "malformed", "lines")
TOKENS = ("input", "output", "cache_read", "cache_creation")
DAYS_SPREAD = 120  # files' dates move back by 0..DAYS_SPREAD-1 days

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TIMES = (
    r"(?P<date>(?:19|20)\d\d-\d\d-\d\d)(?=T\d\d[:-]\d\d)"
    r"|(?<![\d.])(?P<ms>1[67]\d{11})(?![\d.])"
    r"|\[(?P<sec>1[67]\d{8}),"
)
# Per agent: the ids to replace (every named group but the times' is an id).
ID_PATTERNS = {
    "claude-code": rf"(?P<uuid>{_UUID})|(?P<cc>\b(?:msg|req|toolu)_[A-Za-z0-9]{{10,}})"
    r'|"agentId":"(?P<agent>[0-9a-f]+)"',
    "codex": rf"(?P<uuid>{_UUID})",
    "gemini": rf"(?P<uuid>{_UUID})",
    "copilot": rf"(?P<uuid>{_UUID})"
    r'|"(?:id|parentId|toolCallId|messageId|sessionId)":"(?P<cp>[^"]+)"'
    r'|"(?:traceId|spanId|parentSpanId)":"(?P<span>[0-9a-f]+)"'
    r'|"gen_ai\.response\.id":"(?P<resp>[^"]+)"',
    "opencode": r"(?P<oc>\b(?:msg|ses)_[A-Za-z0-9]+)",
    "amp": r'"id": "(?P<amp>[^"]+)"',
}


def fresh(original: str, serial: int, index: int) -> str:
    """``original`` made new for copy ``serial`` (``index``: the id's place in its
    template, so two ids of one copy never meet); serial 0 keeps it as it is."""
    if serial == 0:
        return original
    tail = f"{serial:07x}{index:05x}"
    return original[:-12] + tail if len(original) >= 16 else f"{original}-{tail}"


class Template:
    """A text with its ids and dates cut out, to be filled in again per copy."""

    def __init__(self, text: str, agent: str) -> None:
        pattern = re.compile(f"{ID_PATTERNS[agent]}|{_TIMES}")
        self.ids: list[str] = []
        self.dates: list[dt.date] = []
        self.ms: list[int] = []
        self.secs: list[int] = []
        where = {"ids": {}, "dates": {}, "ms": {}, "secs": {}}  # value -> its index
        self.pieces: list[tuple[str, int, int]] = []  # (text before, table, index)
        lists: list[list[Any]] = [self.ids, self.dates, self.ms, self.secs]
        at = 0
        for match in pattern.finditer(text):
            name = next(k for k, v in match.groupdict().items() if v is not None)
            table = {"date": 1, "ms": 2, "sec": 3}.get(name, 0)
            raw = match.group(name)
            value: Any = raw
            if table == 1:
                value = dt.date.fromisoformat(raw)
            elif table >= 2:
                value = int(raw)
            seen = where[("ids", "dates", "ms", "secs")[table]]
            if value not in seen:
                seen[value] = len(lists[table])
                lists[table].append(value)
            start, end = match.span(name)
            self.pieces.append((text[at:start], table, seen[value]))
            at = end
        self.tail = text[at:]

    def render(self, serial: int, days: int, fixed: dict[str, str] | None = None) -> str:
        """One copy: ids new for ``serial`` (``fixed`` ones as given), dates ``days`` back."""
        fixed = fixed or {}
        ids = [fixed.get(o) or fresh(o, serial, i) for i, o in enumerate(self.ids)]
        delta = dt.timedelta(days=-days)
        tables = (
            ids,
            [(d + delta).isoformat() for d in self.dates],
            [str(v - days * 86_400_000) for v in self.ms],
            [str(v - days * 86_400) for v in self.secs],
        )
        parts = [f"{before}{tables[t][i]}" for before, t, i in self.pieces]
        parts.append(self.tail)
        return "".join(parts)


def _read(path: Path) -> str:
    if not path.exists():
        raise BenchError(f"{path} is missing: the import bench builds its tree from it")
    return path.read_text()


def _session_of(text: str) -> str:
    """The Claude Code session id of a transcript."""
    for line in text.splitlines():
        session = json.loads(line).get("sessionId")
        if isinstance(session, str):
            return session
    raise BenchError("a Claude Code sample without sessionId")


# -- the shapes of files -------------------------------------------------------------------


@dataclass
class Shape:
    """One kind of file an agent writes: ``write(home, serial, copies, days)`` writes
    one with ``copies`` copies of its template and returns its size in bytes."""

    agent: str
    name: str
    write: Callable[[Path, int, int, int], int]
    copy_bytes: int  # the size of one copy, about
    max_copies: int = 1  # copies one file may hold (1: one copy a file)


@dataclass
class Built:
    """What :func:`build` wrote: per shape, the files and the copies in each."""

    home: Path
    bytes: int = 0
    files: int = 0
    by_shape: dict[str, list[int]] = field(default_factory=dict)  # shape -> copies per write

    def add(self, shape: str, copies: int, size: int) -> None:
        self.by_shape.setdefault(shape, []).append(copies)
        self.bytes += size


def _write(path: Path, text: str) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode()
    path.write_bytes(data)
    return len(data)


def _claude_shapes() -> list[Shape]:
    heavy_text = _read(CLAUDE_SAMPLES / "spotter_tool_heavy_session_v2.1.38.jsonl")
    short_text = _read(CLAUDE_SAMPLES / "spotter_short_session_v2.1.38.jsonl")
    sniffly_text = _read(CLAUDE_SAMPLES / "sniffly_fed8ce56_session_v1.0.17.jsonl")
    sub_text = _read(CLAUDE_SAMPLES / "spotter_subagent_agent-aac57f5_v2.1.39.jsonl")
    templates = {
        "heavy": (Template(heavy_text, "claude-code"), _session_of(heavy_text)),
        "short": (Template(short_text, "claude-code"), _session_of(short_text)),
        "sniffly": (Template(sniffly_text, "claude-code"), _session_of(sniffly_text)),
    }
    sub, sub_session = Template(sub_text, "claude-code"), _session_of(sub_text)
    sub_agent = json.loads(sub_text.splitlines()[0])["agentId"]

    def main(kind: str, with_agent: bool) -> Callable[[Path, int, int, int], int]:
        template, session = templates[kind]

        def write(home: Path, serial: int, copies: int, days: int) -> int:
            sid = fresh(session, serial, 0xFFFFF)
            project = home / ".claude" / "projects" / f"-home-dev-project-{serial % 40}"
            text = "".join(
                template.render(serial * 64 + k, days, {session: sid}) for k in range(copies)
            )
            size = _write(project / f"{sid}.jsonl", text)
            if with_agent:  # the session's sub-agent, its own file
                agent = f"{serial:07x}"
                fixed = {sub_session: sid, sub_agent: agent}
                size += _write(
                    project / sid / "subagents" / f"agent-{agent}.jsonl",
                    sub.render(serial * 64 + 63, days, fixed),
                )
            return size

        return write

    return [
        Shape("claude-code", "heavy+agent", main("heavy", True), len(heavy_text), 48),
        Shape("claude-code", "heavy", main("heavy", False), len(heavy_text), 48),
        Shape("claude-code", "short", main("short", False), len(short_text), 8),
        Shape("claude-code", "sniffly", main("sniffly", False), len(sniffly_text), 1),
    ]


def _codex_samples() -> list[Path]:
    """The real rollouts: a short one (one turn) and a long one."""
    found = sorted((SAMPLES / "codex").glob("rollout-*.jsonl"), key=lambda p: p.stat().st_size)
    if len(found) < 2:
        raise BenchError(f"{SAMPLES / 'codex'}: the two real rollouts are missing")
    return found[:1] + found[-1:]


def _codex_shapes() -> list[Shape]:
    shapes = []
    for name, path in zip(("short", "long"), _codex_samples(), strict=True):
        template = Template(_read(path), "codex")
        session = path.stem[-36:]

        def write(home: Path, serial: int, copies: int, days: int, t: Template = template,
                  s: str = session) -> int:  # fmt: skip
            sid = fresh(s, serial, 0xFFFFF)
            day = dt.date(2026, 2, 23) - dt.timedelta(days=days)
            name = f"rollout-{day.isoformat()}T20-34-25-{sid}.jsonl"
            where = home / ".codex" / "sessions" / f"{day:%Y/%m/%d}" / name
            return _write(where, t.render(serial, days, {s: sid}))

        shapes.append(Shape("codex", name, write, path.stat().st_size))
    return shapes


def _gemini_shapes() -> list[Shape]:
    folder = FIXTURES / "gemini"
    lines = _read(folder / "vibecodingtracker_session_jsonl.lines-1-7.jsonl") + _read(
        folder / "vibecodingtracker_session_jsonl.lines-9-28.jsonl"
    )
    legacy = _read(folder / "vibecodingtracker_session_legacy-json.json")
    shapes = []
    for name, text, suffix in (("jsonl", lines, "jsonl"), ("legacy", legacy, "json")):
        template = Template(text, "gemini")

        def write(home: Path, serial: int, copies: int, days: int, t: Template = template,
                  sfx: str = suffix) -> int:  # fmt: skip
            chats = home / ".gemini" / "tmp" / f"{serial % 30:064x}" / "chats"
            return _write(chats / f"session-2026-04-23T12-52-{serial:08x}.{sfx}",
                          t.render(serial, days))  # fmt: skip

        shapes.append(Shape("gemini", name, write, len(text)))
    return shapes


def _copilot_shapes() -> list[Shape]:
    folder = FIXTURES / "copilot"
    events = _read(folder / "tokenstats_copilot-events.jsonl") + _read(
        folder / "workshop_copilot-events.jsonl"
    )
    export_lines = _read(folder / "built_otel-export.jsonl").splitlines(keepends=True)
    export = "".join(line for line in export_lines if line.endswith("\n"))  # the torn one cut
    events_t, export_t = Template(events, "copilot"), Template(export, "copilot")

    def session(home: Path, serial: int, copies: int, days: int) -> int:
        sid = fresh("00000000-0000-4000-8000-000000000000", serial, 0xFFFFF)
        text = "".join(events_t.render(serial * 64 + k, days) for k in range(copies))
        return _write(home / ".copilot" / "session-state" / sid / "events.jsonl", text)

    def otel(home: Path, serial: int, copies: int, days: int) -> int:
        text = "".join(export_t.render(serial * 64 + k, days) for k in range(copies))
        return _write(home / ".copilot" / "otel" / f"export-{serial:06d}.jsonl", text)

    return [
        Shape("copilot", "events", session, len(events), 40),
        Shape("copilot", "otel", otel, len(export), 40),
    ]


def _opencode_shapes() -> list[Shape]:
    folder = FIXTURES / "opencode"
    rows = _read(folder / "db_rows.jsonl")
    rows_t = Template(rows, "opencode")
    legacy_dir = folder / "datadir" / "storage" / "message"
    legacy = [
        (p.relative_to(legacy_dir).as_posix(), _read(p))
        for p in sorted(legacy_dir.rglob("*.json"))
        if "Torn" not in p.name and "Current" not in p.parent.name
    ]
    legacy_t = Template("\0".join(f"{name}\0{text}" for name, text in legacy), "opencode")

    def database(home: Path, serial: int, copies: int, days: int) -> int:
        """``copies`` copies of the rows, added to the one opencode.db."""
        path = home / ".local" / "share" / "opencode" / "opencode.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        before = path.stat().st_size if path.exists() else 0
        db = sqlite3.connect(path)
        db.execute(
            "create table if not exists message (id text primary key, session_id text not null,"
            " time_created integer not null, time_updated integer not null, data text not null)"
        )
        values = []
        for k in range(copies):
            for line in rows_t.render(serial * 4096 + k, days).splitlines():
                r = json.loads(line)
                values.append((r["id"], r["session_id"], r["time_created"], r["time_updated"],
                               json.dumps(r["data"])))  # fmt: skip
        db.executemany("insert into message values (?, ?, ?, ?, ?)", values)
        db.commit()
        db.close()
        return path.stat().st_size - before

    def files(home: Path, serial: int, copies: int, days: int) -> int:
        parts = legacy_t.render(serial, days).split("\0")
        base = home / ".local" / "share" / "opencode" / "storage" / "message"
        return sum(_write(base / name, text) for name, text in zip(parts[::2], parts[1::2],
                                                                      strict=True))  # fmt: skip

    return [
        Shape("opencode", "db", database, len(rows), 4096),
        Shape("opencode", "legacy", files, sum(len(t) for _, t in legacy)),
    ]


def _amp_shapes() -> list[Shape]:
    shapes = []
    for name in ("tokenuze_basic", "built_ledger-thread", "built_messages-thread"):
        text = _read(FIXTURES / "amp" / f"{name}.json")
        template = Template(text, "amp")

        def write(home: Path, serial: int, copies: int, days: int, t: Template = template) -> int:
            threads = home / ".local" / "share" / "amp" / "threads"
            return _write(threads / f"T-{serial:08x}-0000-4000-8000-{serial:012x}.json",
                          t.render(serial, days))  # fmt: skip

        shapes.append(Shape("amp", name, write, len(text)))
    return shapes


def shapes() -> dict[str, Shape]:
    found = [*_claude_shapes(), *_codex_shapes(), *_gemini_shapes(), *_copilot_shapes(),
             *_opencode_shapes(), *_amp_shapes()]  # fmt: skip
    return {f"{s.agent}/{s.name}": s for s in found}


# -- building a tree ---------------------------------------------------------------------------

# The share of the bytes per shape in a tree of big sessions (1 GB), and of the files in a
# tree of many small ones (9,000 files).
BIG_MIX = {
    "claude-code/heavy+agent": 0.32, "claude-code/heavy": 0.22, "claude-code/short": 0.06,
    "claude-code/sniffly": 0.02, "codex/short": 0.005, "codex/long": 0.095,
    "gemini/jsonl": 0.06, "gemini/legacy": 0.08, "copilot/events": 0.03, "copilot/otel": 0.03,
    "opencode/db": 0.056, "opencode/legacy": 0.002, "amp/tokenuze_basic": 0.002,
    "amp/built_ledger-thread": 0.006, "amp/built_messages-thread": 0.002,
}  # fmt: skip
SMALL_MIX = {
    "claude-code/heavy+agent": 0.10, "claude-code/heavy": 0.10, "claude-code/short": 0.20,
    "claude-code/sniffly": 0.05, "codex/short": 0.08,
    "codex/long": 0.10, "gemini/jsonl": 0.04, "gemini/legacy": 0.04,
    "copilot/events": 0.08, "copilot/otel": 0.01, "opencode/db": 0.0, "opencode/legacy": 0.10,
    "amp/tokenuze_basic": 0.03, "amp/built_ledger-thread": 0.04,
    "amp/built_messages-thread": 0.03,
}  # fmt: skip


def _files_of(key: str) -> int:
    """Files one write makes, about (a session with its sub-agent: 2; OpenCode's legacy
    sessions: one per message file; the database: one in all)."""
    return {"claude-code/heavy+agent": 2, "opencode/legacy": 6, "opencode/db": 0}.get(key, 1)


def build(home: Path, *, total_mb: float | None = None, total_files: int | None = None,
          only: Iterable[str] | None = None) -> Built:  # fmt: skip
    """A tree under ``home``: about ``total_mb`` MB of big sessions (BIG_MIX), or about
    ``total_files`` files of small ones (SMALL_MIX); ``only``: these agents."""
    every = shapes()
    agents = set(only or AGENTS)
    mix = BIG_MIX if total_mb is not None else SMALL_MIX
    chosen = {k: share for k, share in mix.items() if share and every[k].agent in agents}
    scale = sum(chosen.values())
    built = Built(home)
    serial = 1
    for key, share in chosen.items():
        shape = every[key]
        share /= scale
        if total_mb is not None:
            target = int(total_mb * share * 2**20)
            written = 0
            while written < target:
                copies = max(1, min(shape.max_copies, (target - written) // shape.copy_bytes))
                size = shape.write(home, serial, copies, serial % DAYS_SPREAD)
                built.add(key, copies, size)
                written += size
                serial += 1
        else:
            assert total_files is not None
            for _ in range(max(1, round(total_files * share / _files_of(key)))):
                size = shape.write(home, serial, 1, serial % DAYS_SPREAD)
                built.add(key, 1, size)
                serial += 1
            if key == "opencode/legacy" and "opencode/db" in mix:  # a small database too
                size = every["opencode/db"].write(home, serial, 20, serial % DAYS_SPREAD)
                built.add("opencode/db", 20, size)
                serial += 1
    built.files = sum(len(names) for _, _, names in os.walk(home))
    return built


# -- what the import must find ------------------------------------------------------------------


def clean_env(home: Path, telemetryd_home: Path | None = None) -> dict[str, str]:
    """The environment of an import reading ``home``'s agents' files."""
    env = {k: v for k, v in os.environ.items()
           if k not in OVERRIDES and not k.startswith("TELEMETRYD_")}  # fmt: skip
    env["HOME"] = str(home)
    if telemetryd_home is not None:
        env["TELEMETRYD_HOME"] = str(telemetryd_home)
    return env


def _numbers(summary: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {k: summary[k] for k in COUNTS}
    for name in TOKENS:
        out[name] = sum(t[name] for t in summary["by_model"].values())
    return out


def _dry_run(ctl: str, agent: str, home: Path) -> dict[str, float]:
    scratch = home / "telemetryd"
    got = subprocess.run(
        [ctl, "import", agent, "--dry-run", "--json"],
        env=clean_env(home, scratch),
        capture_output=True,
        check=False,
    )
    if got.returncode != 0:
        raise BenchError(f"dry run of {agent}: {got.stderr.decode()[-500:]}")
    return _numbers(json.loads(got.stdout))


def per_copy(ctl: str, keys: Iterable[str]) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
    """Per shape, ``(fixed, per_copy)`` of each count: one file with 1 and with 2 copies,
    each read alone by a dry run. The copy must count as the sample itself does (serial
    0: its own ids and dates), and hold requests."""
    every = shapes()
    out = {}
    for key in keys:
        shape = every[key]
        found = []
        for serial, copies, days in ((0, 1, 0), (7, 1, 3), (7, 2, 3)):
            with tempfile.TemporaryDirectory(prefix="tdtree-") as scratch:
                home = Path(scratch)
                shape.write(home, serial, copies, days)
                found.append(_dry_run(ctl, shape.agent, home))
        sample, one, two = found
        if one != sample or not sample["requests"]:
            raise BenchError(f"{key}: a copy counts {one}, the sample {sample}")
        out[key] = ({k: 2 * one[k] - two[k] for k in one}, {k: two[k] - one[k] for k in one})
    return out


def expected(ctl: str, built: Built) -> dict[str, dict[str, float]]:
    """Per agent, what importing ``built`` must count (COUNTS and TOKENS)."""
    fits = per_copy(ctl, built.by_shape)
    every = shapes()
    out: dict[str, dict[str, float]] = {}
    for key, files in built.by_shape.items():
        fixed, each = fits[key]
        sums = out.setdefault(every[key].agent, dict.fromkeys(fixed, 0.0))
        for name in sums:
            sums[name] += fixed[name] * len(files) + each[name] * sum(files)
    return out


def check(got: dict[str, Any], want: dict[str, dict[str, float]], what: str) -> None:
    """Raise BenchError when an import's summaries (per agent) differ from ``want``."""
    problems = []
    for agent, numbers in want.items():
        if agent not in got:
            problems.append(f"{agent}: not imported")
            continue
        mine = _numbers(got[agent])
        for name, value in numbers.items():
            if round(mine[name]) != round(value):
                problems.append(f"{agent} {name}: {mine[name]:,.0f}, expected {value:,.0f}")
    if problems:
        raise BenchError(f"{what}: " + "; ".join(problems))


def remove(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
