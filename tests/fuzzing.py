"""How many examples the long property tests draw.

`make test` (and CI) draws 1,000 per long property to keep the whole suite near its 15-minute budget on
two cores; `make fuzz` sets XRAYLAKE_FUZZ_EXAMPLES (default there: 20,000) for a deep run.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

LONG_EXAMPLES = int(os.environ.get("XRAYLAKE_FUZZ_EXAMPLES", "1000"))

LONG = settings(max_examples=LONG_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

# 10,000 transform examples took ~215 s beside another test process on this machine.
LONG_TIMEOUT_SECONDS = max(300, LONG_EXAMPLES // 20)
