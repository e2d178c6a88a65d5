"""One parameter model per flow: the flow, its CLI command and its deployment all use it.

A model holds its flow's parameter names, types, defaults and descriptions, and every rule JSON
Schema can express (bounds, patterns such as 12-digit account ids and execution ARNs, enums,
date-time formats, no unknown fields); rules across fields (end after start, not in the future)
are validators. `check(config)` adds what needs the
configuration (accounts in the roster, regions enabled for them): the CLI runs it before it
creates a flow run, the flow again at its start. Both check against the run's resolved roster
(`tasks.organizations.load_run_config`: the static list, or the accounts discovered from AWS
Organizations), so an account discovered there is known to every flow; one the roster retired is
refused as retired, with the date (`check_run`).

`@takes(Model)` gives a flow body `(params, run)` the signature Prefect sees: one flat
parameter per field whose JSON schema is the field's form schema (`form_properties`: title,
plain-text description, default, limits, patterns; optional values as their plain type so the
UI shows a list as a list), plus `config_path` and `config_block`. So the deployment's form
shows every field at the top level with its limits, and `enforce_parameter_schema` makes the
server refuse a bad value before a run exists (deployments/serve.py adds
`additionalProperties: false`). Flat rather than one nested `params` object, because Prefect
merges deployment, schedule and trigger parameters key by key: a run that sets `accounts`
keeps the deployment's other values.

At the start of a run the wrapper validates the values (a rule beyond the schema, such as end
after start, raises `InvalidParameters` with one line), loads the configuration (`config_path`,
else the `config_block` saved by `xraylake setup`, else $XRAYLAKE_CONFIG or the sandbox) with its
roster resolved as the model's `roster_use` says (the cached Organizations roster; the sweep
starts on it and refreshes it beside its work, or first when it names an account the cache lacks;
commit names no account and leaves it), logs the roster's source and size
(`flows.observe.announce_roster`) and runs
`check` (accounts in the roster). The body gets that `RunConfig` (`run.config`, `run.roster`,
`run.source`): the one way a run loads its configuration. Each of these failures, and any
exception of the body, is logged with its traceback and emitted as the flow's failure event
(`FlowParameters.failure_event`) before the run ends Failed with a one-line message.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from blocks import MemberAccount, UnknownAccountError
from blocks.config import Config, block_source, problems
from blocks.roster import MAX_SHARDS, shard_of
from tasks import replay as replay_tasks
from tasks import stepfunctions as sfn
from tasks.compaction import TABLES
from tasks.organizations import RosterUse, RunConfig, load_run_config, refreshed
from tasks.xray import TimeRangeType

XRAY_RETENTION = timedelta(days=30)
# The longest CloudWatch Logs retention (3653 days): no store xraylake reads keeps anything older.
# Each account's own horizon (X-Ray's 30 days, or its aws/spans retention) is applied by the backfill
# per (account, region), where the reader is known (flows/backfill.py).
BACKFILL_MAX_AGE = timedelta(days=3653)
# Threads are cheap waiting on I/O; a sweep's `concurrency` (a semaphore) bounds the work.
MAX_ACCOUNT_THREADS = 64
ACCOUNT_ID_PATTERN = r"^\d{12}$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$"
# The shape tasks/stepfunctions.py parses (standard and express executions, any partition),
# without named groups: the Prefect UI checks the pattern in JavaScript.
# RFC 3339 with a time zone: the server's schema check ignores `format`, but enforces `pattern`.
DATETIME_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})$"
EXECUTION_ARN_PATTERN = (
    r"^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:(execution|express):[A-Za-z0-9_.-]{1,80}:[A-Za-z0-9_.:-]{1,80}$"
)


def _matching(pattern: str, expected: str) -> BeforeValidator:
    """The pattern's check with a message people read (the pattern itself stays in the schema)."""
    compiled = re.compile(pattern)

    def check(value: object) -> object:
        if isinstance(value, str) and not compiled.match(value):
            raise ValueError(f"{value!r} is not {expected}")
        return value

    return BeforeValidator(check)


