"""The analytics macros (docs/analytics.md) against the same figures computed here.

A seeded generator writes tasks, attempts, sessions, model requests, tool uses, errors,
alerts and auto-resumes as journal lines, the store loads them into a real DuckDB file,
and every figure of every macro is compared with the figure this file computes from the
events themselves, following the definitions in docs/analytics.md: never by SQL. The
error classes come from ``errorclass.classify``, the rules' Python side.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, ctl
from telemetryd import errorclass
from telemetryd import events as ev
from telemetryd.store.database import Store

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)

MODELS = {"m-a": "anthropic", "m-b": "openai", "m-c": "google"}
TOOL_NAMES = ("Bash", "Read", "Edit", "WebFetch")
# (message, status) of failed model requests: classified by the rules.
API_ERRORS = (
    ("429 Too Many Requests: rate limit exceeded", 429),
    ("Overloaded", 529),
    ("invalid x-api-key", 401),
    ("Your request was flagged by our content filter", 400),
    ("upstream connect error", 503),
)
# Failed tool results' errors (rules), with some guardrail ones among them.
TOOL_ERRORS = (
    "Permission denied: /etc/shadow",
    "Permission to use Bash with command rm -rf /tmp/x has been denied.",
    "Exit code 1: tests failed",
    "command timed out after 120000 ms",
    "File does not exist: /src/app_17.py",
)
# Error events' producer categories (kept as given, aliases renamed).
PRODUCER_ERRORS = (
    ("authentication_failed", "OAuth token expired"),
    ("permission_denied", "org not allowed"),
    ("rate_limit", "usage limit reached"),
    ("content_policy", "Output blocked by content filtering policy"),
    ("model_error", "stream ended early"),
)


def line(event: ev.Event) -> bytes:
    event.v = 1
    event.received_at = event.ts
    return ev.ENCODER.encode(event) + b"\n"


# -- the events ------------------------------------------------------------------


@dataclass
class World:
    events: list[ev.Event] = field(default_factory=list)
    n: int = 0

    def add(self, event: ev.Event) -> None:
        self.events.append(event)

    def next_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:05d}"


def attempt(
    w: World,
    rnd: random.Random,
    *,
    task: str,
    index: int,
    session: str,
    start: datetime,
    by_task: bool,
) -> None:
    """One attempt: its events, then its run event. ``by_task``: the events name the
    attempt in their envelope; else they carry no attempt id (the session rule)."""
    model = rnd.choice(list(MODELS))
    agent = ev.Agent(model=model, provider=MODELS[model])
    attempt_id = f"{task}-a{index}"
    envelope: dict[str, Any] = {"session_id": session, "source": "kano"}
    if by_task:
        envelope["task"] = ev.Task(id=task, attempt_id=attempt_id, attempt_index=index)
    t = start
    for _ in range(rnd.randint(0, 6)):
        t += timedelta(seconds=rnd.randint(1, 20))
        roll = rnd.random()
        if roll < 0.35:
            failed = rnd.random() < 0.3
            message, status = rnd.choice(API_ERRORS)
            w.add(
                ev.ApiRequest(
                    id=w.next_id("req"),
                    ts=t,
                    agent=agent,
                    tokens=ev.Tokens(source="actual", input=10, output=5),
                    cost_usd=None if rnd.random() < 0.15 else round(rnd.uniform(0.001, 0.4), 4),
                    success=not failed,
                    error=message if failed else None,
                    attrs={"status_code": status} if failed else None,
                    **envelope,
                )
            )
        elif roll < 0.7:
            use_id = w.next_id("use")
            name = rnd.choice(TOOL_NAMES)
            w.add(
                ev.ToolCall(
                    id=w.next_id("call"), ts=t, tool=ev.Tool(name=name, use_id=use_id), **envelope
                )
            )
            if rnd.random() < 0.1:
                continue  # no result yet
            duration = rnd.randint(5, 5000)
            t += timedelta(milliseconds=duration)
            outcome = rnd.random()
            tool = ev.Tool(name=name, use_id=use_id, success=True)
            if outcome < 0.25:
                tool = ev.Tool(
                    name=name, use_id=use_id, success=False, error=rnd.choice(TOOL_ERRORS)
                )
            elif outcome < 0.3:  # an error without a success flag: a failure too
                tool = ev.Tool(name=name, use_id=use_id, error=rnd.choice(TOOL_ERRORS))
            elif outcome < 0.35:  # neither: not a failure
                tool = ev.Tool(name=name, use_id=use_id)
            w.add(
                ev.ToolResult(
                    id=w.next_id("res"), ts=t, tool=tool, duration_ms=duration, **envelope
                )
            )
        elif roll < 0.85:
            category, message = rnd.choice(PRODUCER_ERRORS)
            w.add(
                ev.Error(
                    id=w.next_id("err"),
                    ts=t,
                    message=message,
                    category=category,
                    agent=agent,
                    **envelope,
                )
            )
        elif roll < 0.95:
            action = rnd.choice([None, "", "nudge", "abort"])
            w.add(
                ev.Alert(
                    id=w.next_id("alert"),
                    ts=t,
                    severity="warning",
                    kind="tool_loop",
                    message="the same tool 5 times",
                    attrs=None if action is None else {"action": action},
                    **envelope,
                )
            )
        else:
            w.add(ev.Custom(id=w.next_id("resume"), ts=t, name="auto_resume", **envelope))
    t += timedelta(seconds=rnd.randint(1, 10))
    wall = int((t - start) / timedelta(milliseconds=1))
    run_fields: dict[str, Any] = {
        "attempt_id": attempt_id,
        "attempt_index": index,
        "retry_count": ev.RetryCount(
            same_model=rnd.choice([0, 0, 1, 2]), reroute=rnd.choice([0, 0, 0, 1])
        ),
        "elapsed_ms": ev.Elapsed(wall=wall),
        "tokens": ev.Tokens(source="unknown"),
    }
    run_envelope = dict(envelope, task=ev.Task(id=task, title=f"title of {task}"), agent=agent)
    if rnd.random() < 0.15:  # an earlier record of the same attempt: the later one counts
        w.add(
            ev.Run(
                id=w.next_id("run"),
                ts=t - timedelta(seconds=1),
                outcome="blocked",
                **run_fields,
                **run_envelope,
            )
        )
    w.add(
        ev.Run(
            id=w.next_id("run"),
            ts=t,
            outcome=rnd.choice(["done", "done", "blocked", "redo"]),
            **run_fields,
            **run_envelope,
        )
    )


def world(seed: int = 12) -> World:
    rnd = random.Random(seed)
    w = World()
    for k in range(14):
        task = f"T{k}"
        old = k >= 12  # these tasks' attempts are 10 days old
        start = NOW - (10 * DAY if old else timedelta(hours=rnd.randint(2, 100)))
        for index in range(rnd.choice([1, 1, 2, 3, 4, 5])):
            session = f"s{k}-{rnd.randint(0, 1)}"
            attempt(
                w,
                rnd,
                task=task,
                index=index,
                session=session,
                start=start,
                by_task=rnd.random() < 0.5,
            )
            start += timedelta(minutes=30)
            # Between attempts, in the same session: nobody's but the session's.
            w.add(
                ev.ToolResult(
                    id=w.next_id("res"),
                    ts=start - timedelta(minutes=5),
                    session_id=session,
                    tool=ev.Tool(name="Bash", use_id=w.next_id("use"), success=False, error="boom"),
                    duration_ms=40,
                )
            )
    # An event naming an attempt, in another session and time: it is that attempt's.
    w.add(
        ev.Error(
            id="late-error",
            ts=NOW - timedelta(minutes=1),
            session_id="elsewhere",
            message="Permission denied",
            task=ev.Task(id="T0", attempt_id="T0-a0"),
        )
    )
    # An attempt whose span's ends hold events, with events 1 ms outside on both sides.
    end = NOW - timedelta(hours=3)
    start = end - timedelta(minutes=1)
    for n, (t, cost) in enumerate(
        [
            (start, 1.0),
            (end, 2.0),
            (start - timedelta(milliseconds=1), 4.0),
            (end + timedelta(milliseconds=1), 8.0),
        ]
    ):
        w.add(
            ev.ApiRequest(
                id=f"edge-{n}",
                ts=t,
                session_id="s-edge",
                tokens=ev.Tokens(source="unknown"),
                cost_usd=cost,
            )
        )
    w.add(
        ev.Run(
            id="edge-run",
            ts=end,
            session_id="s-edge",
            task=ev.Task(id="edge"),
            attempt_id="edge-a0",
            attempt_index=0,
            retry_count=ev.RetryCount(),
            elapsed_ms=ev.Elapsed(wall=60_000),
            tokens=ev.Tokens(source="unknown"),
            outcome="done",
        )
    )
    # A tool use without a use id, and a result without a call.
    w.add(ev.ToolCall(id="bare-call", ts=NOW - timedelta(hours=1), tool=ev.Tool(name="Read")))
    w.add(
        ev.ToolResult(
            id="bare-result",
            ts=NOW - timedelta(hours=1),
            tool=ev.Tool(
                name="Read", use_id="orphan", success=False, error="EACCES: permission denied"
            ),
            duration_ms=12,
        )
    )
    return w


# -- the figures, computed from the events -------------------------------------------


def attempt_ids_of(event: ev.Event) -> str | None:
    return event.task.attempt_id if event.task else None


def provider_of(event: ev.Event) -> str | None:
    return event.agent.provider if event.agent else None


def ts_of(event: ev.Event) -> datetime:
    assert event.ts is not None
    return event.ts


@dataclass
class ErrorRow:
    event: ev.Event
    kind: str
    category: str
    fingerprint: str
    normalised: str
    tool_name: str | None


def error_rows(events: list[ev.Event]) -> list[ErrorRow]:
    """The `errors` view's rows (docs/errors.md), from errorclass's Python rules."""
    rows = []
    for e in events:
        if isinstance(e, ev.Error):
            c = errorclass.classify(e.message, kind="error", producer_category=e.category)
            fp = e.fingerprint or errorclass.fingerprint(e.message)
            rows.append(ErrorRow(e, "error", c.category, fp, errorclass.normalise(e.message), None))
        elif isinstance(e, ev.ToolResult) and (
            e.tool.success is False or (e.tool.success is None and e.tool.error is not None)
        ):
            c = errorclass.classify(e.tool.error, kind="tool")
            fp = errorclass.fingerprint(e.tool.error)
            norm = errorclass.normalise(e.tool.error)
            rows.append(ErrorRow(e, "tool", c.category, fp, norm, e.tool.name))
        elif isinstance(e, ev.ApiRequest) and (
            e.success is False or (e.success is None and e.error is not None)
        ):
            status = (e.attrs or {}).get("status_code")
            c = errorclass.classify(e.error, kind="api", status=status)
            fp = errorclass.fingerprint(e.error)
            rows.append(ErrorRow(e, "api", c.category, fp, errorclass.normalise(e.error), None))
    return rows


@dataclass
class Attempt:
    run: ev.Run
    events: list[ev.Event]

    @property
    def started(self) -> datetime:
        return ts_of(self.run) - timedelta(milliseconds=self.run.elapsed_ms.wall)

    @property
    def retried(self) -> bool:
        return self.run.retry_count.same_model + self.run.retry_count.reroute > 0


def attempts(events: list[ev.Event], days: int) -> dict[str, Attempt]:
    cutoff = NOW - days * DAY
    latest: dict[str, ev.Run] = {}
    for e in events:
        if isinstance(e, ev.Run) and ts_of(e) >= cutoff:
            held = latest.get(e.attempt_id)
            if held is None or (ts_of(e), e.id or "") > (ts_of(held), held.id or ""):
                latest[e.attempt_id] = e
    found = {}
    for attempt_id, run in latest.items():
        start = ts_of(run) - timedelta(milliseconds=run.elapsed_ms.wall)
        mine = [
            e
            for e in events
            if not isinstance(e, ev.Run)
            and (
                attempt_ids_of(e) == attempt_id
                or (
                    attempt_ids_of(e) is None
                    and e.session_id == run.session_id
                    and start <= ts_of(e) <= ts_of(run)
                )
            )
        ]
        found[attempt_id] = Attempt(run, mine)
    return found


def attempt_figures(a: Attempt, errors: dict[str, ErrorRow]) -> dict[str, Any]:
    requests = [e for e in a.events if isinstance(e, ev.ApiRequest)]
    mine = [errors[e.id] for e in a.events if e.id in errors]
    alerts = [e for e in a.events if isinstance(e, ev.Alert)]
    return {
        "requests": len(requests),
        "cost_usd": sum(r.cost_usd or 0.0 for r in requests),
        "errors": len(mine),
        "tool_failures": sum(1 for x in mine if x.kind == "tool"),
        "alerts": len(alerts),
        "anomaly_actions": sum(1 for x in alerts if (x.attrs or {}).get("action")),
        "auto_resumes": sum(
            1 for e in a.events if isinstance(e, ev.Custom) and e.name == "auto_resume"
        ),
    }


def quantile(values: list[int], q: float) -> float | None:
    """Linear interpolation between the closest ranks (DuckDB's quantile_cont)."""
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# -- the store -----------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, list[ev.Event]]]:
    tmp = tmp_path_factory.mktemp("analytics")
    w = world()
    journal = tmp / "journal"
    journal.mkdir()
    (journal / "20260301T100000Z-000001.jsonl").write_bytes(b"".join(map(line, w.events)))
    with Store(str(tmp / "telemetry.duckdb")) as store:
        assert store.materialize(str(journal)) == len(w.events)
        yield store, w.events


def rows(store: Store, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with store.cursor() as cur:
        result = cur.execute(sql, params)
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None)


def approx(value: float | None) -> Any:
    return None if value is None else pytest.approx(value)


def test_the_generated_events_cover_every_case(
    loaded: tuple[Store, list[ev.Event]],
) -> None:
    """A guard on the generator: every path of every definition is taken."""
    _, events = loaded
    found = attempts(events, 7)
    errors = {x.event.id: x for x in error_rows(events)}
    figures = [attempt_figures(a, errors) for a in found.values()]
    assert len(found) >= 20
    assert len(attempts(events, 30)) > len(found)  # some are older than 7 days
    assert {a.run.outcome for a in found.values()} == {"done", "blocked", "redo"}
    for name in ("anomaly_actions", "auto_resumes", "tool_failures", "requests"):
        assert any(f[name] for f in figures), name
        assert not all(f[name] for f in figures), name
    assert any(f["alerts"] > f["anomaly_actions"] for f in figures)  # alerts without action
    kinds = {x.category for x in errors.values()}
    assert {"permission", "auth", "content_policy", "rate_limit", "tool_failure"} <= kinds
    assert sum(isinstance(e, ev.Run) for e in events) > len(attempts(events, 100))  # repeats


def test_an_attempt_holds_the_events_of_its_span_and_those_naming_it(
    loaded: tuple[Store, list[ev.Event]],
) -> None:
    """By hand: the span's two ends are in it, 1 ms outside is not; an event naming an
    attempt is its own from another session and a later time."""
    store, _ = loaded
    edge = rows(store, "SELECT * FROM attempts() WHERE attempt_id = 'edge-a0'")
    assert [(r["requests"], r["cost_usd"]) for r in edge] == [(2, 3.0)]
    named = rows(
        store,
        "SELECT attempt_id, matched_by FROM attempt_events() WHERE event_id = 'late-error'",
    )
    assert named == [{"attempt_id": "T0-a0", "matched_by": "task"}]


@pytest.mark.parametrize("days", [7, 30])
def test_attempts_and_their_events(loaded: tuple[Store, list[ev.Event]], days: int) -> None:
    store, events = loaded
    expected = attempts(events, days)
    got = rows(store, "SELECT * FROM attempt_events(days := ?)", [days])
    by_attempt: dict[str, set[str]] = defaultdict(set)
    for row in got:
        if row["matched_by"] != "run":
            by_attempt[row["attempt_id"]].add(row["event_id"])
    assert {a: ids for a, ids in by_attempt.items()} == {
        a: {e.id for e in x.events} for a, x in expected.items() if x.events
    }
    runs = {r["attempt_id"]: r["event_id"] for r in got if r["matched_by"] == "run"}
    assert runs == {a: x.run.id for a, x in expected.items()}

    errors = {x.event.id: x for x in error_rows(events)}
    table = rows(store, "SELECT * FROM attempts(days := ?)", [days])
    assert [r["attempt_id"] for r in table] == [
        a.run.attempt_id
        for a in sorted(
            expected.values(), key=lambda a: (-ts_of(a.run).timestamp(), a.run.attempt_id)
        )
    ]
    for row in table:
        a = expected[row["attempt_id"]]
        run = a.run
        task = run.task or ev.Task()
        agent = run.agent or ev.Agent()
        want = {
            "attempt_id": run.attempt_id,
            "attempt_index": run.attempt_index,
            "task_id": task.id,
            "task_title": task.title,
            "session_id": run.session_id,
            "model": agent.model,
            "provider": agent.provider,
            "started": naive(a.started),
            "ended": naive(ts_of(run)),
            "outcome": run.outcome,
            "outcome_reason": run.outcome_reason,
            "retry_same_model": run.retry_count.same_model,
            "retry_reroute": run.retry_count.reroute,
            **attempt_figures(a, errors),
        }
        want["cost_usd"] = pytest.approx(want["cost_usd"])
        assert row == want


@pytest.mark.parametrize("days", [7, 30])
def test_model_quality(loaded: tuple[Store, list[ev.Event]], days: int) -> None:
    store, events = loaded
    errors = {x.event.id: x for x in error_rows(events)}
    per_model: dict[str | None, list[Attempt]] = defaultdict(list)
    for a in attempts(events, days).values():
        per_model[a.run.agent.model if a.run.agent else None].append(a)
    w_cost, w_errors = 0.7, 0.02
    expected = {}
    for model, group in per_model.items():
        n = len(group)
        figures = [attempt_figures(a, errors) for a in group]
        success = sum(a.run.outcome == "done" for a in group) / n
        cost = sum(f["cost_usd"] for f in figures) / n
        errs = sum(f["errors"] for f in figures) / n
        expected[model] = {
            "model": model,
            "attempts": n,
            "success_rate": approx(success),
            "avg_cost_usd": approx(cost),
            "avg_errors": approx(errs),
            "retry_rate": approx(sum(a.retried for a in group) / n),
            "score": approx(success - cost * w_cost - errs * w_errors),
        }
    got = rows(
        store,
        "SELECT * FROM model_quality(days := ?, cost_weight := ?, error_weight := ?)",
        [days, w_cost, w_errors],
    )
    assert {r["model"]: r for r in got} == expected
    scores = [r["score"] for r in got]
    assert scores == sorted(scores, reverse=True)
    # The default weights (0.1 per dollar, 0.05 per error) are the documented ones.
    default = {
        r["model"]: r["score"] for r in rows(store, "SELECT * FROM model_quality(?)", [days])
    }
    for model, row in expected.items():
        want = row["success_rate"].expected - row["avg_cost_usd"].expected * 0.1
        want -= row["avg_errors"].expected * 0.05
        assert default[model] == pytest.approx(want)


@pytest.mark.parametrize("days", [7, 30])
def test_run_outcomes(loaded: tuple[Store, list[ev.Event]], days: int) -> None:
    store, events = loaded
    per_model: dict[str | None, list[ev.Run]] = defaultdict(list)
    for a in attempts(events, days).values():
        per_model[a.run.agent.model if a.run.agent else None].append(a.run)
    expected = {}
    for model, group in per_model.items():
        first = [r for r in group if r.attempt_index == 0]
        first_shot = [
            r
            for r in first
            if r.outcome == "done" and r.retry_count.same_model + r.retry_count.reroute == 0
        ]
        outcomes = Counter(r.outcome for r in group)
        expected[model] = {
            "model": model,
            "attempts": len(group),
            "first_attempts": len(first),
            "first_shot_successes": len(first_shot),
            "first_shot_rate": approx(rate(len(first_shot), len(first))),
            "retried_same_model": sum(r.retry_count.same_model > 0 for r in group),
            "rerouted": sum(r.retry_count.reroute > 0 for r in group),
            "same_model_retries": sum(r.retry_count.same_model for r in group),
            "reroutes": sum(r.retry_count.reroute for r in group),
            "done": outcomes["done"],
            "blocked": outcomes["blocked"],
            "redo": outcomes["redo"],
        }
    got = rows(store, "SELECT * FROM run_outcomes(days := ?)", [days])
    assert {r["model"]: r for r in got} == expected
    assert sum(r["attempts"] for r in got) == len(attempts(events, days))


@pytest.mark.parametrize(
    "days, thresholds", [(7, (3, 3, 3)), (30, (3, 3, 3)), (30, (2, 1, 2)), (7, (99, 99, 99))]
)
def test_task_risk(
    loaded: tuple[Store, list[ev.Event]], days: int, thresholds: tuple[int, int, int]
) -> None:
    store, events = loaded
    min_attempts, min_tool_failures, min_repeats = thresholds
    errors = {x.event.id: x for x in error_rows(events)}
    tasks: dict[str, list[Attempt]] = defaultdict(list)
    for a in attempts(events, days).values():
        if a.run.task and a.run.task.id:
            tasks[a.run.task.id].append(a)
    expected = []
    for task, group in tasks.items():
        categories = Counter(
            errors[e.id].category for a in group for e in a.events if e.id in errors
        )
        ranked = sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))
        figures = [attempt_figures(a, errors) for a in group]
        tool_failures = sum(f["tool_failures"] for f in figures)
        top = ranked[0] if ranked else (None, 0)
        reasons = [
            name
            for name, met in (
                ("attempts", len(group) >= min_attempts),
                ("tool_failures", tool_failures >= min_tool_failures),
                ("repeated_errors", top[1] >= min_repeats),
            )
            if met
        ]
        if not reasons:
            continue
        outcomes = Counter(a.run.outcome for a in group)
        latest = max(group, key=lambda a: ts_of(a.run))
        assert latest.run.task is not None
        expected.append(
            {
                "task_id": task,
                "task_title": latest.run.task.title,
                "attempts": len(group),
                "done": outcomes["done"],
                "blocked": outcomes["blocked"],
                "redo": outcomes["redo"],
                "tool_failures": tool_failures,
                "errors": sum(f["errors"] for f in figures),
                "top_category": top[0],
                "top_category_errors": top[1],
                "repeated_categories": [c for c, n in ranked if n >= min_repeats],
                "reasons": ",".join(reasons),
            }
        )
    expected.sort(
        key=lambda r: (
            -len(r["reasons"].split(",")),
            -r["attempts"],
            -r["tool_failures"],
            -r["errors"],
            r["task_id"],
        )
    )
    got = rows(store, "SELECT * FROM task_risk(?, ?, ?, ?)", [days, *thresholds])
    assert got == expected
    if thresholds == (99, 99, 99):
        assert got == []
    elif days == 30:
        assert got  # the data has risky tasks


