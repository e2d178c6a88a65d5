"""B3b sweep cycle at scale: wall time of one full sweep over N = 200 accounts, light traffic.

Each of the N member accounts holds a few traces; one cycle does, per account, what a scheduled
sweep does: assume the reader role (a fresh `Collector`, as every flow run builds), read the
watermark from S3, detect Transaction Search, list summaries per window, fetch traces, send
envelopes, advance the watermark. Phases are timed by wrapping the module functions the sweep
calls (no behaviour change). Two schedulers run the same `tasks.collector.sweep_account`:

- `pool`: `sweep_account` on a plain pool of 32 threads fed continuously (the library alone);
- `flow` (full runs only): the real `sweep` Prefect flow (`concurrency` 16 and 32, task runs recorded by
  a local Prefect test server), i.e. what the 5-minute deployment runs.

Model loading, side by side: `shared` is `tasks.aws` as it is (one botocore data loader for every
session, clients cached per (account, region)); `per-session` rebuilds the loader for every
boto3 session, as plain `boto3.Session()` does (~90 ms CPU per session + client, ~10 ms shared).

Baseline: the 5-minute schedule interval. Target: one cycle ≤ 60 s; per-account overhead reported.

Organization scale (issue 18): `bench_sweep_org.py` (1,000 accounts from an Organizations roster:
discovery, member-role and monitoring-account cycles side by side); `--organization-only` here runs
it (`--organization-accounts N`) and writes `bench_sweep_org.json`.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import common
from bench_sweep import drain, put_traces

SCHEDULE_SECONDS = 300.0


class PhaseTimer:
    """Wall seconds spent inside wrapped functions, summed over threads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.seconds[phase] += elapsed
                    self.calls[phase] += 1

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)
        self._undo.clear()


def sweep_phases() -> PhaseTimer:
    """A PhaseTimer on the functions one account's sweep calls (undo with `restore`)."""
    from tasks import collector as col
    from tasks import watermark, xray
    from tasks.aws import MemberSessions

    timer = PhaseTimer()
    timer.wrap(MemberSessions, "_member", "assume_role_or_cached")
    timer.wrap(watermark, "read", "watermark_read")
    timer.wrap(watermark, "advance", "watermark_write")
    timer.wrap(xray, "detect_transaction_search", "transaction_search_check")
    timer.wrap(xray, "list_trace_ids", "summaries")
    timer.wrap(xray, "batch_get_traces", "batch_get_traces")
    timer.wrap(col, "send_envelopes", "send_envelopes")
    return timer


@contextlib.contextmanager
def per_session_models(enabled: bool) -> Iterator[None]:
    """Patch: every session gets its own botocore data loader (plain `boto3.Session`)."""
    if not enabled:
        yield
        return
    import boto3

    from tasks import aws

    original, client_session = aws.shared_session, aws._client_session
    aws.shared_session = lambda **kwargs: boto3.Session(**kwargs)
    aws._client_session = lambda: boto3.Session()  # a plain session (and its loader) per member client
    try:
        yield
    finally:
        aws.shared_session, aws._client_session = original, client_session


def run_flow(config: Any, concurrency: int) -> list[Any]:
    """The real sweep flow over the roster in `config`, with its results per account."""
    import tempfile
    from pathlib import Path

    from flows.sweep import sweep

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"
        path.write_bytes(config.to_json())
        state = sweep(config_path=str(path), concurrency=concurrency, xray_rate_per_second=20.0, return_state=True)
        return list(state.result()["results"])  # type: ignore[union-attr,index]


def cycle(base: Any, accounts: list[Any], scheduler: str, workers: int, shared: bool) -> dict[str, Any]:
    """One sweep cycle over `accounts`; `workers` is the pool size, or the flow's `concurrency`."""
    from tasks import collector as col
    from tasks import xray
    from tasks.aws import MemberSessions

    config = common.fresh_sinks(common.roster_of(base, accounts), uuid.uuid4().hex[:8])
    writer = MemberSessions(config.roster)
    now = time.time()
    with ThreadPoolExecutor(8) as pool:
        expected = set().union(*pool.map(lambda a: put_traces(writer, a.account_id, 3, now), accounts))

    timer = sweep_phases()
    cpu = common.CpuMeter(base.sandbox_pid)
    started = time.perf_counter()
    try:
        with per_session_models(not shared):
            if scheduler == "flow":
                results = run_flow(config, workers)
            else:
                collector = col.Collector.from_config(config, xray.LimiterRegistry(rate=20.0))
                sweep_now = datetime.now(UTC)

                def one(account: Any) -> Any:
                    return col.sweep_account(collector, account, "us-east-1", now=sweep_now)

                with ThreadPoolExecutor(workers) as pool:
                    results = list(pool.map(one, accounts))
            wall = time.perf_counter() - started
    finally:
        timer.restore()
    busy = cpu.read()
    got = set(drain(config))
    seconds = [r.seconds for r in results]
    n = len(accounts)
    return {
        "scheduler": scheduler,
        "workers": workers,
        "shared_models": shared,
        "accounts": n,
        "cycle_seconds": round(wall, 2),
        "failed_accounts": sum(1 for r in results if r.status == "failed"),
        "errors": [r.error for r in results if r.status == "failed"][:3],
        "traces_expected": len(expected),
        "traces_missed": len(expected - got),
        "account_seconds_p50": round(common.percentile(seconds, 50) or 0, 3),
        "account_seconds_p95": round(common.percentile(seconds, 95) or 0, 3),
        "account_seconds_mean": round(sum(seconds) / n, 3),
        "overhead_per_account_seconds": round(wall * workers / n, 3),
        "phase_seconds_per_account": {k: round(v / n, 4) for k, v in sorted(timer.seconds.items())},
        "phase_calls": dict(timer.calls),
        "cpu_seconds": busy,
        "cpu_ms_per_account": {k: round(1000 * v / n, 1) for k, v in busy.items()},
    }


