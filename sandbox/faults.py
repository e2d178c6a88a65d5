"""A fault-injecting HTTP front for tests: forwards to a real upstream (moto server, in-memory
OpenSearch) and answers chosen requests with an error instead, a given number of times.

Rules match on method, path, body and request headers (regular expressions); each can answer
with a status and body, or close the connection without an answer, optionally after a delay (a
request that hangs: `delay_seconds`, cut short by `release()`). A rule with `forward=True` or a
`rewrite_request`/`rewrite_response` hook still goes to the upstream: after its delay, with the
request and/or the upstream's answer rewritten (e.g. send SQS only some entries of a batch and
report the others `Failed`, so what the client is told matches what really happened). Everything
else passes through untouched, so tests prove behaviour against real servers with real failures
in between (no mocks). Request bodies are read whole — by Content-Length, or de-chunked (pyarrow's
S3 uploads, so pyiceberg's writes, are chunked: read as empty, they were once stored empty) — and
forwarded with a Content-Length.
"""

from __future__ import annotations

import gzip
import http.client
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import orjson

_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"})


@dataclass
class Exchange:
    """One request through a rewriting rule: hooks may change the request before it is forwarded
    and the upstream's answer before the client gets it (bodies are plain: a gzip request body is
    inflated first and sent on uncompressed)."""

    method: str
    path: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int = 0
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytes = b""
    state: dict[str, Any] = field(default_factory=dict)  # what the request hook tells the response hook


Rewrite = Callable[[Exchange], None]


