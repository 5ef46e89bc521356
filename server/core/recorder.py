"""The recording writer: append-only files for one trajectory, flushed at least once a second.

The tick only appends to in-memory lists (microseconds); `flush()` runs outside the tick, from a flusher task,
and writes rows through to the files, so a crash loses at most the last second. Frame rows wait a few frames
before they are written so that the client's paint ack (its `display_ms`) can join them.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from array import array
from pathlib import Path
from typing import TextIO

import numpy as np

from . import format as fmt
from . import latency
from .speech import AudioLimits, GameAudio, SpeechIngest, finish_game_audio
from .wav import HEADER_BYTES, parse_header, wav_header

#: Held (flock) by the process writing a trajectory; not a recorded file.
LOCK = ".lock"
#: Frame rows stay in memory this many frames (about 1/3 s) waiting for their paint ack.
ACK_LAG_FRAMES = 20
FRAME_MS = 1000.0 / 60.0


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_digest(path: Path) -> dict:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"bytes": size, "sha256": h.hexdigest()}


def is_data_file(p: Path) -> bool:
    """A trajectory's recorded files: not meta.json, not a half-written .tmp, not a dotfile such as the lock."""
    return p.is_file() and p.name != fmt.META and not p.name.startswith(".") and not p.name.endswith(".tmp")


def file_digests(directory: Path) -> dict:
    """meta.json's `files`: the size and sha256 of every other file of a trajectory."""
    return {p.name: file_digest(p) for p in sorted(directory.iterdir()) if is_data_file(p)}


