"""Benchmarks for telemetryd (`make bench`, or `python -m bench --help`).

Every figure comes from real processes on real sockets: a fresh daemon per run
(``python -m telemetryd`` with its own ``TELEMETRYD_HOME`` under /tmp, ready on
``NOTIFY_SOCKET``), separate client processes released together, and baselines
(socat, rsyslogd) fed the same bytes by the same clients in the same run.
"""


class BenchError(Exception):
    """A benchmark could not run, or its counts did not add up."""
