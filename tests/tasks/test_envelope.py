"""Envelope v1: ids, packing, signing, wire encoding and the decode limits (pure, no servers)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import envelope as env
from tasks.tracetime import trace_partition

NOW = datetime(2026, 11, 26, 10, 30, tzinfo=UTC)


def make_trace(epoch: int, suffix: str, payload_bytes: int = 100) -> dict[str, object]:
    trace_id = f"1-{epoch:08x}-{suffix:0>24}"
    doc = {
        "id": suffix[-16:].rjust(16, "0"),
        "name": "svc",
        "trace_id": trace_id,
        "start_time": epoch,
        "end_time": epoch + 1,
        "metadata": {"pad": "x" * payload_bytes},
    }
    return {
        "Id": trace_id,
        "Duration": 1.0,
        "LimitExceeded": False,
        "Segments": [{"Id": doc["id"], "Document": orjson.dumps(doc).decode()}],
    }


def test_envelope_id_is_deterministic_and_content_addressed() -> None:
    traces = [make_trace(1_795_600_000, "a1"), make_trace(1_795_600_100, "b2")]
    first = env.build_envelope(
        source="sweep", account_id="012345678901", region="us-east-1", traces=traces, collected_at=NOW
    )
    again = env.build_envelope(source="replay", account_id="012345678901", region="us-east-1", traces=traces)
    other_account = env.build_envelope(source="sweep", account_id="112345678901", region="us-east-1", traces=traces)
    assert first.envelope_id == again.envelope_id
    assert first.envelope_id != other_account.envelope_id
    assert len(first.envelope_id) == 32


def test_to_json_round_trips_and_keeps_documents_as_strings() -> None:
    trace = make_trace(1_795_600_000, "c3")
    envelope = env.build_envelope(
        source="sweep", account_id="012345678901", region="us-east-1", traces=[trace], collected_at=NOW
    )
    raw = envelope.to_json()
    parsed = env.parse_envelope(raw)
    assert parsed == envelope
    assert parsed.to_json() == raw
    assert parsed.traces[0]["Segments"][0]["Document"] == trace["Segments"][0]["Document"]  # type: ignore[index]
    assert orjson.loads(raw)["schema"] == "xraylake.envelope.v1"
    assert orjson.loads(raw)["collected_at"].endswith("Z")


def test_pack_groups_by_start_hour_and_size() -> None:
    hour = 1_795_600_800  # 2026-11-26T09:xx
    base = hour - hour % 3600
    small = [make_trace(base + i, f"s{i}", 1000) for i in range(50)]
    next_hour = [make_trace(base + 3600 + i, f"n{i}", 1000) for i in range(3)]
    huge = make_trace(base + 10, "huge", 2_000_000)
    collected = datetime.fromtimestamp(base + 7200, UTC)
    groups = list(env.pack_traces([*small, huge, *next_hour], collected, target_bytes=20_000))
    assert sum(len(g) for g in groups) == 54
    assert [g for g in groups if huge in g] == [[huge]]
    for group in groups:
        assert len({trace_partition(t, collected) for t in group}) == 1
        if len(group) > 1:
            assert sum(len(orjson.dumps(t)) for t in group) <= 20_000


def test_encode_picks_plain_gzip_or_claim_check() -> None:
    tiny = env.build_envelope(
        source="sweep", account_id="012345678901", region="us-east-1", traces=[], collected_at=NOW
    )
    plain = env.encode(tiny, "k", "bucket")
    assert plain.encoding == env.ENCODING_JSON
    assert env.body_to_raw(plain.body) == tiny.to_json()

    repetitive = env.build_envelope(
        source="sweep",
        account_id="012345678901",
        region="us-east-1",
        traces=[make_trace(1_795_600_000, "r1", 50_000)],
        collected_at=NOW,
    )
    packed = env.encode(repetitive, "k", "bucket")
    assert packed.encoding == env.ENCODING_GZIP
    assert env.body_to_raw(packed.body) == repetitive.to_json()

    random_doc = base64.b64encode(os.urandom(1_200_000)).decode()
    big = env.build_envelope(
        source="sweep",
        account_id="012345678901",
        region="us-east-1",
        collected_at=NOW,
        traces=[{"Id": "1-6b000000-000000000000000000000001", "Segments": [{"Id": "1", "Document": random_doc}]}],
    )
    pointer = env.encode(big, "k", "bucket", "payloads")
    assert pointer.encoding == env.ENCODING_CLAIM_CHECK
    assert pointer.claim_check is not None
    ref, payload = pointer.claim_check
    assert env.parse_pointer(pointer.body) == ref
    assert ref.key.startswith("payloads/account_id=012345678901/region=us-east-1/")
    env.check_payload(ref, payload)
    assert env.gunzip_capped(payload) == big.to_json()
    assert pointer.size < 4096


def test_signature_verifies_with_current_or_previous_key() -> None:
    raw = b'{"schema":"xraylake.envelope.v1"}'
    signature = env.sign(raw, "old-key")
    env.verify(raw, signature, ["new-key", "old-key"])
    with pytest.raises(env.EnvelopeError) as forged:
        env.verify(raw + b" ", signature, ["new-key", "old-key"])
    assert forged.value.reason == "signature"
    with pytest.raises(env.EnvelopeError) as missing:
        env.verify(raw, None, ["new-key"])
    assert missing.value.reason == "signature"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "bad-json"),
        ('[{"schema": "xraylake.envelope.v1"}]', "bad-json"),
        ('  {"schema": "xraylake.envelope.v1"', "bad-json"),
        ("!!!not-base64!!!", "bad-base64"),
        (base64.b64encode(b"not gzip at all").decode(), "bad-gzip"),
        (base64.b64encode(gzip.compress(b"{}", mtime=0)[:-6]).decode(), "bad-gzip"),
    ],
)
def test_bad_bodies_name_their_reason(body: str, reason: str) -> None:
    with pytest.raises(env.EnvelopeError) as error:
        env.parse_envelope(env.body_to_raw(body))
    assert error.value.reason == reason


def test_gzip_bomb_is_refused_before_it_inflates() -> None:
    bomb = base64.b64encode(gzip.compress(b"\0" * (10 * 1024 * 1024))).decode()
    with pytest.raises(env.EnvelopeError) as error:
        env.body_to_raw(bomb, cap=1024 * 1024)
    assert error.value.reason == "decompressed-too-large"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.update(schema="xraylake.envelope.v0"), "unknown-schema"),
        (lambda d: d.update(account_id="12345"), "invalid-envelope"),
        (lambda d: d.update(collected_at="2026-11-26T10:00:00"), "invalid-envelope"),
        (lambda d: d.update(traces=[{"Segments": []}]), "invalid-envelope"),
        (lambda d: d.update(extra_field=1), "invalid-envelope"),
    ],
)
def test_invalid_envelopes_name_their_reason(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    good = env.build_envelope(
        source="sweep",
        account_id="012345678901",
        region="us-east-1",
        traces=[make_trace(1_795_600_000, "v1")],
        collected_at=NOW,
    )
    data = orjson.loads(good.to_json())
    mutate(data)
    with pytest.raises(env.EnvelopeError) as error:
        env.parse_envelope(orjson.dumps(data))
    assert error.value.reason == reason


def _golden_traces() -> list[dict[str, object]]:
    # hex suffixes: trace ids must be valid X-Ray ids (collectors refuse others)
    traces = [make_trace(1_795_600_000 + 60 * i, f"a{i}", payload_bytes=50 * i) for i in range(40)]
    third = traces[3]
    traces[3] = {  # keys out of X-Ray's order, plus the metadata build_envelope strips
        "LimitExceeded": True,
        "Segments": third["Segments"],
        "Id": third["Id"],
        "Duration": 2.5,
        "ResponseMetadata": {"RequestId": "r"},
    }
    traces[5]["Extra"] = {"b": [1, 2.5, None, "é\u2028"], "a": float("nan")}
    return traces


def test_envelope_ids_canonical_bytes_and_raw_archive_bytes_never_change() -> None:
    """Replay and dedup depend on these bytes: values recorded with the code of 4f8f37f, before the
    encoder was optimised (one serialisation per trace for packing and id, canonical bytes without
    a model_dump copy) and before the trace-time rule moved to tasks/tracetime.py."""
    from tasks import collector as col

    envelopes = col.envelopes_for(
        _golden_traces(),
        source="collect",
        account_id="012345678901",
        region="us-east-1",
        window=env.TimeWindow(start=datetime(2026, 11, 26, 9, tzinfo=UTC), end=datetime(2026, 11, 26, 10, tzinfo=UTC)),
        execution={
            "executionArn": "arn:aws:states:us-east-1:012345678901:execution:m:e",
            "startDate": datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
            "status": "SUCCEEDED",
        },
        collected_at=NOW,
    )
    seen = []
    for envelope in envelopes:
        raw = envelope.to_json()
        assert raw == orjson.dumps(envelope.model_dump(mode="json", by_alias=True, exclude_none=True))
        archived = gzip.compress(raw, compresslevel=6, mtime=0)
        assert env.gzip_canonical(raw) == archived
        seen.append(
            (
                envelope.envelope_id,
                hashlib.sha256(raw).hexdigest()[:16],
                hashlib.sha256(archived).hexdigest()[:16],
                len(envelope.traces),
            )
        )
    assert seen == [
        ("d9cb9a3901bc9f12ad2f77dc1db77b29", "a030943b320eaffb", "6e10f287cba51d5c", 14),
        ("60b2e044ff3e5cacdf394c9118325a1d", "80056b650e004cf2", "493d2f4b5d9d92cb", 26),
    ]
    for envelope in envelopes:  # a decoded envelope re-encodes to the same bytes and id
        again = env.parse_envelope(envelope.to_json())
        assert again.to_json() == envelope.to_json()
        assert env.envelope_id_for(again.account_id, again.region, again.traces) == envelope.envelope_id


def test_a_claim_check_pointer_is_signed_apart_from_its_envelope() -> None:
    big = env.build_envelope(
        source="sweep", account_id="012345678901", region="us-east-1", traces=[make_trace(1_795_600_000, "p1")]
    )
    message = env.encode(big, "k", "bucket", "payloads", threshold=1)
    body = message.body.encode()
    env.verify_pointer(body, message.attributes[env.POINTER_SIGNATURE_ATTRIBUTE], ["old", "k"])
    env.verify(big.to_json(), message.attributes[env.SIGNATURE_ATTRIBUTE], ["k"])  # older consumers still verify
    with pytest.raises(env.EnvelopeError, match="signature"):  # an envelope signature is no pointer signature
        env.verify_pointer(body, env.sign(body, "k"), ["k"])
    with pytest.raises(env.EnvelopeError, match="claim-check pointer is not signed"):
        env.verify_pointer(body, None, ["k"])
    assert env.POINTER_SIGNATURE_ATTRIBUTE not in env.encode(big, "k", "bucket").attributes  # inline: none
    assert env.POINTER_SIGNATURE_ATTRIBUTE not in env.encode(big, None, "bucket", threshold=1).attributes


def test_pointer_checks_size_then_location() -> None:
    ref = env.PayloadRef(bucket="ours", key="payloads/a.json.gz", sha256="0" * 64, bytes=10)
    env.check_pointer(ref, "ours", "payloads")
    for changes, reason in [
        ({"bucket": "theirs", "bytes": 10**12}, "oversize"),
        ({"bucket": "theirs"}, "claim-check-location"),
        ({"key": "raw/a.json.gz"}, "claim-check-location"),
        ({"key": "payloadsX/a.json.gz"}, "claim-check-location"),
    ]:
        with pytest.raises(env.EnvelopeError) as error:
            env.check_pointer(ref.model_copy(update=changes), "ours", "payloads", cap=1000)
        assert error.value.reason == reason
    for bad in ({"bytes": 0}, {"bytes": -1}, {"sha256": "x"}, {"key": ""}):
        body = orjson.dumps({"payload_ref": ref.model_dump() | bad}).decode()
        with pytest.raises(env.EnvelopeError) as error:
            env.parse_pointer(body)
        assert error.value.reason == "bad-pointer"


def test_gunzip_refuses_trailing_bytes_and_stops_at_the_cap() -> None:
    data = os.urandom(3 * 1024 * 1024)
    compressed = env.gzip_canonical(data)
    assert env.gunzip_capped(compressed, cap=len(data)) == data
    assert env.is_canonical_gzip(compressed)
    assert not env.is_canonical_gzip(gzip.compress(data, mtime=1))
    with pytest.raises(env.EnvelopeError, match="decompressed-too-large"):
        env.gunzip_capped(compressed, cap=len(data) - 1)
    with pytest.raises(env.EnvelopeError, match="bad-gzip"):
        env.gunzip_capped(compressed + b"junk")
    with pytest.raises(env.EnvelopeError, match="bad-gzip"):
        env.gunzip_capped(compressed + env.gzip_canonical(b"{}"))  # a second member would be lost


def _omitted(value: object, limit: int) -> object:
    if isinstance(value, str):
        size = len(orjson.dumps(value)) - 2
        return f"{env.OMITTED_PREFIX}{size}" if size > limit else value
    if isinstance(value, list):
        return [_omitted(v, limit) for v in value]
    if isinstance(value, dict):
        return {_omitted(k, limit): _omitted(v, limit) for k, v in value.items()}  # type: ignore[misc]
    return value


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(data=st.dictionaries(st.text(max_size=12), _values, max_size=5), limit=st.integers(0, 30))
def test_load_json_leaves_out_exactly_the_strings_over_the_limit(data: dict[str, object], limit: int) -> None:
    raw = orjson.dumps(data)
    assert env.load_json(raw, omit_strings_over=limit) == (data if len(raw) <= limit else _omitted(data, limit))
    assert env.load_json(raw) == data
    document = "x" * (limit + 1)
    (value,) = env.load_json(orjson.dumps({"d": document}), limit).values()
    assert env.omitted_size(value) == len(document)
