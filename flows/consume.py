"""Consume the org queue: long-poll, process batches, delete only what every sink accepted.

Modes: `until_empty` (stop after an empty poll — the scheduled deployment), `max_messages`,
`max_seconds` (the long-running variant runs with until_empty=False and a large max_seconds).
Several consumers at once are safe: SQS hands each message to one of them at a time, and every
sink is idempotent (deterministic keys and ids, versioned index writes).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from blocks.config import Config
from flows.observe import emit, human_bytes, run_logger, summary_artifact
from flows.parameters import ConsumeParameters, takes
from tasks import queue
from tasks.aws import log_client
from tasks.consumer import BatchStats, Consumer
from tasks.health import run_row, write_health
from tasks.index import ensure_templates, target_templates
from tasks.organizations import RunConfig


@task(name="consume-batch", timeout_seconds=900, cache_policy=NO_CACHE)
def consume_batch(consumer: Consumer, messages: list[queue.ReceivedMessage], visibility_timeout: int) -> BatchStats:
    sqs, url = consumer.sqs, consumer.config.queue.queue_url
    with queue.VisibilityHeartbeat(
        sqs, url, messages, timeout_seconds=visibility_timeout, every_seconds=max(5.0, visibility_timeout / 3)
    ) as heartbeat:
        stats = consumer.process(messages, on_done=heartbeat.forget)
    run_logger().info(
        "%d messages: %d done, %d traces, %d segments, %d dead-lettered, %d errors",
        stats.received,
        stats.deleted,
        stats.traces,
        stats.segments,
        sum(stats.dead_lettered.values()),
        len(stats.errors),
    )
    return stats


def receive_batch(
    consumer: Consumer, batch_messages: int, wait_seconds: int, visibility_timeout: int
) -> list[queue.ReceivedMessage]:
    """Several receive calls (≤ 10 messages each) until the batch is full or the queue runs dry."""
    messages: list[queue.ReceivedMessage] = []
    while len(messages) < batch_messages:
        got = queue.receive(
            consumer.sqs,
            consumer.config.queue.queue_url,
            min(10, batch_messages - len(messages)),
            wait_seconds if not messages else 0,
            visibility_timeout,
        )
        messages += got
        if len(got) < 10:
            break
    return messages


def run_consumer(
    config: Config,
    *,
    until_empty: bool = True,
    max_messages: int | None = None,
    max_seconds: float | None = None,
    batch_messages: int = 100,
    wait_seconds: int = 20,
    visibility_timeout: int = 300,
    index_prefix: str | None = None,
    use_tasks: bool | None = None,
) -> BatchStats:
    """Drain the queue; each batch is a Prefect task run when called inside a flow run."""
    if use_tasks is None:
        from prefect.context import FlowRunContext

        use_tasks = FlowRunContext.get() is not None
    consumer = Consumer(
        config,
        log_client("s3", config.archive.region),
        log_client("sqs", config.queue.region),
        index_prefix=index_prefix,
    )
    # Templates first: an index created by dynamic mapping would type fields wrongly for good.
    ensure_templates(consumer.opensearch, target_templates(config.opensearch, consumer.index_prefix))
    total = BatchStats()
    started = time.monotonic()
    while True:
        budget = batch_messages if max_messages is None else min(batch_messages, max_messages - total.received)
        if budget <= 0:
            break
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            break
        messages = receive_batch(consumer, budget, wait_seconds, visibility_timeout)
        if not messages:
            if until_empty:
                break
            continue
        if use_tasks:
            stats = consume_batch.with_options(task_run_name=f"consume-batch-{len(messages)}")(
                consumer, messages, visibility_timeout
            )
        else:
            stats = consume_batch.fn(consumer, messages, visibility_timeout)
        total.merge(stats)
    total.stage_seconds["wall"] = time.monotonic() - started
    return total


@flow(name="consume")
@takes(ConsumeParameters)
def consume(params: ConsumeParameters, run: RunConfig) -> State:
    """Drain the org queue into the archive (raw + Parquet) and OpenSearch."""
    config = run.config  # an Organizations roster: the accounts the sweeps collect (cached, no rediscovery)
    stats = run_consumer(config, **params.flow_kwargs())
    data: dict[str, Any] = stats.as_dict()
    for reason, count in stats.dead_lettered.items():
        emit(
            "xraylake.message.dead-lettered",
            f"aws.sqs.{config.queue.dlq_url}",
            {"reason": reason, "count": count},
            **{"xraylake.reason": reason},
        )
    if stats.errors:
        run_logger().warning("consume errors (first %d): %s", len(stats.errors), "; ".join(stats.errors[:5]))
    summary_artifact(
        "xraylake-consume",
        f"consume: {stats.deleted} messages done, {stats.traces} traces, {stats.segments} segments, "
        f"{sum(stats.dead_lettered.values())} dead-lettered",
        [{"metric": k, "value": v} for k, v in data.items() if not isinstance(v, (dict, list))],
        notes=[f"dead-lettered ({r}): {c} message(s)" for r, c in stats.dead_lettered.items()]
        + [f"error: {e}" for e in stats.errors[:10]],
        metrics={
            "messages received": stats.received,
            "messages done (deleted)": stats.deleted,
            "envelopes": stats.envelopes,
            "traces": stats.traces,
            "segments": stats.segments,
            "dead-lettered": sum(stats.dead_lettered.values()),
            "errors": len(stats.errors),
            **({"bytes received": human_bytes(data["bytes"])} if isinstance(data.get("bytes"), int) else {}),
        },
    )
    write_health(
        config,
        "consume",
        [
            run_row(
                traces=stats.traces,
                envelopes=stats.envelopes,
                received=stats.received,
                deleted=stats.deleted,
                dead_lettered=sum(stats.dead_lettered.values()),
                errors=len(stats.errors),
                seconds=stats.stage_seconds.get("wall"),
            )
        ],
    )
    return Completed(message=f"{stats.deleted} messages consumed", data=data)
