"""Key-to-display latency from a recording's own files: when each key's effect was first on the participant's screen.

An applied key event in events.csv (detail empty) carries the client time it was pressed (`client_ms`) and the frame
it was applied on (`frame`); frames.csv says when each frame was painted (`display_ms`, client ms after frame 0's
paint, which meta.json's `connection.paint0_client_ms` puts on the client clock) and whether it was on screen
(`shown`). A key's latency is the paint time of the first frame at or after its frame that was shown, minus its press
time. Both times are the browser's clock, so no clock offset enters. Used by the recorder at close (meta.json
`connection.key_to_display`) and by the loader (server.dataset.latency)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def key_events(rows: Iterable[Mapping[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(frame, client_ms) of every applied key event among events.csv's rows (server.core.reader), in file order
    (not `stale`, not `after stop`: those were never applied)."""
    frames, times = [], []
    for r in rows:
        if r.get("event") != "key" or r.get("detail") or not r.get("client_ms") or not r.get("frame"):
            continue
        frames.append(int(r["frame"]))
        times.append(float(r["client_ms"]))
    return np.asarray(frames, dtype=np.int64), np.asarray(times, dtype=np.float64)


def key_to_display(
    display_ms: np.ndarray,
    shown: np.ndarray | None,
    paint0_client_ms: float,
    key_frames: np.ndarray,
    key_client_ms: np.ndarray,
) -> np.ndarray:
    """Per key event, ms from its press to the paint of the first shown frame at or after the frame it was applied on
    (NaN when no such frame was shown). `shown` None (a schema-1 recording) counts every painted frame as shown."""
    display = np.asarray(display_ms, dtype=np.float64)
    on_screen = ~np.isnan(display)
    if shown is not None:
        on_screen &= np.asarray(shown, dtype=bool)
    idx = np.flatnonzero(on_screen)
    out = np.full(len(key_frames), np.nan)
    if idx.size == 0 or len(key_frames) == 0:
        return out
    pos = np.searchsorted(idx, key_frames, side="left")
    ok = pos < idx.size
    out[ok] = paint0_client_ms + display[idx[pos[ok]]] - np.asarray(key_client_ms, dtype=np.float64)[ok]
    return out


def summary(latencies_ms: np.ndarray) -> dict:
    """`{keys, p50_ms, p95_ms, max_ms}` over the finite latencies (`keys` 0 and no figures when there are none)."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"keys": 0}
    return {
        "keys": int(a.size),
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
        "max_ms": round(float(a.max()), 1),
    }


def percentile(values, q: float) -> float | None:
    """The q-th percentile of the finite values, or None."""
    a = np.asarray(list(values), dtype=np.float64)
    a = a[np.isfinite(a)]
    return None if a.size == 0 else float(np.percentile(a, q))
