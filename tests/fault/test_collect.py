"""Collection faults: an X-Ray throttling storm, STS AccessDenied for one account (fixed before the
next sweep), and late / in-progress traces across 5-minute windows. Each scenario runs sweep →
queue → consumer and ends with an exact comparison of every sink and reconcile."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest

from blocks.config import Config
from flows.sweep import sweep
from sandbox.faults import FaultProxy, sts_access_denied
from sandbox.stack import SandboxStack
from sandbox.traffic import complete_in_progress, generate_traffic, write_traffic
from tasks import watermark
from tests.fault import helpers as h

pytestmark = pytest.mark.usefixtures("prefect_harness")


def strict_front(stack: SandboxStack) -> Any:
    return next(c for c in stack.extra if type(c).__name__ == "StrictXRayFront")


@pytest.mark.slow
def test_throttling_storm_then_calm_misses_nothing(fresh_config: Config, config_file: str, stack: SandboxStack) -> None:
    expected = h.plant(fresh_config, 8, tag="storm", spacing=40)
    front = strict_front(stack)
    knobs = {"rate_per_second": front._rate, "burst": front._burst, "page_size": front.page_size}
    front.configure(rate_per_second=0.5, burst=1, page_size=2)  # a storm: 1 call / 2 s per account
    try:
        storm = sweep(config_path=config_file, **h.sweep_config_kwargs(), xray_rate_per_second=50, return_state=True)
    finally:
        front.configure(**knobs)
    data: Any = storm.result(raise_on_failure=False)
    assert data["totals"]["throttles"] > 0, data["totals"]
    # accounts that gave up under the storm kept their watermark; the next sweep catches up
    calm = sweep(config_path=config_file, **h.sweep_config_kwargs(), return_state=True)
    assert calm.is_completed(), calm.message
    h.drain(fresh_config)
    h.assert_exactly_once(fresh_config, expected)
    h.reconcile_ok(config_file, expected)


def test_access_denied_for_one_account_then_fixed(
    fresh_config: Config, config_file: str, stack: SandboxStack, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    expected = h.plant(fresh_config, 5, tag="denied")
    broken = fresh_config.roster.accounts[1].account_id
    with FaultProxy(stack.config.aws_endpoint_url or "") as proxy, monkeypatch.context() as environment:
        proxy.add(sts_access_denied(broken))
        environment.setenv("AWS_ENDPOINT_URL_STS", proxy.url)
        config = fresh_config.model_copy(
            update={"service_endpoints": fresh_config.service_endpoints | {"sts": proxy.url}}
        )
        denied = sweep(config_path=h.write_config(config, tmp_path / "denied.json"), return_state=True)
    assert denied.is_failed() and broken in (denied.message or "")
    assert watermark.read(boto3.client("s3"), fresh_config.archive, broken, h.REGION).high_water is None
    first = h.drain(fresh_config)
    assert first.traces == sum(len(v) for a, v in expected.items() if a != broken)

    fixed = sweep(config_path=config_file, **h.sweep_config_kwargs(), return_state=True)  # trust repaired
    assert fixed.is_completed(), fixed.message
    h.drain(fresh_config)
    h.assert_exactly_once(fresh_config, expected)
    h.reconcile_ok(config_file, expected)


@pytest.mark.slow
def test_late_and_in_progress_traces_across_five_minute_windows(fresh_config: Config, config_file: str) -> None:
    planned = generate_traffic(11, fresh_config.roster.accounts, traces_per_account=8, hours_back=0.75, now=time.time())
    report = write_traffic(planned, fresh_config.roster)
    expected = {a.account_id: set(report.trace_ids(a.account_id)) for a in fresh_config.roster.accounts}
    options = {"lag_seconds": 0, "first_lookback_minutes": 60, "max_window_minutes": 5, "overlap_seconds": 300}
    first = sweep(config_path=config_file, **options, return_state=True)
    assert first.is_completed(), first.message
    totals: Any = first.result()
    assert totals["totals"]["traces"] > 0
    h.drain(fresh_config)
    in_progress = {t.trace_id for t in planned.traces if t.completions}
    assert in_progress
    seen = h.Sinks()
    h.observe_index(fresh_config, seen)
    assert any(seen.index_in_progress[k] for k in seen.index if k[1] in in_progress)

    # after the first sweep: in-progress traces complete, and late traces arrive whose segments
    # reach X-Ray only now: some ended inside the overlap (3 min ago), some long before (20 min)
    complete_in_progress(planned, fresh_config.roster)
    late = h.plant(fresh_config, 2, tag="late", age_seconds=180, spacing=20)
    very_late = h.plant(fresh_config, 2, tag="very-late", age_seconds=20 * 60, spacing=97)
    second = sweep(config_path=config_file, **options, return_state=True)
    assert second.is_completed(), second.message
    h.drain(fresh_config)

    swept = h.merge(expected, late)
    sinks = h.observe(fresh_config, swept, *h.window_of(h.merge(swept, very_late)))
    for account, ids in very_late.items():  # older than watermark - overlap: the sweep cannot see them
        assert ids <= sinks.xray[account] and not ids & sinks.raw.get(account, set())
    # reconcile finds them (in X-Ray, in no sink) and repairs by re-collecting through the queue
    everything = h.merge(swept, very_late)
    report = h.reconcile_ok(config_file, everything, repair=True)
    assert report.before.missing["raw"] == sum(len(v) for v in very_late.values())
    h.assert_exactly_once(fresh_config, everything, completed=in_progress, segments_per_trace=0)