def _execution_arn(value: object) -> object:
    return sfn.parse_execution_arn(value).arn if isinstance(value, str) else value


AccountId = Annotated[
    str,
    Field(pattern=ACCOUNT_ID_PATTERN),
    _matching(ACCOUNT_ID_PATTERN, "an account id (12 digits, keep leading zeros)"),
]
Region = Annotated[str, Field(pattern=REGION_PATTERN), _matching(REGION_PATTERN, "an AWS region name like us-east-1")]
ExecutionArn = Annotated[
    str,
    Field(pattern=EXECUTION_ARN_PATTERN, examples=["arn:aws:states:us-east-1:012345678901:execution:orders:run-42"]),
    BeforeValidator(_execution_arn),
]
Accounts = Annotated[
    list[AccountId] | None,
    Field(description="Roster account ids (12 digits, keep leading zeros); empty = every roster account."),
]
Regions = Annotated[list[Region] | None, Field(description="Regions; empty = each account's enabled regions.")]
FailOnAccountErrors = Annotated[
    bool, Field(description="End the run Failed when an account failed (the others are still collected).")
]
TableName = Literal["traces", "segments"]


class InvalidParameters(ValueError):
    """Parameter values the model refuses; the message is one line naming each problem."""


class FlowParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # How the run resolves the roster (tasks.organizations.RosterUse): runs that act on accounts
    # use the cached Organizations roster; the sweep refreshes it; a run naming no account, none.
    roster_use: ClassVar[RosterUse] = "cached"

    def check(self, config: Config) -> None:
        """Refuse what the configuration rules out, before any work (nothing by default)."""

    def flow_kwargs(self) -> dict[str, Any]:
        """The flow's keyword parameters (every field, as validated)."""
        return {name: getattr(self, name) for name in type(self).model_fields}

    def failure_event(self, flow: str, error: BaseException) -> tuple[str, str, dict[str, Any]]:
        """(event, resource id, payload) announcing that a run of `flow` failed with `error`:
        an account outside the roster is `xraylake.account.failed` on that account, anything
        else `xraylake.flow.failed` on the flow (automations.yaml alerts on both)."""
        payload = {"flow": flow, "error": message_of(error), "error_kind": type(error).__name__}
        if isinstance(error, UnknownAccountError):
            return "xraylake.account.failed", f"aws.account.{error.account_id}", payload
        return "xraylake.flow.failed", f"xraylake.flow.{flow}", payload


def check_run(params: FlowParameters, run: RunConfig) -> None:
    """`params.check` against the run's resolved roster; an account the roster retired is
    refused as retired (since when, why), not as unknown."""
    try:
        params.check(run.config)
    except UnknownAccountError as error:
        raise run.roster.explain(error) from None


def params_known(params: FlowParameters, run: RunConfig) -> bool:
    """Whether `params` pass their check against the run's roster (False: an unknown account)."""
    try:
        params.check(run.config)
    except UnknownAccountError:
        return False
    except Exception:  # any other problem is reported by check_run, with the roster announced
        return True
    return True


def message_of(error: BaseException, limit: int = 500) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split())[:limit]


def one_line(error: BaseException, limit: int = 500) -> str:
    """`Kind: message` on one line (a log line, a state message)."""
    return f"{type(error).__name__}: {message_of(error)}"[:limit]


def plain(text: str) -> str:
    """A description the Prefect UI shows as written: it renders markdown and drops `<…>` as HTML."""
    return " ".join(text.replace("`", "").replace("<", "").replace(">", "").split())


