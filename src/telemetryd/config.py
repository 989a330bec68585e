"""The daemon's configuration: one Struct, defined once.

Values come, lowest to highest precedence, from the defaults below, the TOML
file (``config.toml`` in the config directory), environment variables named
``TELEMETRYD_<SECTION>_<KEY>`` (``TELEMETRYD_JOURNAL_DURABILITY=always``) and
``--set section.key=value`` flags. A key that does not exist is an error that
names it and where it came from.

Every number has a range (``Meta(ge=..., le=...)`` on its field), so a value that
would exhaust the machine (``store.threads = 100000``, a 1 TiB ``ingest.read-size``)
is an error that names the key, whether it comes at start, from ``telemetryd
--check``, ``telemetryctl config check`` or a SIGHUP: they all decode through
:func:`load`. The README's configuration section lists the ranges.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from telemetryd.errors import ConfigError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

# Seconds: from a tenth of a second (tests, impatient users) up to a day (a longer
# interval or timeout is a typo: nothing the daemon does needs one).
Seconds = Annotated[float, Meta(ge=0.1, le=86_400.0)]
# A uid_t, without (uid_t)-1, which means "no uid".
Uid = Annotated[int, Meta(ge=0, le=2**32 - 2)]

# store.memory-limit, as DuckDB spells a size: a number and a unit (KB, MB, GB, TB are
# powers of 1000, KiB ... TiB of 1024, as in DuckDB), or a percentage of the physical
# memory; checked by Store.__post_init__.
MEMORY_LIMIT_MIN = 64 * MiB
MEMORY_LIMIT_MAX = TiB
_SIZE = re.compile(r" *([0-9]+(?:\.[0-9]+)?) *([kmgt]?i?b|%) *", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_UNITS.update({"kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB})


def physical_memory() -> int | None:
    """Bytes of physical memory, when the platform says (Linux and macOS do)."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def parse_size(text: str) -> int:
    """Bytes in a size as DuckDB spells it: ``"256MB"`` (10^6 each), ``"1GiB"`` (2^30),
    ``"512 MiB"``, ``"1.5GB"``, or ``"25%"`` of the physical memory.

    Raises ValueError for any other spelling and for a size outside
    [:data:`MEMORY_LIMIT_MIN`, :data:`MEMORY_LIMIT_MAX`] (64 MiB to 1 TiB): DuckDB
    cannot load the journal with less, and more is a typo. ``f"{parse_size(s)}B"`` is
    the same limit in a spelling DuckDB reads.
    """
    found = _SIZE.fullmatch(text)
    if found is None or found[2].lower() not in (*_UNITS, "%"):
        raise ValueError(
            f"{text!r} is not a size: expected a number and a unit (B, KB, MB, GB, TB, "
            "KiB, MiB, GiB, TiB) or a percentage of the memory, e.g. '256MB', '1GiB', '25%'"
        )
    number, unit = float(found[1]), found[2].lower()
    if unit == "%":
        memory = physical_memory()
        if memory is None:
            raise ValueError(f"{text!r}: this system does not report its physical memory")
        if not 0 < number <= 100:
            raise ValueError(f"{text!r}: a percentage must be above 0 and at most 100")
        size = int(memory * number / 100)
    else:
        size = int(number * _UNITS[unit])
    if size < MEMORY_LIMIT_MIN:
        raise ValueError(f"{text!r} is {size} bytes, below the minimum of 64 MiB")
    if size > MEMORY_LIMIT_MAX:
        raise ValueError(f"{text!r} is {size} bytes, above the maximum of 1 TiB")
    return size


_SECTION: dict[str, Any] = {"forbid_unknown_fields": True, "rename": "kebab", "kw_only": True}


class Ingest(Struct, **_SECTION):
    """Limits on the events socket (and the spool, which is read the same way)."""

    max_line_bytes: Annotated[int, Meta(ge=128, le=16 * MiB)] = 64 * KiB
    max_attrs_bytes: Annotated[int, Meta(ge=64, le=16 * MiB)] = 16 * KiB
    max_attrs_depth: Annotated[int, Meta(ge=1, le=64)] = 8
    # Each connection holds a file descriptor: stay well below the usual limit of 1024.
    max_connections: Annotated[int, Meta(ge=1, le=800)] = 256
    idle_timeout: Seconds = 60.0
    # Bytes per read from a connection. Larger buffers than 128 KiB go through
    # mmap on every read, which costs more than the extra reads save.
    read_size: Annotated[int, Meta(ge=4 * KiB, le=16 * MiB)] = 64 * KiB
    # Bytes of validated events waiting for the journal writer; past this, readers
    # stop reading and the kernel pushes back on clients.
    max_pending_bytes: Annotated[int, Meta(ge=64 * KiB, le=GiB)] = 8 * MiB
    # At least this many recent client-chosen ids are remembered to drop duplicates
    # (the daemon holds up to twice as many: ~100 bytes each).
    dedup_window: Annotated[int, Meta(ge=1, le=2_000_000)] = 100_000
    # Peers allowed to connect; empty means the daemon's own uid only.
    allowed_uids: Annotated[list[Uid], Meta(max_length=256)] = msgspec.field(default_factory=list)


