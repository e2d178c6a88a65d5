"""B3o organization scale (issue 18, Speed): N = 1,000 accounts from an Organizations roster.

N accounts are created in the sandbox's Organization (an OU of their own, `environment` and
`team` tags), each linked to a monitoring account's OAM sink and holding 3 traces (setup, not
timed). Then, in one run on the same traffic:

- discovery (`tasks.organizations.resolve`): cold and forced (every account listed and its tags
  read), unpaced, so the seconds are moto's and ours, with the CPU of each process per call; then
  a warm refresh (the roster cache expired, tags reused except those due), paced at the default
  `ORGANIZATIONS_RATE` as a sweep runs it. The same call counts at the real service's ~10 calls/s
  give the cold refresh's floor there (`real_service_cold_seconds_at_rate`);
- the member-role cycle over the discovered roster: `sweep_account` on a pool of 32 threads,
  shared botocore models, phases timed per account (as B3b): the first sweep (an hour of
  lookback: two windows an account), then the next one 5 minutes later (steady state: one window
  from the watermark less the overlap, the overlap's traces not fetched again);
- the steady cycle again with the roster refreshed beside it (its cache expired), as the sweep
  flow runs discovery now: the cycle ends when both are done; discovery's share is the difference
  to the steady cycle without it;
- steady cycles come in two kinds: idle (no watermark write due) and write-due (an idle account's
  watermark is written every 15 minutes): one process measures both, and so do 4 shard processes
  (what the sharded sweep's child runs do, each warm before the clock starts);
- the monitoring-account cycle: `tasks.monitoring.route` + one `sweep_region` in the monitoring
  account (its watermark, one read for every linked account), first and steady state.

Organizations latency per call is sampled before the N accounts exist and after, to tell moto's
growth with the organization's size from ours. Discovery share = discovery seconds / member-role
cycle seconds, raw (a refresh in this sweep) and amortised over the roster cache TTL (a refresh
once per `ceil(TTL / 300 s)` sweeps). Targets: member-role cycle ≤ 60 s, discovery ≤ 5 % of it,
0 traces missed in either mode. `--quick`: N = 40. `--accounts N` for another size.
"""

from __future__ import annotations

import math
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import common
from bench_sweep import drain, put_traces
from bench_sweep_scale import SCHEDULE_SECONDS, sweep_phases

POOL = 32
TRACES_PER_ACCOUNT = 3
REAL_SERVICE_RATE = 10.0  # Organizations calls per second the real service allows (about)
TTLS = (300, 900, 3600)
SHARDS = 4  # steady-state cycles split across this many sweep processes (the sharded sweep)


def organization_accounts(n: int) -> tuple[str, list[str]]:
    """`n` accounts created in the sandbox's Organization under an OU of their own (setup, not timed)."""
    import boto3

    org = boto3.client("organizations", region_name="us-east-1")
    root = org.list_roots()["Roots"][0]["Id"]
    ou = org.create_organizational_unit(ParentId=root, Name=f"bench-{uuid.uuid4().hex[:6]}")["OrganizationalUnit"]["Id"]

    def create(i: int) -> str:
        status = org.create_account(
            Email=f"bench-{i}-{uuid.uuid4().hex[:6]}@example.com",
            AccountName=f"org-{i:04d}",
            Tags=[{"Key": "environment", "Value": ("dev", "qa", "prod")[i % 3]}, {"Key": "team", "Value": "bench"}],
        )["CreateAccountStatus"]
        account_id = str(status["AccountId"])
        org.move_account(AccountId=account_id, SourceParentId=root, DestinationParentId=ou)
        return account_id

    with ThreadPoolExecutor(8) as pool:
        return ou, list(pool.map(create, range(n)))


def call_latency_ms(client: Any, account_id: str, parent_id: str, samples: int = 15) -> dict[str, float]:
    """Median wall ms of one ListTagsForResource and one ListAccountsForParent page, serially."""

    def median_ms(fn: Any) -> float:
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return round(1000 * statistics.median(times), 1)

    return {
        "list_tags_for_resource": median_ms(lambda: client.list_tags_for_resource(ResourceId=account_id)),
        "list_accounts_for_parent_page": median_ms(lambda: client.list_accounts_for_parent(ParentId=parent_id)),
    }


