"""What each agent needs to send its own OpenTelemetry to telemetryd's HTTP listener.

`telemetryctl otel env AGENT` prints it (``client/otel_cli.py``); `telemetryctl hooks
install claude-code --http` uses :func:`resolve` for the hooks' URL and token. Nothing
here prints or exits: a :class:`Setup` is data (environment variables, one config-file
snippet, notes), rendered by :func:`render_shell` or taken as the snippet alone.

Where the agents read their configuration (checked against their sources):

- Claude Code: environment variables only (or the ``env`` block of its settings.json).
  ``OTEL_EXPORTER_OTLP_PROTOCOL`` has no default there and must be set; the endpoint is
  the base URL (the OpenTelemetry JS SDK appends ``/v1/logs`` ...); traces need the beta
  flag ``CLAUDE_CODE_ENHANCED_TELEMETRY_BETA=1`` and ``OTEL_TRACES_EXPORTER``.
- Codex: ``[otel]`` in ``~/.codex/config.toml`` only; ``exporter`` (logs),
  ``trace_exporter`` and ``metrics_exporter`` each take ``{ otlp-http = { endpoint,
  protocol = "binary" | "json", headers } }`` with the full per-signal URL. Codex puts
  the header values in as written, so the token is in that file.
- Gemini CLI: ``telemetry`` in settings.json or the ``GEMINI_TELEMETRY_*`` variables;
  with ``otlpProtocol = "http"`` it appends ``v1/logs`` ... to ``otlpEndpoint`` and sends
  JSON. It has no header setting, but its exporters are OpenTelemetry JS's, which add
  ``OTEL_EXPORTER_OTLP_HEADERS`` from the environment.
- GitHub Copilot (CLI, and VS Code's Copilot Chat): ``COPILOT_OTEL_ENABLED`` and the
  standard ``OTEL_EXPORTER_OTLP_*`` variables (they win over VS Code's
  ``github.copilot.chat.otel.*`` settings, which have no header setting).

``OTEL_EXPORTER_OTLP_HEADERS`` is OpenTelemetry's list of ``key=value`` pairs in the W3C
baggage syntax, values percent-encoded: ``Authorization=Bearer%20<token>``. The JS SDK
(Claude Code, Gemini CLI, Copilot) decodes it with ``decodeURIComponent``; Python's SDK
rejects an unencoded space, so the encoded form is the one that works everywhere.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, urlsplit

from telemetryd import config, paths, token
from telemetryd.errors import ConfigError

AGENTS = ("claude-code", "codex", "gemini", "copilot")
Protocol = Literal["protobuf", "json"]
PROTOCOLS: tuple[Protocol, ...] = ("protobuf", "json")
Format = Literal["shell", "toml", "json"]
FORMATS: tuple[Format, ...] = ("shell", "toml", "json")
# The variable the http hooks read their token from (hooks install --http).
TOKEN_ENV = "TELEMETRYD_HTTP_TOKEN"
SIGNALS = ("logs", "metrics", "traces")

# Characters a W3C baggage value may hold as they are (baggage-octet: printable ASCII
# without space, '"', ',', ';', '\\'); '%' is left out so that it is encoded too.
_BAGGAGE_SAFE = "!#$&'()*+-./:<=>?@[]^_`{|}~"


class HttpDisabled(ConfigError):
    """The HTTP listener is turned off in the configuration."""


@dataclass(frozen=True)
class Endpoint:
    """Where an agent sends its telemetry: the listener's base URL and the bearer token."""

    base: str  # http://127.0.0.1:4318, no trailing slash
    token: str

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header's value."""
        return f"Bearer {self.token}"

    @property
    def otel_headers(self) -> str:
        """``OTEL_EXPORTER_OTLP_HEADERS``: ``Authorization=Bearer%20<token>``."""
        return f"Authorization={quote(self.authorization, safe=_BAGGAGE_SAFE)}"


def base_url(address: str) -> str:
    """The URL a client on this machine uses for ``[http] address``: a wildcard address
    (``0.0.0.0``, ``::``) becomes the loopback one, an IPv6 host goes in brackets."""
    host, port = config.split_address(address)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{port}"
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    text = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{text}:{port}"


