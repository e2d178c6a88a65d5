"""Serve every xraylake deployment from one process: `xraylake serve [--local]`.

The deployments (names, entrypoints, schedules, parameters, tags, concurrency limits, the
collect trigger) are read from the project's `prefect.yaml`, the same file `prefect deploy`
reads for work pools, so both ways of running stay identical. `serve_all()` turns each entry
into `flow.to_deployment(...)` and calls `prefect.serve(...)`; before that it creates the
per-account X-Ray limits (`tasks/limits.py`) and the alert automations
(`deployments/automations.py`).

Every deployment's parameter schema is its flow's form schema (flows/parameters.py) plus
`additionalProperties: false`, so with `enforce_parameter_schema` the server refuses unknown keys
as well as bad values (HTTP 409) before a run exists. Flow runs log at `run_log_level` (INFO)
whatever level this process was started with: a quiet terminal never silences the runs' logs
in the UI.

`local=True` is the laptop path: a Prefect server on 127.0.0.1 (`prefect server start` in a
subprocess, its database under `$XRAYLAKE_HOME/prefect`; an already running one on that port is
reused), results and local storage under `$XRAYLAKE_HOME/prefect/storage`, the local stack
through `start_stack` (the CLI passes the sandbox's `up`: this layer never imports the
sandbox), its configuration saved as blocks named `xraylake` (`blocks/config.py`) that every
deployment loads, `$XRAYLAKE_HOME/prefect/api-url` written so every `xraylake` command talks to
this server, and the UI address printed. Ctrl-C stops serving and the server this call
started; the sandbox keeps running (`xraylake sandbox down`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentTriggerTypes
from prefect.flows import Flow
from prefect.schedules import Cron, Interval, RRule, Schedule
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_HOME,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_LOGGING_LEVEL,
    temporary_settings,
)
from prefect.types.entrypoint import EntrypointType
from prefect.utilities.callables import ParameterSchema
from pydantic import ConfigDict, TypeAdapter

from blocks.config import DEFAULT_BLOCK, xraylake_home

PROJECT_DIR = Path(__file__).resolve().parents[1]
PREFECT_YAML = PROJECT_DIR / "prefect.yaml"
DEFAULT_PORT = 4200
API_URL_FILE = "api-url"  # under $XRAYLAKE_HOME/prefect while `serve --local` runs


class StrictParameterSchema(ParameterSchema):
    """Prefect's parameter schema plus `additionalProperties: false` (its model drops extra keys)."""

    model_config = ConfigDict(extra="allow")


def strict_schema(flow: Flow[..., Any]) -> StrictParameterSchema:
    """The flow's parameter schema refusing unknown parameters. An optional value shows no
    `default: null`: the server's check then accepts null for it (an emptied form field), while
    any other value must match its type."""
    schema = flow.parameters.model_dump()
    for prop in schema["properties"].values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]
    return StrictParameterSchema(**schema, additionalProperties=False)


_TRIGGERS: TypeAdapter[DeploymentTriggerTypes] = TypeAdapter(DeploymentTriggerTypes)


# ----------------------------------------------------------------------------- prefect.yaml


@dataclass
class DeploymentSpec:
    """One `deployments:` entry of prefect.yaml (the fields serving needs)."""

    name: str
    entrypoint: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    concurrency_limit: int | dict[str, Any] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    enforce_parameter_schema: bool = True

    @property
    def module_and_function(self) -> tuple[str, str]:
        """`flows/sweep.py:sweep` → (`flows.sweep`, `sweep`)."""
        path, _, function = self.entrypoint.partition(":")
        if not path.endswith(".py") or not function:
            raise ValueError(f"deployment {self.name}: entrypoint {self.entrypoint!r} is not <file.py>:<flow>")
        return path[: -len(".py")].replace("/", "."), function