@pytest.mark.parametrize("days", [7, 30])
def test_provider_reliability(loaded: tuple[Store, list[ev.Event]], days: int) -> None:
    store, events = loaded
    cutoff = NOW - days * DAY
    errors: Counter[tuple[Any, ...]] = Counter(
        (ts_of(x.event).date(), provider_of(x.event), x.category)
        for x in error_rows(events)
        if x.kind != "tool" and ts_of(x.event) >= cutoff
    )
    requests: Counter[tuple[Any, ...]] = Counter(
        (ts_of(e).date(), provider_of(e))
        for e in events
        if isinstance(e, ev.ApiRequest) and ts_of(e) >= cutoff
    )
    expected = [
        {
            "day": day,
            "provider": provider,
            "category": category,
            "errors": n,
            "requests": requests[(day, provider)],
            "errors_per_request": approx(rate(n, requests[(day, provider)])),
        }
        for (day, provider, category), n in errors.items()
    ]
    expected.sort(
        key=lambda r: (r["day"], r["provider"] is None, r["provider"] or "", r["category"])
    )
    got = rows(store, "SELECT * FROM provider_reliability(days := ?)", [days])
    assert got == expected
    assert {r["provider"] for r in got} >= {"anthropic", "openai", None}


@pytest.mark.parametrize("days", [0, 7, 30])  # (0: no attempt, both rows still)
def test_intervention_effectiveness(loaded: tuple[Store, list[ev.Event]], days: int) -> None:
    store, events = loaded
    errors = {x.event.id: x for x in error_rows(events)}
    found = [(a, attempt_figures(a, errors)) for a in attempts(events, days).values()]
    expected = []
    for intervention, key in (
        ("anomaly_action", "anomaly_actions"),
        ("auto_resume", "auto_resumes"),
    ):
        with_ = [a for a, f in found if f[key] > 0]
        without = [a for a, f in found if f[key] == 0]
        done_with = sum(a.run.outcome == "done" for a in with_)
        done_without = sum(a.run.outcome == "done" for a in without)
        r_with, r_without = rate(done_with, len(with_)), rate(done_without, len(without))
        expected.append(
            {
                "intervention": intervention,
                "attempts_with": len(with_),
                "done_with": done_with,
                "success_rate_with": approx(r_with),
                "attempts_without": len(without),
                "done_without": done_without,
                "success_rate_without": approx(r_without),
                "difference": approx(
                    None if r_with is None or r_without is None else r_with - r_without
                ),
            }
        )
    got = rows(store, "SELECT * FROM intervention_effectiveness(days := ?)", [days])
    assert got == expected


