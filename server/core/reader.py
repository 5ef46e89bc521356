"""The one reader of a recorded trajectory: meta.json, frames.csv by column name, events.csv, the WAV files, listing.

Replay, the video export, the dataset, the admin page and the spool's crash recovery read through here, so a new
frames.csv column is a change to `format.FRAME_TYPES` (and the writer) only: columns are found by name, never by
position, and a column an older recording lacks reads as NaN (numbers) or "" (text) unless it is an integer column
every schema-1 recording has.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import TrajectoryNotFound
from ..store.base import Store
from . import format as fmt
from .wav import parse_wav


def trajectory_ids(keys: Iterable[str]) -> list[str]:
    """The trajectory IDs among a store's keys (those `<traj_id>/meta.json` names), sorted."""
    ids = (k.split("/", 1)[0] for k in keys if k.count("/") == 1 and k.endswith("/" + fmt.META))
    return sorted(i for i in ids if fmt.TRAJ_ID_RE.fullmatch(i))


def list_ids(store: Store, prefix: str = "") -> list[str]:
    """The IDs of every trajectory in a store whose ID starts with `prefix`, sorted."""
    return trajectory_ids(store.list(prefix))


def read_meta_file(path: Path) -> dict | None:
    """A meta.json on this machine; None when it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def local_metas(root: Path) -> list[tuple[Path, dict]]:
    """(directory, meta) of every trajectory directly under a local directory, by name; unreadable ones skipped."""
    out = []
    for meta_path in sorted(Path(root).glob("*/" + fmt.META)):
        meta = read_meta_file(meta_path)
        if meta is not None:
            out.append((meta_path.parent, meta))
    return out


def read_meta(store: Store, traj_id: str) -> dict:
    """A trajectory's meta.json; InvalidTrajectoryId for a bad ID, TrajectoryNotFound when it is not there."""
    fmt.validate_traj_id(traj_id)
    try:
        return json.loads(store.get(f"{traj_id}/{fmt.META}"))
    except KeyError:
        raise TrajectoryNotFound(f"no trajectory {traj_id!r} in {store.url}") from None


class Frames:
    """frames.csv as one array per column, looked up by name: int64 for int columns, float64 (NaN where empty) for
    float columns, str for text (format.FRAME_TYPES)."""

    def __init__(self, columns: dict[str, np.ndarray], n: int, present: frozenset[str] = frozenset()) -> None:
        self.columns = columns
        self.n = n
        self.present = present  # the columns the file has (an older schema lacks some; they read as NaN or "")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: object) -> bool:
        return name in self.columns


def parse_frames(text: str, where: str = fmt.FRAMES) -> Frames:
    """frames.csv's text as columns; ValueError naming `where` when an integer column is missing or a cell is bad."""
    rows = list(csv.reader(io.StringIO(text)))
    header, rows = (rows[0], rows[1:]) if rows else ([], [])
    index = {name: i for i, name in enumerate(header)}
    missing = [c for c, kind in fmt.FRAME_TYPES.items() if kind is int and c not in index]
    if missing:
        raise ValueError(f"{where} has no column {', '.join(missing)}")
    columns: dict[str, np.ndarray] = {}
    for name, kind in fmt.FRAME_TYPES.items():
        i = index.get(name)
        if kind is int:
            columns[name] = np.array([int(r[index[name]]) for r in rows], dtype=np.int64)
        elif kind is float:
            columns[name] = np.array(
                [math.nan if i is None or i >= len(r) or r[i] == "" else float(r[i]) for r in rows], dtype=np.float64
            )
        else:
            columns[name] = np.array([r[i] if i is not None and i < len(r) else "" for r in rows], dtype=str)
    return Frames(columns, len(rows), frozenset(index))


def read_frames(store: Store, traj_id: str) -> Frames:
    """A trajectory's frames.csv as columns; TrajectoryNotFound when it has none."""
    fmt.validate_traj_id(traj_id)
    try:
        text = store.get(f"{traj_id}/{fmt.FRAMES}").decode()
    except KeyError:
        raise TrajectoryNotFound(f"trajectory {traj_id!r} has no {fmt.FRAMES} in {store.url}") from None
    return parse_frames(text, f"{traj_id}/{fmt.FRAMES}")


def read_csv(store: Store, key: str) -> list[dict[str, str]] | None:
    """Any CSV of a trajectory (events.csv, the annotation files) as rows by column name; None when it is missing."""
    try:
        text = store.get(key).decode()
    except KeyError:
        return None
    return list(csv.DictReader(io.StringIO(text)))


def read_events(store: Store, traj_id: str) -> list[dict[str, str]]:
    """events.csv's rows by column name (format.EVENT_COLUMNS); [] when the trajectory has none."""
    return read_csv(store, f"{fmt.validate_traj_id(traj_id)}/{fmt.EVENTS}") or []


def read_events_file(path: Path) -> list[dict[str, str]]:
    """A local events.csv's rows by column name; [] when it is missing."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def count_frames(path: Path) -> tuple[int, int]:
    """The rows of a local frames.csv and the score of its last row; (0, 0) when it is missing."""
    if not path.exists():
        return 0, 0
    logged = parse_frames(path.read_text(), str(path))
    return len(logged), int(logged["score"][-1]) if len(logged) else 0


def read_wav(store: Store, traj_id: str, name: str) -> tuple[int, np.ndarray] | None:
    """(rate, int16 mono samples) of one of a trajectory's WAV files (fmt.SPEECH, fmt.GAME_AUDIO); None when it
    has none; ValueError when it is not a PCM WAV."""
    key = f"{fmt.validate_traj_id(traj_id)}/{name}"
    try:
        data = store.get(key)
    except KeyError:
        return None
    return parse_wav(data, key)
