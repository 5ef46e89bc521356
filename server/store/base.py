"""The store interface and the URL table (`file://...` or a plain path; `s3://bucket/prefix`).

Backends are named, not imported: `open_store` imports one only when a URL asks for it (as Minari's remotes
registry does), so this module imports no backend, no backend imports this table back, and boto3 is loaded only
for an S3 URL.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import ConfigError


@runtime_checkable
class Store(Protocol):
    """Keys are `<traj_id>/<file>`; values are bytes."""

    url: str

    def put(self, key: str, data: bytes) -> None:
        """Write a whole object."""

    def get(self, key: str) -> bytes:
        """Read a whole object; KeyError when it is missing."""

    def list(self, prefix: str = "") -> list[str]:
        """Every key under a prefix, sorted."""

    def exists(self, key: str) -> bool:
        """Whether a key exists."""

    def delete(self, key: str) -> None:
        """Remove an object (and any local copy of it); nothing happens when it is missing."""

    def local_path(self, key: str) -> Path:
        """A file on this machine holding the object (S3: fetched into the cache once); KeyError when missing."""


#: scheme -> "module:class", the module relative to this package and imported only when a URL names the scheme.
BACKENDS: dict[str, str] = {
    "file": ".local:LocalStore",
    "s3": ".s3:S3Store",
}

#: The URL schemes a store exists for (a plain path is `file`).
KNOWN_SCHEMES = tuple(BACKENDS)


def store_scheme(url: str) -> str:
    """The scheme of a store URL; ConfigError for one no store serves."""
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    if scheme not in BACKENDS:
        raise ConfigError(f"unsupported store URL {url!r}: use a directory path, file://PATH or s3://BUCKET/PREFIX")
    return scheme


def file_path(url: str) -> Path:
    """The directory a `file://` URL or a plain path names, absolute."""
    path = url[len("file://") :] if url.startswith("file://") else url
    return Path(path).expanduser().resolve()


def open_store(url: str, **options) -> Store:
    """A store for a URL: a path or `file://path` is the local directory store, `s3://bucket/prefix` is S3.

    Options go to the S3 store (`cache`, `endpoint_url`, `region`); the local store ignores them.
    """
    module, _, name = BACKENDS[store_scheme(url)].partition(":")
    factory = getattr(importlib.import_module(module, __package__), name)
    return factory(url, **options)
