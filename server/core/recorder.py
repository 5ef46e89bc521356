"""The recording writer: append-only files for one trajectory, flushed at least once a second.

The tick only appends to in-memory lists (microseconds); `flush()` runs outside the tick, from a flusher task,
and writes rows through to the files, so a crash loses at most the last second. Frame rows wait a few frames
before they are written so that the client's paint ack (its `display_ms`) can join them.
"""

from __future__ import annotations

import csv
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

import numpy as np

from . import format as fmt
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
        self.meta: dict = {}
        self._frames_f = None
        self._events_f = None
        # frame rows not yet written (they wait for their paint acks): the last len() frames stepped, in order, each
        # as the columns known when it was stepped, already formatted (a string is no work for the garbage collector;
        # a list per frame was most of what it walked, 2-4 ms pauses for every game of the process)
        self._pending_heads: list[str] = []
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
        self._lock: int | None = None
        self.failed: OSError | None = None  # the write error that stopped this recording (close_after_error)

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

    def painted(self, frame: int, client_ms: float) -> None:
        """A paint ack: `frame` was on the client's screen at client time `client_ms`."""
        if frame >= self.frames or not math.isnan(self._paint_all[frame]):
            return  # not stepped yet (a confused client) or already acked
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
        """Write buffered rows through to the files. An OSError (a full disk, a read-only file system, a quota) is
        kept in `failed` and raised; after it, nothing more is written (see `close_after_error`)."""
        if self._frames_f is None or self.closed or self.failed is not None:
            return
        try:
            self._flush(final)
        except OSError as e:
            self.failed = e
            raise

    def _flush(self, final: bool) -> None:
        assert self._frames_f is not None and self._events_f is not None
        cutoff = self.frames if final else self.frames - ACK_LAG_FRAMES
        heads = self._pending_heads
        first = self.frames - len(heads)  # frames are stepped 0, 1, 2, ... (as _paint_all's indexing assumes)
        n = max(0, min(len(heads), cutoff - first))
        lines = []
        for i in range(n):
            frame = first + i
            paint = self._paint.pop(frame, None)
            display_ms = speech_sample = None
            if paint is not None and self._paint0 is not None:
                display_ms = round(paint - self._paint0, 3)
                if self._last_paint is not None and paint >= self._last_paint:
                    self.paint_intervals.append(paint - self._last_paint)
                self._last_paint = paint
                if self.speech is not None:
                    speech_sample = self.speech.speech_sample(paint)
            lines.append(heads[i] + fmt.frame_tail(display_ms, speech_sample))
        if n:
            del heads[:n]
            self._frames_f.write("".join(lines))
        if self._pending_events:
            self._events_f.write("".join(self._pending_events))
            self._pending_events.clear()
        self._frames_f.flush()
        self._events_f.flush()
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
        """Rewrite frames.csv with display_ms and speech_sample for every frame, from all acks and all audio."""
        paint, missing = self.paint_times()
        info: dict = {"display_ms_interpolated": missing if self.frames else 0}
        if self.speech is not None and self.speech.rate is not None and self.speech.paint0 is None and self.frames:
            if not math.isnan(paint[0]):
                self.speech.set_paint0(float(paint[0]))
        if not self.frames or math.isnan(paint[0]):
            return info
        display = [f"{v:.3f}" for v in (paint - paint[0]).tolist()]
        samples = self.speech.speech_samples(paint) if self.speech is not None else None
        speech = samples.tolist() if samples is not None else [""] * len(display)
        path = self.dir / fmt.FRAMES
        lines = path.read_text().splitlines(keepends=False)
        out = [lines[0]]
        out.extend(
            f"{line.rsplit(',', 2)[0]},{d},{sp}" for line, d, sp in zip(lines[1:], display, speech, strict=False)
        )
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(out) + "\n")
        os.replace(tmp, path)
        if samples is not None and self.speech is not None and self.speech.rate:
            info["speech_end_sample"] = int(samples[-1]) + round(self.speech.rate * FRAME_MS / 1000.0)
        return info

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
        alignment = self._finalize_alignment()
        speech_meta = self.speech.close(alignment.pop("speech_end_sample", None)) if self.speech else None
        game_audio_meta = self.game_audio.close() if self.game_audio else None
        timing = {"ticks": self.frames, **interval_stats(self.tick_intervals)}
        if self.paint_intervals:
            timing["paint"] = interval_stats(self.paint_intervals)
        timing["painted_frames"] = self._painted_frames
        files = file_digests(self.dir)
        self.meta.update(
            {
                **(extra or {}),
                "status": status,
                "end_reason": end_reason,
                "end_utc": utc_now(),
                "frames": self.frames,
                "final_score": self.score,
                "timing": timing,
                "alignment": alignment,
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

    def close_after_error(self, status: str, end_reason: str, error: OSError | None = None) -> dict:
        """Close after a write error: keep what reached the disk, make the files consistent (a half-written row is
        dropped, WAV headers match their data) and complete meta.json if the store still takes it (in place when a
        new file cannot be made: meta.json's block is already allocated). Every step is best effort; never raises."""
        self.failed = self.failed or error
        self.closed = True
        for f in (self._frames_f, self._events_f):
            if f is not None and not f.closed:
                for step in (f.flush, f.close):
                    try:
                        step()
                    except OSError:
                        pass  # the rows the disk did not take are lost; the file is closed all the same
        if self.speech is not None:
            try:
                self.speech.flush()
            except OSError:
                pass
            self.speech.abandon()
        if self.game_audio is not None:
            self.game_audio.abandon()
        frames, score = 0, 0
        try:
            for p in (self.dir / fmt.FRAMES, self.dir / fmt.EVENTS):
                if p.exists():
                    _truncate_partial_line(p)
            _repair_wav(self.dir / fmt.SPEECH, sample_bytes=2)
            _repair_wav(self.dir / fmt.GAME_AUDIO, sample_bytes=None)
            frames, score = _count_frames(self.dir / fmt.FRAMES)
            files = file_digests(self.dir)
        except OSError:
            files = {}
        for tmp in self.dir.glob("*.tmp"):
            tmp.unlink(missing_ok=True)
        self.meta.update(
            {
                "status": status,
                "end_reason": end_reason,
                "end_utc": utc_now(),
                "frames": frames,
                "final_score": score,
                "storage_error": str(self.failed) if self.failed is not None else None,
                "files": files,
            }
        )
        _write_json_best_effort(self.dir / fmt.META, self.meta)
        if self._lock is not None:
            unlock_trajectory(self.dir, self._lock)
            self._lock = None
        return self.meta


def _count_frames(frames_csv: Path) -> tuple[int, int]:
    """The rows of a frames.csv and the score of its last row."""
    if not frames_csv.exists():
        return 0, 0
    frames, last = 0, None
    with open(frames_csv) as f:
        next(f, None)
        for last in f:  # noqa: B007  (the last line is read after the loop)
            frames += 1
    return frames, int(last.split(",")[2]) if last else 0


def _write_json_best_effort(path: Path, obj: dict) -> bool:
    """`write_json_atomic`, else an in-place rewrite (no new block needed), else nothing; True if written."""
    try:
        write_json_atomic(path, obj)
        return True
    except OSError:
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


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
    recovered = []
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
    removed = []
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


_COMPLETE_REASONS = (fmt.GAME_OVER, fmt.TIME_LIMIT, fmt.QUIT)


def _end_reason_logged(events_csv: Path) -> str | None:
    """The reason of the last `end` (else `stop`) event in events.csv: the episode had ended before the kill."""
    if not events_csv.exists():
        return None
    found: dict[str, str] = {}
    with open(events_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("event") in ("end", "stop") and row.get("detail"):
                found[row["event"]] = row["detail"]
    return found.get("end") or found.get("stop")


def _recover(d: Path, meta_path: Path, meta: dict) -> None:
    """Make a killed writer's files consistent and mark its meta.json interrupted."""
    frames = 0
    score = 0
    frames_csv = d / fmt.FRAMES
    for p in (frames_csv, d / fmt.EVENTS):
        if p.exists():
            _truncate_partial_line(p)
    for stray in d.glob("*.tmp"):  # a rewrite the kill cut short (the file it was replacing is whole)
        stray.unlink()
    ended = _end_reason_logged(d / fmt.EVENTS)
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
            # an episode that had ended (game over, time limit, quit: every frame is written before its end event)
            # keeps its end; one the kill cut short is interrupted
            "status": fmt.STATUS_COMPLETE if ended in _COMPLETE_REASONS else fmt.STATUS_INTERRUPTED,
            "end_reason": ended or fmt.SERVER_STOP,
            "recovered": True,
            "end_utc": utc_now(),
            "frames": frames,
            "final_score": score,
            "files": files,
        }
    )
    write_json_atomic(meta_path, meta)
