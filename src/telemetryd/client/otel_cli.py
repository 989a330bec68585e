"""`telemetryctl otel ...`: set agents up to send their own OpenTelemetry (click layer).

The work is :mod:`telemetryd.client.otel_setup`; ``cli.py`` registers this group with
``cli.add_command(otel_group)``.
"""

from __future__ import annotations

from typing import cast

import click

from telemetryd.client import otel_setup
from telemetryd.client.cli_errors import handle_errors


@click.group("otel")
def otel_group() -> None:
    """Point agents' own OpenTelemetry export at telemetryd's HTTP listener."""


@otel_group.command("env")
@click.argument("agent", type=click.Choice(otel_setup.AGENTS), metavar="AGENT")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(otel_setup.FORMATS),
    default="shell",
    show_default=True,
    help="shell: export lines, the rest as # comments (eval-safe); toml or json: the "
    "agent's config-file snippet alone (toml for codex; json for the others)",
)
@click.option(
    "--endpoint",
    metavar="URL",
    envvar="TELEMETRYD_HTTP_ENDPOINT",
    help="the listener's base URL, e.g. a central instance's "
    "(default: from [http] address of the configuration)",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="the bearer token's file (default: http-token in the state directory; made when missing)",
)
@click.option(
    "--protocol",
    type=click.Choice(otel_setup.PROTOCOLS),
    default="protobuf",
    show_default=True,
    help="OTLP/HTTP encoding for the agents that let you choose (Gemini CLI sends JSON)",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="configuration file (default: config.toml in the config dir)",
)
@handle_errors
def env_command(
    agent: str,
    output_format: str,
    endpoint: str | None,
    token_file: str | None,
    protocol: str,
    config_file: str | None,
) -> None:
    """Print what AGENT needs to send its telemetry here, with the token.

    AGENT is claude-code, codex, gemini or copilot. The shell form is safe to eval:
    environment variables as `export` lines, config-file snippets (Codex has only
    config.toml) and optional settings as `#` comments. --format toml|json prints
    the snippet alone, to paste or merge into the agent's file.

    The endpoint is [http] address of the configuration (--endpoint for another
    instance); the token is the one in the state directory's http-token file, made
    now if the daemon has never run. The output holds the token: keep files you
    save it in private.

    \b
    Examples:
      eval "$(telemetryctl otel env claude-code)"
      telemetryctl otel env codex --format toml >> ~/.codex/config.toml
      telemetryctl otel env gemini --endpoint http://collector.lan:4318
    """
    where = otel_setup.resolve(endpoint=endpoint, token_file=token_file, config_file=config_file)
    found = otel_setup.setup(agent, where, cast(otel_setup.Protocol, protocol))
    if output_format == "shell":
        source = otel_setup.describe_source(where, token_file)
        click.echo(otel_setup.render_shell(found, source=source), nl=False)
        return
    if output_format not in found.formats:
        raise click.UsageError(
            f"{agent} has no {output_format} snippet; use --format {' or '.join(found.formats)}"
        )
    click.echo(found.snippet, nl=False)
