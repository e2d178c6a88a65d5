"""Which Prefect server `xraylake` commands talk to (stdlib only: read before Prefect is imported).

While `xraylake serve --local` runs it writes its API URL to `$XRAYLAKE_HOME/prefect/api-url`
(deployments/serve.py); every other `xraylake` command then runs its flows against that server,
so they show in its UI, unless PREFECT_API_URL is already set.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path


def local_api_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """{"PREFECT_API_URL": url} when `serve --local` runs for $XRAYLAKE_HOME and answers, else {}."""
    if environ.get("PREFECT_API_URL"):
        return {}
    home = Path(environ.get("XRAYLAKE_HOME") or Path.home() / ".xraylake")
    try:
        url = (home / "prefect" / "api-url").read_text().strip()
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return {"PREFECT_API_URL": url} if response.status == 200 else {}
    except (OSError, ValueError, urllib.error.URLError):
        return {}
