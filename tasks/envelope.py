"""Envelope v1: the one message format between collectors and the consumer.

Pure logic (no I/O): the model, the deterministic id, packing traces by size, signing, and the
wire encoding (plain JSON → gzip+base64 when smaller → claim-check pointer when still too big).
The claim-check upload itself lives in `tasks/archive.py`; here we only build and check pointers.

Serialisation: the collector serialises each trace twice, not three times: once key-sorted (its
length is the packer's size — sorted and unsorted compact JSON have the same length — and its
bytes feed the envelope id), once inside the canonical envelope bytes, which are built without a
`model_dump` copy of the traces. The canonical bytes are serialised once per envelope and serve
the signature, the gzip for the wire and the claim-check. Once per trace is not possible without
changing ids or archive bytes: the id is defined over key-sorted JSON, the canonical bytes keep
X-Ray's key order (`test_envelope_ids_canonical_bytes_and_raw_archive_bytes_never_change`).

Signatures (`signature` attribute, HMAC-SHA256): over the canonical envelope bytes, for every
message. A claim-check message also carries `pointer_signature` over its body (the pointer JSON,
domain-separated from envelope signatures), so the consumer can check it is ours before it
fetches anything; the pointer names the payload's sha256, so the signed pointer authenticates the
payload too. `signature` stays as it was, so consumers from before pointer signatures still
verify new messages; claim-check messages from collectors before it (no `pointer_signature`) are
dead-lettered with reason `signature` by a current consumer (see `tasks/consumer.py`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import hmac
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.tracetime import Partition, trace_partition

SCHEMA_V1 = "xraylake.envelope.v1"
# Transaction Search form: traces are {"Id": <trace id as the records carry it>, "Spans": [<each
# aws/spans log event's message, verbatim>]}; everything else (ids, signing, packing, claim-check)
# is the v1 envelope's.
SCHEMA_SPANS_V1 = "xraylake.spans.v1"
SCHEMAS = (SCHEMA_V1, SCHEMA_SPANS_V1)
Source = Literal["sweep", "collect", "backfill", "replay", "import"]

# SQS: a message and a whole batch must stay under 1 MiB (1,048,576 bytes) including attributes.
SQS_MAX_MESSAGE_BYTES = 1_048_576
CLAIM_CHECK_THRESHOLD = 900 * 1024  # inline limit after compression; above it the payload goes to S3
PACK_TARGET_BYTES = 512 * 1024  # raw JSON per envelope: compresses to ~50-100 KB, many fit a batch
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024  # gzip-bomb cap for one envelope
# Decoded envelope JSON that consume and replay ingest at once (about two packed envelopes): it
# bounds their memory (bench B4: ~13 MB less peak RSS than 2 MiB) and one bulk request; each chunk
# writes its own Parquet files.
CHUNK_BYTES = 1024 * 1024


class EnvelopeError(ValueError):
    """An envelope that can never be processed; `reason` is the DLQ reason attribute."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_PLAIN_JSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def _not_plain(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not a plain JSON value")


class TimeWindow(BaseModel):
    model_config = ConfigDict(frozen=True)
    start: datetime
    end: datetime


class PayloadRef(BaseModel):
    """Claim-check pointer: the envelope JSON, gzip'ed, is in S3 at bucket/key (`bytes` long)."""

    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=1)


class Envelope(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    schema_: Literal["xraylake.envelope.v1", "xraylake.spans.v1"] = Field(
        default="xraylake.envelope.v1", alias="schema"
    )
    envelope_id: str
    source: Source
    account_id: str
    region: str
    collected_at: datetime
    window: TimeWindow | None = None
    execution: dict[str, Any] | None = Field(
        default=None, description="Step Functions DescribeExecution details (collect)."
    )
    traces: list[dict[str, Any]]

    @field_validator("account_id")
    @classmethod
    def _account_id(cls, value: str) -> str:
        if len(value) != 12 or not value.isdigit():
            raise ValueError(f"account_id must be 12 digits, got {value!r}")
        return value

    @field_validator("collected_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("collected_at must carry a time zone (RFC 3339 UTC)")
        return value.astimezone(UTC)

    def to_json(self) -> bytes:
        """Canonical bytes: what is signed, archived raw and replayed.

        Byte for byte `orjson.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True))`,
        without copying the traces through `model_dump`: they are plain JSON values already (as
        BatchGetTraces returned them), so they are serialised as they are and spliced in as the
        last field. Anything else in them (a datetime, a dataclass) takes pydantic's path.
        """
        try:
            traces = orjson.dumps(self.traces, option=_PLAIN_JSON, default=_not_plain)
        except TypeError:
            return orjson.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True))
        head = orjson.dumps(self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"traces"}))
        return head[:-1] + b',"traces":' + traces + b"}"

    @property
    def collected_at_ms(self) -> int:
        return int(self.collected_at.timestamp() * 1000)


