"""Shared pieces of the browser tests: Chromium's flags, a spoken WAV for the fake microphone, the microphone check,
and amplitude envelopes for comparing what the microphone heard with what the server recorded."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from benchmark.network import CHROMIUM, CHROMIUM_ARGS  # noqa: F401  (one list of flags: the benchmark's)

RATE = 48000
#: The client refuses a test recording whose peak or RMS is below these (client/app.js SILENT_PEAK, SILENT_RMS).
SILENT_PEAK, SILENT_RMS = 0.02, 0.002

#: Phrases and the silence after each (s). Uneven gaps make the envelope's best lag unambiguous.
PHRASES = [
    ("yes", 0.6),
    ("no", 1.1),
    ("this is a test of the microphone", 0.8),
    ("left", 1.4),
    ("right", 0.5),
    ("fire", 1.0),
    ("shoot the one on the left", 0.7),
    ("move right now", 1.3),
    ("wait", 0.9),
    ("up", 0.6),
]


def chromium_args(wav: Path | None = None, loop: bool = True) -> list[str]:
    """The base flags, plus a WAV as the fake microphone (looped unless `loop` is False)."""
    if wav is None:
        return list(CHROMIUM_ARGS)
    return [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}{'' if loop else '%noloop'}"]


def missing_speech_tools() -> str | None:
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            return f"needs {tool} to make a spoken WAV for the fake microphone"
    return None


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


def make_speech_wav(directory: Path, phrases=PHRASES, rate: int = RATE) -> Path:
    """espeak-ng speaks each phrase, sox makes it 48 kHz mono 16-bit and joins them with silence in between."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, (text, gap) in enumerate(phrases):
        raw = directory / f"phrase{i}.raw.wav"
        _run(["espeak-ng", "-s", "150", "-w", str(raw), text])
        part = directory / f"phrase{i}.wav"
        # normalise each phrase to -3 dBFS so every phrase is clearly audible, then append its pause
        _run(
            [
                "sox",
                str(raw),
                "-r",
                str(rate),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                str(part),
                "norm",
                "-3",
                "pad",
                "0",
                f"{gap}",
            ]
        )
        parts.append(str(part))
    out = directory / "speech.wav"
    _run(["sox", *parts, "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", str(out)])
    return out


def make_silence_wav(directory: Path, seconds: float = 10.0, rate: int = RATE) -> Path:
    out = Path(directory) / "silence.wav"
    _run(
        [
            "sox",
            "-n",
            "-r",
            str(rate),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(out),
            "trim",
            "0",
            f"{seconds}",
        ]
    )
    return out


def envelope(a: np.ndarray, rate: int, window_ms: float = 20.0) -> np.ndarray:
    """RMS of consecutive `window_ms` windows (as float, full scale 1)."""
    n = int(round(rate * window_ms / 1000.0))
    x = np.asarray(a, dtype=np.float64).reshape(-1) / 32768.0
    x = x[: x.size - x.size % n]
    return np.sqrt((x.reshape(-1, n) ** 2).mean(axis=1))


def best_lag_correlation(recorded: np.ndarray, source: np.ndarray, looped: bool = True) -> tuple[float, int]:
    """Pearson r of `recorded` against every equally long stretch of `source` (repeated when the microphone loops
    it); the best (r, lag in windows)."""
    src = np.concatenate([source] * (2 + len(recorded) // max(len(source), 1))) if looped else source
    n = len(recorded)
    if n < 2 or len(src) < n:
        return float("nan"), -1
    lags = len(source) if looped else len(src) - n + 1
    # sliding sums: Pearson r for every lag without a python loop over samples
    win = np.lib.stride_tricks.sliding_window_view(src, n)[:lags]
    r0 = recorded - recorded.mean()
    w0 = win - win.mean(axis=1, keepdims=True)
    den = np.sqrt((w0**2).sum(axis=1) * (r0**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (w0 @ r0) / den
    r = np.nan_to_num(r, nan=-1.0)
    best = int(np.argmax(r))
    return float(r[best]), best


def pass_mic_check(page, expect, timeout_ms: int = 15_000) -> dict:
    """Enable the microphone, record the 3-second test, continue to the game; returns window.__atari.micTestResult."""
    page.locator("#mic-enable").click()
    test = page.locator("#mic-test")
    expect(test).to_be_enabled(timeout=timeout_ms)
    test.click()
    page.wait_for_function("() => !!window.__atari.micTestResult", timeout=timeout_ms)
    result = page.evaluate("() => window.__atari.micTestResult")
    cont = page.locator("#mic-continue")
    status = page.locator("#mic-status").text_content()
    assert result["peak"] >= SILENT_PEAK and result["rms"] >= SILENT_RMS, (result, status)
    assert page.evaluate("() => window.__atari.micPassed") is True, (result, status)
    expect(cont).to_be_enabled(timeout=2_000)
    cont.click()
    expect(page.locator("#game")).to_be_visible(timeout=2_000)
    expect(page.locator("#miccheck")).to_be_hidden()
    return result
