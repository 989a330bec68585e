"""`telemetryctl otel env AGENT`: what each agent needs, checked by the parsers that read it.

Real parts throughout: the installed telemetryctl in a subprocess, bash evaluating its
output, tomllib and json reading the snippets, the token file on disk.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from conftest import TELEMETRYCTL, ctl
from telemetryd import token
from telemetryd.client import otel_setup


@pytest.fixture(autouse=True)
def default_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests read the default `[http] address` (conftest gives daemons port 0)."""
    monkeypatch.delenv("TELEMETRYD_HTTP_ADDRESS", raising=False)


def token_path(state_home: Path) -> Path:
    return state_home / "http-token"


def evaluated(agent: str, *args: str) -> dict[str, str]:
    """The environment after ``eval "$(telemetryctl otel env AGENT ARGS)"`` in bash."""
    script = f'eval "$("$TELEMETRYCTL" otel env {agent} {" ".join(args)})" && env -0'
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COPILOT_"))}
    env["TELEMETRYCTL"] = TELEMETRYCTL
    result = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    pairs = (item.partition("=") for item in result.stdout.decode().split("\0") if item)
    return {name: value for name, _, value in pairs}


def test_claude_code_env_evaluates_with_the_token_from_the_file(state_home: Path) -> None:
    assert not token_path(state_home).exists()
    env = evaluated("claude-code")
    secret = token.read(str(token_path(state_home)))  # made by the command: daemon never ran
    assert secret is not None
    assert stat.S_IMODE(token_path(state_home).stat().st_mode) == 0o600
    assert {k: env[k] for k in env if k.startswith(("OTEL_", "CLAUDE_CODE_"))} == {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{secret}",
    }
    # OpenTelemetry's header syntax: key=value, the value percent-encoded.
    key, _, value = env["OTEL_EXPORTER_OTLP_HEADERS"].partition("=")
    assert (key, unquote(value)) == ("Authorization", f"Bearer {secret}")
    # The beta traces are offered, not set.
    assert "CLAUDE_CODE_ENHANCED_TELEMETRY_BETA" not in env
    out = ctl("otel", "env", "claude-code").stdout.decode()
    assert "#   export CLAUDE_CODE_ENHANCED_TELEMETRY_BETA=1\n" in out
    assert "#   export OTEL_TRACES_EXPORTER=otlp\n" in out


def test_an_existing_token_is_used_and_json_protocol(state_home: Path) -> None:
    secret = token.load_or_create(str(token_path(state_home)))
    env = evaluated("claude-code", "--protocol", "json")
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/json"
    assert unquote(env["OTEL_EXPORTER_OTLP_HEADERS"]) == f"Authorization=Bearer {secret}"


