"""Credentials and clients: the log account's own session, and assumed-role sessions per member.

Assume role goes through prefect-aws `AwsCredentials` (`assume_role_arn` + ExternalId). Sessions
are cached per (account, region) and refreshed before the role session expires, so runs longer
than the session duration keep working; clients are cached with their session.

Every session built here shares one botocore data loader: a fresh boto3 session re-reads and
parses the service models and endpoint rules (~90 ms CPU per client), which dominated a sweep of
200 accounts (bench B3b).
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
from xraylake.errors import AccountAccessError, classify_aws_error

# Retries are ours (token bucket + backoff in tasks/xray.py); botocore's own stay small and explicit.
DEFAULT_BOTO_CONFIG = BotoConfig(
    retries={"mode": "standard", "total_max_attempts": 3},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=32,
)

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


def member_credentials(roster: Roster, account_id: str, region: str) -> AwsCredentials:
    external_id = roster.external_id.get_secret_value() or None
    kwargs: dict[str, Any] = {
        "RoleSessionName": f"xraylake-{account_id}",
        "DurationSeconds": roster.session_duration_seconds,
    }
    if external_id:
        kwargs["ExternalId"] = external_id
    return AwsCredentials(
        region_name=region,
        assume_role_arn=roster.role_arn(account_id),
        assume_role_kwargs=kwargs,  # type: ignore[arg-type]
    )


@dataclass
class _Member:
    expires: float
    session: boto3.Session
    # boto3 sessions are not thread-safe: clients are built one at a time per session.
    lock: threading.Lock = field(default_factory=threading.Lock)
    clients: dict[tuple[str, int], Any] = field(default_factory=dict)


class MemberSessions:
    """Thread-safe cache of assumed-role sessions and their clients, refreshed ahead of expiry."""

    def __init__(self, roster: Roster, clock: Callable[[], float] = time.monotonic) -> None:
        self._roster = roster
        self._clock = clock
        self._lock = threading.Lock()
        self._members: dict[tuple[str, str], _Member] = {}

    def _member(self, account_id: str, region: str) -> _Member:
        key = (account_id, region)
        now = self._clock()
        with self._lock:
            cached = self._members.get(key)
            if cached and cached.expires > now:
                return cached
        try:
            assumed = member_credentials(self._roster, account_id, region).get_boto3_session()
            frozen = assumed.get_credentials().get_frozen_credentials()  # type: ignore[union-attr]
        except Exception as error:  # translated: AccessDenied → AccountAccessError, throttling → transient
            translated = classify_aws_error(error, f"assume role {self._roster.role_arn(account_id)}")
            raise translated from error
        session = shared_session(
            aws_access_key_id=frozen.access_key,
            aws_secret_access_key=frozen.secret_key,
            aws_session_token=frozen.token,
            region_name=region,
        )
        member = _Member(now + max(60.0, self._roster.session_duration_seconds - _REFRESH_MARGIN_SECONDS), session)
        with self._lock:
            self._members[key] = member
        return member

    def session(self, account_id: str, region: str) -> boto3.Session:
        return self._member(account_id, region).session

    def client(self, account_id: str, region: str, service: str, config: BotoConfig | None = None) -> Any:
        member = self._member(account_id, region)
        config = config or DEFAULT_BOTO_CONFIG
        key = (service, id(config))
        with member.lock:
            client = member.clients.get(key)
            if client is None:
                session: Any = member.session  # the service name is dynamic: no typed overload
                client = member.clients[key] = session.client(service, config=config)
        return client

    def invalidate(self, account_id: str, region: str) -> None:
        with self._lock:
            self._members.pop((account_id, region), None)


def log_client(service: str, region: str, config: BotoConfig | None = None) -> Any:
    """A client with the log account's own credentials (queue, archive)."""
    session: Any = shared_session(region_name=region)
    return session.client(service, config=config or DEFAULT_BOTO_CONFIG)


__all__ = [
    "DEFAULT_BOTO_CONFIG",
    "AccountAccessError",
    "MemberSessions",
    "log_client",
    "member_credentials",
    "shared_session",
]
