"""B5 freshness: Step Functions execution end → its trace searchable in OpenSearch, via collect.

Per sample: a real Step Functions execution runs in moto (member account, its own role); when it
has stopped, its X-Ray segments are put (as Step Functions and Lambda would emit them, times from
DescribeExecution); then the event-triggered path runs at once — the collect flow's functions
(`tasks.stepfunctions.describe_execution`, `tasks.xray.list_trace_ids` + `batch_get_traces`
through the strict front, `tasks.collector.envelopes_for` + `send_envelopes`) — while a consumer
(`flows.consume.run_consumer` in a thread, long-polling) drains the queue. The clock stops when a
search for the trace id returns its trace document.

Latency = time the trace is found − the execution's stopDate. Not modelled: X-Ray's own ingestion
delay and the EventBridge → Prefect automation hop (add them for production: typically seconds).
Target: p95 ≤ 10 s in the sandbox.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import common


def one_sample(config: Any, collector: Any, plan: Any, client: Any) -> dict[str, Any]:
    from sandbox import traffic
    from tasks import collector as col
    from tasks import stepfunctions as sfn
    from tasks import windows, xray
    from tasks.aws import DEFAULT_BOTO_CONFIG
    from tasks.envelope import TimeWindow

    plan = dataclasses.replace(plan, name=f"bench-{uuid.uuid4().hex[:12]}", stop_after=None)
    states = collector.sessions.client(plan.account_id, plan.region, "stepfunctions", DEFAULT_BOTO_CONFIG)
    spec = traffic.MACHINES[plan.state_machine]
    machine_arn = traffic._ensure_state_machine(states, plan.account_id, plan.region, spec)
    states.start_execution(stateMachineArn=machine_arn, name=plan.name, input=plan.input)
    while True:
        described = states.describe_execution(executionArn=plan.execution_arn)
        if described["status"] != "RUNNING":
            break
        time.sleep(0.02)
    stop_date: datetime = described.get("stopDate") or datetime.now(UTC)
    facts = traffic.ExecutionFacts(
        execution_arn=plan.execution_arn,
        state_machine_arn=str(described["stateMachineArn"]),
        name=plan.name,
        status=str(described["status"]),
        start=described["startDate"].timestamp(),
        stop=stop_date.timestamp(),
        error=described.get("error"),
        cause=described.get("cause"),
    )
    trace_id = traffic.trace_id_for(facts.start, plan.trace_suffix[:-8] + uuid.uuid4().hex[:8])
    documents = traffic.step_functions_documents(plan, facts, trace_id)
    xray_client = collector.xray_client(plan.account_id, plan.region)
    traffic.put_documents(xray_client, documents)
    segments_put = time.time()

    # --- the collect flow's body (flows/collect.py), event-triggered right after the end
    parsed = sfn.parse_execution_arn(plan.execution_arn)
    execution = sfn.describe_execution(states, parsed.arn)
    started = datetime.fromisoformat(str(execution["startDate"]))
    stop = execution.get("stopDate")
    stopped = datetime.fromisoformat(str(stop)) if stop else datetime.now(UTC)
    pad = timedelta(seconds=60)
    limiter = collector.limiters.get(parsed.account_id, parsed.region)
    trace_ids: list[str] = []
    for window in windows.plan_windows(started - pad, stopped + pad):
        listing = xray.list_trace_ids(
            xray_client, window, "Event", sfn.state_machine_filter(parsed.state_machine),
            account_id=parsed.account_id, limiter=limiter,
        )  # fmt: skip
        trace_ids += listing.trace_ids
    batch = xray.batch_get_traces(xray_client, trace_ids, account_id=parsed.account_id, limiter=limiter)
    traces = [t for t in batch.traces if sfn.trace_mentions(t, parsed.arn)]
    envelopes = col.envelopes_for(
        traces, source="collect", account_id=parsed.account_id, region=parsed.region,
        window=TimeWindow(start=started - pad, end=stopped + pad), execution=execution,
        redaction=collector.redaction,
    )  # fmt: skip
    col.send_envelopes(collector, envelopes)
    sent = time.time()

    deadline = time.time() + 60
    found = None
    while time.time() < deadline:
        client.indices.refresh(index="xray-traces*")
        hits = client.search(
            index="xray-traces", body={"size": 1, "query": {"term": {"trace_id": trace_id}}}, ignore_unavailable=True
        )["hits"]["hits"]
        if hits:
            found = time.time()
            break
        time.sleep(0.05)
    end = facts.stop or segments_put
    return {
        "trace_id": trace_id,
        "status": facts.status,
        "traces_collected": len(traces),
        "latency_seconds": round(found - end, 3) if found else None,
        "collect_seconds": round(sent - segments_put, 3),
        "consume_and_search_seconds": round(found - sent, 3) if found else None,
        "put_after_end_seconds": round(segments_put - end, 3),
    }


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started = time.monotonic()
    from flows.consume import run_consumer
    from sandbox import traffic
    from tasks import collector as col
    from tasks.index import client_for

    samples_wanted = 5 if args.quick else 30
    accounts = common.member_accounts(1, prefix="04")
    plans = [
        e
        for e in traffic.generate_traffic(3, accounts, traces_per_account=40, now=time.time()).executions
        if e.planned_status == "SUCCEEDED"
    ]
    samples: list[dict[str, Any]] = []
    with common.detached_sandbox() as base:
        config = common.fresh_sinks(common.roster_of(base, accounts), uuid.uuid4().hex[:8])
        collector = col.Collector.from_config(config)
        client = client_for(config.opensearch)
        stop = threading.Event()
        consumer_stats: list[Any] = []

        def consume_forever() -> None:
            while not stop.is_set():
                consumer_stats.append(
                    run_consumer(config, until_empty=False, max_seconds=2, wait_seconds=1, use_tasks=False)
                )

        worker = threading.Thread(target=consume_forever, daemon=True)
        worker.start()
        try:
            for index in range(samples_wanted):
                sample = one_sample(config, collector, plans[index % len(plans)], client)
                common.log(f"sample {index + 1}: {sample['latency_seconds']} s ({sample['status']})")
                samples.append(sample)
        finally:
            stop.set()
            worker.join(timeout=30)
    latencies = [s["latency_seconds"] for s in samples if s["latency_seconds"] is not None]
    lost = sum(1 for s in samples if s["latency_seconds"] is None)
    p95 = common.percentile(latencies, 95)
    metrics = {
        "samples": len(samples),
        "not_found_within_60s": lost,
        "latency_seconds": {
            "p50": common.percentile(latencies, 50),
            "p95": p95,
            "max": max(latencies) if latencies else None,
        },
        "collect_seconds_p50": common.percentile([s["collect_seconds"] for s in samples], 50),
        "consume_and_search_seconds_p50": common.percentile(
            [s["consume_and_search_seconds"] for s in samples if s["consume_and_search_seconds"] is not None], 50
        ),
        "detail": samples,
        "targets": {"p95_seconds": common.target(p95 if not lost else None, 10.0, higher_is_better=False)},
    }
    common.finish("bench_freshness", args, metrics, started)


if __name__ == "__main__":
    main()
