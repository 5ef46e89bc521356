"""What the benchmark reads of the trajectories its steps recorded: the only place it parses a trajectory's files.

`server_ms` reads frames.csv line by line (a step's files may be read while a row is half written); `key_events` is
the project's own (server.core.reader and server.core.latency, the same rule the recorder's latency summary uses).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.core import format as fmt
from server.core import latency
from server.core.reader import read_events_file


def server_ms(traj_dir: Path) -> np.ndarray:
    """frames.csv's server_ms (when each step ran, ms since the episode opened), indexed by frame. Raises OSError or
    ValueError when the file is missing or not (yet) whole."""
    with open(traj_dir / fmt.FRAMES) as f:
        head = f.readline().rstrip("\n").split(",")
        col = head.index("server_ms")
        return np.array([float(line.split(",")[col]) for line in f], dtype=np.float64)


def key_events(traj_dir: Path) -> list[tuple[int, float]]:
    """(frame applied on, client send ms) of every key event the server applied; none when there is no events.csv."""
    frames, times = latency.key_events(read_events_file(traj_dir / fmt.EVENTS))
    return list(zip(frames.tolist(), times.tolist(), strict=True))