def sorted_json(trace: dict[str, Any]) -> bytes:
    """A trace's key-sorted JSON: what its envelope's id hashes (its length is the trace's size)."""
    return orjson.dumps(trace, option=orjson.OPT_SORT_KEYS)


def envelope_id_for(
    account_id: str, region: str, traces: Sequence[dict[str, Any]], serialised: Sequence[bytes] | None = None
) -> str:
    """Same account, region and trace contents ⇒ same id (so duplicates are recognisable).
    `serialised`: the traces' `sorted_json`, when the caller has it already (the packer)."""
    digest = hashlib.sha256()
    digest.update(f"{account_id}\x00{region}\x00".encode())
    for data in serialised if serialised is not None else map(sorted_json, traces):
        digest.update(data)
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def build_envelope(
    *,
    source: Source,
    account_id: str,
    region: str,
    traces: Sequence[dict[str, Any]],
    collected_at: datetime | None = None,
    window: TimeWindow | None = None,
    execution: dict[str, Any] | None = None,
    serialised: Sequence[bytes] | None = None,
    schema: Literal["xraylake.envelope.v1", "xraylake.spans.v1"] = "xraylake.envelope.v1",
) -> Envelope:
    """`serialised`: the `sorted_json` of the traces without ResponseMetadata (as `pack`
    returns them), to hash them without serialising again."""
    clean = [_strip_response_metadata(t) for t in traces]
    return Envelope(
        schema_=schema,
        envelope_id=envelope_id_for(account_id, region, clean, serialised),
        source=source,
        account_id=account_id,
        region=region,
        collected_at=collected_at or datetime.now(UTC),
        window=window,
        execution=execution,
        traces=clean,
    )


def _strip_response_metadata(trace: dict[str, Any]) -> dict[str, Any]:
    if "ResponseMetadata" not in trace:
        return trace
    return {k: v for k, v in trace.items() if k != "ResponseMetadata"}


# ------------------------------------------------------------------ packing


def pack_traces(
    traces: Iterable[dict[str, Any]], collected_at: datetime, target_bytes: int = PACK_TARGET_BYTES
) -> Iterator[list[dict[str, Any]]]:
    """Group traces by partition hour (`tasks.tracetime`), then fill groups up to `target_bytes`.

    Many small traces share an envelope; a trace larger than the target travels alone (and the
    encoder sends it through the claim-check when it is still too big after compression).
    `collected_at` must be the envelopes' own: it decides the hour of traces whose id carries no
    credible time.
    """
    for group, _ in pack(traces, collected_at, target_bytes):
        yield group


def pack(
    traces: Iterable[dict[str, Any]], collected_at: datetime, target_bytes: int = PACK_TARGET_BYTES
) -> Iterator[tuple[list[dict[str, Any]], list[bytes]]]:
    """`pack_traces`, with each group's `sorted_json` of its traces (without ResponseMetadata)
    for `build_envelope(serialised=…)`: one serialisation sizes a trace and feeds its id."""
    by_hour: dict[datetime, list[dict[str, Any]]] = {}
    for trace in traces:
        by_hour.setdefault(trace_partition(trace, collected_at).start, []).append(trace)
    for hour in sorted(by_hour):
        group: list[dict[str, Any]] = []
        serialised: list[bytes] = []
        size = 0
        for trace in by_hour[hour]:
            data = sorted_json(trace)
            trace_size = len(data)  # the size as sent: sorted or not, compact JSON is as long
            if "ResponseMetadata" in trace:  # never in BatchGetTraces' traces; stripped by the id
                data = sorted_json(_strip_response_metadata(trace))
            if group and size + trace_size > target_bytes:
                yield group, serialised
                group, serialised, size = [], [], 0
            group.append(trace)
            serialised.append(data)
            size += trace_size
        if group:
            yield group, serialised


