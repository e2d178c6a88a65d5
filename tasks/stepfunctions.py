"""Step Functions: execution ARNs and DescribeExecution through the member role."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tasks.errors import classify_aws_error

_EXECUTION_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):states:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?P<kind>execution|express):(?P<state_machine>[A-Za-z0-9_.-]{1,80}):(?P<name>[A-Za-z0-9_.:-]{1,80})$"
)


@dataclass(frozen=True)
class ExecutionArn:
    arn: str
    partition: str
    region: str
    account_id: str
    state_machine: str
    name: str

    @property
    def state_machine_arn(self) -> str:
        return f"arn:{self.partition}:states:{self.region}:{self.account_id}:stateMachine:{self.state_machine}"


def parse_execution_arn(arn: str) -> ExecutionArn:
    match = _EXECUTION_ARN.match(arn.strip())
    if not match:
        raise ValueError(
            f"malformed Step Functions execution ARN {arn!r}: expected "
            "arn:aws:states:<region>:<12-digit account>:execution:<state machine>:<execution name>"
        )
    return ExecutionArn(
        arn=arn.strip(),
        partition=match["partition"],
        region=match["region"],
        account_id=match["account"],
        state_machine=match["state_machine"],
        name=match["name"],
    )


def _json_safe(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def describe_execution(states_client: Any, arn: str) -> dict[str, Any]:
    """DescribeExecution as a JSON-safe dict (dates as RFC 3339), without ResponseMetadata."""
    try:
        response = states_client.describe_execution(executionArn=arn)
    except Exception as error:
        raise classify_aws_error(error, f"DescribeExecution {arn}") from error
    return {k: _json_safe(v) for k, v in response.items() if k != "ResponseMetadata"}


def state_machine_filter(state_machine: str) -> str:
    """X-Ray filter expression for traces through one state machine."""
    return f'service(id(name: "{state_machine}", type: "AWS::StepFunctions::StateMachine"))'


def trace_mentions(trace: dict[str, Any], needle: str) -> bool:
    """Whether any segment document of a trace mentions `needle` (e.g. the execution ARN)."""
    return any(needle in str(segment.get("Document", "")) for segment in trace.get("Segments", []))
