"""Benchmarks for telemetryd (`make bench`, or `python -m bench --help`).

Every figure comes from real processes on real sockets: a fresh daemon per run
(``python -m telemetryd`` with its own ``TELEMETRYD_HOME`` under /tmp, ready on
``NOTIFY_SOCKET``), separate client processes released together, and baselines
(socat, rsyslogd) fed the same bytes by the same clients in the same run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


class BenchError(Exception):
    """A benchmark could not run, or its counts did not add up."""


def fresh_bytecode() -> None:
    """Compile the modules of the telemetryd package in use whose bytecode is missing or
    older than their source, as `make install` compiles them all. Where
    PYTHONDONTWRITEBYTECODE is set (this environment may set it), such a module is
    compiled again by every process that imports it (each daemon, ingest worker and
    import reader), inside the timed window: a checkout with edited modules would be
    measured slower than it is."""
    import compileall
    from pathlib import Path

    import telemetryd

    compileall.compile_dir(str(Path(telemetryd.__file__).parent), quiet=1)


def npm_install(prefix: Path, spec: str, executable: Path) -> Path:
    """``npm install spec`` into ``prefix`` (a baseline's own directory under
    bench/.deps, ignored by git), unless ``executable`` is there already; it."""
    import shutil
    import subprocess

    if executable.exists():
        return executable
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError(f"npm is missing: {spec} cannot be installed")
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), spec],
        check=True,
        timeout=600,
    )
    return executable


def json_of(argv: list[str], env: dict[str, str], timeout: float | None = None) -> Any:
    """The JSON a command prints; BenchError (with its stderr's end) when it fails."""
    import json
    import subprocess

    got = subprocess.run(argv, env=env, capture_output=True, timeout=timeout, check=False)
    if got.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {got.returncode}: {got.stderr.decode()[-500:]}")
    return json.loads(got.stdout)
