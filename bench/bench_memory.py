"""B4 memory: peak RSS of consume and of replay (direct) at 10k, 100k (and 1M) segments.

The parent process prepares each backlog (generated traffic of 4 accounts, sent to a queue of
its own exactly as a sweep sends it) and then starts one child process per (size, job), so
each peak RSS belongs to that job alone:

- consume: `flows.consume.receive_batch` + `consume_batch` until the queue is empty (batches of
  100 messages; `describe_executions=False` as in B2);
- commit (after consume, the committer's own process, issue 21): what one run of the `commit`
  flow does (`flows.commit.commit_table_task` for both tables, without the Prefect run) over the
  Parquet files the consume child left pending: pyiceberg and its SQL catalog are imported here,
  never in the consume child (`heavy_modules_loaded` shows it);
- replay: the data path of `flows.replay.replay(target="direct", sinks=[index, parquet])` — its
  task functions (`tasks.replay.partitions`, `list_partition`, `iter_chunks`, `Consumer.ingest`)
  over the raw archive the consume child wrote, without the Prefect run around it.

The child reports its own high-water mark (VmHWM: `ru_maxrss` would include the parent's RSS at
fork time, since Linux keeps it across exec); RUSAGE_CHILDREN is recorded for reference only.
Memory of consume is bounded by one ingest chunk (`tasks.consumer.CHUNK_BYTES` of decoded JSON,
about two envelopes packed to ~512 KB), not by the batch or the backlog: the 100k backlog is
also consumed with 20-message batches. About 200 MB of the peak is the interpreter with its
imports (prefect, pyarrow.dataset, which loads pandas, boto3, opensearch-py), reported as
`rss_after_imports_mb`. Baseline: the 10k run. Target: flat, ≤ 300 MB.
1M segments are consumed only with --million or --million-only (about an hour in the sandbox:
the in-memory OpenSearch indexes ~2,000 documents/s, 1M segments are ~2.3M documents);
--million-only writes `bench_memory_1m.json` with the 10k baseline measured in the same run;
--consume-commit-only consumes and commits 10k and 100k segments, nothing else
(`bench_memory_committer.json`: B4's consumer beside the committer's process).
One large document (issue 15.5): a single 50 MB segment document (a generated segment with a
50 MB `metadata` object, as an export of an instrumented batch job might hold; X-Ray itself caps
segments at 64 kB) enters through the importer (`tasks.importer.parse_files` on a file, then the
collector's packing and encoding: a claim-check), and one consume child takes it. Measured twice,
side by side: with the consumer's default document limit (`tasks.documents.MAX_DOCUMENT_BYTES`:
the document stays in the raw archive only) and with the limit lifted (`--max-document-bytes`,
the behaviour before the limit: parsed, redacted, transformed, its text in Parquet). Target
≤ 300 MB. `--large-document-only` runs just this case (results: `bench_memory_large.json`).
The in-memory OpenSearch itself cannot hold 1M segments: it keeps ~25 KB of RSS per document, so
~2.3M documents would need ~55 GB on this 24 GB machine (a first attempt had reached 13 GB at
477k documents). During the 1M run the consume loop therefore deletes the xray and span indices
between batches once they pass JANITOR_DOCUMENTS (`IndexJanitor`); the next bulk request
recreates them from the templates. The consumer's code path is unchanged; the documents it indexed, and any it
failed to (a bulk item racing a deletion), are reported with the run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import common
import orjson

SEGMENTS_PER_TRACE = 11.0  # generated traffic's mean (measured by B1's workload)
JANITOR_DOCUMENTS = 150_000  # ~4 GB of the in-memory OpenSearch's RSS (freed memory is reused)
JANITOR_INDICES = "xray-*,otel-v1-apm-span-*"


class IndexJanitor:
    """Deletes the consumer's indices whenever they hold more than `limit` documents, so the
    in-memory OpenSearch server stays within the machine's memory during the 1M run. Called by
    the consume loop between batches: osmem-server 0.1.6 hung (both requests waiting, no CPU) when
    a `_count` from another thread met the consumer's bulk request."""

    def __init__(self, client: Any, limit: int) -> None:
        self.client = client
        self.limit = limit
        self.deletions = 0
        self.documents_deleted = 0

    def __call__(self) -> None:
        count = int(self.client.count(index=JANITOR_INDICES)["count"])
        if count > self.limit:
            self.client.indices.delete(index=JANITOR_INDICES)
            self.deletions += 1
            self.documents_deleted += count

    def report(self) -> dict[str, Any]:
        return {"limit_documents": self.limit, "deletions": self.deletions, "documents_deleted": self.documents_deleted}


