"""Shared helpers for the benchmarks in `bench/` (run them with `make bench`, or one by one).

Every benchmark takes `--quick` (finishes in well under 45 s) and prints, as its last line, one
JSON object with its metrics, its baselines measured side by side in the same run, the ratios and
whether each target holds. A full run (no `--quick`) also writes `bench/results/<name>.json`.

Workloads come from the project itself: `sandbox.traffic.generate_traffic` (realistic synthetic
X-Ray traffic, deterministic for a seed and a `now`) plus the real public X-Ray documents in
`tests/fixtures/xray`. Sandbox benchmarks start their own detached sandbox (`sandbox.stack.up`
in a temporary home: moto, the strict X-Ray front and the in-memory OpenSearch in their own
processes, so the code under test has its own core) and stop it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

RESULTS = ROOT / "bench" / "results"
FIXTURES = ROOT / "tests" / "fixtures" / "xray"
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z: generated traffic is identical across runs
QUICK_BUDGET_SECONDS = 45.0


# ------------------------------------------------------------------ arguments and output


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, < 45 s, results not written")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results/<name>.json")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    load = None
    with contextlib.suppress(OSError):
        load = [float(x) for x in os.getloadavg()]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load_average": load,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def finish(name: str, args: argparse.Namespace, metrics: dict[str, Any], started: float) -> dict[str, Any]:
    """Print the result as the last line (JSON); full runs also write bench/results/<name>.json."""
    result = {
        "bench": name,
        "mode": "quick" if args.quick else "full",
        "seconds": round(time.monotonic() - started, 2),
        **metrics,
        "machine": machine(),
    }
    if not args.quick and not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{name}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.write(json.dumps(result, default=str, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return result


def log(message: str) -> None:
    """Progress on stderr (stdout's last line is the result)."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def target(value: float | None, threshold: float, higher_is_better: bool = True) -> dict[str, Any]:
    if value is None:
        return {"value": None, "target": threshold, "met": False}
    met = value >= threshold if higher_is_better else value <= threshold
    return {"value": round(value, 4), "target": threshold, "met": bool(met)}


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[rank]


def peak_rss_mb() -> float:
    """Peak RSS of this process image: VmHWM from /proc (ru_maxrss survives exec, so a child
    started by fork+exec would report its parent's RSS at fork time); ru_maxrss elsewhere."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def gc_quiet() -> Iterator[None]:
    """What a long-lived consumer process should do at start: collect once, freeze what was
    imported so far (never scanned again), and run young collections less often."""
    gc.collect()
    gc.freeze()
    old = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


# ------------------------------------------------------------------ workloads


def member_accounts(count: int, prefix: str = "09") -> list[Any]:
    """`count` member accounts with 12-digit ids (leading zero kept, unique per process)."""
    from blocks import MemberAccount

    digits = 12 - len(prefix)
    base = (os.getpid() % 9999) * 10_000
    return [
        MemberAccount(
            account_id=f"{prefix}{(base + i) % 10**digits:0{digits}d}",
            name=f"acct-{i:04d}",
            environment=("dev", "qa", "prod")[i % 3],
            regions=["us-east-1"],
        )
        for i in range(count)
    ]


def as_batch_get_trace(trace_id: str, documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The BatchGetTraces `Trace` for generated documents (Documents as the strings put to X-Ray)."""
    from sandbox.traffic import document_json

    segments = [{"Id": doc.get("id"), "Document": document_json(doc)} for doc in documents]
    starts = [d["start_time"] for d in documents if isinstance(d.get("start_time"), float)]
    ends = [d["end_time"] for d in documents if isinstance(d.get("end_time"), float)]
    duration = round(max(ends) - min(starts), 3) if starts and ends else 0.0
    return {"Id": trace_id, "Duration": duration, "LimitExceeded": False, "Segments": segments}


def generated_traces(
    accounts: list[Any], traces_per_account: int, seed: int = 7, now: float = NOW, hours_back: float = 3.0
) -> dict[str, list[dict[str, Any]]]:
    """account id → BatchGetTraces `Trace` objects of generated traffic (completed versions of
    in-progress segments included, as a later sweep would see them)."""
    from sandbox.traffic import generate_traffic

    traffic = generate_traffic(seed, accounts, traces_per_account=traces_per_account, hours_back=hours_back, now=now)
    out: dict[str, list[dict[str, Any]]] = {}
    for item in traffic.regions:
        for record in item.traces:
            documents = list(record.documents)
            if record.completions:
                done = {d["id"]: d for d in record.completions}
                documents = [done.get(d["id"], d) for d in documents]
            out.setdefault(item.account_id, []).append(as_batch_get_trace(record.trace_id, documents))
    return out


def fixture_traces() -> list[dict[str, Any]]:
    """The real public X-Ray documents of tests/fixtures/xray as BatchGetTraces traces."""
    traces: list[dict[str, Any]] = []
    for name in ("scorekeep_batch_get_traces.json",):
        traces += orjson.loads((FIXTURES / name).read_bytes())["Traces"]
    traces.append(orjson.loads((FIXTURES / "synthesized_stepfunctions_trace.json").read_bytes()))
    for path in sorted(FIXTURES.glob("*.json")):
        if path.name.startswith(("scorekeep", "synthesized")):
            continue
        text = path.read_text(encoding="utf-8")
        document = orjson.loads(text)
        trace_id = document.get("trace_id") or "1-5759e988-bd862e3fe1be46a994272793"
        traces.append(
            {
                "Id": trace_id,
                "Duration": 0.0,
                "LimitExceeded": False,
                "Segments": [{"Id": document.get("id"), "Document": text}],
            }
        )
    return traces


def trace_context(account_id: str = "012345678901") -> Any:
    from tasks.trace_model import TraceContext

    return TraceContext(
        account_id=account_id,
        account_name="bench",
        environment="prod",
        region="us-east-1",
        collected_at=datetime.fromtimestamp(NOW, UTC),
        envelope_id="bench-envelope",
        source="sweep",
    )


# ------------------------------------------------------------------ sandbox


@contextlib.contextmanager
def detached_sandbox(strict_xray: bool = True) -> Iterator[Any]:
    """A sandbox of our own in separate processes; yields its Config (environment applied)."""
    from blocks.config import load_config, sandbox_state_path
    from sandbox.stack import down, up

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    home = Path(tempfile.mkdtemp(prefix="xraylake-bench-"))
    started = time.monotonic()
    up(home, strict_xray=strict_xray, timeout=120)
    log(f"sandbox up in {time.monotonic() - started:.1f} s ({home})")
    state = orjson.loads(sandbox_state_path(home).read_bytes())
    config = load_config(sandbox_state_path(home))
    try:
        yield SandboxConfig(config, int(state["pid"]), int(state.get("opensearch_pid") or 0))
    finally:
        down(home)


class SandboxConfig:
    """The sandbox's Config (attributes pass through) plus the pids of its processes."""

    def __init__(self, config: Any, sandbox_pid: int, opensearch_pid: int) -> None:
        self.__dict__["config"] = config
        self.__dict__["sandbox_pid"] = sandbox_pid
        self.__dict__["opensearch_pid"] = opensearch_pid

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["config"], name)

    def model_copy(self, **kwargs: Any) -> Any:
        return self.__dict__["config"].model_copy(**kwargs)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), children excluded."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by this process and by the sandbox process since creation."""

    def __init__(self, sandbox_pid: int | None = None) -> None:
        self.sandbox_pid = sandbox_pid
        self.own = time.process_time()
        self.sandbox = process_cpu_seconds(sandbox_pid) if sandbox_pid else 0.0

    def read(self) -> dict[str, float]:
        out = {"bench_process": round(time.process_time() - self.own, 2)}
        if self.sandbox_pid:
            with contextlib.suppress(OSError):
                out["sandbox_process"] = round(process_cpu_seconds(self.sandbox_pid) - self.sandbox, 2)
        return out


