"""A poison corpus: messages that can never be processed, each with the DLQ reason it must get.

`build_corpus(config)` returns `Poison` items (body, attributes, how to send, reason); claim-check
cases also put (or tamper with) their S3 object. `send_corpus` sends them to the org queue, each
the way an attacker or a broken collector would: the spoofed sender uses another member account's
own credentials, so SQS records that account as the real `SenderId` (not in the default corpus:
moto 5.2.5 keeps queues per account, so another account cannot reach the log account's queue).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
import orjson

from blocks.config import Config
from tasks import envelope as env
from tasks.aws import MemberSessions
from tests.fault import helpers as h


@dataclass
class Poison:
    name: str
    reason: str
    body: str
    attributes: dict[str, str] = field(default_factory=dict)
    sender_account: str | None = None  # send with this member account's credentials


def _trace(tag: str) -> dict[str, Any]:
    trace_id = h.trace_id_for(tag, "poison", 0, 1.8e9)
    doc = h.trace_documents(trace_id, "000000000000")[0]
    return {"Id": trace_id, "Segments": [{"Id": doc["id"], "Document": h.dumps(doc)}]}


def build_corpus(config: Config) -> list[Poison]:
    key = config.signing_keys[0].get_secret_value()
    bucket = config.archive.bucket
    account = config.roster.accounts[0].account_id
    other = config.roster.accounts[1].account_id
    s3 = boto3.client("s3")

    def envelope(tag: str, account_id: str = account) -> env.Envelope:
        return env.build_envelope(source="sweep", account_id=account_id, region=h.REGION, traces=[_trace(tag)])

    def signed(data: dict[str, Any]) -> tuple[str, dict[str, str]]:
        raw = orjson.dumps(data)
        return raw.decode(), {"signature": env.sign(raw, key)}

    def wire(e: env.Envelope, signing_key: str | None = key) -> env.WireMessage:
        return env.encode(e, signing_key, bucket)

    valid = orjson.loads(envelope("valid").to_json())
    items = [
        Poison("bad JSON", "bad-json", "{not json"),
        Poison("bad base64", "bad-base64", "!!!not-base64!!!"),
        Poison("bad gzip", "bad-gzip", base64.b64encode(b"not gzip at all").decode()),
        Poison("truncated gzip", "bad-gzip", base64.b64encode(gzip.compress(b"{}" * 1000)[:-12]).decode()),
        Poison(
            "gzip bomb (80 MiB of zeros)",
            "decompressed-too-large",
            base64.b64encode(gzip.compress(b"\0" * (80 * 1024 * 1024))).decode(),
        ),
        # not `{…}`: read as gzip+base64, which it is not
        Poison("JSON array", "bad-json", *signed([valid])),  # type: ignore[arg-type]
        Poison("wrong schema version", "unknown-schema", *signed(valid | {"schema": "xraylake.envelope.v0"})),
        Poison("missing traces", "invalid-envelope", *signed({k: v for k, v in valid.items() if k != "traces"})),
        Poison("unknown account", "unknown-account", *signed(valid | {"account_id": "999999999999"})),
        Poison(
            "account attribute spoofed",
            "spoofed-sender",
            signed(valid)[0],
            signed(valid)[1] | {"account_id": other},
        ),
    ]
    forged = wire(envelope("forged"), "not-the-key")
    items.append(Poison("forged signature", "signature", forged.body, forged.attributes))
    unsigned = wire(envelope("unsigned"), None)
    items.append(Poison("missing signature", "signature", unsigned.body, unsigned.attributes))
    altered = wire(envelope("altered"))
    tampered_body = orjson.loads(env.body_to_raw(altered.body)) | {"region": "eu-west-1"}
    items.append(Poison("signed, then altered", "signature", orjson.dumps(tampered_body).decode(), altered.attributes))

    def signed_pointer(data: dict[str, Any]) -> tuple[str, dict[str, str]]:
        body = orjson.dumps(data)
        return body.decode(), {"pointer_signature": env.sign_pointer(body, key)}

    pointer = {"schema": env.SCHEMA_V1, "envelope_id": "e", "account_id": account, "region": h.REGION}
    ref = {"bucket": bucket, "key": "payloads/missing.json.gz", "sha256": "0" * 64, "bytes": 10}
    missing = pointer | {"payload_ref": ref}
    items.append(Poison("claim-check object missing", "claim-check-missing", *signed_pointer(missing)))
    items.append(Poison("claim-check pointer unsigned", "signature", orjson.dumps(missing).decode()))
    items.append(
        Poison(
            "claim-check pointer to another bucket",
            "claim-check-location",
            *signed_pointer(pointer | {"payload_ref": ref | {"bucket": f"{bucket}-elsewhere"}}),
        )
    )
    real = envelope("claim-check")
    compressed = gzip.compress(real.to_json(), mtime=0)
    good_ref: dict[str, Any] = {
        "bucket": bucket,
        "key": "payloads/tampered.json.gz",
        "sha256": hashlib.sha256(compressed).hexdigest(),
        "bytes": len(compressed),
    }
    s3.put_object(Bucket=bucket, Key=good_ref["key"], Body=compressed[:-1] + bytes([compressed[-1] ^ 1]))
    tampered, tampered_attributes = signed_pointer(pointer | {"payload_ref": good_ref})
    items.append(
        Poison(
            "claim-check object tampered",
            "claim-check-mismatch",
            tampered,
            tampered_attributes | {"signature": env.sign(real.to_json(), key)},
        )
    )
    items.append(
        Poison(
            "claim-check pointer malformed",
            "bad-pointer",
            orjson.dumps(pointer | {"payload_ref": {"bucket": bucket}}).decode(),
        )
    )
    items.append(
        Poison(
            "claim-check payload oversize",
            "oversize",
            orjson.dumps(pointer | {"payload_ref": ref | {"bytes": 10**12}}).decode(),
        )
    )
    return items


def expected_reasons(items: Sequence[Poison]) -> dict[str, int]:
    return dict(Counter(item.reason for item in items))


def send_corpus(config: Config, items: Sequence[Poison]) -> None:
    sessions = MemberSessions(config.roster)
    default = boto3.client("sqs")
    for item in items:
        client = sessions.client(item.sender_account, h.REGION, "sqs") if item.sender_account else default
        client.send_message(
            QueueUrl=config.queue.queue_url,
            MessageBody=item.body,
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in item.attributes.items() if v},
        )
