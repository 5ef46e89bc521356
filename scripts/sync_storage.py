"""See what waits in the spool for upload to S3, and push it; or pull a trajectory into the local cache.

    python scripts/sync_storage.py --status           # list what waits, with the last error of each
    python scripts/sync_storage.py                    # upload everything closed, verified, meta.json last
    python scripts/sync_storage.py --pull TRAJ_ID     # download a trajectory into the cache

The store, spool, cache and endpoint come from the same settings as the server (--store or STORE_URL / S3_BUCKET,
--spool or SPOOL_DIR, --cache or CACHE_DIR, --s3-endpoint-url or S3_ENDPOINT_URL).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from server.core import format as fmt
from server.errors import AtariSpeechError
from server.settings_sources import add_store_arguments, open_script_store, script_store_settings
from server.store.s3 import S3Location
from server.uploader import Uploader


def _size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_store_arguments(p)
    p.add_argument("--status", action="store_true", help="only list what waits for upload")
    p.add_argument("--pull", metavar="TRAJ_ID", help="download a trajectory into the cache")
    p.add_argument("--keep-spool", action="store_true")
    args = p.parse_args(argv)
    settings = script_store_settings(p, args)
    if not settings.is_s3():  # checked before opening: a local store would be created
        p.error("the store is not S3: set --store s3://BUCKET/PREFIX (or STORE_URL / S3_BUCKET)")
    store = open_script_store(p, args, settings)
    try:
        if args.pull:
            traj_id = fmt.validate_traj_id(args.pull)
            keys = store.list(traj_id + "/")
            if f"{traj_id}/{fmt.META}" not in keys:
                print(f"error: no trajectory {traj_id!r} in {store.url}", file=sys.stderr)
                return 1
            for key in keys:
                print(f"{key} -> {store.local_path(key)}")
            return 0
        spool = settings.open_spool()
        waiting = spool.closed()
        errors = spool.upload_status()
        for d in waiting:
            err = errors.get(d.name, {}).get("error")
            print(f"{d.name}: waiting, {_size(d)} bytes" + (f" (last error: {err})" if err else ""))
        for name in spool.recording():
            print(f"{name}: still recording (or left open by a crash: the next server start closes it)")
        if not waiting:
            print("nothing waits for upload")
        if args.status or not waiting:
            return 0
        loc = S3Location.parse(settings.store, settings.s3_endpoint_url, settings.s3_region)
        uploader = Uploader(spool, loc, keep=args.keep_spool)
        done, failed = uploader.run_once(force=True)
        for name in done:
            print(f"uploaded {name}")
        for name in failed:
            print(f"failed {name}: {uploader.failures[name]['error']}")
        return 1 if failed else 0
    except AtariSpeechError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
