"""The local directory store: `<root>/<traj_id>/<file>`."""

from __future__ import annotations

import os
from pathlib import Path

from .base import file_path


class LocalStore:
    """A directory on this machine (with the local store, also the spool recordings are written to)."""

    def __init__(self, url: str, **_options) -> None:
        self.root = file_path(url)
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
        """Every file's key, except half-written `.tmp` files and dotfiles (the spool's own files, a lock)."""
        keys = []
        for p in self.root.rglob("*"):
            if p.is_file() and not p.name.endswith(".tmp") and not p.name.startswith("."):
                key = p.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path:
        """The file behind a key; KeyError when there is none."""
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        return path
