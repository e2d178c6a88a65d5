"""Collect one Step Functions execution: the classic per-execution trigger path.

Given an execution ARN (account and region come from it): DescribeExecution through the member
role, then the reader of that (account, region) as in the sweep (`tasks.span_records`):

* `xray`: list that window's traces (filtered by state machine; filtered again client side on the
  execution ARN, since endpoints may ignore filter expressions) and BatchGetTraces them;
* `spans` (Transaction Search: X-Ray indexes only a share, BatchGetTraces cannot find the rest):
  the execution's trace ids from its `traceHeader` and from the `aws/spans` events that name its
  ARN (FilterLogEvents, the ARN as filter pattern), then the whole traces through
  StartTraceRetrieval → ListRetrievedTraces, polled until COMPLETE for at most
  `RETRIEVAL_WAIT_SECONDS` (`tasks.span_retrieval.execution_spans`); sent as span envelopes;
* `both` (switching): the X-Ray path, then the span path for traces X-Ray did not return.

Each path sends one `source=collect` envelope per start hour carrying the execution details.
Works for running executions; collecting again later updates the documents (newer collected_at
wins in the index). A retrieval that fails or does not complete in time fails the run with one line.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow
from prefect.states import Completed, Failed, State

from flows.observe import emit, human_bytes, run_logger, summary_artifact
from flows.parameters import CollectParameters, takes
from flows.sweep import COLUMNS
from tasks import collector as col
from tasks import span_retrieval, spans_reader, windows, xray
from tasks import stepfunctions as sfn
from tasks.aws import DEFAULT_BOTO_CONFIG
from tasks.envelope import TimeWindow
from tasks.health import account_rows, write_health
from tasks.organizations import RunConfig

RETRIEVAL_WAIT_SECONDS = span_retrieval.RETRIEVAL_WAIT_SECONDS
RETRIEVAL_POLL_SECONDS = 1.0


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
        xray_call, logs_call = collector.span_callers(account.account_id, parsed.region)
        choice = spans_reader.select_reader(client, xray_call)
        result.choose(choice)
        span = windows.Window(started - pad, stopped + pad)
        if choice.reader in ("xray", "both"):
            trace_ids: list[str] = []
            for window in windows.plan_windows(span.start, span.end):
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
            batch = xray.batch_get_traces(
                client, trace_ids, account_id=account.account_id, limiter=limiter, stats=stats
            )
            traces = [t for t in batch.traces if sfn.trace_mentions(t, parsed.arn)]
            envelopes = col.envelopes_for(
                traces,
                source="collect",
                account_id=account.account_id,
                region=parsed.region,
                window=TimeWindow(start=span.start, end=span.end),
                execution=execution,
                redaction=collector.redaction,
            )
            _, report = col.send_envelopes(collector, envelopes)
            result.traces = len(traces)
            result.trace_ids = [t["Id"] for t in traces]
            result.envelopes = report.sent
            result.envelope_ids = [e.envelope_id for e in envelopes]
            result.bytes = report.bytes
        if choice.reader in ("spans", "both"):
            read = span_retrieval.execution_spans(
                client,
                collector.logs_client(account.account_id, parsed.region),
                xray_call,
                logs_call,
                parsed.arn,
                span,
                trace_header=str(execution.get("traceHeader") or "") or None,
                skip=result.trace_ids,
                redaction=collector.redaction,
                wait_seconds=RETRIEVAL_WAIT_SECONDS,
                poll_seconds=RETRIEVAL_POLL_SECONDS,
            )
            sent = col.send_span_groups(
                collector, account, parsed.region, read.groups, source="collect", window=span, execution=execution
            )
            windows_before = result.windows
            result.add_window(sent)
            result.windows = windows_before
            logger.info(
                "aws/spans: %d candidate traces of %s, %d retrieved, %d read again in full (at the 100-span cap)",
                len(read.candidates), parsed.arn, read.retrieved, read.reread,
            )  # fmt: skip
        result.count_calls(stats)
        result.count_span_calls(logs_call.stats)
        if not result.traces:
            where = "no X-Ray trace" if choice.reader == "xray" else "no trace in X-Ray or aws/spans"
            logger.warning("%s mentions %s yet (sampling, or not yet indexed)", where, parsed.arn)
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
            "reader": f"{result.reader} ({result.reader_reason})",
            "X-Ray summaries": result.summaries,
            "spans": result.spans,
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