class Journal(Struct, **_SECTION):
    """How events are written to disk."""

    # always: fsync before acking. interval: ack once written (survives a daemon
    # crash), fsync at most every fsync-interval-ms (power loss can cost that
    # window). never: ack once written, leave syncing to the kernel.
    durability: Literal["always", "interval", "never"] = "interval"
    fsync_interval_ms: Annotated[int, Meta(ge=1, le=60_000)] = 200
    segment_max_bytes: Annotated[int, Meta(ge=4 * KiB, le=4 * GiB)] = 64 * MiB


class Store(Struct, **_SECTION):
    """The DuckDB file materialized from the journal, and the queries on it."""

    # Materialize at least this often (seconds) while events are pending ...
    interval: Seconds = 5.0
    # ... and as soon as this many events were journaled since the last run.
    pending_events: Annotated[int, Meta(ge=1, le=10_000_000)] = 50_000
    # The longest a query may run (a query's own timeout is capped there too).
    query_timeout: Annotated[float, Meta(ge=0.1, le=3600.0)] = 30.0
    # DuckDB's memory in the store worker (it spills to disk past it), 64 MiB to 1 TiB
    # (parse_size). The worker's RSS while it loads is about this plus 65 MB; 160 MB
    # loads at full speed with 2 threads (less makes loads spill or retry smaller
    # batches); larger speeds up queries on very large stores.
    memory_limit: str = "160MB"
    threads: Annotated[int, Meta(ge=1, le=64)] = 2
    # DuckDB's spill files past memory-limit (a big sort, a load), beside the database:
    # at most this many bytes, and at most half the disk's free space when the worker
    # starts, so that no query fills the disk the journal is on.
    max_temp_bytes: Annotated[int, Meta(ge=64 * MiB, le=1024 * GiB)] = 4 * GiB
    # The store worker (the process that runs DuckDB) exits after this many seconds
    # without a request, and starts again when needed; 0 keeps it running.
    idle_exit: Annotated[float, Meta(ge=0, le=86_400.0)] = 120.0
    # A load that falls due while ingest is busy (a flood of events being acknowledged)
    # waits until it calms down, at most this many seconds, so that both cores go to
    # acknowledging; 0: loads never wait. Queries and flushes never wait.
    yield_max: Annotated[float, Meta(ge=0, le=3600.0)] = 10.0

    def __post_init__(self) -> None:
        try:
            parse_size(self.memory_limit)
        except ValueError as exc:
            raise ValueError(f"`memory-limit`: {exc}") from None

    def query_memory_cap(self) -> int:
        """The store worker's resident bytes past which its queries are stopped
        (store/queries.py): 4 times DuckDB's memory limit, at least 1 GiB (loads and
        exports stay well under: about the limit plus 250 MB)."""
        return max(2**30, 4 * parse_size(self.memory_limit))

    def service_memory_max(self) -> int:
        """The service's memory ceiling under systemd (``MemoryMax=``): the queries' cap
        and 3 GiB more, for the daemon, its ingest workers, and a query that grows
        faster than it is looked at."""
        return self.query_memory_cap() + 3 * 2**30


class Spool(Struct, **_SECTION):
    """Events that clients could not deliver."""

    scan_interval: Annotated[float, Meta(ge=0.1, le=3600.0)] = 5.0


