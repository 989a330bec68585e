"""The daemon's configuration: one Struct, defined once.

Values come, lowest to highest precedence, from the defaults below, the TOML
file (``config.toml`` in the config directory), environment variables named
``TELEMETRYD_<SECTION>_<KEY>`` (``TELEMETRYD_JOURNAL_DURABILITY=always``) and
``--set section.key=value`` flags. A key that does not exist is an error that
names it and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from telemetryd.errors import ConfigError

Positive = Annotated[int, Meta(gt=0)]
Seconds = Annotated[float, Meta(gt=0)]

_SECTION: dict[str, Any] = {"forbid_unknown_fields": True, "rename": "kebab", "kw_only": True}


class Ingest(Struct, **_SECTION):
    """Limits on the events socket."""

    max_line_bytes: Positive = 64 * 1024
    max_attrs_bytes: Positive = 16 * 1024
    max_attrs_depth: Positive = 8
    max_connections: Positive = 256
    idle_timeout: Seconds = 60.0
    # Bytes per read from a connection. Larger buffers than 128 KiB go through
    # mmap on every read, which costs more than the extra reads save.
    read_size: Positive = 64 * 1024
    # Bytes of validated events waiting for the journal writer; past this, readers
    # stop reading and the kernel pushes back on clients.
    max_pending_bytes: Positive = 8 * 1024 * 1024
    # At least this many recent client-chosen ids are remembered to drop duplicates.
    dedup_window: Positive = 100_000
    # Peers allowed to connect; empty means the daemon's own uid only.
    allowed_uids: list[int] = msgspec.field(default_factory=list)


class Journal(Struct, **_SECTION):
    """How events are written to disk."""

    # always: fsync before acking. interval: ack once written (survives a daemon
    # crash), fsync at most every fsync-interval-ms (power loss can cost that
    # window). never: ack once written, leave syncing to the kernel.
    durability: Literal["always", "interval", "never"] = "interval"
    fsync_interval_ms: Positive = 200
    segment_max_bytes: Positive = 64 * 1024 * 1024


class Store(Struct, **_SECTION):
    """The DuckDB file materialized from the journal, and the queries on it."""

    # Materialize at least this often (seconds) while events are pending ...
    interval: Seconds = 5.0
    # ... and as soon as this many events were journaled since the last run.
    pending_events: Positive = 50_000
    query_timeout: Seconds = 30.0
    # DuckDB's memory (it spills to disk past it). Loads need ~200 MB (below that,
    # reading a compressed segment fails); larger speeds up queries on big stores.
    memory_limit: str = "256MB"
    threads: Positive = 2


class Spool(Struct, **_SECTION):
    """Events that clients could not deliver."""

    scan_interval: Seconds = 5.0


class Retention(Struct, **_SECTION):
    """How much journal is kept (daemon/retention.py); 0 turns a limit off."""

    # Segments whose last write is older than this many days are deleted ...
    max_age_days: Annotated[float, Meta(ge=0)] = 30.0
    # ... and the oldest ones while the journal is larger than this.
    max_bytes: Annotated[int, Meta(ge=0)] = 10 * 1024**3
    # Materialized closed segments are gzipped (.jsonl.gz).
    compress: bool = True
    # Seconds between two runs in the daemon (`telemetryctl gc` runs it now).
    interval: Seconds = 3600.0


class ModelPrice(Struct, omit_defaults=True, **_SECTION):
    """One model's prices in US dollars per million tokens (adapters/pricing.py)."""

    input: Annotated[float, Meta(ge=0)]
    output: Annotated[float, Meta(ge=0)]
    cache_read: Annotated[float, Meta(ge=0)] | None = None
    cache_write: Annotated[float, Meta(ge=0)] | None = None
    cache_write_1h: Annotated[float, Meta(ge=0)] | None = None


class Pricing(Struct, **_SECTION):
    """Prices that take precedence over the bundled table, by model name
    (``[pricing.models."my-model"]``); `telemetryctl pricing` shows the result."""

    models: dict[str, ModelPrice] = msgspec.field(default_factory=dict)


class Config(Struct, **_SECTION):
    ingest: Ingest = msgspec.field(default_factory=Ingest)
    journal: Journal = msgspec.field(default_factory=Journal)
    store: Store = msgspec.field(default_factory=Store)
    spool: Spool = msgspec.field(default_factory=Spool)
    retention: Retention = msgspec.field(default_factory=Retention)
    pricing: Pricing = msgspec.field(default_factory=Pricing)


ENV_PREFIX = "TELEMETRYD_"


def _keys() -> dict[str, tuple[str, str]]:
    """``"journal.durability" -> ("journal", "durability")`` for every setting (kebab names)."""
    out: dict[str, tuple[str, str]] = {}
    for section in msgspec.structs.fields(Config):
        for field in msgspec.structs.fields(section.type):
            out[f"{section.encode_name}.{field.encode_name}"] = (
                section.encode_name,
                field.encode_name,
            )
    return out


def _parse_value(text: str) -> Any:
    """A TOML value (``5``, ``true``, ``[1, 2]``, ``"x"``), else the text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load(
    path: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
    require_file: bool = False,
) -> tuple[Config, dict[str, str]]:
    """The effective configuration and, per ``section.key``, where its value came from."""
    raw: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    if path is not None and (require_file or os.path.exists(path)):
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        _validate(data, path)
        for section, values in data.items():
            raw[section] = dict(values)
            origin.update({f"{section}.{key}": f"file {path}" for key in values})

    keys = _keys()
    env = os.environ if environ is None else environ
    for dotted, (section, key) in keys.items():
        name = ENV_PREFIX + dotted.replace(".", "_").replace("-", "_").upper()
        if name in env:
            raw.setdefault(section, {})[key] = _parse_value(env[name])
            origin[dotted] = f"env {name}"
    for item in overrides:
        dotted, sep, value = item.partition("=")
        if not sep or dotted not in keys:
            known = ", ".join(sorted(keys))
            raise ConfigError(f"--set {item!r}: expected section.key=value with a key of: {known}")
        section, key = keys[dotted]
        raw.setdefault(section, {})[key] = _parse_value(value)
        origin[dotted] = "flag --set"

    config = _validate(raw, "configuration (environment or --set)")
    for dotted in keys:
        origin.setdefault(dotted, "default")
    return config, origin


def _validate(data: Mapping[str, Any], where: str) -> Config:
    try:
        return msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def flatten(config: Config) -> dict[str, Any]:
    """``{"journal.durability": "interval", ...}``."""
    out: dict[str, Any] = {}
    for section, values in msgspec.to_builtins(config).items():
        out.update({f"{section}.{key}": value for key, value in values.items()})
    return out
