"""Re-simulate trajectories from their seed and actions and check every frame against the log.

    python scripts/verify.py TRAJ_ID [TRAJ_ID ...]
    python scripts/verify.py --all [--store ./recordings] [--jobs N] [--quiet]

Trajectories are verified in parallel, one process each (--jobs, default all cores); the report is in the order given.

Exits 0 only when every trajectory verifies.
"""

from __future__ import annotations

import argparse
import sys

from server.core.replay import verify
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


def verify_one(store: Store, traj_id: str) -> tuple[bool, str]:
    """Whether one trajectory verifies, and its report line."""
    try:
        return True, f"{traj_id}: verified, {verify(store, traj_id)} frames"
    except AtariSpeechError as e:
        return False, f"{traj_id}: {'diverged' if hasattr(e, 'frame') else 'error'}: {e}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_traj_id_arguments(p)
    add_store_arguments(p)
    add_jobs_arguments(p)
    args = p.parse_args(argv)
    settings = script_store_settings(p, args)
    store = open_script_store(p, args, settings)
    ids = script_traj_ids(p, args, store)
    failed = report_jobs(verify_one, ids, args, settings.open_store, "verify", context=store)
    print(f"{len(ids) - failed} verified, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
