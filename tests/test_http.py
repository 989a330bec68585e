"""The HTTP listener on the real daemon: OTLP/HTTP from real clients (the OpenTelemetry
SDK's exporters, curl), http hooks, and bad input of every kind answered with the right
status, nothing journaled and the daemon unharmed."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from signal import SIGHUP
from typing import Any

import pytest

from conftest import Daemon, ctl

FIXTURES = Path(__file__).parent / "fixtures" / "otlp-upstream"
JSON = "application/json"
PROTOBUF = "application/x-protobuf"


class Client:
    """Plain HTTP/1.1 requests to one daemon's listener, with its token."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.address = daemon.http_address()
        self.host, port = self.address.rsplit(":", 1)
        self.port = int(port)
        path = daemon.home / "http-token"  # (none when no token is required)
        self.token = path.read_text().strip() if path.exists() else ""

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(
        self,
        path: str,
        body: bytes,
        content_type: str = JSON,
        headers: dict[str, str] | None = None,
        token: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            sent = {"Content-Type": content_type, **(self.auth() if token else {})}
            sent.update(headers or {})
            conn.request("POST", path, body=body, headers=sent)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def raw(self, data: bytes, wait: float = 5.0) -> bytes:
        """Send ``data`` on a fresh connection and read until the server closes."""
        with socket.create_connection((self.host, self.port), timeout=wait) as sock:
            sock.sendall(data)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except TimeoutError:
                pass
            return b"".join(chunks)

    def head(self, path: str, length: int, extra: str = "") -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: {self.address}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: {JSON}\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n"
        ).encode()


@pytest.fixture
def daemon(running_daemon: Daemon) -> Iterator[Daemon]:
    yield running_daemon


@pytest.fixture
def client(daemon: Daemon) -> Client:
    return Client(daemon)


_made = iter(range(1, 1_000_000))


def unique_logs() -> bytes:
    """The upstream logs example with a body of its own: the daemon keeps an exporter's
    retry of the same record once (its id is a hash of the record), so a test that counts
    events posts a new record each time."""
    request = json.loads((FIXTURES / "logs.json").read_bytes())
    record = request["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    record["body"] = {"stringValue": f"Example log record {next(_made)}"}
    return json.dumps(request).encode()


def journaled(daemon: Daemon) -> list[dict[str, Any]]:
    return daemon.journal_events()


def assert_unharmed(client: Client, before: int) -> None:
    """Nothing more was journaled, and the daemon still takes a good request."""
    assert len(journaled(client.daemon)) == before
    status, _, body = client.post("/v1/logs", unique_logs())
    assert (status, body) == (200, b"{}")
    assert len(journaled(client.daemon)) == before + 1


# -- real clients -------------------------------------------------------------------------


def test_curl_posts_the_upstream_examples(client: Client) -> None:
    """Each OTLP/JSON example of opentelemetry-proto is accepted and journaled before the
    answer (acknowledged means journaled)."""
    expected = {"logs.json": 1, "metrics.json": 0, "trace.json": 0, "events.json": 1}
    for name, signal in (
        ("logs.json", "logs"),
        ("metrics.json", "metrics"),
        ("trace.json", "traces"),
        ("events.json", "logs"),
    ):
        before = len(journaled(client.daemon))
        result = subprocess.run(
            [
                "curl", "-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}",
                "-H", f"Authorization: Bearer {client.token}",
                "-H", f"Content-Type: {JSON}",
                "--data-binary", f"@{FIXTURES / name}",
                f"http://{client.address}/v1/{signal}",
            ],
            capture_output=True, timeout=30, check=True,
        )  # fmt: skip
        body, code = result.stdout.rsplit(b"\n", 1)
        assert (code, body) == (b"200", b"{}"), result
        added = len(journaled(client.daemon)) - before
        assert added >= 1 and (expected[name] == 0 or added == expected[name]), name
    traces = [e for e in journaled(client.daemon) if e.get("trace_id")]
    # trace.json holds one span; its ids arrive in lowercase hex
    assert any(e.get("span_id") == "eee19b7ec3c1b174" for e in traces)


def test_sdk_exporters_logs_metrics_traces(client: Client) -> None:
    """The OpenTelemetry Python SDK's OTLP/HTTP (protobuf) exporters, as agents use them."""
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    base = f"http://{client.address}"
    headers = client.auth()
    resource = Resource({"service.name": "sdk-test"})

    logs = LoggerProvider(resource=resource)
    logs.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{base}/v1/logs", headers=headers))
    )
    logger = logs.get_logger("tests")
    for n in range(3):
        logger.emit(
            LogRecord(
                body=f"hello {n}",
                severity_number=SeverityNumber.WARN,
                attributes={"n": n, "big": 2**62},
            )
        )
    logs.shutdown()

    spans = TracerProvider(resource=resource)
    spans.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=headers))
    )
    tracer = spans.get_tracer("tests")
    with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner"):
        trace_id = format(outer.get_span_context().trace_id, "032x")
    spans.shutdown()

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers),
        export_interval_millis=3_600_000,
    )
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    meters.get_meter("tests").create_counter("sdk.requests", unit="1").add(5, {"k": "v"})
    meters.shutdown()  # exports what it has

    events = journaled(client.daemon)
    texts = [json.dumps(e) for e in events]
    assert sum("hello " in t for t in texts) == 3
    assert str(2**62) in "".join(texts)  # an int64 past 2**53 kept exactly
    in_trace = [e for e in events if e.get("trace_id") == trace_id]
    assert len(in_trace) == 2
    inner = next(e for e in in_trace if e.get("parent_span_id"))
    outer_event = next(e for e in in_trace if not e.get("parent_span_id"))
    assert inner["parent_span_id"] == outer_event["span_id"]
    assert any("sdk.requests" in t for t in texts)


def test_json_and_gzip_bodies_are_answered_in_kind(client: Client) -> None:
    body = (FIXTURES / "logs.json").read_bytes()
    status, headers, answer = client.post(
        "/v1/logs", gzip.compress(body), headers={"Content-Encoding": "gzip"}
    )
    assert (status, headers["Content-Type"], answer) == (200, JSON, b"{}")
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    status, headers, answer = client.post(
        "/v1/logs", logs_service_pb2.ExportLogsServiceRequest().SerializeToString(), PROTOBUF
    )
    assert (status, headers["Content-Type"], answer) == (200, PROTOBUF, b"")


def test_an_empty_request_is_a_success(client: Client) -> None:
    before = len(journaled(client.daemon))
    for content_type in (JSON, PROTOBUF):
        status, _, _ = client.post("/v1/traces", b"", content_type)
        assert status == 200
    status, _, answer = client.post("/v1/metrics", b"{}")
    assert (status, answer) == (200, b"{}")
    assert len(journaled(client.daemon)) == before


