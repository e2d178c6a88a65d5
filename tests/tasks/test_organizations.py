"""The roster from AWS Organizations, against the moto server: filters, regions, cache, retirement,
and every bad input (an OU that does not exist, a tag filter matching nothing, no access)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from blocks import OrganizationsSource
from blocks.config import Config
from sandbox import seed
from tasks import organizations as orgs

ROLE_ARN = f"arn:aws:iam::{seed.LOG_ACCOUNT_ID}:role/{seed.ORGANIZATIONS_READER_ROLE}"


@dataclass
class Unit:
    """An OU of this test's own (under Root), with child OU `inner`, and the accounts created in it."""

    org: Any
    root: str
    ou: str
    inner: str
    accounts: dict[str, str] = field(default_factory=dict)  # name → id

    def add(self, name: str, tags: dict[str, str], inner: bool = False) -> str:
        status = self.org.create_account(
            Email=f"{name}-{uuid.uuid4().hex[:6]}@example.com",
            AccountName=name,
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )["CreateAccountStatus"]
        account_id = str(status["AccountId"])
        target = self.inner if inner else self.ou
        self.org.move_account(AccountId=account_id, SourceParentId=self.root, DestinationParentId=target)
        self.accounts[name] = account_id
        return account_id


@pytest.fixture
def unit(stack: Any) -> Unit:
    org = boto3.client("organizations", region_name="us-east-1")
    root = org.list_roots()["Roots"][0]["Id"]
    ou = org.create_organizational_unit(ParentId=root, Name=f"t-{uuid.uuid4().hex[:8]}")["OrganizationalUnit"]["Id"]
    inner = org.create_organizational_unit(ParentId=ou, Name="databases")["OrganizationalUnit"]["Id"]
    found = Unit(org, root, ou, inner)
    found.add("web-dev", {"environment": "dev", "team": "web"})
    found.add("web-prod", {"environment": "prod", "team": "web", "regions": "two"})
    found.add("db-any", {"team": "data"}, inner=True)  # no environment tag: the OU name stands in
    found.add("sandbox", {"team": "web", "xraylake": "off"})
    return found


def source(unit: Unit, **overrides: Any) -> OrganizationsSource:
    return OrganizationsSource.model_validate({"role_arn": ROLE_ARN, "parents": [unit.ou], **overrides})


def factory(role_arn: str = ROLE_ARN) -> Any:
    def build(src: OrganizationsSource) -> Any:
        return orgs.client_factory(None)(src.model_copy(update={"role_arn": role_arn}))  # type: ignore[arg-type]

    return build


def names(discovery: orgs.Discovery, unit: Unit) -> set[str]:
    by_id = {v: k for k, v in unit.accounts.items()}
    return {by_id[a.account_id] for a in discovery.accounts}


def test_ou_walk_and_tag_filters_select_exactly_the_right_accounts(unit: Unit) -> None:
    client = factory()(source(unit))
    assert names(orgs.discover(client, source(unit)), unit) == {"web-dev", "web-prod", "db-any", "sandbox"}
    assert names(orgs.discover(client, source(unit, parents=[unit.inner])), unit) == {"db-any"}
    web = source(unit, include_tags={"team": ["web"]}, exclude_tags={"xraylake": ["off"]})
    assert names(orgs.discover(client, web), unit) == {"web-dev", "web-prod"}
    any_env = source(unit, include_tags={"environment": []})  # the key present, any value
    assert names(orgs.discover(client, any_env), unit) == {"web-dev", "web-prod"}


def test_names_environments_and_regions_come_from_organizations_and_configuration(unit: Unit) -> None:
    src = source(
        unit,
        regions=["us-east-1"],
        regions_by_ou={"databases": ["eu-west-1"]},
        regions_by_tag={"regions=two": ["us-east-1", "eu-west-1"]},
    )
    found = {a.name: a for a in orgs.discover(factory()(src), src).accounts}
    assert found["web-dev"].environment == "dev" and found["web-dev"].regions == ["us-east-1"]
    assert found["web-prod"].regions == ["us-east-1", "eu-west-1"]
    assert "tag regions=two" in (found["web-prod"].origin or "")
    assert found["db-any"].environment == "databases" and found["db-any"].regions == ["eu-west-1"]
    assert found["db-any"].origin and "environment from OU name" in found["db-any"].origin
    assert found["web-dev"].account_id == unit.accounts["web-dev"]