def lock_trajectory(directory: Path) -> int | None:
    """An exclusive flock on `<directory>/.lock`, held while a trajectory is written; None if another process holds
    it. Several server processes share one store directory (one per core behind nginx): a process starting up must
    not close another live process's open episodes as interrupted. The kernel drops the lock of a killed process."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def unlock_trajectory(directory: Path, fd: int) -> None:
    """Remove the lock file, then release the lock (in that order, so no one locks a file about to vanish)."""
    try:
        os.unlink(directory / LOCK)
    except FileNotFoundError:
        pass
    os.close(fd)


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

    def __init__(self, directory: Path, audio_limits: AudioLimits | None = None, game_audio: bool = True) -> None:
        self.dir = Path(directory)
        self.audio_limits = audio_limits or AudioLimits()
        self._want_game_audio = game_audio
        self.speech: SpeechIngest | None = None
        self.game_audio: GameAudio | None = None
        self._paint_all = array("d")  # client paint ms per frame, NaN until acked
        self._shown_all = array("b")  # 1 once an ack said the frame was on screen
        self.meta: dict = {}
        self._frames_f: TextIO | None = None
        self._events_f: TextIO | None = None
        self._rtt_f: TextIO | None = None
        self._pending_rtt: list[str] = []
        self.rtt_samples: list[tuple[float, float]] = []  # (rtt_ms, offset_ms) of each NTP-style sample
        # frame rows not yet written (they wait for their paint acks): the last len() frames stepped, in order, each
        # as the columns known when it was stepped, already formatted (a string is no work for the garbage collector;
        # a list per frame was most of what it walked, 2-4 ms pauses for every game of the process)
        self._pending_heads: list[str] = []
        self._pending_events: list[str] = []
        self._paint: dict[int, float] = {}  # frame -> client paint ms, until the row is written
        self._paint0: float | None = None
        self._painted_frames = 0
        self._shown_frames = 0
        self.frames = 0
        self.score = 0
        self.closed = False
        self.t0 = time.monotonic()
        self.paint0_client_ms: float | None = None
        self.tick_intervals = array("f")
        self.paint_intervals = array("f")
        self._last_paint: float | None = None
        self._lock: int | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def open(self, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=False)
        self._lock = lock_trajectory(self.dir)
        self.meta = {"schema": fmt.SCHEMA_VERSION, **meta, "status": fmt.STATUS_RECORDING, "start_utc": utc_now()}
        write_json_atomic(self.dir / fmt.META, self.meta)
        self._frames_f = open(self.dir / fmt.FRAMES, "w", buffering=1 << 16, newline="")
        self._frames_f.write(",".join(fmt.FRAME_COLUMNS) + "\n")
        self._events_f = open(self.dir / fmt.EVENTS, "w", buffering=1 << 16, newline="")
        self._events_f.write(",".join(fmt.EVENT_COLUMNS) + "\n")
        self._rtt_f = open(self.dir / fmt.RTT, "w", buffering=1 << 14, newline="")
        self._rtt_f.write(",".join(fmt.RTT_COLUMNS) + "\n")
        self.speech = SpeechIngest(self.dir, self.audio_limits)
        if self._want_game_audio:
            self.game_audio = GameAudio(self.dir)
        self.t0 = time.monotonic()
        self.flush()

    def server_ms(self) -> float:
        return (time.monotonic() - self.t0) * 1000.0

    # --- called from the tick and the socket handlers: memory only --------------------------------
    def append_step(
        self,
        frame: int,
        reward: int,
        score: int,
        terminal: bool,
        action: int,
        lives: int,
        keys: str,
        ram_crc32: str,
        server_ms: float,
    ) -> None:
        self._pending_heads.append(
            fmt.frame_head(frame, reward, score, terminal, action, lives, keys, ram_crc32, server_ms)
        )
        self._paint_all.append(math.nan)
        self._shown_all.append(0)
        self.frames = frame + 1
        self.score = score

    def append_event(
        self,
        event: str,
        frame: int | None = None,
        seq: int | None = None,
        client_ms: float | None = None,
        key: str | None = None,
        down: bool | None = None,
        detail: str | None = None,
    ) -> None:
        self._pending_events.append(
            fmt.csv_line((round(self.server_ms(), 3), frame, event, seq, client_ms, key, down, detail))
        )

    def append_rtt(self, server_ms: float, client_send_ms: float, client_recv_ms: float) -> None:
        """An NTP-style round trip: the client sent at `client_send_ms`, the server received it at `server_ms` (this
        episode's clock), the client had the answer at `client_recv_ms` (both client ms)."""
        rtt = client_recv_ms - client_send_ms
        offset = server_ms - (client_send_ms + client_recv_ms) / 2.0  # server ms = client ms + offset
        self.rtt_samples.append((rtt, offset))
        self._pending_rtt.append(fmt.csv_line((server_ms, client_send_ms, client_recv_ms, rtt, offset)))

    def painted(self, frame: int, client_ms: float, shown: bool = True) -> None:
        """A paint ack: `frame` was on the client's screen from client time `client_ms` (`shown`), or was skipped by the
        client's playout at that time (not `shown`: the frame on screen then was a later one)."""
        if frame >= self.frames or not math.isnan(self._paint_all[frame]):
            return  # not stepped yet (a confused client) or already acked
        if shown:
            self._shown_all[frame] = 1
            self._shown_frames += 1
        if frame == 0 and self._paint0 is None:
            self._paint0 = client_ms
            if self.speech is not None:
                self.speech.set_paint0(client_ms)
        self._paint_all[frame] = client_ms
        self._paint[frame] = client_ms
        self._painted_frames += 1

    def append_game_audio(self, samples) -> None:
        if self.game_audio is not None:
            self.game_audio.append(samples)

    # --- called by the flusher task and at close ---------------------------------------------------
    def flush(self, final: bool = False) -> None:
        if self._frames_f is None or self._events_f is None or self.closed:
            return
        cutoff = self.frames if final else self.frames - ACK_LAG_FRAMES
        heads = self._pending_heads
        first = self.frames - len(heads)  # frames are stepped 0, 1, 2, ... (as _paint_all's indexing assumes)
        n = max(0, min(len(heads), cutoff - first))
        lines = []
        for i in range(n):
            frame = first + i
            paint = self._paint.pop(frame, None)
            display_ms = speech_sample = None
            shown = bool(self._shown_all[frame])
            if paint is not None and self._paint0 is not None:
                display_ms = round(paint - self._paint0, 3)
                if shown:  # the intervals between the frames that were on screen
                    if self._last_paint is not None and paint >= self._last_paint:
                        self.paint_intervals.append(paint - self._last_paint)
                    self._last_paint = paint
                if self.speech is not None:
                    speech_sample = self.speech.speech_sample(paint)
            lines.append(heads[i] + fmt.frame_tail(display_ms, speech_sample, shown))
        if n:
            del heads[:n]
            self._frames_f.write("".join(lines))
        if self._pending_events:
            self._events_f.write("".join(self._pending_events))
            self._pending_events.clear()
        if self._pending_rtt and self._rtt_f is not None:
            self._rtt_f.write("".join(self._pending_rtt))
            self._pending_rtt.clear()
        self._frames_f.flush()
        self._events_f.flush()
        if self._rtt_f is not None:
            self._rtt_f.flush()
        if self.speech is not None:
            self.speech.flush()
        if self.game_audio is not None:
            self.game_audio.flush()

    def paint_times(self) -> tuple[np.ndarray, int]:
        """Client paint ms of every frame, gaps interpolated (and extrapolated at 60 Hz); and how many were filled."""
        p = np.frombuffer(self._paint_all, dtype=np.float64).copy()
        known = ~np.isnan(p)
        missing = int((~known).sum())
        if not known.any():
            return p, missing
        f = np.arange(p.size, dtype=np.float64)
        kf, kp = f[known], p[known]
        p = np.interp(f, kf, kp)
        before, after = f < kf[0], f > kf[-1]
        p[before] = kp[0] - (kf[0] - f[before]) * FRAME_MS
        p[after] = kp[-1] + (f[after] - kf[-1]) * FRAME_MS
        return p, missing

    def _finalize_alignment(self) -> dict:
        """Rewrite frames.csv with display_ms, speech_sample and shown for every frame, from all acks and all audio."""
        paint, missing = self.paint_times()
        info: dict = {"display_ms_interpolated": missing if self.frames else 0}
        if self.frames and not math.isnan(paint[0]):
            self.paint0_client_ms = float(paint[0])
        if self.speech is not None and self.speech.rate is not None and self.speech.paint0 is None and self.frames:
            if not math.isnan(paint[0]):
                self.speech.set_paint0(float(paint[0]))
        if not self.frames or math.isnan(paint[0]):
            return info
        display = [f"{v:.3f}" for v in (paint - paint[0]).tolist()]
        samples = self.speech.speech_samples(paint) if self.speech is not None else None
        speech = samples.tolist() if samples is not None else [""] * len(display)
        shown = self._shown_all.tolist()
        path = self.dir / fmt.FRAMES
        lines = path.read_text().splitlines(keepends=False)
        out = [lines[0]]
        out.extend(
            f"{line.rsplit(',', 3)[0]},{d},{sp},{sh}"
            for line, d, sp, sh in zip(lines[1:], display, speech, shown, strict=False)
        )
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(out) + "\n")
        os.replace(tmp, path)
        if samples is not None and self.speech is not None and self.speech.rate:
            info["speech_end_sample"] = int(samples[-1]) + round(self.speech.rate * FRAME_MS / 1000.0)
        return info

    def connection_summary(self) -> dict:
        """meta.json's `connection`: the round trips, the client's clock offset, frame 0's client paint time, and the
        key-to-display latency computed from the closed files (server.core.latency)."""
        rtts = [r for r, _ in self.rtt_samples]
        out: dict = {"rtt_samples": len(rtts)}
        if rtts:
            a = np.asarray(rtts)
            out["rtt_ms"] = {
                "min": round(float(a.min()), 1),
                "p50": round(float(np.percentile(a, 50)), 1),
                "p95": round(float(np.percentile(a, 95)), 1),
                "max": round(float(a.max()), 1),
            }
            best = min(self.rtt_samples)  # the fastest round trip bounds the offset's error best (NTP)
            out["clock_offset_ms"] = round(best[1], 3)  # server episode ms = client ms + offset
        out["paint0_client_ms"] = None if self.paint0_client_ms is None else round(self.paint0_client_ms, 3)
        if self.paint0_client_ms is not None and self.frames:
            paint, _ = self.paint_times()
            frames, times = latency.key_events((self.dir / fmt.EVENTS).read_text())
            display = paint - paint[0]
            shown = np.frombuffer(self._shown_all, dtype=np.int8)
            lat = latency.key_to_display(display, shown, paint[0], frames, times)
            out["key_to_display"] = latency.summary(lat)
        return out

    def close(self, status: str, end_reason: str, extra: dict | None = None) -> dict:
        """Write everything, fsync, and complete meta.json with each file's size and sha256."""
        if self.closed:
            return self.meta
        self.flush(final=True)
        for f in (self._frames_f, self._events_f, self._rtt_f):
            if f is None:
                continue
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self.closed = True
        alignment = self._finalize_alignment()
        speech_meta = self.speech.close(alignment.pop("speech_end_sample", None)) if self.speech else None
        game_audio_meta = self.game_audio.close() if self.game_audio else None
        timing = {"ticks": self.frames, **interval_stats(self.tick_intervals)}
        if self.paint_intervals:
            timing["paint"] = interval_stats(self.paint_intervals)
        timing["painted_frames"] = self._painted_frames  # acked, shown or skipped by the client's playout
        timing["shown_frames"] = self._shown_frames
        timing["not_shown_frames"] = self.frames - self._shown_frames
        extra = dict(extra or {})
        connection = {**self.connection_summary(), **(extra.pop("connection", None) or {})}
        files = file_digests(self.dir)
        self.meta.update(
            {
                **extra,
                "status": status,
                "end_reason": end_reason,
                "end_utc": utc_now(),
                "frames": self.frames,
                "final_score": self.score,
                "timing": timing,
                "alignment": alignment,
                "connection": connection,
                "speech": speech_meta,
                "game_audio": game_audio_meta,
                "files": files,
            }
        )
        write_json_atomic(self.dir / fmt.META, self.meta)
        if self._lock is not None:
            unlock_trajectory(self.dir, self._lock)
            self._lock = None
        return self.meta


