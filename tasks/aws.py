"""Credentials and clients: the log account's own session, and assumed-role sessions per member.

Assume role goes through prefect-aws `AwsCredentials` (`assume_role_arn` + ExternalId). Sessions
are cached per (account, region) and refreshed before the role session expires, so runs longer
than the session duration keep working.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
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


class MemberSessions:
    """Thread-safe cache of assumed-role sessions, refreshed ahead of expiry."""

    def __init__(self, roster: Roster, clock: Callable[[], float] = time.monotonic) -> None:
        self._roster = roster
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], tuple[float, boto3.Session]] = {}

    def session(self, account_id: str, region: str) -> boto3.Session:
        key = (account_id, region)
        now = self._clock()
        with self._lock:
            cached = self._sessions.get(key)
            if cached and cached[0] > now:
                return cached[1]
        try:
            session = member_credentials(self._roster, account_id, region).get_boto3_session()
        except Exception as error:  # translated: AccessDenied → AccountAccessError, throttling → transient
            translated = classify_aws_error(error, f"assume role {self._roster.role_arn(account_id)}")
            raise translated from error
        expires = now + max(60.0, self._roster.session_duration_seconds - _REFRESH_MARGIN_SECONDS)
        with self._lock:
            self._sessions[key] = (expires, session)
        return session

    def client(self, account_id: str, region: str, service: str, config: BotoConfig | None = None) -> Any:
        session: Any = self.session(account_id, region)  # the service name is dynamic: no typed overload
        return session.client(service, config=config or DEFAULT_BOTO_CONFIG)

    def invalidate(self, account_id: str, region: str) -> None:
        with self._lock:
            self._sessions.pop((account_id, region), None)


def log_client(service: str, region: str, config: BotoConfig | None = None) -> Any:
    """A client with the log account's own credentials (queue, archive)."""
    session: Any = boto3.Session(region_name=region)
    return session.client(service, config=config or DEFAULT_BOTO_CONFIG)


__all__ = ["DEFAULT_BOTO_CONFIG", "AccountAccessError", "MemberSessions", "log_client", "member_credentials"]
