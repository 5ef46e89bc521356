"""Where trajectories live: a local directory (default) or S3, chosen by URL. The store knows nothing of the format."""

from .base import Store, open_store

__all__ = ["Store", "open_store"]
