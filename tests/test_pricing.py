"""Model prices and computed costs: genai-prices' data, priced by the store as it loads each
request, as of its own time (adapters/pricing.py, store/pricing.py).

Every expected cost is worked out here by hand from the providers' published prices per
million tokens (cited at each), never from the code under test:

- Anthropic, https://www.anthropic.com/pricing#api and the "Long context pricing" section
  of https://docs.claude.com/en/docs/about-claude/pricing: Claude Sonnet 4 / 4.5 $3 input,
  $15 output, $0.30 cache read, $3.75 5-minute cache write, $6 1-hour cache write; for a
  request whose prompt exceeds 200k tokens, every token at $6 / $22.50 / $0.60 / $7.50 /
  $12. Claude Opus 4.5 / 4.6 $5 / $25, cache read $0.50, writes $6.25 / $10. Claude Haiku
  4.5 $1 / $5, cache read $0.10, write $1.25.
- OpenAI, https://openai.com/api/pricing: GPT-5 $1.25 input, $0.125 cached input, $10
  output. o3 launched at $10 / $40 and was cut to $2 / $8 from 2025-06-10 (OpenAI's
  announcement of that day; cached input $0.50 throughout).
- Google, https://ai.google.dev/gemini-api/docs/pricing: Gemini 3 Flash Preview $0.50
  input, $3 output, $0.05 cached input.
"""

from __future__ import annotations

import json
import random
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import TELEMETRYCTL, Daemon, ctl, exchange
from telemetryd.adapters import pricing
from telemetryd.adapters.otel import export
from telemetryd.client import control, importer
from telemetryd.store.database import Store

SAMPLES = Path("/work/shared/samples")
FIXTURES = Path(__file__).parent / "fixtures"
TRANSCRIPTS = SAMPLES / "claude-code/transcripts"
GENAI = f"genai-prices {pricing.version()}"


def request(
    event_id: str,
    model: str | None,
    ts: str = "2026-11-01T10:00:00.000Z",
    *,
    provider: str | None = None,
    cost: float | None = None,
    attrs: dict[str, Any] | None = None,
    **tokens: int,
) -> dict[str, Any]:
    event: dict[str, Any] = {"v": 1, "id": event_id, "ts": ts, "type": "api_request"}
    agent: dict[str, Any] = {}
    if model is not None:
        agent["model"] = model
    if provider is not None:
        agent["provider"] = provider
    if agent:
        event["agent"] = agent
    event["tokens"] = {"source": "actual", **tokens} if tokens else {"source": "unknown"}
    if cost is not None:
        event["cost_usd"] = cost
        event["cost_source"] = "reported"
    if attrs is not None:
        event["attrs"] = attrs
    event["received_at"] = ts
    return event


class Journal:
    """A journal directory and a real DuckDB store loading it."""

    def __init__(self, root: Path, pricer: pricing.Pricer | None = None) -> None:
        self.dir = root / "journal"
        self.dir.mkdir()
        self.store = Store(str(root / "t.duckdb"), pricer=pricer)
        self.seq = 0

    def load(self, events: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
        self.seq += 1
        path = self.dir / f"20261101T100000Z-{self.seq:06d}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        self.store.materialize(str(self.dir))
        return self.costs()

    def costs(self) -> dict[str, tuple[Any, ...]]:
        with self.store.cursor() as con:
            rows = con.execute(
                "SELECT id, cost_usd, cost_source, price_source FROM events "
                "WHERE type = 'api_request'"
            ).fetchall()
        return {row[0]: row[1:] for row in rows}


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path)


def test_claude_sonnet_with_5_minute_and_1_hour_cache_writes(journal: Journal) -> None:
    got = journal.load(
        [
            request("a", "claude-sonnet-4-5-20250929", provider="anthropic", input=3, output=13,
                    cache_read=11515, cache_creation=13835),
            request("b", "claude-sonnet-4-5", input=3, output=13, cache_read=11515,
                    cache_creation=13835, attrs={"cache_creation_1h": 10000}),
        ]
    )  # fmt: skip
    # 3 x $3 + 13 x $15 + 11515 x $0.30 + 13835 x $3.75, per million tokens
    assert got["a"][0] == pytest.approx((3 * 3 + 13 * 15 + 11515 * 0.3 + 13835 * 3.75) / 1e6)
    assert got["a"][1:] == ("computed", GENAI)
    # 10000 of the writes were 1-hour ones: $6 each, the other 3835 at $3.75
    assert got["b"][0] == pytest.approx(
        (3 * 3 + 13 * 15 + 11515 * 0.3 + 3835 * 3.75 + 10000 * 6) / 1e6
    )


