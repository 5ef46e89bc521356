"""A light load generator: many simulated demonstrators in one asyncio process (library: benchmark.loadgen).

    python scripts/loadgen.py --url http://127.0.0.1:5000 --sessions 32 --duration 20 [--cpu 1]

Prints the client's figures (frame rate, frame intervals, traffic, the generator's own CPU and loop lag) as JSON;
exits 1 when a session could not join, restart or stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from benchmark.loadgen import SEND_INTERVAL_S, run_step, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:5000")
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--game", default=None)
    p.add_argument("--cpu", default=None, help="pin this process to these CPUs, e.g. 1 or 0,1")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument(
        "--interval",
        type=float,
        default=SEND_INTERVAL_S,
        help="seconds between paint-ack batches and microphone chunks (the browser: 0.1)",
    )
    args = p.parse_args(argv)
    if args.cpu:
        os.sched_setaffinity(0, {int(c) for c in args.cpu.split(",")})
    res = asyncio.run(
        run_step(
            args.url,
            args.sessions,
            args.duration,
            warmup_s=args.warmup,
            game=args.game,
            tag=f"L{int(time.time()) % 100000}",
            audio=not args.no_audio,
            interval_s=args.interval,
        )
    )
    print(json.dumps(summary(res), indent=2))
    return 0 if not res.refused else 1


if __name__ == "__main__":
    sys.exit(main())