class Retention(Struct, **_SECTION):
    """How much journal is kept (store/retention.py); 0 turns a limit off."""

    # Segments whose last write is older than this many days lose every event but their
    # usage (model requests), up to a hundred years ...
    max_age_days: Annotated[float, Meta(ge=0, le=36_525.0)] = 30.0
    # ... and their usage too once older than this (0: usage is kept for good); at
    # least max-age-days, since usage outlives the rest ...
    usage_max_age_days: Annotated[float, Meta(ge=0, le=36_525.0)] = 0.0
    # ... and the oldest ones go, usage and all (a warning in `status` and the log),
    # while the journal is larger than this (up to 1 PiB).
    max_bytes: Annotated[int, Meta(ge=0, le=1024 * TiB)] = 10 * GiB
    # Materialized closed segments are gzipped (.jsonl.gz).
    compress: bool = True
    # Seconds between two runs in the daemon (`telemetryctl gc` runs it now): up to a week.
    interval: Annotated[float, Meta(ge=0.1, le=7 * 86_400.0)] = 3600.0

    def __post_init__(self) -> None:
        usage, rest = self.usage_max_age_days, self.max_age_days
        if usage and (not rest or usage < rest):
            raise ValueError(
                f"`usage-max-age-days`: {usage:g} must be 0 (usage kept for good) or at least "
                f"max-age-days ({rest:g}; 0: no age limit), since usage is kept at least as "
                "long as the rest"
            )


class Http(Struct, **_SECTION):
    """The HTTP listener (daemon/listeners/http.py): OTLP/HTTP and agents' ``http`` hooks."""

    enabled: bool = True
    # host:port; a host that is not a loopback address serves other machines (a central
    # instance): then the Host header must name one of allowed-hosts.
    address: str = "127.0.0.1:4318"
    # Host header names (without the port) accepted besides the loopback names.
    allowed_hosts: Annotated[list[str], Meta(max_length=256)] = msgspec.field(default_factory=list)
    # Every request must carry `Authorization: Bearer <the token in http-token>`.
    require_token: bool = True
    # Keep the text of user prompts that agents export or hooks post (else the length).
    prompt_text: bool = False
    # A request body's size after decompression (413 past it).
    max_body_bytes: Annotated[int, Meta(ge=KiB, le=GiB)] = 16 * MiB
    # Connections held at once; past it the longest-idle keep-alive one is closed, else
    # the new one is (without an answer: a client retries a closed connection).
    max_connections: Annotated[int, Meta(ge=1, le=800)] = 128
    # A request's head must arrive within header-timeout, its body within body-timeout;
    # a keep-alive connection idle for idle-timeout is closed.
    header_timeout: Seconds = 10.0
    body_timeout: Seconds = 30.0
    idle_timeout: Seconds = 60.0

    def __post_init__(self) -> None:
        try:
            split_address(self.address)
        except ValueError as exc:
            raise ValueError(f"`address`: {exc}") from None


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:4318"`` -> ``("127.0.0.1", 4318)``; ``"[::1]:4318"`` -> ``("::1", 4318)``."""
    host, sep, port_text = address.rpartition(":")
    if (
        not sep
        or not host
        or "/" in host  # (a URL: http://127.0.0.1:4318)
        or not (port_text.isascii() and port_text.isdigit())
    ):
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    port = int(port_text)
    if port > 65535:  # (0: any free port; `telemetryctl status` shows which)
        raise ValueError(f"port {port} is not between 0 and 65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


class Analyzer(Struct, **_SECTION):
    """The rules that watch new events and raise alerts (store/analyzer.py, docs/alerts.md)."""

    enabled: bool = True
    # At most one analysis per interval while events arrive (and when a stall comes due).
    interval: Seconds = 30.0
    # Events older than this (by their own time) are history: they raise no alert.
    lookback: Annotated[float, Meta(ge=60.0, le=7 * 86_400.0)] = 86_400.0
    # A tool loop: the same tool with the same input loop-count times within loop-window
    # seconds in one session.
    loop_count: Annotated[int, Meta(ge=2, le=10_000)] = 5
    loop_window: Seconds = 300.0
    # A stall: a live session, working and not ended, silent for stall-after seconds.
    stall_after: Annotated[float, Meta(ge=1.0, le=86_400.0)] = 1800.0
    # A cost anomaly: a session's cost past cost-factor times the median cost of its
    # model's sessions of the last cost-days days (once cost-min-sessions are known).
    cost_factor: Annotated[float, Meta(ge=1.0, le=10_000.0)] = 5.0
    cost_min_sessions: Annotated[int, Meta(ge=1, le=100_000)] = 5
    cost_days: Annotated[int, Meta(ge=1, le=366)] = 30
    # An error spike: error-spike-count errors of one provider within error-spike-window s.
    error_spike_count: Annotated[int, Meta(ge=1, le=1_000_000)] = 10
    error_spike_window: Seconds = 300.0
    # A desktop notification for each new alert (notify-send on Linux, osascript on macOS).
    notify: bool = False


class Budget(Struct, **_SECTION):
    """Spending limits in US dollars; 0 turns one off. Alerts at warn-at and at 100%."""

    daily_usd: Annotated[float, Meta(ge=0, le=1_000_000_000.0)] = 0.0
    monthly_usd: Annotated[float, Meta(ge=0, le=1_000_000_000.0)] = 0.0
    warn_at: Annotated[float, Meta(ge=0.01, le=0.99)] = 0.8
    # The zone whose calendar days and months count (an IANA name); empty: the local zone.
    timezone: str = ""

    def __post_init__(self) -> None:
        if self.timezone:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"`timezone`: unknown time zone {self.timezone!r}") from None


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(target: str) -> bool:
    """Whether an export's ``target`` is a URL (``s3://...``) rather than a local path."""
    return _URL.match(target) is not None


