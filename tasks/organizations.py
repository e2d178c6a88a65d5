"""The roster discovered from AWS Organizations, cached in the state prefix, refreshed every sweep.

`discover(client, source)` walks the organization (or the configured OUs) through the read-only
role in the management / delegated-administrator account: `ListRoots`, `DescribeOrganizationalUnit`,
`ListAccountsForParent`, `ListOrganizationalUnitsForParent` (the OUs of one level walked in
parallel), `ListTagsForResource`. Only ACTIVE accounts join the roster; SUSPENDED and
PENDING_CLOSURE ones are reported as inactive.

Cost at scale (Organizations pages ≤ 20 accounts and its quotas are low, about 10 calls per second):
every call of one discovery is paced by one token bucket (`rate`, default `ORGANIZATIONS_RATE`),
throttles (`TooManyRequestsException`) drain it, back off and are counted. ListTagsForResource is
one call per account, so tags are read only when the source uses them (`include_tags`,
`exclude_tags`, `regions_by_tag`, a non-empty `environment_tag`), and then reused from the cached
roster: each account's tags are re-read once per `TAGS_MAX_AGE_SECONDS`, at a point of that period
fixed by its id (so 1,000 accounts cost about 1,000 × ttl / max age reads per refresh, not 1,000),
and at once for an account seen for the first time. `force` re-reads everything.

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
sweep starts on it too and refreshes it within the TTL beside its work (`beside`, `refresh_beside`);
a run that names no account leaves it (`none`).

Bad input: an OU that does not exist, an include-tag filter that matches no account, and an
AccessDenied from Organizations raise `RosterError` (one line naming the problem) before any
account is swept, unless a previously good roster is cached: a refresh during a running schedule
then keeps the last good roster (`Resolution.stale` says why) instead of failing every 5 minutes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from blocks import MemberAccount, OrganizationsSource, Roster, UnknownAccountError
from blocks.config import Config, load_config
from tasks.errors import TerminalError, TransientError, aws_error_code, classify_aws_error
from tasks.pacing import DEFAULT_BACKOFF, Backoff, TokenBucket

ACTIVE = "ACTIVE"
THREADS = 4  # concurrent Organizations calls (tag reads, OUs of one level); the bucket sets the rate
ORGANIZATIONS_RATE = 8.0  # calls per second for one discovery, under the ~10/s the service allows
TAGS_MAX_AGE_SECONDS = 6 * 3600
CLIENT_REUSE_SECONDS = 45 * 60  # the reader role's credentials last an hour
THROTTLE_CODES = frozenset({"TooManyRequestsException", "ThrottlingException", "Throttling"})
NOT_FOUND_CODES = frozenset(
    {"ParentNotFoundException", "OrganizationalUnitNotFoundException", "TargetNotFoundException"}
)
ACCESS_CODES = frozenset({"AccessDenied", "AccessDeniedException", "AWSOrganizationsNotInUseException"})
# How a run uses the roster: `beside`: start on the cached one and refresh it while the run works
# (the sweep: `refresh_beside`), the `cached` one (runs that act on accounts), or `none` (runs that
# name no account: never an Organizations call).
RosterUse = Literal["beside", "cached", "none"]


Found = tuple[dict[str, Any], str, str, tuple[str, ...]]  # account, OU id, OU name, OU path
Parent = tuple[str, str, tuple[str, ...]]  # id, name, path from the configured parent down


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
    calls_by_operation: dict[str, int] = field(default_factory=dict)
    throttles: int = 0
    wait_seconds: float = 0.0  # spent waiting for the rate bucket and backing off
    tag_reads: int = 0
    tags_reused: int = 0
    tags: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → {"tags", "read_at"}: for the cache


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
    discovery: Discovery | None = None  # what the walk cost (None: no walk this time)
    all_retired: dict[str, RetiredAccount] = field(default_factory=dict)  # every one the cache remembers

    def config(self, config: Config) -> Config:
        return config.model_copy(update={"roster": self.roster})

    @property
    def cached(self) -> bool:
        """Read from the cache (fresh or the last good one), not discovered by this run."""
        return self.source in ("cache", "stale-cache")

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
            if self.cached and self.fetched_at is not None:
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


class Pacer:
    """One discovery's Organizations calls: a shared token bucket, throttles backed off and counted."""

    def __init__(self, rate: float | None, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self.bucket = TokenBucket(rate, burst=max(1.0, rate / 2)) if rate else None
        self.backoff = backoff
        self.calls: Counter[str] = Counter()
        self.throttles = 0
        self.wait_seconds = 0.0
        self._lock = threading.Lock()

    def _count(self, operation: str, waited: float, throttled: bool = False) -> None:
        with self._lock:
            self.calls[operation] += 1
            self.wait_seconds += waited
            self.throttles += throttled

    def call(self, client: Any, operation: str, context: str, **params: Any) -> dict[str, Any]:
        """One paced call; throttles and other transient errors back off and retry (botocore does not:
        `tasks.retrying.BOTOCORE_ATTEMPTS`), so every throttle is counted here."""
        for attempt in range(self.backoff.max_attempts):
            waited = self.bucket.acquire() if self.bucket else 0.0
            try:
                response: dict[str, Any] = getattr(client, operation)(**params)
            except Exception as error:
                code = aws_error_code(error)
                translated = _translated(error, code, operation, context)
                throttled = code in THROTTLE_CODES
                retry = throttled or isinstance(translated, TransientError)
                if not retry or attempt + 1 >= self.backoff.max_attempts:
                    self._count(operation, waited)
                    raise translated from error
                if throttled and self.bucket:
                    self.bucket.drain()  # everyone sharing the bucket slows down
                delay = self.backoff.delay(attempt)
                self._count(operation, waited + delay, throttled=throttled)
                time.sleep(delay)
                continue
            self._count(operation, waited)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def pages(self, client: Any, operation: str, key: str, context: str, **params: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            response = self.call(client, operation, context, **params, **({"NextToken": token} if token else {}))
            yield from response.get(key) or []
            token = response.get("NextToken")
            if not token:
                return


def _translated(error: Exception, code: str, operation: str, context: str) -> Exception:
    if code in ACCESS_CODES:
        return RosterError(
            f"Organizations {operation} denied ({code}) {context}: the organizations reader role needs "
            "organizations:List*/Describe* in the management or delegated-administrator account "
            "(infra/organizations-reader-role.yaml)"
        )
    if code in NOT_FOUND_CODES:
        return RosterError(f"{context} does not exist in the organization ({code})")
    return classify_aws_error(error, f"Organizations {operation} {context}")


def uses_tags(source: OrganizationsSource) -> bool:
    """Whether anything in the source looks at account tags (else no ListTagsForResource at all)."""
    return bool(source.include_tags or source.exclude_tags or source.regions_by_tag or source.environment_tag)


def tags_due(account_id: str, read_at: float | None, now: float, max_age: float = TAGS_MAX_AGE_SECONDS) -> bool:
    """Re-read this account's tags now? Once per `max_age`, at a phase fixed by the id (spread)."""
    if read_at is None or max_age <= 0:
        return True
    phase = int(hashlib.sha256(account_id.encode()).hexdigest()[:8], 16) % int(max_age)
    return (now - phase) // max_age > (read_at - phase) // max_age


def _tag_match(tags: dict[str, str], wanted: dict[str, list[str]]) -> dict[str, bool]:
    """Per key of the filter: does the account's tag match (present, and one of the values if given)."""
    return {key: key in tags and (not values or tags[key] in values) for key, values in wanted.items()}


def discover(
    client: Any,
    source: OrganizationsSource,
    *,
    threads: int = THREADS,
    rate: float | None = ORGANIZATIONS_RATE,
    known_tags: dict[str, dict[str, Any]] | None = None,
    now: float | None = None,
) -> Discovery:
    """Walk the organization (or `source.parents`) and apply the source's filters and regions.

    `known_tags`: {account id: {"tags": {…}, "read_at": epoch seconds}} from the cached roster;
    those not due (`tags_due`) are reused instead of read. `rate`: None for no pacing."""
    started = time.monotonic()
    now = time.time() if now is None else now
    pacer = Pacer(rate)
    parents: list[tuple[str, str]] = []
    if source.parents:
        for parent in source.parents:
            if parent.startswith("r-"):
                parents.append((parent, "Root"))
                continue
            unit = pacer.call(client, "describe_organizational_unit", f"OU {parent}", OrganizationalUnitId=parent)
            parents.append((parent, unit["OrganizationalUnit"]["Name"]))
    else:
        roots = list(pacer.pages(client, "list_roots", "Roots", "(organization root)"))
        parents = [(root["Id"], root.get("Name") or "Root") for root in roots]

    def children(parent: Parent) -> tuple[list[Found], list[Parent]]:
        parent_id, parent_name, path = parent
        context = f"parent {parent_id} ({parent_name})"
        accounts = [
            (account, parent_id, parent_name, path)
            for account in pacer.pages(client, "list_accounts_for_parent", "Accounts", context, ParentId=parent_id)
        ]
        units = [
            (unit["Id"], unit["Name"], (*path, unit["Id"], unit["Name"]))
            for unit in pacer.pages(
                client, "list_organizational_units_for_parent", "OrganizationalUnits", context, ParentId=parent_id
            )
        ]
        return accounts, units

    found: list[Found] = []
    known = known_tags or {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        level: list[Parent] = [(pid, name, (pid, name)) for pid, name in parents]
        while level:  # one level of OUs at a time, its OUs in parallel
            walked = list(pool.map(children, level))
            found += [item for accounts, _ in walked for item in accounts]
            level = [unit for _, units in walked for unit in units]

        def tags_of(account_id: str) -> dict[str, str]:
            tags = pacer.pages(client, "list_tags_for_resource", "Tags", f"account {account_id}", ResourceId=account_id)
            return {t["Key"]: t["Value"] for t in tags}

        ids = [str(a["Id"]) for a, *_ in found]
        tag_record: dict[str, dict[str, Any]] = {}
        due: list[str] = []
        if uses_tags(source):
            due = [i for i in ids if i not in known or tags_due(i, known[i].get("read_at"), now)]
            tag_record = {i: known[i] for i in ids if i in known}
            for account_id, tags in zip(due, pool.map(tags_of, due), strict=True):
                tag_record[account_id] = {"tags": tags, "read_at": now}
    all_tags = [dict(tag_record.get(i, {}).get("tags") or {}) for i in ids]

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
    return Discovery(
        accounts,
        inactive,
        len(found),
        sum(pacer.calls.values()),
        round(time.monotonic() - started, 3),
        calls_by_operation=dict(pacer.calls),
        throttles=pacer.throttles,
        wait_seconds=round(pacer.wait_seconds, 3),
        tag_reads=len(due),
        tags_reused=len(tag_record) - len(due),
        tags=tag_record,
    )


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
    rate: float | None = ORGANIZATIONS_RATE,
) -> Resolution:
    """The roster for this run (see the module docstring); raises `RosterError` only without a cache.

    `cached_only`: any cached roster of this source, whatever its age (readers such as the consumer,
    which must know the accounts the sweeps collect but need not rediscover them). `force`: walk
    the organization now and re-read every tag. `rate`: Organizations calls per second (None: unpaced)."""
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
    known = {} if force else dict((cached_same or {}).get("tags") or {})
    try:
        discovery = discover(client_factory(source), source, rate=rate, known_tags=known, now=now.timestamp())
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
            "tags": discovery.tags,  # every account under the parents, filtered out or not
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
        discovery=discovery,
        all_retired=all_retired,
    )


def _retired_of(cached: dict[str, Any] | None) -> dict[str, RetiredAccount]:
    """The retired accounts a cached roster remembers (none in a cache written before it kept them)."""
    return {str(r["account_id"]): RetiredAccount.from_json(r) for r in (cached or {}).get("retired") or []}


_clients: dict[tuple[str, str, str], tuple[float, Any]] = {}
_clients_lock = threading.Lock()


def client_factory(config: Config) -> Callable[[OrganizationsSource], Any]:
    """Organizations clients through the reader role (assumed with the log account's credentials),
    one per (role, region, ExternalId) reused for `CLIENT_REUSE_SECONDS` by every refresh in this
    process (a served deployment sweeps every 5 minutes: one AssumeRole per 45 minutes, not per sweep)."""

    def build(source: OrganizationsSource) -> Any:
        from tasks.aws import assumed_client

        external_id = source.external_id.get_secret_value()
        key = (source.role_arn, source.region, external_id)
        with _clients_lock:
            made_at, client = _clients.get(key, (0.0, None))
            if client is not None and time.monotonic() - made_at < CLIENT_REUSE_SECONDS:
                return client
        try:
            client = assumed_client(
                source.role_arn,
                "organizations",
                source.region,
                external_id=external_id,
                session_name="xraylake-organizations",
            )
        except Exception as error:
            code = aws_error_code(error)
            raise RosterError(
                f"cannot assume the organizations reader role {source.role_arn}: {code or error}"
            ) from error
        with _clients_lock:
            _clients[key] = (time.monotonic(), client)
        return client

    return build


def resolve_for_run(
    config: Config,
    *,
    force: bool = False,
    cached_only: bool = False,
    rate: float | None = ORGANIZATIONS_RATE,
    now: datetime | None = None,
) -> Resolution:
    """`resolve` with the real clients: the log account's S3 and the organizations reader role."""
    from tasks.aws import log_client

    if config.roster.source != "organizations":
        return Resolution(roster=config.roster, source="static")
    s3 = log_client("s3", config.archive.region)
    return resolve(config, s3, client_factory(config), force=force, cached_only=cached_only, rate=rate, now=now)


@dataclass(frozen=True)
class RunConfig:
    """What a run works with: the configuration with its roster resolved, and where both came from."""

    source: str | None  # config_path or `prefect-block:<name>` (None: $XRAYLAKE_CONFIG or the sandbox)
    config: Config
    roster: Resolution


def load_run_config(source: str | None, *, roster: RosterUse = "cached") -> RunConfig:
    """The configuration a run uses, its roster resolved (see the module docstring): `cached` and
    `beside` use the cached roster whatever its age, discovered only when there is none (`beside`:
    the run then calls `refresh_beside`, or `refreshed`); `none` leaves it as configured.
    Raises `ConfigError` or `RosterError` (one line) when there is no usable configuration or roster."""
    config = load_config(source)
    if roster == "none":
        left = "static" if config.roster.source == "static" else "unresolved"
        return RunConfig(source, config, Resolution(config.roster, left))
    resolution = resolve_for_run(config, cached_only=True)
    return RunConfig(source, resolution.config(config), resolution)


def refresh_beside(run: RunConfig) -> Future[RunConfig] | None:
    """The roster refreshed (within its TTL) on a thread of its own while the run works on the
    cached one: discovery is paced Organizations calls, mostly waiting, so a sweep need not wait
    for it. None when the run's roster is not a cached Organizations one (nothing to refresh)."""
    if not run.roster.cached:
        return None
    pool = ThreadPoolExecutor(1, thread_name_prefix="roster-refresh")
    future = pool.submit(lambda: refreshed(run))
    pool.shutdown(wait=False)
    return future


def refreshed(run: RunConfig) -> RunConfig:
    """`run` with its roster refreshed now (within its TTL)."""
    resolution = resolve_for_run(run.config)
    return RunConfig(run.source, resolution.config(run.config), resolution)
