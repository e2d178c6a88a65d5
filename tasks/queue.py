"""The org SQS queue: size-aware batch send, long-poll receive, delete, visibility, dead-lettering.

Pure batch planning (`plan_batches`) is separate from the thin boto3 calls. SQS clients do not
retry inside botocore (`tasks.retrying.boto_config`): every call here is retried by a
`tasks.retrying` policy instead (SendMessageBatch 6 attempts, the others 3).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.envelope import POINTER_SIGNATURE_ATTRIBUTE, SIGNATURE_ATTRIBUTE, SQS_MAX_MESSAGE_BYTES, WireMessage
from tasks.errors import TransientError, classify_aws_error
from tasks.retrying import SQS_CALL, SQS_SEND, RetryPolicy

MAX_BATCH_ENTRIES = 10
BATCH_BYTE_BUDGET = SQS_MAX_MESSAGE_BYTES - 8 * 1024  # headroom for entry ids and encoding
SEND_ATTEMPTS = SQS_SEND.attempts
REDRIVE_ATTRIBUTES = (SIGNATURE_ATTRIBUTE, POINTER_SIGNATURE_ATTRIBUTE, "account_id", "envelope_id", "encoding")


def plan_batches(messages: Sequence[WireMessage], budget: int = BATCH_BYTE_BUDGET) -> Iterator[list[WireMessage]]:
    """Groups of ≤ 10 messages whose summed size stays under the SQS batch limit."""
    batch: list[WireMessage] = []
    size = 0
    for message in messages:
        if message.size > budget:
            raise ValueError(f"message {message.envelope_id} of {message.size} bytes exceeds the SQS limit")
        if batch and (len(batch) == MAX_BATCH_ENTRIES or size + message.size > budget):
            yield batch
            batch, size = [], 0
        batch.append(message)
        size += message.size
    if batch:
        yield batch


def _attributes(values: dict[str, str]) -> dict[str, dict[str, str]]:
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items() if value}


@dataclass
class SendReport:
    sent: int = 0
    batches: int = 0
    bytes: int = 0
    entry_retries: int = 0
    message_ids: dict[str, str] = field(default_factory=dict)


class _EntriesFailed(TransientError):
    """SQS answered, but listed some entries as `Failed` (not sender faults): send those again."""


def send_messages(
    sqs: Any, queue_url: str, messages: Sequence[WireMessage], policy: RetryPolicy = SQS_SEND
) -> SendReport:
    """Send every message; a failing call and per-entry `Failed` entries are retried by `policy`
    (`SQS_SEND`: 6 attempts per batch, full-jitter backoff; the SQS client itself does not retry).

    Raises TransientError if some entries still fail after the retries: the caller must then not
    advance its watermark (what was accepted stays accepted; duplicates are harmless).
    """
    report = SendReport()
    for batch in plan_batches(messages):
        pending = {str(i): message for i, message in enumerate(batch)}

        def attempt(pending: dict[str, WireMessage] = pending) -> None:
            entries = [
                {"Id": entry_id, "MessageBody": m.body, "MessageAttributes": _attributes(m.attributes)}
                for entry_id, m in pending.items()
            ]
            try:
                response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            except Exception as error:
                raise classify_aws_error(error, "SendMessageBatch") from error
            for ok in response.get("Successful", []):
                message = pending.pop(ok["Id"])
                report.sent += 1
                report.bytes += message.size
                report.message_ids[message.envelope_id] = ok["MessageId"]
            if not pending:
                return
            failed = response.get("Failed", [])
            report.entry_retries += len(failed)
            sender_faults = [f for f in failed if f.get("SenderFault")]
            if sender_faults:
                raise classify_aws_error(
                    RuntimeError(f"SQS rejected entries: {sender_faults[0].get('Message')}"),
                    "SendMessageBatch",
                )
            raise _EntriesFailed(f"SendMessageBatch: {len(pending)} of {len(entries)} entries failed")

        try:
            policy.run("SendMessageBatch", attempt)
        except _EntriesFailed as error:
            raise TransientError(f"{len(pending)} messages still failing after {policy.attempts} attempts") from error
        report.batches += 1
    return report


def call(sqs: Any, operation: str, **params: Any) -> Any:
    """One SQS call retried by `SQS_CALL` (the client itself does not retry: see tasks.retrying)."""
    method = getattr(sqs, operation)
    return SQS_CALL.run("".join(part.title() for part in operation.split("_")), lambda: method(**params))


@dataclass(frozen=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str]
    system: dict[str, str]

    @property
    def receive_count(self) -> int:
        return int(self.system.get("ApproximateReceiveCount", "1"))


def receive(
    sqs: Any,
    queue_url: str,
    max_messages: int = 10,
    wait_seconds: int = 20,
    visibility_timeout: int | None = None,
) -> list[ReceivedMessage]:
    kwargs: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MaxNumberOfMessages": max(1, min(10, max_messages)),
        "WaitTimeSeconds": max(0, min(20, wait_seconds)),
        "MessageAttributeNames": ["All"],
        "MessageSystemAttributeNames": ["All"],
    }
    if visibility_timeout is not None:
        kwargs["VisibilityTimeout"] = visibility_timeout
    try:
        response = call(sqs, "receive_message", **kwargs)
    except Exception as error:
        raise classify_aws_error(error, "ReceiveMessage") from error
    return [
        ReceivedMessage(
            message_id=m["MessageId"],
            receipt_handle=m["ReceiptHandle"],
            body=m.get("Body", ""),
            attributes={k: v.get("StringValue", "") for k, v in m.get("MessageAttributes", {}).items()},
            system=m.get("Attributes", {}),
        )
        for m in response.get("Messages", [])
    ]


def delete(sqs: Any, queue_url: str, messages: Iterable[ReceivedMessage]) -> list[str]:
    """Delete in batches of 10; returns the ids that failed (they will be received again)."""
    failed: list[str] = []
    items = list(messages)
    for start in range(0, len(items), MAX_BATCH_ENTRIES):
        chunk = items[start : start + MAX_BATCH_ENTRIES]
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)]
        try:
            response = call(sqs, "delete_message_batch", QueueUrl=queue_url, Entries=entries)
        except Exception as error:
            raise classify_aws_error(error, "DeleteMessageBatch") from error
        failed += [chunk[int(f["Id"])].message_id for f in response.get("Failed", [])]
    return failed


def change_visibility(sqs: Any, queue_url: str, messages: Iterable[ReceivedMessage], seconds: int) -> None:
    items = list(messages)
    for start in range(0, len(items), MAX_BATCH_ENTRIES):
        chunk = items[start : start + MAX_BATCH_ENTRIES]
        entries = [
            {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": seconds} for i, m in enumerate(chunk)
        ]
        call(sqs, "change_message_visibility_batch", QueueUrl=queue_url, Entries=entries)


def dead_letter(sqs: Any, dlq_url: str, message: ReceivedMessage, reason: str, detail: str) -> None:
    """Copy a poison message to the DLQ with its reason (the caller then deletes the original)."""
    attributes = dict(message.attributes) | {
        "reason": reason,
        "detail": detail[:1000],
        "original_message_id": message.message_id,
        "dead_lettered_at": str(int(time.time())),
    }
    # Keep at most 10 attributes (the SQS limit): ours first, then what the consumer checks when
    # the message is redriven (both signatures: a claim-check message carries 8 attributes).
    ordered = {k: attributes[k] for k in ("reason", "detail", "original_message_id", "dead_lettered_at")}
    ordered |= {k: attributes[k] for k in REDRIVE_ATTRIBUTES if k in attributes}
    for k, v in attributes.items():
        if len(ordered) >= 10:
            break
        ordered.setdefault(k, v)
    try:
        call(
            sqs, "send_message",
            QueueUrl=dlq_url, MessageBody=message.body or "(empty)", MessageAttributes=_attributes(ordered),
        )  # fmt: skip
    except Exception as error:
        raise classify_aws_error(error, "SendMessage to DLQ") from error


class VisibilityHeartbeat:
    """Extends the visibility of in-flight messages while a long batch is processed."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        messages: Sequence[ReceivedMessage],
        timeout_seconds: int = 120,
        every_seconds: float = 40.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._sqs, self._queue_url, self._messages = sqs, queue_url, list(messages)
        self._timeout, self._every, self._on_error = timeout_seconds, every_seconds, on_error
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sqs-visibility-heartbeat", daemon=True)

    def forget(self, messages: Sequence[ReceivedMessage]) -> None:
        """Stop extending messages that are done (deleted or dead-lettered)."""
        gone = {m.message_id for m in messages}
        with self._lock:
            self._messages = [m for m in self._messages if m.message_id not in gone]

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            with self._lock:
                messages = list(self._messages)
            if not messages:
                continue
            try:
                change_visibility(self._sqs, self._queue_url, messages, self._timeout)
            except Exception as error:  # a missed beat only risks a duplicate delivery
                if self._on_error:
                    self._on_error(error)

    def __enter__(self) -> VisibilityHeartbeat:
        if self._messages:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def queue_depth(sqs: Any, queue_url: str) -> dict[str, int]:
    attrs = call(
        sqs,
        "get_queue_attributes",
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return {
        "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
    }