def test_int64_as_strings_or_numbers_and_time_fallback(client: Client) -> None:
    """timeUnixNano "0" falls back to observedTimeUnixNano; numbers may be strings."""
    record = {
        "timeUnixNano": "0",
        "observedTimeUnixNano": 1_700_000_000_123_000_000,
        "body": {"stringValue": "fallback"},
        "attributes": [
            {"key": "as_text", "value": {"intValue": "9007199254740993"}},
            {"key": "as_number", "value": {"intValue": 7}},
        ],
        "unknownField": {"ignored": True},
    }
    body = {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}
    status, _, answer = client.post("/v1/logs", json.dumps(body).encode())
    assert (status, answer) == (200, b"{}")
    event = journaled(client.daemon)[-1]
    assert event["ts"].startswith("2023-11-14T22:13:20.123")
    assert "9007199254740993" in json.dumps(event)


# -- http hooks ---------------------------------------------------------------------------


def test_http_hook_maps_like_the_command_hook(client: Client) -> None:
    pre = {
        "hook_event_name": "PreToolUse",
        "session_id": "sess-h",
        "tool_name": "Bash",
        "tool_use_id": "toolu_h1",
    }
    post = {**pre, "hook_event_name": "PostToolUse", "tool_response": {"stdout": "ok"}}
    for payload in (pre, post):
        status, _, answer = client.post("/v1/hooks/claude-code", json.dumps(payload).encode())
        assert (status, answer) == (200, b"")
    events = {e["type"]: e for e in journaled(client.daemon)}
    assert events["tool_call"]["id"] == "cc:tool_call:sess-h:toolu_h1"
    result = events["tool_result"]
    assert result["tool"] == {"name": "Bash", "use_id": "toolu_h1", "success": True}
    assert result["duration_ms"] >= 0  # from the PreToolUse time remembered by the daemon
    # The same payload again (a hook installed twice) is one event.
    client.post("/v1/hooks/claude-code", json.dumps(post).encode())
    assert sum(e["type"] == "tool_result" for e in journaled(client.daemon)) == 1


def test_http_hook_for_codex_and_bad_payloads(client: Client) -> None:
    payload = {"hook_event_name": "UserPromptSubmit", "session_id": "c1", "prompt": "hello"}
    status, _, _ = client.post("/v1/hooks/codex", json.dumps(payload).encode())
    assert status == 200
    event = journaled(client.daemon)[-1]
    assert (event["type"], event["source"], event["length"]) == ("prompt", "codex", 5)
    assert "hello" not in json.dumps(event)  # the text is content: only its length
    before = len(journaled(client.daemon))
    for body, message in ((b"not json", b"not JSON"), (b"[1, 2]", b"not a JSON object")):
        status, _, answer = client.post("/v1/hooks/claude-code", body)
        assert status == 400 and message in answer
    assert len(journaled(client.daemon)) == before


def test_http_hook_with_a_lone_surrogate_escape_is_kept_as_the_command_hook_keeps_it(
    client: Client,
) -> None:
    """Claude Code cuts a long tool output by UTF-16 units, and JSON.stringify writes the
    half of an emoji left as a lone escape: the payload is still taken (it was a 400)."""
    post = {
        "hook_event_name": "PostToolUseFailure",
        "session_id": "sess-s",
        "tool_name": "Bash",
        "tool_use_id": "toolu_s1",
        "error": "cut here: XX",
        "tool_response": {"stdout": "YY 😀"},
    }
    body = json.dumps(post).replace("XX", "\\ud83d").replace("YY", "\\ude00").encode()
    status, _, answer = client.post("/v1/hooks/claude-code", body)
    assert (status, answer) == (200, b"")
    (result,) = [e for e in journaled(client.daemon) if e["type"] == "tool_result"]
    assert result["tool"]["use_id"] == "toolu_s1" and result["tool"]["error"] == "cut here: \ufffd"
    status, _, _ = client.post("/v1/hooks/claude-code", b'{"hook_event_name": "\\ud800')
    assert status == 400  # (broken otherwise too: still not JSON)


def test_a_hook_payload_nested_past_the_decoder_keeps_its_event(client: Client) -> None:
    """A tool's input nested 3,000 deep (the model writes tool inputs): the http hook (a
    400) and the command hook (an exception) lost the event; now both keep it, the value
    past fastjson.MAX_DEPTH read as "…". Its digest is the same by both paths, also at
    950 deep, which one path's decoder reads whole and the other's not (it was missing
    from 500 deep on, or from one path only)."""
    for depth in (3000, 950):
        deep = '{"n": ' * depth + "1" + "}" * depth
        for path in ("http", "command"):
            post = {
                "hook_event_name": "PostToolUseFailure",
                "session_id": "sess-deep",
                "tool_name": "Bash",
                "tool_use_id": f"toolu_{depth}_{path}",
                "tool_input": {"command": "ls", "args": "DEEP"},
                "error": "exit 1",
            }
            body = json.dumps(post).replace('"DEEP"', deep).encode()
            if path == "http":
                status, _, answer = client.post("/v1/hooks/claude-code", body)
                assert (status, answer) == (200, b"")
            else:
                result = ctl("hook", "claude-code", input=body)
                assert (result.returncode, result.stderr) == (0, b"")
    events = journaled(client.daemon)
    results = {e["tool"]["use_id"]: e["tool"] for e in events if e["type"] == "tool_result"}
    assert len(results) == 4
    for tool in results.values():
        assert (tool["name"], tool["success"], tool["error"]) == ("Bash", False, "exit 1")
    digests = {use_id: tool.get("input_digest") for use_id, tool in results.items()}
    assert None not in digests.values()
    assert len(set(digests.values())) == 1, digests  # (the same cut, by any path and depth)
    status, _, _ = client.post("/v1/hooks/claude-code", b'{"a": ' + b"[" * 3000)
    assert status == 400  # (deep and never closed: still not JSON)


# -- bad input ------------------------------------------------------------------------------


def test_wrong_content_type_and_encoding(client: Client) -> None:
    before = len(journaled(client.daemon))
    body = (FIXTURES / "logs.json").read_bytes()
    status, _, answer = client.post("/v1/logs", body, "text/plain")
    assert status == 415 and b"application/x-protobuf" in answer
    status, _, answer = client.post("/v1/logs", body, headers={"Content-Encoding": "br"})
    assert status == 415 and b"br" in answer
    assert_unharmed(client, before)