def test_a_long_context_claude_sonnet_request_is_priced_whole_at_the_long_rate(
    journal: Journal,
) -> None:
    """Anthropic bills a request whose prompt (input + cache reads + cache writes) is over
    200k tokens at the long-context rate for all of its tokens, output included."""
    got = journal.load(
        [
            # prompt 150000 + 60000 = 210000 > 200000
            request("long", "claude-sonnet-4-5-20250929", provider="anthropic",
                    input=150_000, output=1000, cache_read=60_000),
            # exactly 200000: the standard rate
            request("edge", "claude-sonnet-4-5-20250929", provider="anthropic",
                    input=140_000, output=1000, cache_read=60_000),
            # over 200k through cache writes alone
            request("writes", "claude-sonnet-4-5", provider="anthropic",
                    input=10, output=100, cache_creation=200_000),
        ]
    )  # fmt: skip
    assert got["long"][0] == pytest.approx((150_000 * 6 + 1000 * 22.5 + 60_000 * 0.6) / 1e6)
    assert got["edge"][0] == pytest.approx((140_000 * 3 + 1000 * 15 + 60_000 * 0.3) / 1e6)
    assert got["writes"][0] == pytest.approx((10 * 6 + 100 * 22.5 + 200_000 * 7.5) / 1e6)


def test_openai_and_google_requests(journal: Journal) -> None:
    got = journal.load(
        [
            # Codex: input is uncached (1000 of 5000 were cached), reasoning inside output
            request("codex", "gpt-5", provider="openai", input=4000, cache_read=1000,
                    output=700, reasoning=300),
            request("gemini", "gemini-3-flash-preview", provider="google", input=2000,
                    cache_read=8000, output=500),
        ]
    )  # fmt: skip
    assert got["codex"][0] == pytest.approx((4000 * 1.25 + 1000 * 0.125 + 700 * 10) / 1e6)
    assert got["gemini"][0] == pytest.approx((2000 * 0.5 + 8000 * 0.05 + 500 * 3) / 1e6)


def test_a_request_is_priced_as_of_its_own_time(journal: Journal) -> None:
    """o3's price was cut on 2025-06-10: a request of the day before and one of that day
    cost different amounts for the same tokens."""
    tokens = {"input": 100_000, "output": 20_000}
    got = journal.load(
        [
            request("before", "o3", "2025-06-09T23:59:59.000Z", provider="openai", **tokens),
            request("after", "o3", "2025-06-10T00:00:01.000Z", provider="openai", **tokens),
        ]
    )
    assert got["before"][0] == pytest.approx((100_000 * 10 + 20_000 * 40) / 1e6)  # $1.80
    assert got["after"][0] == pytest.approx((100_000 * 2 + 20_000 * 8) / 1e6)  # $0.36


def test_prices_that_depend_on_the_time_of_day(journal: Journal) -> None:
    """genai-prices gives deepseek-chat a peak rate from 00:30 to 16:30 UTC: each request gets
    the rate of its minute (checked against the package's own calc_price)."""
    from genai_prices import Usage, calc_price

    times = ["2026-11-01T00:29:00.000Z", "2026-11-01T00:30:00.000Z", "2026-11-01T16:31:00.000Z"]
    events = [request(f"t{n}", "deepseek-chat", ts, input=1_000_000, output=1_000_000)
              for n, ts in enumerate(times)]  # fmt: skip
    got = journal.load(events)
    for n, ts in enumerate(times):
        when = datetime.fromisoformat(ts)
        usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
        expected = calc_price(usage, "deepseek-chat", genai_request_timestamp=when).total_price
        assert got[f"t{n}"][0] == pytest.approx(float(expected)), ts
    assert got["t0"][0] != got["t1"][0] and got["t2"][0] == got["t0"][0]


def test_unknown_models_and_counts_have_no_cost_reported_ones_stay(journal: Journal) -> None:
    got = journal.load(
        [
            request("llama", "llama-x-70b", input=1, output=1),
            request("synthetic", "<synthetic>", input=1, output=1),
            request("nomodel", None, input=1, output=1),
            request("estimated", "claude-sonnet-4-5"),  # tokens unknown
            request("reported", "claude-sonnet-4-5", cost=0.5, input=1, output=1),
            request("reported-unknown-model", "llama-x", cost=0.25, input=1, output=1),
        ]
    )
    for name in ("llama", "synthetic", "nomodel", "estimated"):
        assert got[name] == (None, "unknown", None), name
    assert got["reported"] == (0.5, "reported", None)
    assert got["reported-unknown-model"] == (0.25, "reported", None)