# ------------------------------------------------------------------ signing


SIGNATURE_ATTRIBUTE = "signature"
POINTER_SIGNATURE_ATTRIBUTE = "pointer_signature"
# Prefixed to a pointer before it is signed: no envelope signature can pass for a pointer's.
_POINTER_DOMAIN = b"xraylake.claim-check-pointer.v1\n"


def sign(payload: bytes | bytearray, key: str) -> str:
    """`v1=<hex hmac-sha256>` over the canonical envelope bytes."""
    return "v1=" + hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()


def sign_pointer(body: bytes, key: str) -> str:
    """The `pointer_signature` of a claim-check message body."""
    return sign(_POINTER_DOMAIN + body, key)


def verify(payload: bytes | bytearray, signature: str | None, keys: Sequence[str], what: str = "envelope") -> None:
    """Accept a signature made with any of `keys` (current first, previous during rotation)."""
    if not keys:
        return
    if not signature:
        raise EnvelopeError("signature", f"{what} is not signed")
    if not signature.isascii():
        raise EnvelopeError("signature", f"malformed {what} signature (not ASCII)")
    for key in keys:
        if hmac.compare_digest(sign(payload, key), signature):
            return
    raise EnvelopeError("signature", f"{what} signature does not match any accepted key")


def verify_pointer(body: bytes, signature: str | None, keys: Sequence[str]) -> None:
    """A claim-check pointer's `pointer_signature` (before anything is fetched)."""
    verify(_POINTER_DOMAIN + body, signature, keys, "claim-check pointer")


# ------------------------------------------------------------------ wire encoding

ENCODING_JSON = "json"
ENCODING_GZIP = "gzip+base64"
ENCODING_CLAIM_CHECK = "s3-claim-check"


@dataclass(frozen=True)
class WireMessage:
    """One SQS message: body + attributes. `claim_check` holds bytes still to upload to S3."""

    envelope_id: str
    body: str
    encoding: str
    attributes: dict[str, str]
    claim_check: tuple[PayloadRef, bytes] | None = None

    @property
    def size(self) -> int:
        """Bytes SQS counts: body plus attribute names, types and values."""
        attribute_bytes = sum(len(k) + len("String") + len(v) for k, v in self.attributes.items())
        return len(self.body.encode()) + attribute_bytes


def envelope_partition(envelope: Envelope) -> Partition:
    """The partition of an envelope: its first trace's (the packer keeps one hour per envelope)."""
    if envelope.traces:
        return trace_partition(envelope.traces[0], envelope.collected_at)
    return Partition.of(int(envelope.collected_at.timestamp()))


def payload_key(prefix: str, envelope: Envelope) -> str:
    return (
        f"{prefix}/account_id={envelope.account_id}/region={envelope.region}/"
        f"dt={envelope_partition(envelope).dt}/{envelope.envelope_id}.json.gz"
    )


def encode(
    envelope: Envelope,
    signing_key: str | None,
    claim_check_bucket: str,
    claim_check_prefix: str = "payloads",
    threshold: int = CLAIM_CHECK_THRESHOLD,
) -> WireMessage:
    raw = envelope.to_json()
    attributes = {
        "schema": envelope.schema_,
        "envelope_id": envelope.envelope_id,
        "account_id": envelope.account_id,
        "region": envelope.region,
        "source": envelope.source,
    }
    if signing_key:
        attributes[SIGNATURE_ATTRIBUTE] = sign(raw, signing_key)
    compressed = gzip_canonical(raw)
    encoded = base64.b64encode(compressed).decode()
    if len(raw) <= len(encoded) and len(raw) <= threshold:
        return WireMessage(envelope.envelope_id, raw.decode(), ENCODING_JSON, attributes | {"encoding": ENCODING_JSON})
    if len(encoded) <= threshold:
        return WireMessage(envelope.envelope_id, encoded, ENCODING_GZIP, attributes | {"encoding": ENCODING_GZIP})
    ref = PayloadRef(
        bucket=claim_check_bucket,
        key=payload_key(claim_check_prefix, envelope),
        sha256=hashlib.sha256(compressed).hexdigest(),
        bytes=len(compressed),
    )
    pointer = orjson.dumps(
        {
            "schema": envelope.schema_,
            "envelope_id": envelope.envelope_id,
            "account_id": envelope.account_id,
            "region": envelope.region,
            "payload_ref": ref.model_dump(),
        }
    )
    attributes["encoding"] = ENCODING_CLAIM_CHECK
    if signing_key:
        attributes[POINTER_SIGNATURE_ATTRIBUTE] = sign_pointer(pointer, signing_key)
    return WireMessage(envelope.envelope_id, pointer.decode(), ENCODING_CLAIM_CHECK, attributes, (ref, compressed))