def test_broken_protobuf_and_json_of_the_wrong_shape(client: Client) -> None:
    before = len(journaled(client.daemon))
    status, headers, answer = client.post("/v1/logs", b"\x0a\xff\xff\xff\x0f garbage", PROTOBUF)
    assert (status, headers["Content-Type"]) == (400, PROTOBUF)
    assert answer.startswith(b"\x08\x03")  # google.rpc.Status, code 3 INVALID_ARGUMENT
    status, _, answer = client.post("/v1/logs", b'{"resourceLogs": {"oops": 1}}')
    assert status == 400 and b"$.resourceLogs" in answer
    status, _, answer = client.post("/v1/logs", b'{"resourceLogs": [')
    assert status == 400 and b"not JSON" in answer
    bad_id = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz", "name": "s"}]}]}]}
    status, _, answer = client.post("/v1/traces", json.dumps(bad_id).encode())
    assert status == 400 and b"traceId" in answer
    assert_unharmed(client, before)


def test_gzip_bomb_and_oversize_body(daemon_factory: Any) -> None:
    daemon = daemon_factory(["--set", "http.max-body-bytes=1048576"]).start()
    client = Client(daemon)
    before = len(journaled(daemon))
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 1024 * 1024
    status, _, answer = client.post("/v1/logs", bomb, headers={"Content-Encoding": "gzip"})
    assert status == 413 and b"1048576" in answer
    status, _, answer = client.post("/v1/logs", b" " * (2 * 1024 * 1024))
    assert status == 413
    status, _, answer = client.post("/v1/logs", b"\x1f\x8b garbage", headers={
        "Content-Encoding": "gzip"})  # fmt: skip
    assert status == 400 and b"gzip" in answer
    # Chunked (no Content-Length): the limit applies as it arrives.
    chunk = b"x" * 65536
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20)) + b"0\r\n\r\n"
    head = client.head("/v1/logs", 0).replace(
        b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n"
    )
    assert client.raw(head + chunked).startswith(b"HTTP/1.1 413 ")
    assert_unharmed(client, before)


def test_token_host_and_origin_checks(client: Client) -> None:
    before = len(journaled(client.daemon))
    body = (FIXTURES / "logs.json").read_bytes()
    status, headers, _ = client.post("/v1/logs", body, token=False)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, _, answer = client.post(
        "/v1/logs", body, token=False, headers={"Authorization": "Bearer wrong"}
    )
    assert status == 401 and b"wrong bearer token" in answer
    status, _, answer = client.post("/v1/logs", body, headers={"Host": "evil.example:4318"})
    assert status == 403 and b"evil.example" in answer
    status, headers, answer = client.post(
        "/v1/logs", body, headers={"Origin": "http://evil.example"}
    )
    assert status == 403 and b"Origin" in answer
    assert not any(name.lower().startswith("access-control") for name in headers)
    for host in ("localhost:4318", "[::1]:4318", "127.0.0.1"):
        status, _, _ = client.post("/v1/logs", unique_logs(), headers={"Host": host})
        assert status == 200, host
    assert len(journaled(client.daemon)) == before + 3
    status, _, _ = client.post("/v1/nowhere", body)
    assert status == 404


def test_a_gzip_body_of_several_members_is_read_whole(client: Client) -> None:
    """A gzip body may hold several members one after the other (gzip's readers take
    them all); every one is inflated, or the body is refused: a 200 never covers
    records that were left unread."""
    before = len(journaled(client.daemon))
    # (two protobuf requests: concatenated, they are one request holding both records)
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    def protobuf(text: str) -> bytes:
        request = ExportLogsServiceRequest()
        record = request.resource_logs.add().scope_logs.add().log_records.add()
        record.time_unix_nano = time.time_ns()
        record.body.string_value = text
        return request.SerializeToString()

    marks = [f"member-{next(_made)}" for _ in range(3)]
    body = gzip.compress(protobuf(marks[0])) + gzip.compress(protobuf(marks[1])) + b"\0\0"
    status, _, answer = client.post(
        "/v1/logs", body, PROTOBUF, headers={"Content-Encoding": "gzip"}
    )
    assert (status, answer) == (200, b"")
    events = [json.dumps(event) for event in journaled(client.daemon)]
    assert len(events) == before + 2
    assert all(any(mark in event for event in events) for mark in marks[:2])
    for trailer in (b"garbage after the member", gzip.compress(b"x")[:-4]):
        body = gzip.compress(protobuf(marks[2])) + trailer
        status, _, answer = client.post(
            "/v1/logs", body, PROTOBUF, headers={"Content-Encoding": "gzip"}
        )
        assert status == 400 and b"gzip" in answer
    assert len(journaled(client.daemon)) == before + 2