def test_a_request_marked_reported_without_a_cost_is_priced(journal: Journal) -> None:
    """`cost_source: reported` with no `cost_usd` reports no cost: the store prices it, as
    every request without a reported cost (it stayed NULL and unpriced, reprice too)."""
    marked = request("marked", "claude-haiku-4-5", input=1000, output=100)
    marked["cost_source"] = "reported"
    got = journal.load([marked])
    assert got["marked"] == (pytest.approx((1000 * 1 + 100 * 5) / 1e6), "computed", GENAI)


def test_an_old_daemons_computed_cost_is_computed_again_and_a_bare_cost_is_reported(
    journal: Journal,
) -> None:
    """Journals written before the store priced carry the daemon's computed costs: derived
    data, priced again. A cost without a source was sent by the producer."""
    old = request("old", "claude-haiku-4-5", input=1000, output=100)
    old.update(cost_usd=123.0, cost_source="computed")
    bare = request("bare", "claude-haiku-4-5", input=1000, output=100)
    bare["cost_usd"] = 0.75
    got = journal.load([old, bare])
    assert got["old"] == (pytest.approx((1000 * 1 + 100 * 5) / 1e6), "computed", GENAI)
    assert got["bare"] == (0.75, "reported", None)


@pytest.mark.parametrize(
    "hint", [[1, 2], "13835", "x", True, -3, 1.5, {"a": 1}, None, 1e300, 2**70]
)
def test_a_1_hour_hint_that_is_not_a_count_is_ignored(journal: Journal, hint: Any) -> None:
    got = journal.load(
        [request("h", "claude-sonnet-4-5", input=3, output=13, cache_read=11515,
                 cache_creation=13835, attrs={"cache_creation_1h": hint, "speed": 7})]
    )  # fmt: skip
    assert got["h"][0] == pytest.approx((3 * 3 + 13 * 15 + 11515 * 0.3 + 13835 * 3.75) / 1e6)


def test_a_whole_float_hint_counts(journal: Journal) -> None:
    got = journal.load(
        [request("h", "claude-sonnet-4-5", input=0, output=0, cache_creation=100,
                 attrs={"cache_creation_1h": 40.0})]
    )  # fmt: skip
    assert got["h"][0] == pytest.approx((60 * 3.75 + 40 * 6) / 1e6)


def test_an_override_wins_and_names_itself(tmp_path: Path) -> None:
    pricer = pricing.Pricer(
        {
            "my-model": {"input": 1.0, "output": 2.0, "cache_read": 0.1},
            "claude-sonnet-4-5": {"input": 2.0, "output": 10.0},
        }
    )
    journal = Journal(tmp_path, pricer)
    got = journal.load(
        [
            request("mine", "my-model", input=1000, output=1000, cache_read=1000),
            # matched without its date; an override has no long-context tier and its cache
            # prices default to the input price
            request("claude", "claude-sonnet-4-5-20250929", input=300_000, output=10,
                    cache_read=10),
            request("other", "claude-haiku-4-5", input=1000, output=100),
            # a name in other case, or with spaces around it, is the same model
            request("spaced", " Claude-Sonnet-4-5-20250929 ", input=10, output=10),
            request("upper", "MY-MODEL", input=10, output=10),
        ]
    )  # fmt: skip
    assert got["spaced"] == (pytest.approx((10 * 2 + 10 * 10) / 1e6), "computed", "override")
    assert got["upper"] == (pytest.approx((10 * 1 + 10 * 2) / 1e6), "computed", "override")
    assert got["mine"] == (pytest.approx((1000 * 1 + 1000 * 2 + 1000 * 0.1) / 1e6),
                           "computed", "override")  # fmt: skip
    assert got["claude"][0] == pytest.approx((300_000 * 2 + 10 * 10 + 10 * 2) / 1e6)
    assert got["claude"][2] == "override"
    assert got["other"] == (pytest.approx((1000 * 1 + 100 * 5) / 1e6), "computed", GENAI)


