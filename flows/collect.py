"""Collect one Step Functions execution: the classic per-execution trigger path.

Given an execution ARN (account and region come from it): DescribeExecution through the member
role, list that window's traces (filtered by state machine; filtered again client side on the
execution ARN, since endpoints may ignore filter expressions), and send one `source=collect`
envelope per start hour carrying the execution details. Works for running executions; collecting
again later updates the documents (newer collected_at wins in the index).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow
from prefect.states import Completed, Failed, State

from flows.observe import emit, human_bytes, run_logger, summary_artifact
from flows.parameters import CollectParameters, takes
from flows.sweep import COLUMNS
from tasks import collector as col
from tasks import stepfunctions as sfn
from tasks import windows, xray
from tasks.aws import DEFAULT_BOTO_CONFIG
from tasks.envelope import TimeWindow
from tasks.health import account_rows, write_health
from tasks.organizations import RunConfig


@flow(name="collect")
@takes(CollectParameters)
def collect(params: CollectParameters, run: RunConfig) -> State:
    """Collect the X-Ray traces of one Step Functions execution and send them to the org queue."""
    config = run.config
    account, parsed = params.target(config)
    collector = col.Collector.from_config(config)
    result = col.AccountResult(account.account_id, account.name, parsed.region)
    logger = run_logger()
    execution: dict[str, object] = {}
    try:
        states = collector.sessions.client(account.account_id, parsed.region, "stepfunctions", DEFAULT_BOTO_CONFIG)
        execution = sfn.describe_execution(states, parsed.arn)
        started = datetime.fromisoformat(str(execution["startDate"]))
        stop_date = execution.get("stopDate")
        stopped = datetime.fromisoformat(str(stop_date)) if stop_date else datetime.now(UTC)
        pad = timedelta(seconds=params.padding_seconds)
        client = collector.xray_client(account.account_id, parsed.region)
        limiter = collector.limiters.get(account.account_id, parsed.region)
        stats = xray.XRayStats()
        trace_ids: list[str] = []
        for window in windows.plan_windows(started - pad, stopped + pad):
            listing = xray.list_trace_ids(
                client,
                window,
                "Event",
                sfn.state_machine_filter(parsed.state_machine),
                account_id=account.account_id,
                limiter=limiter,
                stats=stats,
            )
            trace_ids += listing.trace_ids
            result.summaries += len(listing.summaries)
            result.windows += 1
        batch = xray.batch_get_traces(client, trace_ids, account_id=account.account_id, limiter=limiter, stats=stats)
        traces = [t for t in batch.traces if sfn.trace_mentions(t, parsed.arn)]
        envelopes = col.envelopes_for(
            traces,
            source="collect",
            account_id=account.account_id,
            region=parsed.region,
            window=TimeWindow(start=started - pad, end=stopped + pad),
            execution=execution,
            redaction=collector.redaction,
        )
        _, report = col.send_envelopes(collector, envelopes)
        result.traces = len(traces)
        result.trace_ids = [t["Id"] for t in traces]
        result.envelopes = report.sent
        result.envelope_ids = [e.envelope_id for e in envelopes]
        result.bytes = report.bytes
        result.count_calls(stats)
        if not traces:
            logger.warning("no X-Ray trace mentions %s yet (sampling, or not yet indexed by X-Ray)", parsed.arn)
    except Exception as error:
        result.status = "failed"
        result.error = str(error)[:500]
        result.error_kind = type(error).__name__
        logger.error("collect of %s failed: %s: %s", parsed.arn, result.error_kind, result.error, exc_info=True)
        emit(
            "xraylake.collect.failed",
            f"aws.stepfunctions.execution.{parsed.arn}",
            {"flow": "collect", "error": result.error, "error_kind": result.error_kind},
        )
    logger.info(
        "%s (%s): %d traces in %d envelopes (%d bytes)",
        parsed.arn,
        execution.get("status", "unknown"),
        result.traces,
        result.envelopes,
        result.bytes,
    )
    summary_artifact(
        "xraylake-collect",
        f"collect {parsed.name}: {result.traces} traces, execution status {execution.get('status', 'unknown')}",
        [result.summary()],
        notes=[f"{result.error_kind}: {result.error}"] if result.status == "failed" else [],
        metrics={
            "execution": parsed.arn,
            "account": f"{account.account_id} ({account.name}) {parsed.region}",
            "execution status": execution.get("status", "unknown"),
            "X-Ray summaries": result.summaries,
            "traces": result.traces,
            "envelopes": result.envelopes,
            "bytes sent": human_bytes(result.bytes),
            "throttles": result.throttles,
        },
        columns=COLUMNS["collect"],
    )
    write_health(config, "collect", account_rows([result]))
    data = {"execution_arn": parsed.arn, "result": result, "account": result.summary()}
    if result.status == "failed":
        return Failed(message=" ".join(f"{result.error_kind}: {result.error}".split()), data=data)
    data["execution_status"] = execution.get("status")
    return Completed(message=f"{result.traces} traces sent", data=data)
