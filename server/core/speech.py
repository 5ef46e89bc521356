"""Microphone audio: chunks from the client placed on the episode's timeline, and the game's own sound.

Each chunk is written at its own offset (the clock mapping is `alignment.ClockFit`), so lost chunks leave silence,
late ones fill their place, and duplicates are ignored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ..errors import AudioRejected
from . import format as fmt
from .alignment import ClockFit
from .emulator import GAME_AUDIO_RATE
from .voice import VoiceActivity
from .wav import HEADER_BYTES, WavWriter, parse_header, wav_header

#: Audio held in memory while waiting for frame 0's paint ack and a clock fit; past this it is written unaligned.
MAX_PENDING_SECONDS = 10.0


@dataclass(frozen=True)
class AudioLimits:
    """What one client may send."""

    min_rate: int = 8000
    max_rate: int = 96000
    max_chunk_seconds: float = 0.5
    max_episode_seconds: float = 4 * 3600.0


class AudioRate:
    """At most `factor` x real time of audio, measured over `window_s` (a token bucket of `factor * window_s`
    seconds of audio, refilled at `factor` seconds a second): a microphone sends 1x, and may catch up a stall; a
    client sending 37 MB/s (2.7 GB an episode) is refused. `take(seconds)` is False for a chunk over the rate."""

    def __init__(self, factor: float = 1.2, window_s: float = 3.0, clock=time.monotonic) -> None:
        self.factor = factor
        self.capacity = factor * window_s
        self.credit = self.capacity
        self.clock = clock
        self._t: float | None = None

    def take(self, seconds: float) -> bool:
        now = self.clock()
        if self._t is not None:
            self.credit = min(self.capacity, self.credit + (now - self._t) * self.factor)
        self._t = now
        if seconds > self.credit:
            return False
        self.credit -= seconds
        return True


class SpeechIngest:
    """Builds speech.wav and speech_sync.csv of one episode from the client's audio chunks."""

    def __init__(self, directory: Path, limits: AudioLimits = AudioLimits()) -> None:
        self.dir = Path(directory)
        self.limits = limits
        self.rate: int | None = None
        self.fit: ClockFit | None = None
        self.seen: set[int] = set()
        self.pending: list[tuple[int, bytes]] = []
        self._pending_samples = 0
        self.s0: int | None = None
        self.paint0: float | None = None
        self.wav: WavWriter | None = None
        self.samples_received = 0
        self.chunks = 0
        self.duplicates = 0
        self.last_arrival: float | None = None
        self._sync_lines: list[str] = []
        self._sync_f: TextIO | None = None
        self.voice: VoiceActivity | None = None

    def max_samples(self) -> int:
        return int((self.rate or self.limits.max_rate) * self.limits.max_episode_seconds)

    def add(self, seq: int, first_sample: int, t_ms: float, rate: int, pcm: bytes, now: float) -> bool:
        """Take a chunk; False for a duplicate; AudioRejected when it breaks a limit."""
        lim = self.limits
        if not lim.min_rate <= rate <= lim.max_rate:
            raise AudioRejected(f"sample rate {rate} Hz is outside {lim.min_rate}-{lim.max_rate} Hz")
        if self.rate is not None and rate != self.rate:
            raise AudioRejected(f"sample rate changed from {self.rate} to {rate} Hz within an episode")
        if len(pcm) % 2:
            raise AudioRejected("pcm must be 16-bit samples (an even number of bytes)")
        n = len(pcm) // 2
        if n == 0 or n > rate * lim.max_chunk_seconds:
            raise AudioRejected(
                f"a chunk must hold 1 to {int(rate * lim.max_chunk_seconds)} samples, got {n}",
                code="audio_too_large" if n else "audio_rejected",
            )
        if seq in self.seen:
            self.duplicates += 1
            return False
        if self.samples_received + n > rate * lim.max_episode_seconds:
            raise AudioRejected(
                f"this episode already holds {lim.max_episode_seconds:g} s of audio, the most one episode may hold",
                code="audio_limit",
            )
        if self.s0 is not None and first_sample - self.s0 + n > self.max_samples():
            raise AudioRejected("first_sample is beyond the episode's audio limit", code="audio_limit")
        if self.rate is None:
            self.rate = rate
            self.fit = ClockFit(rate)
            self.voice = VoiceActivity(rate)
            self._sync_f = open(self.dir / fmt.SPEECH_SYNC, "w", newline="")
            self._sync_f.write("seq,first_sample,samples,client_ms\n")
        self.seen.add(seq)
        self.chunks += 1
        self.samples_received += n
        self.last_arrival = now
        assert self.fit is not None
        self.fit.add(first_sample, t_ms)
        self._sync_lines.append(f"{seq},{first_sample},{n},{t_ms:.3f}\n")
        assert self.voice is not None
        self.voice.add(pcm)
        if self.s0 is None:
            self.pending.append((first_sample, pcm))
            self._pending_samples += n
            self._maybe_anchor()
            if self.s0 is None and self._pending_samples > self.rate * MAX_PENDING_SECONDS:
                self._anchor_raw()  # no paint ack yet: keep memory bounded, start from the first chunk
        else:
            self._write(first_sample, pcm)
        return True

    @property
    def voiced_seconds(self) -> float | None:
        """Seconds of voice activity received so far (None before any audio, or at a rate the detector lacks)."""
        return self.voice.seconds if self.voice is not None else None

    def set_paint0(self, client_ms: float) -> None:
        """Frame 0 was painted at this client time: speech.wav starts with the sample captured then."""
        if self.paint0 is None:
            self.paint0 = client_ms
            self._maybe_anchor()

    def _maybe_anchor(self, force: bool = False) -> None:
        if self.s0 is not None or self.paint0 is None or self.fit is None or self.rate is None:
            return
        if not force and not self.fit.fitted():
            return  # wait (buffering about a second of audio) until the clock fit has a slope
        self.s0 = round(self.fit.sample_at(self.paint0))
        self.wav = WavWriter(self.dir / fmt.SPEECH, self.rate)
        pending, self.pending = self.pending, []
        for first_sample, pcm in pending:
            self._write(first_sample, pcm)

    def _anchor_raw(self) -> None:
        assert self.rate is not None
        self.s0 = min(s for s, _ in self.pending) if self.pending else 0
        self.wav = WavWriter(self.dir / fmt.SPEECH, self.rate)
        pending, self.pending = self.pending, []
        for first_sample, pcm in pending:
            self._write(first_sample, pcm)

    def _write(self, first_sample: int, pcm: bytes) -> None:
        assert self.s0 is not None and self.wav is not None
        offset = first_sample - self.s0
        if offset < 0:  # the part captured before frame 0 was painted is not part of the episode
            pcm = pcm[-offset * 2 :]
            offset = 0
        if pcm:
            self.wav.write_at(offset, pcm)

    def speech_sample(self, paint_ms: float) -> int | None:
        """speech.wav's index of the sample captured at this client time (None before the anchor)."""
        if self.s0 is None or self.fit is None:
            return None
        return max(0, round(self.fit.sample_at(paint_ms) - self.s0))

    def speech_samples(self, paint_ms: np.ndarray) -> np.ndarray | None:
        """`speech_sample` of many client times at once (the same arithmetic, rounding half to even as round())."""
        if self.s0 is None or self.fit is None:
            return None
        return np.maximum(0, np.round(self.fit.sample_at(paint_ms) - self.s0)).astype(np.int64)

    def flush(self) -> None:
        if self._sync_lines and self._sync_f is not None:
            self._sync_f.write("".join(self._sync_lines))
            self._sync_lines.clear()
            self._sync_f.flush()
        if self.wav is not None:
            self.wav.flush()

    def abandon(self) -> None:
        """Close the files without another write (after a write error)."""
        if self._sync_f is not None:
            try:
                self._sync_f.close()
            except OSError:
                pass  # what it held is lost
        if self.wav is not None:
            self.wav.abandon()
        self.pending.clear()

    def close(self, end_sample: int | None) -> dict | None:
        """Cut or pad speech.wav to end with the last frame; returns meta.json's `speech` object."""
        self.flush()
        if self._sync_f is not None:
            self._sync_f.close()
        if self.rate is None:
            return None
        if self.wav is None and self.paint0 is not None:
            self._maybe_anchor(force=True)
        if self.wav is None:  # audio arrived but frame 0 was never painted: keep the raw timeline from chunk 0
            self._anchor_raw()
        assert self.wav is not None
        if end_sample is not None:
            self.wav.truncate(end_sample)
        length = self.wav.samples
        self.wav.close()
        assert self.fit is not None
        return {
            "rate": self.rate,
            "client_sample0": self.s0,
            "samples": length,
            "seconds": round(length / self.rate, 3),
            "voiced_seconds": self.voiced_seconds,
            "voice_activity": self.voice.meta() if self.voice is not None else None,
            "chunks": self.chunks,
            "duplicates": self.duplicates,
            "samples_received": self.samples_received,
            "clock_ms_per_sample": self.fit.slope(),
            "clock_skew_ppm": round((self.fit.slope() / self.fit.nominal_ms_per_sample - 1) * 1e6, 1),
        }


