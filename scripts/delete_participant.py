"""Delete everything recorded of one participant: their trajectories and study progress, locally and in S3.

    python scripts/delete_participant.py PARTICIPANT_ID [--store URL] [--spool DIR] [--cache DIR] [--dry-run]

For S3 this needs s3:DeleteObject on the prefix: run it with a researcher's credentials, not the server's
least-privilege ones.
"""

from __future__ import annotations

import argparse
import sys

from server.core import format as fmt
from server.errors import AtariSpeechError
from server.settings_sources import add_store_arguments, open_script_store, script_store_settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("participant")
    add_store_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    args = p.parse_args(argv)
    pid = args.participant
    if not fmt.PARTICIPANT_RE.fullmatch(pid):
        print(f"error: invalid participant ID {pid[:80]!r}: letters and digits only, at most 64", file=sys.stderr)
        return 2
    settings = script_store_settings(p, args)
    store = open_script_store(p, args, settings)
    spool = settings.open_spool()
    verb = "would delete" if args.dry_run else "deleted"
    paths = spool.participant_files(pid) if args.dry_run else spool.delete_participant(pid)
    for path in paths:
        print(f"{verb} {path}")
    keys: list[str] = []
    try:
        if store.url != f"file://{spool.root}":  # the local store is its own spool: done above
            keys = [k for k in store.list() if fmt.participant_of(k.split("/", 1)[0]) == pid]
        for key in keys:
            if not args.dry_run:
                store.delete(key)
            print(f"{verb} {store.url}/{key}")
    except AtariSpeechError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{len(paths) + len(keys)} items {'to delete' if args.dry_run else 'deleted'} for participant {pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
