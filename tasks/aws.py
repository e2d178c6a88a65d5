"""Credentials and clients: the log account's own session, and assumed-role sessions per member.

The log account's own credentials come from a prefect-aws `AwsCredentials` block (default: the
standard chain). Member roles are assumed with one STS client built from it, with exactly the
parameters `member_credentials` gives prefect-aws (role ARN, session name, duration, ExternalId):
`AwsCredentials(assume_role_arn=…).get_boto3_session()` builds two fresh boto3 sessions and an STS
client per call (~100 ms CPU each), which dominated a 200-account sweep (bench B3b). Sessions are
cached per (account, region) and refreshed before the role session expires, so runs longer than
the session duration keep working; clients are cached with their credentials, and all of them are
built from one process-wide session (the member's credentials passed to `client()`), not from a
session per member.

Every session built here shares one botocore data loader: a fresh boto3 session re-reads and
parses the service models and endpoint rules (~90 ms CPU per client).

Every client gets its service's botocore retry setting from `tasks.retrying.boto_config`, where
the table of botocore calls × our attempts per client lives.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, SupportsIndex

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config as BotoConfig
from prefect_aws import AwsCredentials

from blocks import Roster
from tasks.errors import AccountAccessError, classify_aws_error
from tasks.retrying import boto_config

# A service without an entry in tasks.retrying's table (botocore: 3 calls, ours: 1).
DEFAULT_BOTO_CONFIG = boto_config("default")

_REFRESH_MARGIN_SECONDS = 300


class _DistinctPaths(list[str]):
    """boto3 appends its data path to the loader of every session it builds; a shared loader keeps it once."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)

    def extend(self, paths: Iterable[str]) -> None:
        for path in paths:
            self.append(path)

    def insert(self, index: SupportsIndex, path: str) -> None:
        if path not in self:
            super().insert(index, path)


_SHARED_LOADER = botocore.loaders.Loader(
    extra_search_paths=_DistinctPaths(p for p in os.environ.get("AWS_DATA_PATH", "").split(os.pathsep) if p)
)


def shared_session(**kwargs: Any) -> boto3.Session:
    """A boto3 session (same arguments as `boto3.Session`) on the process-wide botocore data loader."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _SHARED_LOADER)
    return boto3.Session(botocore_session=core, **kwargs)


def assume_role_params(roster: Roster, account_id: str) -> dict[str, Any]:
    """AssumeRole parameters for a member's reader role."""
    params: dict[str, Any] = {
        "RoleArn": roster.role_arn(account_id),
        "RoleSessionName": f"xraylake-{account_id}",
        "DurationSeconds": roster.session_duration_seconds,
    }
    external_id = roster.external_id.get_secret_value()
    if external_id:
        params["ExternalId"] = external_id
    return params


def member_credentials(roster: Roster, account_id: str, region: str) -> AwsCredentials:
    """The member's reader role as a prefect-aws block (for a block per account, e.g. in the UI)."""
    params = assume_role_params(roster, account_id)
    return AwsCredentials(
        region_name=region,
        assume_role_arn=params.pop("RoleArn"),
        assume_role_kwargs=params,  # type: ignore[arg-type]
    )


@dataclass
class _Member:
    expires: float
    credentials: dict[str, str]  # aws_access_key_id, aws_secret_access_key, aws_session_token
    region: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    clients: dict[tuple[str, int], Any] = field(default_factory=dict)
    session: boto3.Session | None = None  # built only for callers that ask for a session


_CLIENT_SESSION: boto3.Session | None = None
# boto3 sessions are not thread-safe: member clients are built one at a time (CPU-bound anyway).
_CLIENT_SESSION_LOCK = threading.Lock()


def _client_session() -> boto3.Session:
    """The one session every member client is built from, with that member's credentials passed
    to `client()`: a boto3 session per member costs ~15 ms CPU more per account and sweep (B3o)."""
    global _CLIENT_SESSION
    if _CLIENT_SESSION is None:
        _CLIENT_SESSION = shared_session()
    return _CLIENT_SESSION


