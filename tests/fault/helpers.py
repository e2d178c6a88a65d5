"""What every fault scenario needs: traces planted in member accounts' X-Ray, the real pipeline
(sweep flow → org queue → consumer), and an exact comparison of the sinks at the end.

`observe(config, accounts, start, end)` reads every sink independently of the pipeline code:

* X-Ray       GetTraceSummaries (TraceId time range) through each member role and the strict front;
* raw         every object under `raw/`, decoded; its key must be the envelope's own and its bytes the
              envelope's canonical JSON (lossless, replayable);
* Parquet     every row of the `traces` and `segments` tables, duplicates counted;
* index       every trace and segment document behind the read aliases, duplicates counted by
              (account, trace id) and (trace id, segment id) across all daily indices;
* queue       visible + in-flight messages of the org queue, and the DLQ's reasons.

`assert_exactly_once` then demands: X-Ray = raw = Parquet = index = what the test planted (per
account: zero lost, nothing extra), one index document per trace and per segment, Parquet rows
that dedupe (by key, newest `collected_at` wins, the lake's documented read contract) to exactly
the index's documents, completed traces shown completed, the queue empty. `reconcile_ok` runs the
project's reconcile flow over the same window on top.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import pyarrow.compute as pc

from blocks.config import Config
from tasks import archive, dlq, queue, windows, xray
from tasks import collector as col
from tasks.aws import MemberSessions
from tasks.envelope import parse_envelope
from tasks.index import client_for
from tasks.tracetime import id_epoch as trace_epoch

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"

# ============================================================================ planting traces


def trace_id_for(tag: str, account_id: str, index: int, start: float) -> str:
    digest = hashlib.sha256(f"{tag}:{account_id}:{index}".encode()).hexdigest()
    return f"1-{int(start):08x}-{digest[:24]}"


def _sid(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]


def trace_documents(
    trace_id: str,
    account_id: str,
    *,
    in_progress: bool = False,
    url: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """A web request: root segment with two embedded subsegments (DynamoDB, remote HTTP) plus one
    independently sent subsegment. In progress: the root lacks `end_time`, its children are done."""
    start = float(trace_epoch(trace_id) or 0) + 0.125
    root_id = _sid(trace_id, "root")
    root: dict[str, Any] = {
        "name": f"web-{account_id[-4:]}",
        "id": root_id,
        "trace_id": trace_id,
        "start_time": start,
        "origin": "AWS::EC2::Instance",
        "http": {
            "request": {"method": "GET", "url": url or f"https://shop.example.com/cart/{trace_id[-6:]}"},
            "response": {"status": 200},
        },
        "subsegments": [
            {
                "id": _sid(trace_id, "ddb"),
                "name": "DynamoDB",
                "namespace": "aws",
                "start_time": start + 0.01,
                "end_time": start + 0.05,
                "aws": {"operation": "GetItem", "table_name": "carts", "region": REGION},
            },
            {
                "id": _sid(trace_id, "remote"),
                "name": "payments.example.com",
                "namespace": "remote",
                "start_time": start + 0.06,
                "end_time": start + 0.2,
                "http": {"request": {"method": "POST", "url": "https://payments.example.com/charge"}},
            },
        ],
    }
    if metadata:
        root["metadata"] = {"default": metadata}
    if in_progress:
        root["in_progress"] = True
    else:
        root["end_time"] = start + 0.25
    independent = {
        "name": "render",
        "id": _sid(trace_id, "render"),
        "trace_id": trace_id,
        "parent_id": root_id,
        "type": "subsegment",
        "start_time": start + 0.21,
        "end_time": start + 0.24,
    }
    return [root, independent]


SEGMENTS_PER_TRACE = 4  # root + 2 embedded + 1 independent subsegment: one segment document each


def xray_client(config: Config, account_id: str) -> Any:
    return MemberSessions(config.roster).client(account_id, REGION, "xray")


def put_documents(config: Config, account_id: str, documents: Sequence[dict[str, Any]]) -> None:
    client = xray_client(config, account_id)
    texts = [orjson.dumps(d).decode() for d in documents]
    for start in range(0, len(texts), 50):
        response = client.put_trace_segments(TraceSegmentDocuments=texts[start : start + 50])
        assert not response.get("UnprocessedTraceSegments"), response


def put_traces(
    config: Config,
    account_id: str,
    count: int,
    *,
    tag: str = "t",
    age_seconds: float = 900,
    spacing: float = 11.0,
    in_progress: bool = False,
    **document_options: Any,
) -> list[str]:
    """`count` traces started `age_seconds` ago (then every `spacing` s earlier) in the account."""
    now = time.time() - age_seconds
    ids = [trace_id_for(tag, account_id, i, now - i * spacing) for i in range(count)]
    documents = [
        doc
        for trace_id in ids
        for doc in trace_documents(trace_id, account_id, in_progress=in_progress, **document_options)
    ]
    put_documents(config, account_id, documents)
    return ids


def complete_traces(config: Config, account_id: str, trace_ids: Iterable[str]) -> None:
    """The finished root segments (same ids, now with end_time) of in-progress traces."""
    put_documents(config, account_id, [trace_documents(t, account_id)[0] for t in trace_ids])


def plant(config: Config, per_account: int, tag: str = "t", **options: Any) -> dict[str, set[str]]:
    return {
        a.account_id: set(put_traces(config, a.account_id, per_account, tag=tag, **options))
        for a in config.roster.accounts
    }


def merge(*ledgers: Mapping[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for ledger in ledgers:
        for account, ids in ledger.items():
            out.setdefault(account, set()).update(ids)
    return out


# ============================================================================ running the pipeline


def write_config(config: Config, path: Path) -> str:
    path.write_bytes(config.to_json())
    os.chmod(path, 0o600)
    return str(path)


def sweep_config_kwargs() -> dict[str, Any]:
    return {"first_lookback_minutes": 120, "lag_seconds": 0}


def consumer_script(config_path: str, **options: Any) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in options.items())
    return (
        "import sys\n"
        "from blocks.config import load_config\n"
        "from flows.consume import run_consumer\n"
        f"config = load_config({config_path!r})\n"
        "print('consumer started', flush=True)\n"
        f"stats = run_consumer(config, use_tasks=False, {args})\n"
        "print('consumer done', stats.deleted, flush=True)\n"
    )


def start_consumer_process(config_path: str, log_path: Path, **options: Any) -> subprocess.Popen[bytes]:
    """A real consumer in its own Python process against the same config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL_")}
    env["PYTHONPATH"] = str(REPO)
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-c", consumer_script(config_path, **options)],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill(process: subprocess.Popen[bytes]) -> int:
    """SIGKILL (no cleanup, no atexit, no finally: a crash) and reap it."""
    os.kill(process.pid, signal.SIGKILL)
    return process.wait(timeout=30)


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def queue_depth(config: Config, url: str | None = None) -> dict[str, int]:
    return queue.queue_depth(boto3.client("sqs"), url or config.queue.queue_url)


