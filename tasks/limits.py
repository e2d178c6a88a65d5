"""Prefect global concurrency limits that bound X-Ray work per member account across all runs.

X-Ray throttles per (account, region). Inside one run the token bucket of `tasks/xray.py`
paces calls; across runs (a sweep, a backfill, a reconcile and a few collects at the same time)
these server-side limits do, one pair per roster (account, region):

* `xray-<account>-<region>`       concurrency limit: how many collectors (tasks) may work on
  that account/region at once, whatever flow they belong to. Held for the duration of one
  account task: `with xray_slot(account_id, region): …` (below), which retries a failing
  Prefect API (`tasks.retrying` policy, transient errors only) and then works without the slot
  rather than failing the account.
* `xray-rate-<account>-<region>`  rate limit (slot decay = calls per second, limit = burst): one
  slot per X-Ray API call, across every process: `rate_limit(name, strict=False)` just before
  the call. Optional (one extra request to the Prefect API per X-Ray call); the in-run token
  bucket set to (account rate / collectors) gives the same bound without it.

Acquiring with `strict=False` is a no-op when a limit does not exist, so code that uses them
runs unchanged without `xraylake serve` (tests, the CLI on an ephemeral server). Created and
updated by name (idempotent) by `serve_all`, or `python -m tasks.limits`; a sweep creates those
of an account that joined the roster since, when the others exist (`limits_for`); visible and
editable in the UI under Concurrency. A retired account's limits are left in place (harmless).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import httpx
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency

from blocks import Roster
from tasks.errors import is_transient_error
from tasks.retrying import PREFECT_API, RetryPolicy

COLLECTORS_PER_ACCOUNT = 2
SLOT_TIMEOUT_SECONDS = 900  # how long an account task waits for a busy X-Ray slot
CALLS_PER_SECOND = 10.0  # same default as tasks/xray.py's in-run token bucket


def concurrency_name(account_id: str, region: str) -> str:
    return f"xray-{account_id}-{region}"


def rate_name(account_id: str, region: str) -> str:
    return f"xray-rate-{account_id}-{region}"


def _limit_names(page: int = 200) -> set[str] | None:
    """Every global concurrency limit's name, in a few API calls; None when the Prefect API cannot say."""
    found: set[str] = set()
    try:
        with get_client(sync_client=True) as client:
            offset = 0
            while True:
                limits = client.read_global_concurrency_limits(limit=page, offset=offset)
                found |= {limit.name for limit in limits}
                if len(limits) < page:
                    return found
                offset += page
    except Exception as error:  # the caller then asks per account, as without this check
        logging.getLogger(__name__).warning("could not list concurrency limits (%s)", error)
        return None


def existing_limits(names: Iterable[str], page: int = 200) -> set[str] | None:
    """Which of `names` exist as global concurrency limits, in a few API calls rather than one
    per account (asking for a missing limit costs a request on the server all the same: bench
    B3b, 200 accounts); None when the Prefect API cannot say."""
    found = _limit_names(page)
    return None if found is None else found & set(names)


def limits_for(
    targets: Sequence[tuple[str, str]],
    collectors: int = COLLECTORS_PER_ACCOUNT,
    calls_per_second: float = CALLS_PER_SECOND,
    page: int = 200,
) -> set[str] | None:
    """The `xray-<account>-<region>` limits of `targets` (account id, region) that exist, after
    creating those of the targets that have none while other accounts' limits exist.

    `serve` creates the limits for the roster it reads at start; an account that joins the
    organization later would otherwise be collected unbounded until the next `serve`. Where no
    `xray-…` limit exists at all (`--no-limits`, tests, the CLI on an ephemeral server) nothing is
    created. A failure to create is logged, never raised: the limits are a courtesy to X-Ray's quota.
    None when the Prefect API cannot list the limits."""
    everything = _limit_names(page)
    if everything is None:
        return None
    names = {concurrency_name(account_id, region): (account_id, region) for account_id, region in targets}
    found = everything & set(names)
    missing = [pair for name, pair in names.items() if name not in found]
    if not missing or not any(_OURS.match(name) for name in everything):
        return found
    logger = logging.getLogger(__name__)
    try:
        created = _upsert(_specs(missing, collectors, calls_per_second))
    except Exception as error:
        logger.warning("could not create the X-Ray limits of %d new account/regions (%s)", len(missing), error)
        return found
    logger.info(
        "X-Ray limits created for %d account/region(s) that joined the roster: %s",
        len(missing),
        ", ".join(name for name in created if not name.startswith("xray-rate-"))[:300],
    )
    return found | {concurrency_name(account_id, region) for account_id, region in missing}