@pytest.mark.parametrize("days", [7, 30])
def test_guardrail_gaps(loaded: tuple[Store, list[ev.Event]], days: int) -> None:
    store, events = loaded
    cutoff = NOW - days * DAY
    clusters: dict[tuple[str, str], list[ErrorRow]] = defaultdict(list)
    for x in error_rows(events):
        if x.category in ("permission", "auth", "content_policy") and ts_of(x.event) >= cutoff:
            clusters[(x.category, x.fingerprint)].append(x)
    expected = []
    for (category, fp), group in clusters.items():
        times = [ts_of(x.event) for x in group]
        earliest = min(group, key=lambda x: ts_of(x.event))
        expected.append(
            {
                "category": category,
                "fingerprint": fp,
                "errors": len(group),
                "sessions": len({x.event.session_id for x in group} - {None}),
                "first_seen": naive(min(times)),
                "last_seen": naive(max(times)),
                "tools": sorted({x.tool_name for x in group if x.tool_name}),
                "example": earliest.normalised,
            }
        )
    expected.sort(key=lambda r: (-r["errors"], r["category"], r["fingerprint"]))
    got = rows(store, "SELECT * FROM guardrail_gaps(days := ?)", [days])
    assert got == expected
    assert {r["category"] for r in got} == {"permission", "auth", "content_policy"}


