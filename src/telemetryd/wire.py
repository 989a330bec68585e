"""Message shapes shared by the daemon and its clients (docs/protocol.md explains them).

Events socket: a client writes one JSON event per line. The daemon answers each
rejected line at once with a :class:`Rejected` line, and answers a sync request
(``{"op": "sync"}``) or the client's half-close with one :class:`Summary` line,
sent only once every event it accepted on that connection is in the journal
under the configured durability mode. A problem with the connection as a whole
(too many connections, idle timeout, shutdown) gets a :class:`Closing` line.

Control socket: one JSON request per line, answered by one or more reply lines:
``status``, ``flush``, ``rebuild``, ``gc`` and ``export`` by one typed reply
(:class:`StatusReply`, :class:`FlushReply`, :class:`RebuildReply`, :class:`GcReply`,
:class:`ExportReply`), ``query`` and ``tail`` by a stream of lines; a request that
fails gets a :class:`Closing` line whose ``error`` names the operation (``gc_failed``,
...) or the part that is down (``store_unavailable``, ``journal_unavailable``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Struct, UnsetType

from telemetryd.events import (  # noqa: F401  (the codes for one bad line)
    ATTRS_TOO_DEEP,
    ATTRS_TOO_LARGE,
    INTERNAL_ERROR,
    INVALID_EVENT,
    INVALID_JSON,
    INVALID_UTF8,
    LINE_TOO_LONG,
    RECEIVED_AT_SET,
)

# Short, stable error codes in Rejected.error / Closing.error.
JOURNAL_UNAVAILABLE = "journal_unavailable"
TOO_MANY_CONNECTIONS = "too_many_connections"
FORBIDDEN_PEER = "forbidden_peer"
IDLE_TIMEOUT = "idle_timeout"
SHUTTING_DOWN = "shutting_down"
BAD_REQUEST = "bad_request"
QUERY_FAILED = "query_failed"
QUERY_TIMEOUT = "query_timeout"
# A control operation failed (Closing.error; the message says why).
STATUS_FAILED = "status_failed"
FLUSH_FAILED = "flush_failed"
REBUILD_FAILED = "rebuild_failed"
GC_FAILED = "gc_failed"
TAIL_FAILED = "tail_failed"
TOTALS_FAILED = "totals_failed"
REPRICE_FAILED = "reprice_failed"
# ... because a part it needs is down, whatever the operation.
STORE_UNAVAILABLE = "store_unavailable"  # the database is not open (yet)

SYNC_REQUEST = b'{"op":"sync"}\n'
MAX_TAIL_BACKLOG = 100_000
MAX_QUERY_TIMEOUT = 3600.0  # seconds; a longer timeout is cut to this
MAX_REQUEST_BYTES = 64 * 1024  # one control request line, without its newline
# One row of a query result, JSON-encoded, is at most this long; a row over it ends the
# query with QUERY_FAILED naming the limit. The longest reply line a client must accept
# is such a row with its framing.
MAX_ROW_BYTES = 64 * 1024 * 1024
MAX_REPLY_LINE = MAX_ROW_BYTES + 1024


class Rejected(Struct, omit_defaults=True):
    """One line was not journaled; ``line`` is 1-based within the connection."""

    line: int
    error: str
    message: str
    path: str | None = None


class Summary(Struct):
    """Everything the connection sent so far: lines read, events newly journaled,
    lines rejected, and events whose id was already in the journal."""

    ok: bool
    lines: int
    accepted: int
    rejected: int
    duplicates: int


class Closing(Struct):
    """The daemon closes the connection; ``error`` says why."""

    error: str
    message: str


class Sync(Struct, forbid_unknown_fields=True):
    op: Literal["sync"]


# Control socket requests, tagged by ``op``.
class Request(Struct, tag_field="op", forbid_unknown_fields=True, kw_only=True):
    pass


class StatusRequest(Request, tag="status"):
    pass


class FlushRequest(Request, tag="flush"):
    pass


class RebuildRequest(Request, tag="rebuild"):
    """Recreate the database from the journal."""


class GcRequest(Request, tag="gc"):
    """Apply retention now (daemon/retention.py); ``dry_run`` only says what it would do."""

    dry_run: bool = False


class QueryRequest(Request, tag="query"):
    """Run one read-only SQL statement; ``params`` bind ``$name`` placeholders. ``timeout``
    (seconds, more than 0; the daemon's default when absent, at most ``MAX_QUERY_TIMEOUT``)
    bounds the wait for a query slot, and then the query with its reply."""

    sql: str
    params: dict[str, Any] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0)] | None = None
    # Answer a QueryAccepted line first, at once: the client then knows the daemon has
    # the query (a daemon that is stopped or wedged never says so) and its timeout.
    accepted: bool = False


class TailRequest(Request, tag="tail"):
    """Stream events as they are journaled: first the last ``backlog`` matching events of
    the current segment, then (with ``follow``) every new one. An event matches when each
    non-empty filter contains its field. Replies: event lines as journaled, a
    :class:`TailDropped` line where events were skipped, and, without ``follow``, a
    :class:`TailDone` line after the backlog."""

    types: list[str] = []
    sessions: list[str] = []
    sources: list[str] = []
    backlog: Annotated[int, msgspec.Meta(ge=0, le=MAX_TAIL_BACKLOG)] = 0
    follow: bool = True


class RepriceRequest(Request, tag="reprice"):
    """Compute the costs of the stored api_requests (from ``since`` on) again, with the
    price data and the configuration's overrides as they are now (store/pricing.py);
    reported costs stay."""

    since: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


class TotalsRequest(Request, tag="totals"):
    """The daemon's running totals of API usage (daemon/totals.py): today's (UTC), every
    day kept, ``session``'s when given, the usage since ``since`` when given (a time
    with its offset: the client's local midnight, say; exact on quarter hours), and
    the active 5-hour window of Claude usage. Answered from memory, without the store."""

    session: str | None = None
    since: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


# -- export (docs/export.md) ---------------------------------------------------------

EXPORT_FAILED = "export_failed"


class ExportRequest(Request, tag="export"):
    """Export the events not exported yet to ``dir`` (an absolute path, or a URL that
    DuckDB's writers accept) as Hive-partitioned Parquet (store/export.py). ``since`` and
    ``until`` (RFC 3339) set the window of a new export directory (``since <= ts <
    until``); an existing one keeps its own."""

    dir: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    since: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    until: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


class ExportReply(Struct, kw_only=True):
    """One export run: ``run`` (None: nothing was new), the events and files it wrote
    (file paths relative to ``target``), the directory's events in all, its window."""

    ok: bool = True
    target: str
    run: int | None
    events: int
    files: list[str]
    total_events: int
    since: str | None
    until: str | None
    elapsed_s: float


ControlRequest = (
    ExportRequest
    | StatusRequest
    | FlushRequest
    | RebuildRequest
    | GcRequest
    | QueryRequest
    | TailRequest
    | TotalsRequest
    | RepriceRequest
)


# Query replies, in order: one QueryColumns, any number of QueryRows, then one
# QueryDone, or a Closing with error QUERY_FAILED (the message is DuckDB's own).
class QueryAccepted(Struct):
    """The first line of a query's answer when its request asks for it: the daemon has
    the query, which ends within ``timeout`` seconds (the request's, or the default)."""

    accepted: bool
    timeout: float


class QueryColumns(Struct):
    columns: list[tuple[str, str]]  # (name, DuckDB type)


class QueryRows(Struct):
    rows: list[tuple[Any, ...]]


class QueryDone(Struct, omit_defaults=True):
    """The end of a query's answer. ``warning`` says why the answer may leave out events
    acknowledged before the query started (they are not in the database yet)."""

    ok: bool
    row_count: int
    elapsed_ms: float
    warning: str | None = None


# Tail replies besides the event lines (which always start with ``{"type":``).
class TailDropped(Struct):
    """This many events were journaled but not sent: the client fell behind."""

    dropped: int


class TailDone(Struct):
    ok: bool
    events: int


# Replies to status, flush, rebuild and gc: one line each. Field order is key order.
class QueryStats(Struct):
    """The query slots: how many there are, run now, and requests waiting for one."""

    slots: int
    running: int
    waiting: int


class JournalStatus(Struct):
    """The journal as :meth:`telemetryd.daemon.journal.Journal.stats` reports it."""

    segments: int
    bytes: int
    current_segment: str
    events_written: int  # this run
    events_failed: int  # this run: accepted, then not written (their senders were told)
    queued_bytes: int  # waiting for the writer
    durability: str
    write_error: str | None  # the last write error
    ignored_files: list[str]  # files in the journal directory that are not segments


class IngestWorkersStatus(Struct):
    """The ingest worker processes (daemon/ingest_workers.py): started by big writes, stopped
    after 30 s without one, so ``running`` is 0 in an idle daemon."""

    running: int  # ready and in use now
    max: int  # how many run at most (0: none, the daemon checks every line itself)
    starts: int  # this run
    last_exit: str | None  # the last exit the daemon did not ask for ("killed by SIGKILL")


class PathsStatus(Struct):
    """Every path the daemon uses (:meth:`telemetryd.paths.Paths.as_dict`)."""

    events_socket: str
    control_socket: str
    journal_dir: str
    spool_dir: str
    quarantine_dir: str
    database: str
    config_file: str
    lock_file: str
    runtime_dir: str
    state_dir: str
    http_token_file: str = ""


class HttpStatus(Struct, kw_only=True, omit_defaults=True):
    """The HTTP listener (OTLP and http hooks): where, and what it received."""

    address: str
    listening: bool
    error: str | None = None  # why it is not listening
    connections: int = 0
    requests: int = 0
    records: int = 0  # OTLP records
    rejected: int = 0  # ... of which rejected (partial success)


class ConfigStatus(Struct, kw_only=True):
    """The reloads (SIGHUP) of this run of the daemon: how many, the last one's time, why
    it failed (the running configuration stayed), and the changed settings that wait
    for a restart."""

    reloads: int = 0
    last_reload: str | None = None
    error: str | None = None
    waiting: list[str] = []


class ForwardStatus(Struct, kw_only=True):
    """Forwarding to an OTLP endpoint (daemon/forward.py, docs/forward.md): where the
    forwarder is in the journal, how far behind, and how the endpoint answered."""

    endpoint: str
    signals: list[str]
    # sending | caught up | retrying | stopped (refusals over the limit: retried slowly)
    # | off (it could not start: last_error says why; nothing is sent until a restart)
    state: str
    segment: str  # the position: a segment's name ("" before the first) ...
    offset: int  # ... and the bytes of it (uncompressed) already forwarded
    behind_events: int | None  # journaled, not yet forwarded (None: still counting)
    behind_bytes: int | None
    sent_events: int  # this run
    requests: int  # answered with a success, this run
    last_success: str | None  # RFC 3339
    last_error: str | None
    last_error_at: str | None
    failures: int  # attempts failed in a row, of the batch retried longest
    retry_in_s: float | None  # the next attempt, while retrying
    refused_events: int  # refused by the receiver for good, copied to refused_file (this run)
    partial_rejected: int  # records a 200 said it rejected (partial success), this run
    refused_file: str
    skipped: list[str]  # journal segments deleted before they were forwarded (this run)


class ExportStatus(Struct, kw_only=True):
    """The continuous Parquet export (``[export] parquet-dir``, docs/export.md): where,
    how often, and how its last runs went (this run of the daemon)."""

    dir: str  # `[export] parquet-dir`
    interval_s: float  # `[export] interval`
    state: str  # waiting | exporting
    runs: int  # runs that succeeded
    last_run: str | None  # RFC 3339: when the last successful run finished
    last_events: int | None  # events the last successful run wrote (0: nothing new)
    last_files: int | None  # Parquet files it wrote
    total_events: int | None  # events in the directory after it (its manifest's count)
    last_error: str | None  # the last failed run's error
    last_error_at: str | None
    failures: int  # runs failed in a row (0 after a success)
    next_run: str | None  # RFC 3339: when the next run starts


class StatusReply(Struct, kw_only=True):
    ok: bool = True
    version: str
    pid: int
    uptime_s: float
    connections: int  # open events connections
    control_connections: int
    queries: QueryStats
    tail_clients: int  # tails following now
    accepted: int  # totals since the daemon started
    rejected: int
    duplicates: int
    events_per_s: float  # accepted per second since the previous status
    journal: JournalStatus
    # The store's own report (the store's code owns its keys and their two shapes:
    # ``{"open": false, "error": ...}`` before it opens); None: the daemon has no store.
    store: dict[str, Any] | None
    # The last retention run's report as retention made it (the keys of a GcReply
    # without ``ok``); None before the first run.
    retention: dict[str, Any] | None
    paths: PathsStatus
    ingest_workers: IngestWorkersStatus | None = None  # None: a daemon without them
    http: HttpStatus | None = None  # None: a daemon without the HTTP listener
    # The analyzer's figures (daemon/analyzer.py owns the keys); None: a daemon without it.
    analyzer: dict[str, Any] | None = None
    forward: ForwardStatus | None = None  # None: forwarding off (`[forward] endpoint` empty)
    export: ExportStatus | None = None  # None: no continuous export (`[export] parquet-dir`)
    config: ConfigStatus | None = None  # None: no reload so far


class UsageTotals(Struct, kw_only=True):
    """API requests, their tokens and their cost (``cost_usd`` sums the requests that
    have a cost; ``unknown_cost`` counts those that do not); the first and last one's
    time."""

    requests: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    cost_usd: float = 0.0
    unknown_cost: int = 0
    first: str | None = None
    last: str | None = None


class UsageWindow(Struct, kw_only=True):
    """A 5-hour window of Claude usage (a billing block, as ccusage's ``blocks``): from
    ``start`` (the hour of its first request) to ``end`` (5 h later), its requests'
    ``usage`` (``first``/``last``: the first and last request's times)."""

    start: str
    end: str
    usage: UsageTotals


class TotalsReply(Struct, kw_only=True):
    """The answer to a totals request: ``day`` is today (UTC); ``window`` the active
    5-hour window (None when there is none); ``since`` the usage since the request's
    ``since`` (when asked)."""

    ok: bool = True
    day: str
    today: UsageTotals
    days: dict[str, UsageTotals]
    sessions_tracked: int
    session: UsageTotals | UnsetType | None = UNSET
    since: UsageTotals | UnsetType = UNSET
    window: UsageWindow | None = None


class FlushReply(Struct, kw_only=True):
    """Everything accepted so far is written and fsynced; ``materialized``: the events
    new to the database (absent when the daemon has no database)."""

    ok: bool = True
    materialized: int | UnsetType = UNSET


class SalvagedSegment(Struct, kw_only=True):
    """A damaged ``.gz`` segment: its first ``kept_bytes`` (``kept_events`` events) kept
    as a plain segment, the damaged file moved to ``quarantined`` (store/database.py)."""

    segment: str
    kept_bytes: int
    kept_events: int
    quarantined: str
    error: str
    at: str


class BadLines(Struct, kw_only=True):
    """Lines of ``segment`` that are not JSON, left out of the database: ``count`` of
    them, the first ones' numbers in the segment (from 1) in ``lines``, the first's
    ``error``."""

    segment: str
    lines: list[int]
    count: int
    error: str
    at: str


class RebuildReply(Struct, kw_only=True):
    """The database was recreated from the journal and holds ``events`` events; it held
    ``events_before`` (null: a database of another schema version). ``salvaged`` and
    ``bad_lines``: the damage the rebuild met in the journal, which explains events the
    database no longer holds."""

    ok: bool = True
    events: int
    events_before: int | None = None
    salvaged: list[SalvagedSegment] = []
    bad_lines: list[BadLines] = []


class GcReply(Struct, kw_only=True):
    """What retention deleted and compressed (with ``dry_run``: would; ``events_deleted``
    and ``bytes_after`` are then null, ``usage_deleted`` and ``warning`` say what the size
    limit would delete)."""

    ok: bool = True
    dry_run: bool
    deleted: list[str]  # segment names
    compacted: list[str] = []  # old segments of which only the usage is kept now
    compressed: list[str]
    events_deleted: int | None
    usage_deleted: int | None = None  # model requests deleted by the size limit
    warning: str | None = None  # said when usage was deleted
    bytes_before: int
    bytes_after: int | None
    at: str  # when, RFC 3339 UTC
    failed: list[str] = []  # "compact NAME: why" / "compress NAME: why": tried again later


class RepriceReply(Struct, kw_only=True):
    """``repriced`` requests had their cost computed again with ``source``'s prices (of
    them, ``changed`` got another cost; ``computed`` have one, ``unknown`` none)."""

    ok: bool = True
    repriced: int
    changed: int
    computed: int
    unknown: int
    source: str  # the price data: genai-prices X.Y.Z
    overrides: list[str] = []  # the models priced by the configuration instead


Reply = StatusReply | FlushReply | RebuildReply | GcReply | TotalsReply | RepriceReply | ExportReply


ENCODER = msgspec.json.Encoder()
SYNC_DECODER = msgspec.json.Decoder(Sync)
CONTROL_DECODER = msgspec.json.Decoder(ControlRequest)


def encode_line(message: Struct) -> bytes:
    return ENCODER.encode(message) + b"\n"


# -- the store worker: the daemon and its DuckDB process (docs/architecture.md) ---------
#
# The daemon connects to the worker's socket once per request and writes one request
# line; the worker answers with reply lines and closes: a JSON object ending in ``"ok"``
# (or the query reply lines above), or a Closing line whose error names the failure
# (``store_unavailable``, ``load_failed``, ``rebuild_failed``, ``gc_failed``,
# ``query_failed``, ``query_timeout``). A connection that ends without such a final line
# means the worker died while answering.

LOAD_FAILED = "load_failed"  # (and STORE_UNAVAILABLE, REBUILD_FAILED, GC_FAILED above)
ANALYZE_FAILED = "analyze_failed"


class WorkerRequest(Struct, tag_field="op", forbid_unknown_fields=True, kw_only=True):
    pass


class WorkerLoad(WorkerRequest, tag="load"):
    """Load every journaled event not in the database yet:
    ``{"ok":true,"materialized":N,"caught_up":true}``. A ``yielding`` load (a timed one)
    stops after a batch when a query waits for its turn (``caught_up`` false)."""

    yielding: bool = False


class WorkerQuery(WorkerRequest, tag="query", kw_only=True):
    """A query, after loading the journal up to ``upto`` (the segment being written and
    its size when the client asked): the query reply lines."""

    sql: str
    params: dict[str, Any] | None = None
    timeout: float
    upto: tuple[str, int] = ("", 0)


class WorkerRebuild(WorkerRequest, tag="rebuild"):
    """Recreate the database from the journal: ``{"ok":true,"events":N}``."""


class WorkerGc(WorkerRequest, tag="gc"):
    """A retention run (``active``: the segment being written; ``retention``: the
    ``[retention]`` settings as loaded now): the run's report with ``"ok":true``."""

    dry_run: bool = False
    active: str = ""
    retention: dict[str, Any] = {}
    # Segments from this number on are neither deleted nor compacted for their age: the
    # forwarder has not sent them yet (0: none held). The size limit still applies.
    hold_from: int = 0


class WorkerAnalyze(WorkerRequest, tag="analyze"):
    """An analysis (store/analyzer.py) after loading the journal, with the ``[analyzer]``
    and ``[budget]`` settings as loaded now: ``{"ok":true,"alerts":[...],"next_due":T,
    "budget":[...]}``."""

    analyzer: dict[str, Any] = {}
    budget: dict[str, Any] = {}
    # Unix time: loops and cost anomalies in sessions with events received since then
    # only (None: every session).
    touched: float | None = None


class WorkerReprice(WorkerRequest, tag="reprice"):
    """Price the stored api_requests again (``since``: RFC 3339, from then on) with the
    ``[pricing]`` settings as loaded now, which the worker's loads use from then on:
    ``{"ok":true,"repriced":N,"changed":N,"computed":N,"unknown":N,"source":...}``."""

    since: str | None = None
    pricing: dict[str, Any] = {}


class WorkerPrices(WorkerRequest, tag="prices"):
    """The ``[pricing]`` settings a reload applied, which the worker's loads use from
    then on (stored costs stay as they are until a reprice): ``{"ok":true,"source":...}``."""

    pricing: dict[str, Any] = {}


class WorkerStats(WorkerRequest, tag="stats"):
    """The store's figures for `status`, with ``"ok":true``."""


class WorkerPing(WorkerRequest, tag="ping"):
    """``{"ok":true}`` from the worker's event loop: it is alive and answering."""


class WorkerExport(WorkerRequest, tag="export"):
    """An export run (``dir``, ``since``, ``until`` as in ExportRequest): its report, the
    fields of an ExportReply."""

    dir: str
    since: datetime | None = None
    until: datetime | None = None


class WorkerCosts(WorkerRequest, tag="costs"):
    """The costs of the stored api_requests among ``ids`` (at or after ``since``, a UTC
    time, which lets the worker skip older rows) as the store priced them, for the
    daemon's running totals (daemon/totals.py): ``{"ok":true,"costs":[[id, cost_usd,
    cost_source], ...]}`` (``cost_usd`` null when ``unknown``); an id not stored (yet)
    is left out. Nothing is loaded first."""

    ids: list[str]
    since: datetime | None = None


MAX_COST_IDS = 1_000  # ids in one WorkerCosts request (at most ~800 KB however they are escaped)


WorkerMessage = (
    WorkerCosts
    | WorkerExport
    | WorkerLoad
    | WorkerQuery
    | WorkerRebuild
    | WorkerGc
    | WorkerAnalyze
    | WorkerReprice
    | WorkerPrices
    | WorkerStats
    | WorkerPing
)
WORKER_DECODER = msgspec.json.Decoder(WorkerMessage)