class Export(Struct, **_SECTION):
    """The continuous Parquet export (store/export.py, docs/export.md)."""

    # Where the daemon exports every `interval` seconds: an absolute directory, or a URL
    # that DuckDB's writers accept (s3://bucket/prefix, with the extension installed);
    # empty: no continuous export.
    parquet_dir: Annotated[str, Meta(max_length=4096)] = ""
    # Seconds between two runs (each writes what is new since the last): up to a day.
    interval: Annotated[float, Meta(ge=1.0, le=86_400.0)] = 300.0

    def __post_init__(self) -> None:
        target = os.path.expanduser(self.parquet_dir)
        if target and not is_url(target) and not os.path.isabs(target):
            raise ValueError(
                f"`parquet-dir`: {self.parquet_dir!r} is neither an absolute path nor a URL"
            )
        self.parquet_dir = target


# US dollars per million tokens: the dearest model costs a few hundred.
Price = Annotated[float, Meta(ge=0, le=1_000_000.0)]


class ModelPrice(Struct, omit_defaults=True, **_SECTION):
    """One model's prices in US dollars per million tokens (adapters/pricing.py): they
    win over genai-prices' data for that model, at every time, without tiers."""

    input: Price
    output: Price
    cache_read: Price | None = None
    cache_write: Price | None = None
    cache_write_1h: Price | None = None


class Pricing(Struct, **_SECTION):
    """Prices that take precedence over genai-prices' data, by model name
    (``[pricing.models."my-model"]``); `telemetryctl pricing` shows the result. Live on
    SIGHUP; `telemetryctl reprice` applies them to the stored requests."""

    models: Annotated[dict[str, ModelPrice], Meta(max_length=10_000)] = msgspec.field(
        default_factory=dict
    )


# -- [forward]: shipping the journal to a central OTLP/HTTP endpoint (daemon/forward.py) --

FORWARD_SIGNALS = ("logs", "traces", "metrics")
# Headers the forwarder sets itself (a `[forward] headers` entry may not replace them).
FORWARD_OWN_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "transfer-encoding", "connection"}
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")


