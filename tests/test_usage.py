"""SDK usage normalization (adapters/usage.py): every shape, totals computed by hand."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import TELEMETRYCTL, Daemon, ctl
from telemetryd import events
from telemetryd.adapters import usage

SAMPLES = Path("/work/shared/samples")
ROOT = Path(__file__).resolve().parent.parent


def actual(**counts: int) -> dict[str, Any]:
    """Expected actual tokens: the counts given, total = input+output+cache_read+cache_creation."""
    out: dict[str, Any] = {"source": "actual", **counts}
    out["total"] = sum(
        counts.get(k, 0) for k in ("input", "output", "cache_read", "cache_creation")
    )
    return out


def assert_valid(tokens: dict[str, Any]) -> None:
    """The normalized tokens are a valid Tokens value of the event model."""
    msgspec.convert(tokens, events.Tokens)


# -- one test per shape ------------------------------------------------------------


def test_codex_example_from_the_issue() -> None:
    # input_tokens 1000 of which cached_input_tokens 250 -> input 750, cache_read 250.
    raw = {"input_tokens": 1000, "cached_input_tokens": 250, "output_tokens": 125}
    assert usage.tokens(raw) == actual(input=750, cache_read=250, output=125)


def test_codex_with_reasoning_inside_output() -> None:
    # A real rollout (localpush fixture): total = input + output, so the 264 reasoning
    # tokens are already part of the 431 output tokens.
    raw = {
        "input_tokens": 34469,
        "cached_input_tokens": 3456,
        "output_tokens": 431,
        "reasoning_output_tokens": 264,
        "total_tokens": 34900,
    }
    tokens = usage.tokens(raw)
    assert tokens == actual(input=34469 - 3456, cache_read=3456, output=431, reasoning=264)
    assert tokens["total"] == 34900
    assert_valid(tokens)


def test_codex_reporting_reasoning_outside_output() -> None:
    # ccusage's synthetic fixture: total 1200 = 1000 + 125 + 75, so reasoning is extra.
    raw = {
        "input_tokens": 1000,
        "cached_input_tokens": 250,
        "output_tokens": 125,
        "reasoning_output_tokens": 75,
        "total_tokens": 1200,
    }
    tokens = usage.tokens(raw)
    assert tokens == actual(input=750, cache_read=250, output=200, reasoning=75)
    assert tokens["total"] == 1200


def test_codex_token_count_payload_uses_last_token_usage() -> None:
    payload = {
        "type": "token_count",
        "info": {
            "total_token_usage": {
                "input_tokens": 3500,
                "cached_input_tokens": 750,
                "output_tokens": 425,
                "total_tokens": 3925,
            },
            "last_token_usage": {
                "input_tokens": 2500,
                "cached_input_tokens": 500,
                "output_tokens": 300,
                "total_tokens": 2800,
            },
            "model": "gpt-5.3-codex",
        },
    }
    found = usage.normalize(payload)
    assert found == {
        "tokens": actual(input=2000, cache_read=500, output=300),
        "model": "gpt-5.3-codex",
    }


def test_openai_chat_completion() -> None:
    response = {
        "id": "chatcmpl-1",
        "model": "gpt-4o-2024-08-06",
        "usage": {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 64, "audio_tokens": 0},
        },
    }
    found = usage.normalize(response)
    assert found["tokens"] == actual(input=86, cache_read=1920, output=300, reasoning=64)
    assert found["tokens"]["total"] == 2306
    assert found["model"] == "gpt-4o-2024-08-06"
    assert_valid(found["tokens"])


def test_openai_chat_without_details() -> None:
    assert usage.tokens({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}) == (
        actual(input=10, output=5)
    )


def test_openai_responses_api() -> None:
    # response.completed event: the usage sits under response.usage.
    event = {
        "type": "response.completed",
        "response": {
            "model": "o4-mini",
            "usage": {
                "input_tokens": 5000,
                "input_tokens_details": {"cached_tokens": 4096},
                "output_tokens": 1200,
                "output_tokens_details": {"reasoning_tokens": 1024},
                "total_tokens": 6200,
            },
        },
    }
    found = usage.normalize(event)
    assert found["tokens"] == actual(input=904, cache_read=4096, output=1200, reasoning=1024)
    assert found["model"] == "o4-mini"


def test_item_usage() -> None:
    assert usage.tokens({"item": {"usage": {"input_tokens": 7, "output_tokens": 3}}}) == actual(
        input=7, output=3
    )


def test_anthropic_message() -> None:
    # Anthropic's input_tokens excludes the cache: nothing is subtracted.
    message = {
        "id": "msg_01",
        "model": "claude-sonnet-4-5",
        "usage": {
            "input_tokens": 3,
            "cache_creation_input_tokens": 13835,
            "cache_read_input_tokens": 11515,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 13835},
            "output_tokens": 13,
            "service_tier": "standard",
        },
    }
    found = usage.normalize(message)
    assert found["tokens"] == actual(input=3, cache_creation=13835, cache_read=11515, output=13)
    assert found["tokens"]["total"] == 3 + 13835 + 11515 + 13
    assert found["model"] == "claude-sonnet-4-5"


def test_anthropic_under_message_usage() -> None:
    # A stream's message_start event and a Claude Code transcript line.
    line = {"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}
    assert usage.tokens(line) == actual(input=9, output=1)


def test_claude_code_result_with_cost() -> None:
    result = {
        "type": "result",
        "subtype": "success",
        "total_cost_usd": 0.0347,
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 5000,
            "cache_read_input_tokens": 20000,
            "output_tokens": 480,
        },
    }
    found = usage.normalize(result)
    assert found["tokens"] == actual(input=12, cache_creation=5000, cache_read=20000, output=480)
    assert found["cost_usd"] == pytest.approx(0.0347)


def test_result_usage_nested() -> None:
    found = usage.normalize(
        {"result": {"usage": {"input_tokens": 1, "output_tokens": 2}, "cost_usd": 0.5}}
    )
    assert found == {"tokens": actual(input=1, output=2), "cost_usd": 0.5}


def test_gemini_usage_metadata_adds_thoughts_to_output() -> None:
    response = {
        "modelVersion": "gemini-2.5-pro",
        "usageMetadata": {
            "promptTokenCount": 29082,
            "cachedContentTokenCount": 8156,
            "candidatesTokenCount": 89,
            "thoughtsTokenCount": 642,
            "totalTokenCount": 29813,
        },
    }
    found = usage.normalize(response)
    # input 29082 - 8156 = 20926; output 89 + 642 = 731; total 20926 + 8156 + 731 = 29813.
    assert found["tokens"] == actual(input=20926, cache_read=8156, output=731, reasoning=642)
    assert found["tokens"]["total"] == 29813
    assert found["model"] == "gemini-2.5-pro"
    assert_valid(found["tokens"])


def test_gemini_omitted_zero_counts() -> None:
    # Gemini leaves out counts that are zero: no candidates, no cache.
    raw = {"usageMetadata": {"promptTokenCount": 40, "totalTokenCount": 40}}
    assert usage.tokens(raw) == actual(input=40, output=0)


def test_gemini_tool_use_prompt_tokens_are_input() -> None:
    raw = {
        "usage_metadata": {
            "prompt_token_count": 100,
            "tool_use_prompt_token_count": 20,
            "candidates_token_count": 10,
            "total_token_count": 130,
        }
    }
    assert usage.tokens(raw) == actual(input=120, output=10)


def test_gemini_cli_record_from_the_samples() -> None:
    # vibecodingtracker gemini.jsonl: {"input", "output", "cached", "thoughts", "tool", "total"}.
    path = SAMPLES / "gemini" / "vibecodingtracker_session_jsonl.lines-9-28.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    record = next(r for r in records if r.get("tokens", {}).get("cached") == 32637)
    assert record["tokens"] == {
        "input": 40914,
        "output": 351,
        "cached": 32637,
        "thoughts": 161,
        "tool": 0,
        "total": 41426,
    }
    found = usage.normalize(record)
    # input 40914 - 32637 = 8277; output 351 + 161 = 512; total 8277 + 32637 + 512 = 41426.
    assert found["tokens"] == actual(input=8277, cache_read=32637, output=512, reasoning=161)
    assert found["tokens"]["total"] == record["tokens"]["total"]
    assert found["model"] == "gemini-3-flash-preview"


def test_copilot_assistant_usage_event() -> None:
    # Copilot's inputTokens include both cache buckets.
    event = {
        "type": "assistant.usage",
        "data": {
            "model": "claude-sonnet-4.5",
            "inputTokens": 16801,
            "outputTokens": 5,
            "cacheReadTokens": 0,
            "cacheWriteTokens": 16798,
            "cost": 1.0,  # premium requests, not dollars: not a cost_usd
        },
    }
    found = usage.normalize(event)
    assert found == {
        "tokens": actual(input=3, cache_creation=16798, output=5),
        "model": "claude-sonnet-4.5",
    }


def test_copilot_metrics_usage() -> None:
    metrics = {
        "metrics": {
            "usage": {
                "inputTokens": 100.0,
                "outputTokens": 50.0,
                "cacheReadTokens": 10.0,
                "cacheWriteTokens": 5.0,
            }
        }
    }
    assert usage.tokens(metrics) == actual(input=85, cache_read=10, cache_creation=5, output=50)


def test_copilot_data_usage() -> None:
    raw = {"data": {"usage": {"inputTokens": 20, "outputTokens": 2, "cacheReadTokens": 15}}}
    assert usage.tokens(raw) == actual(input=5, cache_read=15, output=2)


def test_ai_sdk_camel_case() -> None:
    raw = {
        "usage": {
            "inputTokens": 300,
            "cachedInputTokens": 200,
            "outputTokens": 40,
            "reasoningTokens": 30,
            "totalTokens": 340,
        }
    }
    assert usage.tokens(raw) == actual(input=100, cache_read=200, output=40, reasoning=30)


def test_langchain_usage_metadata() -> None:
    raw = {
        "usage_metadata": {
            "input_tokens": 350,
            "output_tokens": 240,
            "total_tokens": 590,
            "input_token_details": {"cache_read": 100, "cache_creation": 200},
            "output_token_details": {"reasoning": 200},
        }
    }
    assert usage.tokens(raw) == actual(
        input=50, cache_read=100, cache_creation=200, output=240, reasoning=200
    )


def test_total_fills_a_missing_side() -> None:
    # Codex rate-limit-only fixture: input and total, no output.
    raw = {"total_token_usage": {"input_tokens": 100, "total_tokens": 100}}
    assert usage.tokens(raw) == actual(input=100, output=0)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "text",
        42,
        [],
        {},
        {"usage": None},
        {"usage": {}},
        {"usage": {"input_tokens": "many"}},
        {"usage": {"input_tokens": -5, "output_tokens": 2}},
        {"usage": {"input_tokens": True, "output_tokens": 2}},
        {"usage": {"input_tokens": 1.5, "output_tokens": 2}},
        {"usage": {"input_tokens": 10}},  # no output and no total
        {"choices": [{"message": {"content": "hi"}}]},
    ],
    ids=lambda raw: json.dumps(raw)[:40],
)
def test_missing_or_odd_usage_is_unknown_never_an_error(raw: Any) -> None:
    assert usage.normalize(raw) == {"tokens": {"source": "unknown"}}


def test_generic_search_finds_a_nested_usage() -> None:
    deep = {"a": [{"b": {"usage": {"prompt_tokens": 4, "completion_tokens": 1}}}]}
    assert usage.tokens(deep) == actual(input=4, output=1)


def test_inconsistent_cache_larger_than_input_clamps_to_zero() -> None:
    raw = {
        "prompt_tokens": 10,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 50},
    }
    tokens = usage.tokens(raw)
    assert tokens == actual(input=0, cache_read=50, output=1)
    assert_valid(tokens)


def test_parts_and_total_is_the_general_rule_of_its_counts() -> None:
    """usage.parts_and_total's shortcut: what _actual makes of the same counts."""
    values = (0, 1, 7, 500, 2**53 - 1)
    for inp, out, read, write, reasoning, total in itertools.product(values, repeat=6):
        missing = max(0, total - (inp + out + read + write))
        general = usage._actual(
            input_all=None,
            input_uncached=inp,
            cached=read,
            cache_creation=write,
            output=out + max(missing, reasoning),
            reasoning=reasoning,
        )
        found = usage.parts_and_total(
            input=inp,
            output=out,
            cache_read=read,
            cache_write=write,
            reasoning=reasoning,
            total=total,
        )
        assert found == general


