"""What the benchmark reads of the trajectories its steps recorded: the only place it parses a trajectory's files.

`server_ms` is the benchmark's one reader of frames.csv (and `key_events` of events.csv); when the project's
trajectory reader lands, these two functions are what switch to it (their callers pass a trajectory's directory).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from server.core import format as fmt


def server_ms(traj_dir: Path) -> np.ndarray:
    """frames.csv's server_ms (when each step ran, ms since the episode opened), indexed by frame. Raises OSError or
    ValueError when the file is missing or not (yet) whole."""
    with open(traj_dir / fmt.FRAMES) as f:
        head = f.readline().rstrip("\n").split(",")
        col = head.index("server_ms")
        return np.array([float(line.split(",")[col]) for line in f], dtype=np.float64)


def key_events(traj_dir: Path) -> list[tuple[int, float]]:
    """(frame applied on, client send ms) of every key event the server applied; none when there is no events.csv."""
    path = traj_dir / fmt.EVENTS
    if not path.exists():
        return []
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["event"] == "key" and not row["detail"] and row["client_ms"]:
                out.append((int(row["frame"]), float(row["client_ms"])))
    return out