def _truncate_partial_line(path: Path) -> None:
    """Drop a half-written last line, so the CSV stays parseable after a crash."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)


def _repair_wav(path: Path, sample_bytes: int | None) -> bool:
    """Make a WAV's header match its data after a crash (the header is rewritten only at flushes)."""
    if not path.exists() or path.stat().st_size < HEADER_BYTES:
        return False
    with open(path, "r+b") as f:
        _, rate, bits, _ = parse_header(f.read(HEADER_BYTES))
        width = sample_bytes or bits // 8
        data = path.stat().st_size - HEADER_BYTES
        data -= data % width
        f.seek(0)
        f.write(wav_header(rate, 1, width, data))
        f.truncate(HEADER_BYTES + data)
    return True


def _read_meta(meta_path: Path) -> dict | None:
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None


def recover_interrupted(root: Path) -> list[str]:
    """Close every trajectory a killed server left in `recording` state as `interrupted`. Returns their IDs.

    Trajectories another live process is writing (its lock is held) are left alone."""
    recovered: list[str] = []
    if not root.is_dir():
        return recovered
    for meta_path in sorted(root.glob("*/" + fmt.META)):
        meta = _read_meta(meta_path)
        if meta is None or meta.get("status") != fmt.STATUS_RECORDING:
            continue
        d = meta_path.parent
        fd = lock_trajectory(d)
        if fd is None:
            continue  # a live server process is recording it
        try:
            meta = _read_meta(meta_path)  # it may have been closed while we took the lock
            if meta is not None and meta.get("status") == fmt.STATUS_RECORDING:
                _recover(d, meta_path, meta)
                recovered.append(d.name)
        finally:
            unlock_trajectory(d, fd)
    return recovered