def discovery_run(base: Any, config: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    from tasks import organizations

    cpu = common.CpuMeter(base.sandbox_pid)
    started = time.perf_counter()
    resolution = organizations.resolve_for_run(config, **kwargs)
    seconds = time.perf_counter() - started
    busy = cpu.read()
    found = resolution.discovery
    assert found is not None, f"no discovery ran ({resolution.source})"
    calls = max(1, found.calls)
    return resolution, {
        "seconds": round(seconds, 2),
        "calls": found.calls,
        "calls_by_operation": found.calls_by_operation,
        "tag_reads": found.tag_reads,
        "tags_reused": found.tags_reused,
        "throttles": found.throttles,
        "wait_seconds": found.wait_seconds,
        "accounts": len(resolution.roster.accounts),
        "cpu_seconds": busy,
        "cpu_ms_per_call": {k: round(1000 * v / calls, 2) for k, v in busy.items()},
    }


DRAIN_UP_TO = 200  # above: moto's SQS drains ~1 message/s with 2,000 queued (a 1,000-account run took 15+ min)


def delivered(config: Any, results: list[Any], expected: set[str], queued_before: int) -> dict[str, Any]:
    """Traces missed: drained from the queue and decoded (N ≤ DRAIN_UP_TO), else the ids the sweep
    reported sent, checked against the queue's depth (every envelope the sweep counted is there)."""
    import boto3

    if len(results) <= DRAIN_UP_TO:
        return {"traces_missed": len(expected - set(drain(config))), "checked_by": "queue drained and decoded"}
    sent = {t for r in results for t in r.trace_ids}
    envelopes = sum(r.envelopes for r in results)
    queued = common.queue_depth(boto3.client("sqs"), config.queue.queue_url) - queued_before
    return {
        "traces_missed": len(expected - sent) + (0 if queued == envelopes else len(expected)),
        "checked_by": f"sent trace ids; queue depth {queued} for {envelopes} envelopes sent",
    }


def member_cycle(
    base: Any, member: Any, expected: set[str], now: datetime, beside: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """One member-role cycle at `now` (a fresh Collector, as every flow run builds one); `beside`
    runs on a thread of its own from the cycle's start (the sweep's roster refresh), and the cycle
    ends when both are done, as the sweep flow waits for its refresh."""
    import boto3

    from tasks import collector as col
    from tasks import xray

    accounts = list(member.roster.accounts)
    queued_before = common.queue_depth(boto3.client("sqs"), member.queue.queue_url)
    timer = sweep_phases()
    cpu = common.CpuMeter(base.sandbox_pid)
    started = time.perf_counter()
    beside_seconds: list[float] = []

    def timed_beside() -> None:
        assert beside is not None
        beside()
        beside_seconds.append(time.perf_counter() - started)

    try:
        with ThreadPoolExecutor(1) as side:
            refresh = side.submit(timed_beside) if beside is not None else None
            collector = col.Collector.from_config(member, xray.LimiterRegistry(rate=20.0))
            with ThreadPoolExecutor(POOL) as pool:
                results = list(pool.map(lambda a: col.sweep_account(collector, a, "us-east-1", now=now), accounts))
            if refresh is not None:
                refresh.result()
        seconds = time.perf_counter() - started
    finally:
        timer.restore()
    busy = cpu.read()
    n = max(1, len(accounts))
    return {
        "seconds": round(seconds, 2),
        "pool": POOL,
        "shared_models": True,
        "failed_accounts": sum(1 for r in results if r.status == "failed"),
        "errors": [r.error for r in results if r.status == "failed"][:3],
        "traces_expected": len(expected),
        **delivered(member, results, expected, queued_before),
        "traces_sent": sum(r.traces for r in results),
        "account_seconds_p50": round(common.percentile([r.seconds for r in results], 50) or 0, 3),
        "phase_seconds_per_account": {k: round(v / n, 4) for k, v in sorted(timer.seconds.items())},
        "phase_calls": dict(timer.calls),
        "cpu_seconds": busy,
        "cpu_ms_per_account": {k: round(1000 * v / n, 1) for k, v in busy.items()},
        **({"beside_seconds": round(beside_seconds[0], 2)} if beside_seconds else {}),
    }


def period(idle: float, write_due: float) -> dict[str, float]:
    return {"idle": idle, "write_due": write_due, "mean_of_15_minutes": round((2 * idle + write_due) / 3, 2)}


def warm_shard_process(seconds: float) -> int:
    """Import what a shard sweeps with, then hold the process a moment (so each warm-up lands in
    its own process): a worker process's start-up is not part of the cycle."""
    import os

    from tasks import collector, xray  # noqa: F401

    time.sleep(seconds)
    return os.getpid()


def sweep_shard(config_json: bytes, shard: int, shards: int, now_iso: str) -> dict[str, Any]:
    """One shard's accounts swept by this process on a pool of POOL threads (what one `sweep-shard`
    child run does), with its own wall and CPU seconds."""
    from blocks.config import Config
    from blocks.roster import shard_of
    from tasks import collector as col
    from tasks import xray

    config = Config.model_validate_json(config_json)
    accounts = [a for a in config.roster.accounts if shard_of(a.account_id, shards) == shard]
    now = datetime.fromisoformat(now_iso)
    cpu, started = time.process_time(), time.perf_counter()
    collector = col.Collector.from_config(config, xray.LimiterRegistry(rate=20.0))
    with ThreadPoolExecutor(POOL) as pool:
        results = list(pool.map(lambda a: col.sweep_account(collector, a, "us-east-1", now=now), accounts))
    return {
        "shard": shard,
        "accounts": len(accounts),
        "seconds": round(time.perf_counter() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "failed_accounts": sum(1 for r in results if r.status == "failed"),
        "errors": [r.error for r in results if r.status == "failed"][:3],
        "traces": sum(r.traces for r in results),
        "envelopes": sum(r.envelopes for r in results),
    }


def sharded_cycle(base: Any, member: Any, shards: int, now: datetime) -> dict[str, Any]:
    """One member-role cycle split over `shards` processes (the sharded sweep's children), all
    started and warm before the clock starts; the cycle ends when the last shard is done."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    payload = member.to_json()
    with ProcessPoolExecutor(shards, mp_context=multiprocessing.get_context("spawn")) as pool:
        pids = set(pool.map(warm_shard_process, [3.0] * shards))
        cpu = common.CpuMeter(base.sandbox_pid)
        started = time.perf_counter()
        parts = list(
            pool.map(sweep_shard, [payload] * shards, range(shards), [shards] * shards, [now.isoformat()] * shards)
        )
        seconds = time.perf_counter() - started
    busy = cpu.read()
    n = max(1, sum(p["accounts"] for p in parts))
    return {
        "shards": shards,
        "processes": len(pids),
        "seconds": round(seconds, 2),
        "failed_accounts": sum(p["failed_accounts"] for p in parts),
        "errors": [e for p in parts for e in p["errors"]][:3],
        "traces_sent": sum(p["traces"] for p in parts),
        "per_shard": parts,
        "cpu_ms_per_account": {
            "shard_processes": round(1000 * sum(p["cpu_seconds"] for p in parts) / n, 1),
            "sandbox_process": round(1000 * busy.get("sandbox_process", 0.0) / n, 1),
        },
    }


def monitoring_cycle(base: Any, mon: Any, expected: set[str], now: datetime) -> dict[str, Any]:
    from tasks import collector as col
    from tasks import monitoring, xray

    accounts = list(mon.roster.accounts)
    cpu = common.CpuMeter(base.sandbox_pid)
    started = time.perf_counter()
    collector = col.Collector.from_config(mon, xray.LimiterRegistry(rate=20.0))
    sessions = monitoring.monitoring_sessions(mon.roster)
    routing = monitoring.route(mon.roster, [(a, "us-east-1") for a in accounts], sessions)
    linked = routing.groups.get("us-east-1", [])
    outcome = monitoring.sweep_region(collector, sessions, mon.roster.monitoring, "us-east-1", linked, now=now)
    seconds = time.perf_counter() - started
    busy = cpu.read()
    first = outcome.results[0] if outcome.results else None
    return {
        "seconds": round(seconds, 2),
        "status": outcome.status,
        "error": outcome.error,
        "linked_accounts": len(linked),
        "member_role_fallback": len(routing.member_targets),
        "windows": first.windows if first else 0,
        "throttles": first.throttles if first else 0,
        "traces": sum(r.traces for r in outcome.results),
        "dropped_outside_roster": outcome.dropped_traces,
        "traces_expected": len(expected),
        **delivered(mon, outcome.results, expected, 0),
        "cpu_seconds": busy,
    }


def run(base: Any, n: int) -> dict[str, Any]:
    import boto3

    from blocks import MonitoringAccount, OrganizationsSource
    from sandbox import seed
    from tasks import organizations
    from tasks.aws import MemberSessions

    setup = time.perf_counter()
    org = boto3.client("organizations", region_name="us-east-1")
    root = org.list_roots()["Roots"][0]["Id"]
    before_ids = [a["Id"] for a in org.list_accounts()["Accounts"]]
    latency_before = call_latency_ms(org, before_ids[-1], root)
    ou, ids = organization_accounts(n)
    latency_after = call_latency_ms(org, ids[-1], ou)
    source = OrganizationsSource(
        role_arn=f"arn:aws:iam::{seed.LOG_ACCOUNT_ID}:role/{seed.ORGANIZATIONS_READER_ROLE}", parents=[ou]
    )
    monitor = f"08{uuid.uuid4().int % 10**10:010d}"
    roster = common.roster_of(base, []).roster.model_copy(
        update={"source": "organizations", "organizations": source, "monitoring": MonitoringAccount(account_id=monitor)}
    )
    config = common.fresh_sinks(base.model_copy(update={"roster": roster}), uuid.uuid4().hex[:8])
    writer = MemberSessions(roster)
    sink = writer.client(monitor, "us-east-1", "oam").create_sink(Name="bench")["Arn"]
    now = time.time()

    def link_and_write(account_id: str) -> set[str]:
        writer.client(account_id, "us-east-1", "oam").create_link(
            LabelTemplate="$AccountName", ResourceTypes=["AWS::XRay::Trace"], SinkIdentifier=sink
        )
        return put_traces(writer, account_id, TRACES_PER_ACCOUNT, now)

    with ThreadPoolExecutor(8) as pool:
        expected = set().union(*pool.map(link_and_write, ids))
    common.log(f"organization of {n} accounts, links and traffic set up in {time.perf_counter() - setup:.1f} s")

    load = common.machine()["load_average"]
    resolution, cold = discovery_run(base, config, force=True, rate=None)
    assert cold["accounts"] == n, f"discovered {cold['accounts']} of {n} accounts"
    common.log(f"discovery, cold and forced, unpaced: {cold}")
    later = (resolution.fetched_at or datetime.now(UTC)) + timedelta(seconds=source.cache_ttl_seconds + 1)
    _, warm = discovery_run(base, config, now=later)
    common.log(f"discovery, warm refresh (cache expired), paced at {organizations.ORGANIZATIONS_RATE}/s: {warm}")
    config = resolution.config(config)

    member_config = common.fresh_sinks(config, uuid.uuid4().hex[:8])
    first = datetime.now(UTC)
    member = member_cycle(base, member_config, expected, first)
    common.log(f"member-role cycle: {member}")

    # The next scheduled sweep, 5 minutes on: one window from the watermark less the overlap, and
    # nothing new to send (the overlap's traces were sent already).
    def at(minutes: int) -> datetime:
        return first + timedelta(minutes=minutes)

    # Steady state, nothing new: an idle account's watermark is written once per
    # watermark.IDLE_WRITE_INTERVAL (15 min), so the cycles alternate between idle (no write due)
    # and write-due ones; each variant is measured in both.
    steady = member_cycle(base, member_config, set(), at(5))
    common.log(f"member-role cycle, steady state, idle (+5 min): {steady}")
    # The next one with the roster refreshed beside it (its cache expired), as the sweep flow does.
    expired = later + timedelta(seconds=2 * source.cache_ttl_seconds + 2)
    refreshed = member_cycle(
        base, member_config, set(), at(10), beside=lambda: organizations.resolve_for_run(config, now=expired)
    )
    common.log(f"member-role cycle, steady state, idle, roster refreshed beside it (+10 min): {refreshed}")
    write_due = member_cycle(base, member_config, set(), at(15))
    common.log(f"member-role cycle, steady state, every watermark write due (+15 min): {write_due}")
    sharded = {
        str(SHARDS): {
            "idle": sharded_cycle(base, member_config, SHARDS, at(20)),
            "write_due": sharded_cycle(base, member_config, SHARDS, at(30)),
        }
    }
    common.log(f"member-role cycles over {SHARDS} shard processes (+20 idle, +30 write due): {sharded}")
    mon = common.fresh_sinks(config, uuid.uuid4().hex[:8])
    read_at = datetime.now(UTC)
    monitored = monitoring_cycle(base, mon, expected, read_at)
    common.log(f"monitoring-account cycle: {monitored}")
    monitored_steady = monitoring_cycle(base, mon, set(), read_at + timedelta(seconds=SCHEDULE_SECONDS))
    common.log(f"monitoring-account cycle, steady state (+5 min): {monitored_steady}")

    cycle = member["seconds"]
    return {
        "accounts": n,
        "traces_per_account": TRACES_PER_ACCOUNT,
        "load_average_at_start": load,
        "organizations_ms_per_call": {"before": latency_before, f"after_{n}_accounts": latency_after},
        "discovery_cold": cold,
        "discovery_warm": warm,
        "real_service_cold_seconds_at_rate": round(cold["calls"] / REAL_SERVICE_RATE, 1),
        "real_service_warm_seconds_at_rate": round(warm["calls"] / REAL_SERVICE_RATE, 1),
        "member_role_cycle": member,
        "member_role_cycle_steady": steady,
        "member_role_cycle_steady_seconds": steady["seconds"],
        "member_role_cycle_steady_refresh_beside": refreshed,
        "discovery_share_beside_steady": round((refreshed["seconds"] - steady["seconds"]) / steady["seconds"], 3),
        "member_role_cycle_write_due": write_due,
        "member_role_cycle_steady_sharded": sharded,
        # idle / write-due / the mean over one 15-minute period (two idle cycles, one write-due)
        "member_role_steady_cycle_seconds": {
            "1": period(steady["seconds"], write_due["seconds"]),
            str(SHARDS): period(sharded[str(SHARDS)]["idle"]["seconds"], sharded[str(SHARDS)]["write_due"]["seconds"]),
        },
        "monitoring_cycle": monitored,
        "member_role_cycle_seconds": cycle,
        "monitoring_cycle_seconds": monitored["seconds"],
        "monitoring_cycle_steady": monitored_steady,
        "monitoring_cycle_steady_seconds": monitored_steady["seconds"],
        "monitoring_vs_member_cycle": round(monitored["seconds"] / cycle, 3),
        "discovery_share_raw": {"cold": round(cold["seconds"] / cycle, 3), "warm": round(warm["seconds"] / cycle, 3)},
        "discovery_share_amortised_warm": {
            str(ttl): round(warm["seconds"] / (math.ceil(ttl / SCHEDULE_SECONDS) * cycle), 4) for ttl in TTLS
        },
        "discovery_share_raw_of_steady_cycle": {
            "cold": round(cold["seconds"] / steady["seconds"], 3),
            "warm": round(warm["seconds"] / steady["seconds"], 3),
        },
        "traces_missed": member["traces_missed"] + monitored["traces_missed"],
    }


def measure(args: Any, n: int) -> None:
    """Run at `n` accounts (40 with --quick) and print / write `bench_sweep_org`."""
    started = time.monotonic()
    with common.detached_sandbox() as base:
        metrics = run(base, 40 if args.quick else n)
    check = common.target
    worst = {k: v["write_due"] for k, v in metrics["member_role_steady_cycle_seconds"].items()}
    metrics["targets"] = {
        "member_role_steady_cycle_worst_seconds_one_process": check(worst["1"], 60.0, higher_is_better=False),
        f"member_role_steady_cycle_worst_seconds_{SHARDS}_shards": check(
            worst[str(SHARDS)], 60.0, higher_is_better=False
        ),
        "monitoring_steady_cycle_seconds": check(
            metrics["monitoring_cycle_steady_seconds"], 60.0, higher_is_better=False
        ),
        "discovery_share_warm_raw": check(metrics["discovery_share_raw"]["warm"], 0.05, higher_is_better=False),
        "discovery_share_beside_steady": check(metrics["discovery_share_beside_steady"], 0.05, higher_is_better=False),
        "discovery_share_cold_raw": check(metrics["discovery_share_raw"]["cold"], 0.05, higher_is_better=False),
        "traces_missed": check(metrics["traces_missed"], 0, higher_is_better=False),
    }
    common.finish("bench_sweep_org", args, metrics, started)


def main() -> None:
    def options(parser: Any) -> None:
        parser.add_argument("--accounts", type=int, default=1000, help="accounts in the Organization (full run)")

    args = common.parse_args(__doc__.splitlines()[0], options)
    measure(args, args.accounts)


if __name__ == "__main__":
    main()