class Forward(Struct, **_SECTION):
    """Forwarding the journal to an OTLP/HTTP endpoint (docs/forward.md): off while
    ``endpoint`` is empty."""

    # The endpoint's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT: http(s)://host:port[/path];
    # requests go to <endpoint>/v1/logs (and /v1/traces, /v1/metrics).
    endpoint: str = ""
    # Sent with every request, e.g. { Authorization = "Bearer <token>" }.
    headers: Annotated[dict[str, str], Meta(max_length=64)] = msgspec.field(default_factory=dict)
    # OTLP signals: logs (every event, lossless: what a receiving telemetryd keeps),
    # traces (span events as spans), metrics (metric events as data points).
    signals: Annotated[list[str], Meta(min_length=1, max_length=3)] = msgspec.field(
        default_factory=lambda: ["logs"]
    )
    # Event types to send; empty: every type.
    types: Annotated[list[str], Meta(max_length=64)] = msgspec.field(default_factory=list)
    # Extra resource attributes of every request (who sent it: { "user.name" = "ana" }).
    resource: Annotated[dict[str, str], Meta(max_length=64)] = msgspec.field(default_factory=dict)
    # gzip the request bodies (JSON of events shrinks about tenfold), or none.
    compression: Literal["gzip", "none"] = "gzip"
    # Journal bytes per request at most (a longer line goes alone), and events.
    batch_bytes: Annotated[int, Meta(ge=4 * KiB, le=64 * MiB)] = 4 * MiB
    batch_events: Annotated[int, Meta(ge=1, le=1_000_000)] = 10_000
    # A request gets this long to be answered.
    timeout: Seconds = 30.0
    # Retries wait 1 s, doubling up to this (or the server's Retry-After, up to this).
    max_retry_interval: Seconds = 60.0
    # Events the receiver refused for good are copied to forward/refused.jsonl, up to this
    # many bytes; past it forwarding stops (a receiver refusing everything is a problem
    # to fix, not a reason to skip the journal).
    max_refused_bytes: Annotated[int, Meta(ge=0, le=GiB)] = 64 * MiB

    def __post_init__(self) -> None:
        if self.endpoint:
            check_endpoint(self.endpoint)
        for name, value in self.headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"`headers`: {name!r} is not an HTTP header name")
            if name.lower() in FORWARD_OWN_HEADERS:
                raise ValueError(f"`headers`: {name!r} is set by the forwarder itself")
            if not all(ch.isprintable() or ch == "\t" for ch in value):
                raise ValueError(f"`headers`: the value of {name!r} has a control character")
        if self.types:
            from telemetryd.events import EVENT_TYPES

            for name in self.types:
                if name not in EVENT_TYPES:
                    raise ValueError(
                        f"`types`: {name!r} is not an event type ({', '.join(EVENT_TYPES)})"
                    )
        for signal in self.signals:
            if signal not in FORWARD_SIGNALS:
                raise ValueError(
                    f"`signals`: {signal!r} is not one of {', '.join(FORWARD_SIGNALS)}"
                )
        if len(set(self.signals)) < len(self.signals):
            raise ValueError(f"`signals`: {self.signals!r} names a signal twice")


def check_endpoint(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path)`` of a forwarding endpoint, or ValueError naming
    what is wrong with it (credentials belong in `headers`, not in the URL)."""
    from urllib.parse import urlsplit

    if not url.isprintable() or " " in url:
        raise ValueError(f"`endpoint`: {url!r} has a space or a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"`endpoint`: {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"`endpoint`: {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"`endpoint`: {url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("`endpoint`: put credentials in `headers`, not in the URL")
    if parts.query or parts.fragment:
        raise ValueError(f"`endpoint`: {url!r} must not have a query or a fragment")
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname, port or default, parts.path.rstrip("/")


class Config(Struct, **_SECTION):
    ingest: Ingest = msgspec.field(default_factory=Ingest)
    journal: Journal = msgspec.field(default_factory=Journal)
    store: Store = msgspec.field(default_factory=Store)
    spool: Spool = msgspec.field(default_factory=Spool)
    retention: Retention = msgspec.field(default_factory=Retention)
    pricing: Pricing = msgspec.field(default_factory=Pricing)
    http: Http = msgspec.field(default_factory=Http)
    analyzer: Analyzer = msgspec.field(default_factory=Analyzer)
    budget: Budget = msgspec.field(default_factory=Budget)
    forward: Forward = msgspec.field(default_factory=Forward)
    export: Export = msgspec.field(default_factory=Export)


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
    except (tomllib.TOMLDecodeError, RecursionError):
        return text


def file_present(path: str) -> bool:
    """Whether the configuration file ``path`` is there: False only when nothing is at
    that name. A name that cannot be looked at (a directory without permission, a loop
    of symlinks) or a symlink to a missing file is a ConfigError: read as "no file",
    every setting would silently go back to its default."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # (under a file: the paths' check says)
        if os.path.islink(path):
            target = os.readlink(path)
            raise ConfigError(f"{path}: a symlink to {target!r}, which is missing") from None
        return False
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return True


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
    if path is not None and (file_present(path) or require_file):
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
        except RecursionError:
            raise ConfigError(f"{path}: nested too deeply") from None
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

    config = _validate(raw, "configuration (environment or --set)", origin)
    for dotted in keys:
        origin.setdefault(dotted, "default")
    return config, origin