@pytest.mark.parametrize("days", [7, 30])
def test_tool_reliability(loaded: tuple[Store, list[ev.Event]], days: int) -> None:
    store, events = loaded
    cutoff = NOW - days * DAY
    calls: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in events:
        if isinstance(e, (ev.ToolCall, ev.ToolResult)):
            key = (e.session_id, e.tool.use_id) if e.tool.use_id else (e.id,)
            use = calls.setdefault(key, {"name": e.tool.name})
            use["call" if isinstance(e, ev.ToolCall) else "result"] = e
    per_tool: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for use in calls.values():
        result = use.get("result")
        call = use.get("call")
        if call is not None:
            started = ts_of(call)
        else:
            started = ts_of(result) - timedelta(milliseconds=result.duration_ms or 0)
        if started >= cutoff:
            per_tool[use["name"]].append(use)
    expected = []
    for name, uses in per_tool.items():
        results = [u["result"] for u in uses if "result" in u]
        failures = [
            r
            for r in results
            if r.tool.success is False or (r.tool.success is None and r.tool.error is not None)
        ]
        durations = [r.duration_ms for r in results]
        expected.append(
            {
                "tool_name": name,
                "calls": len(uses),
                "results": len(results),
                "failures": len(failures),
                "failure_rate": approx(rate(len(failures), len(results))),
                "p50_ms": approx(quantile(durations, 0.5)),
                "p95_ms": approx(quantile(durations, 0.95)),
            }
        )
    expected.sort(key=lambda r: (-r["calls"], r["tool_name"]))
    got = rows(store, "SELECT * FROM tool_reliability(days := ?)", [days])
    assert got == expected


