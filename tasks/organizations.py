"""The roster discovered from AWS Organizations, cached in the state prefix, refreshed every sweep.

`discover(client, source)` walks the organization (or the configured OUs) through the read-only
role in the management / delegated-administrator account: `ListRoots`, `DescribeOrganizationalUnit`,
`ListAccountsForParent`, `ListOrganizationalUnitsForParent`, `ListTagsForResource`. Only ACTIVE
accounts join the roster; SUSPENDED and PENDING_CLOSURE ones are reported as inactive.

`resolve(config, s3, client_factory)` is what a sweep calls first: a roster younger than
`cache_ttl_seconds` (for the same source configuration) is reused from
`<state_prefix>/roster/organizations.json`; otherwise Organizations is read again and the cache
rewritten. Accounts that were in the cached roster and are no longer ACTIVE (closed, suspended,
moved out of the OUs, filtered out by tags) come back as `retired`: their watermarks stay, the
flow writes a health row and an event, and they are simply no longer swept. The cache remembers
every retired account (and every non-ACTIVE one Organizations reports under the parents) with the
date xraylake first saw it so, until it is ACTIVE again: a run that names one is refused with
`RetiredAccountError` ("retired since …"), not as an unknown account.

`load_run_config(source, roster=…)` is how every run (and every CLI command that names accounts)
gets its configuration: loaded, with the roster resolved. Runs that only act on accounts use the
cached roster (`cached`: no rediscovery each run; the first run without a cache discovers it); the
sweep refreshes it within the TTL (`refresh`); a run that names no account leaves it (`none`).

Bad input: an OU that does not exist, an include-tag filter that matches no account, and an
AccessDenied from Organizations raise `RosterError` (one line naming the problem) before any
account is swept, unless a previously good roster is cached: a refresh during a running schedule
then keeps the last good roster (`Resolution.stale` says why) instead of failing every 5 minutes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from blocks import MemberAccount, OrganizationsSource, Roster, UnknownAccountError
from blocks.config import Config, load_config
from tasks.errors import TerminalError, TransientError, aws_error_code, classify_aws_error

ACTIVE = "ACTIVE"
TAG_THREADS = 8
NOT_FOUND_CODES = frozenset(
    {"ParentNotFoundException", "OrganizationalUnitNotFoundException", "TargetNotFoundException"}
)
ACCESS_CODES = frozenset({"AccessDenied", "AccessDeniedException", "AWSOrganizationsNotInUseException"})
# How a run uses the roster: `refresh` it within its TTL (the sweep), the `cached` one (runs that act
# on accounts), or `none` (runs that name no account: not resolved, never an Organizations call).
RosterUse = Literal["refresh", "cached", "none"]


class RosterError(TerminalError):
    """The roster could not be resolved from Organizations (bad OU, empty tag filter, no access)."""


class RetiredAccountError(UnknownAccountError):
    """An account the roster retired (closed, suspended, moved out of the OUs or tag filters)."""


@dataclass(frozen=True)
class OrgAccount:
    """One account as Organizations reports it, with where it sits and its tags."""

    account_id: str
    name: str
    status: str
    ou_id: str
    ou_name: str
    ou_path: tuple[str, ...]  # enclosing OU ids and names from the configured parent down
    tags: dict[str, str]


@dataclass
class Discovery:
    accounts: list[MemberAccount]
    inactive: list[OrgAccount]
    seen: int  # accounts under the parents before filters
    calls: int
    seconds: float


@dataclass(frozen=True)
class RetiredAccount:
    account_id: str
    name: str
    reason: str
    since: datetime | None = None  # when xraylake first saw it gone (None: before the cache kept it)

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "name": self.name,
            "reason": self.reason,
            "since": self.since.isoformat() if self.since else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetiredAccount:
        since = data.get("since")
        return cls(
            str(data["account_id"]),
            str(data.get("name") or data["account_id"]),
            str(data.get("reason") or "retired"),
            datetime.fromisoformat(since) if since else None,
        )


@dataclass
class Resolution:
    """The roster a run uses and where it came from."""

    roster: Roster
    source: str  # static | organizations | cache | stale-cache | unresolved (a run that needs no accounts)
    fetched_at: datetime | None = None
    retired: list[RetiredAccount] = field(default_factory=list)  # retired by this refresh (said once)
    stale: str | None = None  # why the last good roster was used instead of a fresh one
    discovery_seconds: float = 0.0
    calls: int = 0
    all_retired: dict[str, RetiredAccount] = field(default_factory=dict)  # every one the cache remembers

    def config(self, config: Config) -> Config:
        return config.model_copy(update={"roster": self.roster})

    def describe(self) -> str:
        """`organizations, 12 accounts (fetched 2026-12-02T04:50:00+00:00)`: a log line's and an artifact's."""
        text = f"{self.source}, {len(self.roster.accounts)} accounts"
        if self.fetched_at is not None:
            text += f" (fetched {self.fetched_at.isoformat(timespec='seconds')})"
        if self.all_retired:
            text += f", {len(self.all_retired)} retired"
        return text

    def explain(self, error: UnknownAccountError) -> UnknownAccountError:
        """`error` as a run reports it, in one line: an account the roster retired says since when;
        one a cached Organizations roster does not know says when it was read and what refreshes it."""
        gone = self.all_retired.get(error.account_id)
        if gone is None:
            if self.source in ("cache", "stale-cache") and self.fetched_at is not None:
                return UnknownAccountError(
                    f"{error}; this is the roster AWS Organizations gave at "
                    f"{self.fetched_at:%Y-%m-%d %H:%M} UTC: an account created since joins it at the next "
                    "sweep (or `xraylake roster --refresh`)",
                    error.account_id,
                )
            return error
        since = f" since {gone.since:%Y-%m-%d %H:%M} UTC" if gone.since else ""
        return RetiredAccountError(
            f"account {gone.account_id} ({gone.name}) is retired{since}: {gone.reason}; "
            "it is no longer collected (its watermark and archive are kept)",
            gone.account_id,
        )

    def rows(self) -> list[dict[str, Any]]:
        """One row per roster entry: what `xraylake roster` shows."""
        return [
            {
                "account_id": a.account_id,
                "name": a.name,
                "environment": a.environment,
                "regions": list(a.regions),
                "origin": a.origin or "static",
            }
            for a in self.roster.accounts
        ]


# --------------------------------------------------------------------------- discovery


def _call(client: Any, operation: str, context: str, **params: Any) -> dict[str, Any]:
    try:
        response: dict[str, Any] = getattr(client, operation)(**params)
    except Exception as error:
        code = aws_error_code(error)
        if code in ACCESS_CODES:
            raise RosterError(
                f"Organizations {operation} denied ({code}) {context}: the organizations reader role needs "
                "organizations:List*/Describe* in the management or delegated-administrator account "
                "(infra/organizations-reader-role.yaml)"
            ) from error
        if code in NOT_FOUND_CODES:
            raise RosterError(f"{context} does not exist in the organization ({code})") from error
        raise classify_aws_error(error, f"Organizations {operation} {context}") from error
    return response


def _pages(client: Any, operation: str, key: str, context: str, **params: Any) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        response = _call(client, operation, context, **params, **({"NextToken": token} if token else {}))
        yield from response.get(key) or []
        token = response.get("NextToken")
        if not token:
            return


def _tag_match(tags: dict[str, str], wanted: dict[str, list[str]]) -> dict[str, bool]:
    """Per key of the filter: does the account's tag match (present, and one of the values if given)."""
    return {key: key in tags and (not values or tags[key] in values) for key, values in wanted.items()}