def child(
    job: str,
    config_path: str,
    batch: int,
    chunk_bytes: int | None,
    janitor_documents: int | None,
    max_document_bytes: int | None = None,
) -> None:
    from blocks.config import load_config

    config = load_config(config_path)
    baseline = common.peak_rss_mb()
    if job == "commit":  # the committer's process: the commit flow's module and pyiceberg's catalogs
        import pyiceberg.catalog.sql
        import pyiceberg.table  # noqa: F401

        import flows.commit
    else:
        import flows.consume  # noqa: F401 (imports counted in the baseline)
        import tasks.replay  # noqa: F401

    after_imports = common.peak_rss_mb()
    started = time.perf_counter()
    if job == "consume":
        out = consume(config, batch, chunk_bytes, janitor_documents, max_document_bytes)
    elif job == "commit":
        out = commit_pending(config)
    else:
        out = replay_direct(config)
    out.update(
        job=job,
        seconds=round(time.perf_counter() - started, 2),
        rss_start_mb=round(baseline, 1),
        rss_after_imports_mb=round(after_imports, 1),
        peak_rss_mb=round(common.peak_rss_mb(), 1),
        heavy_modules_loaded=[m for m in ("pandas", "duckdb", "pyarrow.dataset", "pyiceberg") if m in sys.modules],
    )
    print(json.dumps(out))


def consume(
    config: Any,
    batch: int,
    chunk_bytes: int | None,
    janitor_documents: int | None,
    max_document_bytes: int | None = None,
) -> dict[str, Any]:
    from flows.consume import consume_batch, receive_batch
    from tasks.aws import log_client
    from tasks.consumer import CHUNK_BYTES, BatchStats, Consumer
    from tasks.documents import DOCUMENT_BUDGET_BYTES, MAX_DOCUMENT_BYTES
    from tasks.index import ensure_templates
    from tasks.mappings import index_templates

    consumer = Consumer(
        config,
        log_client("s3", config.archive.region),
        log_client("sqs", config.queue.region),
        describe_executions=False,
        chunk_bytes=chunk_bytes or CHUNK_BYTES,
        max_document_bytes=max_document_bytes or MAX_DOCUMENT_BYTES,
        document_budget_bytes=max(max_document_bytes or 0, DOCUMENT_BUDGET_BYTES),
    )
    ensure_templates(consumer.opensearch, index_templates(consumer.index_prefix))
    total = BatchStats()
    janitor = IndexJanitor(consumer.opensearch, janitor_documents) if janitor_documents else None
    while True:
        messages = receive_batch(consumer, batch, 1, 600)
        if not messages:
            break
        total.merge(consume_batch.fn(consumer, messages, 600))
        if janitor:
            janitor()
    return {
        **({"index_janitor": janitor.report()} if janitor else {}),
        "segments": total.segments,
        "traces": total.traces,
        "messages": total.deleted,
        "batch_messages": batch,
        "chunk_bytes": consumer.chunk_bytes,
        "parquet_files": total.parquet_files,
        "documents_indexed": total.documents_indexed,
        "documents_failed": total.documents_failed,
        "dead_lettered": sum(total.dead_lettered.values()),
        "left_for_retry": total.left_for_retry,
        "max_document_bytes": consumer.max_document_bytes,
        "transform_problems": total.transform_problems,
        "raw_objects": total.raw_objects,
        "errors": total.errors[:3],
    }


def commit_pending(config: Any) -> dict[str, Any]:
    """What one run of the `commit` flow does, without the Prefect run around it: every pending
    Parquet file the consume child wrote is appended to its Iceberg table (default batch sizes)."""
    from flows.commit import commit_table_task, totals

    results = [commit_table_task.fn(config, table, None) for table in ("traces", "segments")]
    return {"tables": [r.as_row() for r in results], **totals(results)}