def test_json_nested_too_deeply_is_a_bad_request_in_the_daemon_and_its_workers(
    daemon_factory: Any,
) -> None:
    """A body deeper than the JSON decoder goes is a 400 with the good record beside it
    not journaled (the request is refused whole), whether the daemon or an ingest worker
    maps it (bodies of 16 KiB or more, once a worker runs); no worker ends; the same
    payload as a hook is a 400 too."""
    from telemetryd.client import control

    daemon = daemon_factory().start()
    client = Client(daemon)

    def deep(levels: int, padding: int) -> bytes:
        value = '{"arrayValue":{"values":[' * levels + '{"stringValue":"x"}' + "]}}" * levels
        good = '{"timeUnixNano":"1","body":{"stringValue":"' + "p" * padding + '"}}'
        bad = '{"timeUnixNano":"1","attributes":[{"key":"d","value":' + value + "}]}"
        records = good + "," + bad
        return ('{"resourceLogs":[{"scopeLogs":[{"logRecords":[' + records + "]}]}]}").encode()

    before = len(journaled(daemon))
    status, headers, answer = client.post("/v1/logs", deep(5000, 10))
    assert (status, headers["Content-Type"]) == (400, JSON) and b"deeply" in answer
    # Start the ingest workers with a big good request, then send a big deep one.
    big = json.loads(unique_logs())
    big["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["body"]["stringValue"] += "b" * 40000
    assert client.post("/v1/logs", json.dumps(big).encode())[0] == 200
    deadline = time.monotonic() + 20
    while True:  # (every worker up: one that ended later would be seen)
        workers = control.status(daemon.control_socket)["ingest_workers"]
        if workers["running"] == workers["max"]:
            break
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    status, _, answer = client.post("/v1/logs", deep(5000, 40000))
    assert status == 400 and b"deeply" in answer
    after = control.status(daemon.control_socket)["ingest_workers"]
    assert (after["running"], after["starts"], after["last_exit"]) == (
        workers["max"],
        workers["starts"],
        None,
    )
    hook = b'{"hook_event_name":"PreToolUse","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, _, answer = client.post("/v1/hooks/claude-code", hook)
    assert (status, answer) == (200, b"")  # (a hook payload's depth is cut: its event kept)
    assert len(journaled(daemon)) == before + 2  # (the big good request, and the hook's)
    assert "Traceback" not in daemon.log()


def test_the_bearer_scheme_is_case_insensitive(client: Client) -> None:
    before = len(journaled(client.daemon))
    for given in (f"bearer {client.token}", f"BEARER  {client.token}"):
        status, _, _ = client.post(
            "/v1/logs", unique_logs(), token=False, headers={"Authorization": given}
        )
        assert status == 200, given
    for given in (f"Basic {client.token}", client.token, f"Bearer{client.token}"):
        status, _, _ = client.post(
            "/v1/logs", unique_logs(), token=False, headers={"Authorization": given}
        )
        assert status == 401, given
    assert len(journaled(client.daemon)) == before + 2


def test_a_head_request_gets_the_head_of_its_answer(client: Client) -> None:
    for path, status in (("/v1/logs", 405), ("/nowhere", 404)):
        conn = http.client.HTTPConnection(client.host, client.port, timeout=10)
        try:
            conn.request("HEAD", path, headers=client.auth())
            response = conn.getresponse()
            assert response.status == status
            assert int(response.getheader("Content-Length", "0")) > 0
            assert response.read() == b""
        finally:
            conn.close()


def test_a_request_head_over_the_limit_is_refused_however_it_arrives(client: Client) -> None:
    before = len(journaled(client.daemon))
    body = unique_logs()
    long_header = "X-Long: " + "a" * 100_000 + "\r\n"
    many_headers = "".join(f"X-{n}: v\r\n" for n in range(9000))
    for extra in (long_header, many_headers):
        answer = client.raw(client.head("/v1/logs", len(body), extra) + body)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    assert_unharmed(client, before)


def test_allowed_hosts_and_no_token(daemon_factory: Any) -> None:
    daemon = daemon_factory(
        ["--set", 'http.allowed-hosts=["collector.lan"]', "--set", "http.require-token=false"]
    ).start()
    client = Client(daemon)
    body = (FIXTURES / "logs.json").read_bytes()
    status, _, _ = client.post("/v1/logs", body, token=False, headers={"Host": "collector.lan"})
    assert status == 200
    status, _, _ = client.post("/v1/logs", body, token=False, headers={"Host": "other.lan"})
    assert status == 403


def test_http_1_0_pipelining_chunked_and_expect_continue(client: Client) -> None:
    before = len(journaled(client.daemon))
    # HTTP/1.0: answered, then closed.
    body = unique_logs()
    head = client.head("/v1/logs", len(body)).replace(b"HTTP/1.1", b"HTTP/1.0")
    answer = client.raw(head + body)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"{}")
    # Three requests pipelined on one connection, the last closing it.
    bodies = [unique_logs() for _ in range(3)]
    pipelined = b"".join(
        client.head("/v1/logs", len(b), "Connection: close\r\n" if i == 2 else "") + b
        for i, b in enumerate(bodies)
    )
    assert client.raw(pipelined).count(b"HTTP/1.1 200 ") == 3
    # Chunked.
    body = unique_logs()
    head = client.head("/v1/logs", 0, "Connection: close\r\n").replace(
        b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n"
    )
    half = len(body) // 2
    parts = (half, body[:half], len(body) - half, body[half:])
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % parts
    assert client.raw(head + chunks).startswith(b"HTTP/1.1 200 ")
    # Expect: 100-continue: the interim answer comes before the body is sent.
    body = unique_logs()
    with socket.create_connection((client.host, client.port), timeout=10) as sock:
        sock.sendall(client.head("/v1/logs", len(body), "Expect: 100-continue\r\n"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    # ... and a refusal comes instead of it, without reading the body.
    with socket.create_connection((client.host, client.port), timeout=10) as sock:
        head = client.head("/v1/logs", len(body), "Expect: 100-continue\r\n")
        sock.sendall(head.replace(client.token.encode(), b"wrong"))
        assert sock.recv(65536).startswith(b"HTTP/1.1 401 ")
    assert len(journaled(client.daemon)) == before + 6


def test_a_slow_client_is_cut_off_and_others_are_served(daemon_factory: Any) -> None:
    daemon = daemon_factory(["--set", "http.header-timeout=1.5"]).start()
    client = Client(daemon)
    before = len(journaled(daemon))
    request = client.head("/v1/logs", 2) + b"{}"
    with socket.create_connection((client.host, client.port), timeout=10) as slow:
        started = time.monotonic()
        answer = b""
        for byte in request:  # one byte a second
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            status, _, _ = client.post("/v1/logs", unique_logs())
            assert status == 200  # others are served meanwhile
            slow.settimeout(1.0)
            try:
                answer = slow.recv(65536)
            except TimeoutError:
                continue
            break
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 10
    assert len(journaled(daemon)) > before  # (the fast requests)
    assert all(e.get("event") != "" for e in journaled(daemon))


def test_a_thousand_idle_connections(daemon_factory: Any) -> None:
    """Idle connections past http.max-connections make room (the longest idle is closed):
    a real client is still served, and the daemon holds at most the limit."""
    daemon = daemon_factory(["--set", "http.max-connections=64"]).start()
    client = Client(daemon)
    before = len(journaled(daemon))
    idle: list[socket.socket] = []
    try:
        for _ in range(1000):
            idle.append(socket.create_connection((client.host, client.port), timeout=10))
        status, _, _ = client.post("/v1/logs", (FIXTURES / "logs.json").read_bytes())
        assert status == 200
        from telemetryd.client import control

        http_status = control.status(daemon.control_socket)["http"]
        assert http_status["connections"] <= 64
    finally:
        for sock in idle:
            sock.close()
    assert len(journaled(daemon)) == before + 1
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_status_names_a_port_it_could_not_take(daemon_factory: Any) -> None:
    """A busy port is not a failed start: the daemon serves without HTTP and says why."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        daemon = daemon_factory(["--set", f'http.address="127.0.0.1:{port}"']).start()
        from telemetryd.client import control

        reply = control.status(daemon.control_socket)["http"]
        assert reply["listening"] is False and "in use" in reply["error"]
        assert "cannot listen on" in daemon.log()


def test_the_token_file_is_private(daemon: Daemon) -> None:
    path = daemon.home / "http-token"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert "other users can read" not in daemon.log()


def test_a_token_made_anew_works_without_a_restart(daemon_factory: Any, state_home: Path) -> None:
    """The token file deleted and made again (`otel env` makes one when there is none):
    the running daemon takes the new token without a restart, and the old one is
    refused at once, whether or not anyone has sent the new one yet (a token rotated
    because it leaked must stop working). A file deleted and not made again refuses
    every token until there is one. A file other users can read is warned about at
    start."""
    from telemetryd import token

    path = state_home / "http-token"
    token.load_or_create(str(path))
    path.chmod(0o644)
    daemon = daemon_factory().start()
    assert "other users can read the token file" in daemon.log()
    client = Client(daemon)
    old = client.token
    assert client.post("/v1/logs", unique_logs())[0] == 200
    path.unlink()
    new = token.load_or_create(str(path))
    assert new != old
    assert client.post("/v1/logs", unique_logs())[0] == 401  # (the old one: revoked)
    client.token = new
    assert client.post("/v1/logs", unique_logs())[0] == 200
    client.token = old
    assert client.post("/v1/logs", unique_logs())[0] == 401

    path.unlink()  # (gone, none made: nobody is let in, the daemon runs on)
    for held in (old, new):
        client.token = held
        assert client.post("/v1/logs", unique_logs())[0] == 401
    assert "every request is refused until it holds a token again" in daemon.log()
    newest = token.load_or_create(str(path))
    client.token = newest
    assert client.post("/v1/logs", unique_logs())[0] == 200
    assert exchange_ok(daemon)


def test_stopping_closes_idle_connections_at_once(daemon: Daemon) -> None:
    """SIGTERM with keep-alive connections open: the daemon does not wait for them."""
    client = Client(daemon)
    body = (FIXTURES / "logs.json").read_bytes()
    kept = http.client.HTTPConnection(client.host, client.port, timeout=10)
    kept.request("POST", "/v1/logs", body=body, headers={"Content-Type": JSON, **client.auth()})
    assert kept.getresponse().read() == b"{}"
    idle = socket.create_connection((client.host, client.port), timeout=10)
    try:
        assert daemon.stop(timeout=20) == 0
        assert "cut off" not in daemon.log()
        assert kept.sock is not None and kept.sock.recv(1) == b""  # closed by the daemon
    finally:
        kept.close()
        idle.close()


# -- the agents' exports, through the daemon --------------------------------------------------

AGENTS = Path(__file__).parent / "fixtures" / "otlp"  # (their README says how they were made)
TRANSCRIPT = Path(
    "/work/shared/samples/claude-code/transcripts/spotter_short_session_v2.1.38.jsonl"
)


def test_text_cut_inside_an_emoji_loses_no_record(client: Client) -> None:
    """A JavaScript exporter's string cut inside an emoji (Gemini CLI cuts attributes at
    1,000 characters) holds a lone surrogate: JSON.stringify writes its escape,
    protobufjs three bytes that are not UTF-8. The request was a 400, so the exporter
    dropped every record in it; now the half emoji reads as U+FFFD and all are kept."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    cut = "😀" * 500 + "\ud83d"  # (then the high half of one more, alone)
    records = [
        {
            "timeUnixNano": str(1_700_000_000_000_000_000 + n),
            "body": {"stringValue": f"cut-{n}"},
            "attributes": [{"key": "text", "value": {"stringValue": cut if n == 7 else "ok"}}],
        }
        for n in range(60)
    ]
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()
    assert b"\\ud83d" in body and len(body) < 16 * 1024  # (mapped by the daemon itself)
    assert client.post("/v1/logs", body)[::2] == (200, b"{}")
    logs = {e["event"]: e for e in journaled(client.daemon) if e["event"].startswith("cut-")}
    assert sorted(logs) == sorted(f"cut-{n}" for n in range(60))
    assert logs["cut-7"]["attrs"]["text"].endswith("😀\ufffd")

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = bytes(range(1, 17)), bytes(range(1, 9))
    span.name, span.start_time_unix_nano = "cut ~~~", 1_700_000_000_000_000_000
    protobuf = request.SerializeToString().replace(
        b"~~~", "\ud83d".encode("utf-8", "surrogatepass")
    )
    status, _, answer = client.post("/v1/traces", protobuf, PROTOBUF)
    assert (status, answer) == (200, b"")
    (spans,) = [e for e in journaled(client.daemon) if e["type"] == "span"]
    assert spans["name"] == "cut \ufffd\ufffd\ufffd"


def test_points_and_logs_that_differ_in_their_resource_or_value_are_all_kept(
    client: Client,
) -> None:
    """Two hosts export the same metric (same attributes, same times) and the same log
    line: their resources alone tell them apart. Each point and each record is kept, as
    are two values at one time; an exporter's retry of the request adds nothing."""

    def resource(host: str) -> dict[str, Any]:
        attributes = [("service.name", "worker"), ("host.name", host)]
        return {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes]}

    def point(value: int) -> dict[str, Any]:
        return {
            "startTimeUnixNano": "1700000000000000000",
            "timeUnixNano": "1700000060000000000",
            "asInt": str(value),
            "attributes": [{"key": "queue", "value": {"stringValue": "main"}}],
        }

    def metrics(host: str, *values: int) -> dict[str, Any]:
        gauge = {"name": "queue.depth", "gauge": {"dataPoints": [point(v) for v in values]}}
        return {"resource": resource(host), "scopeMetrics": [{"metrics": [gauge]}]}

    request = {"resourceMetrics": [metrics("host-a", 5), metrics("host-b", 7, 9)]}
    record = {"timeUnixNano": "1700000000000000000", "body": {"stringValue": "disk full"}}
    logs = {
        "resourceLogs": [
            {"resource": resource(host), "scopeLogs": [{"logRecords": [record]}]}
            for host in ("host-a", "host-b")
        ]
    }
    for _ in range(2):  # (the second time: an exporter's retry)
        assert client.post("/v1/metrics", json.dumps(request).encode())[::2] == (200, b"{}")
        assert client.post("/v1/logs", json.dumps(logs).encode())[::2] == (200, b"{}")
    events = journaled(client.daemon)
    values = sorted(
        (e["attrs"]["resource"]["host.name"], e["value"]) for e in events if e["type"] == "metric"
    )
    assert values == [("host-a", 5.0), ("host-b", 7.0), ("host-b", 9.0)]
    hosts = sorted(e["attrs"]["resource"]["host.name"] for e in events if e["type"] == "log")
    assert hosts == ["host-a", "host-b"]


