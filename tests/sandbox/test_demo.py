"""`make demo` end to end, in a subprocess: the whole pipeline on a fresh sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(660)  # the subprocess's own limit (600 s) is the one that should fire
def test_make_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    env = dict(os.environ, XRAYLAKE_HOME=str(tmp_path / "home"))
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_ENDPOINT_URL_XRAY", None)
    try:
        done = subprocess.run(["make", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run(
            [sys.executable, "-m", "xraylake.cli", "sandbox", "down", "--home", str(tmp_path / "home")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for needle in (
        "synthetic X-Ray traffic",
        "sweep",
        "consume",
        "012345678901",
        "dev",
        "qa",
        "prod",
        "0 dead-lettered",
        "where to look",
    ):
        assert needle in out, needle
