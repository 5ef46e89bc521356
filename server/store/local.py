"""The local directory store: `<root>/<traj_id>/<file>`."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.recorder import LOCK
from .base import register


class LocalStore:
    """A directory on this machine; also its own spool."""

    def __init__(self, url: str, **_options) -> None:
        path = url[len("file://") :] if url.startswith("file://") else url
        self.root = Path(path).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"key {key!r} is outside the store")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def list(self, prefix: str = "") -> list[str]:
        keys = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.endswith(".tmp") and p.name != LOCK:
                key = p.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def spool_dir(self) -> Path:
        return self.root

    def reserved(self, traj_id: str) -> bool:
        """Whether a trajectory ID is taken (so a new episode never overwrites one)."""
        return (self.root / traj_id).exists()

    def path(self, key: str) -> Path:
        """The file behind a key (local store only)."""
        return self._path(key)


register("file", LocalStore)
