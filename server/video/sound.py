"""The soundtrack of a video: speech.wav laid on the 60 fps timeline in segments, game_audio.wav, mixed at 48 kHz."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core import format as fmt
from ..core.alignment import FPS, interp_samples, speech_segments
from ..core.emulator import GAME_AUDIO_RATE
from ..core.reader import Frames, read_wav
from ..core.wav import wav_header
from ..errors import VideoExportError
from ..store import Store

AUDIO_RATE = 48000


@dataclass
class SoundSources:
    """The trajectory's two sound files (either may be absent; int16 samples) and how speech maps onto frames."""

    frames: int
    speech_rate: int | None = None
    speech: np.ndarray | None = None
    segments: list[tuple[int, float]] | None = None
    game_rate: int = GAME_AUDIO_RATE
    game: np.ndarray | None = None


def load_sound(store: Store, traj_id: str, frames: Frames) -> SoundSources:
    """A trajectory's sound files and the speech segments of its frames; VideoExportError for a bad WAV."""
    src = SoundSources(frames=len(frames))
    try:
        speech = read_wav(store, traj_id, fmt.SPEECH)
        game = read_wav(store, traj_id, fmt.GAME_AUDIO)
    except ValueError as e:
        raise VideoExportError(str(e)) from None
    if speech is not None:
        src.speech_rate, src.speech = speech
        src.segments = speech_segments(frames["speech_sample"], speech[0])
    if game is not None:
        if game[0] != GAME_AUDIO_RATE:
            raise VideoExportError(f"{traj_id}/{fmt.GAME_AUDIO} is {game[0]} Hz, expected {GAME_AUDIO_RATE}")
        src.game_rate, src.game = game
    return src


def audio_blocks(
    src: SoundSources,
    stereo: bool = False,
    speech_gain: float = 1.0,
    game_gain: float = 1.0,
    rate: int = AUDIO_RATE,
    block_frames: int = 3600,
) -> Iterator[np.ndarray]:
    """The soundtrack in blocks of int16: mono mix (k,) or stereo (k, 2) speech left, game right; exactly frames/60 s
    in all."""
    if rate % FPS:
        raise ValueError(f"the output rate must be a multiple of {FPS}")
    per_frame = rate // FPS
    if src.segments:
        seg_frames = np.array([s[0] for s in src.segments], dtype=np.int64)
        seg_src = np.array([s[1] for s in src.segments], dtype=np.float64)
    for f0 in range(0, src.frames, block_frames):
        k = np.arange(f0 * per_frame, min(src.frames, f0 + block_frames) * per_frame, dtype=np.int64)
        speech = np.zeros(k.size, dtype=np.float32)
        game = np.zeros(k.size, dtype=np.float32)
        if src.speech is not None and src.speech_rate and src.segments:
            j = np.searchsorted(seg_frames, k // per_frame, side="right") - 1
            pos = seg_src[j] + (k - seg_frames[j] * per_frame) * (src.speech_rate / rate)
            speech = interp_samples(src.speech, pos) * np.float32(speech_gain)
        if src.game is not None:
            game = interp_samples(src.game, k * (src.game_rate / rate)) * np.float32(game_gain)
        block = np.stack([speech, game], axis=1) if stereo else speech + game
        yield np.clip(np.round(block), -32768, 32767).astype("<i2")


def render_audio(
    src: SoundSources, stereo: bool = False, speech_gain: float = 1.0, game_gain: float = 1.0, rate: int = AUDIO_RATE
) -> np.ndarray:
    """The whole soundtrack as one int16 array (see audio_blocks)."""
    blocks = list(audio_blocks(src, stereo, speech_gain, game_gain, rate))
    if not blocks:
        return np.zeros((0, 2) if stereo else 0, dtype="<i2")
    return np.concatenate(blocks)


def write_audio_wav(
    path: Path,
    src: SoundSources,
    stereo: bool = False,
    speech_gain: float = 1.0,
    game_gain: float = 1.0,
    rate: int = AUDIO_RATE,
) -> int:
    """Write the soundtrack as a PCM16 WAV block by block (memory stays at one block); returns its sample count."""
    channels = 2 if stereo else 1
    samples = src.frames * (rate // FPS)
    with open(path, "wb") as f:
        f.write(wav_header(rate, channels, 2, samples * channels * 2))
        for block in audio_blocks(src, stereo, speech_gain, game_gain, rate):
            f.write(block.tobytes())
    return samples