def test_input_with_caches_is_the_rule_of_the_copilot_shape() -> None:
    """usage.input_with_caches (the GenAI mapper's counts): what tokens_from_usage makes
    of a usage of Copilot's or the AI SDK's shape with the same counts."""
    values = (None, 0, 3, 1000, 2**53 - 1)
    for inp, out, read, write, reasoning in itertools.product(values, repeat=5):
        shaped = {"input_tokens": inp, "cache_read_tokens": read or 0,
                  "cache_write_tokens": write or 0, "output_tokens": out,
                  "reasoning_tokens": reasoning}  # fmt: skip
        found = usage.input_with_caches(
            input=inp, output=out, cache_read=read or 0, cache_write=write or 0, reasoning=reasoning
        )
        assert found == usage.tokens_from_usage(shaped)


def test_snake() -> None:
    assert usage.snake("promptTokenCount") == "prompt_token_count"
    assert usage.snake("input_tokens") == "input_tokens"
    assert usage.snake("costUSD") == "cost_u_s_d"  # not a key the shapes need snake for


def test_usage_module_imports_nothing() -> None:
    code = "import sys, telemetryd.adapters.usage; print(sorted(m for m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    loaded = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert not loaded & {"msgspec", "re", "json", "click", "typing"}


# -- telemetryctl send --usage-json --------------------------------------------------