def load_specs(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    data = yaml.safe_load(path.read_text())
    specs = []
    for entry in data.get("deployments") or []:
        specs.append(
            DeploymentSpec(
                name=entry["name"],
                entrypoint=entry["entrypoint"],
                description=" ".join(str(entry.get("description") or "").split()),
                tags=list(entry.get("tags") or []),
                schedules=list(entry.get("schedules") or []),
                concurrency_limit=entry.get("concurrency_limit"),
                parameters=dict(entry.get("parameters") or {}),
                triggers=list(entry.get("triggers") or []),
                enforce_parameter_schema=bool(entry.get("enforce_parameter_schema", True)),
            )
        )
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate deployment names in {names}")
    return specs


def load_flow(spec: DeploymentSpec) -> Flow[..., Any]:
    module, function = spec.module_and_function
    flow = getattr(importlib.import_module(module), function)
    if not isinstance(flow, Flow):
        raise TypeError(f"{spec.entrypoint} is not a Prefect flow")
    return flow


def build_schedule(item: dict[str, Any], active: bool = True) -> Schedule:
    """A prefect.yaml schedule item (interval seconds, cron or rrule) as a `prefect.schedules` object."""
    common: dict[str, Any] = {
        "timezone": item.get("timezone"),
        "active": bool(item.get("active", True)) and active,
        "parameters": item.get("parameters") or None,
        "slug": item.get("slug"),
    }
    if "interval" in item:
        anchor = item.get("anchor_date")
        anchor_date = datetime.fromisoformat(str(anchor).replace("Z", "+00:00")) if anchor else None
        return Interval(timedelta(seconds=float(item["interval"])), anchor_date=anchor_date, **common)
    if "cron" in item:
        return Cron(item["cron"], day_or=bool(item.get("day_or", True)), **common)
    if "rrule" in item:
        return RRule(item["rrule"], **common)
    raise ValueError(f"schedule {item!r}: expected interval, cron or rrule")


def build_concurrency(value: int | dict[str, Any] | None) -> ConcurrencyLimitConfig | None:
    if value is None:
        return None
    if isinstance(value, int):
        return ConcurrencyLimitConfig(limit=value)
    strategy = value.get("collision_strategy")
    return ConcurrencyLimitConfig(
        limit=int(value["limit"]),
        collision_strategy=ConcurrencyLimitStrategy(strategy) if strategy else ConcurrencyLimitStrategy.ENQUEUE,
        grace_period_seconds=value.get("grace_period_seconds"),
    )


def build_triggers(spec: DeploymentSpec, delay_seconds: float | None = None) -> list[DeploymentTriggerTypes]:
    """The spec's triggers; `delay_seconds` overrides each one's `schedule_after`."""
    triggers = []
    for i, item in enumerate(spec.triggers, start=1):
        data = {"name": f"{spec.name}__automation_{i}"} | item
        if delay_seconds is not None:
            data["schedule_after"] = delay_seconds
        triggers.append(_TRIGGERS.validate_python(data))
    return triggers


def check_parameters(spec: DeploymentSpec, flow: Flow[..., Any], parameters: dict[str, Any]) -> None:
    """Refuse deployment and schedule parameters the flow's parameter model refuses (its JSON
    schema, `flows/parameters.py`), naming the deployment, before anything is registered."""
    from prefect.utilities.schema_tools import validate

    schema = strict_schema(flow).model_dump_for_openapi()
    for where, values in [("parameters", parameters)] + [
        (f"schedule {item.get('slug') or i}", item.get("parameters") or {})
        for i, item in enumerate(spec.schedules, start=1)
    ]:
        unknown = sorted(set(values) - set(schema["properties"]))
        problems = [f"unknown parameter(s) {', '.join(unknown)}"] if unknown else []
        problems += [error.message for error in validate(values, schema, ignore_required=True)]
        if problems:
            raise ValueError(f"deployment {spec.name} {where}: {'; '.join(problems)}")


def build_deployments(
    specs: Sequence[DeploymentSpec] | None = None,
    *,
    config_path: str | None = None,
    config_block: str | None = None,
    schedules_active: bool = True,
    only: Sequence[str] | None = None,
    trigger_delay: float | None = None,
) -> list[RunnerDeployment]:
    """`flow.to_deployment(...)` for each spec; `config_path` / `config_block` become every
    deployment's default (a config file wins over the block when a run names both)."""
    specs = load_specs() if specs is None else specs
    if only:
        unknown = set(only) - {s.name for s in specs}
        if unknown:
            raise ValueError(f"unknown deployment(s): {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.name in only]
    deployments = []
    for spec in specs:
        parameters = dict(spec.parameters)
        flow = load_flow(spec)
        accepted = flow.parameters.properties
        if config_path and "config_path" in accepted:
            parameters["config_path"] = config_path
        if config_block and "config_block" in accepted:
            parameters["config_block"] = config_block
        check_parameters(spec, flow, parameters)
        deployment = flow.to_deployment(
            name=spec.name,
            description=spec.description or None,
            tags=spec.tags,
            schedules=[build_schedule(s, schedules_active) for s in spec.schedules],
            concurrency_limit=build_concurrency(spec.concurrency_limit),
            parameters=parameters,
            triggers=build_triggers(spec, trigger_delay),  # type: ignore[arg-type]
            enforce_parameter_schema=spec.enforce_parameter_schema,
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        assert isinstance(deployment, RunnerDeployment)  # sync context: never a coroutine
        deployment._parameter_openapi_schema = strict_schema(flow)
        deployments.append(deployment)
    return deployments


# ----------------------------------------------------------------------------- local server


@dataclass
class LocalServer:
    url: str  # http://127.0.0.1:<port>  (the UI); the API is url + /api
    process: subprocess.Popen[bytes] | None  # None: an already running server was reused
    log_path: Path | None = None

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def server_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_local_server(
    port: int = DEFAULT_PORT,
    prefect_home: Path | None = None,
    timeout: float = 600.0,  # a first start migrates the database: minutes on a busy small machine
    extra_env: dict[str, str] | None = None,
) -> LocalServer:
    """`prefect server start` on 127.0.0.1:<port> (UI included), or the server already there."""
    url = f"http://127.0.0.1:{port}"
    if server_healthy(url):
        return LocalServer(url, None)
    home = prefect_home or xraylake_home() / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / f"server-{port}.log"
    env = os.environ | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        # the UI asks its API here (without it: the default port 4200, whatever --port says)
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_UI_API_URL": f"{url}/api",
    }
    env.pop("PREFECT_API_URL", None)  # the server must not talk to another one
    env |= extra_env or {}
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stop() ends the server and its children
        )
    server = LocalServer(url, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server_healthy(url):
            return server
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {process.returncode}; see {log_path}")
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"prefect server did not answer within {timeout:.0f} s; see {log_path}")


def _drain_api_workers() -> None:
    """Send what this process's event and log workers hold, and stop them. Each is a process-wide
    singleton bound to the API URL in force when it started; the next event or log line starts a
    new one at the URL in force then (else events emitted after a switch reach the old server)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (EventsWorker, APILogWorker):
        worker.drain_all(timeout=30)


@contextlib.contextmanager
def api_url(url: str) -> Iterator[None]:
    """Point this process (and the flow-run processes it starts) at `url`."""
    previous = os.environ.get("PREFECT_API_URL")
    _drain_api_workers()
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield
            _drain_api_workers()
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


# ----------------------------------------------------------------------------- serve


def ensure_config_blocks(config_path: str | None, block: str = DEFAULT_BLOCK) -> str:
    """Make sure the config blocks named `block` exist: saved from `config_path` when given,
    else kept when they exist, else saved from $XRAYLAKE_CONFIG or the sandbox. Returns a note."""
    from blocks.config import ConfigError, load_config, load_config_block, save_config_blocks

    if config_path is None:
        try:
            load_config_block(block)
        except ConfigError:
            pass
        else:
            return f"config blocks '{block}' in place (Blocks page: xraylake Config / Roster / …)"
    try:
        config = load_config(config_path)
    except ConfigError as error:
        return f"config blocks '{block}' not saved ({error})"
    saved = save_config_blocks(config, block)
    return (
        f"config blocks '{block}' saved from {config_path or '$XRAYLAKE_CONFIG or the sandbox'} ({len(saved)} blocks)"
    )


def setup_server_objects(
    config_path: str | None, notify: str | None, limits: bool, automations: bool, home: Path | None = None
) -> list[str]:
    """X-Ray limits (needs a config for the roster) and alert automations; returns notes to print."""
    notes: list[str] = []
    if limits:
        from blocks.config import ConfigError
        from tasks.limits import ensure_limits
        from tasks.organizations import RosterError, load_run_config

        try:
            config = load_run_config(config_path).config  # an Organizations roster: its accounts as cached
        except (ConfigError, RosterError) as error:
            notes.append(f"X-Ray limits not created (no config: {error})")
        else:
            names = ensure_limits(config.roster)
            notes.append(f"{len(names)} X-Ray limits (xray-<account>-<region>, xray-rate-…) in place")
    if automations:
        from deployments.automations import alert_log_path, ensure_automations

        created = ensure_automations(notify)
        target = notify or f"no notification block: each alert is an `alert` flow run, logged to {alert_log_path(home)}"
        notes.append(f"{len(created)} alert automations ({target})")
    return notes


def write_api_url(home: Path, url: str) -> Path:
    """Where `xraylake` commands find the local server (`api_url_from_home`)."""
    path = home / "prefect" / API_URL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(url + "\n")
    return path


def api_url_from_home(home: Path) -> str | None:
    """The API URL `serve --local` left under `home`, when that server answers."""
    path = home / "prefect" / API_URL_FILE
    try:
        url = path.read_text().strip()
    except OSError:
        return None
    return url if url and server_healthy(url.removesuffix("/api")) else None


def serve_all(
    local: bool = False,
    *,
    port: int = DEFAULT_PORT,
    home: Path | None = None,
    config_path: str | None = None,
    config_block: str = DEFAULT_BLOCK,
    schedules_active: bool = True,
    only: Sequence[str] | None = None,
    trigger_delay: float | None = None,
    limit: int | None = None,
    notify: str | None = None,
    create_limits: bool = True,
    create_automations: bool = True,
    run_log_level: str = "INFO",
    start_stack: Callable[[Path], str] | None = None,
    start_traffic: Callable[[str], Callable[[], None]] | None = None,
) -> None:
    """Serve every deployment of prefect.yaml until interrupted (see the module docstring).

    With `local`, `start_stack(home)` brings up the local AWS/OpenSearch stack and returns its
    config path (saved as the config blocks), and `start_traffic(config_path)`, when given,
    starts a trickle of traffic into it and returns the function that stops it."""
    server: LocalServer | None = None
    home = home or xraylake_home()
    settings: dict[Any, Any] = {PREFECT_LOGGING_LEVEL: run_log_level}
    # flow-run processes take this process's settings: they log at run_log_level to the API
    os.environ["PREFECT_LOGGING_LEVEL"] = run_log_level
    with contextlib.ExitStack() as stack:
        stack_config: str | None = None
        if local:
            storage = home / "prefect" / "storage"
            storage.mkdir(parents=True, exist_ok=True)
            server = start_local_server(port, home / "prefect")
            stack.callback(server.stop)
            stack.enter_context(api_url(server.api_url))
            settings |= {PREFECT_HOME: str(home / "prefect"), PREFECT_LOCAL_STORAGE_PATH: str(storage)}
            os.environ["PREFECT_HOME"] = str(home / "prefect")
            os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(storage)
            url_file = write_api_url(home, server.api_url)
            stack.callback(lambda: url_file.unlink(missing_ok=True))
            print(f"Prefect server: {server.url} ({'reused' if server.process is None else 'started'})", flush=True)
            if start_stack is not None:
                stack_config = start_stack(home)
                print(f"Local stack: up (config {stack_config})", flush=True)
        stack.enter_context(temporary_settings(updates=settings))
        print(ensure_config_blocks(config_path or stack_config, config_block), flush=True)
        if start_traffic is not None and stack_config is not None:
            stack.callback(start_traffic(stack_config))
            print("Traffic: a trickle of synthetic X-Ray traffic into the sandbox accounts", flush=True)
        deployments = build_deployments(
            config_path=config_path,
            config_block=config_block,
            schedules_active=schedules_active,
            only=only,
            trigger_delay=trigger_delay,
        )
        for deployment in deployments:
            if deployment.name == "alert":  # registered first: the automations run it
                from deployments.automations import alert_log_path

                deployment.parameters["log_file"] = str(alert_log_path(home))
                if create_automations and not notify:
                    deployment.apply()
        for note in setup_server_objects(config_path or stack_config, notify, create_limits, create_automations, home):
            print(note, flush=True)
        if server is not None:
            print(f"Prefect UI: {server.url}   (deployments: {server.url}/deployments)", flush=True)
        from prefect import serve

        serve(*deployments, limit=limit)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xraylake serve", description="Serve every xraylake deployment.")
    parser.add_argument(
        "--local",
        action="store_true",
        help="also start a local Prefect server + UI (`xraylake serve --local` adds the sandbox)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="local server port (with --local)")
    parser.add_argument("--home", type=Path, help="xraylake home for --local (default $XRAYLAKE_HOME)")
    parser.add_argument("--config", help="config file every deployment uses (default: $XRAYLAKE_CONFIG / sandbox)")
    parser.add_argument("--schedules-off", action="store_true", help="register schedules inactive")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="serve only these deployments")
    parser.add_argument(
        "--trigger-delay", type=float, metavar="SECONDS", help="seconds from event to triggered run (prefect.yaml: 60)"
    )
    parser.add_argument("--limit", type=int, help="max flow runs this process executes at once")
    parser.add_argument("--notify", help="notification block for alerts, <block-type-slug>/<block-name>")
    parser.add_argument("--no-limits", action="store_true", help="do not create the X-Ray concurrency limits")
    parser.add_argument("--no-automations", action="store_true", help="do not create the alert automations")
    parser.add_argument(
        "--config-block", default=DEFAULT_BLOCK, help="name of the config blocks every deployment loads (xraylake)"
    )
    parser.add_argument("--run-log-level", default="INFO", help="log level of the flow runs (their logs in the UI)")
    args = parser.parse_args(argv)
    serve_all(
        args.local,
        port=args.port,
        home=args.home,
        config_path=args.config,
        config_block=args.config_block,
        schedules_active=not args.schedules_off,
        only=args.only,
        trigger_delay=args.trigger_delay,
        limit=args.limit,
        notify=args.notify,
        create_limits=not args.no_limits,
        create_automations=not args.no_automations,
        run_log_level=args.run_log_level,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
