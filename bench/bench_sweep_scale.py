"""B3b sweep cycle at scale: wall time of one full sweep over N = 200 accounts, light traffic.

Each of the N member accounts holds a few traces; one cycle does, per account, what a scheduled
sweep does: assume the reader role (a fresh `Collector`, as every flow run builds), read the
watermark from S3, detect Transaction Search, list summaries per window, fetch traces, send
envelopes, advance the watermark. Phases are timed by wrapping the module functions the sweep
calls (no behaviour change). Two schedulers run the same `tasks.collector.sweep_account`:

- flow-as-is: batches of `concurrency` = 8 on 8 threads, each batch awaited (flows/sweep.py);
- a pool of 32 workers fed continuously.

Variant `shared_models` (a proposal for tasks/aws.py, applied here by patching, behaviour
unchanged): every boto3 session shares one botocore data loader, so service models are parsed
once per process instead of once per assumed-role session (a fresh session + client costs
~90 ms CPU, ~10 ms with a shared loader), and the collector keeps one X-Ray client per
(account, region) instead of one per window.

Baseline: the 5-minute schedule interval. Target: one cycle ≤ 60 s; per-account overhead reported.
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


@contextlib.contextmanager
def shared_models(enabled: bool) -> Iterator[None]:
    """Patch: one botocore Loader for every session, one X-Ray client per (account, region)."""
    if not enabled:
        yield
        return
    import botocore.loaders
    import botocore.session

    from tasks import collector as col

    loader = botocore.loaders.create_loader()
    original_loader = botocore.session.create_loader
    original_client = col.Collector.xray_client
    clients: dict[tuple[int, str, str], Any] = {}
    lock = threading.Lock()

    def xray_client(self: Any, account_id: str, region: str) -> Any:
        key = (id(self), account_id, region)
        with lock:
            client = clients.get(key)
        if client is None:
            client = original_client(self, account_id, region)
            with lock:
                clients[key] = client
        return client

    botocore.session.create_loader = lambda *args, **kwargs: loader  # type: ignore[assignment]
    col.Collector.xray_client = xray_client  # type: ignore[method-assign]
    try:
        yield
    finally:
        botocore.session.create_loader = original_loader
        col.Collector.xray_client = original_client  # type: ignore[method-assign]


def cycle(base: Any, accounts: list[Any], scheduler: str, workers: int, shared: bool) -> dict[str, Any]:
    from tasks import collector as col
    from tasks import watermark, xray
    from tasks.aws import MemberSessions

    config = common.fresh_sinks(common.roster_of(base, accounts), uuid.uuid4().hex[:8])
    writer = MemberSessions(config.roster)
    now = time.time()
    with ThreadPoolExecutor(8) as pool:
        expected = set().union(*pool.map(lambda a: put_traces(writer, a.account_id, 3, now), accounts))

    timer = PhaseTimer()
    timer.wrap(MemberSessions, "session", "assume_role")
    timer.wrap(watermark, "read", "watermark_read")
    timer.wrap(watermark, "advance", "watermark_write")
    timer.wrap(xray, "detect_transaction_search", "transaction_search_check")
    timer.wrap(xray, "list_trace_ids", "summaries")
    timer.wrap(xray, "batch_get_traces", "batch_get_traces")
    timer.wrap(col, "send_envelopes", "send_envelopes")
    cpu = common.CpuMeter(base.sandbox_pid)
    started = time.perf_counter()
    try:
        with shared_models(shared):
            collector = col.Collector.from_config(config, xray.LimiterRegistry(rate=20.0))
            sweep_now = datetime.now(UTC)

            def one(account: Any) -> Any:
                return col.sweep_account(collector, account, "us-east-1", now=sweep_now)

            results: list[Any] = []
            with ThreadPoolExecutor(workers) as pool:
                if scheduler == "flow":
                    for first in range(0, len(accounts), workers):
                        results += list(pool.map(one, accounts[first : first + workers]))
                else:
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


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0])
    started = time.monotonic()
    n = 16 if args.quick else 200
    plans: list[tuple[str, int, bool]] = (
        [("pool", 32, False), ("pool", 32, True)]
        if args.quick
        else [("pool", 32, False), ("pool", 32, True), ("flow", 8, False)]
    )
    runs = []
    with common.detached_sandbox() as base:
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

    as_is = [r for r in runs if not r["shared_models"]]
    best = min(as_is, key=lambda r: r["cycle_seconds"])
    best_shared = min((r for r in runs if r["shared_models"]), key=lambda r: r["cycle_seconds"])
    flow = next((r for r in runs if r["scheduler"] == "flow" and not r["shared_models"]), None)
    missed = sum(r["traces_missed"] for r in runs)
    check: Callable[[float], dict[str, Any]] = lambda seconds: common.target(seconds, 60.0, higher_is_better=False)  # noqa: E731
    metrics = {
        "accounts": n,
        "runs": runs,
        "cycle_seconds_200": cycle_200(best),
        "cycle_seconds_200_shared_models": cycle_200(best_shared),
        "flow_as_is_cycle_seconds_200": cycle_200(flow) if flow else None,
        "share_of_schedule_interval": round(cycle_200(best) / SCHEDULE_SECONDS, 3),
        "traces_missed": missed,
        "targets": {
            "cycle_seconds": check(cycle_200(best)),
            "cycle_seconds_shared_models": check(cycle_200(best_shared)),
            "flow_as_is_cycle_seconds": check(cycle_200(flow)) if flow else None,
            "traces_missed": common.target(missed, 0, higher_is_better=False),
        },
    }
    common.finish("bench_sweep_scale", args, metrics, started)


if __name__ == "__main__":
    main()
