"""Replay archived envelopes: back to the org queue (same envelope ids) or straight into the sinks.

`target="queue"` re-sends the raw archive for the consumer; `target="direct"` transforms in-process
and writes the chosen sinks — also the way to re-index into a new index prefix after a mapping
change. `dry_run` only counts. Resumable: each finished partition leaves a checkpoint under
`state/replay/<replay_id>/`, and the same replay run again skips it (`partitions_skipped`);
`force=True` replays those partitions again. An envelope that fails (a sink refused it, or its
archived object is not a readable envelope: corrupt gzip, not an envelope) is counted and named;
the rest still run, its partition gets no checkpoint, and the run ends Failed (`ReplayIncomplete`).
"""

from __future__ import annotations

import hashlib

from prefect import flow
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.states import Completed, Failed, State

from blocks.config import Config
from flows.observe import flow_failed, run_logger, summary_artifact
from flows.parameters import ReplayParameters, takes
from tasks import archive, queue
from tasks import replay as replay_tasks
from tasks.aws import log_client
from tasks.consumer import BatchStats, Consumer
from tasks.envelope import Envelope, encode
from tasks.health import run_row, write_health
from tasks.index import client_for, ensure_templates, target_templates
from tasks.organizations import RunConfig
from tasks.pacing import rate_limiter


def replay_id(params: ReplayParameters) -> str:
    """Same range, accounts, regions, target, sinks and prefix ⇒ same id (and checkpoints)."""
    exclude = {"dry_run", "rate_per_second", "force"}
    return hashlib.sha256(params.model_dump_json(exclude=exclude).encode()).hexdigest()[:16]


def check_index_prefix(config: Config, prefix: str | None) -> str:
    """The prefix to write; refuses one whose read alias already points at other indices."""
    live = config.opensearch.index_prefix
    if not prefix or prefix == live:
        return live
    client = client_for(config.opensearch)
    for kind in ("traces", "segments"):
        alias = f"{prefix}-{kind}"
        if client.indices.exists_alias(name=alias):
            members = list(client.indices.get_alias(name=alias))
            strangers = [m for m in members if not m.startswith(f"{prefix}-{kind}-")]
            if strangers:
                raise ValueError(
                    f"index prefix {prefix!r} collides with alias {alias!r}, which serves {', '.join(strangers)}"
                )
        if client.indices.exists(index=alias) and not client.indices.exists_alias(name=alias):
            raise ValueError(f"index prefix {prefix!r} collides with the existing index {alias!r}")
    return prefix


