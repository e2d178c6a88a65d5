"""A fault-injecting HTTP front for tests: forwards to a real upstream (moto server, in-memory
OpenSearch) and answers chosen requests with an error instead, a given number of times.

Rules match on method, path and body (regular expressions); each can answer with a status and
body, or close the connection without an answer. Everything else passes through untouched, so
tests prove behaviour against real servers with real failures in between (no mocks).
"""

from __future__ import annotations

import http.client
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"})


@dataclass
class FaultRule:
    """Answer matching requests with `status`/`body` (or drop them) `times` times (None: always)."""

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

    def matches(self, method: str, path: str, body: bytes) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if not re.fullmatch(self.method, method) or not re.search(self.path, path):
            return False
        return not self.body or re.search(self.body.encode(), body) is not None


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
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rule = proxy._match(self.command, self.path, body)
                if rule is not None:
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
                status, headers, payload = proxy._forward(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
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

    def _match(self, method: str, path: str, body: bytes) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path, body):
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
            connection.request(method, path, body=body or None, headers=clean)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()


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