def form_properties(model: type[FlowParameters]) -> dict[str, dict[str, Any]]:
    """Each field's JSON schema as the run form and the server's check should see it: optional
    values as their plain type (the UI renders `anyOf [list, null]` as "Property is type
    'None'"; leaving a field empty keeps its default), date-times with an RFC 3339 pattern
    (the server does not check `format`), descriptions in plain text."""
    properties: dict[str, dict[str, Any]] = {}
    for name, schema in model.model_json_schema()["properties"].items():
        schema = dict(schema)
        options = schema.get("anyOf")
        if options:
            concrete = [o for o in options if o.get("type") != "null"]
            if len(concrete) == 1 and len(concrete) < len(options):
                del schema["anyOf"]
                schema = concrete[0] | schema
        if schema.get("format") == "date-time":
            schema["pattern"] = DATETIME_PATTERN
        if "description" in schema:
            schema["description"] = plain(schema["description"])
        properties[name] = schema
    return properties


CONFIG_PATH_SCHEMA: dict[str, Any] = {
    "type": "string",
    "title": "Config file",
    "description": "Path of a JSON config file on the machine that runs the flow; empty = the config block.",
}
CONFIG_BLOCK_SCHEMA: dict[str, Any] = {
    "type": "string",
    "title": "Config block",
    "pattern": r"^[a-z0-9-]+$",
    "description": "Name of the saved xraylake Config block (Blocks page; xraylake setup saves it). "
    "Used when no config file is given; empty = $XRAYLAKE_CONFIG or the sandbox.",
}

P = TypeVar("P", bound=FlowParameters)
R = TypeVar("R")


def _announce_failure(
    flow: str, model: type[FlowParameters], params: FlowParameters | None, values: dict[str, Any], error: BaseException
) -> None:
    """The flow's failure event; with values the model refused, from those values as given
    (so a collect of a malformed ARN still names the execution)."""
    from flows.observe import emit

    if params is None:
        params = model.model_construct(**{k: v for k, v in values.items() if k in model.model_fields})
    try:
        event, resource, payload = params.failure_event(flow, error)
    except Exception:  # a value too broken to name: the flow's own event
        event, resource, payload = FlowParameters.model_construct().failure_event(flow, error)
    emit(event, resource, payload)


def takes(model: type[P]) -> Callable[[Callable[[P, RunConfig], R]], Callable[..., R]]:
    """Decorate a flow body `(params, run)` (under `@flow`): Prefect, the UI form and
    callers see one keyword parameter per field of `model`, plus `config_path` and
    `config_block`; the body gets the validated model and the run's configuration, its roster
    resolved (see the module docstring for what happens before and around it)."""
    properties = form_properties(model)
    assert "$ref" not in str(properties), f"{model.__name__}: a flat form needs inline field schemas"

    def decorate(body: Callable[[P, RunConfig], R]) -> Callable[..., R]:
        flow_name = body.__name__

        @functools.wraps(body)
        def flow_fn(config_path: str | None = None, config_block: str | None = None, **values: Any) -> R:
            from flows.observe import announce_roster, mark_started, run_logger

            mark_started()
            logger = run_logger()
            params: P | None = None
            try:
                try:
                    params = model.model_validate(values)
                except ValidationError as error:
                    raise InvalidParameters(problems(error)) from None
                source = config_path or (block_source(config_block) if config_block else None)
                run = load_run_config(source, roster=model.roster_use)
                if model.roster_use == "beside" and not params_known(params, run):
                    run = refreshed(run)  # a named account may be newer than the cached roster
                if model.roster_use != "none":
                    announce_roster(flow_name, run)
                check_run(params, run)
            except Exception as error:
                logger.error("%s refused before any work: %s", flow_name, one_line(error), exc_info=True)
                _announce_failure(flow_name, model, params, values, error)
                raise
            logger.info(
                "%s starting with %s (configuration: %s)",
                flow_name,
                params.model_dump_json(exclude_defaults=True) or "{}",
                source or "$XRAYLAKE_CONFIG or the sandbox",
            )
            try:
                result = body(params, run)
            except Exception as error:
                logger.error("%s failed: %s", flow_name, one_line(error), exc_info=True)
                _announce_failure(flow_name, model, params, values, error)
                raise
            message = getattr(result, "message", None)
            if message:
                logger.info("%s finished: %s", flow_name, message)
            return result

        parameters = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                # Prefect reads a Field default's json_schema_extra into the parameter's schema;
                # the values themselves are checked once, by the model.
                default=Field(
                    default=... if field.is_required() else field.get_default(call_default_factory=True),
                    json_schema_extra=properties[name],
                ),
                annotation=Any,
            )
            for name, field in model.model_fields.items()
        ]
        for name, schema in (("config_path", CONFIG_PATH_SCHEMA), ("config_block", CONFIG_BLOCK_SCHEMA)):
            parameters.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=Field(default=None, json_schema_extra=dict(schema)),
                    annotation=Any,
                )
            )
        flow_fn.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        return flow_fn

    return decorate


