"""Assumed-role sessions: cached, refreshed before the role session expires, denials translated."""

from __future__ import annotations

import pytest

from blocks import Roster
from sandbox.faults import FaultProxy, sts_access_denied
from tasks.aws import MemberSessions
from tasks.errors import AccountAccessError


def test_sessions_are_cached_and_refreshed_ahead_of_expiry(fresh_roster: Roster) -> None:
    now = [1000.0]
    roster = fresh_roster.model_copy(update={"session_duration_seconds": 900})
    sessions = MemberSessions(roster, clock=lambda: now[0])
    account = roster.accounts[0].account_id
    first = sessions.session(account, "us-east-1")
    assert sessions.session(account, "us-east-1") is first
    key = first.get_credentials().access_key
    now[0] += 599  # 900 s session, refreshed 300 s before it ends
    assert sessions.session(account, "us-east-1") is first
    now[0] += 2
    renewed = sessions.session(account, "us-east-1")
    assert renewed is not first
    assert renewed.get_credentials().access_key != key
    assert renewed.client("sts").get_caller_identity()["Account"] == account


def test_access_denied_on_assume_role_is_an_account_access_error(
    stack,
    fresh_roster: Roster,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    denied = fresh_roster.accounts[1].account_id
    with FaultProxy(stack.config.aws_endpoint_url) as proxy:
        proxy.add(sts_access_denied(denied))
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", proxy.url)
        sessions = MemberSessions(fresh_roster)
        with pytest.raises(AccountAccessError, match="AccessDenied"):
            sessions.session(denied, "us-east-1")
        assert sessions.session(fresh_roster.accounts[0].account_id, "us-east-1")


def test_the_prefect_aws_block_of_a_member_assumes_the_same_role(fresh_roster: Roster) -> None:
    from tasks.aws import assume_role_params, member_credentials

    account = fresh_roster.accounts[0].account_id
    block = member_credentials(fresh_roster, account, "us-east-1")
    params = assume_role_params(fresh_roster, account)
    assert block.assume_role_arn == params["RoleArn"] == fresh_roster.role_arn(account)
    assert params["ExternalId"] == fresh_roster.external_id.get_secret_value() != ""
    via_prefect_aws = block.get_boto3_session().client("sts").get_caller_identity()
    via_sessions = MemberSessions(fresh_roster).client(account, "us-east-1", "sts").get_caller_identity()
    assert via_prefect_aws["Account"] == via_sessions["Account"] == account
    assert via_prefect_aws["Arn"].split("/")[1] == via_sessions["Arn"].split("/")[1] == "xraylake-reader"
