"""Exceptions split by retryability; third-party errors are translated where they enter our code."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pyiceberg.exceptions import CommitFailedException


class XraylakeError(Exception):
    """Base class."""


class TransientError(XraylakeError):
    """Worth retrying: throttling, timeouts, 5xx, expired credentials."""


class TerminalError(XraylakeError):
    """Retrying cannot help: bad input, access denied, missing resources."""


class AccountAccessError(TerminalError):
    """The member role could not be assumed or used (AccessDenied, broken trust)."""


TRANSIENT_AWS_CODES = frozenset(
    {
        "ThrottledException",
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",  # SQS
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "SlowDown",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)
"""What botocore's standard retry mode treats as throttling or transient (less its ambiguous
`LimitExceededException`), plus expired credentials: SQS relies on this list instead of botocore."""
ACCESS_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "InvalidClientTokenId"})


def aws_error_code(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def classify_aws_error(error: BaseException, context: str = "") -> XraylakeError:
    """Translate a botocore error into Transient/Terminal (AccountAccessError for denials)."""
    prefix = f"{context}: " if context else ""
    if isinstance(error, ClientError):
        code = aws_error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = error.response.get("Error", {}).get("Message", "")
        text = f"{prefix}{code}: {message}"
        if code in ACCESS_CODES:
            return AccountAccessError(text)
        if code in TRANSIENT_AWS_CODES or status == 429 or status >= 500:
            return TransientError(text)
        return TerminalError(text)
    if isinstance(error, (BotoConnectionError, BotoCoreError, TimeoutError, ConnectionError)):
        return TransientError(f"{prefix}{type(error).__name__}: {error}")
    return TerminalError(f"{prefix}{type(error).__name__}: {error}")


def is_transient_error(error: BaseException) -> bool:
    """Worth retrying: a TransientError, or a raw botocore/network error `classify_aws_error` calls transient."""
    if isinstance(error, XraylakeError):
        return isinstance(error, TransientError)
    return isinstance(classify_aws_error(error), TransientError)


def _failure(state: Any) -> Exception | None:
    """The exception a Prefect task run's final state holds, if it failed."""
    try:
        state.result()
    except Exception as error:
        return error
    return None


def is_transient(_task: Any, _run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a task run only when it failed with a transient error."""
    error = _failure(state)
    return error is not None and is_transient_error(error)


def is_transient_or_commit_conflict(_task: Any, _run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn` for a task that opens its Iceberg table afresh on each try: a
    transient error, or a commit that lost the race to another writer (the next try starts from
    the newer metadata)."""
    error = _failure(state)
    return error is not None and (isinstance(error, CommitFailedException) or is_transient_error(error))
