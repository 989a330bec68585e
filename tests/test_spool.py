"""Spool intake (daemon/spool.py) under hostile entries: the real daemon, a real spool.

Finding 8 of issue 8: a FIFO named ``*.jsonl`` hung intake forever (and SIGTERM with it),
a directory named ``x.jsonl`` was retried and logged on every scan, a symbolic link was
followed; type confusion in a spool file surfaced as tracebacks in the log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import Daemon, ctl
from telemetryd.daemon import spool
from test_ingest_properties import (
    LINES,
    Line,
    Live,
    assert_no_traceback,
    check_journaled,
    payload,
    run_live,
)

DaemonFactory = Callable[..., Daemon]
WAIT = 30.0
FAST_SCANS = ["--set", "spool.scan-interval=0.1"]


def line(event_id: str, **fields: Any) -> bytes:
    return json.dumps({"type": "custom", "id": event_id, "name": "n", **fields}).encode() + b"\n"


def put(directory: Path, name: str, data: bytes) -> Path:
    """Write a spool file the way clients do: a temporary name, then a rename."""
    directory.mkdir(mode=0o700, exist_ok=True)
    temp = directory / f".{name}.tmp"
    temp.write_bytes(data)
    return temp.rename(directory / name)


def wait_gone(path: Path, daemon: Daemon) -> None:
    """Poll until the daemon has taken ``path`` (nothing reports a spool intake)."""
    deadline = time.monotonic() + WAIT
    while path.exists():
        assert time.monotonic() < deadline, f"{path} was not taken:\n{daemon.log()[-4000:]}"
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log()
        time.sleep(0.02)


def ids(daemon: Daemon) -> list[str]:
    return [event["id"] for event in daemon.journal_events()]


def test_hostile_entries_are_left_alone_reported_once_and_never_block(
    daemon_factory: DaemonFactory, state_home: Path, tmp_path: Path
) -> None:
    spool_dir = state_home / "spool"
    spool_dir.mkdir(mode=0o700)
    os.mkfifo(spool_dir / "1-fifo.jsonl")
    (spool_dir / "2-dir.jsonl").mkdir()
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(line("through-the-link"))
    (spool_dir / "3-link.jsonl").symlink_to(outside)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(spool_dir / "4-sock.jsonl"))
    good = put(spool_dir, "5-good.jsonl", line("good-1"))

    daemon = daemon_factory(FAST_SCANS).start()
    try:
        wait_gone(good, daemon)
        # Two more files, each taken by a later scan: the bad entries were met again.
        for n in (2, 3):
            wait_gone(put(spool_dir, f"{n}0-good.jsonl", line(f"good-{n}")), daemon)
        assert ids(daemon) == ["good-1", "good-2", "good-3"]
        log = daemon.log()
        for name, kind in [
            ("1-fifo.jsonl", "a FIFO"),
            ("2-dir.jsonl", "a directory"),
            ("3-link.jsonl", "a symbolic link"),
            ("4-sock.jsonl", "a socket"),
        ]:
            assert log.count(f"spool entry {spool_dir / name} is {kind}: not read") == 1, log
        assert "Traceback" not in log
        # Left where they are: not the daemon's to remove.
        assert stat.S_ISFIFO((spool_dir / "1-fifo.jsonl").lstat().st_mode)
        assert (spool_dir / "2-dir.jsonl").is_dir() and (spool_dir / "3-link.jsonl").is_symlink()
        assert outside.read_bytes() == line("through-the-link")
        assert not (state_home / "quarantine").exists()

        # An entry that goes and comes back is reported again; a scan still gets past it.
        (spool_dir / "2-dir.jsonl").rmdir()
        wait_gone(put(spool_dir, "60-good.jsonl", line("good-6")), daemon)
        (spool_dir / "2-dir.jsonl").mkdir()
        wait_gone(put(spool_dir, "70-good.jsonl", line("good-7")), daemon)
        assert daemon.log().count(f"spool entry {spool_dir / '2-dir.jsonl'} is a directory") == 2

        # SIGTERM is a clean stop within a bound, FIFO or not.
        assert daemon.proc is not None
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(15) == 0
        assert time.monotonic() - started < 15
    finally:
        listener.close()


def test_a_fifo_does_not_hold_up_the_start(daemon_factory: DaemonFactory, state_home: Path) -> None:
    """The first intake runs before the daemon is ready on a real start: a FIFO blocked it."""
    spool_dir = state_home / "spool"
    spool_dir.mkdir(mode=0o700)
    os.mkfifo(spool_dir / "0-fifo.jsonl")
    good = put(spool_dir, "1-good.jsonl", line("after-the-fifo"))
    daemon = daemon_factory().start()
    wait_gone(good, daemon)
    assert ids(daemon) == ["after-the-fifo"]
    assert daemon.stop(timeout=15) == 0


TYPE_CONFUSED = [
    (b"[1, 2]", "invalid_event", "$"),
    (b'"just a string"', "invalid_event", "$"),
    (b"42", "invalid_event", "$"),
    (b'{"type":"custom","id":"c-1","name":5}', "invalid_event", "$.name"),
    (b'{"type":"custom","id":"c-2","name":"x","trace_id":["a"]}', "invalid_event", "$.trace_id"),
    (b'{"type":"custom","id":"c-3","name":"caf\xe9"}', "invalid_utf8", "$"),
    (rb'{"type":"custom","id":"c-4","name":"\ud800"}', "invalid_json", "$.name"),
    (
        b'{"type":"api_request","id":"c-5","tokens":{"source":"actual","input":'
        b'9223372036854775807,"output":1}}',
        "invalid_event",
        "$.tokens.input",
    ),
    (b'{"type":"custom","id":"c-6","name":"d","attrs":{"a":' + b"[" * 3000 + b"]" * 3000 + b"}}",
     "invalid_json", "$"),
    (b'{"type":"metric","id":"c-7","name":"m","kind":"gauge","value":"1"}', "invalid_event",
     "$.value"),
]  # fmt: skip


def test_type_confused_lines_are_quarantined_with_their_reasons(
    daemon_factory: DaemonFactory, state_home: Path
) -> None:
    poison = {
        "type": "api_request",
        "id": "priced",
        "agent": {"model": "claude-sonnet-4-5"},
        "tokens": {"source": "actual", "input": 1, "output": 1},
        "attrs": {"cache_creation_1h": "lots", "speed": [1]},
    }
    data = line("first") + b"".join(raw + b"\n" for raw, _, _ in TYPE_CONFUSED)
    data += json.dumps(poison).encode() + b"\n" + line("last")
    daemon = daemon_factory(FAST_SCANS).start()
    spooled = put(state_home / "spool", "100-mixed.jsonl", data)
    wait_gone(spooled, daemon)
    assert daemon.stop() == 0
    assert ids(daemon) == ["first", "priced", "last"]
    kept = state_home / "quarantine" / "spool-100-mixed.jsonl"
    assert kept.read_bytes() == data
    errors = [
        json.loads(x) for x in kept.with_name(kept.name + ".errors").read_bytes().splitlines()
    ]
    assert [(e["line"], e["error"], e["path"]) for e in errors] == [
        (n, code, path) for n, (_, code, path) in enumerate(TYPE_CONFUSED, 2)
    ]
    log = daemon.log()
    assert "Traceback" not in log and "ValueError" not in log, log
    assert f"{len(TYPE_CONFUSED)} lines rejected" in log


def test_a_huge_spool_file_is_read_in_bounded_chunks(
    daemon_factory: DaemonFactory, state_home: Path
) -> None:
    """A 32 MiB line (no newline until its end) and a flood of bad lines: memory stays
    bounded, the good line after them is journaled, the errors file is capped."""
    daemon = daemon_factory(FAST_SCANS).start()
    assert daemon.proc is not None
    # The store opens in the background at start: let it, so that DuckDB's own
    # footprint is not counted against the spool.
    assert ctl("query", "select 1").returncode == 0
    before = peak_rss(daemon.proc.pid)
    flood = b"nope\n" * 40_000  # 40,000 rejections: ~4 MB of replies
    data = b'{"type":"custom","name":"' + b"x" * (32 << 20) + b'"}\n' + flood + line("after")
    spooled = put(state_home / "spool", "200-huge.jsonl", data)
    wait_gone(spooled, daemon)
    assert peak_rss(daemon.proc.pid) - before < 24 << 20
    assert daemon.stop() == 0
    assert ids(daemon) == ["after"]
    errors_file = state_home / "quarantine" / "spool-200-huge.jsonl.errors"
    assert errors_file.stat().st_size <= spool.MAX_ERROR_BYTES + 64
    errors = errors_file.read_bytes().splitlines()
    assert json.loads(errors[0])["error"] == "line_too_long"
    assert json.loads(errors[-1]) == {"omitted": 40_001 - (len(errors) - 1)}


def peak_rss(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM)."""
    for entry in Path(f"/proc/{pid}/status").read_text().splitlines():
        if entry.startswith("VmHWM:"):
            return int(entry.split()[1]) * 1024
    pytest.skip("no VmHWM in /proc on this system")


