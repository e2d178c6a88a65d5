"""Index profiles end to end, without the Prefect server: traces in X-Ray → sweep → consume →
only the profile's index families exist (Parquet and the raw archive complete) → the reconcile
flow's own observations (its tasks' functions) and `compare` find nothing missing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from blocks.config import Config
from flows import reconcile as reconcile_flow
from flows.consume import run_consumer
from tasks import collector as col
from tasks import reconcile as rec
from tasks.index import client_for
from tests.flows.test_sweep import put_simple_traces


@pytest.mark.parametrize(
    ("profile", "generation"), [("xray", "legacy"), ("trace-analytics", "standard"), ("trace-analytics", "legacy")]
)
def test_each_index_profile_writes_only_its_families_and_reconciles(
    fresh_config: Config, profile: str, generation: str
) -> None:
    target = fresh_config.opensearch.model_copy(update={"index_profile": profile, "span_generation": generation})
    config = fresh_config.model_copy(update={"opensearch": target})
    account = config.roster.accounts[0]
    ids = put_simple_traces(config, account.account_id, 3)
    collector = col.Collector.from_config(config)
    assert col.sweep_account(collector, account, "us-east-1", now=datetime.now(UTC)).status == "ok"
    stats = run_consumer(config, wait_seconds=1, use_tasks=False)
    assert stats.traces == len(ids) and stats.documents_failed == 0, stats.errors
    assert stats.raw_objects >= 1 and stats.parquet_files >= 1  # the archive is complete whatever the profile

    client = client_for(config.opensearch)
    client.indices.refresh(index="_all")
    service_map = "otel-v2-apm-service-map" if generation == "standard" else "otel-v1-apm-service-map"
    present = {
        alias: client.count(index=alias)["count"] if client.indices.exists(index=alias) else 0
        for alias in ("xray-traces", "xray-segments", "otel-v1-apm-span", service_map)
    }
    if profile == "xray":
        assert present["xray-traces"] == len(ids) and present["xray-segments"] >= len(ids)
        assert present["otel-v1-apm-span"] == present[service_map] == 0
    else:
        assert present["xray-traces"] == present["xray-segments"] == 0
        assert present["otel-v1-apm-span"] >= len(ids) and present[service_map] >= 1
    # writes ≥ documents: the same service-map edge in the same minute is one document
    assert stats.documents_indexed >= sum(present.values())

    now = datetime.now(UTC)
    start, end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1), now
    targets = [(account, "us-east-1")]
    observation = rec.Observation(start=start, end=end)
    observation.xray_hours = rec.xray_checkable(rec.hours_of(start, end), now)
    sinks = {
        "raw": reconcile_flow.raw_task.fn(config, targets, start, end),
        "parquet": reconcile_flow.parquet_task.fn(config, targets, start, end),
        "index": reconcile_flow.index_task.fn(config, targets, start, end),
        "xray": reconcile_flow.xray_task.fn(collector, targets, start, end, observation.xray_hours, "TraceId"),
    }
    for sink, found in sinks.items():
        for key, (positions, error) in found.items():
            assert error is None, (sink, error)
            observation.record(sink, key, positions)
    report = rec.compare(observation, [(account.account_id, "us-east-1")], now=now)
    assert report.ok, report.message()
    assert report.totals == {"xray": len(ids), "raw": len(ids), "parquet": len(ids), "index": len(ids)}
