"""The dead-letter queue: list and inspect what was rejected and why, redrive after a fix.

Redrive uses SQS `StartMessageMoveTask` when everything is to be moved and the endpoint supports it
(real SQS; the moto server does not), otherwise receive → send to the source queue → delete, which
also allows moving only the messages with a given reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tasks import queue
from tasks.errors import aws_error_code, classify_aws_error

# Attributes the consumer adds when dead-lettering; stripped again on redrive.
DLQ_ATTRIBUTES = frozenset({"reason", "detail", "original_message_id", "dead_lettered_at"})


@dataclass
class DlqEntry:
    message_id: str
    reason: str
    detail: str
    envelope_id: str
    account_id: str
    receive_count: int
    dead_lettered_at: str
    body_bytes: int

    @classmethod
    def of(cls, message: queue.ReceivedMessage) -> DlqEntry:
        attrs = message.attributes
        return cls(
            message_id=message.message_id,
            # Messages moved by the redrive policy carry no reason of ours: they kept failing.
            reason=attrs.get("reason", "max-receives"),
            detail=attrs.get("detail", ""),
            envelope_id=attrs.get("envelope_id", ""),
            account_id=attrs.get("account_id", ""),
            receive_count=message.receive_count,
            dead_lettered_at=attrs.get("dead_lettered_at", ""),
            body_bytes=len(message.body.encode()),
        )


def _release(sqs: Any, dlq_url: str, messages: list[queue.ReceivedMessage]) -> None:
    """Make received messages visible again at once (with their latest receipt handles)."""
    for message in messages:
        try:
            queue.change_visibility(sqs, dlq_url, [message], 0)
        except Exception as error:
            if aws_error_code(error) != "ReceiptHandleIsInvalid":
                raise


def peek(sqs: Any, dlq_url: str, limit: int = 100) -> list[tuple[DlqEntry, queue.ReceivedMessage]]:
    """Up to `limit` DLQ messages without consuming them (they become visible again at once)."""
    seen: dict[str, tuple[DlqEntry, queue.ReceivedMessage]] = {}
    latest: dict[str, queue.ReceivedMessage] = {}
    empty_polls = 0
    while len(seen) < limit and empty_polls < 2:
        got = queue.receive(sqs, dlq_url, 10, wait_seconds=0, visibility_timeout=5)
        for message in got:
            latest[message.message_id] = message
        fresh = [m for m in got if m.message_id not in seen]
        if not fresh:
            empty_polls += 1
        for message in fresh[: limit - len(seen)]:
            seen[message.message_id] = (DlqEntry.of(message), message)
    _release(sqs, dlq_url, list(latest.values()))
    return list(seen.values())


def summarize(entries: list[DlqEntry]) -> dict[str, int]:
    return dict(Counter(e.reason for e in entries))


@dataclass
class RedriveReport:
    moved: int = 0
    kept: int = 0
    method: str = "receive-send-delete"
    by_reason: dict[str, int] = field(default_factory=dict)
    task_handle: str | None = None


def redrive(
    sqs: Any, dlq_url: str, queue_url: str, reason: str | None = None, limit: int | None = None
) -> RedriveReport:
    """Move DLQ messages (all, or those with `reason`) back to the source queue."""
    report = RedriveReport()
    if reason is None and limit is None:
        try:
            attributes = queue.call(sqs, "get_queue_attributes", QueueUrl=dlq_url, AttributeNames=["QueueArn"])
            handle = queue.call(sqs, "start_message_move_task", SourceArn=attributes["Attributes"]["QueueArn"])[
                "TaskHandle"
            ]
            report.method, report.task_handle = "StartMessageMoveTask", handle
            return report
        except Exception as error:  # moto: not implemented → fall back
            if aws_error_code(error) in {"AccessDenied", "AccessDeniedException"}:
                raise classify_aws_error(error, "StartMessageMoveTask") from error
    by_reason: Counter[str] = Counter()
    seen: set[str] = set()
    kept: dict[str, queue.ReceivedMessage] = {}
    while limit is None or report.moved < limit:
        got = queue.receive(sqs, dlq_url, 10, wait_seconds=0, visibility_timeout=30)
        for message in got:
            if message.message_id in kept:
                kept[message.message_id] = message  # the newest receipt handle
        fresh = [m for m in got if m.message_id not in seen]
        if not fresh:
            break
        for message in fresh:
            seen.add(message.message_id)
            entry = DlqEntry.of(message)
            if (reason is not None and entry.reason != reason) or (limit is not None and report.moved >= limit):
                kept[message.message_id] = message
                report.kept += 1
                continue
            attributes = {k: v for k, v in message.attributes.items() if k not in DLQ_ATTRIBUTES}
            queue.call(
                sqs,
                "send_message",
                QueueUrl=queue_url,
                MessageBody=message.body,
                MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items() if v},
            )
            queue.delete(sqs, dlq_url, [message])
            report.moved += 1
            by_reason[entry.reason] += 1
    _release(sqs, dlq_url, list(kept.values()))
    report.by_reason = dict(by_reason)
    return report