# -- open_regular, in-process --------------------------------------------------------------


def test_open_regular_opens_only_regular_files(tmp_path: Path) -> None:
    regular = tmp_path / "r.jsonl"
    regular.write_bytes(b"x\n")
    fd = spool.open_regular(str(regular))
    assert fd is not None
    try:
        assert os.read(fd, 10) == b"x\n"
    finally:
        os.close(fd)
    assert spool.open_regular(str(tmp_path / "missing.jsonl")) is None
    os.mkfifo(tmp_path / "f.jsonl")
    (tmp_path / "d.jsonl").mkdir()
    (tmp_path / "l.jsonl").symlink_to(regular)
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "nowhere")
    done = threading.Event()

    def check() -> None:
        for name, kind in [
            ("f.jsonl", "a FIFO"),
            ("d.jsonl", "a directory"),
            ("l.jsonl", "a symbolic link"),
            ("dangling.jsonl", "a symbolic link"),
            ("/dev/null", "a character device"),
        ]:
            with pytest.raises(spool.NotRegular, match=kind):
                spool.open_regular(str(tmp_path / name))
        done.set()

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(10)
    assert done.is_set(), "open_regular blocked (on the FIFO?)"


# -- property: the ingest path's generated lines, as spool files --------------------------


@pytest.fixture
def live(daemon_factory: DaemonFactory) -> Iterator[Live]:
    yield from run_live(daemon_factory)


