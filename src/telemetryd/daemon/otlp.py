"""What the HTTP listener's endpoints do: OTLP export requests and hook payloads to events.

**OTLP** (``/v1/logs``, ``/v1/metrics``, ``/v1/traces``), per the OTLP/HTTP
specification: the encoding follows ``Content-Type`` (``application/x-protobuf`` or
``application/json``; anything else 415) and the answer is in the same one; a
``Content-Encoding: gzip`` body is inflated up to ``http.max-body-bytes`` (413 past
it); an undecodable body is a 400 with a ``google.rpc.Status``; records whose events
fail the daemon's checks (or whose mapping fails) are counted in ``partial_success``
of a 200, so the client does not retry them; an empty request is a success. Each
record becomes events through :mod:`telemetryd.adapters.otel.mapping`; they are
checked, deduplicated and journaled like lines on the events socket, and the answer
waits until they are durable. A body of ``OFFLOAD_MIN_BYTES`` or more is inflated,
decoded, mapped and checked by an ingest worker process when one has room (the
daemon's other cores); the daemon then applies the checked events as it applies a
chunk of the events socket.

**Hooks** (``/v1/hooks/claude-code``, ``/v1/hooks/codex``): one hook payload, the body
Claude Code's ``http`` hooks post, mapped by :func:`claude_code.hook_events` as
`telemetryctl hook` maps it; tool durations for agents that do not report them come
from the PreToolUse time remembered here (a bounded table instead of the command
hook's files). Answered 200 with an empty body once journaled.
"""

from __future__ import annotations

import logging
import time
import zlib
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from telemetryd import fastjson, wire
from telemetryd.adapters import claude_code
from telemetryd.adapters.otel import export
from telemetryd.adapters.otel import wire as otlp_wire
from telemetryd.daemon.ingest import Feed
from telemetryd.daemon.ingest_worker import GZIPPED, PROMPT_TEXT, Answer, job_code
from telemetryd.daemon.ingest_workers import OFFLOAD_MIN_BYTES, TAKEN
from telemetryd.daemon.listeners.http import Handler, HttpListener, Reply, Request, plain

if TYPE_CHECKING:
    from telemetryd.daemon.ingest_workers import Workers

log = logging.getLogger(__name__)

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
TOOL_STARTS = 10_000  # PreToolUse times remembered for hooks without their own duration
MAX_HOOK_BYTES = 4 * 1024 * 1024  # a hook payload (Claude Code truncates tool output in it)
_ENCODE = msgspec.json.Encoder().encode
_INVALID_ARGUMENT = 3  # google.rpc.Code


class _Job:
    """One export request's body, to map (adapters/otel/export.py) here or in a worker."""

    def __init__(
        self,
        signal: otlp_wire.Signal,
        encoding: otlp_wire.Encoding,
        body: bytes,
        gzipped: bool,
        limit: int,
        prompt_text: bool,
        max_attrs: int,
    ) -> None:
        self.signal = signal
        self.encoding = encoding
        self.body = body
        self.gzipped = gzipped
        self.limit = limit
        self.prompt_text = prompt_text
        self.max_attrs = max_attrs

    def run(self) -> export.Mapped:
        return export.to_events(
            self.signal,
            self.encoding,
            self.body,
            gzipped=self.gzipped,
            limit=self.limit,
            prompt_text=self.prompt_text,
            max_attrs=self.max_attrs,
        )

    def too_big(self) -> str:
        return f"the body inflates past the limit of {self.limit} bytes"