# The TELEMETRYD_ variables that are not settings: read by the client commands and the
# daemon's own processes (tests/test_config.py checks that the code reads no other).
NOT_SETTINGS = frozenset(
    ENV_PREFIX + name
    for name in (
        "AGENT_TYPE", "ATTEMPT_ID", "ATTEMPT_INDEX", "CONTROL_SOCKET", "HOME",
        "HOOK_CONTEXT", "HOOK_PROMPT_TEXT", "HTTP_ENDPOINT", "HTTP_TOKEN", "LOG_LEVEL",
        "MODEL", "PARENT_SPAN_ID", "PROVIDER", "SEND_TIMEOUT", "SESSION_ID", "SOCKET",
        "SOURCE", "STATUSLINE_TIMEOUT", "STORE_FD", "TASK_ID", "TIMEZONE", "TRACE_ID",
    )
)  # fmt: skip


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each TELEMETRYD_ variable set that telemetryd does not read: one
    named like a setting (TELEMETRYD_<SECTION>_...), or one close to a name it reads (a
    misspelt key in the file is an error; a variable may be another program's), with
    the name it likely meant."""
    import difflib

    env = os.environ if environ is None else environ
    settings = {
        ENV_PREFIX + dotted.replace(".", "_").replace("-", "_").upper() for dotted in _keys()
    }
    known = settings | NOT_SETTINGS
    sections = tuple({ENV_PREFIX + d.partition(".")[0].upper() + "_" for d in _keys()})
    suffixes = {name[len(ENV_PREFIX) :]: name for name in known}
    out = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name[len(ENV_PREFIX) :], list(suffixes), 1, 0.75)
        if not close and not name.startswith(sections):
            continue  # (not like any of ours: another program's)
        hint = f" (did you mean {suffixes[close[0]]}?)" if close else ""
        out.append(f"environment variable {name} is not read by telemetryd and is ignored{hint}")
    return out


def _validate(
    data: Mapping[str, Any], where: str, origin: Mapping[str, str] | None = None
) -> Config:
    """``data`` as a Config, or a ConfigError naming ``where`` and the key (msgspec's path,
    ``$.store.threads``); with ``origin``, the error names where that key's value came from."""
    try:
        return msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        # A section's own check (__post_init__) names its key first: make it the path.
        own = _OWN_CHECK.fullmatch(message)
        if own is not None:
            message = f"{own['message']} - at `$.{own['section']}.{own['key']}`"
        message = _name_the_entry(data, message)
        message = _name_the_choices(message)
        if origin is not None:
            path = message.rpartition(" - at `$.")[2].rstrip("`").partition("[")[0]
            path = path.partition('."')[0]  # (the section.key of a table's entry)
            where = origin.get(path, where)
        raise ConfigError(f"{where}: {message}") from None


def _name_the_entry(data: Mapping[str, Any], message: str) -> str:
    """msgspec names an entry of a table of the user's keys ``[...]``
    (``$.pricing.models[...].input``): name the first entry that fails alone
    (``$.pricing.models."my-model".input``)."""
    head, at, path = message.rpartition(" - at `$.")
    table_path, dots, rest = path.partition("[...]")
    if not at or not dots:
        return message
    keys = table_path.split(".")
    table: Any = data
    for key in keys:
        table = table.get(key) if isinstance(table, Mapping) else None
    if not isinstance(table, Mapping):
        return message

    def only(node: Mapping[str, Any], depth: int, name: str) -> dict[str, Any]:
        here = dict(node)
        key = keys[depth]
        here[key] = (
            {name: table[name]} if depth == len(keys) - 1 else only(here[key], depth + 1, name)
        )
        return here

    for name in table:
        try:
            msgspec.convert(only(data, 0, name), Config, strict=False)
        except msgspec.ValidationError:
            quoted = msgspec.json.encode(name).decode()
            return f"{head}{at}{table_path}.{quoted}{rest}"
    return message


def _name_the_choices(message: str) -> str:
    """msgspec's ``Invalid enum value 'x' - at `$.journal.durability``` with the values
    the key takes: ``... (one of 'none', 'interval', 'always')``."""
    found = re.match(r"Invalid enum value .* - at `\$\.([a-z]+)\.([a-z0-9-]+)`$", message)
    if found is None:
        return message
    section = msgspec.structs.fields(Config)
    for field in section:
        if field.encode_name != found[1]:
            continue
        for key in msgspec.structs.fields(field.type):
            if key.encode_name == found[2]:
                choices = typing.get_args(key.type)
                if choices and all(isinstance(c, str) for c in choices):
                    return f"{message} (one of {', '.join(map(repr, choices))})"
    return message


_OWN_CHECK = re.compile(r"`(?P<key>[a-z0-9-]+)`: (?P<message>.*) - at `\$\.(?P<section>[a-z]+)`")


def flatten(config: Config) -> dict[str, Any]:
    """``{"journal.durability": "interval", ...}``."""
    out: dict[str, Any] = {}
    for section, values in msgspec.to_builtins(config).items():
        out.update({f"{section}.{key}": value for key, value in values.items()})
    return out