def check_url(url: str) -> str:
    """``url`` without a trailing slash; a ConfigError unless it is an http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"--endpoint {url!r}: expected an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"--endpoint {url!r}: a base URL has no query or fragment")
    return url.rstrip("/")


def resolve(
    *,
    endpoint: str | None = None,
    token_file: str | None = None,
    config_file: str | None = None,
) -> Endpoint:
    """The listener's URL (``endpoint``, else ``[http] address`` of the effective
    configuration) and the token in ``token_file`` (default: the state directory's,
    made now when the daemon never ran).

    Raises HttpDisabled when ``[http] enabled = false`` and no ``endpoint`` names another
    instance; ConfigError for a bad configuration or URL; PathError for the token file.
    """
    where = paths.resolve()
    if endpoint is not None:
        base = check_url(endpoint)
    else:
        path = config_file or where.config_file
        settings, origin = config.load(path, require_file=config_file is not None)
        if not settings.http.enabled:
            raise HttpDisabled(
                f"the HTTP listener is off (http.enabled = false, {origin['http.enabled']}); "
                "set it to true and restart telemetryd, or give --endpoint URL for another "
                "instance"
            )
        address = settings.http.address
        if config.split_address(address)[1] == 0:
            address = _running_address(where.control_socket)
        base = base_url(address)
    return Endpoint(base, token.load_or_create(token_file or where.http_token_file))


def _running_address(control_socket: str) -> str:
    """``[http] address`` says port 0 (any free port): the one the running daemon took."""
    from telemetryd.client import control
    from telemetryd.errors import TelemetryError

    problem = "it is not running"
    try:
        http = control.status(control_socket).get("http") or {}
        if http.get("listening"):
            return str(http["address"])
        problem = f"its HTTP listener is off: {http.get('error') or 'disabled'}"
    except TelemetryError as exc:
        problem = f"it is not reachable: {exc}"
    raise ConfigError(
        f"http.address has port 0 (any free port) and telemetryd cannot say which it took: "
        f"{problem}; start it, or give --endpoint URL"
    )


@dataclass
class Setup:
    """One agent's configuration: what to export, and what to paste where."""

    agent: str
    env: list[tuple[str, str]] = field(default_factory=list)
    # Variables to set only for an optional feature: (name, value, what it is for).
    optional_env: list[tuple[str, str, str]] = field(default_factory=list)
    snippet: str = ""  # the config-file text to paste
    snippet_format: Literal["toml", "json"] = "json"
    snippet_where: str = ""  # which file, and which part of it
    notes: list[str] = field(default_factory=list)
    # Whether the shell form shows the snippet (as comments) after the exports.
    snippet_in_shell: bool = True

    @property
    def formats(self) -> tuple[Format, ...]:
        return ("shell", self.snippet_format)


def setup(agent: str, endpoint: Endpoint, protocol: Protocol = "protobuf") -> Setup:
    """The configuration of ``agent`` (one of :data:`AGENTS`) for ``endpoint``."""
    build = {
        "claude-code": _claude_code,
        "codex": _codex,
        "gemini": _gemini,
        "copilot": _copilot,
    }.get(agent)
    if build is None:
        raise ConfigError(f"unknown agent {agent!r}; choose one of: {', '.join(AGENTS)}")
    return build(endpoint, protocol)


def _claude_code(endpoint: Endpoint, protocol: Protocol) -> Setup:
    env = [
        ("CLAUDE_CODE_ENABLE_TELEMETRY", "1"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_LOGS_EXPORTER", "otlp"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", f"http/{protocol}"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.base),
        ("OTEL_EXPORTER_OTLP_HEADERS", endpoint.otel_headers),
    ]
    return Setup(
        "claude-code",
        env=env,
        optional_env=[
            ("CLAUDE_CODE_ENHANCED_TELEMETRY_BETA", "1", "traces (Claude Code's beta)"),
            ("OTEL_TRACES_EXPORTER", "otlp", "traces (Claude Code's beta)"),
        ],
        snippet=_json({"env": dict(env)}),
        snippet_format="json",
        snippet_where="~/.claude/settings.json (merge into its env block)",
        snippet_in_shell=False,
        notes=[
            "Claude Code reads these from its environment or from the env block of its "
            "settings.json (which keeps them out of other programs' environment).",
        ],
    )


