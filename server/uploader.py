"""Upload closed trajectories from the spool to S3, verified, `meta.json` last; retry with backoff; never lose one.

The one module that knows both the spool (server.spool) and the store (server.store.s3).
Runs as its own process beside the server (`python -m server.uploader`), so neither a slow or absent S3 nor
hashing a large file can hold up a game; `scripts/sync_storage.py` runs the same code once, by hand.
A trajectory is listed in S3 only once it is complete there, because its meta.json goes up last. The spool copy is
deleted only after every file is verified in S3, unless kept: its size, and its SHA-256, compared with the digest
meta.json took when the episode closed. A file sent in one part has S3's SHA-256 of it; a file sent in parts (over
`TRANSFER.multipart_threshold`) has S3's composite checksum, the SHA-256 of the parts' SHA-256 digests, which is
computed here the same way from the local file (`local_checksums`). A local file that no longer matches its digest
is not uploaded at all: it stays in the spool, and the monitor shows the trajectory as failing with the reason.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import signal
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


#: After this many failed attempts in a row a trajectory is logged as an error (the monitor shows every failure).
FAILING_ATTEMPTS = 3


class ChecksumMismatch(OSError):
    """A file is not what its digest says: changed in the spool after the episode closed, or garbled on the way."""


def local_checksums(path: Path, part_size: int = TRANSFER.multipart_chunksize) -> tuple[str, str, int]:
    """One pass over a file: (its SHA-256 in hex, the checksum S3 keeps of it, how many parts it goes up in). For a
    file sent in one part S3 keeps base64(SHA-256); for one sent in parts (boto3 uses parts from
    `multipart_threshold` bytes, each `multipart_chunksize` long) base64(SHA-256(the parts' SHA-256 digests,
    concatenated)), which AWS reports with "-<parts>" appended (moto without it)."""
    whole = hashlib.sha256()
    parts: list[bytes] = []
    size = 0
    with open(path, "rb") as f:
        while block := f.read(part_size):
            whole.update(block)
            parts.append(hashlib.sha256(block).digest())
            size += len(block)
    if size < TRANSFER.multipart_threshold:
        return whole.hexdigest(), base64.b64encode(whole.digest()).decode(), 1
    composite = hashlib.sha256(b"".join(parts)).digest()
    return whole.hexdigest(), base64.b64encode(composite).decode(), len(parts)


def _check_local(key: str, path: Path, sha256_hex: str | None) -> tuple[str, int]:
    """The file still has the digest meta.json took when the episode closed; returns (S3's checksum of it, parts)."""
    whole, checksum, parts = local_checksums(path)
    if sha256_hex and whole != sha256_hex:
        raise ChecksumMismatch(
            f"{key}: the spool copy changed after its digest was taken (SHA-256 {whole[:12]}..., meta.json says "
            f"{sha256_hex[:12]}...); not uploaded, kept in the spool for a look"
        )
    return checksum, parts


def _verify(client, loc: S3Location, key: str, path: Path, checksum: str, parts: int) -> None:
    """S3 holds what was sent: the size, and the checksum (one part or composite) against the local one."""
    head = client.head_object(Bucket=loc.bucket, Key=key, ChecksumMode="ENABLED")
    size = path.stat().st_size
    if head["ContentLength"] != size:
        raise ChecksumMismatch(f"{key}: S3 holds {head['ContentLength']} bytes, the spool {size}")
    remote = head.get("ChecksumSHA256")
    if not remote:
        raise ChecksumMismatch(f"{key}: S3 reports no SHA-256 checksum for it")
    value, _, suffix = remote.partition("-")
    if suffix and suffix != str(parts):
        raise ChecksumMismatch(f"{key}: S3 holds {suffix} parts, the spool copy makes {parts}")
    if value != checksum:
        kind = "SHA-256" if parts == 1 else f"composite SHA-256 of {parts} parts"
        raise ChecksumMismatch(f"{key}: the {kind} in S3 differs from the spool copy's")


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
    keys = {p: loc.key(f"{traj_id}/{p.name}") for p in files + [d / fmt.META]}
    # every file is checked against its digest before any goes up: a trajectory with a changed file sends nothing
    checks = {p: _check_local(keys[p], p, digests.get(p.name, {}).get("sha256")) for p in keys}
    for p, key in keys.items():  # meta.json last: a trajectory listed in S3 is complete
        checksum, parts = checks[p]
        client.upload_file(str(p), loc.bucket, key, ExtraArgs={"ChecksumAlgorithm": "SHA256"}, Config=TRANSFER)
        _verify(client, loc, key, p, checksum, parts)
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
                level = logging.ERROR if attempts == FAILING_ATTEMPTS or attempts % 10 == 0 else logging.WARNING
                log.log(level, "upload of %s failed (attempt %d, next in %.0f s): %s", d.name, attempts, delay, msg)
                if not isinstance(e, (BotoCoreError, ClientError, S3UploadFailedError, OSError, ValueError)):
                    log.exception("unexpected upload failure of %s", d.name)
                failed.append(d.name)
        if done or failed:
            self.spool.write_upload_status(self.failures)
        return done, failed

    def wake(self, *_args) -> None:
        """The server is stopping (SIGUSR1): try everything now, without waiting out a backoff."""
        self._force = True

    def stop(self, *_args) -> None:
        """The server has drained the spool, or given up (SIGUSR2): stop after the current pass."""
        self._stop = True

    def loop(self, poll_s: float = 1.0, parent_pid: int | None = None) -> None:
        """Upload until the server is gone or asks the uploader to stop. Nothing that goes wrong in a pass stops the
        loop.

        Run by the server (`parent_pid`), SIGINT and SIGTERM are ignored: Ctrl-C signals the terminal's process group
        and `systemctl stop` every process of the service's control group, and the uploader must outlive the
        server's stop to send what the stop just closed. The server says when to stop (SIGUSR2)."""
        self._force = self._stop = False
        signal.signal(signal.SIGUSR1, self.wake)
        signal.signal(signal.SIGUSR2, self.stop)
        if parent_pid is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while not self._stop:
            if parent_pid is not None and os.getppid() != parent_pid:
                log.info("server is gone; the uploader stops (the next start uploads the rest)")
                return
            force, self._force = self._force, False
            try:
                self.run_once(force=force)
            except Exception:  # noqa: BLE001 - e.g. the spool directory unreadable for a moment
                log.exception("upload pass failed; trying again")
            deadline = time.monotonic() + poll_s
            while not (self._force or self._stop) and time.monotonic() < deadline:
                time.sleep(0.05)  # short naps: a signal's flag is seen at once


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="upload closed trajectories from the spool to S3")
    p.add_argument("--store", required=True)
    p.add_argument("--spool", required=True)
    p.add_argument("--endpoint-url", default=None)
    p.add_argument("--region", default=None)
    p.add_argument("--keep-spool", action="store_true")
    p.add_argument("--poll", type=float, default=1.0)
    p.add_argument("--parent-pid", type=int, default=None)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loc = S3Location.parse(args.store, args.endpoint_url, args.region)
    try:
        Uploader(Spool(args.spool), loc, args.keep_spool).loop(args.poll, args.parent_pid)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
