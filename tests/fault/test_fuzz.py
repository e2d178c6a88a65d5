"""Fuzzing the consumer's front door and the transform.

Decode: arbitrary message bodies and attributes — random text, random bytes as base64, gzip of
random or mutated envelopes, mutated claim-check pointers (resolved against the real moto S3) —
through `body_to_raw`, `parse_pointer`, `load_json`, `validate_envelope` and `Consumer.decode`:
the only exceptions that may come out are `EnvelopeError` (poison: DLQ with a reason) and
`TransientError` (retry). Anything else would fail a whole batch instead of one message.

Transform: real X-Ray payloads (tests/fixtures/xray) mutated node by node — values replaced by
arbitrary JSON, keys dropped, documents re-serialised — must never make `transform_trace` raise
or record an internal error (tests/tasks/test_transform.py fuzzes from generated shapes; this
starts from real ones).

Quick suite: a few hundred cases each; `-m slow`: 10,000 each.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
from datetime import UTC, datetime
from typing import Any

import boto3
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.stack import SandboxStack
from tasks import envelope as env
from tasks import queue
from tasks.consumer import Consumer
from tasks.errors import TransientError
from tasks.trace_model import TraceContext
from tasks.transform import transform_trace
from tests.fault import helpers as h
from tests.fixtures import FIXTURES, load_fixture
from tests.fuzzing import LONG, LONG_TIMEOUT_SECONDS

ALLOWED = (env.EnvelopeError, TransientError)
QUICK = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _valid_envelope() -> dict[str, Any]:
    trace_id = h.trace_id_for("fuzz", "a", 0, 1.8e9)
    doc = h.trace_documents(trace_id, "012345678901")[0]
    e = env.build_envelope(
        source="sweep",
        account_id="012345678901",
        region="us-east-1",
        traces=[{"Id": trace_id, "Segments": [{"Id": doc["id"], "Document": h.dumps(doc)}]}],
        collected_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return orjson.loads(e.to_json())  # type: ignore[no-any-return]


VALID = _valid_envelope()
FIELDS = [*VALID, "payload_ref", "execution", "window"]


@st.composite
def mutated_envelope(draw: st.DrawFn) -> dict[str, Any]:
    data = dict(VALID)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(FIELDS))
        if draw(st.booleans()):
            data.pop(key, None)
        else:
            data[key] = draw(_json | st.just("012345678901") | st.just(env.SCHEMA_V1))
    return data


def _gzip_b64(raw: bytes) -> str:
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode()


def _pointer(ref: Any) -> str:
    return orjson.dumps({"schema": env.SCHEMA_V1, "payload_ref": ref}, default=str).decode()


bodies = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=200).map(lambda b: _gzip_b64(b)),
    mutated_envelope().map(lambda d: orjson.dumps(d, default=str).decode()),
    mutated_envelope().map(lambda d: _gzip_b64(orjson.dumps(d, default=str))),
    mutated_envelope().map(lambda d: orjson.dumps(d, default=str).decode()[: len(orjson.dumps(d)) // 2]),
    st.builds(
        lambda bucket, key, sha, size: {"bucket": bucket, "key": key, "sha256": sha, "bytes": size},
        st.sampled_from(["fuzz-bucket", "no-such-bucket"]),
        st.sampled_from(["payloads/a.json.gz", "payloads/missing.json.gz"]) | st.text(min_size=1, max_size=20),
        st.text(max_size=64),
        st.integers(-10, 10**13),
    ).map(_pointer),
    _json.map(lambda v: _pointer(v)),
)
# Non-ASCII signatures are left out here: they crash `verify` (TypeError from hmac.compare_digest),
# pinned by test_non_ascii_signature_is_poison_not_a_crash below until tasks/envelope.py is fixed.
attributes = st.dictionaries(
    st.sampled_from(["signature", "account_id", "schema", "encoding", "envelope_id", "x"]),
    st.text(max_size=70) | st.just("012345678901"),
    max_size=4,
).filter(lambda a: a.get("signature", "").isascii())
system = st.dictionaries(
    st.sampled_from(["SenderId", "ApproximateReceiveCount"]), st.text(max_size=14) | st.just("999999999999"), max_size=2
)


@pytest.fixture(scope="module")
def consumers(stack: SandboxStack) -> list[Consumer]:
    """A consumer that checks signatures (the sandbox key) and one without keys (reaches validation)."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="fuzz-bucket")
    s3.put_object(Bucket="fuzz-bucket", Key="payloads/a.json.gz", Body=gzip.compress(orjson.dumps(VALID)))
    roster = stack.config.roster.model_copy(update={"accounts": [*stack.config.roster.accounts, *h_accounts()]})
    store = stack.config.archive.model_copy(update={"bucket": "fuzz-bucket"})  # its pointers get fetched
    signed = stack.config.model_copy(update={"roster": roster, "archive": store})
    unsigned = signed.model_copy(update={"signing_keys": []})
    sqs = boto3.client("sqs")
    return [Consumer(c, s3, sqs, describe_executions=False) for c in (signed, unsigned)]


