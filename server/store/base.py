"""The store interface and the URL registry (`file://...` or a plain path; `s3://bucket/prefix` once added)."""

from __future__ import annotations

from collections.abc import Callable
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

    def spool_dir(self) -> Path:
        """The local directory where recordings are written while they run."""

    def reserved(self, traj_id: str) -> bool:
        """Whether a trajectory ID is already taken."""


_SCHEMES: dict[str, Callable[..., Store]] = {}


def trajectory_ids(keys: list[str]) -> list[str]:
    """The trajectory IDs among a store's keys (those with a meta.json), sorted."""
    from ..core import format as fmt

    return sorted({k.split("/", 1)[0] for k in keys if k.endswith("/" + fmt.META)})


#: The URL schemes a store exists for (a plain path is `file`).
KNOWN_SCHEMES = ("file", "s3")


def store_scheme(url: str) -> str:
    """The scheme of a store URL; ConfigError for one no store serves."""
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    if scheme not in KNOWN_SCHEMES:
        raise ConfigError(f"unsupported store URL {url!r}: use a directory path, file://PATH or s3://BUCKET/PREFIX")
    return scheme


def register(scheme: str, factory: Callable[..., Store]) -> None:
    _SCHEMES[scheme] = factory


def open_store(url: str, **options) -> Store:
    """A store for a URL: a path or `file://path` is the local directory store, `s3://bucket/prefix` is S3.

    Options go to the S3 store (`spool`, `cache`, `endpoint_url`, `region`); the local store ignores them.
    """
    from . import local  # noqa: F401  (registers file://)

    scheme = store_scheme(url)
    if scheme == "s3":
        from . import s3  # noqa: F401  (registers s3://; imports boto3 only when used)
    return _SCHEMES[scheme](url, **options)