def drain(config: Config, timeout: float = 60.0, **options: Any) -> Any:
    """Run the consumer until the queue holds nothing, visible or in flight (messages left for
    retry come back after their visibility timeout); returns the merged stats."""
    from flows.consume import run_consumer
    from tasks.consumer import BatchStats

    total = BatchStats()
    deadline = time.monotonic() + timeout
    while True:
        total.merge(run_consumer(config, wait_seconds=1, use_tasks=False, **options))
        if queue_depth(config) == {"visible": 0, "in_flight": 0}:
            return total
        assert time.monotonic() < deadline, f"queue not drained after {timeout:.0f} s: {queue_depth(config)}"
        wait_for(lambda: queue_depth(config)["visible"] > 0, timeout, "messages to become visible again")


def dlq_reasons(config: Config) -> dict[str, int]:
    entries = [e for e, _ in dlq.peek(boto3.client("sqs"), config.queue.dlq_url, limit=500)]
    return dlq.summarize(entries)


# ============================================================================ observing the sinks


@dataclass
class Sinks:
    """What each sink holds, read directly (not through the code under test)."""

    xray: dict[str, set[str]] = field(default_factory=dict)
    raw: dict[str, set[str]] = field(default_factory=dict)
    raw_objects: int = 0
    raw_problems: list[str] = field(default_factory=list)
    parquet_rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    parquet_newest_in_progress: dict[tuple[str, str], bool] = field(default_factory=dict)
    parquet_segment_rows: Counter[tuple[str, str]] = field(default_factory=Counter)
    index: Counter[tuple[str, str]] = field(default_factory=Counter)
    index_in_progress: dict[tuple[str, str], bool] = field(default_factory=dict)
    index_segments: Counter[tuple[str, str]] = field(default_factory=Counter)
    queue: dict[str, int] = field(default_factory=dict)

    def ids(self, sink: str) -> dict[str, set[str]]:
        if sink in ("xray", "raw"):
            return getattr(self, sink)  # type: ignore[no-any-return]
        rows = self.parquet_rows if sink == "parquet" else self.index
        out: dict[str, set[str]] = {}
        for account, trace_id in rows:
            out.setdefault(account, set()).add(trace_id)
        return out

    @property
    def parquet_duplicates(self) -> int:
        return sum(n - 1 for n in self.parquet_rows.values()) + sum(n - 1 for n in self.parquet_segment_rows.values())

    def summary(self) -> dict[str, Any]:
        return {
            "xray": sum(len(v) for v in self.xray.values()),
            "raw": sum(len(v) for v in self.raw.values()),
            "raw_objects": self.raw_objects,
            "parquet_traces": len(self.parquet_rows),
            "parquet_rows": sum(self.parquet_rows.values()),
            "parquet_duplicate_rows": self.parquet_duplicates,
            "index_traces": len(self.index),
            "index_segments": len(self.index_segments),
            "queue": self.queue,
        }


