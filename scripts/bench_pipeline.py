"""Benchmark: the researcher's pipeline (verify, annotate, exports, T-REX observations, videos) on a synthetic study
recorded through the real server, with 1 job and with all cores (library: benchmark.pipeline).

    python scripts/bench_pipeline.py                      # about 1 hour of play (12 demonstrators for 5 minutes)
    python scripts/bench_pipeline.py --minutes 5          # smaller
    python scripts/bench_pipeline.py --minutes 10 --write docs/benchmarks.md

Prints a markdown table: each step's throughput as a multiple of real time, output bytes per hour of play, and the
speed-up from 1 job on 1 core to --jobs on as many cores (default: all). `--write PATH` also writes it to PATH under
its own section.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark import doc
from benchmark.pipeline import SECTION, measure, report, video_breakdown
from server.core.reader import read_frames
from server.parallel import default_jobs
from server.store import open_store
from server.video import DEFAULT_SCALE


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=60.0, help="minutes of play in all (default 60)")
    p.add_argument("--sessions", type=int, default=12, help="demonstrators playing at once (default 12)")
    p.add_argument(
        "--jobs", type=int, default=default_jobs(), help="jobs (and cores) of the parallel run (default: all)"
    )
    p.add_argument("--steps", default="", help="only these steps, comma-separated (e.g. verify,videos)")
    p.add_argument(
        "--video-scale",
        type=int,
        default=DEFAULT_SCALE,
        help=f"videos at this --scale (default {DEFAULT_SCALE}, make_video.py's)",
    )
    p.add_argument(
        "--breakdown",
        metavar="TRAJ_ID",
        help="instead: where one video export's time goes (with --store-dir), stage by stage",
    )
    p.add_argument("--store-dir", default=None, help="--breakdown: the store holding TRAJ_ID")
    p.add_argument("--keep", default=None, help="keep the study and outputs here; a study already there is reused")
    p.add_argument("--write", default=None, metavar="PATH", help="also write the table to PATH (docs/benchmarks.md)")
    args = p.parse_args(argv)
    if args.breakdown:
        rows = video_breakdown(args.store_dir or "./recordings", args.breakdown, args.video_scale)
        frames = len(read_frames(open_store(args.store_dir or "./recordings"), args.breakdown))
        print(f"{args.breakdown}: {frames} frames = {frames / 60:.1f} s of play, scale {args.video_scale}\n")
        print("| stage | wall | CPU | x real time (CPU) |\n| --- | ---: | ---: | ---: |")
        for name, wall, cpu in rows:
            print(f"| {name} | {wall:.2f} s | {cpu:.2f} s | {frames / 60 / cpu:.0f}x |")
        return 0
    only = {s.strip() for s in args.steps.split(",") if s.strip()} or None
    study, steps, jobs_list = measure(
        args.minutes, args.sessions, args.jobs, Path(args.keep) if args.keep else None, only
    )
    command = "python scripts/bench_pipeline.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    body = report(study, steps, jobs_list, command)
    doc.publish(body, args.write, SECTION)
    return 0


if __name__ == "__main__":
    sys.exit(main())