def discover(client: Any, source: OrganizationsSource, *, tag_threads: int = TAG_THREADS) -> Discovery:
    """Walk the organization (or `source.parents`) and apply the source's filters and regions."""
    started = time.monotonic()
    calls = 0
    parents: list[tuple[str, str]] = []
    if source.parents:
        for parent in source.parents:
            if parent.startswith("r-"):
                parents.append((parent, "Root"))
                continue
            unit = _call(client, "describe_organizational_unit", f"OU {parent}", OrganizationalUnitId=parent)
            calls += 1
            parents.append((parent, unit["OrganizationalUnit"]["Name"]))
    else:
        roots = list(_pages(client, "list_roots", "Roots", "(organization root)"))
        calls += 1
        parents = [(root["Id"], root.get("Name") or "Root") for root in roots]

    found: list[tuple[dict[str, Any], str, str, tuple[str, ...]]] = []
    pending: list[tuple[str, str, tuple[str, ...]]] = [(pid, name, (pid, name)) for pid, name in parents]
    while pending:
        parent_id, parent_name, path = pending.pop()
        context = f"parent {parent_id} ({parent_name})"
        for account in _pages(client, "list_accounts_for_parent", "Accounts", context, ParentId=parent_id):
            found.append((account, parent_id, parent_name, path))
        for unit in _pages(
            client, "list_organizational_units_for_parent", "OrganizationalUnits", context, ParentId=parent_id
        ):
            pending.append((unit["Id"], unit["Name"], (*path, unit["Id"], unit["Name"])))
        calls += 2

    def tags_of(account_id: str) -> dict[str, str]:
        tags = _pages(client, "list_tags_for_resource", "Tags", f"account {account_id}", ResourceId=account_id)
        return {t["Key"]: t["Value"] for t in tags}

    with ThreadPoolExecutor(max_workers=max(1, tag_threads)) as pool:
        all_tags = list(pool.map(tags_of, [a["Id"] for a, *_ in found]))
    calls += len(found)

    accounts: list[MemberAccount] = []
    inactive: list[OrgAccount] = []
    included = 0
    for (account, ou_id, ou_name, path), tags in zip(found, all_tags, strict=True):
        org_account = OrgAccount(
            account_id=str(account["Id"]),
            name=str(account.get("Name") or account["Id"]),
            status=str(account.get("Status") or account.get("State") or ""),
            ou_id=ou_id,
            ou_name=ou_name,
            ou_path=path,
            tags=tags,
        )
        if source.include_tags and not all(_tag_match(tags, source.include_tags).values()):
            continue
        included += 1
        if source.exclude_tags and any(_tag_match(tags, source.exclude_tags).values()):
            continue
        if org_account.status != ACTIVE:
            inactive.append(org_account)
            continue
        accounts.append(_member(org_account, source))
    where = ", ".join(f"{pid} ({name})" for pid, name in parents) or "the organization"
    if source.include_tags and found and not included:
        raise RosterError(
            f"tag filter include_tags={source.include_tags} matches none of the {len(found)} accounts under {where}"
        )
    accounts.sort(key=lambda a: a.account_id)
    return Discovery(accounts, inactive, len(found), calls, round(time.monotonic() - started, 3))


