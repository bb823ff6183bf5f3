"""Run a command while busy loops hog every core: the suite must pass on a loaded 2-core machine.

    python tests/under_cpu_hog.py [--hogs N] [--repeat K] -- make test

Starts N processes (default: one per core) that spin in Python, runs the command K times
in a row (default 1), stops the hogs whatever happens, and exits with the first failing
run's status. Each run's wall time and status are printed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hogs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --")
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    status = 0
    try:
        for i in range(args.repeat):
            t = time.monotonic()
            rc = subprocess.call(command)
            print(f"under {args.hogs} CPU hog(s), run {i + 1}/{args.repeat}: exit {rc} in "
                  f"{time.monotonic() - t:.0f} s", flush=True)
            status = status or rc
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    return status


if __name__ == "__main__":
    sys.exit(main())
