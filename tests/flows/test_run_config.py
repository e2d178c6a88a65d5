"""`load_run_config`, the one way a run (and the CLI) gets its configuration: the roster resolved as
the run uses it, against the moto server (no Prefect server needed)."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest

from blocks import OrganizationsSource, UnknownAccountError
from blocks.config import Config
from flows.parameters import BackfillParameters, CommitParameters, SweepParameters
from sandbox import seed
from tasks.organizations import load_run_config


def test_each_run_resolves_the_roster_as_it_uses_it(fresh_config: Config, tmp_path: Path) -> None:
    static_path = tmp_path / "static.json"
    static_path.write_bytes(fresh_config.to_json())
    static = load_run_config(str(static_path))
    assert static.roster.source == "static" and static.config.roster.accounts == fresh_config.roster.accounts
    assert static.roster.describe() == "static, 3 accounts"

    org = boto3.client("organizations")
    root = org.list_roots()["Roots"][0]["Id"]
    ou = org.create_organizational_unit(ParentId=root, Name=f"c-{uuid.uuid4().hex[:8]}")["OrganizationalUnit"]["Id"]
    created = org.create_account(Email=f"one-{uuid.uuid4().hex[:6]}@example.com", AccountName="one")
    one = str(created["CreateAccountStatus"]["AccountId"])
    org.move_account(AccountId=one, SourceParentId=root, DestinationParentId=ou)
    source = OrganizationsSource(
        role_arn=f"arn:aws:iam::{seed.LOG_ACCOUNT_ID}:role/{seed.ORGANIZATIONS_READER_ROLE}", parents=[ou]
    )
    roster = fresh_config.roster.model_copy(update={"source": "organizations", "organizations": source, "accounts": []})
    path = tmp_path / "org.json"
    path.write_bytes(fresh_config.model_copy(update={"roster": roster}).to_json())

    # commit names no account: the roster is left as configured, Organizations is not asked
    assert load_run_config(str(path), roster=CommitParameters.roster_use).roster.source == "unresolved"
    first = load_run_config(str(path), roster=BackfillParameters.roster_use)  # no cache yet: discovered
    assert first.roster.source == "organizations" and [a.account_id for a in first.config.roster.accounts] == [one]
    again = load_run_config(str(path))
    assert again.roster.source == "cache" and again.config.roster.accounts == first.config.roster.accounts
    assert again.roster.describe().startswith("cache, 1 accounts (fetched ")
    assert SweepParameters.roster_use == "beside"  # the cached roster, refreshed beside the sweep

    # an id the cached roster does not know: the one line says when it was read and what refreshes it
    with pytest.raises(UnknownAccountError) as unknown:
        again.config.roster.get("000000000042")
    explained = str(again.roster.explain(unknown.value))
    assert "is not in the roster" in explained and "joins it at the next sweep" in explained
