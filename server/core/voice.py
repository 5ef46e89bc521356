"""Seconds of voice activity in the microphone audio, counted while it arrives (the study monitor's "speech s").

Seconds of audio say only that the microphone was on; a researcher watching a study wants to know who is talking.
Each accepted chunk is resampled to 8 kHz (soxr, one stream per episode) and cut into 20 ms frames, and WebRTC's
voice activity detector (webrtcvad, the detector pocketsphinx's annotation also uses) decides each. Why 8 kHz: the
detector analyses 0-4 kHz whatever rate it is given, and its own path from 48 kHz cost about 140 us of CPU a 100 ms
chunk, three ALE steps; resampled by soxr first it is about one ALE step (scripts/bench_voice.py, docs/benchmarks.md).

It counts what arrived: a chunk lost on the way counts as silence, a duplicate once. It is a live figure, not the
annotation: `scripts/annotate_speech.py` marks speech on the aligned speech.wav (speech_segments.csv).
"""

from __future__ import annotations

import numpy as np
import soxr
import webrtcvad

#: The detector's rate: it takes 8, 16, 32 or 48 kHz, and analyses 0-4 kHz at every one of them.
VAD_RATE = 8000
FRAME_MS = 20
#: Aggressiveness 0 (loose) to 3 (strict); 2 is also the annotation's default (`--vad-mode`).
MODE = 2
#: A 20 ms frame quieter than -60 dBFS is silence without asking the detector (which hears a quiet room's hiss as
#: voice now and then at 8 kHz): the threshold on the frame's sum of squared samples.
QUIET_SUM_SQUARES = VAD_RATE * FRAME_MS // 1000 * (32768 * 10 ** (-60 / 20)) ** 2
#: Microphone rates it counts (the browser sends 16 or 48 kHz); null in meta.json at any other.
MIN_RATE, MAX_RATE = 8000, 96000


class VoiceActivity:
    """Counts voiced 20 ms frames of the PCM16 chunks it is given (all at one rate)."""

    def __init__(self, rate: int, mode: int = MODE) -> None:
        self.rate = rate
        self.mode = mode
        self.frame = VAD_RATE * FRAME_MS // 1000
        self.enabled = MIN_RATE <= rate <= MAX_RATE
        self._vad = webrtcvad.Vad(mode)
        self._resample = (
            soxr.ResampleStream(rate, VAD_RATE, 1, dtype="int16", quality="LQ") if rate != VAD_RATE else None
        )
        self.voiced_frames = 0
        self._rest = np.zeros(0, dtype=np.int16)  # 8 kHz samples that did not fill a whole frame yet

    def add(self, pcm: bytes) -> None:
        if not self.enabled:
            return
        x = np.frombuffer(pcm, dtype="<i2")
        if self._resample is not None:
            x = self._resample.resample_chunk(x)
        if self._rest.size:
            x = np.concatenate([self._rest, x])
        whole = x.size // self.frame * self.frame
        self._rest = x[whole:].copy()
        frames = x[:whole].reshape(-1, self.frame)
        f = frames.astype(np.float32)
        loud = np.einsum("ij,ij->i", f, f) >= QUIET_SUM_SQUARES
        b, n = frames.tobytes(), 2 * self.frame
        for i in np.flatnonzero(loud).tolist():
            if self._vad.is_speech(b[i * n : (i + 1) * n], VAD_RATE):
                self.voiced_frames += 1

    @property
    def seconds(self) -> float | None:
        return round(self.voiced_frames * FRAME_MS / 1000, 2) if self.enabled else None

    def meta(self) -> dict:
        """meta.json's `speech.voice_activity`."""
        return {
            "detector": "webrtcvad",
            "mode": self.mode,
            "rate": VAD_RATE,
            "resampler": "soxr LQ",
            "frame_ms": FRAME_MS,
            "quiet_dbfs": -60,
        }
