"""Realistic, deterministic synthetic X-Ray traffic for the sandbox's member accounts.

Two halves, kept apart:

* **Pure generation** — `generate_traffic(seed, accounts, traces_per_account, hours_back, now)`
  plans every trace of every (account, region) and builds its segment documents. Same seed and
  same `now` ⇒ byte-identical documents (`document_json`). No I/O, no clock, no global random
  state: every trace draws from its own `random.Random` seeded from the master seed.
* **I/O** — `write_traffic(traffic, roster)` creates the state machines and runs *real* Step
  Functions executions in moto through each member account's own assumed role
  (`tasks.aws.MemberSessions`), rebuilds those traces from what DescribeExecution returned, and
  puts every document with PutTraceSegments (batched; `UnprocessedTraceSegments` fails loudly).
  `complete_in_progress(traffic, roster)` later puts the completed versions of in-progress
  segments (same ids, now with `end_time`).

Scenarios (mixed by seed; the first traces of every account are a fixed "must have" list so that
small runs still cover every case):

* Step Functions execution (`AWS::StepFunctions::StateMachine` segment, `resource_arn` = state
  machine ARN, `aws.execution_arn`; one subsegment per visited state; Task states hold an
  `aws`-namespace `Lambda` Invoke subsegment) → Lambda service segment (`AWS::Lambda`, parent =
  the Invoke subsegment) → function segment (`AWS::Lambda::Function`, parent = the service
  segment) with `Initialization` (cold starts) / `Invocation` / `Overhead`, a Powertools-style
  `## lambda_handler` subsegment (annotations `ColdStart`, `Service`) and SDK subsegments:
  DynamoDB GetItem/PutItem (`table_name`), SNS Publish (`topic_arn`), SQS SendMessage
  (`queue_url`), plus `remote` HTTP calls. Statuses SUCCEEDED, FAILED (Fail state), TIMED_OUT
  (state machine `TimeoutSeconds`), ABORTED (StopExecution).
* API Gateway (`AWS::ApiGateway::Stage`, `aws.api_gateway`, `aws:api_id` annotations) → Lambda →
  DynamoDB/SQS. 200 ok, 404 error, 429 throttle (`throttle` + `error`, no Lambda call),
  502 fault (the function raises; the exception sits on `## lambda_handler`, the `Invocation`
  subsegment's `cause` is that exception's id as a string), DynamoDB throttling inside.
* EC2 / ECS web service (`AWS::EC2::Instance` with `aws.ec2`, `AWS::ECS::Container` with
  `aws.ecs`) with `http` request/response, `user`, annotations (string/number/bool), nested
  metadata, a `remote` HTTP subsegment and an `sql` subsegment (`url`, `database_type`,
  `sanitized_query`, …). 200 ok, 404 error, 429 throttle, 500 fault whose segment `cause` is
  the exception id of the failing SQL subsegment's exception.
* In progress: a root segment fragment with `in_progress: true` and no `end_time`, plus a
  separately sent, completed subsegment document (`type: "subsegment"`, `parent_id`);
  `complete_in_progress` puts the finished root (same id, `end_time`).
* One trace over 1 MiB (a batch report job: a root segment plus ~20 separately sent subsegment
  documents with large metadata, every document ≤ 64 kB — enforced for every document).
* Cross-account: a caller in the first account with a `traced` remote subsegment; the callee's
  segment lives in the second account with the same trace id and `parent_id` = that subsegment.
* One trace per account starts just before an hour boundary and ends after it.

Sources (field names and shapes):

* AWS X-Ray developer guide, "AWS X-Ray segment documents" (segment/subsegment fields,
  `in_progress`, `namespace` aws/remote, `http`, `aws` (operation, region, request_id,
  queue_url, table_name), `sql` (url, database_type, sanitized_query, …), `cause` with
  `working_directory` / `exceptions[{id, message, type, remote, stack[{path, line, label}]}]`
  or an exception id string, annotations, metadata, ≤ 64 kB per document):
  https://docs.aws.amazon.com/xray/latest/devguide/xray-api-segmentdocuments.html
* OpenTelemetry Collector contrib, awsxrayreceiver test data (real SDK output):
  `receiver/awsxrayreceiver/testdata/rawsegment/ddbSample.txt` (DynamoDB subsegments with
  `aws.{operation, region, request_id, retries, table_name}`, fault + cause with stack),
  `minCauseIsExceptionId.txt` (`"cause": "<exception id>"`), `serverSample.txt`
  (`http.request.{method, url, client_ip, user_agent, x_forwarded_for}`, `aws.xray.sdk`), and the
  segment model `internal/aws/xray/tracesegment.go` (`aws.ec2`, `aws.ecs`, `sql`, `cause`
  string-or-object) in github.com/open-telemetry/opentelemetry-collector-contrib.
* AWS CLI example for `aws xray put-trace-segments` (DynamoDB subsegment with
  `aws.{table_name, operation, request_id, consistent_read}`).

Gaps (documented rather than hidden):

* No public sample of a Step Functions-emitted segment was found in the reference corpus; the
  state machine segment follows the documented generic fields (origin, `resource_arn`) plus
  `aws.execution_arn` as seen in console traces. Status mapping is ours: FAILED and TIMED_OUT
  → `fault` with a cause (Fail-state error / `States.Timeout`), ABORTED → `error`.
* moto cannot run Lambda Task states (no docker), so the state machines created in moto use
  Pass states *named* like the Lambda tasks (their `Comment` names the function); the Lambda
  segments are synthesized. Execution names are passed explicitly, so ARNs are deterministic
  (`arn:aws:states:<region>:<account>:execution:<machine>:<uuid from the seed>`).
* moto stamps executions with the wall clock. With `align_execution_times=True` (default) the
  Step Functions traces are rebuilt from DescribeExecution (start/stop, status, error/cause), so
  they sit at write time and their trace ids carry the real start epoch; everything else stays
  byte-identical to the plan. With `False` they keep their planned (historical) times and only
  status/ARN come from moto. moto 5.2.5 omits `stopDate` for TIMED_OUT (we use start +
  `TimeoutSeconds`), drops `traceHeader`, and ignores StopExecution's error/cause.
* moto's X-Ray keeps both versions of a completed in-progress segment (real X-Ray keeps the
  newest); consumers must treat duplicate segment ids as revisions.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

from blocks import MemberAccount, Roster

log = logging.getLogger(__name__)

MAX_SEGMENT_BYTES = 64_000  # "a segment document can be up to 64 kB": stay under either reading
BIG_TRACE_MIN_BYTES = 1_100_000  # > 1 MiB (1,048,576) with margin
END_MARGIN_SECONDS = 120.0  # every planned trace ends at least this long before `now`
MAX_TRACE_SECONDS = 60.0  # upper bound of any planned trace's duration
PUT_BATCH_DOCUMENTS = 50  # the X-Ray daemon's batch size
PUT_BATCH_BYTES = 500_000  # conservative request size per PutTraceSegments call

STATUSES = ("ok", "error", "fault", "throttle")
EXECUTION_STATUSES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
_EXECUTION_TRACE_STATUS = {"SUCCEEDED": "ok", "FAILED": "fault", "TIMED_OUT": "fault", "ABORTED": "error"}

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"


class TrafficWriteError(RuntimeError):
    """PutTraceSegments left documents unprocessed, or an execution did not finish."""


# ------------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class PlannedExecution:
    """One real Step Functions execution to run in moto (its input decides its outcome)."""

    account_id: str
    region: str
    state_machine: str
    name: str
    input: str
    planned_status: str
    trace_suffix: str
    trace_seed: int
    planned_start: float
    stop_after: float | None = None  # ABORTED: seconds after start to call StopExecution

    @property
    def state_machine_arn(self) -> str:
        return f"arn:aws:states:{self.region}:{self.account_id}:stateMachine:{self.state_machine}"

    @property
    def execution_arn(self) -> str:
        return f"arn:aws:states:{self.region}:{self.account_id}:execution:{self.state_machine}:{self.name}"


@dataclass(frozen=True)
class ExecutionFacts:
    """What DescribeExecution says about an execution (or the plan's stand-in for it)."""

    execution_arn: str
    state_machine_arn: str
    name: str
    status: str
    start: float
    stop: float | None
    error: str | None = None
    cause: str | None = None


@dataclass
class TraceRecord:
    """One trace as seen from one (account, region): its documents and later completions."""

    trace_id: str
    account_id: str
    region: str
    scenario: str
    status: str
    start: float
    documents: list[dict[str, Any]]
    completions: list[dict[str, Any]] = field(default_factory=list)
    execution: PlannedExecution | None = None


@dataclass
class RegionTraffic:
    account_id: str
    account_name: str
    region: str
    traces: list[TraceRecord] = field(default_factory=list)

    @property
    def documents(self) -> list[dict[str, Any]]:
        return [doc for trace in self.traces for doc in trace.documents]

    @property
    def completions(self) -> list[dict[str, Any]]:
        return [doc for trace in self.traces for doc in trace.completions]

    @property
    def trace_ids(self) -> list[str]:
        return list(dict.fromkeys(trace.trace_id for trace in self.traces))

    @property
    def segment_count(self) -> int:
        """Distinct segment documents (completions reuse their in-progress segment's id)."""
        return sum(len(trace.documents) for trace in self.traces)

    @property
    def executions(self) -> list[PlannedExecution]:
        return [trace.execution for trace in self.traces if trace.execution is not None]


@dataclass
class Traffic:
    seed: int
    now: float
    hours_back: float
    regions: list[RegionTraffic]
    big_trace_id: str | None = None
    cross_account_trace_id: str | None = None

    def region(self, account_id: str, region: str) -> RegionTraffic:
        for item in self.regions:
            if item.account_id == account_id and item.region == region:
                return item
        raise KeyError(f"no traffic for {account_id}/{region}")

    def expected_trace_ids(self, account_id: str, region: str | None = None) -> set[str]:
        return {
            trace_id
            for item in self.regions
            if item.account_id == account_id and (region is None or item.region == region)
            for trace_id in item.trace_ids
        }

    @property
    def traces(self) -> list[TraceRecord]:
        return [trace for item in self.regions for trace in item.traces]

    @property
    def executions(self) -> list[PlannedExecution]:
        return [execution for item in self.regions for execution in item.executions]

    def documents(self) -> Iterator[dict[str, Any]]:
        for item in self.regions:
            yield from item.documents

    def completions(self) -> Iterator[dict[str, Any]]:
        for item in self.regions:
            yield from item.completions


class RegionWrite(BaseModel):
    """What was written into one member account + region."""

    account_id: str
    account_name: str
    region: str
    traces: int
    segments: int
    documents_put: int
    in_progress: int = Field(description="in-progress documents whose completion is still pending")
    executions: dict[str, int] = Field(default_factory=dict, description="Step Functions status → count")
    trace_ids: list[str] = Field(default_factory=list)


class ExecutionResult(BaseModel):
    account_id: str
    region: str
    state_machine_arn: str
    execution_arn: str
    name: str
    planned_status: str
    status: str
    start: datetime
    stop: datetime | None
    trace_id: str


class WriteReport(BaseModel):
    seed: int
    regions: list[RegionWrite]
    executions: list[ExecutionResult]
    big_trace_id: str | None
    cross_account_trace_id: str | None
    aligned_execution_times: bool
    seconds: float

    def trace_ids(self, account_id: str, region: str | None = None) -> set[str]:
        return {
            trace_id
            for item in self.regions
            if item.account_id == account_id and (region is None or item.region == region)
            for trace_id in item.trace_ids
        }

    @property
    def totals(self) -> dict[str, int]:
        return {
            "traces": sum(r.traces for r in self.regions),
            "segments": sum(r.segments for r in self.regions),
            "documents_put": sum(r.documents_put for r in self.regions),
            "executions": len(self.executions),
        }

    @property
    def execution_mismatches(self) -> list[ExecutionResult]:
        return [e for e in self.executions if e.status != e.planned_status]


class CompletionReport(BaseModel):
    completed: dict[str, int] = Field(description="'account_id/region' → completed documents put")
    seconds: float


# ------------------------------------------------------------------------------------ helpers


def document_json(doc: dict[str, Any]) -> str:
    """The exact text put to X-Ray (deterministic for a given document)."""
    return orjson.dumps(doc).decode()


def document_size(doc: dict[str, Any]) -> int:
    return len(orjson.dumps(doc))


def _check_size(doc: dict[str, Any]) -> None:
    size = document_size(doc)
    if size > MAX_SEGMENT_BYTES:
        raise ValueError(f"segment document {doc.get('id')} is {size} bytes (limit {MAX_SEGMENT_BYTES})")


def trace_id_for(start: float, suffix: str) -> str:
    """X-Ray trace id: version 1, 8 hex digits of the start epoch second, 24 hex digits."""
    return f"1-{int(start):08x}-{suffix}"


def _t(value: float) -> float:
    return round(value, 6)


def _sid(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ddb_request_id(rng: random.Random) -> str:
    return "".join(rng.choices(_ALNUM, k=52))


def _stable(*parts: str, length: int = 17, alphabet: str = "0123456789abcdef") -> str:
    """A stable identifier for a named resource (same account + name → same id, any seed)."""
    digest = hashlib.shake_256(":".join(parts).encode()).digest(length)
    return "".join(alphabet[b % len(alphabet)] for b in digest)


@dataclass(frozen=True)
class _Ctx:
    account_id: str
    region: str
    trace_id: str


def _fn_arn(ctx: _Ctx, function: str) -> str:
    return f"arn:aws:lambda:{ctx.region}:{ctx.account_id}:function:{function}"


def _stack(rng: random.Random, frames: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"path": path, "line": rng.randint(12, 480), "label": label} for path, label in frames]


def _exception(
    rng: random.Random,
    type_: str,
    message: str,
    frames: list[tuple[str, str]] | None = None,
    remote: bool = False,
) -> dict[str, Any]:
    exc: dict[str, Any] = {"id": _sid(rng), "message": message, "type": type_}
    if remote:
        exc["remote"] = True
    if frames:
        exc["stack"] = _stack(rng, frames)
    return exc


# ------------------------------------------------------------------ downstream subsegments


@dataclass(frozen=True)
class _Call:
    """A downstream call made by a function or service."""

    kind: str  # ddb_get | ddb_put | sns | sqs | http
    target: str  # table, topic, queue, or host
    path: str = ""
    method: str = "GET"


def _dynamodb(
    rng: random.Random,
    ctx: _Ctx,
    operation: str,
    table: str,
    start: float,
    end: float,
    *,
    throttled: bool = False,
) -> dict[str, Any]:
    aws: dict[str, Any] = {
        "operation": operation,
        "region": ctx.region,
        "request_id": _ddb_request_id(rng),
        "retries": 0,
        "table_name": table,
        "resource_names": [table],
    }
    if operation == "GetItem":
        aws["consistent_read"] = False
    sub: dict[str, Any] = {
        "id": _sid(rng),
        "name": "DynamoDB",
        "start_time": _t(start),
        "end_time": _t(end),
        "namespace": "aws",
        "http": {"response": {"status": 200, "content_length": rng.randint(2, 900)}},
        "aws": aws,
    }
    if throttled:
        aws["retries"] = 3
        sub["http"] = {"response": {"status": 400, "content_length": 162}}
        sub["error"] = True
        sub["throttle"] = True
        sub["cause"] = {
            "working_directory": "/var/task",
            "exceptions": [
                _exception(
                    rng,
                    "ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded.",
                    remote=True,
                )
            ],
        }
    return sub


def _sns(rng: random.Random, ctx: _Ctx, topic: str, start: float, end: float) -> dict[str, Any]:
    topic_arn = f"arn:aws:sns:{ctx.region}:{ctx.account_id}:{topic}"
    return {
        "id": _sid(rng),
        "name": "SNS",
        "start_time": _t(start),
        "end_time": _t(end),
        "namespace": "aws",
        "http": {"response": {"status": 200, "content_length": 294}},
        "aws": {
            "operation": "Publish",
            "region": ctx.region,
            "request_id": _uuid(rng),
            "retries": 0,
            "topic_arn": topic_arn,
            "resource_names": [topic_arn],
        },
    }


def _sqs(rng: random.Random, ctx: _Ctx, queue: str, start: float, end: float) -> dict[str, Any]:
    queue_url = f"https://sqs.{ctx.region}.amazonaws.com/{ctx.account_id}/{queue}"
    return {
        "id": _sid(rng),
        "name": "SQS",
        "start_time": _t(start),
        "end_time": _t(end),
        "namespace": "aws",
        "http": {"response": {"status": 200, "content_length": 378}},
        "aws": {
            "operation": "SendMessage",
            "region": ctx.region,
            "request_id": _uuid(rng),
            "retries": 0,
            "queue_url": queue_url,
            "message_id": _uuid(rng),
            "resource_names": [queue_url],
        },
    }


def _remote_http(
    rng: random.Random,
    host: str,
    method: str,
    path: str,
    start: float,
    end: float,
    status: int = 200,
    *,
    traced: bool = False,
    subsegment_id: str | None = None,
) -> dict[str, Any]:
    request: dict[str, Any] = {"method": method, "url": f"https://{host}{path}"}
    if traced:
        request["traced"] = True
    sub: dict[str, Any] = {
        "id": subsegment_id or _sid(rng),
        "name": host,
        "start_time": _t(start),
        "end_time": _t(end),
        "namespace": "remote",
        "http": {"request": request, "response": {"status": status, "content_length": rng.randint(40, 2400)}},
    }
    if status == 429:
        sub["error"] = True
        sub["throttle"] = True
    elif 400 <= status < 500:
        sub["error"] = True
    elif status >= 500:
        sub["fault"] = True
    return sub


_SQL_QUERIES = {
    "orders": "SELECT id, status, total FROM orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT %s",
    "inventory": "SELECT sku, on_hand, reserved FROM stock WHERE sku = ANY(%s) FOR UPDATE SKIP LOCKED",
    "reports": "SELECT store_id, sku, SUM(units), SUM(revenue) FROM sales WHERE day = %s GROUP BY 1, 2",
    "exports": "INSERT INTO export_jobs (id, requested_by, format) VALUES (%s, %s, %s)",
}


def _sql(
    rng: random.Random,
    ctx: _Ctx,
    database: str,
    start: float,
    end: float,
    *,
    exception: dict[str, Any] | None = None,
    trace_id: str | None = None,
    parent_id: str | None = None,
) -> dict[str, Any]:
    host = f"{database}-db.cluster-{_stable(ctx.account_id, ctx.region, database, length=12, alphabet=_LOWER)}"
    host += f".{ctx.region}.rds.amazonaws.com"
    sub: dict[str, Any] = {
        "id": _sid(rng),
        "name": f"{database}@{host}",
        "start_time": _t(start),
        "end_time": _t(end),
        "namespace": "remote",
        "sql": {
            "url": f"postgresql://{host}:5432/{database}",
            "database_type": "PostgreSQL",
            "database_version": "15.6",
            "driver_version": "psycopg2 2.9.9",
            "user": "app",
            "preparation": "statement",
            "sanitized_query": _SQL_QUERIES[database],
        },
    }
    if trace_id is not None:  # sent on its own: an independent subsegment document
        sub = {"type": "subsegment", "trace_id": trace_id, "parent_id": parent_id, **sub}
    if exception is not None:
        sub["fault"] = True
        sub["cause"] = {"working_directory": "/app", "exceptions": [exception]}
    return sub


def _calls(rng: random.Random, ctx: _Ctx, calls: tuple[_Call, ...], start: float, end: float, **flags: Any) -> list:
    """Sequential downstream subsegments filling [start, end]."""
    subs: list[dict[str, Any]] = []
    if not calls:
        return subs
    slot = (end - start) / len(calls)
    for i, call in enumerate(calls):
        s = start + i * slot + slot * 0.05
        e = start + (i + 1) * slot - slot * 0.05
        if call.kind in ("ddb_get", "ddb_put"):
            op = "GetItem" if call.kind == "ddb_get" else "PutItem"
            subs.append(
                _dynamodb(rng, ctx, op, call.target, s, e, throttled=flags.get("throttled_table") == call.target)
            )
        elif call.kind == "sns":
            subs.append(_sns(rng, ctx, call.target, s, e))
        elif call.kind == "sqs":
            subs.append(_sqs(rng, ctx, call.target, s, e))
        else:
            status = flags.get("http_status", {}).get(call.target, 200)
            subs.append(_remote_http(rng, call.target, call.method, call.path, s, e, status))
    return subs


# ------------------------------------------------------------------------------------- Lambda


_POWERTOOLS_FRAMES = [
    ("/var/task/app.py", "lambda_handler"),
    ("/opt/python/aws_lambda_powertools/tracing/tracer.py", "decorate"),
    ("/var/runtime/bootstrap.py", "handle_event_request"),
]


def _lambda_invocation(
    rng: random.Random,
    ctx: _Ctx,
    function: str,
    service: str,
    start: float,
    end: float,
    calls: tuple[_Call, ...],
    *,
    outcome: str = "ok",
    http_status: dict[str, int] | None = None,
    with_http: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The caller's `Lambda` Invoke subsegment and the two segments Lambda itself emits.

    outcome: ok | crash (the handler raises) | throttled (DynamoDB throttling, then raises).
    """
    fn_arn = _fn_arn(ctx, function)
    request_id = _uuid(rng)
    cold = rng.random() < 0.25
    invoke_id = _sid(rng)
    service_id = _sid(rng)
    invoke: dict[str, Any] = {
        "id": invoke_id,
        "name": "Lambda",
        "start_time": _t(start),
        "end_time": _t(end),
        "namespace": "aws",
        "http": {"response": {"status": 200, "content_length": rng.randint(20, 600)}},
        "aws": {
            "function_name": function,
            "region": ctx.region,
            "operation": "Invoke",
            "request_id": request_id,
            "retries": 0,
            "resource_names": [function],
        },
    }
    if with_http:
        invoke["http"]["request"] = {
            "method": "POST",
            "url": f"https://lambda.{ctx.region}.amazonaws.com/2015-03-31/functions/{fn_arn}/invocations",
        }
    span = end - start
    svc_start, svc_end = start + span * 0.01, end - span * 0.01
    lambda_service: dict[str, Any] = {
        "id": service_id,
        "name": function,
        "start_time": _t(svc_start),
        "end_time": _t(svc_end),
        "trace_id": ctx.trace_id,
        "parent_id": invoke_id,
        "origin": "AWS::Lambda",
        "resource_arn": fn_arn,
        "http": {"response": {"status": 200}},
        "aws": {"request_id": request_id},
    }
    fn_start, fn_end = svc_start + (svc_end - svc_start) * 0.02, svc_end - (svc_end - svc_start) * 0.01
    fn_span = fn_end - fn_start
    subs: list[dict[str, Any]] = []
    cursor = fn_start
    if cold:
        init_end = fn_start + fn_span * 0.3
        subs.append(
            {
                "id": _sid(rng),
                "name": "Initialization",
                "start_time": _t(fn_start),
                "end_time": _t(init_end),
                "aws": {"function_arn": fn_arn},
            }
        )
        cursor = init_end
    overhead_start = fn_end - fn_span * 0.03
    handler_start, handler_end = cursor + (overhead_start - cursor) * 0.02, overhead_start - 0.0002
    handler: dict[str, Any] = {
        "id": _sid(rng),
        "name": "## lambda_handler",
        "start_time": _t(handler_start),
        "end_time": _t(handler_end),
        "annotations": {"ColdStart": cold, "Service": service},
        "metadata": {service: {"lambda_handler response": {"statusCode": 200, "requestId": request_id}}},
        "subsegments": _calls(
            rng,
            ctx,
            calls,
            handler_start,
            handler_end,
            http_status=http_status or {},
            throttled_table=calls[0].target if outcome == "throttled" and calls else None,
        ),
    }
    invocation: dict[str, Any] = {
        "id": _sid(rng),
        "name": "Invocation",
        "start_time": _t(cursor),
        "end_time": _t(overhead_start),
        "aws": {"function_arn": fn_arn},
        "subsegments": [handler],
    }
    function_segment: dict[str, Any] = {
        "id": _sid(rng),
        "name": function,
        "start_time": _t(fn_start),
        "end_time": _t(fn_end),
        "trace_id": ctx.trace_id,
        "parent_id": service_id,
        "origin": "AWS::Lambda::Function",
        "resource_arn": fn_arn,
        "aws": {"account_id": ctx.account_id, "function_arn": fn_arn, "resource_names": [function]},
        "subsegments": [
            *subs,
            invocation,
            {
                "id": _sid(rng),
                "name": "Overhead",
                "start_time": _t(overhead_start),
                "end_time": _t(fn_end),
                "aws": {"function_arn": fn_arn},
            },
        ],
    }
    if outcome in ("crash", "throttled"):
        if outcome == "crash":
            exc = _exception(rng, "KeyError", "'customer_id'", _POWERTOOLS_FRAMES)
        else:
            exc = _exception(
                rng,
                "botocore.errorfactory.ProvisionedThroughputExceededException",
                "An error occurred (ProvisionedThroughputExceededException) when calling the "
                f"{'GetItem' if calls and calls[0].kind == 'ddb_get' else 'PutItem'} operation",
                _POWERTOOLS_FRAMES,
            )
        del handler["metadata"]
        handler["fault"] = True
        handler["cause"] = {"working_directory": "/var/task", "exceptions": [exc]}
        invocation["fault"] = True
        invocation["cause"] = exc["id"]  # X-Ray: a cause may reference another subsegment's exception
        function_segment["fault"] = True
        lambda_service["fault"] = True
        invoke["fault"] = True
    return invoke, [lambda_service, function_segment]


# -------------------------------------------------------------------------------- Step Functions


@dataclass(frozen=True)
class _Task:
    state: str
    function: str
    calls: tuple[_Call, ...]


@dataclass(frozen=True)
class MachineSpec:
    """A state machine whose input decides its outcome (only Pass/Wait/Choice/Fail states)."""

    name: str
    service: str
    before: tuple[_Task, ...]
    wait_state: str
    choice_state: str
    fail_state: str
    fail_error: str
    fail_cause: str
    after: tuple[_Task, ...]
    # A planned SUCCEEDED run takes ~1 s (its Wait) plus moto's state transitions; 3 s was too tight on
    # a loaded CI machine (runs ended TIMED_OUT). TIMED_OUT runs wait 30 s, well past this.
    timeout_seconds: int = 8

    def definition(self) -> dict[str, Any]:
        states: dict[str, Any] = {}
        for i, task in enumerate(self.before):
            following = self.before[i + 1].state if i + 1 < len(self.before) else self.wait_state
            states[task.state] = {
                "Type": "Pass",
                "Comment": f"stands in for Lambda {task.function}",
                "Next": following,
            }
        states[self.wait_state] = {"Type": "Wait", "SecondsPath": "$.wait_seconds", "Next": self.choice_state}
        states[self.choice_state] = {
            "Type": "Choice",
            "Choices": [{"Variable": "$.scenario", "StringEquals": "declined", "Next": self.fail_state}],
            "Default": self.after[0].state,
        }
        states[self.fail_state] = {"Type": "Fail", "Error": self.fail_error, "Cause": self.fail_cause}
        for i, task in enumerate(self.after):
            state: dict[str, Any] = {"Type": "Pass", "Comment": f"stands in for Lambda {task.function}"}
            if i + 1 < len(self.after):
                state["Next"] = self.after[i + 1].state
            else:
                state["Result"] = {"notified": True}
                state["ResultPath"] = "$.notification"
                state["End"] = True
            states[task.state] = state
        return {
            "Comment": "xraylake sandbox: Pass states stand in for the Lambda tasks named in their Comment "
            "(moto runs Task states only with docker)",
            "TimeoutSeconds": self.timeout_seconds,
            "StartAt": self.before[0].state,
            "States": states,
        }

    def visited(self, status: str) -> list[tuple[str, str, _Task | None]]:
        """(state name, kind, task) in execution order for an outcome."""
        path: list[tuple[str, str, _Task | None]] = [(t.state, "task", t) for t in self.before]
        path.append((self.wait_state, "wait", None))
        if status in ("TIMED_OUT", "ABORTED"):
            return path
        path.append((self.choice_state, "choice", None))
        if status == "FAILED":
            path.append((self.fail_state, "fail", None))
        else:
            path.extend((t.state, "task", t) for t in self.after)
        return path


MACHINES: dict[str, MachineSpec] = {
    spec.name: spec
    for spec in (
        MachineSpec(
            name="order-fulfillment",
            service="orders",
            before=(
                _Task("ValidateOrder", "validate-order", (_Call("ddb_get", "orders"),)),
                _Task(
                    "ChargePayment",
                    "charge-payment",
                    (
                        _Call("http", "api.payments.example.com", "/v1/charges", "POST"),
                        _Call("ddb_put", "payments"),
                    ),
                ),
            ),
            wait_state="WaitForSettlement",
            choice_state="CheckPayment",
            fail_state="PaymentDeclined",
            fail_error="PaymentDeclined",
            fail_cause="The card issuer declined the charge (insufficient_funds)",
            after=(
                _Task(
                    "NotifyCustomer",
                    "notify-customer",
                    (_Call("sns", "order-events"), _Call("sqs", "shipping-requests")),
                ),
            ),
        ),
        MachineSpec(
            name="customer-onboarding",
            service="customers",
            before=(
                _Task("CreateProfile", "create-profile", (_Call("ddb_put", "customers"),)),
                _Task(
                    "ScreenCustomer",
                    "screen-customer",
                    (_Call("http", "kyc.verify.example.net", "/v2/screenings", "POST"),),
                ),
            ),
            wait_state="WaitForVerification",
            choice_state="CheckScreening",
            fail_state="ScreeningRejected",
            fail_error="ScreeningRejected",
            fail_cause="Identity verification failed: document expired",
            after=(
                _Task(
                    "SendWelcome",
                    "send-welcome",
                    (_Call("sns", "customer-events"), _Call("sqs", "welcome-emails")),
                ),
            ),
        ),
    )
}

_TASK_SECONDS = (0.12, 0.9)


def _plan_layout(rng: random.Random, spec: MachineSpec, status: str, plan: PlannedExecution) -> list[float]:
    """Planned relative durations of the visited states (drawn in a fixed order)."""
    durations: list[float] = []
    wait_planned = 1.0
    for _, kind, _task in spec.visited(status):
        if kind == "task":
            durations.append(rng.uniform(*_TASK_SECONDS))
        elif kind == "wait":
            if status == "TIMED_OUT":
                durations.append(max(0.5, spec.timeout_seconds - sum(durations)))
            elif status == "ABORTED":
                durations.append(max(0.2, (plan.stop_after or 1.0) - sum(durations)))
            else:
                durations.append(wait_planned)
        else:
            durations.append(rng.uniform(0.002, 0.02))
    return durations


def step_functions_documents(plan: PlannedExecution, facts: ExecutionFacts, trace_id: str) -> list[dict[str, Any]]:
    """The segments Step Functions and its Lambda tasks emit for one execution (pure).

    Ids and request ids come from the plan's own seed, so they do not depend on `facts`; times
    follow `facts` (planned layout scaled into [start, stop]).
    """
    spec = MACHINES[plan.state_machine]
    rng = random.Random(plan.trace_seed)
    ctx = _Ctx(plan.account_id, plan.region, trace_id)
    status = facts.status if facts.status in EXECUTION_STATUSES else plan.planned_status
    durations = _plan_layout(rng, spec, status, plan)
    planned_total = sum(durations) + 0.02
    stop = facts.stop if facts.stop is not None else facts.start + planned_total
    scale = max(stop - facts.start, 1e-3) / planned_total
    machine_id = _sid(rng)
    segments: list[dict[str, Any]] = []
    subsegments: list[dict[str, Any]] = []
    cursor = facts.start + 0.01 * scale
    fail_exception: dict[str, Any] | None = None
    decider = spec.before[-1].state
    for (state, kind, task), planned in zip(spec.visited(status), durations, strict=True):
        s, e = cursor, cursor + planned * scale
        sub: dict[str, Any] = {"id": _sid(rng), "name": state, "start_time": _t(s), "end_time": _t(e)}
        if kind == "task" and task is not None:
            declined = status == "FAILED" and state == decider
            http_status = {c.target: (402 if spec.service == "orders" else 403) for c in task.calls if c.kind == "http"}
            invoke, lambda_segments = _lambda_invocation(
                rng,
                ctx,
                task.function,
                spec.service,
                s + (e - s) * 0.02,
                e - (e - s) * 0.02,
                task.calls,
                http_status=http_status if declined else None,
            )
            sub["subsegments"] = [invoke]
            segments.extend(lambda_segments)
        elif kind == "fail":
            fail_exception = _exception(rng, facts.error or spec.fail_error, facts.cause or spec.fail_cause)
            sub["fault"] = True
            sub["cause"] = {"exceptions": [fail_exception]}
        elif kind == "wait" and status in ("TIMED_OUT", "ABORTED"):
            sub["end_time"] = _t(stop)
        subsegments.append(sub)
        cursor = e
    machine: dict[str, Any] = {
        "id": machine_id,
        "name": spec.name,
        "start_time": _t(facts.start),
        "end_time": _t(stop),
        "trace_id": trace_id,
        "origin": "AWS::StepFunctions::StateMachine",
        "resource_arn": facts.state_machine_arn,
        "aws": {"execution_arn": facts.execution_arn},
        "subsegments": subsegments,
    }
    if status == "FAILED" and fail_exception is not None:
        machine["fault"] = True
        machine["cause"] = fail_exception["id"]
    elif status == "TIMED_OUT":
        machine["fault"] = True
        machine["cause"] = {
            "exceptions": [_exception(rng, "States.Timeout", f"Execution timed out after {spec.timeout_seconds} s")]
        }
    elif status == "ABORTED":
        machine["error"] = True
    return [machine, *segments]


def planned_facts(plan: PlannedExecution) -> ExecutionFacts:
    """The stand-in for DescribeExecution used at generation time (planned times and status)."""
    spec = MACHINES[plan.state_machine]
    error = cause = None
    if plan.planned_status == "FAILED":
        error, cause = spec.fail_error, spec.fail_cause
    return ExecutionFacts(
        execution_arn=plan.execution_arn,
        state_machine_arn=plan.state_machine_arn,
        name=plan.name,
        status=plan.planned_status,
        start=plan.planned_start,
        stop=None,
        error=error,
        cause=cause,
    )


def _execution_input(rng: random.Random, spec: MachineSpec, status: str) -> dict[str, Any]:
    scenario = {"SUCCEEDED": "ok", "FAILED": "declined"}.get(status, "stuck")
    number = rng.randrange(10**6)
    body: dict[str, Any] = {
        "scenario": scenario,
        "wait_seconds": 1 if scenario != "stuck" else 30,
        "customer": {
            "id": f"cus-{number:06d}",
            "email": f"customer{number:06d}@example.com",
            "tier": rng.choice(["standard", "gold", "platinum"]),
        },
    }
    if spec.service == "orders":
        body["order_id"] = f"ord-{rng.getrandbits(40):010x}"
        body["amount"] = round(rng.uniform(5, 900), 2)
        body["currency"] = rng.choice(["EUR", "USD", "GBP"])
    return body


def _step_functions_trace(
    rng: random.Random, account: MemberAccount, region: str, start: float, status: str
) -> TraceRecord:
    spec = MACHINES[rng.choice(sorted(MACHINES))]
    trace_seed = rng.getrandbits(64)
    suffix = f"{rng.getrandbits(96):024x}"
    name = _uuid(rng)
    body = _execution_input(rng, spec, status)
    plan = PlannedExecution(
        account_id=account.account_id,
        region=region,
        state_machine=spec.name,
        name=name,
        input=orjson.dumps(body).decode(),
        planned_status=status,
        trace_suffix=suffix,
        trace_seed=trace_seed,
        planned_start=start,
        stop_after=0.5 if status == "ABORTED" else None,
    )
    trace_id = trace_id_for(start, suffix)
    documents = step_functions_documents(plan, planned_facts(plan), trace_id)
    return TraceRecord(
        trace_id=trace_id,
        account_id=account.account_id,
        region=region,
        scenario="step_functions",
        status=_EXECUTION_TRACE_STATUS[status],
        start=start,
        documents=documents,
        execution=plan,
    )


# -------------------------------------------------------------------------------- API Gateway


_APIS = (
    ("orders-api", "prod", "get-order", "orders", "GET", "/orders/{id}", (_Call("ddb_get", "orders"),)),
    (
        "orders-api",
        "prod",
        "create-order",
        "orders",
        "POST",
        "/orders",
        (_Call("ddb_put", "orders"), _Call("sqs", "order-intake")),
    ),
    (
        "profile-api",
        "v1",
        "get-profile",
        "customers",
        "GET",
        "/profiles/{id}",
        (_Call("ddb_get", "customers"),),
    ),
)

_USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
)


def _client_ip(rng: random.Random) -> str:
    return f"{rng.choice([81, 92, 185, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _api_gateway_trace(rng: random.Random, ctx: _Ctx, start: float, status: str) -> list[dict[str, Any]]:
    api, stage, function, service, method, route, calls = rng.choice(_APIS)
    api_id = _stable(ctx.account_id, ctx.region, api, length=10, alphabet=_LOWER)
    path = route.replace("{id}", f"{rng.getrandbits(32):08x}")
    duration = rng.uniform(0.04, 1.6) if status != "throttle" else rng.uniform(0.001, 0.004)
    end = start + duration
    request_id = _uuid(rng)
    http_status = {"ok": 200 if method == "GET" else 201, "error": 404, "throttle": 429, "fault": 502}[status]
    segment: dict[str, Any] = {
        "id": _sid(rng),
        "name": f"{api}/{stage}",
        "start_time": _t(start),
        "end_time": _t(end),
        "trace_id": ctx.trace_id,
        "origin": "AWS::ApiGateway::Stage",
        "resource_arn": f"arn:aws:apigateway:{ctx.region}::/restapis/{api_id}/stages/{stage}",
        "http": {
            "request": {
                "method": method,
                "url": f"https://{api_id}.execute-api.{ctx.region}.amazonaws.com/{stage}{path}",
                "client_ip": _client_ip(rng),
                "user_agent": rng.choice(_USER_AGENTS),
                "x_forwarded_for": True,
            },
            "response": {"status": http_status, "content_length": rng.randint(0, 1800)},
        },
        "aws": {
            "api_gateway": {
                "account_id": ctx.account_id,
                "rest_api_id": api_id,
                "stage": stage,
                "request_id": request_id,
            }
        },
        "annotations": {"aws:api_id": api_id, "aws:api_stage": stage},
        "metadata": {
            "default": {
                "extended_request_id": "".join(rng.choices(_ALNUM + _LOWER, k=14)) + "=",
                "request_id": request_id,
            }
        },
    }
    if status == "throttle":
        segment["error"] = True
        segment["throttle"] = True
        return [segment]
    outcome = "ok"
    if status == "fault":
        outcome = rng.choice(["crash", "throttled"])
        segment["fault"] = True
    elif status == "error":
        segment["error"] = True
    span = end - start
    invoke, lambda_segments = _lambda_invocation(
        rng,
        ctx,
        function,
        service,
        start + span * 0.04,
        end - span * 0.02,
        calls,
        outcome=outcome,
        with_http=True,
    )
    segment["subsegments"] = [invoke]
    return [segment, *lambda_segments]


# ------------------------------------------------------------------------------ web services


_WEB_SERVICES = (
    # name, origin, method, route, database, remote (host, method, path)
    (
        "storefront",
        "AWS::EC2::Instance",
        "GET",
        "/cart",
        "orders",
        ("inventory.internal.example", "GET", "/stock"),
    ),
    (
        "inventory-svc",
        "AWS::ECS::Container",
        "GET",
        "/stock/{sku}",
        "inventory",
        ("pricing.internal.example", "GET", "/prices"),
    ),
    (
        "checkout-web",
        "AWS::EC2::Instance",
        "POST",
        "/checkout",
        "orders",
        ("api.payments.example.com", "POST", "/v1/payment_intents"),
    ),
)


def _host_aws(rng: random.Random, ctx: _Ctx, service: str, origin: str) -> dict[str, Any]:
    zone = f"{ctx.region}{'abc'[int(_stable(ctx.account_id, service, length=1), 16) % 3]}"
    xray = {"sdk": "X-Ray for Python", "sdk_version": "2.14.0"}
    if origin == "AWS::EC2::Instance":
        return {
            "ec2": {
                "instance_id": f"i-0{_stable(ctx.account_id, ctx.region, service, 'ec2', length=16)}",
                "availability_zone": zone,
                "instance_size": "m6i.large",
                "ami_id": f"ami-0{_stable(ctx.region, 'ami', length=16)}",
            },
            "xray": xray,
        }
    cluster = f"arn:aws:ecs:{ctx.region}:{ctx.account_id}:cluster/platform"
    task = _stable(ctx.account_id, ctx.region, service, "task", length=32)
    return {
        "ecs": {
            "container": f"{service}-{task[:10]}",
            "container_id": _stable(ctx.account_id, service, "container", length=64),
            "task_arn": f"arn:aws:ecs:{ctx.region}:{ctx.account_id}:task/platform/{task}",
            "task_family": service,
            "cluster_arn": cluster,
            "availability_zone": zone,
            "launch_type": "FARGATE",
        },
        "xray": xray,
    }


def _web_annotations_metadata(rng: random.Random, service: str) -> tuple[dict[str, Any], dict[str, Any]]:
    annotations = {
        "customer_tier": rng.choice(["standard", "gold", "platinum"]),
        "cart_items": rng.randint(0, 12),
        "cache_hit": rng.random() < 0.6,
        "order_total": round(rng.uniform(0, 750), 2),
    }
    metadata = {
        "default": {
            "request": {
                "headers": {
                    "accept-language": rng.choice(["en-US", "de-DE", "fr-FR", "ja-JP"]),
                    "x-client": "web",
                },
                "feature_flags": sorted(rng.sample(["new-checkout", "one-click", "dark-mode", "bnpl"], 2)),
            }
        },
        service: {"build": {"version": f"1.{rng.randint(30, 48)}.{rng.randint(0, 9)}", "commit": _sid(rng)[:12]}},
    }
    return annotations, metadata


def _web_service_trace(
    rng: random.Random, ctx: _Ctx, start: float, status: str, *, service_index: int | None = None
) -> list[dict[str, Any]]:
    index = service_index if service_index is not None else rng.randrange(len(_WEB_SERVICES))
    service, origin, method, route, database, (rhost, rmethod, rpath) = _WEB_SERVICES[index]
    duration = rng.uniform(0.08, 0.9)
    end = start + duration
    url_path = route.replace("{sku}", f"SKU-{rng.randrange(10**6):06d}")
    http_status = {"ok": 200, "error": 404, "throttle": 429, "fault": 500}[status]
    annotations, metadata = _web_annotations_metadata(rng, service)
    span = end - start
    sql_exception = None
    if status == "fault":
        sql_exception = _exception(
            rng,
            "psycopg2.errors.QueryCanceled",
            "canceling statement due to statement timeout",
            [
                (f"/app/{service.replace('-', '_')}/repository.py", "fetch"),
                ("/usr/local/lib/python3.11/site-packages/psycopg2/extras.py", "execute"),
            ],
        )
    sql = _sql(rng, ctx, database, start + span * 0.1, start + span * 0.45, exception=sql_exception)
    remote = _remote_http(
        rng,
        rhost,
        rmethod,
        rpath,
        start + span * 0.5,
        start + span * 0.9,
        429 if status == "throttle" else 200,
    )
    render = {
        "id": _sid(rng),
        "name": "render_response",
        "start_time": _t(start + span * 0.91),
        "end_time": _t(start + span * 0.98),
    }
    segment: dict[str, Any] = {
        "id": _sid(rng),
        "name": service,
        "start_time": _t(start),
        "end_time": _t(end),
        "trace_id": ctx.trace_id,
        "origin": origin,
        "user": f"user-{rng.randrange(10**5):05d}",
        "service": {"runtime": "CPython", "runtime_version": "3.11.9"},
        "http": {
            "request": {
                "method": method,
                "url": f"https://{service}.example.com{url_path}",
                "client_ip": _client_ip(rng),
                "user_agent": rng.choice(_USER_AGENTS),
            },
            "response": {"status": http_status, "content_length": rng.randint(0, 24000)},
        },
        "aws": _host_aws(rng, ctx, service, origin),
        "annotations": annotations,
        "metadata": metadata,
        "subsegments": [sql, remote, render] if status != "fault" else [sql],
    }
    if status == "error":
        segment["error"] = True
    elif status == "throttle":
        segment["error"] = True
        segment["throttle"] = True
    elif status == "fault" and sql_exception is not None:
        segment["fault"] = True
        segment["cause"] = sql_exception["id"]  # the exception recorded on the SQL subsegment
    return [segment]


# ------------------------------------------------------------------------------ special traces


def _in_progress_trace(
    rng: random.Random, ctx: _Ctx, start: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An export request still running: an in-progress fragment + a finished SQL subsegment."""
    duration = rng.uniform(20.0, 45.0)
    root_id = _sid(rng)
    aws = _host_aws(rng, ctx, "report-export", "AWS::EC2::Instance")
    request = {
        "method": "POST",
        "url": "https://exports.example.com/exports",
        "client_ip": _client_ip(rng),
        "user_agent": rng.choice(_USER_AGENTS),
    }
    fragment: dict[str, Any] = {
        "id": root_id,
        "name": "report-export",
        "start_time": _t(start),
        "trace_id": ctx.trace_id,
        "in_progress": True,
        "origin": "AWS::EC2::Instance",
        "http": {"request": request},
        "aws": aws,
    }
    sql = _sql(rng, ctx, "exports", start + 0.05, start + 0.4, trace_id=ctx.trace_id, parent_id=root_id)
    completed: dict[str, Any] = {
        "id": root_id,
        "name": "report-export",
        "start_time": _t(start),
        "end_time": _t(start + duration),
        "trace_id": ctx.trace_id,
        "origin": "AWS::EC2::Instance",
        "http": {"request": request, "response": {"status": 202, "content_length": 96}},
        "aws": aws,
        "annotations": {
            "export_format": rng.choice(["csv", "parquet"]),
            "export_rows": rng.randint(10**4, 10**6),
        },
    }
    return [fragment, sql], [completed]


def _big_report_trace(rng: random.Random, ctx: _Ctx, start: float) -> list[dict[str, Any]]:
    """A batch job whose trace exceeds 1 MiB: pages sent as separate subsegment documents."""
    root_id = _sid(rng)
    documents: list[dict[str, Any]] = []
    page = 0
    cursor = start + 0.6
    total = 0
    while total < BIG_TRACE_MIN_BYTES:
        page += 1
        rows = [
            {
                "sku": f"SKU-{rng.randrange(10**6):06d}",
                "store": f"store-{rng.randrange(400):03d}",
                "units": rng.randint(1, 400),
                "revenue": round(rng.uniform(1, 9000), 2),
                "channel": rng.choice(["web", "app", "pos", "marketplace"]),
            }
            for _ in range(680)
        ]
        s, e = cursor, cursor + rng.uniform(0.6, 1.2)
        cursor = e + 0.01
        doc: dict[str, Any] = {
            "type": "subsegment",
            "id": _sid(rng),
            "name": "render_page",
            "trace_id": ctx.trace_id,
            "parent_id": root_id,
            "start_time": _t(s),
            "end_time": _t(e),
            "annotations": {"page": page, "report": "daily-sales"},
            "metadata": {"report": {"page": page, "rows": rows}},
        }
        size = document_size(doc)
        if size > MAX_SEGMENT_BYTES - 500:
            excess_rows = math.ceil((size - (MAX_SEGMENT_BYTES - 500)) / (size / len(rows)))
            del rows[len(rows) - excess_rows :]
            size = document_size(doc)
        total += size
        documents.append(doc)
    root: dict[str, Any] = {
        "id": root_id,
        "name": "report-builder",
        "start_time": _t(start),
        "end_time": _t(cursor + 0.2),
        "trace_id": ctx.trace_id,
        "origin": "AWS::ECS::Container",
        "aws": _host_aws(rng, ctx, "report-builder", "AWS::ECS::Container"),
        "annotations": {"report": "daily-sales", "pages": page, "partial": False},
        "subsegments": [_sql(rng, ctx, "reports", start + 0.05, start + 0.55)],
    }
    return [root, *documents]


def _cross_account_traces(
    rng: random.Random, caller: _Ctx, callee: _Ctx, start: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """checkout-web (caller account) → payments-api (callee account), one trace id."""
    duration = rng.uniform(0.3, 0.9)
    end = start + duration
    span = end - start
    call_id = _sid(rng)
    call_start, call_end = start + span * 0.35, start + span * 0.9
    annotations, metadata = _web_annotations_metadata(rng, "checkout-web")
    caller_segment: dict[str, Any] = {
        "id": _sid(rng),
        "name": "checkout-web",
        "start_time": _t(start),
        "end_time": _t(end),
        "trace_id": caller.trace_id,
        "origin": "AWS::EC2::Instance",
        "user": f"user-{rng.randrange(10**5):05d}",
        "http": {
            "request": {
                "method": "POST",
                "url": "https://checkout-web.example.com/checkout",
                "client_ip": _client_ip(rng),
                "user_agent": rng.choice(_USER_AGENTS),
            },
            "response": {"status": 200, "content_length": rng.randint(200, 4000)},
        },
        "aws": _host_aws(rng, caller, "checkout-web", "AWS::EC2::Instance"),
        "annotations": annotations,
        "metadata": metadata,
        "subsegments": [
            _sql(rng, caller, "orders", start + span * 0.05, start + span * 0.3),
            _remote_http(
                rng,
                "payments-api.internal.example",
                "POST",
                "/v1/charges",
                call_start,
                call_end,
                traced=True,
                subsegment_id=call_id,
            ),
        ],
    }
    callee_start, callee_end = call_start + 0.004, call_end - 0.003
    cspan = callee_end - callee_start
    callee_segment: dict[str, Any] = {
        "id": _sid(rng),
        "name": "payments-api",
        "start_time": _t(callee_start),
        "end_time": _t(callee_end),
        "trace_id": callee.trace_id,
        "parent_id": call_id,
        "origin": "AWS::ECS::Container",
        "http": {
            "request": {
                "method": "POST",
                "url": "https://payments-api.internal.example/v1/charges",
                "client_ip": "10.0.12.34",
                "user_agent": "python-requests/2.32.3",
                "x_forwarded_for": True,
            },
            "response": {"status": 200, "content_length": rng.randint(100, 900)},
        },
        "aws": _host_aws(rng, callee, "payments-api", "AWS::ECS::Container"),
        "annotations": {"caller_account": caller.account_id, "amount_cents": rng.randint(100, 90000)},
        "subsegments": [
            _dynamodb(
                rng,
                callee,
                "PutItem",
                "payment-ledger",
                callee_start + cspan * 0.1,
                callee_start + cspan * 0.6,
            ),
            _sns(rng, callee, "payment-events", callee_start + cspan * 0.65, callee_start + cspan * 0.9),
        ],
    }
    return [caller_segment], [callee_segment]


# --------------------------------------------------------------------------------- generation

# Every account starts with these (trimmed to traces_per_account); "big"/"cross" only in the first.
_MUST_HAVE_FIRST = [
    "big",
    "cross",
    "sfn:SUCCEEDED",
    "sfn:FAILED",
    "api:ok",
    "api:throttle",
    "api:fault",
    "web:fault",
    "in_progress",
    "api:error",
    "web:ok",
    "web:error",
    "web:throttle",
    "sfn:TIMED_OUT",
    "sfn:ABORTED",
]
_MUST_HAVE_OTHERS = [
    "sfn:SUCCEEDED",
    "api:ok",
    "web:ok",
    "sfn:FAILED",
    "in_progress",
    "api:fault",
    "web:fault",
]
_RANDOM_KINDS = [
    ("sfn:SUCCEEDED", 16),
    ("sfn:FAILED", 4),
    ("api:ok", 24),
    ("api:error", 3),
    ("api:throttle", 2),
    ("api:fault", 2),
    ("web:ok", 24),
    ("web:error", 3),
    ("web:throttle", 1),
    ("web:fault", 2),
    ("in_progress", 1),
]


def _kinds_for(rng: random.Random, index: int, accounts: int, count: int) -> list[str]:
    must = list(_MUST_HAVE_FIRST if index == 0 else _MUST_HAVE_OTHERS)
    if accounts < 2:
        must.remove("cross")
    kinds = must[:count]
    names = [k for k, _ in _RANDOM_KINDS]
    weights = [w for _, w in _RANDOM_KINDS]
    kinds.extend(rng.choices(names, weights=weights, k=count - len(kinds)))
    rng.shuffle(kinds)
    return kinds


def _start_times(rng: random.Random, count: int, window_start: float, window_end: float) -> list[float]:
    """Stratified over the window: evenly spread, jittered, deterministic."""
    step = (window_end - window_start) / max(count, 1)
    return [window_start + (i + rng.random()) * step for i in range(count)]


def generate_traffic(
    seed: int,
    accounts: list[MemberAccount],
    traces_per_account: int = 20,
    hours_back: float = 3.0,
    now: float | None = None,
) -> Traffic:
    """Plan and build every trace (pure: pass `now` for byte-identical output across runs).

    Each account gets `traces_per_account` traces that start in it, spread over
    [now - hours_back, now - END_MARGIN - MAX_TRACE] across its regions; the cross-account
    callee adds one trace (same id) to the second account.
    """
    if not accounts:
        raise ValueError("no member accounts")
    if traces_per_account < 1:
        raise ValueError("traces_per_account must be ≥ 1")
    now = time.time() if now is None else float(now)
    window_start = now - hours_back * 3600.0
    window_end = now - END_MARGIN_SECONDS - MAX_TRACE_SECONDS
    if window_end - window_start < 60.0:
        raise ValueError(f"hours_back={hours_back} leaves no room before now - {END_MARGIN_SECONDS:.0f} s")
    master = random.Random(f"xraylake-traffic:{seed}")
    regions: list[RegionTraffic] = []
    by_key: dict[tuple[str, str], RegionTraffic] = {}
    for account in accounts:
        for region in account.regions:
            item = RegionTraffic(account.account_id, account.name, region)
            regions.append(item)
            by_key[(account.account_id, region)] = item
    traffic = Traffic(seed=seed, now=now, hours_back=hours_back, regions=regions)
    boundary = math.ceil((window_start + 60.0) / 3600.0) * 3600.0
    for index, account in enumerate(accounts):
        account_rng = random.Random(master.getrandbits(64))
        kinds = _kinds_for(account_rng, index, len(accounts), traces_per_account)
        starts = _start_times(account_rng, traces_per_account, window_start, window_end)
        if boundary < window_end:  # one web request straddles an hour boundary
            candidates = [i for i, kind in enumerate(kinds) if kind.startswith("web:")]
            if candidates:
                nearest = min(candidates, key=lambda i: abs(starts[i] - boundary))
                starts[nearest] = boundary - 0.05
        for i, kind in enumerate(kinds):
            region = account.regions[i % len(account.regions)]
            trace_rng = random.Random(account_rng.getrandbits(64))
            start = starts[i]
            record = _build_trace(trace_rng, kind, account, region, start, accounts, index, by_key, traffic)
            by_key[(account.account_id, region)].traces.append(record)
    for record in traffic.traces:
        for doc in record.documents:
            _check_size(doc)
        for doc in record.completions:
            _check_size(doc)
    return traffic


def _build_trace(
    rng: random.Random,
    kind: str,
    account: MemberAccount,
    region: str,
    start: float,
    accounts: list[MemberAccount],
    index: int,
    by_key: dict[tuple[str, str], RegionTraffic],
    traffic: Traffic,
) -> TraceRecord:
    family, _, status = kind.partition(":")
    if family == "sfn":
        return _step_functions_trace(rng, account, region, start, status)
    trace_id = trace_id_for(start, f"{rng.getrandbits(96):024x}")
    ctx = _Ctx(account.account_id, region, trace_id)
    record = TraceRecord(trace_id, account.account_id, region, family, status or "ok", start, [])
    if family == "api":
        record.scenario = "api_gateway"
        record.documents = _api_gateway_trace(rng, ctx, start, status)
    elif family == "web":
        record.scenario = "web_service"
        record.documents = _web_service_trace(rng, ctx, start, status)
    elif family == "in_progress":
        record.documents, record.completions = _in_progress_trace(rng, ctx, start)
    elif family == "big":
        record.scenario = "batch_report"
        record.documents = _big_report_trace(rng, ctx, start)
        traffic.big_trace_id = trace_id
    elif family == "cross":
        callee_account = accounts[(index + 1) % len(accounts)]
        callee_region = callee_account.regions[0]
        callee_ctx = _Ctx(callee_account.account_id, callee_region, trace_id)
        caller_docs, callee_docs = _cross_account_traces(rng, ctx, callee_ctx, start)
        record.scenario = "cross_account_caller"
        record.documents = caller_docs
        by_key[(callee_account.account_id, callee_region)].traces.append(
            TraceRecord(
                trace_id,
                callee_account.account_id,
                callee_region,
                "cross_account_callee",
                "ok",
                callee_docs[0]["start_time"],
                callee_docs,
            )
        )
        traffic.cross_account_trace_id = trace_id
    else:  # pragma: no cover - the kind lists above are closed
        raise ValueError(f"unknown trace kind {kind!r}")
    return record


def align_executions(traffic: Traffic, facts: dict[str, ExecutionFacts], keep_planned_times: bool = False) -> Traffic:
    """A copy of `traffic` whose Step Functions traces follow what DescribeExecution returned.

    With `keep_planned_times`, only status/error/cause come from `facts` (times and trace ids
    stay as planned). Traces of executions missing from `facts` keep their planned documents.
    """
    regions: list[RegionTraffic] = []
    for item in traffic.regions:
        traces: list[TraceRecord] = []
        for record in item.traces:
            plan = record.execution
            fact = facts.get(plan.execution_arn) if plan is not None else None
            if plan is None or fact is None:
                traces.append(record)
                continue
            if keep_planned_times:
                fact = replace(fact, start=plan.planned_start, stop=None)
            trace_id = trace_id_for(fact.start, plan.trace_suffix)
            documents = step_functions_documents(plan, fact, trace_id)
            for doc in documents:
                _check_size(doc)
            traces.append(
                replace(
                    record,
                    trace_id=trace_id,
                    start=fact.start,
                    status=_EXECUTION_TRACE_STATUS.get(fact.status, "error"),
                    documents=documents,
                )
            )
        regions.append(replace(item, traces=traces))
    return replace(traffic, regions=regions)


# ----------------------------------------------------------------------------------------- I/O


def _batches(documents: list[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in documents:
        if batch and (len(batch) >= PUT_BATCH_DOCUMENTS or size + len(text) > PUT_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(text)
        size += len(text)
    if batch:
        yield batch


def put_documents(client: Any, documents: list[dict[str, Any]], where: str = "") -> int:
    """PutTraceSegments in batches; any `UnprocessedTraceSegments` raises TrafficWriteError."""
    put = 0
    for batch in _batches([document_json(doc) for doc in documents]):
        response = client.put_trace_segments(TraceSegmentDocuments=batch)
        unprocessed = response.get("UnprocessedTraceSegments") or []
        if unprocessed:
            sample = ", ".join(f"{u.get('Id')}: {u.get('ErrorCode')} {u.get('Message')}" for u in unprocessed[:3])
            raise TrafficWriteError(f"{len(unprocessed)} of {len(batch)} segments unprocessed {where}: {sample}")
        put += len(batch)
    return put


@contextlib.contextmanager
def _quiet_expected_failures() -> Iterator[None]:
    """moto logs each Fail state at ERROR; those failures are the point of the scenario."""
    logger = logging.getLogger("moto.stepfunctions.parser.asl.component.eval_component")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _ensure_state_machine(client: Any, account_id: str, region: str, spec: MachineSpec) -> str:
    arn = f"arn:aws:states:{region}:{account_id}:stateMachine:{spec.name}"
    try:
        created = client.create_state_machine(
            name=spec.name,
            definition=orjson.dumps(spec.definition()).decode(),
            roleArn=f"arn:aws:iam::{account_id}:role/xraylake-sandbox-states",
            type="STANDARD",
            tracingConfiguration={"enabled": True},
            tags=[{"key": "app", "value": "xraylake-sandbox"}],
        )
        return str(created["stateMachineArn"])
    except ClientError as error:
        if _error_code(error) != "StateMachineAlreadyExists":
            raise
        return arn


def _as_epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def run_executions(traffic: Traffic, sessions: Any, timeout: float = 60.0) -> dict[str, ExecutionFacts]:
    """Create the state machines, start every planned execution, stop the ABORTED ones, wait.

    Returns DescribeExecution facts by execution ARN. Idempotent: an execution that already
    exists (same deterministic name) is described, not restarted.
    """
    plans = traffic.executions
    if not plans:
        return {}
    clients: dict[tuple[str, str], Any] = {}
    machines: dict[tuple[str, str, str], str] = {}
    for plan in plans:
        key = (plan.account_id, plan.region)
        if key not in clients:
            clients[key] = sessions.client(plan.account_id, plan.region, "stepfunctions")
        client = clients[key]
        machine_key = (plan.account_id, plan.region, plan.state_machine)
        if machine_key not in machines:
            spec = MACHINES[plan.state_machine]
            machines[machine_key] = _ensure_state_machine(client, plan.account_id, plan.region, spec)
        try:
            client.start_execution(stateMachineArn=machines[machine_key], name=plan.name, input=plan.input)
        except ClientError as error:
            if _error_code(error) != "ExecutionAlreadyExists":
                raise
        if plan.stop_after is not None:  # stop it now, well before the machine's TimeoutSeconds
            time.sleep(plan.stop_after)
            with contextlib.suppress(ClientError):  # already stopped by an earlier run
                client.stop_execution(
                    executionArn=plan.execution_arn,
                    error="Operator.Cancelled",
                    cause="cancelled by the on-call engineer",
                )
    facts: dict[str, ExecutionFacts] = {}
    pending = {plan.execution_arn: plan for plan in plans}
    deadline = time.monotonic() + timeout
    while pending:
        for arn, plan in list(pending.items()):
            described = clients[(plan.account_id, plan.region)].describe_execution(executionArn=arn)
            if described["status"] == "RUNNING":
                continue
            start = _as_epoch(described["startDate"]) or plan.planned_start
            stop = _as_epoch(described.get("stopDate"))
            if stop is None and described["status"] == "TIMED_OUT":  # moto omits stopDate here
                stop = start + MACHINES[plan.state_machine].timeout_seconds
            facts[arn] = ExecutionFacts(
                execution_arn=arn,
                state_machine_arn=str(described["stateMachineArn"]),
                name=str(described["name"]),
                status=str(described["status"]),
                start=start,
                stop=stop,
                error=described.get("error"),
                cause=described.get("cause"),
            )
            del pending[arn]
        if pending:
            if time.monotonic() > deadline:
                raise TrafficWriteError(f"{len(pending)} executions still RUNNING after {timeout:.0f} s")
            time.sleep(0.1)
    return facts


def _sessions_for(roster: Roster, traffic: Traffic, sessions: Any) -> Any:
    for item in traffic.regions:
        roster.get(item.account_id)  # unknown accounts fail before any write
    if sessions is not None:
        return sessions
    from tasks.aws import MemberSessions

    return MemberSessions(roster)


def write_traffic(
    traffic: Traffic,
    roster: Roster,
    sessions: Any = None,
    *,
    align_execution_times: bool = True,
    execution_timeout: float = 60.0,
) -> WriteReport:
    """Run the executions, then put every document into its member account with its own role."""
    began = time.monotonic()
    sessions = _sessions_for(roster, traffic, sessions)
    with _quiet_expected_failures():
        facts = run_executions(traffic, sessions, timeout=execution_timeout)
    written = align_executions(traffic, facts, keep_planned_times=not align_execution_times)
    regions: list[RegionWrite] = []
    for item in written.regions:
        put = 0
        if item.traces:
            client = sessions.client(item.account_id, item.region, "xray")
            put = put_documents(client, item.documents, f"in {item.account_id}/{item.region}")
        statuses = Counter(
            facts[e.execution_arn].status if e.execution_arn in facts else e.planned_status for e in item.executions
        )
        regions.append(
            RegionWrite(
                account_id=item.account_id,
                account_name=item.account_name,
                region=item.region,
                traces=len(item.trace_ids),
                segments=item.segment_count,
                documents_put=put,
                in_progress=len(item.completions),
                executions=dict(sorted(statuses.items())),
                trace_ids=item.trace_ids,
            )
        )
    executions = []
    for record in written.traces:
        plan = record.execution
        if plan is None or plan.execution_arn not in facts:
            continue
        fact = facts[plan.execution_arn]
        executions.append(
            ExecutionResult(
                account_id=plan.account_id,
                region=plan.region,
                state_machine_arn=fact.state_machine_arn,
                execution_arn=fact.execution_arn,
                name=fact.name,
                planned_status=plan.planned_status,
                status=fact.status,
                start=datetime.fromtimestamp(fact.start, UTC),
                stop=datetime.fromtimestamp(fact.stop, UTC) if fact.stop is not None else None,
                trace_id=record.trace_id,
            )
        )
    report = WriteReport(
        seed=traffic.seed,
        regions=regions,
        executions=executions,
        big_trace_id=written.big_trace_id,
        cross_account_trace_id=written.cross_account_trace_id,
        aligned_execution_times=align_execution_times,
        seconds=round(time.monotonic() - began, 3),
    )
    for mismatch in report.execution_mismatches:
        log.warning(
            "execution %s ended %s (planned %s)",
            mismatch.execution_arn,
            mismatch.status,
            mismatch.planned_status,
        )
    return report


def complete_in_progress(traffic: Traffic, roster: Roster, sessions: Any = None) -> CompletionReport:
    """Put the completed versions of the in-progress segments (same ids, with end_time)."""
    began = time.monotonic()
    sessions = _sessions_for(roster, traffic, sessions)
    completed: dict[str, int] = {}
    for item in traffic.regions:
        documents = item.completions
        if not documents:
            continue
        client = sessions.client(item.account_id, item.region, "xray")
        completed[f"{item.account_id}/{item.region}"] = put_documents(
            client, documents, f"(completions) in {item.account_id}/{item.region}"
        )
    return CompletionReport(completed=completed, seconds=round(time.monotonic() - began, 3))


__all__ = [
    "MACHINES",
    "MAX_SEGMENT_BYTES",
    "CompletionReport",
    "ExecutionFacts",
    "ExecutionResult",
    "MachineSpec",
    "PlannedExecution",
    "RegionTraffic",
    "RegionWrite",
    "TraceRecord",
    "Traffic",
    "TrafficWriteError",
    "WriteReport",
    "align_executions",
    "complete_in_progress",
    "document_json",
    "document_size",
    "generate_traffic",
    "planned_facts",
    "put_documents",
    "run_executions",
    "step_functions_documents",
    "trace_id_for",
    "write_traffic",
]