def test_reprice_after_an_override_changes_computed_costs_only(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.load(
        [
            request("old", "claude-haiku-4-5", "2026-10-01T00:00:00.000Z", input=1000, output=100),
            request("new", "claude-haiku-4-5", "2026-11-02T00:00:00.000Z", input=1000, output=100),
            request("rep", "claude-haiku-4-5", "2026-11-02T00:00:00.000Z", cost=9.0, input=1,
                    output=1),
            request("unk", "llama-x", "2026-11-02T00:00:00.000Z", input=1, output=1),
        ]
    )  # fmt: skip
    standard = (1000 * 1 + 100 * 5) / 1e6
    dear = pricing.Pricer(
        {"claude-haiku-4-5": {"input": 10.0, "output": 50.0}, "llama-x": {"input": 1, "output": 1}}
    )
    counts = journal.store.reprice(datetime(2026, 11, 1, tzinfo=UTC), dear)
    # new and unk are after --since; rep was reported
    assert counts == {"repriced": 2, "changed": 2, "computed": 2, "unknown": 0}
    got = journal.costs()
    assert got["old"] == (pytest.approx(standard), "computed", GENAI)
    assert got["new"] == (pytest.approx((1000 * 10 + 100 * 50) / 1e6), "computed", "override")
    assert got["unk"] == (pytest.approx(2 / 1e6), "computed", "override")
    assert got["rep"] == (9.0, "reported", None)
    # The override stays for later loads, and a rebuild gives what reprice gave.
    journal.load([request("later", "claude-haiku-4-5", input=1000, output=100)])
    assert journal.costs()["later"][2] == "override"
    before = journal.costs()
    journal.store.rebuild(str(journal.dir))
    after = journal.costs()
    assert after["old"][2] == "override"  # (a rebuild prices everything with the overrides)
    assert {k: v for k, v in after.items() if k != "old"} == {
        k: v for k, v in before.items() if k != "old"
    }


def test_the_pricer_matches_published_prices_directly() -> None:
    """The same figures through :class:`pricing.Rates` (the import's own summary)."""
    pricer = pricing.Pricer()
    when = datetime(2026, 11, 1, tzinfo=UTC)
    sonnet = pricer.rates("claude-sonnet-4-5", "anthropic", when)
    assert sonnet is not None
    assert sonnet.cost(150_000, 1000, 60_000) == pytest.approx(
        (150_000 * 6 + 1000 * 22.5 + 60_000 * 0.6) / 1e6
    )
    opus = pricer.rates("claude-opus-4-6", "anthropic", when)
    assert opus is not None and opus.cost(3, 13, 11515, 13835, 13835) == pytest.approx(
        (3 * 5 + 13 * 25 + 11515 * 0.5 + 13835 * 10) / 1e6
    )
    assert pricer.rates("llama-x", None, when) is None
    assert pricer.rates(None, None, when) is None
    assert pricer.priced_as("us.anthropic.claude-sonnet-4-5-20250929-v1:0") == (
        "anthropic/claude-sonnet-4-5"
    )


# -- every model of the samples and fixtures has a price ------------------------------------


def sample_requests() -> list[dict[str, Any]]:
    """The api_requests the importers and OTLP mappers make of every sample and fixture."""
    events: list[dict[str, Any]] = []

    class Sink:
        def add(self, line: bytes) -> None:
            event = json.loads(line)
            if event["type"] == "api_request":
                events.append(event)

    for agent, paths, suffixes in [
        ("claude-code", [TRANSCRIPTS], (".jsonl",)),
        ("codex", [SAMPLES / "codex"], (".jsonl",)),
        ("gemini", [SAMPLES / "gemini", FIXTURES / "gemini"], (".jsonl", ".json")),
        ("copilot", [FIXTURES / "copilot"], (".jsonl",)),
    ]:
        run = importer.Importer(agent, sink=Sink())  # type: ignore[arg-type]
        for root in paths:
            for path in sorted(root.rglob("*")):
                if path.suffix in suffixes and "hooks" not in path.parts:
                    run.read_file(path)
    for name, signal_name in [
        ("claude_code_logs.json", "logs"),
        ("codex_logs.json", "logs"),
        ("gemini_logs.json", "logs"),
        ("copilot_traces.json", "traces"),
    ]:
        body = (FIXTURES / "otlp" / name).read_bytes()
        mapped = export.to_events(signal_name, "json", body, limit=len(body))  # type: ignore[arg-type]
        for line in mapped.lines.splitlines():
            event = json.loads(line)
            if event["type"] == "api_request":
                events.append(event)
    return events


def test_every_model_of_the_samples_and_fixtures_has_a_computed_cost(journal: Journal) -> None:
    events = sample_requests()
    models = {e["agent"]["model"] for e in events}
    assert len(models) >= 15, models  # the listing is real
    for n, event in enumerate(events):
        if event.get("cost_source") != "reported":  # (the import's own figure)
            event.pop("cost_usd", None)
            event.pop("cost_source", None)
        event["id"] = f"s{n}"
        event.setdefault("ts", "2026-11-01T10:00:00.000Z")
        event["received_at"] = event["ts"]
    journal.load(events)
    with journal.store.cursor() as con:
        rows = con.execute(
            "SELECT model, cost_source, count(*) FROM api_requests "
            "WHERE input_tokens IS NOT NULL GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    unpriced = [(m, n) for m, source, n in rows if source == "unknown"]
    # Claude Code's placeholder for a model-less line is the only model without a price.
    assert {m for m, _ in unpriced} <= {"unknown"}, unpriced
    computed = {m for m, source, _ in rows if source == "computed"}
    assert computed >= models - {"unknown"} - {m for m, s, _ in rows if s == "reported"}


# -- the CLI and the daemon --------------------------------------------------------------


def test_pricing_shows_the_data_version_and_date(state_home: Path) -> None:
    (state_home / "config.toml").write_text('[pricing.models."my-model"]\ninput = 1\noutput = 2\n')
    result = ctl("pricing")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert text.startswith(f"prices: {GENAI} (prices dated up to 20")
    assert "from config.toml [pricing.models]: my-model" in text
    one = json.loads(
        ctl("pricing", "claude-sonnet-4-5-20250929", "my-model", "nope", "--json").stdout
    )
    assert one["version"] == pricing.version() and one["date"] <= "2026-12-05"
    assert one["models"]["nope"] is None
    sonnet = one["models"]["claude-sonnet-4-5-20250929"]
    assert sonnet["priced_as"] == "anthropic/claude-sonnet-4-5" and sonnet["input"] == 3
    assert sonnet["input_tiers"] == [{"above": 200000, "price": 6}]
    assert one["models"]["my-model"]["source"] == "override"
    old = json.loads(ctl("pricing", "o3", "--at", "2025-06-01", "--json").stdout)
    assert (old["models"]["o3"]["input"], old["models"]["o3"]["output"]) == (10, 40)


def test_an_empty_date_is_an_error_not_everything(state_home: Path) -> None:
    """`reprice --since ""` repriced everything and `pricing --at ""` meant today."""
    for args, option in (
        (["reprice", "--since", ""], b"--since"),
        (["pricing", "--at", ""], b"--at"),
    ):
        result = ctl(*args)
        assert result.returncode == 2 and option in result.stderr, result.stderr


def test_a_bad_override_is_an_error_that_names_it(state_home: Path) -> None:
    (state_home / "config.toml").write_text('[pricing.models."m"]\ninput = 1.0\noutputs = 2\n')
    result = ctl("pricing")
    assert result.returncode == 1
    assert b"outputs" in result.stderr


def hup(daemon: Daemon) -> None:
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("READY=1")


def send(daemon: Daemon, events: list[dict[str, Any]]) -> None:
    for event in events:
        event.pop("v"), event.pop("received_at")
    payload = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    assert exchange(daemon.events_socket, payload)[-1]["accepted"] == len(events)


def costs(daemon: Daemon) -> dict[str, tuple[Any, ...]]:
    result = ctl(
        "query", "--format", "json", "SELECT e.id, e.cost_usd, e.cost_source, e.price_source "
        "FROM events AS e WHERE e.type = 'api_request' ORDER BY e.id",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {row["id"]: (row["cost_usd"], row["cost_source"], row["price_source"])
            for row in json.loads(result.stdout)}  # fmt: skip


def test_missing_lists_unpriced_models_and_reprice_applies_a_new_override(
    running_daemon: Daemon, state_home: Path
) -> None:
    send(
        running_daemon,
        [
            request("a1", "acme-coder-1", input=10, output=10),
            request("a2", "acme-coder-1", "2026-11-02T10:00:00.000Z", input=10, output=10),
            request("a3", "acme-coder-1", provider="acme", input=10, output=10),
            request("b1", "zeta-2", input=5, output=5),
            request("h1", "claude-haiku-4-5", input=1000, output=100),
            request("r1", "claude-haiku-4-5", cost=3.0, input=1, output=1),
            request("e1", "acme-coder-1"),  # no token counts: not a missing price
        ],
    )
    # The daemon never computed a cost: the journal has what was sent.
    journaled = {e["id"]: e for e in running_daemon.journal_events()}
    assert "cost_usd" not in journaled["h1"] and "cost_source" not in journaled["h1"]
    assert journaled["r1"]["cost_source"] == "reported"
    missing = json.loads(ctl("pricing", "--missing", "--json").stdout)
    assert [(r["model"], r["provider"], r["requests"]) for r in missing] == [
        ("acme-coder-1", None, 2),
        ("acme-coder-1", "acme", 1),
        ("zeta-2", None, 1),
    ]
    table = ctl("pricing", "--missing").stdout.decode()
    assert "acme-coder-1" in table and "zeta-2" in table
    before = costs(running_daemon)
    assert before["h1"] == (pytest.approx((1000 * 1 + 100 * 5) / 1e6), "computed", GENAI)

    (state_home / "config.toml").write_text(
        '[pricing.models."acme-coder-1"]\ninput = 2.0\noutput = 4.0\n\n'
        '[pricing.models."claude-haiku-4-5"]\ninput = 10.0\noutput = 50.0\n'
    )
    starts = control.status(running_daemon.control_socket)["store"]["worker"]["starts"]
    hup(running_daemon)
    # The running worker's next load prices with the reloaded overrides (it kept its
    # first ones until a reprice, and one started later took the new: either, by chance).
    send(running_daemon, [request("a4", "acme-coder-1", input=10, output=10)])
    now = costs(running_daemon)
    assert now["a4"] == (pytest.approx((10 * 2 + 10 * 4) / 1e6), "computed", "override")
    assert now["a1"] == (None, "unknown", None)  # (stored costs: after a reprice)
    assert control.status(running_daemon.control_socket)["store"]["worker"]["starts"] == starts
    result = ctl("reprice", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    # a1-a4, b1, h1, e1 (reported r1 is not repriced); b1 and e1 stay unknown
    assert (answer["repriced"], answer["changed"], answer["computed"], answer["unknown"]) == (
        7, 4, 5, 2,
    )  # fmt: skip
    assert answer["overrides"] == ["acme-coder-1", "claude-haiku-4-5"]
    after = costs(running_daemon)
    for name in ("a1", "a2", "a3"):
        assert after[name] == (pytest.approx((10 * 2 + 10 * 4) / 1e6), "computed", "override")
    assert after["h1"] == (pytest.approx((1000 * 10 + 100 * 50) / 1e6), "computed", "override")
    assert after["r1"] == (3.0, "reported", None)
    assert after["b1"] == (None, "unknown", None)
    missing = json.loads(ctl("pricing", "--missing", "--json").stdout)
    assert [(r["model"], r["requests"]) for r in missing] == [("zeta-2", 1)]
    since = json.loads(ctl("reprice", "--since", "2026-11-02", "--json").stdout)
    assert since["repriced"] == 1 and since["changed"] == 0  # a2 only, unchanged
    text = ctl("reprice").stdout.decode()
    assert text.startswith(f"repriced 7 requests with {GENAI} and the overrides of ")


# -- pydantic stays out of the daemon and the hook path ---------------------------------


def maps(pid: int, name: str) -> bool:
    return name in Path(f"/proc/{pid}/maps").read_text()


def test_the_daemon_never_loads_the_price_data(running_daemon: Daemon) -> None:
    """The store worker prices; the daemon (which checks every event) never imports
    genai-prices or pydantic, whose compiled core would show in its memory map."""
    send(running_daemon, [request("p1", "claude-haiku-4-5", input=1000, output=100)])
    assert costs(running_daemon)["p1"][1] == "computed"  # the worker priced it meanwhile
    assert running_daemon.proc is not None
    assert not maps(running_daemon.proc.pid, "pydantic_core")
    code = (
        "import sys; import telemetryd.daemon.main, telemetryd.daemon.ingest_worker, "
        "telemetryd.daemon.ingest_workers, telemetryd.daemon.totals; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('genai_prices', 'pydantic', 'pydantic_core')))"
    )
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["send", "--type", "api_request", "--model", "claude-haiku-4-5", "--input-tokens", "5",
         "--output-tokens", "5"],
        ["hook", "claude-code"],
        ["statusline"],
    ],
)  # fmt: skip
def test_the_hook_path_never_imports_the_price_data(
    running_daemon: Daemon, args: list[str]
) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-X", "importtime", TELEMETRYCTL, *args],
        input=b"{}", capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.decode().splitlines()
        if line.startswith("import time:")
    }
    assert "telemetryd" in imported  # the listing is real
    assert imported & {"genai_prices", "pydantic", "pydantic_core"} == set()


def _alone(event: dict[str, Any]) -> float | None:
    """One request's cost priced by itself, with a fresh Pricer: its model's rates at its
    time (that moment for a model priced by the time of day, else its UTC day), its
    speed and 1-hour cache writes."""
    prices = pricing.Pricer()
    model, provider = event["agent"]["model"], event["agent"].get("provider")
    long, speed = pricing.hints(event.get("attrs"))
    exact = prices.varies_within_a_day(model, provider)
    when = pricing.time_of(event["ts"])
    rates = prices.rates(model, provider, when, speed, exact_time=exact)
    if rates is None:
        return None
    tokens = event["tokens"]
    return rates.cost(tokens["input"], tokens["output"], tokens.get("cache_read", 0),
                      tokens.get("cache_creation", 0), long)  # fmt: skip


def _priced(events: list[dict[str, Any]], repeats: int = 0) -> importer.Summary:
    """A summary that counted ``events`` (the first ``repeats`` of them twice, then took
    the second count back, as for a reader's repeat), priced."""
    prices = pricing.Pricer()
    starts = prices.tier_starts()
    summary = importer.Summary(agent="codex")
    for event in events:
        summary.count(event, 1, starts)
    for event in events[:repeats]:
        summary.count(event, 1, starts)
        summary.uncount(importer.REQUEST, event, starts)
    summary.price(prices, starts)
    return summary


def _each_alone(events: list[dict[str, Any]]) -> tuple[dict[Any, float], dict[Any, int]]:
    """The costs of ``events`` priced alone (:func:`_alone`), summed per model and per
    day, and the requests without a price likewise."""
    expected: dict[tuple[str, str], float] = {}
    unpriced: dict[tuple[str, str], int] = {}
    for event in events:
        cost = _alone(event)
        for key in (("model", event["agent"]["model"]), ("day", event["ts"][:10])):
            if cost is None:
                unpriced[key] = unpriced.get(key, 0) + 1
            else:
                expected[key] = expected.get(key, 0.0) + cost
    return expected, unpriced


def _assert_costs(summary: importer.Summary, expected: dict[Any, float]) -> None:
    for (kind, name), cost in expected.items():
        totals = (summary.by_model if kind == "model" else summary.by_day)[name]
        assert totals.cost_computed_usd == pytest.approx(cost, rel=1e-12), (kind, name)


def test_the_summary_prices_its_requests_as_each_priced_alone() -> None:
    """The import's summary prices its requests when it ends, each (model, provider,
    minute, speed, prompt band) at once from their summed tokens: interleaved days around
    o3's price cut (2025-06-10), deepseek-chat's peak and off-peak minutes, a time with an
    offset whose UTC day is the day before, a time that is not one, the same model with
    and without a provider, Claude Sonnet 4.5's prompts on both sides of its 200k tier,
    a model without a price, and requests counted then taken back (a reader's repeat):
    each model's and day's cost is the sum of its requests priced alone, and o3's are the
    published prices of each day."""
    times = ["2025-06-10T00:00:01.000Z", "2025-06-09T23:59:59.000Z", "2025-06-10T01:00:00+02:00",
             "2025-06-10T00:00:01.000Z", "2026-11-01T00:29:00.000Z", "2026-11-01T00:30:00.000Z",
             "2026-11-01T16:31:00.000Z", "2025-06-09T12:00:00.000Z",
             "2026-11-01T16:31:40.000Z"]  # fmt: skip
    events = []
    for n, ts in enumerate(times):
        for model, provider in (("o3", "openai"), ("o3", None), ("deepseek-chat", None)):
            agent = {"model": model} | ({"provider": provider} if provider else {})
            tokens = {"source": "actual", "input": 100_000 + n, "output": 20_000}
            events.append({"type": "api_request", "id": f"e{n}{model}{provider}", "ts": ts,
                           "agent": agent, "tokens": tokens})  # fmt: skip
    for n, prompt in enumerate((150_000, 199_990, 200_001, 250_000, 1_000)):
        tokens = {"source": "actual", "input": 10, "output": 500, "cache_read": prompt - 10 - 7,
                  "cache_creation": 7}  # fmt: skip
        events.append({"type": "api_request", "id": f"s{n}", "ts": "2026-11-02T10:00:00.000Z",
                       "agent": {"model": "claude-sonnet-4-5"}, "tokens": tokens})  # fmt: skip
    events.append({**events[0], "id": "bad-time", "ts": "not a time"})
    events.append({**events[0], "id": "no-price", "agent": {"model": "no-such-model-x"}})
    starts = pricing.Pricer().tier_starts()
    assert 200_000 in starts and starts == tuple(sorted(set(starts)))
    summary = _priced(events, repeats=6)
    expected, unpriced = _each_alone(events)
    _assert_costs(summary, expected)
    assert unpriced == {("model", "no-such-model-x"): 1, ("day", "2025-06-10"): 1}
    assert summary.by_model["no-such-model-x"].unpriced == 1 and summary.to_price == {}
    o3 = {e["id"]: _alone(e) for e in events if e["agent"] == {"model": "o3", "provider": "openai"}}
    assert o3["e1o3openai"] == pytest.approx((100_001 * 10 + 20_000 * 40) / 1e6)  # 06-09
    assert o3["e0o3openai"] == pytest.approx((100_000 * 2 + 20_000 * 8) / 1e6)  # 06-10
    assert o3["e2o3openai"] == pytest.approx((100_002 * 10 + 20_000 * 40) / 1e6)  # (UTC: 9th)
    deepseek = [_alone(e) for e in events if e["agent"]["model"] == "deepseek-chat"]
    assert deepseek[5] != deepseek[4]  # peak, then off-peak (the time of day)
    sonnet = [_alone(e) for e in events if e["id"].startswith("s")]
    assert sonnet[2] / sonnet[1] > 1.5  # (over 200k: the whole request at the long rate)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_requests_are_priced_by_the_summary_as_each_alone(seed: int) -> None:
    """Requests drawn at random (seeded): tiered and flat models, one priced by the time
    of day and one without a price, with and without a provider, prompts on every side
    of the tier starts, 1-hour cache writes, fast mode (priced apart where the data has
    a price for it), times over three days with offsets and seconds. Each model's and
    day's cost is the sum of its requests priced alone."""
    rng = random.Random(seed)
    models = [("claude-sonnet-4-5", None), ("claude-opus-4-6", "anthropic"),
              ("gemini-2.5-pro", None), ("gpt-5.4", "openai"), ("o3", None),
              ("deepseek-chat", None), ("claude-haiku-4-5", None),
              ("no-such-model-y", None)]  # fmt: skip
    starts = pricing.Pricer().tier_starts()
    events = []
    for n in range(240):
        model, provider = rng.choice(models)
        prompt = max(1, rng.choice(starts) + rng.randint(-2, 2)) if rng.random() < 0.5 else (
            rng.randint(1, 600_000))  # fmt: skip
        read = rng.randint(0, prompt)
        write = rng.randint(0, prompt - read)
        tokens = {"source": "actual", "input": prompt - read - write,
                  "output": rng.randint(0, 40_000), "cache_read": read,
                  "cache_creation": write}  # fmt: skip
        attrs: dict[str, Any] = {"imported": True}
        if rng.random() < 0.3:
            attrs["cache_creation_1h"] = rng.randint(0, write + 5)
        if model.startswith("claude-opus") and rng.random() < 0.3:
            attrs["speed"] = "fast"
        day, second = rng.randint(5, 7), rng.randint(0, 86_399)
        ts = f"2026-11-0{day}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
        ts += rng.choice([".000Z", "Z", ".5+02:00"])
        agent = {"model": model} | ({"provider": provider} if provider else {})
        events.append({"type": "api_request", "id": f"r{n}", "ts": ts, "agent": agent,
                       "tokens": tokens, "attrs": attrs})  # fmt: skip
    summary = _priced(events, repeats=10)
    expected, unpriced = _each_alone(events)
    _assert_costs(summary, expected)
    assert summary.by_model["no-such-model-y"].unpriced == unpriced[("model", "no-such-model-y")]


def test_a_price_without_tiers_costs_what_the_tier_walk_gives() -> None:
    """Rates.cost's shortcut for untiered prices: the same float as the general sum."""
    flat = pricing.Rates("s", "e", *(pricing.Rate(p) for p in (3.0, 15.0, 0.3, 3.75, 6.0)))
    tiered = pricing.Rates(
        "s", "e", *(pricing.Rate(p, ((10**12, 99.0),)) for p in (3.0, 15.0, 0.3, 3.75, 6.0))
    )
    assert flat.flat == (3.0, 15.0, 0.3, 3.75, 6.0) and tiered.flat is None
    counts = [(47, 173, 26504, 1115, 1115), (1, 1, 0, 0, 0), (0, 0, 0, 7, 9), (3, 8, 5, 2, -4)]
    for found in counts:
        assert flat.cost(*found) == tiered.cost(*found)
    assert flat == pricing.Rates("s", "e", *(pricing.Rate(p) for p in (3.0, 15.0, 0.3, 3.75, 6.0)))


def _walked(rates: pricing.Rates, inp: int, out: int, read: int, write: int, long: int) -> float:
    """Rates.cost as the tiers of each kind are walked (Rate.at), for the prompt's size."""
    long = min(max(long, 0), write)
    prompt = inp + read + write
    return (
        inp * rates.input.at(prompt)
        + out * rates.output.at(prompt)
        + read * rates.cache_read.at(prompt)
        + (write - long) * rates.cache_write.at(prompt)
        + long * rates.cache_write_1h.at(prompt)
    ) * pricing.PER_TOKEN + rates.per_request


def test_tiered_prices_cost_what_the_tier_walk_gives() -> None:
    """Rates.cost's bands of tiered prices: the same float as walking each kind's tiers,
    on both sides of every start, whatever the order of a kind's tiers."""
    tiers = ((200_000, 6.0), (100, 4.0), (100, 5.0))
    rates = pricing.Rates(
        "s",
        "e",
        pricing.Rate(3.0, tiers),
        pricing.Rate(15.0, ((200_000, 22.5),)),
        pricing.Rate(0.3),
        pricing.Rate(3.75, ((50, 1.0),)),
        pricing.Rate(6.0),
        per_request=0.01,
    )
    assert rates.flat is None and rates.bands is not None
    assert rates.bands[0] == (50, 100, 200_000)
    for prompt in (0, 1, 49, 50, 51, 99, 100, 101, 199_999, 200_000, 200_001, 10**9):
        for found in ((prompt, 7, 0, 0, 0), (0, 7, prompt, 0, 0), (0, 9, 0, prompt, prompt // 2)):
            assert rates.cost(*found) == _walked(rates, *found)
