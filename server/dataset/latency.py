"""Key-to-display latency of a recorded trajectory, computed from its files alone (server.core.latency says how)."""

from __future__ import annotations

import numpy as np

from ..core import latency
from ..core.reader import read_events, read_meta
from .trajectory import load


def key_latencies(store, traj_id: str) -> np.ndarray:
    """ms from each applied key event's press to the paint of the first shown frame that carried it (NaN where none
    was shown), in events.csv order. ValueError for a recording without frame 0's client paint time (schema 1)."""
    meta = read_meta(store, traj_id)
    paint0 = (meta.get("connection") or {}).get("paint0_client_ms")
    if paint0 is None:
        raise ValueError(f"{traj_id}: meta.json has no connection.paint0_client_ms (recorded before schema 2)")
    traj = load(store, traj_id, speech=False)
    frames, times = latency.key_events(read_events(store, traj_id))
    return latency.key_to_display(traj.display_ms, traj.shown, float(paint0), frames, times)


def key_latency_summary(store, traj_id: str) -> dict:
    """`{keys, p50_ms, p95_ms, max_ms}` of `key_latencies` (what the recorder puts in meta.json at close)."""
    return latency.summary(key_latencies(store, traj_id))