def _member(account: OrgAccount, source: OrganizationsSource) -> MemberAccount:
    environment = account.tags.get(source.environment_tag) or account.ou_name
    regions = source.regions
    how = "default regions"
    ou_ids_and_names = list(account.ou_path)
    for i in range(len(ou_ids_and_names) - 1, -1, -1):  # the nearest enclosing OU wins
        if ou_ids_and_names[i] in source.regions_by_ou:
            regions = source.regions_by_ou[ou_ids_and_names[i]]
            how = f"regions of OU {ou_ids_and_names[i]}"
            break
    for pair, tag_regions in source.regions_by_tag.items():
        key, _, value = pair.partition("=")
        if account.tags.get(key) == value:
            regions, how = tag_regions, f"regions of tag {pair}"
            break
    env_how = f"tag {source.environment_tag}" if account.tags.get(source.environment_tag) else "OU name"
    return MemberAccount(
        account_id=account.account_id,
        name=account.name,
        environment=environment,
        regions=list(regions),
        origin=f"organizations: {account.ou_id} ({account.ou_name}); environment from {env_how}; {how}",
    )


# --------------------------------------------------------------------------- cache and resolution


def cache_key(config: Config) -> str:
    return f"{config.archive.state_prefix}/roster/organizations.json"


def fingerprint(source: OrganizationsSource) -> str:
    """What must match for a cached roster to be reused (the TTL itself does not)."""
    data = source.model_dump(mode="json", exclude={"cache_ttl_seconds", "external_id"})
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def read_cache(s3: Any, config: Config) -> dict[str, Any] | None:
    try:
        body = s3.get_object(Bucket=config.archive.bucket, Key=cache_key(config))["Body"].read()
    except Exception as error:
        if aws_error_code(error) in {"NoSuchKey", "404", "NoSuchBucket"}:
            return None
        raise classify_aws_error(error, f"read roster cache {cache_key(config)}") from error
    data: dict[str, Any] = orjson.loads(body)
    return data


def write_cache(s3: Any, config: Config, data: dict[str, Any]) -> None:
    try:
        s3.put_object(
            Bucket=config.archive.bucket,
            Key=cache_key(config),
            Body=orjson.dumps(data),
            ContentType="application/json",
        )
    except Exception as error:
        raise classify_aws_error(error, f"write roster cache {cache_key(config)}") from error


def _with_accounts(roster: Roster, accounts: list[MemberAccount]) -> Roster:
    return roster.model_copy(update={"accounts": accounts})


