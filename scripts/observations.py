"""Fill the cache of T-REX observations (re-simulated, verified, preprocessed), one process per trajectory.

    python scripts/observations.py --all [--store ./recordings] [--cache-dir DIR] [--jobs N] [--quiet]
    python scripts/observations.py TRAJ_ID [TRAJ_ID ...]

What `Dataset.observations()`, scripts/train_trex.py and `export.py --observations trex` read, computed ahead for
every trajectory in parallel (--jobs, default all cores): each trajectory is independent, and a cached one is only
read. The cache files are the same for any --jobs (server/dataset/observations.py). Exits 1 if any trajectory failed.
"""

from __future__ import annotations

import argparse
import functools
import sys

from server.dataset.observations import DEFAULT_CACHE_DIR, TrexPreprocessing, trex_observations
from server.errors import AtariSpeechError
from server.parallel import add_jobs_arguments, report_jobs
from server.settings_sources import (
    add_store_arguments,
    add_traj_id_arguments,
    open_script_store,
    script_store_settings,
    script_traj_ids,
)
from server.store import Store


def observe_one(store: Store, traj_id: str, cache_dir: str) -> tuple[bool, str]:
    """(ok, report line) of one trajectory's observations, computed into the cache unless already there."""
    try:
        obs = trex_observations(store, traj_id, TrexPreprocessing(), cache_dir)
    except (AtariSpeechError, OSError, ValueError) as e:
        return False, f"{traj_id}: error: {e}"
    return True, f"{traj_id}: {len(obs)} observations ({obs.frames.shape[0]} processed frames)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_traj_id_arguments(p)
    add_store_arguments(p)
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="cache of T-REX observations")
    add_jobs_arguments(p)
    args = p.parse_args(argv)
    settings = script_store_settings(p, args)
    store = open_script_store(p, args, settings)
    ids = script_traj_ids(p, args, store)
    one = functools.partial(observe_one, cache_dir=args.cache_dir)
    failed = report_jobs(one, ids, args, settings.open_store, "observations", context=store)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
