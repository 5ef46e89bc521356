"""Where the picture and the speech meet: paint times, speech.wav's sample of each frame, speech on the timeline.

Paint times. The client acks each frame with the client clock (performance.now) when it was painted; frames whose
ack never came get their time interpolated between the acked frames around them (and extrapolated at 60 Hz past the
first and last ack). frames.csv's `display_ms` is that time from frame 0's paint.

Speech. Each microphone chunk carries the client's index of its first sample and the client clock when that sample
was captured. A least-squares line through all (sample index, client ms) pairs (`ClockFit`) maps any client time to a
sample index, so an audio clock that runs fast or slow against the paint clock, and jitter in single timestamps, do
not move the mapping. speech.wav's sample 0 is the sample captured when frame 0 was painted, and frames.csv's
`speech_sample` of frame f is the sample captured when f was painted.

Playback. The video export and the replay page lay speech.wav on the 60 fps timeline in segments at 1x
(`speech_segments`), and the dataset finds the frame on screen when a sample was spoken (`frame_of_sample`).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

#: A client time or many (float or ndarray): the mapping is the same arithmetic for both.
T = TypeVar("T", float, np.ndarray)

FPS = 60
FRAME_MS = 1000.0 / FPS


class ClockFit:
    """Least-squares line client_ms = a + b * sample, accumulated in O(1) per point."""

    def __init__(self, nominal_rate: int) -> None:
        self.nominal_ms_per_sample = 1000.0 / nominal_rate
        self.n = 0
        self.s_ref = 0.0
        self.t_ref = 0.0
        self.sx = self.sy = self.sxx = self.sxy = 0.0
        self.x_min = math.inf
        self.x_max = -math.inf

    def add(self, sample: float, t_ms: float) -> None:
        if self.n == 0:
            self.s_ref, self.t_ref = sample, t_ms
        x, y = sample - self.s_ref, t_ms - self.t_ref
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y
        self.x_min = min(self.x_min, x)
        self.x_max = max(self.x_max, x)

    def fitted(self) -> bool:
        return self.n >= 3 and (self.x_max - self.x_min) * self.nominal_ms_per_sample >= 1000

    def slope(self) -> float:
        """ms per sample; the nominal value until the points span a second of audio."""
        if not self.fitted():
            return self.nominal_ms_per_sample
        den = self.n * self.sxx - self.sx * self.sx
        if den <= 0:
            return self.nominal_ms_per_sample
        b = (self.n * self.sxy - self.sx * self.sy) / den
        # a fit more than 1% off nominal is not a clock difference but bad timestamps
        if not 0.99 < b / self.nominal_ms_per_sample < 1.01:
            return self.nominal_ms_per_sample
        return b

    def sample_at(self, t_ms: T) -> T:
        b = self.slope()
        a = (self.sy - b * self.sx) / self.n
        return self.s_ref + (t_ms - self.t_ref - a) / b


def fill_linear(values: np.ndarray, per_frame: float) -> np.ndarray | None:
    """A per-frame series with its gaps (NaN) interpolated and its ends extrapolated at `per_frame` a frame; None if
    no frame has a value."""
    known = ~np.isnan(values)
    if not known.any():
        return None
    f = np.arange(values.size, dtype=np.float64)
    kf, kv = f[known], values[known]
    out = np.interp(f, kf, kv)
    before, after = f < kf[0], f > kf[-1]
    out[before] = kv[0] - (kf[0] - f[before]) * per_frame
    out[after] = kv[-1] + (f[after] - kf[-1]) * per_frame
    return out


def paint_times(paint_ms: np.ndarray) -> tuple[np.ndarray, int]:
    """Client paint ms of every frame (NaN where no ack came), gaps interpolated and ends extrapolated at 60 Hz; and
    how many were filled."""
    missing = int(np.isnan(paint_ms).sum())
    filled = fill_linear(paint_ms, FRAME_MS)
    return (paint_ms.copy() if filled is None else filled), missing


def speech_end_sample(last_sample: int, rate: int) -> int:
    """Where speech.wav ends: one frame's worth of samples after the last frame's."""
    return int(last_sample) + round(rate * FRAME_MS / 1000.0)


def speech_segments(
    speech_sample: np.ndarray, rate: float, tolerance_frames: float = 1.0, persist: int = 15
) -> list[tuple[int, float]]:
    """Where speech.wav is laid on the 60 fps timeline: [(first frame, speech sample at that frame), ...].

    Segment j plays speech at 1x from its sample, starting at its frame, until the next segment's frame. Each frame
    has an offset: its logged speech_sample minus 1x time. A new segment starts at frame f when f's offset is more
    than `tolerance_frames` from the current segment's, and the median offset of the `persist` frames from f on is
    too, and agrees with f's (a pause, or the display falling behind for good). Single paints a refresh or three late,
    and stalls shorter than half of `persist`, do not cut the speech. So the speech stays within about a frame of the
    picture, and plays unbroken in between. Without any logged speech_sample, it plays at 1x from sample 0.
    """
    ss = fill_linear(np.asarray(speech_sample, dtype=np.float64), rate / FPS)
    if ss is None:
        return [(0, 0.0)]
    spf = rate / FPS
    tol = tolerance_frames * spf
    n = ss.size
    offset = ss - np.arange(n) * spf  # each frame's speech sample of frame 0 on its own 1x line
    origin = float(np.median(offset[:persist]))
    segments = [(0, origin)]
    f = 1
    block = 4096
    while f < n:
        off = np.abs(offset[f : f + block] - origin) > tol
        if not off.any():
            f += block
            continue
        f += int(np.argmax(off))
        ahead = float(np.median(offset[f : f + persist]))
        if abs(ahead - origin) > tol and abs(offset[f] - ahead) <= tol:
            origin = ahead
            segments.append((f, origin + f * spf))
        f += 1
    return segments


def frame_of_sample(speech_sample: np.ndarray, sample: int | np.ndarray) -> int | np.ndarray:
    """The frame on screen when speech.wav's `sample` was captured (0 before frame 0's sample), from frames.csv's
    speech_sample column (ascending)."""
    f = np.searchsorted(speech_sample, sample, side="right") - 1
    return np.maximum(f, 0) if isinstance(f, np.ndarray) else max(int(f), 0)


def interp_samples(src: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of `src` at fractional positions (touching only what they need); silence outside it."""
    out = np.zeros(pos.size, dtype=np.float32)
    if src.size < 2:
        return out
    i = np.floor(pos).astype(np.int64)
    ok = (i >= 0) & (i < src.size - 1)
    i = i[ok]
    frac = (pos[ok] - i).astype(np.float32)
    a = src[i].astype(np.float32)
    out[ok] = a + (src[i + 1].astype(np.float32) - a) * frac
    return out