class MemberSessions:
    """Thread-safe cache of assumed-role sessions and their clients, refreshed ahead of expiry."""

    def __init__(
        self, roster: Roster, clock: Callable[[], float] = time.monotonic, base: AwsCredentials | None = None
    ) -> None:
        self._roster = roster
        self._clock = clock
        self._base = base or AwsCredentials()
        self._lock = threading.Lock()
        self._members: dict[tuple[str, str], _Member] = {}
        self._sts: Any = None

    def _sts_client(self) -> Any:
        """One STS client with the log account's credentials (refreshable ones keep refreshing)."""
        with self._lock:
            if self._sts is None:
                session: Any = self._base.get_boto3_session()
                home = next((r for a in self._roster.accounts for r in a.regions), "us-east-1")
                region = self._base.region_name or session.region_name or home
                self._sts = session.client("sts", region_name=region, config=boto_config("sts"))
            return self._sts

    def _member(self, account_id: str, region: str) -> _Member:
        key = (account_id, region)
        now = self._clock()
        with self._lock:
            cached = self._members.get(key)
            if cached and cached.expires > now:
                return cached
        try:
            credentials = self._sts_client().assume_role(**assume_role_params(self._roster, account_id))["Credentials"]
        except Exception as error:  # translated: AccessDenied → AccountAccessError, throttling → transient
            translated = classify_aws_error(error, f"assume role {self._roster.role_arn(account_id)}")
            raise translated from error
        member = _Member(
            now + max(60.0, self._roster.session_duration_seconds - _REFRESH_MARGIN_SECONDS),
            {
                "aws_access_key_id": credentials["AccessKeyId"],
                "aws_secret_access_key": credentials["SecretAccessKey"],
                "aws_session_token": credentials["SessionToken"],
            },
            region,
        )
        with self._lock:
            self._members[key] = member
        return member

    def session(self, account_id: str, region: str) -> boto3.Session:
        """A boto3 session with the member's credentials (built on first use, cached with them)."""
        member = self._member(account_id, region)
        with member.lock:
            if member.session is None:
                member.session = shared_session(region_name=member.region, **member.credentials)
            return member.session

    def client(self, account_id: str, region: str, service: str, config: BotoConfig | None = None) -> Any:
        member = self._member(account_id, region)
        config = config or boto_config(service)
        key = (service, id(config))
        with member.lock:
            client = member.clients.get(key)
            if client is None:
                with _CLIENT_SESSION_LOCK:
                    session: Any = _client_session()  # the service name is dynamic: no typed overload
                    client = session.client(service, region_name=member.region, config=config, **member.credentials)
                member.clients[key] = client
        return client

    def invalidate(self, account_id: str, region: str) -> None:
        with self._lock:
            self._members.pop((account_id, region), None)


def log_client(service: str, region: str, config: BotoConfig | None = None) -> Any:
    """A client with the log account's own credentials (queue, archive); retries per `boto_config`."""
    session: Any = shared_session(region_name=region)
    return session.client(service, config=config or boto_config(service))


def assumed_client(
    role_arn: str,
    service: str,
    region: str,
    *,
    external_id: str = "",
    session_name: str = "xraylake",
    duration_seconds: int = 3600,
) -> Any:
    """A client in another account through one role (the organizations reader, the monitoring
    account's reader), assumed with the log account's own credentials like the member roles."""
    params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session_name, "DurationSeconds": duration_seconds}
    if external_id:
        params["ExternalId"] = external_id
    sts = log_client("sts", region)
    credentials = sts.assume_role(**params)["Credentials"]
    session: Any = shared_session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=region,
    )
    return session.client(service, config=boto_config(service))


__all__ = [
    "DEFAULT_BOTO_CONFIG",
    "AccountAccessError",
    "MemberSessions",
    "assume_role_params",
    "assumed_client",
    "log_client",
    "member_credentials",
    "shared_session",
]