@dataclass
class FaultRule:
    """Answer matching requests with `status`/`body` (or drop them) `times` times (None: always).

    `delay_seconds` holds the request first (until `release()`); `forward` then sends it on to the
    upstream instead of answering; `rewrite_request`/`rewrite_response` (which imply forwarding)
    change what is sent and what is answered.
    """

    path: str = ".*"
    method: str = ".*"
    body: str = ""
    status: int = 500
    response: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop_connection: bool = False
    times: int | None = None
    hits: int = 0
    request_headers: dict[str, str] = field(default_factory=dict)  # header name → regex on its value
    delay_seconds: float = 0.0
    forward: bool = False
    rewrite_request: Rewrite | None = None
    rewrite_response: Rewrite | None = None
    _released: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def matches(self, method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if not re.fullmatch(self.method, method) or not re.search(self.path, path):
            return False
        if self.request_headers:
            lowered = {k.lower(): v for k, v in (headers or {}).items()}
            for name, pattern in self.request_headers.items():
                if not re.search(pattern, lowered.get(name.lower(), "")):
                    return False
        return not self.body or re.search(self.body.encode(), body) is not None

    @property
    def forwards(self) -> bool:
        return self.forward or self.rewrite_request is not None or self.rewrite_response is not None

    def hold(self) -> None:
        """Wait `delay_seconds` unless released (or the proxy stops) first."""
        if self.delay_seconds > 0:
            self._released.wait(self.delay_seconds)

    def release(self) -> None:
        """End every current and future delay of this rule at once."""
        self._released.set()


def _read_chunked(stream: Any) -> bytes:
    """A `Transfer-Encoding: chunked` request body, de-chunked (it is forwarded with a Content-Length)."""
    parts: list[bytes] = []
    while True:
        size = int(stream.readline().split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while stream.readline().strip():  # trailers, up to the empty line
                pass
            return b"".join(parts)
        parts.append(stream.read(size))
        stream.readline()  # the CRLF after each chunk


class FaultProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http URL, got {upstream!r}")
        self._upstream = (parts.hostname, parts.port or 80)
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = []
        self.forwarded = 0
        self.injected = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _handle(self) -> None:
                headers = dict(self.headers)
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    body = _read_chunked(self.rfile)  # pyarrow's S3 uploads (pyiceberg's writes)
                else:
                    length = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(length) if length else b""
                rule = proxy._match(self.command, self.path, body, headers)
                if rule is not None:
                    rule.hold()
                    if rule.forwards:
                        self._answer(*proxy._exchange(rule, self.command, self.path, headers, body))
                        return
                    if rule.drop_connection:
                        self.close_connection = True
                        self.connection.close()
                        return
                    self.send_response(rule.status)
                    self.send_header("Content-Type", rule.content_type)
                    for name, value in rule.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(rule.response)))
                    self.end_headers()
                    self.wfile.write(rule.response)
                    return
                self._answer(*proxy._forward(self.command, self.path, headers, body))

            def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                # a HEAD answer keeps the upstream's Content-Length (the object's size: S3 readers
                # such as pyarrow's size a file by it) and has no body
                head = self.command == "HEAD"
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_HEADERS and (head or name.lower() != "content-length"):
                        self.send_header(name, value)
                if not head:
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if not head:
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            for rule in self.rules:
                rule.release()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def _match(self, method: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, body, headers):
                    rule.hits += 1
                    self.injected += 1
                    return rule
            self.forwarded += 1
        return None

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            clean = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
            clean["Host"] = f"{self._upstream[0]}:{self._upstream[1]}"
            for name in [k for k in clean if k.lower() == "content-length"]:
                del clean[name]
            if body or method in ("PUT", "POST"):
                clean["Content-Length"] = str(len(body))
            connection.request(method, path, body=body or None, headers=clean)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _exchange(
        self, rule: FaultRule, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Forward through the rule's hooks (a gzip request body is inflated for them)."""
        clean = dict(headers)
        encoding = next((k for k in clean if k.lower() == "content-encoding"), None)
        if encoding and clean[encoding].lower() == "gzip" and (rule.rewrite_request or rule.rewrite_response):
            body = gzip.decompress(body)
            del clean[encoding]
        exchange = Exchange(method, path, clean, body)
        if rule.rewrite_request:
            rule.rewrite_request(exchange)
        status, response_headers, payload = self._forward(
            exchange.method, exchange.path, exchange.request_headers, exchange.request_body
        )
        exchange.status, exchange.response_headers, exchange.response_body = status, response_headers, payload
        if rule.rewrite_response:
            rule.rewrite_response(exchange)
        return exchange.status, exchange.response_headers, exchange.response_body


def sts_access_denied(account_id: str) -> FaultRule:
    """STS AssumeRole into `account_id` answers AccessDenied (a broken trust policy)."""
    message = (
        "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User is not authorized "
        f"to perform: sts:AssumeRole on resource: arn:aws:iam::{account_id}:role/xraylake-reader</Message>"
        "</Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
    ).encode()
    return FaultRule(
        method="POST",
        body=f"Action=AssumeRole.*iam%3A%3A{account_id}%3A|iam%3A%3A{account_id}%3A.*Action=AssumeRole",
        status=403,
        response=message,
        content_type="text/xml",
    )


# ---------------------------------------------------------------- rule builders


def hang(path: str, method: str = ".*", seconds: float = 120.0, times: int | None = 1, **match: Any) -> FaultRule:
    """Hold matching requests `seconds` (until `release()`), then drop the connection: a peer
    that never answers. `rule.hits` tells a test the request is in flight."""
    return FaultRule(path=path, method=method, delay_seconds=seconds, drop_connection=True, times=times, **match)


def slow(path: str, method: str = ".*", seconds: float = 1.0, times: int | None = None, **match: Any) -> FaultRule:
    """Delay matching requests, then forward them untouched."""
    return FaultRule(path=path, method=method, delay_seconds=seconds, forward=True, times=times, **match)


def opensearch_bulk_rejected(times: int | None = 1) -> FaultRule:
    """`_bulk` answers 429 as a whole (the cluster's write queue is full) `times` times."""
    body = orjson.dumps(
        {
            "error": {
                "type": "es_rejected_execution_exception",
                "reason": "rejected execution of coordinating operation (fault proxy)",
            },
            "status": 429,
        }
    )
    return FaultRule(path=r"/_bulk", method="POST", status=429, response=body, times=times)


def opensearch_bulk_items_rejected(every: int = 2, times: int | None = 1) -> FaultRule:
    """429 *inside* a 200 `_bulk` answer: every `every`-th item is not sent to the cluster and is
    answered `es_rejected_execution_exception`; the others really are indexed (honest partial)."""

    def strip(exchange: Exchange) -> None:
        lines = [line for line in exchange.request_body.split(b"\n") if line.strip()]
        kept: list[bytes] = []
        order: list[dict[str, Any] | None] = []  # per original item: None = forwarded, else its rejection
        index = 0
        position = 0
        while position < len(lines):
            action = orjson.loads(lines[position])
            op = next(iter(action))
            has_source = op != "delete"
            item_lines = lines[position : position + (2 if has_source else 1)]
            position += len(item_lines)
            meta = action[op]
            if index % every == every - 1:
                order.append(
                    {
                        op: {
                            "_index": meta.get("_index"),
                            "_id": meta.get("_id"),
                            "status": 429,
                            "error": {
                                "type": "es_rejected_execution_exception",
                                "reason": "rejected execution (fault proxy)",
                            },
                        }
                    }
                )
            else:
                order.append(None)
                kept += item_lines
            index += 1
        exchange.state["order"] = order
        exchange.request_body = b"\n".join(kept) + b"\n" if kept else b""

    def merge(exchange: Exchange) -> None:
        order: list[dict[str, Any] | None] = exchange.state["order"]
        answered = orjson.loads(exchange.response_body) if exchange.response_body else {"items": []}
        forwarded = iter(answered.get("items", []))
        items = [rejection if rejection is not None else next(forwarded) for rejection in order]
        exchange.status = 200
        exchange.response_body = orjson.dumps({"took": answered.get("took", 0), "errors": True, "items": items})
        exchange.response_headers = [(k, v) for k, v in exchange.response_headers if k.lower() != "content-encoding"]

    def strip_or_skip(exchange: Exchange) -> None:
        strip(exchange)
        if not exchange.request_body:  # nothing left to send: answer without the upstream
            exchange.path = "/"
            exchange.method = "GET"

    return FaultRule(path=r"/_bulk", method="POST", times=times, rewrite_request=strip_or_skip, rewrite_response=merge)


def s3_error(key_pattern: str, method: str = "PUT", status: int = 500, times: int | None = 1) -> FaultRule:
    """S3 answers `InternalError` (or another status) for object keys matching `key_pattern`."""
    code = {500: "InternalError", 503: "SlowDown", 403: "AccessDenied"}.get(status, "InternalError")
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>injected by the fault "
        "proxy</Message><RequestId>fault-proxy</RequestId></Error>"
    ).encode()
    return FaultRule(
        path=key_pattern, method=method, status=status, response=body, content_type="application/xml", times=times
    )


