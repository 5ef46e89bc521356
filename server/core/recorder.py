"""The recording writer: append-only files for one trajectory, flushed at least once a second.

The tick only appends to in-memory lists (microseconds); `flush()` runs outside the tick, from a flusher task,
and writes rows through to the files, so a crash loses at most the last second. Frame rows wait a few frames
before they are written so that the client's paint ack (its `display_ms`) can join them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from array import array
from pathlib import Path

import numpy as np

from . import format as fmt

#: Frame rows stay in memory this many frames (about 1/3 s) waiting for their paint ack.
ACK_LAG_FRAMES = 20


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_digest(path: Path) -> dict:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"bytes": size, "sha256": h.hexdigest()}


def write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def interval_stats(intervals_ms: array) -> dict:
    if not intervals_ms:
        return {}
    a = np.frombuffer(intervals_ms, dtype=np.float32)
    return {
        "intervals": int(a.size),
        "interval_ms_mean": round(float(a.mean()), 3),
        "interval_ms_p50": round(float(np.percentile(a, 50)), 3),
        "interval_ms_p99": round(float(np.percentile(a, 99)), 3),
        "interval_ms_max": round(float(a.max()), 3),
    }


class RecordingWriter:
    """Writes meta.json, frames.csv and events.csv of one trajectory into `directory`."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.meta: dict = {}
        self._frames_f = None
        self._events_f = None
        self._pending_rows: list[list] = []  # frame rows not yet written, in frame order
        self._pending_events: list[str] = []
        self._paint: dict[int, float] = {}  # frame -> client paint ms, until the row is written
        self._paint0: float | None = None
        self._painted_frames = 0
        self.frames = 0
        self.score = 0
        self.closed = False
        self.t0 = time.monotonic()
        self.tick_intervals = array("f")
        self.paint_intervals = array("f")
        self._last_paint: float | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def open(self, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=False)
        self.meta = {"schema": fmt.SCHEMA_VERSION, **meta, "status": fmt.STATUS_RECORDING, "start_utc": utc_now()}
        write_json_atomic(self.dir / fmt.META, self.meta)
        self._frames_f = open(self.dir / fmt.FRAMES, "w", buffering=1 << 16, newline="")
        self._frames_f.write(",".join(fmt.FRAME_COLUMNS) + "\n")
        self._events_f = open(self.dir / fmt.EVENTS, "w", buffering=1 << 16, newline="")
        self._events_f.write(",".join(fmt.EVENT_COLUMNS) + "\n")
        self.t0 = time.monotonic()
        self.flush()

    def server_ms(self) -> float:
        return (time.monotonic() - self.t0) * 1000.0

    # --- called from the tick and the socket handlers: memory only --------------------------------
    def append_step(self, frame: int, reward: int, score: int, terminal: bool, action: int, lives: int,
                    keys: str, ram_crc32: str, server_ms: float) -> None:
        self._pending_rows.append([frame, reward, score, terminal, action, lives, keys, ram_crc32, server_ms])
        self.frames = frame + 1
        self.score = score

    def append_event(self, event: str, frame: int | None = None, seq: int | None = None,
                     client_ms: float | None = None, key: str | None = None, down: bool | None = None,
                     detail: str | None = None) -> None:
        self._pending_events.append(fmt.csv_line(
            (round(self.server_ms(), 3), frame, event, seq, client_ms, key, down, detail)))

    def painted(self, frame: int, client_ms: float) -> None:
        """A paint ack: `frame` was on the client's screen at client time `client_ms`."""
        if frame == 0 and self._paint0 is None:
            self._paint0 = client_ms
        if frame not in self._paint:
            self._paint[frame] = client_ms
            self._painted_frames += 1

    # --- called by the flusher task and at close ---------------------------------------------------
    def flush(self, final: bool = False) -> None:
        if self._frames_f is None or self.closed:
            return
        cutoff = self.frames if final else self.frames - ACK_LAG_FRAMES
        n = 0
        lines = []
        for row in self._pending_rows:
            frame = row[0]
            if frame >= cutoff:
                break
            paint = self._paint.pop(frame, None)
            display_ms = None
            if paint is not None and self._paint0 is not None:
                display_ms = round(paint - self._paint0, 3)
                if self._last_paint is not None and paint >= self._last_paint:
                    self.paint_intervals.append(paint - self._last_paint)
                self._last_paint = paint
            lines.append(fmt.csv_line((*row[:8], round(row[8], 3), display_ms, None)))
            n += 1
        if n:
            del self._pending_rows[:n]
            self._frames_f.write("".join(lines))
        if self._pending_events:
            self._events_f.write("".join(self._pending_events))
            self._pending_events.clear()
        self._frames_f.flush()
        self._events_f.flush()

    def close(self, status: str, end_reason: str, extra: dict | None = None) -> dict:
        """Write everything, fsync, and complete meta.json with each file's size and sha256."""
        if self.closed:
            return self.meta
        self.flush(final=True)
        for f in (self._frames_f, self._events_f):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self.closed = True
        timing = {"ticks": self.frames, **interval_stats(self.tick_intervals)}
        if self.paint_intervals:
            timing["paint"] = interval_stats(self.paint_intervals)
        timing["painted_frames"] = self._painted_frames
        files = {p.name: file_digest(p) for p in sorted(self.dir.iterdir())
                 if p.is_file() and p.name != fmt.META and not p.name.endswith(".tmp")}
        self.meta.update({
            **(extra or {}),
            "status": status,
            "end_reason": end_reason,
            "end_utc": utc_now(),
            "frames": self.frames,
            "final_score": self.score,
            "timing": timing,
            "files": files,
        })
        write_json_atomic(self.dir / fmt.META, self.meta)
        return self.meta


def _truncate_partial_line(path: Path) -> None:
    """Drop a half-written last line, so the CSV stays parseable after a crash."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)


def recover_interrupted(root: Path) -> list[str]:
    """Close every trajectory a killed server left in `recording` state as `interrupted`. Returns their IDs."""
    recovered = []
    if not root.is_dir():
        return recovered
    for meta_path in sorted(root.glob("*/" + fmt.META)):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("status") != fmt.STATUS_RECORDING:
            continue
        d = meta_path.parent
        frames = 0
        score = 0
        frames_csv = d / fmt.FRAMES
        for p in (frames_csv, d / fmt.EVENTS):
            if p.exists():
                _truncate_partial_line(p)
        if frames_csv.exists():
            with open(frames_csv) as f:
                next(f, None)
                last = None
                for last in f:
                    frames += 1
                if last:
                    score = int(last.split(",")[2])
        files = {p.name: file_digest(p) for p in sorted(d.iterdir())
                 if p.is_file() and p.name != fmt.META and not p.name.endswith(".tmp")}
        meta.update({"status": fmt.STATUS_INTERRUPTED, "end_reason": fmt.SERVER_STOP, "recovered": True,
                     "end_utc": utc_now(), "frames": frames, "final_score": score, "files": files})
        write_json_atomic(meta_path, meta)
        recovered.append(d.name)
    return recovered
