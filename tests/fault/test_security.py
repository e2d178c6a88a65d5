"""OpenSearch authentication over TLS, and secrets that must never leak.

`AuthFront` is a TLS-terminating HTTP front (self-signed certificate made with `cryptography`) in
front of the in-memory OpenSearch: in `basic` mode it demands the exact Basic credentials, in
`sigv4` mode it recomputes the request's SigV4 signature with botocore from the log account's
credentials (method, path, query, signed headers, x-amz-date, x-amz-content-sha256 = sha256 of the
body actually received) and rejects anything else with 401/403 before forwarding.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import ipaddress
import logging
import os
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from blocks import OpenSearchTarget
from blocks.config import Config
from flows.consume import consume, receive_batch, run_consumer
from flows.sweep import sweep
from sandbox.faults import Exchange, FaultProxy, FaultRule
from sandbox.stack import SandboxStack
from tasks import archive, dlq
from tasks import envelope as env
from tasks.consumer import BatchStats, Consumer
from tasks.index import client_for, ensure_templates
from tasks.mappings import index_templates
from tests.fault import helpers as h

pytestmark = pytest.mark.usefixtures("prefect_harness")


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "front.crt", directory / "front.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class AuthFront:
    def __init__(self, upstream: str, directory: Path, mode: str, username: str = "", password: str = "") -> None:
        self.mode, self.username, self.password = mode, username, password
        self.accepted = 0
        self.rejected: list[str] = []
        self.headers_seen: list[dict[str, str]] = []
        parts = urlsplit(upstream)
        target = (parts.hostname or "127.0.0.1", parts.port or 80)
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                front.headers_seen.append(headers)
                problem = front.check(self.command, self.path, headers, body)
                if problem:
                    front.rejected.append(problem)
                    payload = orjson.dumps({"error": problem})
                    self.send_response(401 if "missing" in problem else 403)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                front.accepted += 1
                connection = http.client.HTTPConnection(*target, timeout=60)
                skip = {"host", "authorization", "connection", "content-length"}
                forward = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                connection.request(self.command, self.path, body=body or None, headers=forward)
                response = connection.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in {"content-length", "connection", "transfer-encoding"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                connection.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        cert, key = self_signed(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> str | None:
        auth = headers.get("authorization", "")
        if self.mode == "basic":
            if not auth.startswith("Basic "):
                return "missing basic credentials"
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return None if auth == f"Basic {expected}" else "wrong basic credentials"
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return "missing SigV4 Authorization"
        for name in ("x-amz-date", "x-amz-content-sha256"):
            if name not in headers:
                return f"missing {name}"
        if headers["x-amz-content-sha256"] != hashlib.sha256(body).hexdigest():
            return "x-amz-content-sha256 is not the sha256 of the body"
        fields = dict(part.strip().split("=", 1) for part in auth.removeprefix("AWS4-HMAC-SHA256 ").split(","))
        signed = fields["SignedHeaders"].split(";")
        for name in ("host", "x-amz-date", "x-amz-content-sha256"):
            if name not in signed:
                return f"{name} is not signed"
        credentials = boto3.Session().get_credentials().get_frozen_credentials()  # type: ignore[union-attr]
        scope = fields["Credential"].split("/")
        if scope[0] != credentials.access_key or scope[2:] != ["us-east-1", "es", "aws4_request"]:
            return f"unexpected credential scope {fields['Credential']}"
        request = AWSRequest(
            method=method, url=f"https://{headers['host']}{path}", data=body, headers={n: headers[n] for n in signed}
        )
        request.context["timestamp"] = headers["x-amz-date"]
        signer = SigV4Auth(credentials, "es", "us-east-1")
        string_to_sign = signer.string_to_sign(request, signer.canonical_request(request))
        expected = signer.signature(string_to_sign, request)
        return None if fields["Signature"] == expected else "SigV4 signature does not verify"

    def __enter__(self) -> AuthFront:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _target(front: AuthFront, **fields: Any) -> OpenSearchTarget:
    return OpenSearchTarget(hosts=[front.url], verify_certs=False, timeout_seconds=10, **fields)


@pytest.fixture
def swept(fresh_config: Config, config_file: str) -> dict[str, set[str]]:
    expected = h.plant(fresh_config, 3, tag="auth")
    assert sweep(config_path=config_file, **h.sweep_config_kwargs(), return_state=True).is_completed()
    return expected


@pytest.mark.parametrize("mode", ["basic", "sigv4"])
def test_opensearch_auth_over_tls(mode: str, fresh_config: Config, swept, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    password = "pw-" + hashlib.sha256(tmp_path.name.encode()).hexdigest()[:12]
    with AuthFront(fresh_config.opensearch.hosts[0], tmp_path, mode, "xraylake", password) as front:
        if mode == "basic":
            good = _target(front, auth="basic", username="xraylake", password=SecretStr(password))
            bad = _target(front, auth="basic", username="xraylake", password=SecretStr("wrong"))
        else:
            good = _target(front, auth="sigv4", sigv4_region="us-east-1")
            bad = _target(front)  # no auth at all
        with pytest.raises(Exception, match="401|403|AuthenticationException|AuthorizationException"):
            run_consumer(fresh_config.model_copy(update={"opensearch": bad}), wait_seconds=1, use_tasks=False)
        assert front.rejected and front.accepted == 0
        config = fresh_config.model_copy(update={"opensearch": good})
        stats = run_consumer(config, wait_seconds=1, use_tasks=False)
        assert stats.documents_failed == 0 and stats.deleted > 0, stats.as_dict()
        assert front.accepted > 0
        rejected_before = len(front.rejected)
        h.wait_for(lambda: h.queue_depth(fresh_config)["in_flight"] == 0, 5, "nothing in flight")
        h.assert_exactly_once(config, swept)
        assert len(front.rejected) == rejected_before  # every request of the good client verified
        if mode == "sigv4":
            assert all(s.get("authorization", "").startswith("AWS4-HMAC-SHA256") for s in front.headers_seen[-3:])


def test_secrets_never_reach_logs_artifacts_documents_or_parquet(
    fresh_config: Config, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = hashlib.sha256(tmp_path.name.encode()).hexdigest()[:16]
    secrets = {
        "opensearch-password": f"os-pass-{token}",
        "external-id": f"ext-id-{token}",
        "signing-key": f"hmac-key-{token}",
    }
    for name, value in secrets.items():
        Secret(value=SecretStr(value)).save(f"xraylake-test-{name}-{token}", overwrite=True)
    with AuthFront(
        fresh_config.opensearch.hosts[0], tmp_path, "basic", "xraylake", secrets["opensearch-password"]
    ) as front:
        data = orjson.loads(fresh_config.to_json())
        data.pop("signing_keys")
        data["signing_key_secrets"] = [f"xraylake-test-signing-key-{token}"]
        data["roster"].pop("external_id")
        data["roster"]["external_id_secret"] = f"xraylake-test-external-id-{token}"
        data["opensearch"] = {
            **_target(front, auth="basic", username="xraylake").model_dump(mode="json"),
            "password_secret": f"xraylake-test-opensearch-password-{token}",
        }
        path = tmp_path / "secret-config.json"
        path.write_bytes(orjson.dumps(data))
        assert not any(v in path.read_text() for v in secrets.values())  # the file only names them

        expected = h.plant(fresh_config, 3, tag="secrets")
        caplog.set_level(logging.DEBUG, logger="xraylake")
        caplog.set_level(logging.DEBUG, logger="prefect")
        caplog.set_level(logging.INFO)
        swept = sweep(config_path=str(path), **h.sweep_config_kwargs(), return_state=True)
        consumed = consume(config_path=str(path), wait_seconds=1, return_state=True)
        assert swept.is_completed() and consumed.is_completed(), (swept.message, consumed.message)
        assert front.accepted > 0 and not front.rejected
        with_keys = fresh_config.model_copy(
            update={
                "opensearch": _target(
                    front, auth="basic", username="xraylake", password=SecretStr(secrets["opensearch-password"])
                )
            }
        )
        h.assert_exactly_once(with_keys, expected)

        def leaks(text: str) -> list[str]:
            return [name for name, value in secrets.items() if value in text]

        assert not leaks(caplog.text), leaks(caplog.text)
        run_ids = [swept.state_details.flow_run_id, consumed.state_details.flow_run_id]
        with get_client(sync_client=True) as client:
            for run_id in run_ids:
                logs = client.request("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": [str(run_id)]}}})
                assert not leaks(logs.text), "Prefect logs"
                artifacts = client.request(
                    "POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}}
                )
                assert artifacts.json(), "no artifacts to check"
                assert not leaks(artifacts.text), "Prefect artifacts"
                run = client.request("GET", f"/flow_runs/{run_id}")  # type: ignore[arg-type]
                assert not leaks(run.text), "flow run (parameters, state message)"
            blocks = client.request("POST", "/block_documents/filter", json={"include_secrets": False})
            assert not leaks(blocks.text), "block documents read without include_secrets"
        index = client_for(with_keys.opensearch)
        everything = index.search(index="*", body={"size": 10_000, "query": {"match_all": {}}})
        assert not leaks(orjson.dumps(everything).decode()), "OpenSearch documents"
        s3 = boto3.client("s3")
        for obj in archive.list_keys(s3, fresh_config.archive.bucket, ""):
            body = s3.get_object(Bucket=fresh_config.archive.bucket, Key=obj["Key"])["Body"].read()
            text = body.decode("latin-1")
            if obj["Key"].endswith(".parquet"):
                import io

                import pyarrow.parquet as pq

                text = orjson.dumps(pq.read_table(io.BytesIO(body)).to_pylist(), default=str).decode()
            elif obj["Key"].endswith(".gz"):
                import gzip

                text = gzip.decompress(body).decode()
            assert not leaks(text), obj["Key"]


# ----------------------------------------------------------------- claim-check pointers (issue 15.4)


class GetRecorder:
    """A forwarding rule on the fault proxy in front of moto S3 that records every object GET: the
    path, its Range header and how many body bytes S3 answered with."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.gets: list[dict[str, Any]] = []
        proxy.add(
            FaultRule(method="GET", path=r"\.gz(\?|$)", rewrite_request=self._request, rewrite_response=self._response)
        )

    def _request(self, exchange: Exchange) -> None:
        headers = {k.lower(): v for k, v in exchange.request_headers.items()}
        exchange.state["entry"] = {"path": exchange.path, "range": headers.get("range")}
        self.gets.append(exchange.state["entry"])

    def _response(self, exchange: Exchange) -> None:
        exchange.state["entry"]["bytes"] = len(exchange.response_body)


