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


# --------------------------------------------------------------------------- cost at scale


def test_tags_are_read_once_then_reused_from_the_cache_until_due_and_force_rereads_them(
    unit: Unit, fresh_config: Config
) -> None:
    config = org_config(fresh_config, source(unit, cache_ttl_seconds=0))
    s3 = boto3.client("s3")
    now = datetime.now(UTC)
    first = orgs.resolve(config, s3, factory(), now=now)
    assert first.discovery is not None and first.discovery.tag_reads == 4 and first.discovery.tags_reused == 0
    unit.org.tag_resource(ResourceId=unit.accounts["web-dev"], Tags=[{"Key": "environment", "Value": "qa"}])
    created = unit.add("web-new", {"environment": "prod"})
    later = orgs.resolve(config, s3, factory(), now=now + timedelta(seconds=1))
    assert later.discovery is not None
    assert later.discovery.tag_reads == 1 and later.discovery.tags_reused == 4  # only the new account's
    assert later.discovery.calls_by_operation["list_tags_for_resource"] == 1
    by_id = {a.account_id: a for a in later.roster.accounts}
    assert by_id[created].environment == "prod" and by_id[unit.accounts["web-dev"]].environment == "dev"
    # Every account's tags are re-read once per TAGS_MAX_AGE_SECONDS, at its own point of the period.
    aged = orgs.resolve(config, s3, factory(), now=now + timedelta(seconds=orgs.TAGS_MAX_AGE_SECONDS + 1))
    assert aged.discovery is not None and aged.discovery.tag_reads == 5
    assert {a.account_id: a.environment for a in aged.roster.accounts}[unit.accounts["web-dev"]] == "qa"
    forced = orgs.resolve(config, s3, factory(), now=now + timedelta(seconds=2), force=True)
    assert forced.discovery is not None and forced.discovery.tag_reads == 5 and forced.discovery.tags_reused == 0


def test_no_tag_is_read_when_the_source_uses_none(unit: Unit) -> None:
    plain = source(unit, environment_tag="")
    assert not orgs.uses_tags(plain) and orgs.uses_tags(source(unit))
    found = orgs.discover(factory()(plain), plain)
    assert found.tag_reads == 0 and "list_tags_for_resource" not in found.calls_by_operation
    assert len(found.accounts) == 4 and {a.environment for a in found.accounts} == {unit_name(unit), "databases"}


def test_every_organizations_call_of_a_discovery_is_paced(unit: Unit) -> None:
    src = source(unit)
    paced = orgs.discover(factory()(src), src, rate=4.0)  # bucket of 2: the rest wait 1/4 s each
    # DescribeOrganizationalUnit, 2 lists under each of the 2 OUs, 4 tag reads
    assert paced.calls == 9 and paced.throttles == 0
    assert paced.seconds >= (paced.calls - 2) / 4.0 * 0.9 and paced.wait_seconds > 1.0
    unpaced = orgs.discover(factory()(src), src, rate=None)
    assert unpaced.calls == 9 and unpaced.wait_seconds == 0.0 and unpaced.accounts == paced.accounts


def test_tag_rereads_are_spread_evenly_over_the_period() -> None:
    ids = [f"{i:012d}" for i in range(1000)]
    start, period, step = 1_767_225_600.0, 3600.0, 300.0
    due_per_step = []
    read_at = dict.fromkeys(ids, start)
    for k in range(1, 13):  # twelve 5-minute refreshes: one period
        now = start + k * step
        due = [i for i in ids if orgs.tags_due(i, read_at[i], now, period)]
        read_at |= dict.fromkeys(due, now)
        due_per_step.append(len(due))
    assert sum(due_per_step) == 1000  # each account once per period
    assert max(due_per_step) < 2 * 1000 / 12  # never a burst of them all


def test_the_reader_role_client_is_reused_between_refreshes(unit: Unit) -> None:
    build = orgs.client_factory(None)  # type: ignore[arg-type]
    assert build(source(unit)) is build(source(unit, parents=[unit.inner]))


def unit_name(unit: Unit) -> str:
    return str(unit.org.describe_organizational_unit(OrganizationalUnitId=unit.ou)["OrganizationalUnit"]["Name"])


def test_throttles_are_backed_off_counted_and_the_discovery_completes(
    stack: Any, unit: Unit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sandbox.faults import FaultProxy, FaultRule

    throttled = FaultRule(
        method="POST",
        request_headers={"X-Amz-Target": "ListTagsForResource"},
        status=400,
        response=b'{"__type": "TooManyRequestsException", "Message": "AWS Organizations can\'t complete your request"}',
        content_type="application/x-amz-json-1.1",
        times=2,
    )
    with FaultProxy(stack.config.aws_endpoint_url) as proxy:
        proxy.add(throttled)
        monkeypatch.setenv("AWS_ENDPOINT_URL_ORGANIZATIONS", proxy.url)
        monkeypatch.setattr(orgs, "_clients", {})  # a client of its own, through the proxy
        found = orgs.discover(factory()(source(unit)), source(unit))
    assert throttled.hits == 2 and found.throttles == 2
    assert found.tag_reads == 4 and found.calls_by_operation["list_tags_for_resource"] == 6
    assert names(found, unit) == {"web-dev", "web-prod", "db-any", "sandbox"}