def remove_abandoned(root: Path) -> list[str]:
    """Delete the trajectory directories under `root` (the practice scratch area) that no live process is writing."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        fd = lock_trajectory(d)
        if fd is None:
            continue
        try:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
        finally:
            os.close(fd)
    return removed


def _recover(d: Path, meta_path: Path, meta: dict) -> None:
    """Make a killed writer's files consistent and mark its meta.json interrupted."""
    frames = 0
    score = 0
    frames_csv = d / fmt.FRAMES
    for p in (frames_csv, d / fmt.EVENTS):
        if p.exists():
            _truncate_partial_line(p)
    _repair_wav(d / fmt.SPEECH, sample_bytes=2)
    if _repair_wav(d / fmt.GAME_AUDIO, sample_bytes=None):
        finish_game_audio(d / fmt.GAME_AUDIO)
    if frames_csv.exists():
        with open(frames_csv) as f:
            next(f, None)
            last = None
            for last in f:  # noqa: B007  (the last line is read after the loop)
                frames += 1
            if last:
                score = int(last.split(",")[2])
    files = file_digests(d)
    meta.update(
        {
            "status": fmt.STATUS_INTERRUPTED,
            "end_reason": fmt.SERVER_STOP,
            "recovered": True,
            "end_utc": utc_now(),
            "frames": frames,
            "final_score": score,
            "files": files,
        }
    )
    write_json_atomic(meta_path, meta)
