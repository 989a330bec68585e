"""Model prices and computed costs (adapters/pricing.py), every figure worked out by hand."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, ctl, exchange, summary
from telemetryd.adapters import pricing
from telemetryd.client import importer

TRANSCRIPTS = Path("/work/shared/samples/claude-code/transcripts")


@pytest.fixture
def table() -> pricing.Table:
    return pricing.load()


def actual(**counts: int) -> dict[str, Any]:
    return {"source": "actual", **counts}


def test_the_table_has_a_date_a_source_and_sane_prices(table: pricing.Table) -> None:
    assert table.date == "2026-11-22"
    assert "litellm" in table.source.lower() and table.refresh
    for name, prices in table.models.items():
        assert prices["src"] in ("litellm", "provider"), name
        assert 0 < prices["input"] <= prices["output"], name
        assert prices.get("cache_read", 0) <= prices["input"], name


def test_claude_with_5_minute_cache_writes(table: pricing.Table) -> None:
    tokens = actual(input=3, output=13, cache_read=11515, cache_creation=13835)
    # 3 x $3 + 13 x $15 + 11515 x $0.30 + 13835 x $3.75, per million tokens
    expected = (3 * 3 + 13 * 15 + 11515 * 0.3 + 13835 * 3.75) / 1e6
    assert table.cost(tokens, "claude-sonnet-4-5-20250929") == pytest.approx(expected)
    assert expected == pytest.approx(0.05553975)


def test_claude_1_hour_cache_writes_cost_more(table: pricing.Table) -> None:
    tokens = actual(input=3, output=13, cache_read=11515, cache_creation=13835)
    cost = table.cost(tokens, "claude-sonnet-4-5", cache_creation_1h=13835)
    assert cost == pytest.approx((9 + 195 + 3454.5 + 13835 * 6) / 1e6)
    half = table.cost(tokens, "claude-sonnet-4-5", cache_creation_1h=10000)
    assert half == pytest.approx((9 + 195 + 3454.5 + 3835 * 3.75 + 10000 * 6) / 1e6)


def test_long_context_prices_above_200k_prompt_tokens(table: pricing.Table) -> None:
    # prompt = 150000 + 60000 = 210000 > 200000: every token at the long-context price
    tokens = actual(input=150_000, output=1000, cache_read=60_000)
    assert table.cost(tokens, "claude-sonnet-4") == pytest.approx(
        (150_000 * 6 + 1000 * 22.5 + 60_000 * 0.6) / 1e6
    )
    at_limit = actual(input=140_000, output=1000, cache_read=60_000)  # exactly 200000
    assert table.cost(at_limit, "claude-sonnet-4") == pytest.approx(
        (140_000 * 3 + 1000 * 15 + 60_000 * 0.3) / 1e6
    )
    # Sonnet 4.6 has no long-context price in the table: the base price throughout.
    assert table.cost(tokens, "claude-sonnet-4-6") == pytest.approx(
        (150_000 * 3 + 1000 * 15 + 60_000 * 0.3) / 1e6
    )


def test_gpt_5_4_long_context_above_272k(table: pricing.Table) -> None:
    tokens = actual(input=300_000, output=2000)
    assert table.cost(tokens, "gpt-5.4") == pytest.approx((300_000 * 5 + 2000 * 22.5) / 1e6)


def test_fast_mode_multiplies(table: pricing.Table) -> None:
    tokens = actual(input=100, output=10)
    base = (100 * 5 + 10 * 25) / 1e6
    assert table.cost(tokens, "claude-opus-4-6") == pytest.approx(base)
    assert table.cost(tokens, "claude-opus-4-6", speed="fast") == pytest.approx(base * 6)
    assert table.cost(tokens, "claude-opus-4-5", speed="fast") == pytest.approx(base)


def test_codex_request(table: pricing.Table) -> None:
    # The first request of the localpush rollout: 42772 input of which 3456 cached, 204
    # output (124 of them reasoning, already inside the 204).
    tokens = actual(input=39316, output=204, cache_read=3456, reasoning=124)
    assert table.cost(tokens, "gpt-5.3-codex") == pytest.approx(
        (39316 * 1.75 + 204 * 14 + 3456 * 0.175) / 1e6
    )


def test_gemini_request_priced_by_a_config_override() -> None:
    # The Gemini CLI sample record: 8277 uncached input, 32637 cached, 512 output (thoughts in).
    # The bundled table has no Gemini prices; the user's config supplies them.
    table = pricing.load(
        {"gemini-3-flash-preview": {"input": 0.5, "output": 3, "cache_read": 0.05}}
    )
    tokens = actual(input=8277, output=512, cache_read=32637, reasoning=161)
    assert table.cost(tokens, "gemini-3-flash-preview") == pytest.approx(
        (8277 * 0.5 + 512 * 3 + 32637 * 0.05) / 1e6
    )
    assert pricing.load().cost(tokens, "gemini-3-flash-preview") is None


@pytest.mark.parametrize(
    ("name", "priced_as"),
    [
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),
        ("us.anthropic.claude-opus-4-6-v1:0", "claude-opus-4-6"),
        ("claude-opus-4-6@20260205", "claude-opus-4-6"),
        ("gpt-5-mini", "gpt-5-mini"),
        ("gpt-5.3-codex", "gpt-5.3-codex"),
    ],
)
def test_model_names(table: pricing.Table, name: str, priced_as: str) -> None:
    found = table.lookup(name)
    assert found is not None and found[0] == priced_as


@pytest.mark.parametrize("name", [None, "", "unknown", "<synthetic>", "llama-3-70b", "gpt-50"])
def test_unknown_models_have_no_price(table: pricing.Table, name: str | None) -> None:
    assert table.lookup(name) is None
    assert table.cost(actual(input=1, output=1), name) is None


def test_price_event(table: pricing.Table) -> None:
    event: dict[str, Any] = {
        "type": "api_request",
        "agent": {"model": "claude-haiku-4-5"},
        "tokens": actual(input=1000, output=100, cache_creation=2000),
        "attrs": {"cache_creation_1h": 2000},
    }
    table.price_event(event)
    assert event["cost_source"] == "computed"
    assert event["cost_usd"] == pytest.approx((1000 * 1 + 100 * 5 + 2000 * 2) / 1e6)
    reported: dict[str, Any] = {**event, "cost_usd": 0.5}
    del reported["cost_source"]
    table.price_event(reported)
    assert (reported["cost_usd"], reported["cost_source"]) == (0.5, "reported")
    for unknown in (
        {"type": "api_request", "agent": {"model": "mystery"}, "tokens": actual(input=1, output=1)},
        {"type": "api_request", "agent": {"model": "gpt-5"}, "tokens": {"source": "unknown"}},
    ):
        table.price_event(unknown)
        assert unknown["cost_source"] == "unknown" and "cost_usd" not in unknown
    other = {"type": "agent_stop", "tokens": actual(input=1, output=1)}
    table.price_event(other)
    assert "cost_usd" not in other and "cost_source" not in other


def test_import_computes_costs_with_1_hour_cache_writes(state_home: Path) -> None:
    summary = importer.run(
        "claude-code", [TRANSCRIPTS / "spotter_short_session_v2.1.38.jsonl"], dry_run=True
    )
    row = summary.by_model["claude-opus-4-6"]
    # One response: 3 input, 13 output, 11515 cache reads, 13835 cache writes, all 1-hour.
    assert row.cost_computed_usd == pytest.approx(
        (3 * 5 + 13 * 25 + 11515 * 0.5 + 13835 * 10) / 1e6
    )
    assert (row.cost_reported_usd, row.unpriced) == (0.0, 0)


def test_import_keeps_reported_costs(state_home: Path) -> None:
    path = TRANSCRIPTS / "ccusage_synthetic_project-alpha_chat.jsonl"
    summary = importer.run("claude-code", [path], dry_run=True)
    assert summary.by_model["claude-sonnet-4-20250514"].cost_reported_usd == pytest.approx(0.68)
    assert summary.by_model["claude-sonnet-4-20250514"].cost_computed_usd == 0.0


def config_with_override(home: Path) -> Path:
    path = home / "config.toml"
    path.write_text(
        '[pricing.models."my-model"]\ninput = 1.0\noutput = 2.0\ncache-read = 0.1\n\n'
        '[pricing.models."claude-sonnet-4-5"]\ninput = 2.0\noutput = 10.0\n'
    )
    return path


def test_overrides_from_the_config_file(state_home: Path) -> None:
    config_with_override(state_home)
    table = pricing.configured()
    assert table.overridden == {"my-model", "claude-sonnet-4-5"}
    assert table.cost(actual(input=1000, output=1000, cache_read=1000), "my-model") == (
        pytest.approx((1000 * 1 + 1000 * 2 + 1000 * 0.1) / 1e6)
    )
    # An override replaces the whole entry: no long-context price, cache at the input price.
    assert table.cost(actual(input=300_000, output=10, cache_read=10), "claude-sonnet-4-5") == (
        pytest.approx((300_000 * 2 + 10 * 10 + 10 * 2) / 1e6)
    )


def test_a_bad_override_is_an_error_that_names_it(state_home: Path) -> None:
    (state_home / "config.toml").write_text('[pricing.models."m"]\ninput = 1.0\noutputs = 2\n')
    result = ctl("pricing")
    assert result.returncode == 1
    assert b"outputs" in result.stderr


def test_pricing_command(state_home: Path) -> None:
    config_with_override(state_home)
    result = ctl("pricing")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert text.startswith("prices as of 2026-11-22")
    assert "from config.toml [pricing]: claude-sonnet-4-5, my-model" in text
    one = json.loads(ctl("pricing", "claude-sonnet-4-5-20250929", "nope", "--json").stdout)
    assert one["date"] == "2026-11-22" and one["models"]["nope"] is None
    assert one["models"]["claude-sonnet-4-5-20250929"]["priced_as"] == "claude-sonnet-4-5"
    assert one["models"]["claude-sonnet-4-5-20250929"]["src"] == "config"


def test_refresh_from_a_litellm_file() -> None:
    data = {
        "date": "old",
        "models": {
            "claude-x": {"input": 1, "output": 2, "src": "provider"},
            "absent": {"input": 1, "output": 1, "src": "provider"},
        },
    }
    litellm = {
        "claude-x": {
            "input_cost_per_token": 3e-06,
            "output_cost_per_token": 1.5e-05,
            "cache_read_input_token_cost": 3e-07,
            "cache_creation_input_token_cost": 3.75e-06,
            "cache_creation_input_token_cost_above_1hr": 6e-06,
            "input_cost_per_token_above_200k_tokens": 6e-06,
            "output_cost_per_token_above_200k_tokens": 2.25e-05,
        }
    }
    assert pricing.refresh(data, litellm, "2026-12-01") == ["claude-x"]
    assert data["date"] == "2026-12-01"
    assert data["models"]["claude-x"] == {
        "input": 3.0,
        "output": 15.0,
        "cache_read": 0.3,
        "cache_write": 3.75,
        "cache_write_1h": 6.0,
        "src": "litellm",
        "above": {"tokens": 200000, "input": 6.0, "output": 22.5},
    }
    assert data["models"]["absent"]["src"] == "provider"


def test_the_daemon_prices_api_requests_that_report_no_cost(running_daemon: Daemon) -> None:
    """At ingest: computed from the table when the model has a price, kept and marked when
    reported, `unknown` otherwise; other types are left alone."""
    lines = [
        {
            "type": "api_request",
            "id": "a",
            "agent": {"model": "claude-sonnet-4-5-20250929"},
            "tokens": {"source": "actual", "input": 1000, "output": 200, "cache_read": 5000},
        },
        {
            "type": "api_request",
            "id": "b",
            "agent": {"model": "claude-sonnet-4-5"},
            "tokens": {"source": "actual", "input": 1, "output": 1},
            "cost_usd": 0.5,
        },
        {
            "type": "api_request",
            "id": "c",
            "agent": {"model": "llama-3-70b"},
            "tokens": {"source": "actual", "input": 1, "output": 1},
        },
        {
            "type": "api_request",
            "id": "d",
            "agent": {"model": "claude-sonnet-4-5"},
            "tokens": {"source": "unknown"},
        },
        {"type": "custom", "id": "e", "name": "x"},
    ]
    payload = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    assert exchange(running_daemon.events_socket, payload)[-1]["accepted"] == 5
    got = {
        e["id"]: (e.get("cost_usd"), e.get("cost_source")) for e in running_daemon.journal_events()
    }
    # claude-sonnet-4-5: $3 input, $15 output, $0.30 cache read per million tokens.
    assert got["a"][1] == "computed"
    assert got["a"][0] == pytest.approx((1000 * 3 + 200 * 15 + 5000 * 0.3) / 1e6)
    assert got["b"] == (0.5, "reported")
    assert got["c"] == (None, "unknown")
    assert got["d"] == (None, "unknown")
    assert got["e"] == (None, None)


# -- type-confused hints: attrs is free-form, so pricing never fails on it ---------------


@pytest.mark.parametrize(
    "hint",
    [[1, 2], "13835", "x", True, -3, 1.5, {"a": 1}, None, 1e300, 2**70, float("nan")],
)
def test_a_1_hour_hint_that_is_not_a_count_is_ignored(table: pricing.Table, hint: Any) -> None:
    from telemetryd import events

    line = {
        "type": "api_request",
        "agent": {"model": "claude-sonnet-4-5"},
        "tokens": {"source": "actual", "input": 3, "output": 13, "cache_creation": 13835},
        "attrs": {"cache_creation_1h": hint, "speed": ["fast"]},
    }
    plain = (3 * 3 + 13 * 15 + 13835 * 3.75) / 1e6
    event = events.DECODER.decode(json.dumps(line).replace("NaN", '"NaN"'))
    table.price_request(event)
    assert (event.cost_source, event.cost_usd) == ("computed", pytest.approx(plain))
    as_dict = {**line, "attrs": {"cache_creation_1h": hint, "speed": 7}}
    table.price_event(as_dict)
    assert (as_dict["cost_source"], as_dict["cost_usd"]) == ("computed", pytest.approx(plain))


def test_a_whole_float_hint_counts(table: pricing.Table) -> None:
    event: dict[str, Any] = {
        "type": "api_request",
        "agent": {"model": "claude-sonnet-4-5"},
        "tokens": actual(input=3, output=13, cache_creation=13835),
        "attrs": {"cache_creation_1h": 13835.0},
    }
    table.price_event(event)
    assert event["cost_usd"] == pytest.approx((9 + 195 + 13835 * 6) / 1e6)


@pytest.mark.parametrize(
    "event",
    [
        {"type": "api_request", "tokens": [1, 2]},
        {"type": "api_request", "tokens": actual(input="1", output=None), "agent": "m"},
        {"type": "api_request", "tokens": actual(input=1, output=1), "agent": {"model": 5}},
        {"type": "api_request", "tokens": actual(input=[1], output={}), "attrs": [1]},
    ],
)
def test_price_event_never_fails_on_odd_dicts(table: pricing.Table, event: Any) -> None:
    table.price_event(event)
    assert event["cost_source"] == "unknown" or event["cost_usd"] == 0


def test_the_model_name_cache_is_bounded(table: pricing.Table) -> None:
    for n in range(10_000):
        table.lookup(f"claude-sonnet-4-5-{n}")
    assert len(table._cache) <= 4096
    assert table.lookup("claude-sonnet-4-5-20250929") is not None


def test_poison_attrs_cost_the_daemon_nothing(running_daemon: Daemon) -> None:
    """Finding 7 of issue 8: type-confused pricing hints closed the connection, losing the
    good events around them. With `nc`, as a user would send them."""
    lines = [
        {"type": "custom", "id": "before", "name": "x"},
        {
            "type": "api_request",
            "id": "poison-list",
            "agent": {"model": "claude-sonnet-4-5"},
            "tokens": {"source": "actual", "input": 1, "output": 2, "cache_creation": 10},
            "attrs": {"cache_creation_1h": [1, 2]},
        },
        {
            "type": "api_request",
            "id": "poison-str",
            "agent": {"model": "claude-sonnet-4-5"},
            "tokens": {"source": "actual", "input": 1, "output": 2},
            "attrs": {"cache_creation_1h": "many", "speed": {"fast": True}},
        },
        {"type": "custom", "id": "after", "name": "y"},
    ]
    result = subprocess.run(
        ["nc", "-NU", running_daemon.events_socket],
        input=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(reply) for reply in result.stdout.splitlines()] == [summary(4, 4)]
    journaled = {event["id"]: event for event in running_daemon.journal_events()}
    assert list(journaled) == ["before", "poison-list", "poison-str", "after"]
    assert journaled["poison-list"]["cost_source"] == "computed"
    assert journaled["poison-list"]["attrs"] == {"cache_creation_1h": [1, 2]}  # kept as sent
    assert "Traceback" not in running_daemon.log()