def observe_xray(config: Config, account_ids: Iterable[str], start: datetime, end: datetime) -> dict[str, set[str]]:
    collector = col.Collector.from_config(config)
    out: dict[str, set[str]] = {}
    for account_id in account_ids:
        client = collector.xray_client(account_id, REGION)
        found: set[str] = set()
        for window in windows.plan_windows(start, end):
            found |= set(xray.list_trace_ids(client, window, "TraceId", account_id=account_id).trace_ids)
        out[account_id] = found
    return out


def observe_raw(config: Config, sinks: Sinks) -> None:
    s3 = boto3.client("s3")
    store = config.archive
    for obj in archive.list_keys(s3, store.bucket, f"{store.raw_prefix}/"):
        key = obj["Key"]
        body = s3.get_object(Bucket=store.bucket, Key=key)["Body"].read()
        raw = gzip.decompress(body)
        envelope = parse_envelope(raw)
        sinks.raw_objects += 1
        if key != archive.raw_key(store, envelope):
            sinks.raw_problems.append(f"{key}: not the envelope's own key {archive.raw_key(store, envelope)}")
        if envelope.to_json() != raw:
            sinks.raw_problems.append(f"{key}: not the canonical envelope bytes")
        sinks.raw.setdefault(envelope.account_id, set()).update(t["Id"] for t in envelope.traces)


def observe_parquet(config: Config, sinks: Sinks) -> None:
    from tasks import lake

    s3 = boto3.client("s3")
    for table_name in ("traces", "segments"):
        # the Iceberg table plus the consumers' files the committer has not committed yet
        dataset = lake.lake_dataset(config, table_name, s3=s3, include_pending=True)
        if dataset is None:
            continue
        if table_name == "traces":
            table = dataset.to_table(columns=["account_id", "trace_id", "collected_at", "in_progress"])
            table = table.sort_by([("collected_at", "ascending")])
            for row in table.to_pylist():
                key = (row["account_id"], row["trace_id"])
                sinks.parquet_rows[key] += 1
                sinks.parquet_newest_in_progress[key] = bool(row["in_progress"])  # sorted: the newest wins
        else:
            table = dataset.to_table(columns=["trace_id", "segment_id"])
            traces = table.column("trace_id").to_pylist()
            segments = pc.cast(table.column("segment_id"), "string").to_pylist()
            sinks.parquet_segment_rows.update(zip(traces, segments, strict=True))


def _all_hits(client: Any, alias: str, fields: list[str]) -> list[dict[str, Any]]:
    if not client.indices.exists_alias(name=alias):
        return []
    body = {"size": 10_000, "_source": fields, "query": {"match_all": {}}}
    return list(client.search(index=alias, body=body)["hits"]["hits"])


def observe_index(config: Config, sinks: Sinks, prefix: str | None = None) -> None:
    client = client_for(config.opensearch)
    prefix = prefix or config.opensearch.index_prefix
    client.indices.refresh(index=f"{prefix}-*")
    for hit in _all_hits(client, f"{prefix}-traces", ["account_id", "trace_id", "in_progress"]):
        source = hit["_source"]
        key = (source["account_id"], source["trace_id"])
        sinks.index[key] += 1
        sinks.index_in_progress[key] = bool(source.get("in_progress"))
    for hit in _all_hits(client, f"{prefix}-segments", ["trace_id", "segment_id"]):
        sinks.index_segments[(hit["_source"]["trace_id"], hit["_source"]["segment_id"])] += 1


