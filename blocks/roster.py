"""The member accounts xraylake collects from."""

from __future__ import annotations

import re
import zlib
from typing import Literal

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

ACCOUNT_ID = re.compile(r"^\d{12}$")
MAX_SHARDS = 64
KNOWN_SHOWN = 10  # account ids an "unknown account" message lists


def shard_of(account_id: str, shards: int) -> int:
    """The sweep shard an account belongs to: stable across runs, processes and roster changes
    (a CRC of its id), so an account's watermark is only ever advanced by one shard."""
    return zlib.crc32(account_id.encode()) % shards


class MemberAccount(BaseModel):
    """One member account. Ids stay strings: they may start with 0."""

    account_id: str
    name: str
    environment: str = "unknown"
    regions: list[str] = Field(default_factory=lambda: ["us-east-1"])
    origin: str | None = Field(
        default=None,
        description="Where this entry came from: None for the static list, else e.g. "
        "`organizations:ou-ab12-cdef34gh (workloads)` (shown by `xraylake roster`).",
    )

    @field_validator("account_id", mode="before")
    @classmethod
    def _twelve_digits(cls, value: object) -> str:
        text = str(value)
        if not ACCOUNT_ID.match(text):
            raise ValueError(f"account id must be 12 digits (keep leading zeros), got {value!r}")
        return text


TagFilter = dict[str, list[str]]


class OrganizationsSource(BaseModel):
    """The roster read from AWS Organizations instead of a static list.

    Accounts come from the whole organization (`parents` empty: walked from its root) or from the
    OUs (or root) named in `parents`, walked down through their child OUs; only ACTIVE accounts are
    collected. `include_tags` keeps an account only when, for every key, its tag value is one of the
    listed values (an empty list: any value); `exclude_tags` drops it when any key matches the same way.
    Name from Organizations; environment from the `environment_tag` tag, else the name of the OU the
    account sits in; regions from `regions_by_tag` (`"key=value"`), then `regions_by_ou` (OU id or
    name, the nearest enclosing OU wins), then `regions`.
    """

    role_arn: str = Field(
        description="Read-only role in the management or delegated-administrator account "
        "(infra/organizations-reader-role.yaml), assumed like the member roles."
    )
    external_id: SecretStr = Field(default=SecretStr(""), description="ExternalId that role requires, if any.")
    parents: list[str] = Field(default_factory=list, description="OU ids (ou-…) or the root id (r-…); empty: all.")
    include_tags: TagFilter = Field(default_factory=dict)
    exclude_tags: TagFilter = Field(default_factory=dict)
    environment_tag: str = "environment"
    regions: list[str] = Field(default_factory=lambda: ["us-east-1"])
    regions_by_ou: dict[str, list[str]] = Field(default_factory=dict)
    regions_by_tag: dict[str, list[str]] = Field(default_factory=dict)
    cache_ttl_seconds: int = Field(default=300, ge=0, description="How long a discovered roster is reused.")
    region: str = Field(default="us-east-1", description="Region of the Organizations endpoint.")

    @field_validator("parents")
    @classmethod
    def _parent_ids(cls, value: list[str]) -> list[str]:
        for parent in value:
            if not re.match(r"^(r-[0-9a-z]{4,32}|ou-[0-9a-z]{4,32}-[a-z0-9]{8,32})$", parent):
                raise ValueError(f"parent {parent!r} is neither an OU id (ou-…) nor a root id (r-…)")
        return value

    @field_validator("regions_by_tag")
    @classmethod
    def _tag_pairs(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for key in value:
            if "=" not in key:
                raise ValueError(f"regions_by_tag key {key!r} must be `tag-key=tag-value`")
        return value


class MonitoringAccount(BaseModel):
    """CloudWatch cross-account observability: read X-Ray once in this account per region.

    Linked source accounts (OAM links sharing `AWS::XRay::Trace` to the account's sink) are read
    here through one role; every other roster account falls back to its own member role."""

    account_id: str
    role_name: str = "xraylake-monitoring-reader"
    regions: list[str] = Field(default_factory=lambda: ["us-east-1"])

    @field_validator("account_id", mode="before")
    @classmethod
    def _twelve_digits(cls, value: object) -> str:
        text = str(value)
        if not ACCOUNT_ID.match(text):
            raise ValueError(f"monitoring account id must be 12 digits (keep leading zeros), got {value!r}")
        return text


class Roster(Block):
    """Member accounts plus how to reach them (role name, ExternalId)."""

    _block_type_name = "xraylake Roster"

    accounts: list[MemberAccount] = Field(default_factory=list)
    role_name: str = "xraylake-reader"
    external_id: SecretStr = Field(default=SecretStr(""), description="ExternalId the member roles require.")
    session_duration_seconds: int = 3600
    source: Literal["static", "organizations"] = Field(
        default="static", description="`static`: `accounts` as listed; `organizations`: discovered each sweep."
    )
    organizations: OrganizationsSource | None = None
    monitoring: MonitoringAccount | None = Field(
        default=None, description="Monitoring-account mode (CloudWatch cross-account observability)."
    )

    @model_validator(mode="after")
    def _source_configured(self) -> Roster:
        if self.source == "organizations" and self.organizations is None:
            raise ValueError("roster.source is `organizations` but roster.organizations is not configured")
        return self

    def get(self, account_id: str) -> MemberAccount:
        for account in self.accounts:
            if account.account_id == account_id:
                return account
        ids = [a.account_id for a in self.accounts]
        # one line even for an organization of 1,000 accounts: the first few, then how many more
        known = ", ".join(ids[:KNOWN_SHOWN]) + (f" and {len(ids) - KNOWN_SHOWN} more" if len(ids) > KNOWN_SHOWN else "")
        raise UnknownAccountError(f"account {account_id!r} is not in the roster (known: {known or 'none'})", account_id)

    def select(self, account_ids: list[str] | None) -> list[MemberAccount]:
        """The roster accounts named (all when None); unknown ids raise before any work."""
        if not account_ids:
            return list(self.accounts)
        return [self.get(str(a)) for a in account_ids]

    def targets(self, account_ids: list[str] | None, regions: list[str] | None) -> list[tuple[MemberAccount, str]]:
        """(account, region) pairs to work on; unknown accounts, or regions an explicitly named
        account has not enabled, raise before any work."""
        pairs: list[tuple[MemberAccount, str]] = []
        for account in self.select(account_ids):
            wanted = regions or account.regions
            not_enabled = [r for r in wanted if r not in account.regions]
            if not_enabled and account_ids:
                raise ValueError(
                    f"region(s) {', '.join(not_enabled)} not enabled for account {account.account_id} "
                    f"({account.name}); enabled: {', '.join(account.regions)}"
                )
            pairs += [(account, r) for r in wanted if r in account.regions]
        if not pairs:
            raise ValueError(f"no account is enabled in region(s) {', '.join(regions or [])}")
        return pairs

    def role_arn(self, account_id: str) -> str:
        return f"arn:aws:iam::{account_id}:role/{self.role_name}"


class UnknownAccountError(ValueError):
    """An account id outside the roster (`account_id` names it)."""

    def __init__(self, message: str, account_id: str = "") -> None:
        super().__init__(message)
        self.account_id = account_id

    def __reduce__(self) -> tuple[type[UnknownAccountError], tuple[str, str]]:  # results persist exceptions
        return type(self), (str(self), self.account_id)
