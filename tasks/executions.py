"""Step Functions details for swept traces: DescribeExecution through the member role, cached.

A sweep's envelopes carry X-Ray data only; the trace document should still show the execution's
real status, input and output. The consumer asks DescribeExecution (the reader role allows it)
for each execution ARN found in a trace's segments. Finished executions are cached; a failure
leaves the trace-derived status in place (counted, never fatal).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

from tasks import stepfunctions as sfn
from tasks.aws import DEFAULT_BOTO_CONFIG, MemberSessions

_EXECUTION_IN_DOCUMENT = re.compile(r'"(arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:(?:execution|express):[^"]+)"')
FINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})


def execution_arns(trace: dict[str, Any]) -> list[str]:
    """Execution ARNs mentioned by a trace's segment documents (state machine segments carry one)."""
    found: list[str] = []
    for segment in trace.get("Segments") or []:
        document = segment.get("Document") if isinstance(segment, dict) else None
        if isinstance(document, str) and ":states:" in document:
            found += [m for m in _EXECUTION_IN_DOCUMENT.findall(document) if m not in found]
    return found


# Finished executions described, kept so an overlap or in-progress re-collection of the same trace
# costs no second DescribeExecution. Bounded: a consumer runs for an hour and each entry holds the
# (capped) input and output.
CACHED_EXECUTIONS = 4096


class ExecutionDetails:
    def __init__(
        self, sessions: MemberSessions, known_accounts: Iterable[str], cache_entries: int = CACHED_EXECUTIONS
    ) -> None:
        self._sessions = sessions
        self._accounts = set(known_accounts)
        self._cache: dict[str, dict[str, Any]] = {}
        self._cache_entries = cache_entries
        self._lock = threading.Lock()
        self.calls = 0
        self.failures = 0

    def for_trace(self, trace: dict[str, Any]) -> dict[str, Any] | None:
        for arn in execution_arns(trace):
            details = self.describe(arn)
            if details:
                return details
        return None

    def describe(self, arn: str) -> dict[str, Any] | None:
        with self._lock:
            if arn in self._cache:
                return self._cache[arn]
        try:
            parsed = sfn.parse_execution_arn(arn)
        except ValueError:
            return None
        if parsed.account_id not in self._accounts:
            return None
        try:
            client = self._sessions.client(parsed.account_id, parsed.region, "stepfunctions", DEFAULT_BOTO_CONFIG)
            self.calls += 1
            details = sfn.describe_execution(client, arn)
        except Exception:
            self.failures += 1
            return None
        if details.get("status") in FINAL_STATUSES:
            with self._lock:
                if len(self._cache) >= self._cache_entries:
                    del self._cache[next(iter(self._cache))]  # the oldest: dicts keep insertion order
                self._cache[arn] = details
        return details
