"""A trickle of realistic traffic into the sandbox's member accounts (`xraylake serve --local --traffic`).

Every `every_seconds` a background thread writes a few new traces per account with
`sandbox.traffic` (real Step Functions executions in moto, the same scenarios as `xraylake
demo`), ending a few minutes before now, so each scheduled sweep finds new traces and each
consume has messages. The first round writes a larger batch over the last hour, so the first
sweep already has work. Errors are logged and the next round tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from blocks.config import load_config
from sandbox.traffic import END_MARGIN_SECONDS, MAX_TRACE_SECONDS, complete_in_progress, generate_traffic, write_traffic

log = logging.getLogger(__name__)


def trickle_round(config_path: str, seed: int, traces_per_account: int, hours_back: float) -> int:
    """Write one round of traffic; returns the traces written."""
    config = load_config(config_path)
    traffic = generate_traffic(seed, config.roster.accounts, traces_per_account, hours_back, now=time.time())
    report = write_traffic(traffic, config.roster)
    complete_in_progress(traffic, config.roster)
    return sum(r.traces for r in report.regions)


def start_trickle(
    config_path: str,
    *,
    every_seconds: float = 60.0,
    traces_per_account: int = 2,
    first_traces_per_account: int = 10,
    seed: int = 1,
) -> Callable[[], None]:
    """Start the background thread; returns the function that stops it."""
    stop = threading.Event()
    # a window just wide enough for generate_traffic (≥ 60 s between start and end margin)
    hours_back = (END_MARGIN_SECONDS + MAX_TRACE_SECONDS + max(60.0, every_seconds)) / 3600.0

    def loop() -> None:
        number = 0
        while not stop.is_set():
            count = first_traces_per_account if number == 0 else traces_per_account
            try:
                written = trickle_round(config_path, seed + number, count, 1.0 if number == 0 else hours_back)
                log.info("traffic round %d: %d traces written", number, written)
            except Exception as error:  # the sandbox may be restarting: try again next round
                log.warning("traffic round %d failed: %s", number, error)
            number += 1
            stop.wait(every_seconds)

    thread = threading.Thread(target=loop, name="xraylake-traffic", daemon=True)
    thread.start()

    def stop_trickle() -> None:
        stop.set()
        thread.join(timeout=30)

    return stop_trickle
