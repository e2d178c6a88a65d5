"""The layering of DESIGN.md "Layout" is an import-linter check that `make test` runs, and it fails
when a module crosses it (checked on a copy of the tree with one forbidden import added)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("xraylake", "flows", "tasks", "blocks", "deployments", "sandbox")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_tree(target: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def test_the_layering_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "forbidden_import", "contract"),
    [
        ("tasks/queue.py", "from xraylake import output", "tasks import no flows"),
        ("tasks/transform.py", "import boto3", "pure modules import no AWS"),
        ("flows/sweep.py", "from sandbox import seed", "flows import no deployments"),
        ("blocks/roster.py", "from tasks import errors", "blocks import no tasks"),
        ("deployments/serve.py", "from sandbox import stack", "deployments import no sandbox"),
    ],
)
def test_a_crossing_import_breaks_the_check(tmp_path: Path, module: str, forbidden_import: str, contract: str) -> None:
    tree = copy_tree(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{forbidden_import}  # a layering violation\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
