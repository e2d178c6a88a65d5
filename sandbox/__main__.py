"""`python -m sandbox --home DIR`: run the stack until SIGTERM/SIGINT (started by `sandbox up`)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from blocks.config import sandbox_state_path
from sandbox.stack import SandboxStack, write_state


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--lenient-xray", action="store_true", help="talk to moto's X-Ray directly")
    parser.add_argument(
        "--transaction-search", action="store_true", help="seeded (account, region)s in Transaction Search mode"
    )
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stack = SandboxStack.start(strict_xray=not args.lenient_xray, transaction_search=args.transaction_search)
    try:
        path = write_state(stack, args.home)
        print(f"sandbox ready: {path}", flush=True)
        stop.wait()
    finally:
        stack.stop()
        sandbox_state_path(args.home).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