def test_quantile_matches_duckdb_on_a_known_case() -> None:
    """The reference above is linear interpolation: p95 of 1..20 is 19.05."""
    assert quantile(list(range(1, 21)), 0.95) == pytest.approx(19.05)
    assert quantile([10, 30], 0.5) == 20


def small_store(tmp_path: Path, events: list[ev.Event]) -> Store:
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "20260301T100000Z-000001.jsonl").write_bytes(b"".join(map(line, events)))
    store = Store(str(tmp_path / "telemetry.duckdb"))
    assert store.materialize(str(journal)) == len(events)
    return store


def test_tool_reliability_at_equal_times_and_without_a_latest_duration(tmp_path: Path) -> None:
    """By hand (docs/analytics.md): of a use's results at the same time the larger
    duration and success over failure count; a latest result without a duration or a
    success flag leaves the earlier result's; of a call and a result at the same time
    under two names, the name first in sort order."""
    t0 = NOW - timedelta(hours=2)
    t1, t2 = t0 + timedelta(seconds=1), t0 + timedelta(seconds=2)

    def tool(name: str, use: str, **kw: Any) -> ev.Tool:
        return ev.Tool(name=name, use_id=use, **kw)

    events: list[ev.Event] = [
        ev.ToolCall(id="c1", ts=t0, session_id="s", tool=tool("Bash", "u1")),
        ev.ToolResult(
            id="r1a", ts=t1, session_id="s", tool=tool("Bash", "u1", success=False), duration_ms=100
        ),
        ev.ToolResult(
            id="r1b", ts=t1, session_id="s", tool=tool("Bash", "u1", success=True), duration_ms=300
        ),
        ev.ToolCall(id="c2", ts=t0, session_id="s", tool=tool("Bash", "u2")),
        ev.ToolResult(
            id="r2a", ts=t1, session_id="s", tool=tool("Bash", "u2", success=False), duration_ms=50
        ),
        ev.ToolResult(id="r2b", ts=t2, session_id="s", tool=tool("Bash", "u2")),
        ev.ToolCall(id="c3", ts=t0, session_id="s", tool=tool("Read", "u3")),
        ev.ToolResult(
            id="r3", ts=t0, session_id="s", tool=tool("Grep", "u3", success=True), duration_ms=10
        ),
    ]
    with small_store(tmp_path, events) as store:
        got = rows(store, "SELECT * FROM tool_reliability(days := 1)")
    # u1: success (the tie's true), 300 ms; u2: failed (its one flag), 50 ms; u3: Grep.
    assert got == [
        {
            "tool_name": "Bash",
            "calls": 2,
            "results": 2,
            "failures": 1,
            "failure_rate": 0.5,
            "p50_ms": 175.0,
            "p95_ms": pytest.approx(50 + 0.95 * 250),
        },
        {
            "tool_name": "Grep",
            "calls": 1,
            "results": 1,
            "failures": 0,
            "failure_rate": 0.0,
            "p50_ms": 10.0,
            "p95_ms": 10.0,
        },
    ]