def h_accounts() -> list[Any]:
    from blocks import MemberAccount

    return [MemberAccount(account_id="012345678901", name="fuzz")]


def _decode(consumer: Consumer, body: str, attrs: dict[str, str], sys_attrs: dict[str, str]) -> None:
    message = queue.ReceivedMessage("m", "r", body, attrs, sys_attrs)
    with contextlib.suppress(*ALLOWED):
        consumer.decode(message)


def _pure(body: str) -> None:
    try:
        pointer = env.parse_pointer(body)
        if pointer is None:
            env.validate_envelope(env.load_json(env.body_to_raw(body)))
    except env.EnvelopeError:
        pass


@QUICK
@given(body=bodies, attrs=attributes, sys_attrs=system, which=st.integers(0, 1))
def test_decode_only_raises_envelope_or_transient_errors(consumers, body, attrs, sys_attrs, which) -> None:  # type: ignore[no-untyped-def]
    _pure(body)
    _decode(consumers[which], body, attrs, sys_attrs)


@pytest.mark.slow
@pytest.mark.fuzz
@pytest.mark.timeout(LONG_TIMEOUT_SECONDS)
@LONG
@given(body=bodies, attrs=attributes, sys_attrs=system, which=st.integers(0, 1))
def test_decode_only_raises_envelope_or_transient_errors_long(consumers, body, attrs, sys_attrs, which) -> None:  # type: ignore[no-untyped-def]
    _pure(body)
    _decode(consumers[which], body, attrs, sys_attrs)


def test_non_ascii_signature_is_poison_not_a_crash(consumers) -> None:  # type: ignore[no-untyped-def]
    message = queue.ReceivedMessage("m", "r", orjson.dumps(VALID).decode(), {"signature": "v1=\u00e9"}, {})
    with pytest.raises(env.EnvelopeError, match="signature"):
        consumers[0].decode(message)


def _real_traces() -> list[dict[str, Any]]:
    traces: list[dict[str, Any]] = list(load_fixture("xray/scorekeep_batch_get_traces")["Traces"])
    for path in sorted((FIXTURES / "xray").glob("*.json")):
        data = orjson.loads(path.read_bytes())
        if isinstance(data, dict) and "trace_id" in data and "id" in data:  # one segment document
            traces.append({"Id": data["trace_id"], "Segments": [{"Id": data["id"], "Document": path.read_text()}]})
    return traces


REAL_TRACES = _real_traces()


def _mutate(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """Walk the value; at each node maybe replace it, drop a key, or recurse."""
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return draw(_json)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if draw(st.integers(0, 15)) == 0:
                continue
            out[key] = _mutate(draw, item, depth + 1) if depth < 8 else item
        return out
    if isinstance(value, list):
        return [_mutate(draw, item, depth + 1) for item in value if draw(st.integers(0, 15))]
    if isinstance(value, str) and value[:1] == "{" and depth < 8:
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        mutated = _mutate(draw, parsed, depth + 1)
        try:
            return orjson.dumps(mutated).decode()
        except (TypeError, orjson.JSONEncodeError):
            return value
    return value


@st.composite
def mutated_trace(draw: st.DrawFn) -> Any:
    return _mutate(draw, draw(st.sampled_from(REAL_TRACES)))


CTX = TraceContext(
    account_id="012345678901",
    account_name="fuzz",
    environment="test",
    region="us-east-1",
    collected_at=datetime(2026, 1, 1, tzinfo=UTC),
    envelope_id="e" * 32,
    source="sweep",
)


def _transform_never_raises(trace: Any) -> None:
    docs = transform_trace(trace, CTX)
    internal = [p for p in docs.problems if (p["reason"] or "").startswith(("trace not mapped", "segment not mapped"))]
    assert not internal, internal
    assert docs.trace["trace_id"]


@QUICK
@given(trace=mutated_trace())
def test_transform_of_mutated_real_traces_never_raises(trace: Any) -> None:
    _transform_never_raises(trace)


@pytest.mark.slow
@pytest.mark.fuzz
@pytest.mark.timeout(LONG_TIMEOUT_SECONDS)
@LONG
@given(trace=mutated_trace())
def test_transform_of_mutated_real_traces_never_raises_long(trace: Any) -> None:
    _transform_never_raises(trace)
