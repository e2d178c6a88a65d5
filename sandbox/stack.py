"""The embedded local stack: moto server (real HTTP AWS APIs) + in-memory OpenSearch server.

`SandboxStack.start()` runs both inside the current process (tests, benchmarks); `up()` runs
them in a detached `python -m sandbox` process so that separate CLI invocations share one
stack, and writes the state file other commands read. `down()` stops it; a state file left by
a crashed process is detected (dead pid) and replaced on the next start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.server import ThreadedMotoServer
from osmem_server import OsmemServer

from blocks import OpenSearchTarget
from blocks.config import Config, sandbox_state_path
from sandbox import seed

log = logging.getLogger(__name__)

HMAC_SANDBOX_KEY = "xraylake-sandbox-signing-key"


def _silence_request_logs() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)


def _enable_step_functions_execution(endpoint: str) -> None:
    """Make moto actually run Pass/Choice/Wait/Succeed/Fail states (else executions stay RUNNING)."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/config",
        data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@dataclass
class SandboxStack:
    moto: ThreadedMotoServer
    opensearch: OsmemServer
    config: Config
    extra: list[Any] = field(default_factory=list)

    @classmethod
    def start(
        cls, strict_xray: bool = True, region: str = "us-east-1", transaction_search: bool = False
    ) -> SandboxStack:
        _silence_request_logs()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        opensearch = OsmemServer.start(japanese=False)
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=region,
        )
        _enable_step_functions_execution(endpoint)
        roster, queue, archive = seed.seed_all(region)
        extra: list[Any] = []
        service_endpoints: dict[str, str] = {}
        if strict_xray:
            from sandbox.strict_xray import StrictXRayFront

            front = StrictXRayFront(upstream=endpoint)
            front.oam = seed.seed_observability()
            front.start()
            extra.append(front)
            service_endpoints["xray"] = front.url
            # Transaction Search quotas on aws/spans reads (boto3 names the setting by service id "CloudWatch Logs")
            service_endpoints["cloudwatch_logs"] = front.url
            for account_id, search_region in seed.TRANSACTION_SEARCH_REGIONS if transaction_search else []:
                front.set_segment_destination(account_id, search_region, "CloudWatchLogs")
            service_endpoints["oam"] = front.url  # moto has no OAM API: the front emulates it
        config = Config(
            region=region,
            log_account_id=seed.LOG_ACCOUNT_ID,
            aws_endpoint_url=endpoint,
            service_endpoints=service_endpoints,
            roster=roster,
            queue=queue,
            archive=archive,
            opensearch=OpenSearchTarget(hosts=[opensearch.url], verify_certs=False),
            signing_keys=[HMAC_SANDBOX_KEY],  # type: ignore[list-item]
        )
        config.apply_environment()
        return cls(moto=moto, opensearch=opensearch, config=config, extra=extra)

    def stop(self) -> None:
        for component in reversed(self.extra):
            with contextlib.suppress(Exception):
                component.stop()
        with contextlib.suppress(Exception):
            self.opensearch.close()
        with contextlib.suppress(Exception):
            self.moto.stop()

    def __enter__(self) -> SandboxStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- detached process


def _pid_alive(pid: int) -> bool:
    """A running process; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_state(home: Path | None = None) -> dict[str, Any] | None:
    """The running sandbox's state, or None (a state file of a dead process is removed)."""
    path = sandbox_state_path(home)
    if not path.exists():
        return None
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    if not _pid_alive(int(state.get("pid", -1))):
        path.unlink(missing_ok=True)
        return None
    return state


def write_state(stack: SandboxStack, home: Path) -> Path:
    path = sandbox_state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "pid": os.getpid(),
        "started_at": time.time(),
        "aws_endpoint_url": stack.config.aws_endpoint_url,
        "opensearch_url": stack.opensearch.url,
        "opensearch_pid": stack.opensearch.pid,
        "config": json.loads(stack.config.to_json()),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def up(home: Path, strict_xray: bool = True, timeout: float = 60.0, transaction_search: bool = False) -> dict[str, Any]:
    """Start a detached sandbox for `home` (or return the one already running)."""
    state = read_state(home)
    if state:
        return state
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "sandbox.log"
    args = [sys.executable, "-m", "sandbox", "--home", str(home)]
    if not strict_xray:
        args.append("--lenient-xray")
    if transaction_search:
        args.append("--transaction-search")
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI that started it; `down` stops it
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(home)
        if state and state.get("pid") == process.pid:
            return state
        if process.poll() is not None:
            raise RuntimeError(f"sandbox exited during start (code {process.returncode}); see {log_path}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"sandbox did not start within {timeout:.0f} s; see {log_path}")


def down(home: Path, timeout: float = 20.0) -> bool:
    """Stop the sandbox of `home`; True when one was running."""
    state = read_state(home)
    if not state:
        return False
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    osmem_pid = int(state.get("opensearch_pid") or 0)
    if osmem_pid and _pid_alive(osmem_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(osmem_pid, signal.SIGKILL)
    sandbox_state_path(home).unlink(missing_ok=True)
    return True