def _claim_check_envelope(config: Config, tag: str) -> env.Envelope:
    trace_id = h.trace_id_for(tag, "cc", 0, time.time() - 600)
    documents = h.trace_documents(trace_id, config.roster.accounts[0].account_id)
    trace = {"Id": trace_id, "Segments": [{"Id": d["id"], "Document": h.dumps(d)} for d in documents]}
    return env.build_envelope(
        source="sweep", account_id=config.roster.accounts[0].account_id, region=h.REGION, traces=[trace]
    )


def _send(config: Config, body: str, attributes: dict[str, str]) -> None:
    boto3.client("sqs").send_message(
        QueueUrl=config.queue.queue_url,
        MessageBody=body,
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
    )


def _consume_through(config: Config, proxy: FaultProxy) -> BatchStats:
    consumer = Consumer(
        config, boto3.client("s3", endpoint_url=proxy.url), boto3.client("sqs"), describe_executions=False
    )
    ensure_templates(consumer.opensearch, index_templates(consumer.index_prefix))
    total = BatchStats()
    while messages := receive_batch(consumer, batch_messages=10, wait_seconds=1, visibility_timeout=60):
        total.merge(consumer.process(messages))
    return total


def test_claim_check_pointers_are_verified_before_anything_is_fetched(
    fresh_config: Config, stack: SandboxStack
) -> None:
    """An unsigned or forged pointer, or one naming another bucket or a key outside `payloads/`,
    is dead-lettered without a single GET (it used to make the consumer read any bucket and key
    with the log account's credentials before the signature was checked)."""
    key = fresh_config.signing_keys[0].get_secret_value()
    bucket = fresh_config.archive.bucket
    s3 = boto3.client("s3")
    other = f"other-{fresh_config.archive.bucket}"
    s3.create_bucket(Bucket=other)

    good = env.encode(_claim_check_envelope(fresh_config, "good"), key, bucket, threshold=1)
    assert good.claim_check and good.encoding == env.ENCODING_CLAIM_CHECK
    ref, payload = good.claim_check
    archive.put_claim_check(s3, ref, payload)
    _send(fresh_config, good.body, good.attributes)

    def pointer_to(target_bucket: str, target_key: str) -> str:
        data = orjson.loads(good.body)
        data["payload_ref"] |= {"bucket": target_bucket, "key": target_key}
        return orjson.dumps(data).decode()

    stolen = {k: v for k, v in good.attributes.items() if k != "pointer_signature"}  # no pointer signature
    s3.put_object(Bucket=other, Key=ref.key, Body=payload)
    s3.put_object(Bucket=bucket, Key="raw/elsewhere.json.gz", Body=payload)
    s3.put_object(Bucket=bucket, Key=f"{ref.key}.copy.gz", Body=payload)
    hostile = [
        (pointer_to(other, ref.key), stolen, "claim-check-location"),  # another bucket
        (pointer_to(bucket, "raw/elsewhere.json.gz"), stolen, "claim-check-location"),  # outside payloads/
        (pointer_to(bucket, f"{ref.key}.copy.gz"), stolen, "signature"),  # the envelope's signature only
        (good.body, stolen, "signature"),  # a real pointer stripped of its pointer signature
        (pointer_to(bucket, f"{ref.key}.copy.gz"), good.attributes, "signature"),  # signed pointer, altered
        (good.body, good.attributes | {"pointer_signature": env.sign(b"x", "not-the-key")}, "signature"),
    ]
    for body, attributes, _ in hostile:
        _send(fresh_config, body, attributes)

    with FaultProxy(stack.config.aws_endpoint_url or "") as proxy:
        recorder = GetRecorder(proxy)
        stats = _consume_through(fresh_config, proxy)

    assert dict(stats.dead_lettered) == dict(Counter(reason for _, _, reason in hostile)), stats.as_dict()
    assert stats.deleted == 1 and stats.traces == 1 and stats.documents_failed == 0
    assert [unquote(g["path"].split("?")[0]) for g in recorder.gets] == [f"/{bucket}/{ref.key}"], recorder.gets
    entries = [e for e, _ in dlq.peek(boto3.client("sqs"), fresh_config.queue.dlq_url)]
    assert sorted(e.reason for e in entries) == sorted(reason for _, _, reason in hostile)
    assert all(e.detail for e in entries)


def test_a_claim_check_object_is_read_no_further_than_its_declared_size(
    fresh_config: Config, stack: SandboxStack
) -> None:
    """A signed pointer whose object grew (overwritten with 4 MB more): the consumer reads at most
    the declared bytes plus one, then dead-letters the message instead of downloading it whole."""
    key = fresh_config.signing_keys[0].get_secret_value()
    good = env.encode(_claim_check_envelope(fresh_config, "grown"), key, fresh_config.archive.bucket, threshold=1)
    assert good.claim_check
    ref, payload = good.claim_check
    archive.put_claim_check(boto3.client("s3"), ref, payload + os.urandom(4 * 1024 * 1024))
    _send(fresh_config, good.body, good.attributes)

    with FaultProxy(stack.config.aws_endpoint_url or "") as proxy:
        recorder = GetRecorder(proxy)
        stats = _consume_through(fresh_config, proxy)

    assert dict(stats.dead_lettered) == {"claim-check-mismatch": 1}, stats.as_dict()
    assert len(recorder.gets) == 1
    assert recorder.gets[0]["bytes"] <= ref.bytes + 1, (recorder.gets, ref.bytes)