def as_protobuf(signal: str, body: bytes) -> bytes:
    """The same export request in protobuf, converted by protobuf's own JSON parser (the
    fixtures have no trace or span ids, the one place OTLP/JSON differs from proto3 JSON)."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    assert signal == "logs" and b"traceId" not in body
    return json_format.Parse(body, ExportLogsServiceRequest()).SerializeToString()


def rows(daemon: Daemon) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k != "received_at"} for e in journaled(daemon)]


def test_a_claude_code_export_in_json_and_protobuf_gives_the_same_rows(
    daemon_factory: Any, state_home: Path
) -> None:
    body = (AGENTS / "claude_code_logs.json").read_bytes()
    first = daemon_factory().start()
    status, _, answer = Client(first).post("/v1/logs", body)
    assert (status, answer) == (200, b"{}")
    (state_home / "second").mkdir()
    second = daemon_factory(home=state_home / "second").start()
    status, _, answer = Client(second).post("/v1/logs", as_protobuf("logs", body), PROTOBUF)
    assert (status, answer) == (200, b"")
    assert rows(first) == rows(second)
    requests = [e for e in rows(first) if e["type"] == "api_request" and e.get("tokens")]
    assert requests and all(e["source"] == "claude-code" for e in requests)
    # The same export again (an exporter's retry) adds nothing.
    Client(first).post("/v1/logs", body)
    assert len(journaled(first)) == len(rows(second))


def test_codex_gemini_and_copilot_exports(client: Client) -> None:
    for name, signal in (
        ("codex_logs.json", "logs"),
        ("gemini_logs.json", "logs"),
        ("copilot_traces.json", "traces"),
    ):
        status, _, answer = client.post(f"/v1/{signal}", (AGENTS / name).read_bytes())
        assert (status, answer) == (200, b"{}"), name
    requests = {e["source"]: e for e in journaled(client.daemon) if e["type"] == "api_request"
                and e.get("success", True)}  # fmt: skip
    assert set(requests) == {"codex", "gemini-cli", "copilot"}
    for event in requests.values():
        tokens = event["tokens"]
        assert tokens["source"] == "actual" and tokens["input"] >= 0 and tokens["output"] > 0
    # Codex sends its counts as strings, with cached input inside input: both undone.
    codex = json.loads((AGENTS / "codex_logs.json").read_bytes())
    completed = next(
        {a["key"]: a["value"] for a in r["attributes"]}
        for r in codex["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        if any(a["value"].get("stringValue") == "response.completed" for a in r["attributes"])
    )
    sent_input = int(completed["input_token_count"]["stringValue"])
    cached = int(completed["cached_token_count"].get("intValue")
                 or completed["cached_token_count"].get("stringValue"))  # fmt: skip
    assert requests["codex"]["tokens"]["input"] == sent_input - cached
    assert requests["codex"]["tokens"]["cache_read"] == cached


def test_one_request_through_otlp_and_a_transcript_import_is_one_row(
    running_daemon: Daemon,
) -> None:
    """claude_code_logs.json's api_request is the first response of a real transcript
    (same requestId): exported, then imported, it is one row in the store."""
    from conftest import ctl

    client = Client(running_daemon)
    status, _, _ = client.post("/v1/logs", (AGENTS / "claude_code_logs.json").read_bytes())
    assert status == 200
    result = ctl("import", "claude-code", str(TRANSCRIPT))
    assert result.returncode == 0, result.stderr.decode()
    query = (
        "select count(*) as n, count(distinct source) as sources from events "
        "where type = 'api_request' and id = 'req:anthropic:req_011CY15QS2LGwAeBxdfa6e1V'"
    )
    result = ctl("query", "--format", "json", query)
    assert result.returncode == 0, result.stderr.decode()
    assert json.loads(result.stdout) == [{"n": 1, "sources": 1}]


CODEX_ROLLOUT = Path(
    "/work/shared/samples/codex/"
    "rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff.jsonl"
)
CODEX_OTHER = Path(
    "/work/shared/samples/codex/"
    "rollout-2026-02-23T13-19-38-019c8a70-dda7-7f33-98ea-f30553347322.jsonl"
)
GEMINI_LEGACY = (
    Path(__file__).parent / "fixtures" / "gemini" / "vibecodingtracker_session_legacy-json.json"
)
GEMINI_CHAT = [
    Path(__file__).parent / "fixtures" / "gemini" / f"vibecodingtracker_session_jsonl.{part}.jsonl"
    for part in ("lines-1-7", "lines-9-28")
]


def exported(fixture: str, name: str, time: str, attrs: dict[str, Any]) -> bytes:
    """``fixture``'s one record named ``name`` (an OTLP/JSON export of the agent), at
    ``time`` (RFC 3339), its attributes ``attrs`` replaced (as strings, as both agents
    send most of them)."""
    body = json.loads((AGENTS / fixture).read_bytes())
    scope = body["resourceLogs"][0]["scopeLogs"][0]
    [record] = [
        r
        for r in scope["logRecords"]
        if any(a["value"].get("stringValue") == name for a in r["attributes"])
    ]
    when = datetime.fromisoformat(time)
    record["timeUnixNano"] = str(int(when.timestamp()) * 10**9 + when.microsecond * 1000)
    kept = [a for a in record["attributes"] if a["key"] not in attrs]
    record["attributes"] = kept + [
        {"key": k, "value": {"stringValue": str(v)}} for k, v in attrs.items()
    ]
    scope["logRecords"] = [record]
    return json.dumps(body).encode()


def session_requests(session: str) -> int:
    found = ctl("query", "--format", "json", "--param", f"s={session}",
                "select count(*) as n from api_requests where session_id = $s")  # fmt: skip
    assert found.returncode == 0, found.stderr.decode()
    n: int = json.loads(found.stdout)[0]["n"]
    return n


@pytest.mark.parametrize("agent", ["codex", "gemini"])
def test_a_codex_or_gemini_request_exported_then_imported_is_one_row(
    running_daemon: Daemon, agent: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Codex and Gemini CLI exports carry no id their files also hold: a request exported
    over OTLP and then imported from the rollout or chat recording was two rows. The
    import now leaves out a request the store holds from the export: same session, same
    input, cache read and output, times within minutes (R21). Another exported request
    of the session, matching nothing in the file, stays."""
    if agent == "codex":
        given = tmp_path / CODEX_ROLLOUT.name
        shutil.copy(CODEX_ROLLOUT, given)
        session = "019c8bfe-ec25-79e0-97d7-bda6a9c575ff"
        # the rollout's first request (its token_count at 19:34:39.388), a second later
        counts = {"input_token_count": 42772, "cached_token_count": 3456,
                  "output_token_count": 204, "reasoning_token_count": 124}  # fmt: skip
        name, fixture, key = "response.completed", "codex_logs.json", "conversation.id"
        time = "2026-02-23T19:34:40.100+00:00"
        other = {**counts, "input_token_count": 99999}
        other_file = CODEX_OTHER
    else:
        given = tmp_path / "chats" / "session-2026-04-23T12-52-0ab84937.jsonl"
        given.parent.mkdir()
        given.write_bytes(b"".join(p.read_bytes() for p in GEMINI_CHAT))
        session = "0ab84937-9fe7-4284-986a-33c832af0b6a"
        # the recording's first response (message a4173396, 12:53:18.422), 40 s later
        counts = {"input_token_count": 29082, "cached_content_token_count": 8156,
                  "output_token_count": 89, "thoughts_token_count": 642,
                  "tool_token_count": 0}  # fmt: skip
        name, fixture, key = "gemini_cli.api_response", "gemini_logs.json", "session.id"
        time = "2026-04-23T12:53:58.000+00:00"
        other = {**counts, "output_token_count": 1}
        other_file = GEMINI_LEGACY
    command = "codex" if agent == "codex" else "gemini"
    dry = json.loads(ctl("import", command, str(given), "--dry-run", "--json").stdout)
    in_file = dry["requests"]
    assert in_file > 1
    client = Client(running_daemon)
    for values in (counts, other):
        status, _, answer = client.post(
            "/v1/logs", exported(fixture, name, time, {key: session, **values})
        )
        assert status == 200 and b"rejected" not in answer.lower(), answer
    assert session_requests(session) == 2
    imported = json.loads(ctl("import", command, str(given), "--json").stdout)
    assert (imported["requests"], imported["sent"]) == (in_file - 1, in_file - 1)
    assert imported["repeats"] == dry["repeats"] + 1
    assert session_requests(session) == in_file + 1  # the file's, and the other exported one
    # Reader processes (two files: one would be read in this process) are told the same.
    from telemetryd.client import import_pool, importer

    monkeypatch.setattr(import_pool, "BATCH_FILES", 1)  # a batch per file: both readers read
    files = [given, other_file]
    alone = importer.run(command, [other_file], dry_run=True)
    socket = running_daemon.events_socket
    both = [importer.run(command, files, dry_run=True, rescan=True, socket_path=socket)]
    with import_pool.Pool(2, min_bytes=0) as pool:
        pooled = importer.run(
            command, files, dry_run=True, rescan=True, socket_path=socket, pool=pool
        )
        both.append(pooled)
        assert pool.readers
    for summary in both:
        assert summary.requests == in_file - 1 + alone.requests


