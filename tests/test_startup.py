"""The store worker's early open (store/startup.py): what nobody took is closed."""

from __future__ import annotations

from pathlib import Path

import duckdb

from telemetryd.store.startup import EarlyOpen


class Opened:
    """What ``finish`` makes of the connection (a Store, in the worker)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self.con.close()


def test_a_result_nobody_took_is_closed_when_the_worker_stops(tmp_path: Path) -> None:
    early: EarlyOpen[Opened] = EarlyOpen(str(tmp_path / "telemetry.duckdb"))
    early.then(Opened)
    early._thread.join()
    opened = early._result
    assert opened is not None and not opened.closed
    early.close()
    assert opened.closed
    assert early.take() is None


def test_a_result_taken_is_the_takers_to_close(tmp_path: Path) -> None:
    early: EarlyOpen[Opened] = EarlyOpen(str(tmp_path / "telemetry.duckdb"))
    early.then(Opened)
    opened = early.take()
    assert opened is not None
    early.close()
    assert not opened.closed
    opened.close()


def test_a_connection_never_handed_on_is_closed(tmp_path: Path) -> None:
    """The worker stopped before it knew its configuration: the file is free again."""
    path = str(tmp_path / "telemetry.duckdb")
    early: EarlyOpen[Opened] = EarlyOpen(path)
    early.close()
    assert early.take() is None
    with duckdb.connect(path) as con:  # no lock left behind in this process
        assert con.execute("SELECT 1").fetchall() == [(1,)]