@contextlib.contextmanager
def prefect_server(enabled: bool) -> Iterator[None]:
    """A temporary local Prefect server for the flow variant (what `prefect_test_harness` starts)."""
    if not enabled:
        yield
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def main() -> None:
    def options(parser: Any) -> None:
        parser.add_argument(
            "--organization-only", action="store_true", help="only the 1,000-account Organizations part"
        )
        parser.add_argument("--organization-accounts", type=int, default=1000)

    args = common.parse_args(__doc__.splitlines()[0], options)
    if args.organization_only:
        import bench_sweep_org

        bench_sweep_org.measure(args, args.organization_accounts)
        return
    started = time.monotonic()
    n = 16 if args.quick else 200
    plans: list[tuple[str, int, bool]] = [("pool", 32, False), ("pool", 32, True)]
    if not args.quick:
        plans += [("flow", 16, True), ("flow", 32, True)]
    runs = []
    with common.detached_sandbox() as base, prefect_server(not args.quick):
        for index, (scheduler, workers, shared) in enumerate(plans):
            accounts = common.member_accounts(n, prefix=f"07{index}")
            result = cycle(base, accounts, scheduler, workers, shared)
            if n != 200:  # quick: the same per-account cost, scaled to 200 accounts
                result["cycle_seconds_scaled_to_200"] = round(result["cycle_seconds"] * 200 / n, 2)
            common.log(
                f"{scheduler}/{workers} shared={shared}: {result['cycle_seconds']} s for {n} accounts, "
                f"{result['overhead_per_account_seconds']} s per account per worker"
            )
            runs.append(result)
    scale = 200 / n

    def cycle_200(run: dict[str, Any]) -> float:
        return round(run["cycle_seconds"] * scale, 2)

    def pick(scheduler: str, shared: bool) -> dict[str, Any] | None:
        return next((r for r in runs if r["scheduler"] == scheduler and r["shared_models"] == shared), None)

    shared_pool, per_session_pool = pick("pool", True), pick("pool", False)
    flows = [r for r in runs if r["scheduler"] == "flow"]
    flow = min(flows, key=lambda r: r["cycle_seconds"]) if flows else None
    assert shared_pool is not None and per_session_pool is not None
    missed = sum(r["traces_missed"] for r in runs)
    failed = sum(r["failed_accounts"] for r in runs)
    check: Callable[[float], dict[str, Any]] = lambda seconds: common.target(seconds, 60.0, higher_is_better=False)  # noqa: E731
    metrics = {
        "accounts": n,
        "runs": runs,
        "cycle_seconds_200": cycle_200(shared_pool),
        "cycle_seconds_200_per_session_models": cycle_200(per_session_pool),
        "shared_models_speedup": round(per_session_pool["cycle_seconds"] / shared_pool["cycle_seconds"], 2),
        "flow_cycle_seconds_200": cycle_200(flow) if flow else None,
        "flow_cycle_seconds_by_concurrency": {str(r["workers"]): r["cycle_seconds"] for r in flows},
        "share_of_schedule_interval": round(cycle_200(flow or shared_pool) / SCHEDULE_SECONDS, 3),
        "traces_missed": missed,
        "failed_accounts": failed,
        "targets": {
            "cycle_seconds": check(cycle_200(shared_pool)),
            "flow_cycle_seconds": check(cycle_200(flow)) if flow else None,
            "traces_missed": common.target(missed, 0, higher_is_better=False),
            "failed_accounts": common.target(failed, 0, higher_is_better=False),
        },
    }
    common.finish("bench_sweep_scale", args, metrics, started)


if __name__ == "__main__":
    main()