def resolve(
    config: Config,
    s3: Any,
    client_factory: Callable[[OrganizationsSource], Any],
    *,
    now: datetime | None = None,
    force: bool = False,
    cached_only: bool = False,
) -> Resolution:
    """The roster for this run (see the module docstring); raises `RosterError` only without a cache.

    `cached_only`: any cached roster of this source, whatever its age (readers such as the consumer,
    which must know the accounts the sweeps collect but need not rediscover them)."""
    roster = config.roster
    source = roster.organizations
    if roster.source != "organizations" or source is None:
        return Resolution(roster=roster, source="static")
    now = now or datetime.now(UTC)
    cached = read_cache(s3, config)
    # A roster cached for another source configuration is not this one's.
    cached_same = cached if cached and cached.get("fingerprint") == fingerprint(source) else None
    remembered = _retired_of(cached_same)
    if cached_same and not force:
        fetched_at = datetime.fromisoformat(cached_same["fetched_at"])
        if cached_only or (now - fetched_at).total_seconds() < source.cache_ttl_seconds:
            accounts = [MemberAccount.model_validate(a) for a in cached_same["accounts"]]
            return Resolution(_with_accounts(roster, accounts), "cache", fetched_at, all_retired=remembered)
    try:
        discovery = discover(client_factory(source), source)
    except (RosterError, TransientError, TerminalError) as error:
        if cached_same:
            accounts = [MemberAccount.model_validate(a) for a in cached_same["accounts"]]
            return Resolution(
                _with_accounts(roster, accounts),
                "stale-cache",
                datetime.fromisoformat(cached_same["fetched_at"]),
                stale=str(error)[:500],
                all_retired=remembered,
            )
        raise RosterError(str(error)) from error
    current = {a.account_id for a in discovery.accounts}
    inactive = {a.account_id: a for a in discovery.inactive}
    retired = []
    for previous in (cached_same or {}).get("accounts", []):
        account_id = str(previous["account_id"])
        if account_id in current:
            continue
        gone = inactive.get(account_id)
        reason = f"status {gone.status}" if gone else "no longer in the organization, its OUs or its tag filters"
        retired.append(RetiredAccount(account_id, str(previous.get("name") or account_id), reason, now))
    # Remembered until ACTIVE again: the ones retired before, now, and those never seen ACTIVE.
    all_retired = {k: v for k, v in remembered.items() if k not in current}
    all_retired |= {r.account_id: r for r in retired}
    for account_id, org_account in inactive.items():
        all_retired.setdefault(
            account_id, RetiredAccount(account_id, org_account.name, f"status {org_account.status}", now)
        )
    write_cache(
        s3,
        config,
        {
            "fingerprint": fingerprint(source),
            "fetched_at": now.isoformat(),
            "accounts": [a.model_dump(mode="json") for a in discovery.accounts],
            "inactive": [{"account_id": a.account_id, "name": a.name, "status": a.status} for a in discovery.inactive],
            "retired": [r.as_json() for r in sorted(all_retired.values(), key=lambda r: r.account_id)],
        },
    )
    return Resolution(
        _with_accounts(roster, discovery.accounts),
        "organizations",
        now,
        retired=retired,
        discovery_seconds=discovery.seconds,
        calls=discovery.calls,
        all_retired=all_retired,
    )


def _retired_of(cached: dict[str, Any] | None) -> dict[str, RetiredAccount]:
    """The retired accounts a cached roster remembers (none in a cache written before it kept them)."""
    return {str(r["account_id"]): RetiredAccount.from_json(r) for r in (cached or {}).get("retired") or []}


def client_factory(config: Config) -> Callable[[OrganizationsSource], Any]:
    """Organizations clients through the reader role (assumed with the log account's credentials)."""

    def build(source: OrganizationsSource) -> Any:
        from tasks.aws import assumed_client

        try:
            return assumed_client(
                source.role_arn,
                "organizations",
                source.region,
                external_id=source.external_id.get_secret_value(),
                session_name="xraylake-organizations",
            )
        except Exception as error:
            code = aws_error_code(error)
            raise RosterError(
                f"cannot assume the organizations reader role {source.role_arn}: {code or error}"
            ) from error

    return build


def resolve_for_run(config: Config, *, force: bool = False, cached_only: bool = False) -> Resolution:
    """`resolve` with the real clients: the log account's S3 and the organizations reader role."""
    from tasks.aws import log_client

    if config.roster.source != "organizations":
        return Resolution(roster=config.roster, source="static")
    s3 = log_client("s3", config.archive.region)
    return resolve(config, s3, client_factory(config), force=force, cached_only=cached_only)


@dataclass(frozen=True)
class RunConfig:
    """What a run works with: the configuration with its roster resolved, and where both came from."""

    source: str | None  # config_path or `prefect-block:<name>` (None: $XRAYLAKE_CONFIG or the sandbox)
    config: Config
    roster: Resolution


def load_run_config(source: str | None, *, roster: RosterUse = "cached") -> RunConfig:
    """The configuration a run uses, its roster resolved (see the module docstring): `refresh`
    rediscovers an Organizations roster older than its TTL (the sweep); `cached` uses the cached
    roster whatever its age, discovered only when there is none; `none` leaves it as configured.
    Raises `ConfigError` or `RosterError` (one line) when there is no usable configuration or roster."""
    config = load_config(source)
    if roster == "none":
        left = "static" if config.roster.source == "static" else "unresolved"
        return RunConfig(source, config, Resolution(config.roster, left))
    resolution = resolve_for_run(config, cached_only=roster == "cached")
    return RunConfig(source, resolution.config(config), resolution)
