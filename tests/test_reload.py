"""SIGHUP: the real daemon reloads config.toml, applies the live settings, keeps the running
configuration when the new file is invalid, and continues in a new journal segment."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

from conftest import Daemon, ctl, exchange, summary
from telemetryd import config
from telemetryd.daemon.reload import LIVE, apply

DaemonFactory = Callable[..., Daemon]

LONG = json.dumps({"type": "custom", "name": "x", "attrs": {"pad": "p" * 300}}).encode() + b"\n"
SHORT = b'{"type":"custom","name":"short"}\n'


def hup(daemon: Daemon) -> None:
    """SIGHUP, and wait until the daemon has handled it (READY=1 after RELOADING=1)."""
    assert daemon.proc is not None
    daemon.notifications.clear()
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("READY=1")
    assert "RELOADING=1" in daemon.notifications


def line_too_long(daemon: Daemon) -> bool:
    replies = exchange(daemon.events_socket, LONG)
    if replies == [summary(1, 1)]:
        return False
    assert replies[0]["error"] == "line_too_long" and replies[1] == summary(1, 0, 1), replies
    return True


def segment_count(daemon: Daemon) -> int:
    return len(list(daemon.journal_dir.glob("*.jsonl")))


def test_sighup_applies_live_settings(daemon_factory: DaemonFactory, state_home: Path) -> None:
    daemon = daemon_factory().start()
    assert not line_too_long(daemon)
    (state_home / "config.toml").write_text(
        '[ingest]\nmax-line-bytes = 200\n[journal]\ndurability = "always"\n'
    )
    hup(daemon)
    assert line_too_long(daemon)
    log = daemon.log()
    assert "SIGHUP: applied ingest.max-line-bytes: 65536 -> 200" in log
    assert "journal.durability: 'interval' -> 'always' takes a restart" in log
    status = json.loads(ctl("status", "--json").stdout)
    assert status["journal"]["durability"] == "interval"
    # `status` says what waits for a restart (the log alone said it)
    assert status["config"]["reloads"] == 1 and status["config"]["error"] is None
    assert status["config"]["waiting"] == ["journal.durability: 'interval' -> 'always'"]
    assert "config: waiting for a restart: journal.durability" in ctl("status").stdout.decode()
    # The next write went to a new segment.
    assert exchange(daemon.events_socket, SHORT) == [summary(1, 1)]
    assert segment_count(daemon) == 2
    assert daemon.stop() == 0
    assert [event["name"] for event in daemon.journal_events()] == ["x", "short"]


def test_invalid_file_keeps_the_running_configuration(
    daemon_factory: DaemonFactory, state_home: Path
) -> None:
    path = state_home / "config.toml"
    path.write_text("[ingest]\nmax-line-bytes = 200\n")
    daemon = daemon_factory().start()
    assert line_too_long(daemon)
    path.write_text("[ingest]\nmax-line-byte = 100000\n")  # a typo
    hup(daemon)
    assert daemon.proc is not None and daemon.proc.poll() is None
    log = daemon.log()
    assert "configuration not reloaded, the running one stays" in log
    assert "`max-line-byte`" in log and str(path) in log
    assert "STATUS=reload failed; running with the previous configuration" in daemon.notifications
    assert line_too_long(daemon)  # still 200
    assert exchange(daemon.events_socket, SHORT) == [summary(1, 1)]
    failed = json.loads(ctl("status", "--json").stdout)["config"]
    assert failed["reloads"] == 1 and "`max-line-byte`" in failed["error"]
    assert "config: the reload at " in ctl("status").stdout.decode()
    path.write_text("[ingest]\nmax-line-bytes = 100000\n")  # fixed
    hup(daemon)
    assert not line_too_long(daemon)
    fixed = json.loads(ctl("status", "--json").stdout)["config"]
    assert (fixed["reloads"], fixed["error"], fixed["waiting"]) == (2, None, [])
    assert daemon.stop() == 0


def test_a_file_gone_or_a_dangling_symlink_at_reload_keeps_the_running_configuration(
    daemon_factory: DaemonFactory, state_home: Path, tmp_path: Path
) -> None:
    """The file the daemon started with, deleted or left a symlink to nothing (a
    dotfiles manager's target unmounted): read as "no file", every setting went back to
    its default (retention 365 -> 30 days, and the next run deleted what it kept)."""
    path = state_home / "config.toml"
    path.write_text("[ingest]\nmax-line-bytes = 200\n")
    daemon = daemon_factory().start()
    assert line_too_long(daemon)
    for undo in ("deleted", "dangling"):
        path.unlink(missing_ok=True)
        if undo == "dangling":
            path.symlink_to(tmp_path / "unmounted" / "config.toml")
        hup(daemon)
        assert line_too_long(daemon), undo  # still 200
        failed = json.loads(ctl("status", "--json").stdout)["config"]
        assert str(path) in failed["error"], (undo, failed)
        assert ("missing" if undo == "dangling" else "No such file") in failed["error"]
    path.unlink()
    path.write_text("")  # an empty file: every default, on purpose
    hup(daemon)
    assert not line_too_long(daemon)
    assert daemon.stop() == 0


def test_a_file_that_cannot_be_looked_at_is_an_error(tmp_path: Path) -> None:
    """Only "nothing at that name" means no file; another failure to look is an error
    (here a loop of symlinks; a directory without permission is too)."""
    import pytest

    assert config.file_present(str(tmp_path / "none.toml")) is False
    (tmp_path / "a.toml").symlink_to(tmp_path / "b.toml")
    (tmp_path / "b.toml").symlink_to(tmp_path / "a.toml")
    with pytest.raises(config.ConfigError, match="Too many levels of symbolic links"):
        config.file_present(str(tmp_path / "a.toml"))


def test_the_analyzers_rules_and_budgets_apply_at_a_reload() -> None:
    """docs/alerts.md says a SIGHUP applies [analyzer] and [budget] at the next analysis
    (which sends the running sections with each request): they were logged as waiting
    for a restart, and the old budget stayed."""
    running = config.Config()
    budget, rules = running.budget, running.analyzer
    new = config.Config(
        budget=config.Budget(monthly_usd=1.0, timezone="Asia/Tokyo"),
        analyzer=config.Analyzer(loop_count=9, notify=True),
    )
    applied, waiting = apply(running, new)
    assert waiting == []
    assert sorted(change.split(":")[0] for change in applied) == [
        "analyzer.loop-count", "analyzer.notify", "budget.monthly-usd", "budget.timezone",
    ]  # fmt: skip
    assert running.budget is budget and (budget.monthly_usd, budget.timezone) == (1.0, "Asia/Tokyo")
    assert running.analyzer is rules and (rules.loop_count, rules.notify) == (9, True)


def test_apply_copies_live_settings_in_place() -> None:
    running = config.Config()
    ingest = running.ingest  # the server and the ingestor hold the section objects
    new = config.Config(
        ingest=config.Ingest(max_line_bytes=10, dedup_window=5),
        store=config.Store(query_timeout=1.0, threads=1),
        journal=config.Journal(durability="always"),
    )
    applied, waiting = apply(running, new)
    assert applied == [
        "ingest.max-line-bytes: 65536 -> 10",
        "store.query-timeout: 30.0 -> 1.0",
        "store.threads: 2 -> 1",  # from the store worker's next start
    ]
    assert waiting == [
        "ingest.dedup-window: 100000 -> 5",
        "journal.durability: 'interval' -> 'always'",
    ]
    assert ingest.max_line_bytes == 10 and ingest.dedup_window == 100_000
    assert running.store.query_timeout == 1.0 and running.store.threads == 1
    assert apply(running, running) == ([], [])
    # Both of retention's age limits at once (the second must be 0 or at least the
    # first: a file that holds both is applied whole).
    running = config.Config()
    kept = config.Config(retention=config.Retention(max_age_days=10, usage_max_age_days=40))
    applied, waiting = apply(running, kept)
    assert waiting == [] and (running.retention.usage_max_age_days, len(applied)) == (40, 2)


def test_every_live_key_exists() -> None:
    assert set(config.flatten(config.Config())) >= LIVE