def replay_direct(config: Any) -> dict[str, Any]:
    from tasks import replay as replay_tasks
    from tasks.aws import log_client
    from tasks.consumer import BatchStats, Consumer

    s3 = log_client("s3", config.archive.region)
    consumer = Consumer(
        config, s3, log_client("sqs", config.queue.region), index_prefix="replay", describe_executions=False
    )
    from tasks.index import ensure_templates
    from tasks.mappings import index_templates

    ensure_templates(consumer.opensearch, index_templates("replay"))
    now = datetime.now(UTC)
    start, end = replay_tasks.validate_range(now - timedelta(days=3), now)
    targets = [(a.account_id, list(a.regions)) for a in config.roster.accounts]
    stats = BatchStats()
    largest = 0
    for part in replay_tasks.partitions(targets, start, end):
        keys = replay_tasks.list_partition(s3, config.archive, part)
        segments = 0
        for chunk in replay_tasks.iter_chunks(s3, config.archive, keys):
            segments += sum(len(t["Segments"]) for envelope, _ in chunk for t in envelope.traces)
            consumer.ingest(chunk, stats, frozenset({"index", "parquet"}))
        largest = max(largest, segments)
    return {
        "segments": stats.segments,
        "traces": stats.traces,
        "envelopes": stats.envelopes,
        "largest_partition_segments": largest,
        "errors": stats.errors[:3],
    }


