"""Seconds of voice activity in the microphone audio, counted while it arrives (the study monitor's "speech s").

Seconds of audio say only that the microphone was on; a researcher watching a study wants to know who is talking.
Each accepted chunk is cut into 20 ms frames and WebRTC's voice activity detector (webrtcvad, the detector
pocketsphinx's annotation also uses) decides each. Frames quieter than -60 dBFS are silence without asking it: at
48 kHz a detector call costs about 28 us of CPU (140 us a 100 ms chunk, measured on this project's 2-core VM), and
a participant is silent most of the time.

It counts what arrived: a chunk lost on the way counts as silence, a duplicate once. It is a live figure, not the
annotation: `scripts/annotate_speech.py` marks speech on the aligned speech.wav (speech_segments.csv).
"""

from __future__ import annotations

import numpy as np
import webrtcvad

#: webrtcvad takes 10, 20 or 30 ms frames at these rates only; other rates are not counted (null in meta.json).
RATES = (8000, 16000, 32000, 48000)
FRAME_MS = 20
#: Aggressiveness 0 (loose) to 3 (strict); 2 is also the annotation's default (`--vad-mode`).
MODE = 2
#: Mean square of a 20 ms frame below which it is silence without asking the detector (-60 dBFS of full scale).
QUIET_MEAN_SQUARE = (32768 * 10 ** (-60 / 20)) ** 2


class VoiceActivity:
    """Counts voiced 20 ms frames of the PCM16 chunks it is given (all at one rate)."""

    def __init__(self, rate: int, mode: int = MODE) -> None:
        self.rate = rate
        self.mode = mode
        self.frame = rate * FRAME_MS // 1000
        self.enabled = rate in RATES
        self._vad = webrtcvad.Vad(mode) if self.enabled else None
        self.voiced_frames = 0
        self._rest = np.zeros(0, dtype="<i2")  # samples of a chunk that did not fill a whole frame

    def add(self, pcm: bytes) -> None:
        if self._vad is None:
            return
        x = np.frombuffer(pcm, dtype="<i2")
        if self._rest.size:
            x = np.concatenate([self._rest, x])
        whole = x.size // self.frame * self.frame
        self._rest = x[whole:].copy()
        if not whole:
            return
        frames = x[:whole].reshape(-1, self.frame)
        loud = np.flatnonzero(np.mean(np.square(frames, dtype=np.float32), axis=1) >= QUIET_MEAN_SQUARE)
        for i in loud:
            if self._vad.is_speech(frames[i].tobytes(), self.rate):
                self.voiced_frames += 1

    @property
    def seconds(self) -> float | None:
        return round(self.voiced_frames * FRAME_MS / 1000, 2) if self.enabled else None

    def meta(self) -> dict:
        """meta.json's `speech.voice_activity`."""
        return {"detector": "webrtcvad", "mode": self.mode, "frame_ms": FRAME_MS, "quiet_dbfs": -60}
