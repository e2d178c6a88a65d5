"""Step Functions execution details for the consumer, against real (moto) executions."""

from __future__ import annotations

import time

from blocks.config import Config
from sandbox.traffic import generate_traffic, write_traffic
from tasks.aws import MemberSessions
from tasks.executions import FINAL_STATUSES, ExecutionDetails


def test_finished_executions_are_described_once_and_the_cache_stays_bounded(fresh_config: Config) -> None:
    planned = generate_traffic(5, fresh_config.roster.accounts, traces_per_account=14, hours_back=2.0, now=time.time())
    report = write_traffic(planned, fresh_config.roster)
    finished = [e.execution_arn for e in report.executions if e.status in FINAL_STATUSES][:3]
    assert len(finished) == 3
    details = ExecutionDetails(
        MemberSessions(fresh_config.roster), [a.account_id for a in fresh_config.roster.accounts], cache_entries=2
    )
    described = [details.describe(arn) for arn in finished]
    assert [d["executionArn"] for d in described if d] == finished
    assert details.calls == 3
    assert details.describe(finished[2]) == described[2]  # still cached
    assert details.calls == 3
    assert details.describe(finished[0]) == described[0]  # the oldest was evicted: described again
    assert details.calls == 4
    assert details.failures == 0


def test_executions_outside_the_roster_or_malformed_are_not_described(fresh_config: Config) -> None:
    details = ExecutionDetails(
        MemberSessions(fresh_config.roster), [a.account_id for a in fresh_config.roster.accounts]
    )
    assert details.describe("arn:aws:states:us-east-1:999999999999:execution:machine:run") is None
    assert details.describe("not-an-arn") is None
    assert details.calls == 0
