"""Signal processing for speech annotation in numpy: resampling, and per-frame energy and pitch.

Pitch is the classic normalised autocorrelation method: in a 40 ms window around the frame, the lag between 2.5
and 16.7 ms (60-400 Hz) where the signal best matches itself; reported only where that match is strong (periodic,
voiced sound) and the window is not silent.
"""

from __future__ import annotations

import numpy as np

SILENCE_DB = -100.0  # energy of digital silence, in dB relative to full scale


def _lowpass_kernel(cutoff: float, taps: int) -> np.ndarray:
    """A windowed-sinc low-pass FIR; `cutoff` as a fraction of the sample rate (0..0.5)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.blackman(taps)
    return h / h.sum()


def _fft_filter(x: np.ndarray, h: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """x convolved with h ('same' length, centred), by overlap-add in blocks (memory stays small)."""
    m = h.size
    nfft = 1 << int(np.ceil(np.log2(block + m - 1)))
    hf = np.fft.rfft(h, nfft)
    y = np.zeros(x.size + m - 1)
    for i in range(0, x.size, block):
        seg = x[i : i + block]
        out = np.fft.irfft(np.fft.rfft(seg, nfft) * hf, nfft)[: seg.size + m - 1]
        y[i : i + out.size] += out
    d = (m - 1) // 2
    return y[d : d + x.size]


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Band-limit then interpolate: float64 samples at `rate_out` (sample 0 stays at time 0)."""
    x = np.asarray(x, dtype=np.float64)
    if rate_in == rate_out or x.size == 0:
        return x
    cutoff = 0.45 * min(rate_in, rate_out) / rate_in
    y = (
        _fft_filter(x, _lowpass_kernel(cutoff, 8 * (rate_in // min(rate_in, rate_out)) * 16 + 1))
        if rate_out < rate_in
        else x
    )
    n_out = int(np.floor((x.size - 1) * rate_out / rate_in)) + 1
    pos = np.arange(n_out) * (rate_in / rate_out)
    return np.interp(pos, np.arange(x.size), y)


def frame_bounds(speech_sample: np.ndarray, rate: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's samples in speech.wav: from its paint to the next frame's (the last frame: 1/60 s)."""
    start = np.clip(speech_sample, 0, total)
    end = np.empty_like(start)
    end[:-1] = start[1:]
    end[-1] = min(total, start[-1] + rate // 60)
    end = np.maximum(end, start)
    return start, end


def energy_db(x: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Mean power of x[start:end] per frame in dB full scale (int16 full scale = 0 dB); SILENCE_DB when empty."""
    p = np.concatenate(([0.0], np.cumsum((np.asarray(x, np.float64) / 32768.0) ** 2)))
    n = end - start
    power = np.where(n > 0, (p[end] - p[start]) / np.maximum(n, 1), 0.0)
    with np.errstate(divide="ignore"):
        db = 10 * np.log10(power)
    return np.maximum(db, SILENCE_DB).astype(np.float32)


def pitch(
    x: np.ndarray,
    rate: int,
    centres: np.ndarray,
    fmin: float = 60.0,
    fmax: float = 400.0,
    window_s: float = 0.04,
    threshold: float = 0.6,
    min_db: float = -60.0,
) -> np.ndarray:
    """F0 in Hz at each centre sample by normalised autocorrelation; NaN where the sound is not periodic."""
    x = np.asarray(x, dtype=np.float64) / 32768.0
    w = int(window_s * rate)
    lag_min, lag_max = int(rate / fmax), int(np.ceil(rate / fmin))
    seg_len = w + lag_max + 1
    out = np.full(centres.size, np.nan, dtype=np.float32)
    pad = np.concatenate((np.zeros(w), x, np.zeros(seg_len)))
    nfft = 1 << int(np.ceil(np.log2(seg_len + w)))
    for b in range(0, centres.size, 2048):
        c = centres[b : b + 2048].astype(np.int64)
        idx = (c - w // 2 + w)[:, None] + np.arange(seg_len)[None, :]
        seg = pad[np.clip(idx, 0, pad.size - 1)]
        head = seg[:, :w]
        e0 = (head**2).sum(axis=1)
        loud = 10 * np.log10(np.maximum(e0 / w, 1e-12)) > min_db
        if not loud.any():
            continue
        seg, head, e0 = seg[loud], head[loud], e0[loud]
        # r[k] = sum_n head[n] * seg[n + k], for all lags at once
        r = np.fft.irfft(np.conj(np.fft.rfft(head, nfft)) * np.fft.rfft(seg, nfft), nfft)[:, : lag_max + 1]
        sq = np.concatenate((np.zeros((seg.shape[0], 1)), np.cumsum(seg**2, axis=1)), axis=1)
        ek = sq[:, w : w + lag_max + 1] - sq[:, : lag_max + 1]  # energy of seg[k : k + w]
        nr = r / np.sqrt(np.maximum(e0[:, None] * ek, 1e-20))
        nr[:, :lag_min] = -1
        best = np.argmax(nr, axis=1)
        peak = nr[np.arange(nr.shape[0]), best]
        # prefer the shortest lag whose match is nearly as good (avoids picking a multiple of the period)
        good = (nr >= 0.9 * peak[:, None]) & (nr > threshold)
        local = np.zeros_like(good)
        local[:, 1:-1] = (nr[:, 1:-1] >= nr[:, :-2]) & (nr[:, 1:-1] >= nr[:, 2:])
        cand = good & local
        first = np.where(cand.any(axis=1), np.argmax(cand, axis=1), best)
        rows = np.arange(nr.shape[0])
        k = np.clip(first, 1, lag_max - 1)
        y0, y1, y2 = nr[rows, k - 1], nr[rows, k], nr[rows, k + 1]
        den = y0 - 2 * y1 + y2
        shift = np.where(np.abs(den) > 1e-12, 0.5 * (y0 - y2) / den, 0.0)
        f0 = rate / (k + np.clip(shift, -0.5, 0.5))
        f0[nr[rows, first] <= threshold] = np.nan
        out_idx = np.arange(b, b + c.size)[loud]
        out[out_idx] = f0
    return out
