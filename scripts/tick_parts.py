"""Where a loaded server's time goes, part by part (library: benchmark.parts).

    python scripts/tick_parts.py --sessions 64 --duration 10

Starts a server with timers around the parts of the tick and of the receive path, drives it with the load generator,
and prints each part's time per frame, calls per second and time per call, then the garbage collector's pauses.
"""

from __future__ import annotations

import argparse
import sys

from benchmark.parts import profile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--loadgen-cpu", type=int, default=1)
    args = p.parse_args(argv)
    report = profile(args.sessions, args.duration, args.server_cpu, args.loadgen_cpu)
    if report is None:
        return 1
    print(report, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
