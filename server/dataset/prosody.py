"""Prosody for speech annotation with Praat (praat-parselmouth), resampling with soxr.

Per frame (speech_frames.csv), sampled at the centre of the frame's samples: F0 (Praat's autocorrelation pitch,
`To Pitch (ac)`), intensity (`To Intensity`, dB SPL as Praat computes it: re 2e-5 Pa with samples taken as Pa) and
harmonics-to-noise ratio (`To Harmonicity (cc)`). Per word (speech_words.csv): duration, mean and maximum F0, mean
intensity (energy-averaged, Praat's default), local jitter and local shimmer (Praat's voice report defaults, on a
cross-correlation point process of the glottal pulses). Energy in dB full scale per frame stays a plain mean of
squares (no toolkit needed). The Praat parameters are Praat's own defaults for speech (pitch 75-600 Hz) unless noted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

SILENCE_DB = -100.0  # energy of digital silence, in dB relative to full scale
INSTALL_HINT = "prosody needs praat-parselmouth and soxr: pip install -r requirements-trex.txt"


@dataclass(frozen=True)
class ProsodyOptions:
    """Praat's analysis parameters (its defaults for speech, except the time step: 10 ms)."""

    pitch_floor_hz: float = 75.0
    pitch_ceiling_hz: float = 600.0
    time_step_s: float = 0.01
    hnr_silence_threshold: float = 0.1
    jitter_period_floor_s: float = 0.0001
    jitter_period_ceiling_s: float = 0.02
    jitter_max_period_factor: float = 1.3
    shimmer_max_amplitude_factor: float = 1.6


def toolkit_versions() -> dict:
    """Versions of the libraries that computed the prosody (for speech_annotations.json)."""
    import parselmouth
    import soxr

    return {"praat-parselmouth": parselmouth.__version__, "praat": parselmouth.PRAAT_VERSION, "soxr": soxr.__version__}


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """float64 samples at `rate_out` by soxr (high quality; its delay is compensated, so sample 0 stays at 0)."""
    x = np.asarray(x, dtype=np.float64)
    if rate_in == rate_out or x.size == 0:
        return x
    try:
        import soxr
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return soxr.resample(x, rate_in, rate_out, quality="HQ")


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


@dataclass(frozen=True)
class WordProsody:
    duration_s: float
    f0_mean_hz: float  # NaN when the word has no voiced frame
    f0_max_hz: float
    intensity_db: float
    jitter: float  # local, a fraction; NaN with too few glottal pulses
    shimmer: float  # local, a fraction


class Prosody:
    """Praat's analyses of one recording (int16 or float samples at `rate`), computed once and sampled at will."""

    def __init__(self, x: np.ndarray, rate: int, opts: ProsodyOptions = ProsodyOptions()) -> None:
        try:
            import parselmouth
            from parselmouth.praat import call
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        self.opts = opts
        self._call = call
        o = opts
        # samples scaled to [-1, 1): Praat's intensity is then dB re 2e-5 "Pa" of a full-scale signal
        self.sound = parselmouth.Sound(np.asarray(x, np.float64) / 32768.0, sampling_frequency=float(rate))
        self.duration = self.sound.get_total_duration()
        self.pitch = self.sound.to_pitch_ac(
            time_step=o.time_step_s, pitch_floor=o.pitch_floor_hz, pitch_ceiling=o.pitch_ceiling_hz
        )
        self.intensity = self.sound.to_intensity(minimum_pitch=o.pitch_floor_hz, time_step=o.time_step_s)
        self.harmonicity = self.sound.to_harmonicity_cc(
            time_step=o.time_step_s, minimum_pitch=o.pitch_floor_hz, silence_threshold=o.hnr_silence_threshold
        )
        self.pulses = call([self.sound, self.pitch], "To PointProcess (cc)")
        self._f0_t = self.pitch.xs()
        self._f0 = self.pitch.selected_array["frequency"]

    @staticmethod
    def _nearest(xs: np.ndarray, values: np.ndarray, times: np.ndarray) -> np.ndarray:
        if xs.size == 0:
            return np.full(times.size, np.nan)
        i = np.clip(np.rint((times - xs[0]) / (xs[1] - xs[0] if xs.size > 1 else 1.0)).astype(np.int64), 0, xs.size - 1)
        out = values[i].astype(np.float64)
        out[(times < xs[0] - 0.02) | (times > xs[-1] + 0.02)] = np.nan  # outside the analysed span
        return out

    def at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(F0 Hz, intensity dB, HNR dB) at each time in seconds; NaN where unvoiced (F0, HNR) or not analysed."""
        times = np.asarray(times, np.float64)
        f0 = self._nearest(self._f0_t, self._f0, times)
        f0[f0 <= 0] = np.nan
        inten = self._nearest(self.intensity.xs(), self.intensity.values[0], times)
        hnr = self._nearest(self.harmonicity.xs(), self.harmonicity.values[0], times)
        hnr[hnr <= -199] = np.nan  # Praat's "undefined" (silence or no periodicity)
        return f0.astype(np.float32), inten.astype(np.float32), hnr.astype(np.float32)

    def word(self, start_s: float, end_s: float) -> WordProsody:
        """Praat's per-interval measures over [start_s, end_s]."""
        call, o = self._call, self.opts
        t0, t1 = max(0.0, start_s), min(self.duration, end_s)

        def value(*args) -> float:
            v = call(*args)
            return float(v) if v is not None and math.isfinite(v) else math.nan

        f0_mean = value(self.pitch, "Get mean", t0, t1, "Hertz")
        f0_max = value(self.pitch, "Get maximum", t0, t1, "Hertz", "Parabolic")
        inten = value(self.intensity, "Get mean", t0, t1, "energy")
        shape = (o.jitter_period_floor_s, o.jitter_period_ceiling_s, o.jitter_max_period_factor)
        jitter = value(self.pulses, "Get jitter (local)", t0, t1, *shape)
        shimmer = value(
            [self.sound, self.pulses], "Get shimmer (local)", t0, t1, *shape, o.shimmer_max_amplitude_factor
        )
        return WordProsody(round(end_s - start_s, 3), f0_mean, f0_max, inten, jitter, shimmer)


def options_json(opts: ProsodyOptions) -> dict:
    return asdict(opts)