def gzip_canonical(raw: bytes | bytearray) -> bytes:
    """The one gzip of canonical envelope bytes: the wire's, the claim-check's and the raw
    archive's (level 6, mtime 0: the same bytes give the same object)."""
    return gzip.compress(raw, compresslevel=6, mtime=0)


_CANONICAL_GZIP_HEADER = gzip_canonical(b"")[:10]


def is_canonical_gzip(compressed: bytes) -> bool:
    """Whether gzip bytes that inflated cleanly (`gunzip_capped`, nothing after the member) look
    like `gzip_canonical`'s: its header (no name, mtime 0, same flags and OS). The deflate stream
    itself is not recompressed to compare: collectors compress with `gzip_canonical`, and every
    wire payload the consumer keeps is signed (a claim-check's sha256 by its signed pointer)."""
    return compressed[:10] == _CANONICAL_GZIP_HEADER


_INFLATE_STEP = 1024 * 1024


def gunzip_capped(data: bytes, cap: int = MAX_DECOMPRESSED_BYTES) -> bytearray:
    """Decompress gzip, refusing to produce more than `cap` bytes (gzip bombs).

    Inflates a MiB at a time into one growing buffer: a large payload costs its size once, not
    once more for the copy a one-shot `decompress` makes at the end (bench B4, one large envelope).
    """
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    pending = data
    try:
        while not inflater.eof:
            chunk = inflater.decompress(pending, min(_INFLATE_STEP, cap + 1 - len(out)))
            out += chunk
            if len(out) > cap:
                raise EnvelopeError("decompressed-too-large", f"payload inflates past {cap} bytes")
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                break
    except zlib.error as error:
        raise EnvelopeError("bad-gzip", str(error)) from None
    if not inflater.eof:
        raise EnvelopeError("bad-gzip", "truncated gzip stream")
    if inflater.unused_data:  # a second member or trailing bytes: not one canonical gzip
        raise EnvelopeError("bad-gzip", f"{len(inflater.unused_data)} bytes after the gzip stream")
    return out


