"""The member accounts xraylake collects from."""

from __future__ import annotations

import re

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, SecretStr, field_validator

ACCOUNT_ID = re.compile(r"^\d{12}$")


class MemberAccount(BaseModel):
    """One member account. Ids stay strings: they may start with 0."""

    account_id: str
    name: str
    environment: str = "unknown"
    regions: list[str] = Field(default_factory=lambda: ["us-east-1"])

    @field_validator("account_id", mode="before")
    @classmethod
    def _twelve_digits(cls, value: object) -> str:
        text = str(value)
        if not ACCOUNT_ID.match(text):
            raise ValueError(f"account id must be 12 digits (keep leading zeros), got {value!r}")
        return text


class Roster(Block):
    """Member accounts plus how to reach them (role name, ExternalId)."""

    _block_type_name = "xraylake Roster"

    accounts: list[MemberAccount] = Field(default_factory=list)
    role_name: str = "xraylake-reader"
    external_id: SecretStr = Field(default=SecretStr(""), description="ExternalId the member roles require.")
    session_duration_seconds: int = 3600

    def get(self, account_id: str) -> MemberAccount:
        for account in self.accounts:
            if account.account_id == account_id:
                return account
        known = ", ".join(a.account_id for a in self.accounts) or "none"
        raise UnknownAccountError(f"account {account_id!r} is not in the roster (known: {known})", account_id)

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
