"""The `telemetryctl` entry point.

Hot commands are dispatched here, before click is imported (~45 ms): `send`
runs on every tool call of an agent, `query` and `report` must cost a fraction of
a fresh process that imports duckdb, and `tail` shares `query`'s light modules;
`hook` and `statusline` run after every tool call or message of Claude Code.
`import` goes to its own click group (`import` with nothing new is timed).
Everything else goes to the click CLI, and so does a command line that a fast
command's ``main`` declines (it returns None: `report --help`, say).
"""

from __future__ import annotations

import sys

_FAST = {
    "send": "telemetryd.client.send",
    "query": "telemetryd.client.query",
    "tail": "telemetryd.client.tail",
    "hook": "telemetryd.client.hook",
    "statusline": "telemetryd.client.statusline",
    "report": "telemetryd.client.report_main",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in _FAST:
        module = __import__(_FAST[args[0]], fromlist=["main"])
        code = module.main(args[1:])
        if code is not None:
            return int(code)
    if args and args[0] == "import":  # its own group: not every command's modules (~60 ms)
        from telemetryd.client.import_cli import import_group

        return int(
            import_group.main(args=args[1:], prog_name="telemetryctl import", standalone_mode=True)
            or 0
        )
    from telemetryd.client.cli import cli

    return int(cli.main(args=args, prog_name="telemetryctl", standalone_mode=True) or 0)