class Receiver:
    """The handlers, bound to the listener whose limits and journal they use, and the
    ingest workers that map big requests (None: the daemon maps every one)."""

    def __init__(self, listener: HttpListener, workers: Workers | None = None) -> None:
        self.listener = listener
        self.workers = workers
        self._tool_starts: dict[str, float] = {}  # oldest first
        self.records = 0  # OTLP records received
        self.rejected = 0  # ... and rejected

    def routes(self) -> dict[str, Handler]:
        return {
            "/": self.any_signal,
            "/v1/logs": self.logs,
            "/v1/metrics": self.metrics,
            "/v1/traces": self.traces,
            "/v1/hooks/claude-code": self.hook_claude_code,
            "/v1/hooks/codex": self.hook_codex,
        }

    # -- OTLP -------------------------------------------------------------------------

    async def logs(self, request: Request) -> Reply:
        return await self._export("logs", request)

    async def metrics(self, request: Request) -> Reply:
        return await self._export("metrics", request)

    async def traces(self, request: Request) -> Reply:
        return await self._export("traces", request)

    async def any_signal(self, request: Request) -> Reply:
        """An OTLP/JSON request posted to the bare endpoint (older Gemini CLI versions
        send all three signals there): the signal is the request's top-level key."""
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        coding = request.headers.get("content-encoding", "identity").strip().lower()
        signal = (
            otlp_wire.signal_of(request.body) if media == JSON and coding == "identity" else None
        )
        if signal is None:
            return plain(
                404,
                "post OTLP to /v1/logs, /v1/metrics or /v1/traces (only an uncompressed "
                "OTLP/JSON request is recognised at /)",
            )
        return await self._export(signal, request)

    async def _export(self, signal: otlp_wire.Signal, request: Request) -> Reply:
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media == PROTOBUF:
            encoding: otlp_wire.Encoding = "protobuf"
        elif media == JSON:
            encoding = "json"
        else:
            return plain(415, f"Content-Type must be {PROTOBUF} or {JSON}, not {media[:100]!r}")
        coding = request.headers.get("content-encoding", "identity").strip().lower()
        if coding not in ("identity", "gzip"):
            return plain(415, f"Content-Encoding {coding[:100]!r} is not supported (gzip is)")
        config = self.listener.config
        job = _Job(
            signal,
            encoding,
            request.body,
            coding == "gzip",
            config.max_body_bytes,
            config.prompt_text,
            self.listener.ingestor.config.max_attrs_bytes,
        )
        answer = await self._in_worker(job) if len(job.body) >= OFFLOAD_MIN_BYTES else None
        if answer is not None:  # an ingest worker mapped and checked the events
            if answer.refused is not None:
                return self._refused(encoding, *answer.refused)
            assert answer.mapped is not None
            mapped = answer.mapped
            feed = Feed(self.listener.ingestor)
            outcome = await self.listener.journal_events(feed, *feed.applied(b"", answer.checked))
        else:
            try:
                mapped = await self.listener.offload(job.run, len(job.body))
            except OverflowError:
                return self._refused(encoding, 413, job.too_big())
            except zlib.error as exc:
                return self._refused(encoding, 400, f"the gzip body is broken: {exc}")
            except otlp_wire.BadRequest as exc:
                return self._refused(encoding, 400, str(exc))
            feed = Feed(self.listener.ingestor)
            outcome = await self.listener.journal_events(
                feed,
                *feed.feed(mapped.lines, keep_received=mapped.forwarded > 0, attrs=mapped.attrs),
            )
        if isinstance(outcome, Reply):
            return outcome
        replies = outcome
        problem = mapped.problem
        if replies and not problem:
            problem = _first_problem(replies)
        # (One record can give several events; rejections are counted per event, and
        # never more than the records sent.)
        rejected = min(mapped.unmapped + feed.rejected, mapped.records)
        self.records += mapped.records
        self.rejected += rejected
        media_type = JSON if encoding == "json" else PROTOBUF
        body = otlp_wire.success(signal, encoding, rejected, problem if rejected else "")
        return Reply(200, body, media_type)

    async def _in_worker(self, job: _Job) -> Answer | None:
        """Have an ingest worker decode, map and check ``job`` (the daemon's other cores
        at work); None when none has room (then the daemon does it)."""
        workers = self.workers
        if workers is None or not workers.count:
            return None
        config = self.listener.ingestor.config
        done = anyio.Event()
        answers: list[Answer | None] = []

        def answered(answer: Answer | None) -> None:
            answers.append(answer)
            done.set()

        flags = (GZIPPED if job.gzipped else 0) | (PROMPT_TEXT if job.prompt_text else 0)
        taken = workers.submit(
            job.body,
            0,
            config.max_line_bytes,
            config.max_attrs_bytes,
            config.max_attrs_depth,
            answered,
            job=job_code(job.signal, job.encoding),
            limit=job.limit,
            flags=flags,
            expect=4 * job.limit if job.gzipped else 4 * len(job.body),
        )
        if taken != TAKEN:
            return None
        await done.wait()
        return answers[0]  # (None: the worker died; the daemon does it)

    def _refused(self, encoding: otlp_wire.Encoding, status: int, message: str) -> Reply:
        if status == 413:
            return plain(413, message)
        return self._bad(encoding, message)

    @staticmethod
    def _bad(encoding: otlp_wire.Encoding, message: str) -> Reply:
        media_type = JSON if encoding == "json" else PROTOBUF
        return Reply(400, otlp_wire.status(encoding, _INVALID_ARGUMENT, message), media_type)

    # -- hooks ------------------------------------------------------------------------

    async def hook_claude_code(self, request: Request) -> Reply:
        return await self._hook(request, claude_code.SOURCE)

    async def hook_codex(self, request: Request) -> Reply:
        return await self._hook(request, "codex")

    async def _hook(self, request: Request, source: str) -> Reply:
        if len(request.body) > MAX_HOOK_BYTES:
            return plain(413, f"a hook payload is at most {MAX_HOOK_BYTES} bytes")
        try:
            try:
                payload = msgspec.json.decode(request.body)
            except (msgspec.DecodeError, RecursionError):  # mended in a thread (a big body)
                body = request.body
                payload = await self.listener.offload(lambda: _hook_payload(body), len(body))
        except msgspec.DecodeError as exc:
            return plain(400, f"the hook payload is not JSON: {exc}")
        except RecursionError:
            return plain(400, "the hook payload nests too deeply")
        if not isinstance(payload, dict):
            return plain(400, "the hook payload is not a JSON object")
        name = payload.get("hook_event_name")
        duration = None
        subagent = None
        if name == "PreToolUse":
            self._remember_start(payload)
        elif name in ("PostToolUse", "PostToolUseFailure"):
            duration = self._elapsed(payload)
        elif name == "SubagentStop" and request.local:
            # (The sub-agent's transcript is a file on this machine: a payload from
            # another machine names a path of its own, never read here.)
            subagent = await self.listener.offload(
                lambda: claude_code.subagent_usage(payload, source), MAX_HOOK_BYTES
            )
        events = claude_code.hook_events(
            payload,
            duration_ms=duration,
            subagent=subagent,
            prompt_text=self.listener.config.prompt_text,
            source=source,
        )
        lines = b"".join(_ENCODE(event) + b"\n" for event in events)
        feed = Feed(self.listener.ingestor)
        replies = await self.listener.journal_events(feed, *feed.feed(lines))
        if isinstance(replies, Reply):
            return replies
        if replies:
            message = _first_problem(replies)
            log.warning("HTTP hook %s: an event was rejected: %s", name, message)
            return plain(400, f"rejected: {message}")
        return Reply(200)

    def _key(self, payload: dict[str, Any]) -> str | None:
        use_id = payload.get("tool_use_id")
        if not isinstance(use_id, str) or not use_id:
            return None
        return f"{payload.get('session_id')}\0{use_id}"

    def _remember_start(self, payload: dict[str, Any]) -> None:
        key = self._key(payload)
        if key is None:
            return
        starts = self._tool_starts
        starts[key] = time.monotonic()
        while len(starts) > TOOL_STARTS:  # tools that never finished: forget the oldest
            del starts[next(iter(starts))]

    def _elapsed(self, payload: dict[str, Any]) -> int | None:
        key = self._key(payload)
        started = self._tool_starts.pop(key, None) if key is not None else None
        if started is None or payload.get("duration_ms") is not None:
            return None
        return int((time.monotonic() - started) * 1000)


def _first_problem(replies: list[bytes]) -> str:
    """The first rejection's message (replies are wire.Rejected lines)."""
    try:
        first = msgspec.json.decode(replies[0], type=wire.Rejected)
    except msgspec.DecodeError:
        return "an event was rejected"
    where = f" at {first.path}" if first.path else ""
    return f"{first.error}: {first.message}{where}"


def _hook_payload(body: bytes, mends: int = 2) -> Any:
    """A hook payload's JSON; one broken only by escapes of lone UTF-16 surrogates (a
    tool's output cut inside an emoji, as JSON.stringify writes it) is read with U+FFFD
    for each, and one nested deeper than the decoder goes with "…" for what is deeper
    than :data:`fastjson.MAX_DEPTH`, as `telemetryctl hook` reads them."""
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        fixed = fastjson.mended(body, isinstance(exc, RecursionError)) if mends else None
        if fixed is None:
            raise
        return _hook_payload(fixed, mends - 1)
