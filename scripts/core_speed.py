"""How fast each core of this machine runs a fixed emulator workload, second by second (library: benchmark.probe).

    python scripts/core_speed.py --duration 30      # check a machine before a study (or a benchmark)

A shared virtual machine has stretches of seconds in which a core runs everything about 1.5 times slower; this
prints, per core and per second, the median CPU time of a fixed emulator step and marks the slow seconds.
"""

from __future__ import annotations

import argparse
import os
import sys

from benchmark.probe import watch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="seconds to watch (default 30)")
    p.add_argument("--cpus", default=None, help="cores to probe, e.g. 0,1 (default: every core this process may use)")
    args = p.parse_args(argv)
    cpus = [int(c) for c in args.cpus.split(",")] if args.cpus else sorted(os.sched_getaffinity(0))
    print(watch(cpus, args.duration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