def observe(config: Config, account_ids: Iterable[str], start: datetime, end: datetime) -> Sinks:
    sinks = Sinks()
    sinks.xray = observe_xray(config, account_ids, start, end)
    observe_raw(config, sinks)
    observe_parquet(config, sinks)
    observe_index(config, sinks)
    sinks.queue = queue_depth(config)
    return sinks


def window_of(expected: Mapping[str, set[str]]) -> tuple[datetime, datetime]:
    epochs = [trace_epoch(t) or 0 for ids in expected.values() for t in ids]
    start = datetime.fromtimestamp(min(epochs), UTC).replace(minute=0, second=0, microsecond=0)
    return start, datetime.now(UTC)


def assert_exactly_once(
    config: Config,
    expected: Mapping[str, set[str]],
    *,
    completed: Iterable[str] = (),
    segments_per_trace: int = SEGMENTS_PER_TRACE,
) -> Sinks:
    """Zero lost, zero duplicated, in every sink; returns what was observed (for more checks)."""
    start, end = window_of(expected)
    accounts = [a.account_id for a in config.roster.accounts]
    sinks = observe(config, accounts, start, end)
    want = {a: set(expected.get(a, set())) for a in accounts}
    problems: list[str] = list(sinks.raw_problems)
    for sink in ("xray", "raw", "parquet", "index"):
        got = sinks.ids(sink)
        for account in accounts:
            have = got.get(account, set())
            lost, extra = want[account] - have, have - want[account]
            if lost:
                problems.append(f"{sink} {account}: {len(lost)} lost, e.g. {sorted(lost)[:3]}")
            if extra:
                problems.append(f"{sink} {account}: {len(extra)} unexpected, e.g. {sorted(extra)[:3]}")
    doubled = {k: n for k, n in sinks.index.items() if n > 1}
    if doubled:
        problems.append(f"index: {len(doubled)} traces with more than one document, e.g. {list(doubled)[:3]}")
    doubled_segments = {k: n for k, n in sinks.index_segments.items() if n > 1}
    if doubled_segments:
        problems.append(f"index: {len(doubled_segments)} segments with several documents")
    total = sum(len(v) for v in want.values())
    if segments_per_trace and len(sinks.index_segments) != total * segments_per_trace:
        problems.append(f"index: {len(sinks.index_segments)} segment documents, expected {total * segments_per_trace}")
    if set(sinks.parquet_segment_rows) != set(sinks.index_segments):
        problems.append("Parquet segments (deduplicated) differ from the index's segment documents")
    for trace_id in completed:
        for key, flag in sinks.index_in_progress.items():
            if key[1] == trace_id and flag:
                problems.append(f"index: {trace_id} still in progress")
        for key, flag in sinks.parquet_newest_in_progress.items():
            if key[1] == trace_id and flag:
                problems.append(f"Parquet: the newest row of {trace_id} is still in progress")
    if sinks.queue != {"visible": 0, "in_flight": 0}:
        problems.append(f"queue not drained: {sinks.queue}")
    assert not problems, "\n".join(problems) + f"\nsinks: {sinks.summary()}"
    return sinks


def reconcile_ok(config_path: str, expected: Mapping[str, set[str]], repair: bool = False) -> Any:
    """The project's reconcile flow over the scenario's window: ok (after repair, with `repair`),
    and totals = what was planted."""
    from flows.reconcile import reconcile
    from tasks.reconcile import ReconcileReport

    start, end = window_of(expected)
    state = reconcile(
        start=start, end=end, accounts=list(expected), repair=repair, config_path=config_path, return_state=True
    )
    assert state.is_completed(), state.message
    report = ReconcileReport.model_validate(state.result())
    total = sum(len(v) for v in expected.values())
    assert report.ok, (report.message(), [r.missing_ids for r in report.rows if r.missing_ids], report.errors)
    assert report.totals == {"xray": total, "raw": total, "parquet": total, "index": total}, report.totals
    return report


def seconds_since(started: float) -> float:
    return round(time.monotonic() - started, 2)


def at(minutes_ago: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes_ago)


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
