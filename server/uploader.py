"""Upload closed trajectories from the spool to S3, verified, `meta.json` last; retry with backoff; never lose one.

The one module that knows both the spool (server.spool) and the store (server.store.s3).
Runs as its own process beside the server (`python -m server.uploader`), so neither a slow or absent S3 nor
hashing a large file can hold up a game; `scripts/sync_storage.py` runs the same code once, by hand.
A trajectory is listed in S3 only once it is complete there, because its meta.json goes up last. The spool copy is
deleted only after every file is verified in S3 (size, and SHA-256 for files sent in one part), unless kept.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time
from pathlib import Path

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from .core import format as fmt
from .core.files import is_data_file
from .spool import Spool
from .store.s3 import TRANSFER, S3Location, explain, make_client

log = logging.getLogger("server.uploader")

MAX_BACKOFF_S = 60.0


def _verify(client, loc: S3Location, key: str, path: Path, sha256_hex: str | None) -> None:
    head = client.head_object(Bucket=loc.bucket, Key=key, ChecksumMode="ENABLED")
    size = path.stat().st_size
    if head["ContentLength"] != size:
        raise OSError(f"{key}: S3 holds {head['ContentLength']} bytes, the spool {size}")
    remote = head.get("ChecksumSHA256")
    if sha256_hex and remote and "-" not in remote:
        if base64.b64decode(remote).hex() != sha256_hex:
            raise OSError(f"{key}: SHA-256 in S3 differs from the spool copy")


def _describe(exc: Exception, loc: S3Location) -> str:
    """A failed upload in words. boto3's upload_file wraps S3's own error (S3UploadFailedError): unwrap it."""
    cause = exc
    while isinstance(cause, S3UploadFailedError) and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, (BotoCoreError, ClientError)):
        return explain(cause, loc)
    return str(exc)


def upload_trajectory(client, loc: S3Location, spool: Spool, d: Path, keep: bool = False) -> int:
    """Upload one closed trajectory directory; returns bytes sent. Raises on any failure (the spool is kept)."""
    meta = json.loads((d / fmt.META).read_text())
    traj_id = fmt.validate_traj_id(d.name)
    digests = meta.get("files", {})
    files = sorted(p for p in d.iterdir() if is_data_file(p))
    sent = 0
    for p in files + [d / fmt.META]:  # meta.json last: a trajectory listed in S3 is complete
        key = loc.key(f"{traj_id}/{p.name}")
        client.upload_file(str(p), loc.bucket, key, ExtraArgs={"ChecksumAlgorithm": "SHA256"}, Config=TRANSFER)
        _verify(client, loc, key, p, digests.get(p.name, {}).get("sha256"))
        sent += p.stat().st_size
    spool.finish_upload(d, keep)
    return sent


class Uploader:
    """One pass or a loop over the spool, with per-trajectory exponential backoff."""

    def __init__(self, spool: Spool, loc: S3Location, keep: bool = False) -> None:
        self.spool = spool
        self.loc = loc
        self.keep = keep
        self.client = make_client(loc, connect_timeout=3.0, retries=1)
        self.failures: dict[str, dict] = {}

    def run_once(self, force: bool = False) -> tuple[list[str], list[str]]:
        """Try every closed trajectory whose backoff has passed; returns (uploaded, failed) IDs."""
        done, failed = [], []
        now = time.time()
        for d in self.spool.closed():
            f = self.failures.get(d.name)
            if f and not force and now < f["next_try"]:
                continue
            try:
                n = upload_trajectory(self.client, self.loc, self.spool, d, self.keep)
                log.info("uploaded %s (%d bytes) to %s", d.name, n, self.loc.url())
                self.failures.pop(d.name, None)
                done.append(d.name)
            except Exception as e:  # noqa: BLE001 - one trajectory's failure must never stop the uploader
                attempts = (f or {}).get("attempts", 0) + 1
                delay = min(MAX_BACKOFF_S, 2.0 ** (attempts - 1))
                msg = _describe(e, self.loc)
                self.failures[d.name] = {"attempts": attempts, "next_try": time.time() + delay, "error": msg}
                log.warning("upload of %s failed (attempt %d, next in %.0f s): %s", d.name, attempts, delay, msg)
                if not isinstance(e, (BotoCoreError, ClientError, S3UploadFailedError, OSError, ValueError)):
                    log.exception("unexpected upload failure of %s", d.name)
                failed.append(d.name)
        if done or failed:
            self.spool.write_upload_status(self.failures)
        return done, failed

    def loop(self, poll_s: float = 1.0, parent_pid: int | None = None) -> None:
        """Upload until the server is gone. Nothing that goes wrong in a pass stops the loop."""
        while True:
            if parent_pid is not None and os.getppid() != parent_pid:
                log.info("server is gone; the uploader stops (the next start uploads the rest)")
                return
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - e.g. the spool directory unreadable for a moment
                log.exception("upload pass failed; trying again")
            time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="upload closed trajectories from the spool to S3")
    p.add_argument("--store", required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--endpoint-url", default=None)
    p.add_argument("--region", default=None)
    p.add_argument("--keep-spool", action="store_true")
    p.add_argument("--poll", type=float, default=1.0)
    p.add_argument("--parent-pid", type=int, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loc = S3Location.parse(args.store, args.endpoint_url, args.region)
    try:
        Uploader(Spool(args.spool), loc, args.keep_spool).loop(args.poll, args.parent_pid)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
