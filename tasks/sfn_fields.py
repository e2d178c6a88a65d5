"""The Step Functions fields of a trace document (pure): what the trace's state machine segment
says, overridden by the execution's DescribeExecution output when the consumer has it (payloads
redacted by the policy). The I/O that fetches executions lives in `tasks.stepfunctions`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from tasks.coerce import MAX_NAME, iso_ms, to_text
from tasks.redact import RedactionPolicy
from tasks.tracetime import epoch_us

__all__ = ["SFN_FIELDS", "SFN_ORIGIN", "StateMachineSegment", "step_functions_fields"]

SFN_ORIGIN = "AWS::StepFunctions::StateMachine"
_STATE_MACHINE_ARN = re.compile(r"^(arn:[^:]+:states:[^:]*:[^:]*):(?:stateMachine|express|execution):([^:]+)")

SFN_FIELDS = (
    "step_functions",
    "execution_arn",
    "execution_name",
    "state_machine_name",
    "state_machine_arn",
    "execution_status",
    "execution_status_source",
    "execution_start",
    "execution_stop",
    "execution_duration_seconds",
    "execution_input",
    "execution_input_truncated",
    "execution_output",
    "execution_output_truncated",
    "execution_error",
    "execution_cause",
)


class StateMachineSegment(NamedTuple):
    """The trace's earliest segment with origin `SFN_ORIGIN`."""

    doc: dict[str, Any]  # its segment document
    arns: tuple[Any, ...]  # aws.execution_arn, aws.state_machine_arn, resource_arn (as found)
    start_us: int | None
    end_us: int | None


def step_functions_fields(
    machine: StateMachineSegment | None,
    execution: Any,
    policy: RedactionPolicy,
    problem: Callable[[str | None, str], None],
) -> dict[str, Any]:
    """`SFN_FIELDS` of the trace document; `execution` is `TraceContext.execution`."""
    execution = execution if isinstance(execution, dict) and execution else None
    if execution is not None and machine is not None:
        traced_arn = next((a for a in machine.arns if type(a) is str and ":execution:" in a), None)
        described_arn = execution.get("executionArn")
        if traced_arn and type(described_arn) is str and described_arn and described_arn != traced_arn:
            problem(None, f"execution details are for {described_arn[:200]}, not {traced_arn[:200]}; ignored")
            execution = None
    fields: dict[str, Any] = dict.fromkeys(SFN_FIELDS)
    fields["step_functions"] = machine is not None or execution is not None
    if not fields["step_functions"]:
        return fields
    start_us = stop_us = None
    if machine is not None:
        doc = machine.doc
        for candidate in machine.arns:
            if type(candidate) is not str:
                continue
            if ":execution:" in candidate or ":express:" in candidate:
                fields["execution_arn"] = fields["execution_arn"] or candidate[:MAX_NAME]
            elif ":stateMachine:" in candidate:
                fields["state_machine_arn"] = fields["state_machine_arn"] or candidate[:MAX_NAME]
        fields["state_machine_name"] = doc["name"]
        start_us, stop_us = machine.start_us, machine.end_us
        if doc["in_progress"] and stop_us is None:
            fields["execution_status"] = "RUNNING"
        elif doc["status"] != "ok":
            fields["execution_status"] = "FAILED"
        else:
            fields["execution_status"] = "SUCCEEDED"
        fields["execution_status_source"] = "trace"
    if execution is not None:
        get = execution.get
        arn = get("executionArn")
        if type(arn) is str and arn:
            fields["execution_arn"] = arn[:MAX_NAME]
        machine_arn = get("stateMachineArn")
        if type(machine_arn) is str and machine_arn:
            fields["state_machine_arn"] = machine_arn[:MAX_NAME]
        name = get("name")
        if type(name) is str and name:
            fields["execution_name"] = name[:MAX_NAME]
        status = get("status")
        if type(status) is str and status:
            fields["execution_status"] = status[:64]
            fields["execution_status_source"] = "describe_execution"
        described_start = epoch_us(get("startDate"))
        described_stop = epoch_us(get("stopDate"))
        if described_start is not None:
            # A finished execution described without stopDate (seen for TIMED_OUT) keeps the
            # state machine segment's end rather than losing its duration.
            finished = fields["execution_status"] != "RUNNING"
            start_us, stop_us = (
                described_start,
                described_stop if described_stop is not None or not finished else stop_us,
            )
        elif described_stop is not None:
            stop_us = described_stop
        for key, text_field, flag_field in (
            ("input", "execution_input", "execution_input_truncated"),
            ("output", "execution_output", "execution_output_truncated"),
        ):
            value = get(key)
            if value is not None:
                fields[text_field], fields[flag_field] = policy.redact_payload(value)
        error = get("error")
        if error is not None:
            fields["execution_error"] = to_text(error, MAX_NAME)
        cause = get("cause")
        if cause is not None:
            fields["execution_cause"] = policy.redact_payload(cause)[0]
    arn = fields["execution_arn"]
    if type(arn) is str:
        match = _STATE_MACHINE_ARN.match(arn)
        if match:
            if fields["state_machine_arn"] is None:
                fields["state_machine_arn"] = f"{match.group(1)}:stateMachine:{match.group(2)}"
            if fields["execution_name"] is None:
                fields["execution_name"] = arn.rsplit(":", 1)[-1][:MAX_NAME]
    machine_arn = fields["state_machine_arn"]
    if type(machine_arn) is str and ":stateMachine:" in machine_arn:
        fields["state_machine_name"] = machine_arn.split(":stateMachine:", 1)[1].split(":", 1)[0]
    fields["execution_start"] = iso_ms(start_us) if start_us is not None else None
    fields["execution_stop"] = iso_ms(stop_us) if stop_us is not None else None
    if start_us is not None and stop_us is not None and stop_us >= start_us:
        fields["execution_duration_seconds"] = (stop_us - start_us) / 1_000_000
    return fields
