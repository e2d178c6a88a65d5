"""Typed run parameters for the on-demand deployments: the Prefect UI renders them as forms.

`ReplayParameters` lives with its flow (`flows/replay.py`). `BackfillParameters` and
`CollectParameters` mirror the current keyword parameters of `flows/backfill.py` and
`flows/collect.py` one to one (same names, defaults and bounds), so a flow that takes
`params: BackfillParameters` keeps working with the same values; `as_kwargs()` gives the
keyword form the flows take today.

What the UI gets from these models, beyond the plain signature: a description under every
field, date-time pickers with a zone, number bounds (`minimum`/`maximum`) and an ARN pattern
that the form checks before a run is created.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Same shape tasks/stepfunctions.py parses (standard and express executions, any partition).
EXECUTION_ARN_PATTERN = (
    r"^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:(execution|express):[A-Za-z0-9_.-]{1,80}:[A-Za-z0-9_.:-]{1,80}$"
)


class BackfillParameters(BaseModel):
    """Collect a past time range (≤ 30 days old) for some or all accounts; resumable."""

    model_config = ConfigDict(extra="forbid")

    start: datetime = Field(
        description="From (inclusive), with a time zone, e.g. 2026-11-20T00:00:00Z. At most 30 days ago."
    )
    end: datetime = Field(description="Until (exclusive), with a time zone; not in the future.")
    accounts: list[str] | None = Field(
        default=None, description="Roster account ids (12 digits, keep leading zeros); empty = every account."
    )
    regions: list[str] | None = Field(default=None, description="Regions; empty = each account's enabled regions.")
    chunk_minutes: int = Field(
        default=60, ge=1, le=60, description="Window per X-Ray query (1–60 minutes; X-Ray windows stay ≤ 1 h)."
    )
    max_chunks: int | None = Field(
        default=None,
        ge=1,
        description="Chunks this run may collect; the next run with the same range resumes. Empty = all.",
    )
    fail_on_account_errors: bool = Field(
        default=True, description="End the run Failed when an account failed (the others are still collected)."
    )

    @model_validator(mode="after")
    def _range(self) -> BackfillParameters:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a time zone (e.g. 2026-11-20T00:00:00Z)")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword parameters `flows.backfill.backfill` takes today."""
        return self.model_dump()


class CollectParameters(BaseModel):
    """Collect the X-Ray traces of one Step Functions execution (account and region come from the ARN)."""

    model_config = ConfigDict(extra="forbid")

    execution_arn: str = Field(
        pattern=EXECUTION_ARN_PATTERN,
        description="arn:aws:states:<region>:<account>:execution:<state machine>:<execution name>",
        examples=["arn:aws:states:us-east-1:012345678901:execution:orders:run-42"],
    )
    padding_seconds: int = Field(
        default=60,
        ge=0,
        le=3600,
        description="Seconds added before the start and after the stop of the execution when listing traces.",
    )

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword parameters `flows.collect.collect` takes today."""
        return self.model_dump()