# ----------------------------------------------------------------------------- collecting


class SweepParameters(FlowParameters):
    """Incremental sweep: every roster account and region (or the named ones) from its watermark."""

    accounts: Accounts = None
    regions: Regions = None
    lag_seconds: int = Field(
        default=120, ge=0, le=3600, description="Windows end this long before now (X-Ray lists traces with a delay)."
    )
    overlap_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="Each window starts this long before the watermark: late and in-progress traces come again.",
    )
    max_window_minutes: int = Field(
        default=60, ge=1, le=60, description="Longest X-Ray query window (1-60 minutes; X-Ray windows stay ≤ 1 h)."
    )
    first_lookback_minutes: int = Field(
        default=60,
        ge=1,
        le=int(XRAY_RETENTION.total_seconds() // 60),
        description="Where an account without a watermark starts (at most 30 days back, X-Ray's retention).",
    )
    time_range_type: TimeRangeType = Field(
        default="Event", description="X-Ray TimeRangeType: Event (segment times), TraceId (trace start) or Service."
    )
    concurrency: int = Field(
        default=32, ge=1, le=MAX_ACCOUNT_THREADS, description="Accounts/regions swept at the same time."
    )
    xray_rate_per_second: float | None = Field(
        default=None, gt=0, description="X-Ray calls per second per account and region; empty = the built-in rate."
    )
    fail_on_account_errors: FailOnAccountErrors = True
    shards: int = Field(
        default=1,
        ge=1,
        le=MAX_SHARDS,
        description=(
            "Split the accounts into this many shards, each swept by a child run of shard_deployment "
            "on any worker (1 = all in this run). For organizations too large for one process."
        ),
    )
    shard: int | None = Field(
        default=None,
        ge=0,
        lt=MAX_SHARDS,
        description="Sweep only the accounts of this shard (0-based, below shards); set by the parent sweep.",
    )
    shard_deployment: str = Field(
        default="sweep/sweep-shard",
        pattern=r"^[^/]+/[^/]+$",
        description="shards above 1 only: the deployment that sweeps one shard, as flow-name/deployment-name.",
    )

    roster_use: ClassVar[RosterUse] = "beside"

    @model_validator(mode="after")
    def _shard_below_shards(self) -> SweepParameters:
        if self.shard is not None and self.shard >= self.shards:
            raise ValueError(f"shard {self.shard} is not below shards {self.shards} (shards are 0-{self.shards - 1})")
        return self

    @property
    def fans_out(self) -> bool:
        """This run submits one child run per shard instead of sweeping accounts itself."""
        return self.shards > 1 and self.shard is None

    def targets(self, config: Config) -> list[tuple[MemberAccount, str]]:
        pairs = config.roster.targets(self.accounts, self.regions)
        if self.shard is None:
            return pairs
        return [(a, region) for a, region in pairs if shard_of(a.account_id, self.shards) == self.shard]

    def check(self, config: Config) -> None:
        config.roster.targets(self.accounts, self.regions)


class CollectParameters(FlowParameters):
    """Collect the X-Ray traces of one Step Functions execution (account and region come from the ARN)."""

    execution_arn: ExecutionArn = Field(
        description="The execution's ARN: arn:aws:states:REGION:ACCOUNT:execution:STATE_MACHINE:NAME"
    )
    padding_seconds: int = Field(
        default=60, ge=0, le=3600, description="Look this much before the start and after the stop for its segments."
    )

    def target(self, config: Config) -> tuple[MemberAccount, sfn.ExecutionArn]:
        parsed = sfn.parse_execution_arn(self.execution_arn)
        account = config.roster.get(parsed.account_id)
        if parsed.region not in account.regions:
            raise ValueError(
                f"region {parsed.region} is not enabled for account {account.account_id} ({account.name}); "
                f"enabled: {', '.join(account.regions)}"
            )
        return account, parsed

    def check(self, config: Config) -> None:
        self.target(config)

    def failure_event(self, flow: str, error: BaseException) -> tuple[str, str, dict[str, Any]]:
        """`xraylake.collect.failed` on the execution, whatever failed (unknown account included)."""
        return (
            "xraylake.collect.failed",
            f"aws.stepfunctions.execution.{self.execution_arn}",
            {"flow": flow, "error": message_of(error), "error_kind": type(error).__name__},
        )


def backfill_range(start: datetime, end: datetime, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) in UTC: zoned, not empty, not in the future, at most 10 years old (the longest
    CloudWatch Logs retention). How far back each account can be read depends on its reader
    (X-Ray: 30 days; Transaction Search: the log group's retention): the backfill checks that."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end need a time zone (e.g. 2026-11-20T00:00:00Z)")
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise ValueError(f"end {end.isoformat()} is not after start {start.isoformat()}")
    oldest = now - BACKFILL_MAX_AGE
    if start < oldest:
        raise ValueError(
            f"start {start.isoformat()} is older than 10 years, the longest CloudWatch Logs retention "
            f"(oldest: {oldest.isoformat()}); older traces can only be replayed from the archive (`xraylake replay`)"
        )
    if end > now:
        raise ValueError(f"end {end.isoformat()} is in the future")
    return start, end


class BackfillParameters(FlowParameters):
    """Collect a past range for some or all accounts, chunked; the same range again resumes. Each
    account is read back to its own horizon: X-Ray keeps 30 days, a Transaction Search account's
    `aws/spans` its retention (checked per account and region by the flow)."""

    start: datetime = Field(
        description="From (inclusive), with a time zone, e.g. 2026-11-20T00:00:00Z. X-Ray accounts are read "
        "back 30 days, Transaction Search accounts back to their aws/spans retention."
    )
    end: datetime = Field(description="Until (exclusive), with a time zone; not in the future.")
    accounts: Accounts = None
    regions: Regions = None
    chunk_minutes: int = Field(
        default=60, ge=1, le=60, description="Window per chunk and checkpoint (1-60 minutes; X-Ray windows ≤ 1 h)."
    )
    max_chunks: int | None = Field(
        default=None, ge=1, description="Chunks this run may collect; the same backfill again resumes. Empty = all."
    )
    fail_on_account_errors: FailOnAccountErrors = True
    fan_out: bool = Field(
        default=False,
        description=(
            "Run the chunks as child flow runs of the chunk deployment (any number of workers share them) "
            "instead of in this process."
        ),
    )
    chunks_per_run: int = Field(
        default=24, ge=1, le=720, description="fan_out only: chunks of one account and region per child flow run."
    )
    chunk_deployment: str = Field(
        default="backfill-chunk/backfill-chunk",
        pattern=r"^[^/]+/[^/]+$",
        description="fan_out only: the deployment that runs a group of chunks, as flow-name/deployment-name.",
    )

    @model_validator(mode="after")
    def _range(self) -> BackfillParameters:
        self.start, self.end = backfill_range(self.start, self.end, datetime.now(UTC))
        return self

    def targets(self, config: Config) -> list[tuple[MemberAccount, str]]:
        return config.roster.targets(self.accounts, self.regions)

    def check(self, config: Config) -> None:
        self.targets(config)


class BackfillChunkParameters(FlowParameters):
    """One group of a fanned-out backfill: consecutive chunks of one account and region."""

    backfill_id: str = Field(pattern=r"^[0-9a-f]{16}$", description="The parent backfill's id (its checkpoints).")
    account_id: Annotated[AccountId, Field(description="The roster account whose chunks this run collects.")]
    region: Annotated[Region, Field(description="The region of those chunks.")]
    start: datetime = Field(description="First chunk's start, with a time zone.")
    end: datetime = Field(description="Last chunk's end (exclusive), with a time zone.")
    chunk_minutes: int = Field(default=60, ge=1, le=60, description="Window per chunk and checkpoint (1-60 minutes).")

    @model_validator(mode="after")
    def _range(self) -> BackfillChunkParameters:
        self.start, self.end = backfill_range(self.start, self.end, datetime.now(UTC))
        return self

    def check(self, config: Config) -> None:
        config.roster.targets([self.account_id], [self.region])


# ----------------------------------------------------------------------------- ingesting


class ConsumeParameters(FlowParameters):
    """Drain the org queue into the archive (raw + Parquet) and OpenSearch."""

    until_empty: bool = Field(default=True, description="Stop after a poll that found the queue empty.")
    max_messages: int | None = Field(default=None, ge=1, description="Stop after this many messages; empty = no limit.")
    max_seconds: float | None = Field(default=None, gt=0, description="Stop after this many seconds; empty = no limit.")
    batch_messages: int = Field(default=100, ge=1, le=1000, description="Messages per batch (one task run each).")
    wait_seconds: int = Field(default=20, ge=0, le=20, description="SQS long-poll wait (0-20 seconds).")
    visibility_timeout: int = Field(
        default=300, ge=10, le=43200, description="Seconds a received message stays hidden (kept alive while in work)."
    )


class ReplayParameters(FlowParameters):
    """What to replay: archived envelopes of a time range, to the queue or straight into the sinks."""

    start: datetime = Field(description="Trace start time, from (UTC).")
    end: datetime = Field(description="Trace start time, until (exclusive).")
    accounts: Accounts = None
    regions: Regions = None
    target: Literal["queue", "direct"] = Field(
        default="queue", description="queue: re-send to the org queue; direct: write the sinks in-process."
    )
    sinks: list[Literal["index", "parquet", "raw"]] = Field(
        default=["index"], description="direct only: which sinks to write."
    )
    index_prefix: str | None = Field(
        default=None,
        description="direct only: write into PREFIX-traces-* etc. (re-index after a mapping change).",
    )
    dry_run: bool = Field(default=False, description="Only count what the archive holds.")
    rate_per_second: float | None = Field(default=None, gt=0, description="Max messages/envelopes per second.")
    force: bool = Field(
        default=False,
        description="Replay partitions again that an earlier run of this replay finished "
        "(by default the same replay resumes and skips them).",
    )

    @model_validator(mode="after")
    def _range(self) -> ReplayParameters:
        self.start, self.end = replay_tasks.validate_range(self.start, self.end)
        return self

    def targets(self, config: Config) -> list[tuple[str, list[str]]]:
        """(account id, regions) to replay."""
        by_account: dict[str, list[str]] = {}
        for account, region in config.roster.targets(self.accounts, self.regions):
            by_account.setdefault(account.account_id, []).append(region)
        return list(by_account.items())

    def check(self, config: Config) -> None:
        self.targets(config)


# ----------------------------------------------------------------------------- maintaining


def default_window(
    start: datetime | None, end: datetime | None, lookback_hours: int, settle_minutes: int, now: datetime
) -> tuple[datetime, datetime]:
    """Missing bounds: end = the last whole hour that settled, start = end - lookback_hours."""
    if lookback_hours < 1:
        raise ValueError("lookback_hours must be at least 1")
    if settle_minutes < 0:
        raise ValueError("settle_minutes must not be negative")
    if end is None:
        settled = now - timedelta(minutes=settle_minutes)
        end = settled if start is not None else settled.replace(minute=0, second=0, microsecond=0)
    if start is None:
        start = end - timedelta(hours=lookback_hours)
    return start, end


class ReconcileParameters(FlowParameters):
    """Compare trace ids per account/region/hour across X-Ray, raw archive, Parquet and index."""

    start: datetime | None = Field(default=None, description="From, with a time zone; empty = end - lookback_hours.")
    end: datetime | None = Field(
        default=None, description="Until, with a time zone; empty = the last whole hour that ended settle_minutes ago."
    )
    accounts: Accounts = None
    regions: Regions = None
    lookback_hours: int = Field(default=24, ge=1, le=24 * 90, description="Hours checked when start is empty.")
    settle_minutes: int = Field(
        default=30, ge=0, le=24 * 60, description="Leave this recent a stretch out (still being collected)."
    )
    repair: bool = Field(default=False, description="Re-collect or re-process what is missing, then check again.")
    consume_after_repair: bool = Field(default=True, description="Drain the queue after a repair sent envelopes.")
    time_range_type: TimeRangeType = Field(default="TraceId", description="X-Ray TimeRangeType for the X-Ray side.")
    max_ids: int = Field(
        default=50, ge=0, le=10000, description="Missing trace ids listed per account, region and hour."
    )
    fail_on_mismatch: bool = Field(default=False, description="End the run Failed when anything is missing.")

    @model_validator(mode="after")
    def _window(self) -> ReconcileParameters:
        self.window(datetime.now(UTC))
        return self

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end) in UTC as of `now` (empty bounds filled in), checked."""
        from tasks.reconcile import validate_window  # here: it loads duckdb and pandas (~60 MB a consumer spares)

        start, end = default_window(self.start, self.end, self.lookback_hours, self.settle_minutes, now)
        return validate_window(start, end, now)

    def targets(self, config: Config) -> list[tuple[MemberAccount, str]]:
        return config.roster.targets(self.accounts, self.regions)

    def check(self, config: Config) -> None:
        self.targets(config)


class CompactParameters(FlowParameters):
    """Rewrite each partition of the Iceberg tables deduplicated, expire snapshots, remove orphans."""

    accounts: Accounts = None
    start_date: date | None = Field(default=None, description="First day (the `dt` partition); empty = the oldest.")
    end_date: date | None = Field(default=None, description="Last day, inclusive; empty = the newest.")
    tables: list[TableName] | None = Field(default=None, description="traces and/or segments; empty = both.")
    rewrite_single_files: bool = Field(
        default=False, description="Also rewrite partitions already compacted into one file."
    )
    skip_recent_hours: int = Field(
        default=0, ge=0, le=24 * 30, description="Leave partitions whose hour ended less than this long ago."
    )
    snapshot_retention_hours: int = Field(
        default=24, ge=1, le=24 * 90, description="Expire snapshots older than this (the time-travel window)."
    )
    orphan_delay_minutes: int = Field(
        default=1440,
        ge=10,
        description="Unreferenced files younger than this stay (≥ 10: a writer may be about to commit them).",
    )
    dry_run: bool = Field(default=False, description="Only plan: list what would change.")

    @model_validator(mode="after")
    def _dates(self) -> CompactParameters:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date.isoformat()} is before start_date {self.start_date.isoformat()}")
        return self

    @property
    def chosen_tables(self) -> list[str]:
        return list(dict.fromkeys(self.tables or TABLES))

    def account_ids(self, config: Config) -> list[str] | None:
        """The roster accounts named (unknown ids raise); None = every partition's account."""
        return [a.account_id for a in config.roster.select(self.accounts)] if self.accounts else None

    def check(self, config: Config) -> None:
        self.account_ids(config)


class CommitParameters(FlowParameters):
    """Commit the consumers' Parquet files to the Iceberg tables (one run at a time)."""

    roster_use: ClassVar[RosterUse] = "none"

    tables: list[TableName] | None = Field(default=None, description="traces and/or segments; empty = both.")
    max_batches: int | None = Field(
        default=None, ge=1, description="Commit at most this many batches (snapshots) per table; empty = all."
    )

    @property
    def chosen_tables(self) -> list[str]:
        return list(dict.fromkeys(self.tables or TABLES))