def roster_of(config: Any, accounts: list[Any]) -> Any:
    """The sandbox config with `accounts` as its roster (moto assumes roles into any account)."""
    from blocks import Roster
    from sandbox import seed

    roster = Roster(accounts=accounts, role_name=seed.READER_ROLE, external_id=seed.EXTERNAL_ID)  # type: ignore[arg-type]
    return config.model_copy(update={"roster": roster})


def fresh_sinks(config: Any, suffix: str) -> Any:
    """The config with a queue (+ DLQ) and bucket of its own (same sandbox)."""
    import boto3

    from sandbox import seed

    session = boto3.Session(region_name=config.region)
    queue = seed.seed_queue(session, "o-sandbox", name=f"xraylake-{suffix}")
    archive = seed.seed_bucket(session, bucket=f"xraylake-{suffix}")
    return config.model_copy(update={"queue": queue, "archive": archive})


@contextlib.contextmanager
def fresh_opensearch(config: Any) -> Iterator[Any]:
    """The config pointed at a new, empty in-memory OpenSearch server of its own (a process)."""
    from osmem_server import OsmemServer

    from blocks import OpenSearchTarget

    server = OsmemServer.start(japanese=False)
    try:
        yield config.model_copy(update={"opensearch": OpenSearchTarget(hosts=[server.url], verify_certs=False)})
    finally:
        server.close()


def queue_depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value