def test_importing_every_agent_asks_for_the_exported_requests_first(
    running_daemon: Daemon, agent_home: Path
) -> None:
    """`telemetryctl import` (every agent found) asks which Codex requests the store
    holds from the export before it imports any agent: asked after Claude Code's
    events were sent, the answer waited for the store to load them all (the 1 GB
    import's Codex part went from 120 to 26 MB/s). The answer is the same."""
    rollouts = agent_home / ".codex" / "sessions" / "2026" / "02" / "23"
    rollouts.mkdir(parents=True)
    shutil.copy(CODEX_ROLLOUT, rollouts / CODEX_ROLLOUT.name)
    projects = agent_home / ".claude" / "projects" / "-w-app"
    projects.mkdir(parents=True)
    shutil.copy(TRANSCRIPT, projects / TRANSCRIPT.name)
    session = "019c8bfe-ec25-79e0-97d7-bda6a9c575ff"
    counts = {"input_token_count": 42772, "cached_token_count": 3456,
              "output_token_count": 204, "reasoning_token_count": 124}  # fmt: skip
    time = "2026-02-23T19:34:40.100+00:00"
    body = exported(
        "codex_logs.json", "response.completed", time, {"conversation.id": session, **counts}
    )
    status, _, _ = Client(running_daemon).post("/v1/logs", body)
    assert status == 200
    dry = json.loads(ctl("import", "codex", "--dry-run", "--json").stdout)
    every = ctl("import", "--json")
    assert every.returncode == 0, every.stderr.decode()
    summaries = json.loads(every.stdout)
    assert list(summaries) == ["claude-code", "codex"]
    assert summaries["codex"]["requests"] == dry["requests"] == session_requests(session) - 1