def test_an_event_in_two_overlapping_attempts_counts_for_both(tmp_path: Path) -> None:
    """Two attempts of one session whose spans overlap: a request in the overlap is each
    one's, a request in one span only is that one's; task_risk sees the overlap's error
    in both attempts of its task."""
    end = NOW - timedelta(hours=1)

    def run(attempt: str, ts: datetime, wall_s: int) -> ev.Run:
        return ev.Run(
            id=f"run-{attempt}",
            ts=ts,
            session_id="ov",
            task=ev.Task(id="T-ov"),
            attempt_id=attempt,
            attempt_index=0,
            retry_count=ev.RetryCount(),
            elapsed_ms=ev.Elapsed(wall=wall_s * 1000),
            tokens=ev.Tokens(source="unknown"),
            outcome="done",
        )

    def request(n: int, ts: datetime, failed: bool) -> ev.ApiRequest:
        return ev.ApiRequest(
            id=f"req-{n}",
            ts=ts,
            session_id="ov",
            tokens=ev.Tokens(source="unknown"),
            cost_usd=1.0,
            success=not failed,
            error="Overloaded" if failed else None,
            attrs={"status_code": 529} if failed else None,
        )

    events: list[ev.Event] = [
        request(1, end - timedelta(seconds=90), failed=True),  # both spans
        request(2, end - timedelta(seconds=150), failed=False),  # a's only
        run("a", end - timedelta(seconds=60), 120),  # [end - 180 s, end - 60 s]
        run("b", end, 120),  # [end - 120 s, end]
    ]
    with small_store(tmp_path, events) as store:
        got = rows(store, "SELECT attempt_id, requests, cost_usd, errors FROM attempts(1)")
        risk = rows(store, "SELECT task_id, errors, top_category_errors FROM task_risk(1, 2)")
    assert got == [
        {"attempt_id": "b", "requests": 1, "cost_usd": 1.0, "errors": 1},
        {"attempt_id": "a", "requests": 2, "cost_usd": 2.0, "errors": 1},
    ]
    assert risk == [{"task_id": "T-ov", "errors": 2, "top_category_errors": 2}]


