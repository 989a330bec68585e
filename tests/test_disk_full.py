"""Disk full, for real: the journal directory is a 256 KiB tmpfs, filled to the last byte.

Mounting needs root; elsewhere the test is skipped with the reason printed (``-ra``).
No fault injection: the daemon meets a real ENOSPC from the kernel, partial writes
included (the last page of a segment has room for part of a group).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Daemon, ctl, exchange, summary

DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def small_journal(state_home: Path) -> Iterator[Path]:
    """``journal/`` under the state directory, as its own 256 KiB tmpfs."""
    journal = state_home / "journal"
    journal.mkdir(mode=0o700)
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to mount a small tmpfs (not run)")
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(journal)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        pytest.skip(f"disk-full test not run: cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield journal
    finally:
        if subprocess.run(["umount", str(journal)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(journal)], check=True)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the filesystem says ENOSPC."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def batch(prefix: str, count: int) -> bytes:
    return b"".join(
        json.dumps({"type": "custom", "name": prefix, "id": f"{prefix}-{n}"}).encode() + b"\n"
        for n in range(count)
    )


def status() -> dict[str, Any]:
    result = ctl("status", "--json")
    assert result.returncode == 0, result.stderr
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


def test_disk_full_rejects_stays_up_and_recovers(
    small_journal: Path, daemon_factory: DaemonFactory, state_home: Path
) -> None:
    daemon = daemon_factory(["--set", "spool.scan-interval=0.2"]).start()
    assert exchange(daemon.events_socket, batch("before", 50)) == [summary(50, 50)]

    filler = fill(small_journal)
    # Bigger than the room left in the segment's last page: part of it is written,
    # then ENOSPC; the part must be cut off again.
    replies = exchange(daemon.events_socket, batch("during", 200))
    assert len(replies) == 1 and replies[0]["error"] == "journal_unavailable", replies
    assert "No space left on device" in replies[0]["message"]
    # Single events still fit in that page, until they do not.
    slack = 0
    while exchange(daemon.events_socket, batch(f"slack{slack}", 1)) == [summary(1, 1)]:
        slack += 1
        assert slack < 200
    state = status()
    assert "No space left on device" in state["journal"]["write_error"]
    # Events answered with an error are not counted accepted, but as not written.
    assert state["journal"]["events_failed"] == 200 + 1  # (and the one that ended the slack)
    assert state["accepted"] == state["journal"]["events_written"] == 50 + slack

    # `telemetryctl send` spools the event and succeeds (the spool is not on the tmpfs).
    sent = ctl("send", "--type", "custom", "--name", "spooled", "--id", "spooled-0")
    assert sent.returncode == 0, sent.stderr
    assert b"spooled to" in sent.stderr
    spool = state_home / "spool"
    assert len(list(spool.glob("*.jsonl"))) == 1
    # Still full: the daemon keeps answering, and keeps the spool file.
    assert daemon.proc is not None and daemon.proc.poll() is None
    assert exchange(daemon.events_socket, batch("again", 200))[0]["error"] == "journal_unavailable"

    filler.unlink()  # space returns: nothing to do for the daemon but its next write
    assert exchange(daemon.events_socket, batch("after", 50)) == [summary(50, 50)]
    assert exchange(daemon.events_socket, batch("during", 200)) == [summary(200, 200)]
    deadline = time.monotonic() + 20
    while list(spool.glob("*.jsonl")):
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    assert status()["journal"]["write_error"] is None
    assert daemon.stop() == 0

    journaled = daemon.journal_events()  # every line parses, no torn tail
    ids = [event["id"] for event in journaled]
    assert len(ids) == len(set(ids)) == 50 + slack + 200 + 50 + 1
    assert {i.rpartition("-")[0] for i in ids} == {
        "before",
        *(f"slack{n}" for n in range(slack)),
        "during",
        "after",
        "spooled",
    }
    assert "No space left on device" in daemon.log()


def test_disk_full_is_a_503_an_exporter_retries(
    small_journal: Path, daemon_factory: DaemonFactory
) -> None:
    """OTLP over HTTP on a full disk: 503 with Retry-After (an exporter retries it), nothing
    half-kept; once there is room, the same request is accepted, each record once."""
    import http.client

    daemon = daemon_factory().start()
    host, port = daemon.http_address().rsplit(":", 1)
    secret = (daemon.home / "http-token").read_text().strip()
    records = [
        {
            "timeUnixNano": str(1_700_000_000_000_000_000 + n),
            "body": {"stringValue": f"record {n} " + "x" * 200},
        }
        for n in range(200)
    ]
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()

    def post() -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(
                "POST",
                "/v1/logs",
                body=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {secret}"},
            )
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    filler = fill(small_journal)
    status_code, headers, answer = post()
    assert (status_code, headers.get("Retry-After")) == (503, "1"), answer
    assert b"No space left on device" in answer
    assert daemon.proc is not None and daemon.proc.poll() is None
    filler.unlink()
    status_code, _, answer = post()
    assert (status_code, answer) == (200, b"{}")
    assert daemon.stop() == 0
    bodies = [e for e in daemon.journal_events() if e.get("type") == "log"]
    assert len(bodies) == len({e["id"] for e in bodies}) == 200


def test_gc_on_a_full_disk_says_what_it_could_not_do(
    small_journal: Path, daemon_factory: DaemonFactory
) -> None:
    """A compaction that finds the disk full is tried again at the next run, and the run
    says so: `gc` (run to free space) reported "0 compacted", exit 0, and nothing else."""
    import signal

    daemon = daemon_factory(["--set", "retention.max-age-days=30"]).start()
    request = {"type": "api_request", "id": "old-request", "tokens": {"source": "unknown"}}
    payload = json.dumps(request).encode() + b"\n" + batch("old", 20)
    assert exchange(daemon.events_socket, payload) == [summary(21, 21)]
    assert daemon.proc is not None
    daemon.notifications.clear()
    daemon.proc.send_signal(signal.SIGHUP)  # the next write starts a new segment
    daemon.wait_for("READY=1")
    assert exchange(daemon.events_socket, batch("new", 1)) == [summary(1, 1)]
    assert ctl("flush").returncode == 0
    [old] = sorted(small_journal.glob("*-000001.jsonl"))
    then = time.time() - 40 * 86400
    os.utime(old, (then, then))
    filler = fill(small_journal)
    failed = ctl("gc")
    assert failed.returncode == 1, failed.stderr
    assert f"could not compact {old.name}: " in failed.stderr.decode()
    assert "No space left on device" in failed.stderr.decode()
    assert status()["retention"]["failed"][0].startswith(f"compact {old.name}: ")
    filler.unlink()
    done = ctl("gc", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["compacted"], report["failed"]) == ([old.name], [])
    assert daemon.stop() == 0