def run_child(
    job: str,
    config_path: str,
    batch: int = 100,
    chunk_bytes: int | None = None,
    janitor_documents: int | None = None,
    max_document_bytes: int | None = None,
) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    options = ["--chunk-bytes", str(chunk_bytes)] if chunk_bytes else []
    options += ["--janitor-documents", str(janitor_documents)] if janitor_documents else []
    options += ["--max-document-bytes", str(max_document_bytes)] if max_document_bytes else []
    process = subprocess.run(
        [sys.executable, __file__, "--child", job, "--config", config_path, "--batch", str(batch), *options],
        capture_output=True,
        text=True,
        check=False,
        cwd=common.ROOT,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if process.returncode != 0:
        raise RuntimeError(f"{job} child failed: {process.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(process.stdout.strip().splitlines()[-1])
    result["rusage_children_max_mb"] = round(after, 1) if after > before else None
    return result


def measure(
    base: Any,
    segments: int,
    batch: int = 100,
    replay: bool = True,
    chunk_bytes: int | None = None,
    janitor_documents: int | None = None,
    commit: bool = True,
) -> dict[str, Any]:
    from tasks import collector as col

    accounts = common.member_accounts(4, prefix=f"05{len(str(segments))}")
    per_account = max(10, round(segments / SEGMENTS_PER_TRACE / len(accounts)))
    with common.fresh_opensearch(common.fresh_sinks(common.roster_of(base, accounts), uuid.uuid4().hex[:8])) as config:
        collector = col.Collector.from_config(config)
        sent = 0
        traces = common.generated_traces(accounts, per_account, hours_back=6.0, now=time.time())
        for account_id, account_traces in traces.items():
            envelopes = col.envelopes_for(
                account_traces, source="sweep", account_id=account_id, region="us-east-1", redaction=collector.redaction
            )
            sent += col.send_envelopes(collector, envelopes)[1].sent
        del traces
        common.log(f"{segments} segments: {sent} messages queued")
        with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as handle:
            handle.write(config.to_json())
        try:
            consumed = run_child("consume", handle.name, batch, chunk_bytes, janitor_documents)
            common.log(f"consume: {consumed['segments']} segments, peak {consumed['peak_rss_mb']} MB")
            committed = None
            if commit:
                committed = run_child("commit", handle.name)
                common.log(f"commit: {committed['committed_rows']} rows, peak {committed['peak_rss_mb']} MB")
            replayed = None
            if replay:
                replayed = run_child("replay", handle.name)
                common.log(f"replay: {replayed['segments']} segments, peak {replayed['peak_rss_mb']} MB")
        finally:
            os.unlink(handle.name)
    return {
        "target_segments": segments,
        "batch_messages": batch,
        "messages": sent,
        "consume": consumed,
        "commit": committed,
        "replay": replayed,
    }


def large_document(megabytes: float) -> dict[str, Any]:
    """One segment document of about `megabytes` MB: a generated root segment (its subsegments
    included) given a large `metadata` object, a list of records with many small values."""
    accounts = common.member_accounts(1, prefix="0599")
    trace = next(iter(common.generated_traces(accounts, 1, now=time.time(), hours_back=1.0).values()))[0]
    document: dict[str, Any] = orjson.loads(trace["Segments"][0]["Document"])
    records = []
    size = 0
    while size < megabytes * 1_000_000:
        index = len(records)
        record = {
            "id": f"{index:012d}",
            "sku": f"sku-{index * 7919 % 100_003:06d}",
            "price": round(index * 0.37 % 997, 2),
            "tags": [f"t{index % 13}", f"c{index % 101}"],
            "ok": index % 5 != 0,
        }
        records.append(record)
        size += len(orjson.dumps(record)) + 1
    document["metadata"] = {"default": {"records": records}}
    return document


def measure_large_document(base: Any, megabytes: float = 50.0) -> dict[str, Any]:
    """One large segment document imported, then consumed: default limit vs the limit lifted."""
    from tasks import collector as col
    from tasks.importer import parse_files

    accounts = common.member_accounts(1, prefix="0599")
    out: dict[str, Any] = {"document_mb": megabytes}
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "segment.json")
        with open(path, "wb") as handle:
            handle.write(orjson.dumps(large_document(megabytes)))
        out["document_bytes"] = os.path.getsize(path)
        for label, limit in (("default_limit", None), ("limit_lifted", 1 << 30)):
            with common.fresh_opensearch(
                common.fresh_sinks(common.roster_of(base, accounts), uuid.uuid4().hex[:8])
            ) as config:
                collector = col.Collector.from_config(config)
                parsed = parse_files([Path(path)], max_document_bytes=1 << 30)  # past the import limit
                envelopes = col.envelopes_for(
                    parsed.traces, source="import", account_id=accounts[0].account_id, region="us-east-1"
                )
                messages, _ = col.send_envelopes(collector, envelopes)
                del parsed, envelopes
                out["encodings"] = [m.encoding for m in messages]
                out["payload_bytes"] = [m.claim_check[0].bytes for m in messages if m.claim_check]
                del messages
                with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as handle:
                    handle.write(config.to_json())
                try:
                    consumed = run_child("consume", handle.name, max_document_bytes=limit)
                finally:
                    os.unlink(handle.name)
                common.log(f"{megabytes} MB document, {label}: peak {consumed['peak_rss_mb']} MB")
                out[label] = consumed
    return out


def main() -> None:
    if "--child" in sys.argv:
        job = sys.argv[sys.argv.index("--child") + 1]
        config_path = sys.argv[sys.argv.index("--config") + 1]
        chunk = int(sys.argv[sys.argv.index("--chunk-bytes") + 1]) if "--chunk-bytes" in sys.argv else None
        janitor = (
            int(sys.argv[sys.argv.index("--janitor-documents") + 1]) if "--janitor-documents" in sys.argv else None
        )
        limit = (
            int(sys.argv[sys.argv.index("--max-document-bytes") + 1]) if "--max-document-bytes" in sys.argv else None
        )
        child(job, config_path, int(sys.argv[sys.argv.index("--batch") + 1]), chunk, janitor, limit)
        return
    args = common.parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument("--million", action="store_true", help="also consume 1M segments (about an hour)"),
            p.add_argument(
                "--million-only",
                action="store_true",
                help="only consume 10k and 1M segments, side by side (results: bench_memory_1m.json)",
            ),
            p.add_argument(
                "--consume-commit-only",
                action="store_true",
                help="only consume and commit 10k and 100k segments (results: bench_memory_committer.json)",
            ),
            p.add_argument(
                "--large-document-only",
                action="store_true",
                help="only the one 50 MB document case (results: bench_memory_large.json)",
            ),
        ),
    )
    from tasks.consumer import CHUNK_BYTES  # not at module level: a child's baseline is measured before imports

    started = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    if args.large_document_only:
        with common.detached_sandbox() as base:
            large = measure_large_document(base)
        peak = large["default_limit"]["peak_rss_mb"]
        metrics = {
            "large_document": large,
            "peak_rss_mb": {"default_limit": peak, "limit_lifted": large["limit_lifted"]["peak_rss_mb"]},
            "targets": {"peak_rss_mb": common.target(peak, 300.0, higher_is_better=False)},
        }
        common.finish("bench_memory_large", args, metrics, started)
        return
    # quick: a 4k-segment smoke run (10k takes ~30-60 s per job on a loaded 2-core sandbox)
    plan: list[tuple[int, bool]]  # (segments, replay too)
    if args.quick:
        plan = [(4_000, True)]
    elif args.million_only:
        plan = [(10_000, False), (1_000_000, False)]
    elif args.consume_commit_only:  # B4's consumer and the committer's process, without replay or the levers
        plan = [(10_000, False), (100_000, False)]
    else:
        # replay's working set is one partition (account, region, hour), not the archive: at 1M
        # only consume is measured (replaying 1M segments into the sandbox takes another hour)
        plan = [(10_000, True), (100_000, True), *([(1_000_000, False)] if args.million else [])]
    runs = []
    batch_runs = []
    with common.detached_sandbox() as base:
        for size, replay in plan:
            janitor = JANITOR_DOCUMENTS if size >= 1_000_000 else None
            commit = replay or args.consume_commit_only
            runs.append(measure(base, size, replay=replay, janitor_documents=janitor, commit=commit))
        levers = not (args.quick or args.million_only or args.consume_commit_only)
        if levers:  # the levers: messages per batch, bytes per chunk
            batch_runs.append(measure(base, 100_000, batch=20, replay=False, commit=False))
            batch_runs.append(measure(base, 100_000, replay=False, chunk_bytes=2 * CHUNK_BYTES, commit=False))
        skip_large = args.million_only or args.consume_commit_only
        large = None if skip_large else measure_large_document(base, 5.0 if args.quick else 50.0)
    peaks = [max(r["consume"]["peak_rss_mb"], (r["replay"] or {}).get("peak_rss_mb", 0)) for r in runs]
    if large:
        peaks.append(large["default_limit"]["peak_rss_mb"])
    base_run = runs[0]
    replayed = [r for r in runs if r["replay"]]
    committed = [r for r in runs if r["commit"]]
    growth = {
        "consume": round(runs[-1]["consume"]["peak_rss_mb"] / base_run["consume"]["peak_rss_mb"], 3),
        "replay": round(replayed[-1]["replay"]["peak_rss_mb"] / replayed[0]["replay"]["peak_rss_mb"], 3)
        if replayed
        else None,
        "commit": round(committed[-1]["commit"]["peak_rss_mb"] / committed[0]["commit"]["peak_rss_mb"], 3)
        if committed
        else None,
    }
    by_batch = next((r for r in runs if r["target_segments"] == 100_000), None)
    metrics = {
        "runs": runs,
        "peak_rss_mb": {
            str(r["target_segments"]): {
                "consume": r["consume"]["peak_rss_mb"],
                "replay": r["replay"]["peak_rss_mb"] if r["replay"] else None,
                "commit": r["commit"]["peak_rss_mb"] if r["commit"] else None,
            }
            for r in runs
        },
        "consume_imports_pyiceberg": any("pyiceberg" in r["consume"]["heavy_modules_loaded"] for r in runs),
        "growth_vs_smallest": growth,
        "consume_peak_rss_mb_by_batch_messages": {
            **({"100": by_batch["consume"]["peak_rss_mb"]} if by_batch else {}),
            **{str(r["batch_messages"]): r["consume"]["peak_rss_mb"] for r in batch_runs if r["batch_messages"] != 100},
        },
        "consume_peak_rss_mb_by_chunk_bytes": {
            str(r["consume"]["chunk_bytes"]): r["consume"]["peak_rss_mb"]
            for r in [*([by_batch] if by_batch else []), *batch_runs]
            if r["batch_messages"] == 100
        },
        "consume_seconds_by_batch_messages": {
            **({"100": by_batch["consume"]["seconds"]} if by_batch else {}),
            **{str(r["batch_messages"]): r["consume"]["seconds"] for r in batch_runs if r["batch_messages"] != 100},
        },
        "batch_runs": batch_runs,
        "large_document": large,
        "large_document_peak_rss_mb": {k: large[k]["peak_rss_mb"] for k in ("default_limit", "limit_lifted")}
        if large
        else None,
        "million": "consume only" if args.million or args.million_only else "skipped: about an hour (see docstring)",
        "load_average_at_start": load_at_start,
        "targets": {
            "peak_rss_mb": common.target(max(peaks), 300.0, higher_is_better=False),
            "flat_consume": common.target(growth["consume"], 1.25, higher_is_better=False),
            "flat_replay": common.target(growth["replay"], 1.25, higher_is_better=False) if len(replayed) > 1 else None,
            # not a target of B4 (the consumer's): the committer's own process, against the same budget
            "commit_peak_rss_mb": common.target(max(r["commit"]["peak_rss_mb"] for r in committed), 300.0, False)
            if committed
            else None,
        },
    }
    name = (
        "bench_memory_1m"
        if args.million_only
        else "bench_memory_committer"
        if args.consume_commit_only
        else "bench_memory"
    )
    common.finish(name, args, metrics, started)


if __name__ == "__main__":
    main()
