"""A trajectory directory's files on disk: which are recorded data, their digests (meta.json's `files`), atomic JSON."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

from . import format as fmt


def utc_now() -> str:
    """The time now as meta.json writes it: ISO 8601 in UTC with milliseconds and a Z."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_digest(path: Path) -> dict:
    """{"bytes", "sha256"} of one file, read in 1 MB blocks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"bytes": size, "sha256": h.hexdigest()}


def is_data_file(p: Path) -> bool:
    """A trajectory's recorded files: not meta.json, not a half-written .tmp, not a dotfile such as the lock."""
    return p.is_file() and p.name != fmt.META and not p.name.startswith(".") and not p.name.endswith(".tmp")


def file_digests(directory: Path) -> dict:
    """meta.json's `files`: the size and sha256 of every other file of a trajectory."""
    return {p.name: file_digest(p) for p in sorted(directory.iterdir()) if is_data_file(p)}


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON through a .tmp file and a rename, so a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def truncate_partial_line(path: Path) -> None:
    """Drop a half-written last line, so the CSV stays parseable after a crash."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