def test_endpoint_from_the_configuration_and_the_flag(state_home: Path) -> None:
    (state_home / "config.toml").write_text('[http]\naddress = "0.0.0.0:14318"\n')
    assert evaluated("copilot")["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:14318"
    (state_home / "config.toml").write_text('[http]\naddress = "[::]:4318"\n')
    assert evaluated("copilot")["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://[::1]:4318"
    central = evaluated("claude-code", "--endpoint", "https://telemetry.example.com:4318/")
    assert central["OTEL_EXPORTER_OTLP_ENDPOINT"] == "https://telemetry.example.com:4318"


def test_a_token_file_of_another_instance(state_home: Path, tmp_path: Path) -> None:
    other = tmp_path / "central-token"
    other.write_text("central-secret\n")
    env = evaluated("gemini", "--endpoint", "http://10.0.0.5:4318", "--token-file", str(other))
    assert unquote(env["OTEL_EXPORTER_OTLP_HEADERS"]) == "Authorization=Bearer central-secret"
    assert not token_path(state_home).exists()  # the local one was not needed


def test_codex_toml_parses_and_has_endpoints_and_header(state_home: Path) -> None:
    result = ctl("otel", "env", "codex", "--format", "toml")
    assert result.returncode == 0, result.stderr
    secret = token.read(str(token_path(state_home)))
    otel = tomllib.loads(result.stdout.decode())["otel"]
    assert otel["log_user_prompt"] is False
    for key, signal in (
        ("exporter", "logs"),
        ("trace_exporter", "traces"),
        ("metrics_exporter", "metrics"),
    ):
        assert otel[key] == {
            "otlp-http": {
                "endpoint": f"http://127.0.0.1:4318/v1/{signal}",
                "protocol": "binary",
                "headers": {"Authorization": f"Bearer {secret}"},
            }
        }
    as_json = ctl("otel", "env", "codex", "--format", "toml", "--protocol", "json")
    assert tomllib.loads(as_json.stdout.decode())["otel"]["exporter"]["otlp-http"]["protocol"] == (
        "json"
    )


def test_codex_shell_form_is_comments_only_and_holds_the_snippet(state_home: Path) -> None:
    out = ctl("otel", "env", "codex").stdout.decode()
    assert all(line.startswith("#") for line in out.splitlines())
    snippet = "\n".join(
        line[4:] for line in out.splitlines() if line.startswith("#   ") or line == "#"
    )
    assert "otlp-http" in tomllib.loads(snippet)["otel"]["exporter"]
    assert not [name for name in evaluated("codex") if name.startswith(("OTEL_", "CODEX"))]


def test_gemini_env_and_settings_json(state_home: Path) -> None:
    env = evaluated("gemini")
    secret = token.read(str(token_path(state_home)))
    assert {k: env[k] for k in env if k.startswith("GEMINI_TELEMETRY_")} == {
        "GEMINI_TELEMETRY_ENABLED": "true",
        "GEMINI_TELEMETRY_TARGET": "local",
        "GEMINI_TELEMETRY_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "GEMINI_TELEMETRY_OTLP_PROTOCOL": "http",
        "GEMINI_TELEMETRY_LOG_PROMPTS": "false",
    }
    assert unquote(env["OTEL_EXPORTER_OTLP_HEADERS"]) == f"Authorization=Bearer {secret}"
    settings = json.loads(ctl("otel", "env", "gemini", "--format", "json").stdout)
    assert settings == {
        "telemetry": {
            "enabled": True,
            "target": "local",
            "otlpEndpoint": "http://127.0.0.1:4318",
            "otlpProtocol": "http",
            "logPrompts": False,
        }
    }


def test_copilot_env_and_vscode_settings(state_home: Path) -> None:
    env = evaluated("copilot")
    assert env["COPILOT_OTEL_ENABLED"] == "true"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"].startswith("Authorization=Bearer%20")
    out = ctl("otel", "env", "copilot").stdout.decode()
    assert '#     "github.copilot.chat.otel.enabled": true,\n' in out
    settings = json.loads(ctl("otel", "env", "copilot", "--format", "json").stdout)
    assert settings == {
        "github.copilot.chat.otel.enabled": True,
        "github.copilot.chat.otel.exporterType": "otlp-http",
        "github.copilot.chat.otel.otlpEndpoint": "http://127.0.0.1:4318",
    }


def test_claude_code_settings_env_block(state_home: Path) -> None:
    settings = json.loads(ctl("otel", "env", "claude-code", "--format", "json").stdout)
    assert settings["env"]["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert settings["env"]["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cursor"], "'cursor' is not one of 'claude-code', 'codex', 'gemini', 'copilot'"),
        (["codex", "--format", "json"], "codex has no json snippet; use --format shell or toml"),
        (["gemini", "--format", "toml"], "gemini has no toml snippet; use --format shell or json"),
        (["copilot", "--endpoint", "ftp://x"], "expected an http:// or https:// URL"),
    ],
)
def test_errors_name_the_choices(args: list[str], message: str) -> None:
    result = ctl("otel", "env", *args)
    assert result.returncode != 0
    assert message in result.stderr.decode()
    assert result.stdout == b""


def test_http_disabled_says_so(state_home: Path) -> None:
    (state_home / "config.toml").write_text("[http]\nenabled = false\n")
    result = ctl("otel", "env", "claude-code")
    assert result.returncode == 1
    assert result.stdout == b""
    err = result.stderr.decode()
    assert "the HTTP listener is off (http.enabled = false, file " in err
    assert "--endpoint" in err
    # Another instance is still reachable.
    assert ctl("otel", "env", "claude-code", "--endpoint", "http://10.1.1.1:4318").returncode == 0


def test_the_header_encoding_follows_the_baggage_syntax() -> None:
    endpoint = otel_setup.Endpoint("http://127.0.0.1:4318", "a b,c;d%e\\f")
    key, _, value = endpoint.otel_headers.partition("=")
    assert key == "Authorization"
    assert not set(value) & set(' ",;\\')
    assert unquote(value) == "Bearer a b,c;d%e\\f"


def test_an_sdk_set_up_by_the_printed_lines_reaches_the_daemon(
    daemon_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole promise: eval the printed lines, and an OpenTelemetry exporter that reads
    only its environment (as an agent's does) delivers to the running daemon. The daemon
    listens on a free port (port 0): the printed endpoint is the one it took."""
    monkeypatch.setenv("TELEMETRYD_HTTP_ADDRESS", "127.0.0.1:0")
    daemon = daemon_factory().start()
    program = (
        "from opentelemetry._logs import LogRecord\n"
        "from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter\n"
        "from opentelemetry.sdk._logs import LoggerProvider\n"
        "from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor\n"
        "provider = LoggerProvider()\n"
        "provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter()))\n"
        "provider.get_logger('t').emit(LogRecord(body='from the environment'))\n"
        "provider.shutdown()\n"
    )
    script = 'eval "$("$TELEMETRYCTL" otel env claude-code)" && exec "$PYTHON" -c "$PROGRAM"'
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(TELEMETRYCTL=TELEMETRYCTL, PYTHON=sys.executable, PROGRAM=program)
    result = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"Failed to export" not in result.stderr, result.stderr.decode()
    assert any("from the environment" in json.dumps(e) for e in daemon.journal_events())