def _codex(endpoint: Endpoint, protocol: Protocol) -> Setup:
    wire = "binary" if protocol == "protobuf" else "json"
    header = f"{{ {_toml_string('Authorization')} = {_toml_string(endpoint.authorization)} }}"

    def exporter(signal: str) -> str:
        return (
            f"{{ otlp-http = {{ endpoint = {_toml_string(endpoint.url('v1/' + signal))}, "
            f"protocol = {_toml_string(wire)}, headers = {header} }} }}"
        )

    snippet = "\n".join(
        [
            "[otel]",
            "log_user_prompt = false",
            f"exporter = {exporter('logs')}",
            f"trace_exporter = {exporter('traces')}",
            f"metrics_exporter = {exporter('metrics')}",
            "",
        ]
    )
    return Setup(
        "codex",
        snippet=snippet,
        snippet_format="toml",
        snippet_where="~/.codex/config.toml (or $CODEX_HOME/config.toml)",
        notes=[
            "Codex reads OpenTelemetry settings from config.toml only; it sends header "
            "values as written, so keep that file private (chmod 600).",
            "A config.toml that already has an [otel] table: merge these keys into it.",
        ],
    )


def _gemini(endpoint: Endpoint, protocol: Protocol) -> Setup:
    del protocol  # Gemini CLI's "http" protocol is always OTLP/JSON
    telemetry = {
        "enabled": True,
        "target": "local",
        "otlpEndpoint": endpoint.base,
        "otlpProtocol": "http",
        "logPrompts": False,
    }
    return Setup(
        "gemini",
        env=[
            ("GEMINI_TELEMETRY_ENABLED", "true"),
            ("GEMINI_TELEMETRY_TARGET", "local"),
            ("GEMINI_TELEMETRY_OTLP_ENDPOINT", endpoint.base),
            ("GEMINI_TELEMETRY_OTLP_PROTOCOL", "http"),
            ("GEMINI_TELEMETRY_LOG_PROMPTS", "false"),
            ("OTEL_EXPORTER_OTLP_HEADERS", endpoint.otel_headers),
        ],
        snippet=_json({"telemetry": telemetry}),
        snippet_format="json",
        snippet_where="~/.gemini/settings.json",
        notes=[
            "Gemini CLI has no header setting: the token reaches it only through "
            "OTEL_EXPORTER_OTLP_HEADERS in its environment, whichever way the rest is set.",
        ],
    )


def _copilot(endpoint: Endpoint, protocol: Protocol) -> Setup:
    settings = {
        "github.copilot.chat.otel.enabled": True,
        "github.copilot.chat.otel.exporterType": "otlp-http",
        "github.copilot.chat.otel.otlpEndpoint": endpoint.base,
    }
    return Setup(
        "copilot",
        env=[
            ("COPILOT_OTEL_ENABLED", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.base),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", f"http/{protocol}"),
            ("OTEL_EXPORTER_OTLP_HEADERS", endpoint.otel_headers),
        ],
        snippet=_json(settings),
        snippet_format="json",
        snippet_where="VS Code settings.json (Copilot Chat)",
        notes=[
            "The variables serve the Copilot CLI and VS Code alike (they win over the "
            "settings). VS Code's settings have no header: start VS Code from a shell "
            "where OTEL_EXPORTER_OTLP_HEADERS is set.",
        ],
    )


def render_shell(found: Setup, *, source: str = "") -> str:
    """``found`` as shell: ``export`` lines (quoted), everything else ``#`` comments, so
    that ``eval "$(telemetryctl otel env AGENT)"`` sets exactly the variables."""
    lines = [f"# {found.agent}: send its OpenTelemetry to telemetryd{source}"]
    for name, value in found.env:
        lines.append(f"export {name}={shlex.quote(value)}")
    topics = dict.fromkeys(why for _, _, why in found.optional_env)
    for topic in topics:
        lines.append(f"# for {topic}, also:")
        for name, value, why in found.optional_env:
            if why == topic:
                lines.append(f"#   export {name}={shlex.quote(value)}")
    for note in found.notes:
        lines.append(f"# {note}")
    if found.snippet_in_shell:
        how = "or instead of the variables" if found.env else "paste it without the '#'"
        lines.append(f"# {found.snippet_where}, {how}:")
        lines.extend(f"#   {line}" if line else "#" for line in found.snippet.splitlines())
    return "\n".join(lines) + "\n"


def _json(value: object) -> str:
    return json.dumps(value, indent=2) + "\n"


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's for these characters)."""
    return json.dumps(text, ensure_ascii=True)


def token_file_default() -> str:
    return paths.resolve().http_token_file


def describe_source(endpoint: Endpoint, token_file: str | None) -> str:
    """`` (http://127.0.0.1:4318, token from /path/http-token)`` for the heading line."""
    where = token_file or token_file_default()
    return f" ({endpoint.base}, token from {os.path.abspath(where)})"
