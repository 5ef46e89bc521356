"""What the benchmark reads of the recordings its steps made: the only place it parses a trajectory's files.

`server_ms_column` is the benchmark's one reader of frames.csv (and `read_events` of events.csv); when the project's
trajectory reader lands, these two are what switch to it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def read_events(path: Path) -> list[tuple[int, float]]:
    """(frame applied on, client send ms) of every key event the server applied."""
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["event"] == "key" and not row["detail"] and row["client_ms"]:
                out.append((int(row["frame"]), float(row["client_ms"])))
    return out


def server_ms_column(path: Path) -> np.ndarray:
    """frames.csv's server_ms (when each step ran, ms since the episode opened), indexed by frame."""
    with open(path) as f:
        head = f.readline().rstrip("\n").split(",")
        col = head.index("server_ms")
        return np.array([float(line.split(",")[col]) for line in f], dtype=np.float64)