_OURS = re.compile(r"xray-\d{12}-")  # a concurrency limit `planned_limits` names


def _prefect_api_transient(error: BaseException) -> bool:
    """A Prefect API failure worth asking again: 429/5xx or no connection, also when Prefect wraps
    it (ConcurrencySlotAcquisitionError from the HTTP error); never a slot that stayed busy."""
    if isinstance(error, TimeoutError):
        return False
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, httpx.HTTPStatusError):
            return cause.response.status_code == 429 or cause.response.status_code >= 500
        if isinstance(cause, httpx.TransportError):
            return True
        cause = cause.__cause__
    return is_transient_error(error)


SLOT_POLICY = replace(PREFECT_API, retry_if=_prefect_api_transient)


@contextlib.contextmanager
def xray_slot(
    account_id: str,
    region: str,
    timeout_seconds: float = SLOT_TIMEOUT_SECONDS,
    policy: RetryPolicy = SLOT_POLICY,
) -> Iterator[bool]:
    """Hold the `xray-<account>-<region>` slot while the body runs; yields False when the Prefect
    API could not be asked (a missing limit counts as granted: `strict=False`).

    The limit is a cross-run courtesy to X-Ray's quota, so the Prefect API failing to hand it out
    (a 503 from a busy server, a refused connection) must not fail the account: after `policy`'s
    attempts (transient API errors only) the body runs without it, paced by the run's own token
    bucket. A slot that stays busy for `timeout_seconds` raises TimeoutError. A failed release is
    only logged: the lease expires.
    """
    logger = logging.getLogger(__name__)
    name = concurrency_name(account_id, region)
    held = contextlib.ExitStack()
    granted = False

    def acquire() -> None:
        held.enter_context(
            concurrency(name, occupy=1, strict=False, timeout_seconds=timeout_seconds, lease_duration=300)
        )

    try:
        policy.run(f"concurrency slot {name}", acquire)
        granted = True
    except TimeoutError:
        raise
    except Exception as error:  # the Prefect API, not X-Ray: retried, then worked around
        logger.warning("concurrency slot %s unavailable (%s); working without it", name, error)
    try:
        yield granted
    finally:
        try:
            held.close()
        except Exception as error:
            logger.warning("releasing concurrency slot %s failed (%s); its lease expires on its own", name, error)


@dataclass(frozen=True)
class LimitSpec:
    name: str
    limit: int
    slot_decay_per_second: float | None = None


def planned_limits(
    roster: Roster, collectors: int = COLLECTORS_PER_ACCOUNT, calls_per_second: float = CALLS_PER_SECOND
) -> list[LimitSpec]:
    """The limits for every (account, region) of the roster (pure)."""
    pairs = [(account.account_id, region) for account in roster.accounts for region in account.regions]
    return _specs(pairs, collectors, calls_per_second)


def _specs(pairs: Iterable[tuple[str, str]], collectors: int, calls_per_second: float) -> list[LimitSpec]:
    if collectors < 1:
        raise ValueError("collectors must be at least 1")
    if calls_per_second <= 0:
        raise ValueError("calls_per_second must be positive")
    burst = max(1, round(calls_per_second))
    specs: list[LimitSpec] = []
    for account_id, region in pairs:
        specs.append(LimitSpec(concurrency_name(account_id, region), collectors))
        specs.append(LimitSpec(rate_name(account_id, region), burst, float(calls_per_second)))
    return specs


def _upsert(specs: list[LimitSpec]) -> list[str]:
    with get_client(sync_client=True) as client:
        for spec in specs:
            client.upsert_global_concurrency_limit_by_name(spec.name, spec.limit, spec.slot_decay_per_second)
    return [s.name for s in specs]


def ensure_limits(
    roster: Roster, collectors: int = COLLECTORS_PER_ACCOUNT, calls_per_second: float = CALLS_PER_SECOND
) -> list[str]:
    """Create or update the limits on the current Prefect API; returns their names."""
    return _upsert(planned_limits(roster, collectors, calls_per_second))


def main(argv: Sequence[str] | None = None) -> int:
    from tasks.organizations import load_run_config

    parser = argparse.ArgumentParser(prog="python -m tasks.limits", description="Create the per-account X-Ray limits.")
    parser.add_argument("--config", help="config file (default: $XRAYLAKE_CONFIG or the sandbox)")
    parser.add_argument("--collectors", type=int, default=COLLECTORS_PER_ACCOUNT)
    parser.add_argument("--calls-per-second", type=float, default=CALLS_PER_SECOND)
    args = parser.parse_args(argv)
    config = load_run_config(args.config).config  # an Organizations roster: its accounts as cached
    for name in ensure_limits(config.roster, args.collectors, args.calls_per_second):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
