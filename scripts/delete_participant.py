"""Delete everything recorded of one participant: their trajectories and study progress, locally and in S3.

    python scripts/delete_participant.py PARTICIPANT_ID [--store URL] [--spool DIR] [--cache DIR] [--dry-run]

For S3 this needs s3:DeleteObject on the prefix: run it with a researcher's credentials, not the server's
least-privilege ones.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.core.format import PARTICIPANT_RE  # noqa: E402
from server.errors import AtariSpeechError  # noqa: E402
from server.settings import add_store_arguments, open_script_store  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("participant")
    add_store_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    args = p.parse_args(argv)
    pid = args.participant
    if not PARTICIPANT_RE.fullmatch(pid):
        print(f"error: invalid participant ID {pid[:80]!r}: letters and digits only, at most 64", file=sys.stderr)
        return 2
    mine = re.compile(rf"^[a-z0-9]+_{pid}_[0-9]+$")
    store = open_script_store(p, args)
    roots = {store.spool_dir()}
    if getattr(store, "cache", None) is not None:
        roots.add(store.cache)
    deleted = 0
    for root in roots:
        if not root.is_dir():
            continue
        for d in sorted(list(root.iterdir()) + list((root / ".scratch").glob("*"))):
            if d.is_dir() and mine.match(d.name):
                print(f"{'would delete' if args.dry_run else 'deleted'} {d}")
                if not args.dry_run:
                    shutil.rmtree(d)
                deleted += 1
        progress = root / ".study" / f"{pid}.json"
        if progress.exists():
            print(f"{'would delete' if args.dry_run else 'deleted'} {progress}")
            if not args.dry_run:
                progress.unlink()
            deleted += 1
    if hasattr(store, "loc"):  # S3
        try:
            keys = [k for k in store.list() if mine.match(k.split("/", 1)[0])]
            for key in keys:
                print(f"{'would delete' if args.dry_run else 'deleted'} {store.url}/{key}")
            if keys and not args.dry_run:
                client = store.client
                for i in range(0, len(keys), 1000):
                    batch = [{"Key": store.loc.key(k)} for k in keys[i : i + 1000]]
                    out = client.delete_objects(Bucket=store.loc.bucket, Delete={"Objects": batch, "Quiet": True})
                    if out.get("Errors"):
                        print(
                            f"error: S3 refused to delete {len(out['Errors'])} objects: "
                            f"{out['Errors'][0].get('Message')} (needs s3:DeleteObject)",
                            file=sys.stderr,
                        )
                        return 1
            deleted += len(keys)
        except AtariSpeechError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print(f"{deleted} items {'to delete' if args.dry_run else 'deleted'} for participant {pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