@pytest.mark.properties
@given(generated=st.lists(LINES, min_size=1, max_size=25))
def test_every_spooled_line_is_journaled_or_quarantined_with_its_reason(
    live: Live, generated: list[Line]
) -> None:
    """One daemon per test function, one spool file per example: the valid lines are
    journaled, the others quarantined with a reason naming their line, no traceback."""
    example = payload(generated)
    daemon = live.daemon
    name = f"{time.time_ns()}-{len(example.lines)}.jsonl"
    spooled = put(daemon.home / "spool", name, example.data)
    wait_gone(spooled, daemon)
    quarantined = daemon.home / "quarantine" / f"spool-{name}"
    errors_file = quarantined.with_name(quarantined.name + ".errors")
    errors = []
    if errors_file.exists():
        errors = [json.loads(reason) for reason in errors_file.read_bytes().splitlines()]
    assert quarantined.exists() == bool(errors)
    if errors:
        assert quarantined.read_bytes() == example.data
    rejected = {error["line"] for error in errors}
    assert len(rejected) == len(errors)
    assert all(error["error"] != "internal_error" for error in errors), errors
    journaled = check_journaled(example, live.journal.new())
    for number, (kind, event_id) in enumerate(zip(example.kinds, example.ids, strict=True), 1):
        assert kind in ("other", "repeat") or number not in rejected, (number, errors)
        if event_id is not None and kind != "repeat":  # journaled xor rejected
            assert (event_id in journaled) != (number in rejected), (number, errors)
    assert_no_traceback(daemon)