def test_only_active_accounts_join_and_a_closed_one_is_retired_with_its_watermark_kept(
    unit: Unit, fresh_config: Config
) -> None:
    config = org_config(fresh_config, source(unit, cache_ttl_seconds=0))
    s3 = boto3.client("s3")
    first = orgs.resolve(config, s3, factory())
    assert first.source == "organizations" and first.retired == []
    assert {a.account_id for a in first.roster.accounts} == set(unit.accounts.values())
    unit.org.close_account(AccountId=unit.accounts["sandbox"])
    created = unit.add("web-new", {"team": "web"})
    second = orgs.resolve(config, s3, factory())
    ids = {a.account_id for a in second.roster.accounts}
    assert created in ids and unit.accounts["sandbox"] not in ids
    assert [(r.account_id, r.reason) for r in second.retired] == [(unit.accounts["sandbox"], "status SUSPENDED")]
    assert orgs.resolve(config, s3, factory()).retired == []  # said once, not every sweep


def test_a_cached_roster_is_reused_within_its_ttl_and_dropped_when_the_source_changes(
    unit: Unit, fresh_config: Config
) -> None:
    config = org_config(fresh_config, source(unit, cache_ttl_seconds=300))
    s3 = boto3.client("s3")
    now = datetime.now(UTC)
    assert orgs.resolve(config, s3, factory(), now=now).source == "organizations"
    unit.add("later", {"team": "web"})
    cached = orgs.resolve(config, s3, factory(), now=now + timedelta(seconds=60))
    assert cached.source == "cache" and len(cached.roster.accounts) == 4
    expired = orgs.resolve(config, s3, factory(), now=now + timedelta(seconds=400))
    assert expired.source == "organizations" and len(expired.roster.accounts) == 5
    # The consumer reads whatever roster the sweeps cached, however old, without Organizations.
    reader = orgs.resolve(
        config, s3, factory("arn:aws:iam::000000000000:role/none"), cached_only=True, now=now + timedelta(days=1)
    )
    assert reader.source == "cache" and len(reader.roster.accounts) == 5
    narrowed = org_config(fresh_config, source(unit, cache_ttl_seconds=300, parents=[unit.inner]))
    assert orgs.resolve(narrowed, s3, factory(), now=now + timedelta(seconds=410)).source == "organizations"


def test_an_ou_that_does_not_exist_is_a_clear_error_before_anything_else(unit: Unit, fresh_config: Config) -> None:
    missing = "ou-" + unit.ou.split("-")[1] + "-zzzzzzzz"
    config = org_config(fresh_config, source(unit, parents=[missing]))
    with pytest.raises(orgs.RosterError, match=f"OU {missing} does not exist in the organization"):
        orgs.resolve(config, boto3.client("s3"), factory())


def test_a_tag_filter_that_matches_nothing_is_a_clear_error(unit: Unit, fresh_config: Config) -> None:
    config = org_config(fresh_config, source(unit, include_tags={"team": ["nobody"]}))
    with pytest.raises(orgs.RosterError, match=r"include_tags=\{'team': \['nobody'\]\} matches none of the 4 accounts"):
        orgs.resolve(config, boto3.client("s3"), factory())


def test_no_access_to_organizations_is_a_clear_error_and_a_refresh_keeps_the_last_good_roster(
    unit: Unit, fresh_config: Config
) -> None:
    # A role in an account that is neither the management nor a delegated administrator account.
    outside = f"arn:aws:iam::0{uuid.uuid4().int % 10**11:011d}:role/{seed.ORGANIZATIONS_READER_ROLE}"
    config = org_config(fresh_config, source(unit, cache_ttl_seconds=0, parents=[]))  # the whole organization
    s3 = boto3.client("s3")
    with pytest.raises(orgs.RosterError, match="denied .*organizations reader role needs"):
        orgs.resolve(config, s3, factory(outside))
    good = orgs.resolve(config, s3, factory())
    again = orgs.resolve(config, s3, factory(outside))
    assert again.source == "stale-cache" and "denied" in (again.stale or "")
    assert again.roster.accounts == good.roster.accounts


def test_a_static_roster_resolves_to_itself(fresh_config: Config) -> None:
    resolution = orgs.resolve(fresh_config, boto3.client("s3"), factory())
    assert resolution.source == "static" and resolution.roster == fresh_config.roster
    assert {r["origin"] for r in resolution.rows()} == {"static"}


def org_config(config: Config, src: OrganizationsSource) -> Config:
    roster = config.roster.model_copy(update={"source": "organizations", "organizations": src, "accounts": []})
    return config.model_copy(update={"roster": roster})