@flow(name="replay")
@takes(ReplayParameters)
def replay(params: ReplayParameters, run: RunConfig) -> State:
    """Re-send or re-ingest archived envelopes of a time range."""
    logger = run_logger()
    start, end = params.start, params.end  # checked and made UTC by ReplayParameters
    config = run.config
    targets = params.targets(config)
    s3 = log_client("s3", config.archive.region)
    store = config.archive
    probe = s3.list_objects_v2(Bucket=store.bucket, Prefix=f"{store.raw_prefix}/", MaxKeys=1)
    if not probe.get("KeyCount"):
        raise ValueError(f"the archive s3://{store.bucket}/{store.raw_prefix}/ is empty or does not exist")
    prefix = check_index_prefix(config, params.index_prefix) if params.target == "direct" else None
    parts = replay_tasks.partitions(targets, start, end)
    run_key = replay_id(params)
    checkpoint = f"{store.state_prefix}/replay/{run_key}/"
    # `force` replays finished partitions again (their checkpoints are rewritten as they finish)
    done = (
        set()
        if params.dry_run or params.force
        else {o["Key"].rsplit("/", 1)[-1] for o in archive.list_keys(s3, store.bucket, checkpoint)}
    )
    limiter = rate_limiter(params.rate_per_second)  # None: as fast as the sinks go
    sqs = log_client("sqs", config.queue.region)
    consumer = None
    if params.target == "direct" and not params.dry_run:
        consumer = Consumer(config, s3, sqs, index_prefix=prefix)
        ensure_templates(consumer.opensearch, target_templates(config.opensearch, prefix))
    signing_key = config.signing_keys[0].get_secret_value() if config.signing_keys else None
    totals = {
        "partitions": len(parts),
        "partitions_skipped": 0,
        "objects": 0,
        "traces": 0,
        "sent": 0,
        "failed_envelopes": 0,
    }
    stats = BatchStats()
    progress = _progress(len(parts))

    def flush(items: list[tuple[Envelope, bytes]]) -> int:
        """Send or ingest one chunk; returns how many envelopes of it failed."""
        if params.dry_run or not items:
            return 0
        if params.target == "queue":
            messages = []
            for envelope, _ in items:
                message = encode(envelope, signing_key, store.bucket, store.payload_prefix)
                if message.claim_check:
                    archive.put_claim_check(s3, *message.claim_check)
                messages.append(message)
            for batch in queue.plan_batches(messages):
                if limiter is not None:
                    limiter.acquire(len(batch), debt=True)
                totals["sent"] += queue.send_messages(sqs, config.queue.queue_url, batch).sent
            return 0
        assert consumer is not None
        if limiter is not None:
            limiter.acquire(len(items), debt=True)
        failed = consumer.ingest(items, stats, frozenset(params.sinks))
        totals["sent"] += len(items) - len(failed)
        return len(failed)

    for number, part in enumerate(parts, 1):
        marker = f"{part.account_id}-{part.region}-{part.hour:%Y%m%dT%H}.done"
        if marker in done:
            totals["partitions_skipped"] += 1
            continue
        keys = replay_tasks.list_partition(s3, store, part)
        partition_failed = 0
        unreadable: list[replay_tasks.Unreadable] = []

        # Chunk by chunk (tasks.replay.iter_chunks); the checkpoint only when every chunk succeeded
        # and every object was a readable envelope (one that is not is counted and named, and the
        # rest of the partition and the run go on).
        for chunk in replay_tasks.iter_chunks(s3, store, keys, unreadable=unreadable):
            totals["objects"] += len(chunk)
            totals["traces"] += sum(len(envelope.traces) for envelope, _ in chunk)
            partition_failed += flush(chunk)
        if unreadable:
            totals["objects"] += len(unreadable)
            partition_failed += len(unreadable)
            stats.errors += [str(u) for u in unreadable]
        if partition_failed:
            totals["failed_envelopes"] += partition_failed
            logger.error("%s: %d envelopes failed: %s", part.label, partition_failed, stats.errors[-3:])
            continue  # no checkpoint: the next run retries this partition
        if not params.dry_run:
            s3.put_object(Bucket=store.bucket, Key=checkpoint + marker, Body=str(len(keys)).encode())
        if progress is not None:
            update_progress_artifact(progress, progress=100.0 * number / max(1, len(parts)))
    data = {
        "replay_id": run_key,
        "target": params.target,
        "dry_run": params.dry_run,
        "force": params.force,
        "index_prefix": prefix,
    } | totals
    if params.target == "direct":
        data["documents_indexed"] = stats.documents_indexed
        data["documents_stale"] = stats.documents_stale
    if params.dry_run:
        headline = f"would replay {totals['objects']} envelopes ({totals['traces']} traces) to {params.target}"
    else:
        headline = (
            f"{totals['sent']} of {totals['objects']} envelopes ({totals['traces']} traces) replayed to {params.target}"
        )
    summary_artifact(
        "xraylake-replay",
        f"replay: {headline}",
        [{"metric": k, "value": v} for k, v in data.items()],
        notes=[f"{totals['failed_envelopes']} envelopes failed: {'; '.join(stats.errors[-3:])}"]
        if totals["failed_envelopes"]
        else [],
        metrics={
            "range": f"{start.isoformat()} to {end.isoformat()}",
            "partitions": totals["partitions"],
            "partitions skipped (done earlier)": totals["partitions_skipped"],
            "envelopes in the archive": totals["objects"],
            "traces": totals["traces"],
            "envelopes sent" if params.target == "queue" else "envelopes ingested": totals["sent"],
            "failed envelopes": totals["failed_envelopes"],
        },
    )
    write_health(
        config,
        "replay",
        [
            run_row(
                traces=totals["traces"],
                envelopes=totals["sent"],
                errors=totals["failed_envelopes"],
                target=params.target,
                dry_run=params.dry_run,
            )
        ],
    )
    if totals["failed_envelopes"]:
        failure = f"{totals['failed_envelopes']} envelopes failed: {'; '.join(stats.errors[-3:])}"
        flow_failed("replay", "ReplayIncomplete", failure)
        last = stats.errors[-1][:200] if stats.errors else "see the log"
        return Failed(
            message=f"{totals['failed_envelopes']} envelopes failed (last: {last}); "
            "their partitions were not checkpointed: run again to resume",
            data=data,
        )
    message = headline if params.dry_run else f"{totals['sent']} envelopes replayed"
    if totals["partitions_skipped"]:
        message += (
            f"; {totals['partitions_skipped']} of {totals['partitions']} partitions skipped, "
            "already replayed by an earlier run of this replay (force=True replays them again)"
        )
    return Completed(message=message, data=data)


def _progress(total: int):  # type: ignore[no-untyped-def]
    try:
        return create_progress_artifact(progress=0.0, key="xraylake-replay-progress", description=f"{total} partitions")
    except Exception:
        return None