# -- telemetryctl reports ----------------------------------------------------------

# Each macro and what its listed description must say: its formula or definition.
FORMULAS = {
    "attempt_events": ["task.attempt_id", "ts - elapsed_ms.wall"],
    "attempts": ["anomaly_actions (alerts with attrs.action)", "custom events named auto_resume"],
    "model_quality": [
        "success_rate = done / attempts",
        "retry_rate = attempts with a retry / attempts",
        "score = success_rate - avg_cost_usd * cost_weight - avg_errors * error_weight",
    ],
    "run_outcomes": [
        "first_shot_rate = first attempts (attempt_index 0) done without a retry / first attempts",
        "done, blocked, redo",
    ],
    "task_risk": ["attempts >= min_attempts", "tool_failures >= min_tool_failures", "min_repeats"],
    "provider_reliability": [
        "per UTC day, provider and category",
        "errors_per_request = errors / that day's api_request events of the provider",
    ],
    "intervention_effectiveness": ["done / attempts", "difference = with - without"],
    "guardrail_gaps": ["Permission, auth and content-policy", "category and fingerprint"],
    "tool_reliability": ["failure_rate = failures / results", "p50_ms and p95_ms"],
}
PARAMETERS = {
    "model_quality": [("days", "7"), ("cost_weight", "0.1"), ("error_weight", "0.05")],
    "task_risk": [
        ("days", "7"),
        ("min_attempts", "3"),
        ("min_tool_failures", "3"),
        ("min_repeats", "3"),
    ],
}


def test_reports_lists_every_analytics_macro_with_its_formula(running_daemon: Daemon) -> None:
    result = ctl("reports", "--json")
    assert result.returncode == 0, result.stderr
    listed = {r["name"]: r for r in json.loads(result.stdout)}
    for name, parts in FORMULAS.items():
        report = listed[name]
        for part in parts:
            assert part in report["description"], (name, part)
        params = [(p["name"], p["default"]) for p in report["parameters"]]
        assert params == PARAMETERS.get(name, [("days", "7")]), name

    text = ctl("reports")
    assert text.returncode == 0, text.stderr
    lines = {ln.split("  ")[0].strip(): ln for ln in text.stdout.decode().splitlines()}
    signature = "model_quality(days := 7, cost_weight := 0.1, error_weight := 0.05)"
    assert lines[signature].endswith(listed["model_quality"]["description"])
    assert "tool_reliability(days := 7)" in lines


def test_the_analytics_doc_names_every_macro() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "analytics.md").read_text()
    for name in FORMULAS:
        assert f"`{name}(" in doc, name