def test_bodies_held_at_once_are_bounded(daemon_factory: Any) -> None:
    """Many clients each sending most of a big body and stalling: past the listener's
    budget for bodies held at once (64 MiB) the next one is answered 503, so the daemon's
    memory stays bounded; once they go, requests are served again."""
    from telemetryd.daemon.listeners.http import MAX_BUFFERED

    size = 4 * 1024 * 1024
    daemon = daemon_factory(["--set", f"http.max-body-bytes={size}"]).start()
    client = Client(daemon)
    part = b" " * (size - 1024)
    stalled: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(MAX_BUFFERED // len(part) + 2):
            sock = socket.create_connection((client.host, client.port), timeout=10)
            stalled.append(sock)
            sock.sendall(client.head("/v1/logs", size) + part)
            sock.settimeout(0.5)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue  # held, waiting for the rest of its body
            assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer
            refused += 1
        assert refused >= 1
    finally:
        for sock in stalled:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # (the daemon notices the closed connections as it reads)
        status, _, _ = client.post("/v1/logs", unique_logs())
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200


def wait_for_ingest_workers(daemon: Daemon) -> None:
    """Until an ingest worker runs (the first big request starts them): bodies of 16 KiB
    or more then go to one."""
    from telemetryd.client import control

    deadline = time.monotonic() + 20
    while control.status(daemon.control_socket)["ingest_workers"]["running"] == 0:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)


def deep(levels: int) -> dict[str, Any]:
    """An OTLP attribute value that nests ``levels`` maps deep."""
    value: dict[str, Any] = {"stringValue": "x"}
    for level in range(levels):
        value = {"kvlistValue": {"values": [{"key": f"l{level}", "value": value}]}}
    return value


def test_records_that_fail_the_checks_are_a_partial_success(daemon_factory: Any) -> None:
    """A record whose event the daemon refuses (here: attrs nested deeper than a small
    ingest.max-attrs-depth) is counted in partialSuccess of a 200, with the reason; the
    records around it are kept, and the client has nothing to retry."""
    daemon = daemon_factory(["--set", "ingest.max-attrs-depth=2"]).start()
    client = Client(daemon)

    def record(n: int, levels: int) -> dict[str, Any]:
        return {
            "timeUnixNano": str(1_700_000_000_000_000_000 + n),
            "body": {"stringValue": f"record-{n}"},
            "attributes": [{"key": "k", "value": deep(levels)}],
        }

    records = [record(0, 0), record(1, 2), record(2, 1)]
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()
    status, _, answer = client.post("/v1/logs", body)
    assert status == 200
    partial = json.loads(answer)["partialSuccess"]
    assert partial["rejectedLogRecords"] == "1"
    assert "attrs" in partial["errorMessage"] and "2" in partial["errorMessage"]
    kept = sorted(e["event"] for e in journaled(daemon) if e["type"] == "log")
    assert kept == ["record-0", "record-2"]
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    records = [record(3, 2)]
    request = {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}
    protobuf = json_format.ParseDict(request, ExportLogsServiceRequest()).SerializeToString()
    status, _, answer = client.post("/v1/logs", protobuf, PROTOBUF)
    response = ExportLogsServiceResponse.FromString(answer)
    assert (status, response.partial_success.rejected_log_records) == (200, 1)


