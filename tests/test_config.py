"""Configuration: defaults, the TOML file, environment and --set overrides, and `--check`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import ROOT, TELEMETRYCTL, Daemon, ctl, exchange
from telemetryd import config, paths
from telemetryd.errors import ConfigError

DaemonFactory = Callable[..., Daemon]


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`telemetryd --check` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "telemetryd", "--check", *args],
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_defaults() -> None:
    settings, origin = config.load(None, environ={})
    assert settings == config.Config()
    assert settings.journal.durability == "interval"
    assert settings.ingest.max_line_bytes == 64 * 1024
    assert settings.ingest.allowed_uids == []
    assert set(origin) == set(config.flatten(settings))
    assert set(origin.values()) == {"default"}


def test_missing_file_is_fine_unless_required(tmp_path: Path) -> None:
    missing = str(tmp_path / "config.toml")
    settings, _ = config.load(missing, environ={})
    assert settings == config.Config()
    with pytest.raises(ConfigError, match=f"{missing}: No such file"):
        config.load(missing, environ={}, require_file=True)


def test_file_values(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.toml",
        "[journal]\n"
        'durability = "always"\n'
        "segment-max-bytes = 1048576\n"
        "[ingest]\n"
        "max-connections = 7\n"
        "idle-timeout = 2.5\n"
        "allowed-uids = [1000, 1001]\n",
    )
    settings, origin = config.load(path, environ={})
    assert settings.journal.durability == "always"
    assert settings.journal.segment_max_bytes == 1048576
    assert settings.ingest.max_connections == 7
    assert settings.ingest.idle_timeout == 2.5
    assert settings.ingest.allowed_uids == [1000, 1001]
    assert settings.ingest.max_line_bytes == 64 * 1024  # untouched keys keep their default
    assert origin["journal.durability"] == f"file {path}"
    assert origin["ingest.max-line-bytes"] == "default"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[journal]\ndurabilty = "always"\n', "`durabilty`"),
        ("[jornal]\nfsync-interval-ms = 5\n", "`jornal`"),
        ("[ingest]\nmax_line_bytes = 5\n", "`max_line_bytes`"),  # snake_case is not the key
    ],
)
def test_unknown_key_names_key_and_file(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert named in str(caught.value)
    assert path in str(caught.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[journal\n")
    with pytest.raises(ConfigError, match=str(path)):
        config.load(path, environ={})


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('[ingest]\nmax-connections = "many"\n', "$.ingest.max-connections"),
        ("[ingest]\nmax-connections = 0\n", "$.ingest.max-connections"),
        ("[ingest]\nidle-timeout = -1\n", "$.ingest.idle-timeout"),
        ('[journal]\ndurability = "sometimes"\n', "$.journal.durability"),
        ("journal = 5\n", "$.journal"),
    ],
)
def test_wrong_type_in_file(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert where in str(caught.value)
    assert path in str(caught.value)


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[journal]\ndurability = "never"\n')
    environ = {
        "TELEMETRYD_JOURNAL_DURABILITY": "always",
        "TELEMETRYD_JOURNAL_FSYNC_INTERVAL_MS": "50",
        "TELEMETRYD_INGEST_ALLOWED_UIDS": "[0, 1000]",
        "TELEMETRYD_INGEST_IDLE_TIMEOUT": "1.5",
        "TELEMETRYD_UNRELATED": "ignored",
    }
    settings, origin = config.load(path, environ=environ)
    assert settings.journal.durability == "always"
    assert settings.journal.fsync_interval_ms == 50
    assert settings.ingest.allowed_uids == [0, 1000]
    assert settings.ingest.idle_timeout == 1.5
    assert origin["journal.durability"] == "env TELEMETRYD_JOURNAL_DURABILITY"
    assert origin["journal.fsync-interval-ms"] == "env TELEMETRYD_JOURNAL_FSYNC_INTERVAL_MS"


def test_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRYD_JOURNAL_DURABILITY", "never")
    settings, _ = config.load(None)
    assert settings.journal.durability == "never"


def test_wrong_value_in_env_names_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(None, environ={"TELEMETRYD_JOURNAL_DURABILITY": "sometimes"})
    assert "$.journal.durability" in str(caught.value)
    assert "sometimes" in str(caught.value)


def test_set_overrides_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[journal]\ndurability = "never"\n')
    settings, origin = config.load(
        path,
        environ={"TELEMETRYD_JOURNAL_DURABILITY": "interval"},
        overrides=[
            "journal.durability=always",
            "ingest.max-line-bytes=1024",
            "ingest.idle-timeout=0.5",
            "ingest.allowed-uids=[5]",
        ],
    )
    assert settings.journal.durability == "always"
    assert settings.ingest.max_line_bytes == 1024
    assert settings.ingest.idle_timeout == 0.5
    assert settings.ingest.allowed_uids == [5]
    assert origin["journal.durability"] == "flag --set"
    # The last --set of a key wins.
    settings, _ = config.load(
        None, environ={}, overrides=["journal.durability=never", "journal.durability=always"]
    )
    assert settings.journal.durability == "always"


@pytest.mark.parametrize(
    "item", ["journal.durabilty=always", "durability=always", "journal.durability", "x=1"]
)
def test_unknown_set_key_is_an_error(item: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(None, environ={}, overrides=[item])
    message = str(caught.value)
    assert repr(item) in message
    assert "journal.durability" in message  # the known keys are listed


def test_wrong_type_in_set() -> None:
    with pytest.raises(ConfigError, match=r"\$\.ingest\.max-connections"):
        config.load(None, environ={}, overrides=["ingest.max-connections=lots"])
    with pytest.raises(ConfigError, match=r"\$\.ingest\.max-line-bytes"):
        config.load(None, environ={}, overrides=["ingest.max-line-bytes=0"])


def test_flatten() -> None:
    flat = config.flatten(config.Config())
    assert flat["journal.durability"] == "interval"
    assert flat["ingest.max-line-bytes"] == 64 * 1024
    assert flat["spool.scan-interval"] == 5.0
    assert all(key.count(".") == 1 and "_" not in key for key in flat)


# -- `telemetryd --check` -----------------------------------------------------------------


def test_check_accepts_a_good_config(state_home: Path) -> None:
    write(state_home / "config.toml", '[journal]\ndurability = "always"\n')
    result = check()
    assert result.returncode == 0, result.stderr
    assert str(state_home / "config.toml") in result.stdout


def test_check_without_a_config_file(state_home: Path) -> None:
    result = check("--set", "journal.durability=never")
    assert result.returncode == 0, result.stderr


def test_check_rejects_a_bad_key_in_the_file(state_home: Path) -> None:
    path = write(state_home / "config.toml", '[journal]\ndurabilty = "always"\n')
    result = check()
    assert result.returncode != 0
    assert "durabilty" in result.stderr
    assert path in result.stderr
    assert not (state_home / "run").exists()  # --check binds nothing


def test_check_rejects_a_bad_value(state_home: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "other.toml", "[ingest]\nmax-line-bytes = -1\n")
    result = check("--config", path)
    assert result.returncode != 0
    assert "max-line-bytes" in result.stderr and path in result.stderr


def test_check_rejects_a_missing_explicit_config(tmp_path: Path) -> None:
    result = check("--config", str(tmp_path / "nope.toml"))
    assert result.returncode != 0
    assert "nope.toml" in result.stderr


def test_check_rejects_bad_overrides() -> None:
    result = check("--set", "ingest.max-conections=3")
    assert result.returncode != 0 and "ingest.max-conections" in result.stderr
    result = check(env={"TELEMETRYD_JOURNAL_DURABILITY": "sometimes"})
    assert result.returncode != 0 and "journal.durability" in result.stderr


# -- the daemon uses what it loads --------------------------------------------------------


def durability(daemon: Daemon) -> str:
    status = ctl("status", "--json")
    assert status.returncode == 0, status.stderr
    value: str = json.loads(status.stdout)["journal"]["durability"]
    return value


def test_daemon_reads_file_env_and_set(daemon_factory: DaemonFactory, state_home: Path) -> None:
    write(state_home / "config.toml", '[journal]\ndurability = "never"\n')
    daemon = daemon_factory().start()
    assert durability(daemon) == "never"
    assert daemon.stop() == 0
    daemon.start(env={"TELEMETRYD_JOURNAL_DURABILITY": "always"})
    assert durability(daemon) == "always"
    assert daemon.stop() == 0
    daemon.args = ["--set", "journal.durability=interval"]
    daemon.start(env={"TELEMETRYD_JOURNAL_DURABILITY": "always"})
    assert durability(daemon) == "interval"
    assert daemon.stop() == 0


def test_daemon_refuses_a_bad_config(daemon_factory: DaemonFactory, state_home: Path) -> None:
    write(state_home / "config.toml", "[ingest]\nmax-lines = 3\n")
    daemon = daemon_factory().start(wait=False)
    assert daemon.proc is not None
    assert daemon.proc.wait(30) != 0
    assert "max-lines" in daemon.log()
    assert not (state_home / "run" / "events.sock").exists()


# -- `telemetryctl config show | check` ---------------------------------------------------


def test_config_show_names_where_each_value_comes_from(state_home: Path) -> None:
    path = write(state_home / "config.toml", '[journal]\ndurability = "never"\n')
    env = dict(os.environ, TELEMETRYD_INGEST_IDLE_TIMEOUT="2.5")
    result = subprocess.run(
        [TELEMETRYCTL, "config", "show", "--json", "--set", "store.threads=1"],
        env=env,
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["file"] == path and shown["file_exists"] is True
    settings = shown["settings"]
    assert settings["journal.durability"] == {"value": "never", "origin": f"file {path}"}
    assert settings["ingest.idle-timeout"] == {
        "value": 2.5,
        "origin": "env TELEMETRYD_INGEST_IDLE_TIMEOUT",
    }
    assert settings["store.threads"] == {"value": 1, "origin": "flag --set"}
    assert settings["retention.max-age-days"] == {"value": 30.0, "origin": "default"}
    assert set(settings) == set(config.flatten(config.Config()))


def test_config_show_prints_toml_that_loads_back(state_home: Path, tmp_path: Path) -> None:
    write(
        state_home / "config.toml",
        '[ingest]\nallowed-uids = [1000]\n\n[pricing.models."my-model"]\ninput = 1.5\noutput = 6\n',
    )
    result = ctl("config", "show")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "allowed-uids = [1000]" in text and f"# file {state_home}/config.toml" in text
    assert 'durability = "interval"' in text and "# default" in text
    copy = write(tmp_path / "copy.toml", text)
    assert config.load(copy, environ={})[0] == config.load(str(state_home / "config.toml"))[0]


def test_config_check(tmp_path: Path) -> None:
    good = write(tmp_path / "good.toml", "[retention]\nmax-age-days = 7\n")
    result = ctl("config", "check", good)
    assert (result.returncode, result.stdout) == (0, f"{good}: valid\n".encode())
    bad = write(tmp_path / "bad.toml", "[retention]\nmax-age = 7\n")
    result = ctl("config", "check", bad)
    assert result.returncode == 1
    assert b"`max-age`" in result.stderr and bad.encode() in result.stderr
    result = ctl("config", "check", str(tmp_path / "missing.toml"))
    assert result.returncode == 1 and b"missing.toml" in result.stderr


def test_a_value_not_among_a_keys_choices_names_them(tmp_path: Path) -> None:
    bad = write(tmp_path / "enum.toml", '[journal]\ndurability = "sometimes"\n')
    result = ctl("config", "check", bad)
    assert result.returncode == 1
    assert "(one of 'always', 'interval', 'never')" in result.stderr.decode()


def test_config_check_refuses_an_export_into_the_daemons_own_directories(
    tmp_path: Path, state_home: Path
) -> None:
    """The daemon refuses such an export at every run (and says so in its log); the check
    called the file valid."""
    journal = paths.resolve().journal_dir
    for inside in (journal, os.path.join(journal, "parquet")):
        text = f'[export]\nparquet-dir = "{inside}"\n'
        result = ctl("config", "check", write(tmp_path / "export.toml", text))
        assert result.returncode == 1, result.stdout
        assert b"parquet-dir" in result.stderr and b"another directory" in result.stderr
    elsewhere = write(tmp_path / "ok.toml", f'[export]\nparquet-dir = "{tmp_path / "pq"}"\n')
    assert ctl("config", "check", elsewhere).returncode == 0


# -- ranges (finding 9 of issue 8): every number bounded, the same check everywhere -------


def numeric_settings() -> list[tuple[str, Any]]:
    """``(section.key, msgspec constraint type)`` for every numeric setting (the per-model
    prices as ``pricing.models."NAME".*``, each)."""
    out = []
    for section in msgspec.inspect.type_info(config.Config).fields:  # type: ignore[attr-defined]
        fields = msgspec.inspect.type_info(section.type.cls).fields  # type: ignore[attr-defined]
        for field in fields:
            kind = field.type
            if isinstance(kind, msgspec.inspect.ListType):
                kind = kind.item_type
            if isinstance(kind, msgspec.inspect.DictType) and isinstance(
                kind.value_type, msgspec.inspect.StructType
            ):  # pricing.models (forward.headers and forward.resource hold strings)
                for price in kind.value_type.fields:
                    types = getattr(price.type, "types", (price.type,))
                    out.append((f'pricing.models."NAME".{price.encode_name}', types[0]))
            if isinstance(kind, (msgspec.inspect.IntType, msgspec.inspect.FloatType)):
                out.append((f"{section.encode_name}.{field.encode_name}", kind))
    return out


def test_every_number_has_a_range() -> None:
    found = numeric_settings()
    # 25 before, 13 [analyzer] and [budget], 5 [forward], 1 [export], 1 [retention],
    # 2 more [store] (yield-max, max-temp-bytes)
    assert len(found) == 25 + 13 + 5 + 1 + 1 + 2 + len(msgspec.structs.fields(config.ModelPrice))
    for key, kind in found:
        assert kind.ge is not None and kind.le is not None, key


def test_the_readme_documents_every_setting_and_range() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- ranges:", 1)[1].split("\n\n", 1)[0]
    rows = [row.split("|")[1:4] for row in table.splitlines() if row.startswith("| `")]
    documented = {key.strip().strip("`"): (low.strip(), high.strip()) for key, low, high in rows}

    def shown(number: float) -> str:
        return str(int(number)) if float(number).is_integer() else str(number)

    expected = {
        key.rpartition(".")[0] + ".*" if key.startswith("pricing") else key: (
            shown(kind.ge),
            shown(kind.le),
        )
        for key, kind in numeric_settings()
    }
    expected["store.memory-limit"] = ("64 MiB", "1 TiB")
    assert documented == expected
    # The TOML block above the table lists every setting (the prices are per model).
    block = readme.split("## Configuration", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    for key in config.flatten(config.Config()):
        section, name = key.split(".")
        assert section == "pricing" or f"\n{name} = " in f"\n{block}", key


def _toml(key: str, value: float) -> tuple[str, str]:
    """A config file setting ``key`` to ``value``, and the path msgspec names for it."""
    section, _, name = key.rpartition(".")
    if section.startswith("pricing"):
        prices = {"input": 1, "output": 1, name: value}
        lines = "".join(f"{k} = {v!r}\n" for k, v in prices.items())
        return f'[pricing.models."m"]\n{lines}', f'$.pricing.models."m".{name}'
    shown = f"[{value!r}]" if key == "ingest.allowed-uids" else repr(value)
    return f"[{section}]\n{name} = {shown}\n", f"$.{key}"


@pytest.mark.parametrize(("key", "kind"), numeric_settings(), ids=lambda v: str(v)[:40])
def test_each_limit_is_inclusive_and_the_next_value_is_refused(
    tmp_path: Path, key: str, kind: Any
) -> None:
    path = tmp_path / "config.toml"
    for value in (kind.ge, kind.le):
        path.write_text(_toml(key, value)[0])
        config.load(str(path), environ={})
    step = 1 if isinstance(kind, msgspec.inspect.IntType) else 0.001
    for value, word in ((kind.ge - step, ">="), (kind.le + step, "<=")):
        text, where = _toml(key, value)
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            config.load(str(path), environ={})
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and f"{word} " in message, message
        assert message.endswith(f" - at `{where}`") or f"`{where}[0]`" in message, message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[store]\nthreads = 300\n", "Expected `int` <= 64 - at `$.store.threads`"),
        ("[store]\nthreads = 100000\n", "<= 64 - at `$.store.threads`"),
        ("[ingest]\nread-size = 1099511627776\n", "<= 16777216 - at `$.ingest.read-size`"),
        ("[ingest]\nidle-timeout = inf\n", "<= 86400.0 - at `$.ingest.idle-timeout`"),
        ("[ingest]\nidle-timeout = nan\n", "at `$.ingest.idle-timeout`"),
        ("[ingest]\nallowed-uids = [4294967295]\n", "at `$.ingest.allowed-uids[0]`"),
        ("[store]\nquery-timeout = 3601\n", "<= 3600.0 - at `$.store.query-timeout`"),
        ('[store]\nmemory-limit = "10MB"\n', "below the minimum of 64 MiB - at `$.store.memo"),
        ('[store]\nmemory-limit = "2TB"\n', "above the maximum of 1 TiB - at `$.store.memo"),
        ('[store]\nmemory-limit = "lots"\n', "is not a size"),
        ("[store]\nmemory-limit = 268435456\n", "Expected `str`, got `int`"),
        ('[pricing.models."m"]\ninput = -1\noutput = 1\n', 'at `$.pricing.models."m".input`'),
        ('[pricing.models."m"]\ninput = 1\noutput = inf\n', 'at `$.pricing.models."m".output`'),
        # (the entry that is wrong is named, not the first)
        ('[pricing.models.a]\ninput = 1\noutput = 1\n[pricing.models."b c"]\ninput = 1\n'
         'output = -2\n', 'at `$.pricing.models."b c".output`'),
        ('[pricing.models.\'q"uote\']\ninput = -1\noutput = 1\n',
         'at `$.pricing.models."q\\"uote".input`'),
    ],
)  # fmt: skip
def test_an_out_of_range_value_names_key_limit_and_file(
    tmp_path: Path, text: str, where: str
) -> None:
    path = write(tmp_path / "config.toml", text)
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert str(caught.value).startswith(f"{path}: ")
    assert where in str(caught.value)


def test_an_out_of_range_override_names_its_origin() -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(None, environ={"TELEMETRYD_STORE_THREADS": "300"})
    assert str(caught.value) == (
        "env TELEMETRYD_STORE_THREADS: Expected `int` <= 64 - at `$.store.threads`"
    )
    with pytest.raises(ConfigError, match=r"^flag --set: .* at `\$\.store\.memory-limit`$"):
        config.load(None, environ={}, overrides=["store.memory-limit=1MB"])
    # (the HTTP address's own checks name the key, and so the variable, too)
    bad = (
        ("127.0.0.1:99999", "port 99999"),
        ("h:\u0664\u0663", "expected HOST:PORT"),
        ("http://127.0.0.1:4401", "expected HOST:PORT"),
    )
    for address, problem in bad:
        with pytest.raises(ConfigError) as caught:
            config.load(None, environ={"TELEMETRYD_HTTP_ADDRESS": address})
        assert str(caught.value).startswith(f"env TELEMETRYD_HTTP_ADDRESS: {problem}")
        assert str(caught.value).endswith("at `$.http.address`")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("256MB", 256_000_000),
        ("256mb", 256_000_000),
        ("64MiB", 64 << 20),
        (" 512 MiB ", 512 << 20),
        ("1.5GiB", 3 << 29),
        ("1GB", 10**9),
        ("0.5TB", 5 * 10**11),
        ("1TiB", 1 << 40),
        ("67108864B", 64 << 20),
        ("100000KB", 10**8),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert config.parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("63MiB", "below the minimum of 64 MiB"),
        ("1.1TiB", "above the maximum of 1 TiB"),
        ("256", "not a size"),
        ("256 M", "not a size"),
        ("1PB", "not a size"),
        ("-1GB", "not a size"),
        ("1e3MB", "not a size"),
        ("", "not a size"),
        ("0%", "a percentage must be above 0"),
        ("101%", "a percentage must be above 0 and at most 100"),
    ],
)
def test_parse_size_refuses(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        config.parse_size(text)


def test_parse_size_of_a_percentage() -> None:
    memory = config.physical_memory()
    assert memory is not None and memory > 64 << 20
    assert config.parse_size("50%") == memory // 2 or abs(config.parse_size("50%") - memory / 2) < 2
    assert config.parse_size(config.Store().memory_limit) == 160_000_000


def test_check_and_config_check_refuse_out_of_range_values(state_home: Path) -> None:
    """`telemetryd --check` called `store.threads = 300` valid, and so did `config check`."""
    path = write(state_home / "config.toml", "[store]\nthreads = 300\n")
    result = check()
    assert result.returncode == 1
    assert f"{path}: Expected `int` <= 64 - at `$.store.threads`" in result.stderr
    assert not (state_home / "run").exists()
    shown = ctl("config", "check", path)
    assert shown.returncode == 1
    assert b"Expected `int` <= 64 - at `$.store.threads`" in shown.stderr
    os.unlink(path)
    result = check("--set", "ingest.read-size=1099511627776")
    assert result.returncode == 1 and "$.ingest.read-size" in result.stderr


def test_the_daemon_refuses_to_start_out_of_range(
    daemon_factory: DaemonFactory, state_home: Path
) -> None:
    write(state_home / "config.toml", "[store]\nthreads = 100000\n")
    daemon = daemon_factory().start(wait=False)
    assert daemon.proc is not None and daemon.proc.wait(30) == 1
    assert "<= 64 - at `$.store.threads`" in daemon.log()
    assert not (state_home / "run" / "events.sock").exists()


def test_sighup_with_an_out_of_range_value_keeps_the_running_configuration(
    daemon_factory: DaemonFactory, state_home: Path
) -> None:
    """`ingest.read-size = 1 TiB` was applied on SIGHUP, and every connection then died with
    MemoryError. Now the file is refused as a whole, naming the key; the daemon stays up
    with its old values."""
    path = write(state_home / "config.toml", "[ingest]\nmax-line-bytes = 200\n")
    daemon = daemon_factory().start()
    long_line = json.dumps({"type": "custom", "name": "x" * 300}).encode() + b"\n"
    short_line = b'{"type":"custom","name":"short"}\n'

    def answers() -> list[str]:
        replies = exchange(daemon.events_socket, long_line + short_line)
        return [reply.get("error", "summary") for reply in replies]

    assert answers() == ["line_too_long", "summary"]
    for bad, where in [
        ("[ingest]\nmax-line-bytes = 100000\nread-size = 1099511627776\n", "$.ingest.read-size"),
        ("[ingest]\nmax-line-bytes = 100000\n[store]\nthreads = 300\n", "$.store.threads"),
    ]:
        write(state_home / "config.toml", bad)
        hup(daemon)
        assert daemon.proc is not None and daemon.proc.poll() is None
        log = daemon.log()
        assert "configuration not reloaded, the running one stays" in log
        assert f"{path}: Expected `int` <= " in log and f"at `{where}`" in log
        assert answers() == ["line_too_long", "summary"]  # still 200: nothing applied
    write(state_home / "config.toml", "[ingest]\nmax-line-bytes = 100000\n")
    hup(daemon)
    assert answers() == ["summary"]
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log() and "MemoryError" not in daemon.log()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"[store]\nthreads = 2 # caf\xe9\n", "not UTF-8 (byte 25)"),
        (b"x = " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "nested too deeply"),
    ],
)
def test_a_file_tomllib_chokes_on_is_a_config_error(
    tmp_path: Path, data: bytes, fragment: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        config.load(str(path), environ={})
    assert str(caught.value) == f"{path}: {fragment}"
    deep = "[" * 50_000 + "]" * 50_000
    with pytest.raises(ConfigError, match=r"at `\$\.ingest\.allowed-uids`"):  # a string
        config.load(None, environ={}, overrides=[f"ingest.allowed-uids={deep}"])


def test_sighup_survives_a_file_that_is_not_toml_at_all(
    daemon_factory: DaemonFactory, state_home: Path
) -> None:
    daemon = daemon_factory().start()
    (state_home / "config.toml").write_bytes(b"[ingest]\nmax-line-bytes = 200 # \xff\xfe\n")
    hup(daemon)
    assert "not UTF-8" in daemon.log() and "Traceback" not in daemon.log()
    assert (
        exchange(daemon.events_socket, b'{"type":"custom","name":"still up"}\n')[-1]["accepted"]
        == 1
    )
    assert daemon.stop() == 0


def hup(daemon: Daemon) -> None:
    """SIGHUP, and wait until the daemon has handled it (READY=1 after RELOADING=1)."""
    assert daemon.proc is not None
    daemon.notifications.clear()
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for("READY=1")
    assert "RELOADING=1" in daemon.notifications


def test_a_misspelt_variable_is_warned_about_with_the_likely_setting(tmp_path: Path) -> None:
    """TELEMETRYD_HTTP_ENABLE=false (for ENABLED) left the listener on without a word."""
    environ = {
        "TELEMETRYD_HTTP_ENABLE": "false",
        "TELEMETRYD_HTTP_ENABLED": "true",  # a setting
        "TELEMETRYD_HTTP_TOKEN": "t",  # not a setting, read by `hooks install --http`
        "TELEMETRYD_HOME": "/x",  # no section of that name
    }
    environ |= {"TELEMETRYD_HOEM": "/x", "TELEMETRYD_STRESS_ROUNDS": "3"}
    assert config.unknown_variables(environ) == [
        "environment variable TELEMETRYD_HOEM is not read by telemetryd and is ignored "
        "(did you mean TELEMETRYD_HOME?)",
        "environment variable TELEMETRYD_HTTP_ENABLE is not read by telemetryd and is "
        "ignored (did you mean TELEMETRYD_HTTP_ENABLED?)",
    ]  # (STRESS_ROUNDS is like none of telemetryd's: another program's)
    result = subprocess.run(
        [sys.executable, "-m", "telemetryd", "--check", "--home", str(tmp_path)],
        env={**os.environ, "TELEMETRYD_HTTP_ENABLE": "false"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert b"TELEMETRYD_HTTP_ENABLE is not read by telemetryd" in result.stderr


def test_every_variable_the_code_reads_is_known() -> None:
    """The names the warning leaves alone are the ones read: each TELEMETRYD_ name in the
    code is a setting's or in config.NOT_SETTINGS."""
    import re

    import telemetryd

    root = Path(telemetryd.__file__).parent
    found = {
        name
        for path in root.rglob("*.py")
        for name in re.findall(r"TELEMETRYD_[A-Z][A-Z_]*[A-Z]", path.read_text())
    }
    assert len(found) > 10  # (the walk sees the code)
    assert config.unknown_variables(dict.fromkeys(found, "x")) == []
