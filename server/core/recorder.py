"""The recording writer: append-only files for one trajectory, flushed at least once a second.

The tick only appends to in-memory lists (microseconds); `flush()` runs outside the tick, from a flusher task,
and writes rows through to the files, so a crash loses at most the last second. Frame rows wait a few frames
before they are written so that the client's paint ack (its `display_ms`) can join them.
"""

from __future__ import annotations

import json
import math
import os
import time
from array import array
from pathlib import Path
from typing import TextIO

import numpy as np

from ..spool import lock_trajectory, unlock_trajectory
from . import format as fmt
from . import latency
from .alignment import paint_times, speech_end_sample
from .files import file_digests, truncate_partial_line, utc_now, write_json_atomic
from .reader import count_frames, read_events_file
from .speech import AudioLimits, GameAudio, SpeechIngest
from .wav import repair_wav

#: Frame rows stay in memory this many frames (about 1/3 s) waiting for their paint ack.
ACK_LAG_FRAMES = 20


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
        return paint_times(np.frombuffer(self._paint_all, dtype=np.float64))

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
        display = (paint - paint[0]).tolist()
        samples = self.speech.speech_samples(paint) if self.speech is not None else None
        speech = samples.tolist() if samples is not None else [None] * len(display)
        shown = self._shown_all.tolist()
        path = self.dir / fmt.FRAMES
        lines = path.read_text().splitlines(keepends=False)
        out = [lines[0] + "\n"]
        tail = len(fmt.TAIL_COLUMNS)  # the row's last cells: frame_tail's, rewritten from all acks and all audio
        out.extend(
            line.rsplit(",", tail)[0] + "," + fmt.frame_tail(d, sp, bool(sh))
            for line, d, sp, sh in zip(lines[1:], display, speech, shown, strict=False)
        )
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(out))
        os.replace(tmp, path)
        if samples is not None and self.speech is not None and self.speech.rate:
            info["speech_end_sample"] = speech_end_sample(int(samples[-1]), self.speech.rate)
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
            frames, times = latency.key_events(read_events_file(self.dir / fmt.EVENTS))
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
                    truncate_partial_line(p)
            repair_wav(self.dir / fmt.SPEECH, sample_bytes=2)
            repair_wav(self.dir / fmt.GAME_AUDIO, sample_bytes=None)
            frames, score = count_frames(self.dir / fmt.FRAMES)
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
