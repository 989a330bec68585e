"""Write docs/cli.md: every `telemetryctl` command's --help, in order.

    python -m telemetryd.client.clidoc > docs/cli.md

tests/test_cli.py fails when the committed file and the commands' help drift.
"""

from __future__ import annotations

import io
import sys

import click
from click.testing import CliRunner

from telemetryd.client.cli import cli

WIDTH = 88


def _help(path: list[str]) -> str:
    """Exactly what `telemetryctl PATH --help` prints (the commands that parse their own
    options, like `send`, included)."""
    result = CliRunner().invoke(
        cli, [*path, "--help"], prog_name="telemetryctl", terminal_width=WIDTH
    )
    if result.exit_code != 0:
        raise RuntimeError(f"telemetryctl {' '.join(path)} --help failed: {result.output}")
    return result.output


def _walk(command: click.Command, path: list[str]) -> list[list[str]]:
    """The command paths below ``command``, depth first, sorted by name."""
    found = [path]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            found.extend(_walk(command.commands[name], [*path, name]))
    return found


def render() -> str:
    out = io.StringIO()
    out.write("# telemetryctl reference\n\n")
    out.write("Generated from `--help` by `python -m telemetryd.client.clidoc`; do not edit.\n")
    for path in _walk(cli, []):
        title = " ".join(["telemetryctl", *path])
        out.write(f"\n## {title}\n\n```text\n{_help(path).rstrip()}\n```\n")
    return out.getvalue()


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
