"""Benchmark: re-simulation speed and video export time against trajectory length (library: benchmark.replay).

    python scripts/bench_replay.py [--minutes 1,5,10] [--keep DIR] [--write docs/benchmarks.md]

Prints a markdown table; `--write PATH` also writes it to PATH under "Replay and video export", keeping the file's
other sections.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmark import doc
from benchmark.replay import SECTION, measure_all, report


def _scale_presets(text: str) -> list[tuple[int, str]]:
    pairs = []
    for item in text.split(","):
        if item.strip():
            scale, _, preset = item.partition(":")
            pairs.append((int(scale), preset or "ultrafast"))
    return pairs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--minutes", default="1,5,10", help="Pong trajectory lengths in minutes (default 1,5,10)")
    p.add_argument(
        "--busy-seconds",
        type=float,
        default=30.0,
        help="length of the random-play Space Invaders trajectory (0 to skip)",
    )
    p.add_argument(
        "--also",
        type=_scale_presets,
        default=_scale_presets("4:ultrafast,2:veryfast"),
        help="export the longest Pong trajectory again with these SCALE:PRESET pairs (default 4:ultrafast,2:veryfast; "
        "the rows before are at the default, 2:ultrafast)",
    )
    p.add_argument("--keep", default=None, help="keep the synthesised store in this directory")
    p.add_argument("--write", default=None, metavar="PATH", help="also write the table to PATH (docs/benchmarks.md)")
    p.add_argument("--no-write", action="store_true", help=argparse.SUPPRESS)  # the default now; older commands
    args = p.parse_args(argv)

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    minutes = [float(m) for m in args.minutes.split(",") if m.strip()]
    rows = measure_all(minutes, args.busy_seconds, args.also, Path(args.keep) if args.keep else None)
    command = "python scripts/bench_replay.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    body = report(rows, load_before, command)
    doc.publish(body, args.write, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