def test_attrs_are_cut_to_a_lowered_limit_not_the_record_lost(daemon_factory: Any) -> None:
    """The mappers cut attrs to 12 KiB whatever ingest.max-attrs-bytes said: below that
    a big record (an api_request with its tokens and cost) was refused whole. Now they
    cut to three quarters of the limit: its largest attributes go (named in
    otel.dropped), it stays, inline and in the ingest workers alike."""
    daemon = daemon_factory(["--set", "ingest.max-attrs-bytes=2048"]).start()
    client = Client(daemon)

    def request(first: int, count: int) -> bytes:
        records = [
            {
                "timeUnixNano": str(1_700_000_000_000_000_000 + n),
                "body": {"stringValue": f"cut-{n}"},
                "attributes": [
                    {"key": f"k{i}", "value": {"stringValue": "v" * 900}} for i in range(6)
                ],
            }
            for n in range(first, first + count)
        ]
        return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}).encode()

    # one record (the daemon maps it), then 39 (they start the ingest workers), then 40
    # more once a worker runs (it maps them)
    for first, count in ((0, 1), (1, 39)):
        assert client.post("/v1/logs", request(first, count))[::2] == (200, b"{}")
    wait_for_ingest_workers(daemon)
    assert client.post("/v1/logs", request(40, 40))[::2] == (200, b"{}")
    logs = [e for e in journaled(daemon) if e["type"] == "log"]
    assert sorted(e["event"] for e in logs) == sorted(f"cut-{n}" for n in range(80))
    for event in logs:
        assert len(json.dumps(event["attrs"], separators=(",", ":"))) <= 2048
        assert event["attrs"]["otel.dropped"]  # (what had to go is named)


def test_big_requests_are_mapped_in_the_ingest_workers_alike(daemon_factory: Any) -> None:
    """Bodies of 16 KiB or more go to an ingest worker once one runs: the same events, the
    same partial success, as when the daemon maps them itself."""
    daemon = daemon_factory(["--set", "ingest.max-attrs-depth=2"]).start()
    client = Client(daemon)

    def request(first: int, bad: int) -> bytes:
        records = [
            {
                "timeUnixNano": str(1_700_000_000_000_000_000 + n),
                "body": {"stringValue": f"big-{n}"},
                "attributes": [
                    {"key": "k", "value": deep(2) if n == bad else {"stringValue": "v" * 900}}
                ],
            }
            for n in range(first, first + 40)
        ]
        body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]})
        assert len(body) > 32 * 1024
        return body.encode()

    status, _, answer = client.post("/v1/logs", request(0, 5))  # (starts the workers)
    assert status == 200 and json.loads(answer)["partialSuccess"]["rejectedLogRecords"] == "1"
    wait_for_ingest_workers(daemon)
    for first in (100, 200, 300):
        status, _, answer = client.post("/v1/logs", request(first, first + 7))
        partial = json.loads(answer)["partialSuccess"]
        assert (status, partial["rejectedLogRecords"]) == (200, "1")
        assert "deeper than the limit of 2" in partial["errorMessage"]
    bodies = sorted(e["event"] for e in journaled(daemon) if e["type"] == "log")
    expected = [f"big-{n}" for f in (0, 100, 200, 300) for n in range(f, f + 40)]
    expected = sorted(set(expected) - {"big-5", "big-107", "big-207", "big-307"})
    assert bodies == expected


def test_exported_spans_rebuild_as_a_tree(client: Client) -> None:
    """Spans from the SDK land in the `spans` view with their durations, and the `trace()`
    macro gives the tree back (depth from the parent ids)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from conftest import ctl

    spans = TracerProvider(resource=Resource({"service.name": "tree-test"}))
    exporter = OTLPSpanExporter(
        endpoint=f"http://{client.address}/v1/traces", headers=client.auth()
    )
    spans.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = spans.get_tracer("tests")
    with tracer.start_as_current_span("root") as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        with tracer.start_as_current_span("child"):
            time.sleep(0.02)
            with tracer.start_as_current_span("grandchild"):
                pass
        with tracer.start_as_current_span("sibling"):
            pass
    spans.shutdown()

    sql = "select name, duration_ms from spans where trace_id = $t"
    result = ctl("query", "--format", "json", "--param", f"t={trace_id}", sql)
    assert result.returncode == 0, result.stderr.decode()
    rows = {r["name"]: r["duration_ms"] for r in json.loads(result.stdout)}
    assert set(rows) == {"root", "child", "grandchild", "sibling"}
    assert rows["root"] >= rows["child"] >= 20 and rows["child"] >= rows["grandchild"]
    sql = "select depth, what from trace($t)"
    result = ctl("query", "--format", "json", "--param", f"t={trace_id}", sql)
    assert result.returncode == 0, result.stderr.decode()
    tree = [(r["depth"], r["what"]) for r in json.loads(result.stdout)]
    assert tree == [(0, "root"), (1, "child"), (2, "grandchild"), (1, "sibling")]


def test_json_posted_to_the_bare_endpoint_goes_by_its_signal(client: Client) -> None:
    """Older Gemini CLI versions post every signal to the endpoint URL itself: OTLP/JSON
    there is taken by its top-level key; anything else is told where to post."""
    before = len(journaled(client.daemon))
    for name in ("logs.json", "trace.json", "metrics.json"):
        status, _, answer = client.post("/", (FIXTURES / name).read_bytes())
        assert (status, answer) == (200, b"{}"), name
    assert len(journaled(client.daemon)) > before
    spans = [e for e in journaled(client.daemon) if e["type"] == "span"]
    assert [e["span_id"] for e in spans] == ["eee19b7ec3c1b174"]
    status, _, answer = client.post("/", b"\x0a\x00", PROTOBUF)
    assert status == 404 and b"/v1/logs" in answer
    status, _, answer = client.post("/", b'{"resourceLogs": [], "resourceSpans": []}')
    assert status == 404


def test_an_empty_token_file_turns_the_listener_off_not_the_daemon(
    daemon_factory: Any, state_home: Path
) -> None:
    (state_home / "http-token").write_text("")
    daemon = daemon_factory().start()
    from telemetryd.client import control

    reply = control.status(daemon.control_socket)["http"]
    assert reply["listening"] is False and "http-token is empty" in reply["error"]
    assert exchange_ok(daemon)  # the events socket serves as ever


def exchange_ok(daemon: Daemon) -> bool:
    from conftest import exchange, summary

    return exchange(daemon.events_socket, b'{"type":"custom","name":"x"}\n') == [summary(1, 1)]


def test_sighup_applies_http_settings_that_can_change_live(
    daemon_factory: Any, state_home: Path
) -> None:
    config_file = state_home / "config.toml"
    config_file.write_text("[http]\nallowed-hosts = []\n")
    daemon = daemon_factory().start()
    client = Client(daemon)
    status, _, _ = client.post("/v1/logs", unique_logs(), headers={"Host": "box.lan"})
    assert status == 403
    config_file.write_text('[http]\nallowed-hosts = ["box.lan"]\n')
    assert daemon.proc is not None
    daemon.notifications.clear()
    daemon.proc.send_signal(SIGHUP)
    daemon.wait_for("STATUS=configuration reloaded")
    status, _, _ = client.post("/v1/logs", unique_logs(), headers={"Host": "box.lan"})
    assert status == 200
