"""Export recorded trajectories for existing pipelines: the Atari Grand Challenge layout (T-REX reads it) or Minari.

    python scripts/export.py --format agc --out ./agc [--game spaceinvaders] [--jobs N] [--quiet] [TRAJ_ID ...]
    python scripts/export.py --format minari --dataset-id atari-speech/spaceinvaders/human-v0 \
        [--minari-dir DIR] [--observations rgb|trex] [--jpeg] [--game G] [TRAJ_ID ...]

Without TRAJ_IDs every complete trajectory (of --game) is exported. Observations are re-simulated from each
recording's seed and actions and verified frame by frame. Minari datasets go to --minari-dir, else
$MINARI_DATASETS_PATH, else ~/.minari/datasets, and load with minari.load_dataset(DATASET_ID). Trajectories are
re-simulated in parallel, one process each (--jobs, default all cores; for Minari, with --observations trex);
the output is the same for any --jobs.
See docs/dataset.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from server.dataset.export import export_agc, export_minari, select
from server.dataset.observations import DEFAULT_CACHE_DIR
from server.errors import AtariSpeechError
from server.parallel import add_jobs_arguments
from server.settings_sources import add_store_arguments, open_script_store, script_store_settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("traj_ids", nargs="*", metavar="TRAJ_ID")
    p.add_argument("--format", required=True, choices=["agc", "minari"])
    add_store_arguments(p)
    p.add_argument("--game", default=None, help="only this game's trajectories")
    p.add_argument("--include-interrupted", action="store_true", help="export interrupted trajectories too")
    p.add_argument("--out", default=None, help="agc: the directory to write (trajectories/, screens/, index.csv)")
    p.add_argument(
        "--agc-terminal",
        default="bool",
        choices=["bool", "int"],
        help="agc: terminal column as True/False (AGC v1, T-REX's fork; default) or 1/0 (AGC v2)",
    )
    p.add_argument("--dataset-id", default=None, help="minari: e.g. atari-speech/spaceinvaders/human-v0")
    p.add_argument("--minari-dir", default=None, help="minari: where datasets live (sets MINARI_DATASETS_PATH)")
    p.add_argument(
        "--observations",
        default="rgb",
        choices=["rgb", "trex"],
        help="minari: RGB screens per frame, or T-REX's 84x84x4 stacks every 4 frames",
    )
    p.add_argument(
        "--compression",
        default="gzip",
        choices=["gzip", "lzf", "none"],
        help="minari: lossless HDF5 compression of the observations (gzip default; minari.load_dataset reads all)",
    )
    p.add_argument("--jpeg", action="store_true", help="minari: JPEG-encode image observations (lossy, smaller)")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="cache of T-REX observations")
    p.add_argument("--author", default=None)
    add_jobs_arguments(p)
    args = p.parse_args(argv)

    settings = script_store_settings(p, args)
    store = open_script_store(p, args, settings)
    try:
        infos = select(store, args.game, args.traj_ids, args.include_interrupted)
    except KeyError as e:
        p.error(str(e))
    if not infos:
        print("nothing to export: no complete trajectories" + (f" of {args.game}" if args.game else ""))
        return 1
    try:
        if args.format == "agc":
            if not args.out:
                p.error("--format agc needs --out DIR")
            rows = export_agc(
                store,
                args.out,
                infos,
                terminal=args.agc_terminal,
                jobs=args.jobs,
                setup=settings.open_store,
                quiet=args.quiet,
            )
            print(f"wrote {len(rows)} trajectories to {args.out} (index.csv maps n to trajectory IDs)")
        else:
            if not args.dataset_id:
                p.error("--format minari needs --dataset-id")
            if args.minari_dir:
                os.environ["MINARI_DATASETS_PATH"] = str(Path(args.minari_dir).resolve())
            ds = export_minari(
                store,
                args.dataset_id,
                infos,
                args.observations,
                jpeg=args.jpeg,
                compression=args.compression,
                cache_dir=args.cache_dir,
                author=args.author,
                jobs=args.jobs,
                setup=settings.open_store,
                quiet=args.quiet,
            )
            print(f"wrote Minari dataset {args.dataset_id}: {ds.total_episodes} episodes, {ds.total_steps} steps")
    except (ImportError, ValueError, AtariSpeechError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