def parse_pointer(body: str) -> PayloadRef | None:
    """The claim-check pointer of a message body, or None for an inline envelope."""
    if not body.startswith("{") or '"payload_ref"' not in body[:4096]:
        return None
    try:
        data = orjson.loads(body)
        return PayloadRef.model_validate(data["payload_ref"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValidationError) as error:
        raise EnvelopeError("bad-pointer", f"claim-check pointer unreadable: {error}") from None


def check_pointer(ref: PayloadRef, bucket: str, prefix: str, cap: int = MAX_DECOMPRESSED_BYTES) -> None:
    """The checks of a pointer that need nothing fetched: its declared size (`oversize`), then
    its location — the archive bucket, under the payload prefix (`claim-check-location`)."""
    if ref.bytes > cap:
        raise EnvelopeError("oversize", f"claim-check payload of {ref.bytes} bytes exceeds the cap of {cap}")
    if ref.bucket != bucket or not ref.key.startswith(f"{prefix.rstrip('/')}/"):
        raise EnvelopeError(
            "claim-check-location",
            f"pointer names s3://{ref.bucket[:100]}/{ref.key[:200]}, not s3://{bucket}/{prefix.rstrip('/')}/…",
        )


def check_payload(ref: PayloadRef, compressed: bytes) -> None:
    if len(compressed) != ref.bytes or hashlib.sha256(compressed).hexdigest() != ref.sha256:
        raise EnvelopeError("claim-check-mismatch", f"s3://{ref.bucket}/{ref.key} does not match its sha256")


def body_to_raw(body: str, cap: int = MAX_DECOMPRESSED_BYTES) -> bytes | bytearray:
    """An inline body (plain JSON or gzip+base64) to the envelope's canonical JSON bytes."""
    return body_to_wire(body, cap)[0]


def body_to_wire(body: str, cap: int = MAX_DECOMPRESSED_BYTES) -> tuple[bytes | bytearray, bytes | None]:
    """An inline body → (canonical JSON bytes, the wire's gzip of them or None for plain JSON)."""
    # `[` and `"` cannot start base64: such a body is JSON of the wrong shape (load_json names it).
    if body.lstrip()[:1] in ("{", "[", '"'):
        raw = body.encode()
        if len(raw) > cap:
            raise EnvelopeError("oversize", f"envelope of {len(raw)} bytes exceeds {cap}")
        return raw, None
    try:
        compressed = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as error:
        raise EnvelopeError("bad-base64", str(error)) from None
    return gunzip_capped(compressed, cap), compressed


# A JSON string token (possessive: no backtracking, ~12 ms per MB of escaped JSON).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)
OMITTED_PREFIX = "\x00xraylake-omitted:"


def omitted_size(value: Any) -> int | None:
    """The size as sent of a string `load_json` left out (`omit_strings_over`), else None."""
    if isinstance(value, str) and value.startswith(OMITTED_PREFIX):
        with contextlib.suppress(ValueError):
            return int(value[len(OMITTED_PREFIX) :])
    return None


def _omit_long_strings(raw: bytes | bytearray, limit: int) -> bytes | None:
    """`raw` with every JSON string longer than `limit` bytes (as sent, escapes included)
    replaced by a short marker string (`omitted_size` reads it), or None when there is none."""
    pieces: list[bytes | bytearray] = []
    start = 0
    for match in _JSON_STRING.finditer(raw):
        begin, end = match.span()
        if end - begin - 2 > limit:
            pieces += [raw[start:begin], b'"\\u0000xraylake-omitted:%d"' % (end - begin - 2)]
            start = end
    if not pieces:
        return None
    pieces.append(raw[start:])
    return b"".join(pieces)


def load_json(raw: bytes | bytearray, omit_strings_over: int | None = None) -> dict[str, Any]:
    """Parse an envelope's JSON. With `omit_strings_over`, strings longer than that are never
    materialised (the consumer's document limit): a 50 MB segment document would otherwise cost
    its size twice more while parsing (orjson unescapes into a buffer, then copies into a str).
    The tokenizer is exact on valid JSON; on malformed JSON longer than the limit a fault inside
    such a string is not seen here (the signature check, which comes next, still rejects it)."""
    try:
        reduced = None
        if omit_strings_over is not None and len(raw) > omit_strings_over:
            reduced = _omit_long_strings(raw, omit_strings_over)
        data = orjson.loads(raw if reduced is None else reduced)
    except orjson.JSONDecodeError as error:
        raise EnvelopeError("bad-json", str(error)) from None
    if not isinstance(data, dict):
        raise EnvelopeError("bad-json", "envelope is not a JSON object")
    return data


def validate_envelope(data: dict[str, Any]) -> Envelope:
    """A parsed JSON object → validated Envelope (schema version, account id, trace shape)."""
    schema = data.get("schema")
    if schema not in SCHEMAS:
        raise EnvelopeError("unknown-schema", f"schema {schema!r} is not one of {', '.join(SCHEMAS)}")
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise EnvelopeError("invalid-envelope", f"{where}: {first['msg']}") from None
    items = "Segments" if schema == SCHEMA_V1 else "Spans"
    for index, trace in enumerate(envelope.traces):
        if not isinstance(trace.get("Id"), str) or not isinstance(trace.get(items, []), list):
            raise EnvelopeError("invalid-envelope", f"traces[{index}] lacks Id or {items}")
        if schema == SCHEMA_SPANS_V1:
            # Each span is the log event's message as read; a malformed record inside a string is
            # the consumer's per-record rejection, but anything else is not what a reader sends.
            for position, record in enumerate(trace.get("Spans", [])):
                if not isinstance(record, str):
                    raise EnvelopeError(
                        "invalid-envelope",
                        f"traces[{index}].Spans[{position}] is {type(record).__name__}, "
                        "not the log event's message string",
                    )
    return envelope


def parse_envelope(raw: bytes | bytearray) -> Envelope:
    """Canonical bytes → validated Envelope."""
    return validate_envelope(load_json(raw))