def test_send_usage_json_from_stdin(running_daemon: Daemon) -> None:
    response = {
        "model": "gpt-4o",
        "usage": {
            "prompt_tokens": 1000,
            "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 250},
        },
    }
    result = ctl(
        "send",
        "--usage-json",
        "-",
        "--id",
        "ev-usage",
        "--session",
        "s1",
        input=json.dumps(response).encode(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    [event] = [e for e in running_daemon.journal_events() if e["id"] == "ev-usage"]
    assert event["type"] == "api_request"
    assert event["agent"] == {"model": "gpt-4o"}
    assert event["tokens"] == actual(input=750, cache_read=250, output=50)


def test_send_usage_json_from_a_file_with_cost(running_daemon: Daemon, tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(
        json.dumps(
            {
                "type": "result",
                "total_cost_usd": 0.25,
                "usage": {"input_tokens": 5, "output_tokens": 6, "cache_read_input_tokens": 7},
            }
        )
    )
    result = ctl("send", "--usage-json", str(path), "--model", "claude-opus-4-6", "--id", "ev-u2")
    assert result.returncode == 0, result.stderr
    [event] = [e for e in running_daemon.journal_events() if e["id"] == "ev-u2"]
    assert event["tokens"] == actual(input=5, output=6, cache_read=7)
    assert event["cost_usd"] == 0.25 and event["cost_source"] == "reported"
    assert event["agent"]["model"] == "claude-opus-4-6"


def test_send_usage_json_without_usage_is_unknown(running_daemon: Daemon) -> None:
    result = ctl("send", "--usage-json", "-", "--model", "m", "--id", "ev-u3", input=b"{}")
    assert result.returncode == 0, result.stderr
    [event] = [e for e in running_daemon.journal_events() if e["id"] == "ev-u3"]
    assert event["tokens"] == {"source": "unknown"}


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--usage-json", "-", "--input-tokens", "3"], b"{}", "not both"),
        (["--usage-json", "-"], b"{nope", "--usage-json"),
        (["--usage-json", "-", "--file", "x.json"], b"{}", "not with"),
    ],
    ids=["with-token-flags", "bad-json", "with-file"],
)
def test_send_usage_json_usage_errors(
    running_daemon: Daemon, args: list[str], stdin: bytes, message: str
) -> None:
    result = ctl("send", *args, input=stdin)
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_send_without_usage_json_does_not_import_the_adapter(running_daemon: Daemon) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            TELEMETRYCTL,
            "send",
            "--type",
            "custom",
            "--name",
            "x",
            "--id",
            "ev-light",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "telemetryd.adapters" not in result.stderr