def sqs_send_batch_partially_failed(fail_last: int = 1, times: int | None = 1) -> FaultRule:
    """SendMessageBatch (JSON protocol) reaches SQS without its last `fail_last` entries, and the
    answer lists those as `Failed` (SenderFault false, as SQS does for a transient internal error)."""

    def strip(exchange: Exchange) -> None:
        request = orjson.loads(exchange.request_body)
        entries = request.get("Entries", [])
        cut = max(0, len(entries) - fail_last)
        exchange.state["failed"] = [e["Id"] for e in entries[cut:]]
        request["Entries"] = entries[:cut]
        exchange.state["empty"] = not request["Entries"]
        exchange.request_body = orjson.dumps(request)
        if exchange.state["empty"]:  # SQS rejects an empty batch: ask something harmless instead
            exchange.request_headers = {
                k: v for k, v in exchange.request_headers.items() if k.lower() != "x-amz-target"
            } | {"X-Amz-Target": "AmazonSQS.GetQueueUrl"}
            queue_name = str(request.get("QueueUrl", "")).rsplit("/", 1)[-1]
            exchange.request_body = orjson.dumps({"QueueName": queue_name})

    def merge(exchange: Exchange) -> None:
        answer = {} if exchange.state["empty"] else orjson.loads(exchange.response_body or b"{}")
        failed = [
            {"Id": entry_id, "SenderFault": False, "Code": "InternalError", "Message": "injected by the fault proxy"}
            for entry_id in exchange.state["failed"]
        ]
        exchange.status = 200
        exchange.response_body = orjson.dumps(
            {"Successful": answer.get("Successful", []), "Failed": answer.get("Failed", []) + failed}
        )

    return FaultRule(
        method="POST",
        request_headers={"x-amz-target": r"AmazonSQS\.SendMessageBatch$"},
        times=times,
        rewrite_request=strip,
        rewrite_response=merge,
    )