class GameAudio:
    """ALE's sound, 512 unsigned 8-bit samples a frame, streamed as 8-bit WAV and finished as DC-free 16-bit."""

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / fmt.GAME_AUDIO
        self.wav = WavWriter(self.path, GAME_AUDIO_RATE, sample_bytes=1)
        self._buf: list[bytes] = []

    def append(self, samples: np.ndarray) -> None:
        self._buf.append(samples.tobytes())

    def flush(self) -> None:
        if self._buf:
            self.wav.append(b"".join(self._buf))
            self._buf.clear()
        self.wav.flush()

    def close(self) -> dict:
        self.flush()
        self.wav.close()
        return finish_game_audio(self.path)

    def abandon(self) -> None:
        """Close the file without another write (after a write error); it stays 8-bit."""
        self._buf.clear()
        self.wav.abandon()


#: The moving average's length (about 33 ms at 30720 Hz: a linear-phase high-pass at about 30 Hz).
DC_WINDOW = 1024


def finish_game_audio(path: Path, block: int = 1 << 20) -> dict:
    """Rewrite an 8-bit game_audio.wav as 16-bit with the DC offset removed (idempotent on 16-bit files).

    Block by block, in exact integer sums: the same samples as subtracting from the whole signal its centred moving
    average over DC_WINDOW samples, edge-padded (tests/test_speech.py holds that formula): a 10-minute
    episode is 18 million samples, which as whole float64 arrays took 800 MB and two seconds of the game process."""
    path = Path(path)
    with open(path, "rb") as f:
        _, rate, bits, size = parse_header(f.read(HEADER_BYTES))
    if bits == 16:
        return {"rate": rate, "samples": size // 2}
    raw = np.fromfile(path, dtype=np.uint8, count=size, offset=HEADER_BYTES)
    n, window = raw.size, DC_WINDOW
    pad = window // 2
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(wav_header(rate, 1, 2, n * 2))
        for start in range(0, n, block):
            m = min(block, n - start)
            # the edge-padded signal around this block: padded[j] = x[clip(j - pad, 0, n - 1)]
            idx = np.clip(np.arange(start - pad, start + m + window - 1 - pad), 0, n - 1)
            seg = (raw[idx].astype(np.int64) - 128) * 256
            c = np.concatenate(([0], np.cumsum(seg)))
            mean = (c[window : window + m] - c[:m]) / window
            y = seg[pad : pad + m] - mean
            out.write(np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes())
    tmp.replace(path)
    return {"rate": rate, "samples": int(n)}
