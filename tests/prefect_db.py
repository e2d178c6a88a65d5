"""Prefect servers of the suite start from a database a Prefect server has already set up.

A Prefect server on an empty SQLite file runs every Alembic migration and registers Prefect's block
types before it answers: about half of its ~11 s of start-up CPU on this machine
(`python -m tests.prefect_server_cpu`). The suite starts several servers per session (one harness
per xdist worker, the `prefect server start` servers of tests/deployments), so the first process
that needs one starts a server once on a template file, the way the harness starts its own, and
stops it; every server then starts on a copy of that file.

The template lives in the session's shared temporary directory (all xdist workers of one run see
it; a `fcntl` lock makes the others wait while the first builds it), so it is always built by the
installed Prefect (its name carries the version too). The servers keep Prefect's defaults otherwise:
migrate-on-start (`alembic upgrade head` on a database at the head revision costs no measurable
CPU, and would still bring an older file up to date) and block-type registration (~0.6 s when the
types are already there).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import inspect
import os
import shutil
import socket
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prefect

TEMPLATE_NAME = f"prefect-{prefect.__version__}-template.db"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def remove_database(path: Path) -> None:
    """Delete an SQLite database's file and its write-ahead log files, where they exist."""
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def shared_directory(tmp_path_factory: Any) -> Path:
    """The temporary directory every xdist worker of this session shares (the parent of the
    workers' own base directories); without xdist, the session's own base directory."""
    base = Path(tmp_path_factory.getbasetemp())
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_template(path: Path, server_startup_timeout: int = 300) -> None:
    """Start a harness-style Prefect server (SubprocessASGIServer) on a new SQLite file at `path`,
    which migrates it and registers the block types, stop it, and fold the write-ahead log into
    the file so that one file is the whole database."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_MEMO_STORE_PATH, PREFECT_SERVER_DATABASE_CONNECTION_URL, temporary_settings

    remove_database(path)
    updates = {
        PREFECT_SERVER_DATABASE_CONNECTION_URL: sqlite_url(path),
        # the registration's memo of its own (not $PREFECT_HOME's, which other servers use)
        PREFECT_MEMO_STORE_PATH: str(path.with_name("prefect-template-memo.toml")),
    }
    with temporary_settings(updates=updates):
        server = SubprocessASGIServer(port=free_port())  # keyed by its port: not the default server
        try:
            server.start(timeout=server_startup_timeout)
        finally:
            server.stop()
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode = DELETE")  # Prefect sets WAL again on every connection
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        block_types = connection.execute("SELECT count(*) FROM block_type").fetchone()[0]
    finally:
        connection.close()
    if not revision or not block_types:
        raise RuntimeError(f"{path}: the server left no Alembic revision ({revision}) or block types ({block_types})")


def migrated_template(directory: Path) -> Path:
    """The template database under `directory`, built by the first caller (the others wait)."""
    directory.mkdir(parents=True, exist_ok=True)
    template = directory / TEMPLATE_NAME
    with (directory / f"{TEMPLATE_NAME}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not template.exists():
            building = directory / f"{TEMPLATE_NAME}.building"
            build_template(building)
            building.replace(template)  # complete or absent, even if a build is interrupted
    return template


def copy_template(template: Path, database: Path) -> Path:
    """A server's own database: a copy of the template at `database` (its directory created)."""
    database.parent.mkdir(parents=True, exist_ok=True)
    remove_database(database)
    shutil.copyfile(template, database)
    return database


def local_server_env(template: Path, prefect_home: Path) -> dict[str, str]:
    """Environment for `deployments.serve.start_local_server(prefect_home=...)`: the server's
    database (where it would be by default, `$PREFECT_HOME/prefect.db`) a copy of the template."""
    database = copy_template(template, prefect_home / "prefect.db")
    return {"PREFECT_SERVER_DATABASE_CONNECTION_URL": sqlite_url(database)}


@contextlib.contextmanager
def prefect_harness(template: Path, server_startup_timeout: int, *, register_blocks: bool = True) -> Iterator[Any]:
    """`prefect.testing.utilities.prefect_test_harness`, with the server's database a copy of
    `template` instead of an empty file. The rest as in the harness: its own database interface
    and settings, the server registered as the default (None-key) SubprocessASGIServer so flow code
    reuses it instead of starting an unmanaged one, the log and event workers drained before the
    server stops, the prior default server restored. Yields the server. `register_blocks=False`
    (measurements only) turns the server's block-type registration off."""
    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface
    from prefect.settings import (
        PREFECT_API_BLOCKS_REGISTER_ON_START,
        PREFECT_API_URL,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )
    from prefect.utilities.asyncutils import run_coro_as_sync

    temp_dir = Path(tempfile.mkdtemp(prefix="prefect-harness-"))
    atexit.register(shutil.rmtree, temp_dir, ignore_errors=True)
    database = copy_template(template, temp_dir / "prefect-test.db")
    with contextlib.ExitStack() as stack:
        stack.enter_context(temporary_database_interface())
        stack.enter_context(
            temporary_settings(
                updates={
                    PREFECT_SERVER_DATABASE_CONNECTION_URL: sqlite_url(database),
                    PREFECT_API_BLOCKS_REGISTER_ON_START: register_blocks,
                }
            )
        )
        server = SubprocessASGIServer(port=free_port())
        prior_default_server = SubprocessASGIServer._instances.get(None)
        SubprocessASGIServer._instances[None] = server
        server.start(timeout=server_startup_timeout)
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url}))
        stack.enter_context(_temporary_global_settings_context(get_settings_context()))
        yield server

        async def drain_workers() -> None:
            try:
                drained = APILogWorker.instance().drain()
                if inspect.isawaitable(drained):
                    await drained
            except RuntimeError:  # the worker was never started
                pass
            events_drained = EventsWorker.drain_all()
            if inspect.isawaitable(events_drained):
                await events_drained

        run_coro_as_sync(drain_workers())
        server.stop()
        if prior_default_server is not None:
            SubprocessASGIServer._instances[None] = prior_default_server
        else:
            SubprocessASGIServer._instances.pop(None, None)
