"""Re-simulate trajectories from their seed and actions and check every frame against the log.

    python scripts/verify.py TRAJ_ID [TRAJ_ID ...]
    python scripts/verify.py --all [--store ./recordings]

Exits 0 only when every trajectory verifies.
"""

from __future__ import annotations

import argparse
import sys

from server.core.reader import list_ids
from server.core.replay import verify
from server.errors import AtariSpeechError
from server.settings_sources import add_store_arguments, open_script_store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("traj_ids", nargs="*", metavar="TRAJ_ID")
    p.add_argument("--all", action="store_true", help="every trajectory in the store")
    add_store_arguments(p)
    args = p.parse_args(argv)
    store = open_script_store(p, args)
    ids = list(args.traj_ids)
    if args.all:
        ids += list_ids(store)
    if not ids:
        p.error("name at least one TRAJ_ID, or --all")
    failed = 0
    for traj_id in ids:
        try:
            n = verify(store, traj_id)
            print(f"{traj_id}: verified, {n} frames")
        except AtariSpeechError as e:
            failed += 1
            print(f"{traj_id}: {'diverged' if hasattr(e, 'frame') else 'error'}: {e}")
    print(f"{len(ids) - failed} verified, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
