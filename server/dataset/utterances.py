"""From a speech track to words: voice activity, utterances, windows, and the engine's transcript aligned to the
audio (steps 2-4 of server.dataset.annotate, which says why each is done this way)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .align import Aligned, Aligner, shift, unaligned
from .asr import RATE, Engine, Heard, _pocketsphinx

if TYPE_CHECKING:
    from .annotate import AnnotateOptions

ASR_RATE = RATE


VADS = ("silero", "webrtc")
VAD_FRAME = ASR_RATE // 100  # 10 ms
SILERO_HINT = (
    "--vad silero needs faster-whisper (Silero VAD ships inside it): pip install -r requirements-trex.txt "
    "(or pip install faster-whisper), or choose --vad webrtc"
)


def vad_flags(pcm16k: np.ndarray, mode: int = 2, vad: str = "silero") -> tuple[np.ndarray, int]:
    """Speech or not for every 10 ms of 16 kHz int16 audio; and the frame length in samples.

    `silero`: Silero VAD (a neural detector, inside faster-whisper), which keeps the game's sound and steady noise
    out of the utterances: on scripts/bench_speech.py's track at 10 dB it marked 45% of the audio where 30% was
    speech, and the WebRTC-style detector in pocketsphinx (`webrtc`, aggressiveness `mode`) 55%, its utterances
    then covering 114 of the 122 s (docs/benchmarks.md, "Speech annotation")."""
    if vad == "silero":
        return _silero_flags(pcm16k), VAD_FRAME
    if vad != "webrtc":
        raise ValueError(f"vad must be one of {VADS}, not {vad!r}")
    ps = _pocketsphinx()
    detector = ps.Vad(mode=mode, sample_rate=ASR_RATE, frame_length=0.01)
    n = detector.frame_bytes // 2
    data = pcm16k.astype("<i2")
    flags = np.zeros(data.size // n, dtype=bool)
    for i in range(flags.size):
        flags[i] = detector.is_speech(data[i * n : (i + 1) * n].tobytes())
    return flags, n


#: Silero's settings: its default threshold; short pauses and pads, as the utterances add their own (`pad_s`)
SILERO_OPTIONS = {"threshold": 0.5, "min_silence_duration_ms": 100, "speech_pad_ms": 30}


def require_silero():
    """faster-whisper's VAD module (ImportError with an install hint without it)."""
    try:
        from faster_whisper import vad
    except ImportError as e:
        raise ImportError(SILERO_HINT) from e
    return vad


def _silero_flags(pcm16k: np.ndarray) -> np.ndarray:
    vad = require_silero()
    audio = np.asarray(pcm16k, np.float32) / 32768.0
    flags = np.zeros(audio.size // VAD_FRAME, dtype=bool)
    if audio.size:
        for span in vad.get_speech_timestamps(audio, vad.VadOptions(**SILERO_OPTIONS), sampling_rate=ASR_RATE):
            flags[span["start"] // VAD_FRAME : -(-span["end"] // VAD_FRAME)] = True
    return flags


def _join(runs: list[tuple[int, int]], gap: int) -> list[list[int]]:
    joined: list[list[int]] = []
    for a, b in runs:
        if joined and a - joined[-1][1] < gap:
            joined[-1][1] = b
        else:
            joined.append([a, b])
    return joined


def segments_from_flags(flags: np.ndarray, frame_len: int, opts: AnnotateOptions) -> list[tuple[int, int]]:
    """[start, end) sample ranges of speech: runs joined across short gaps, clicks dropped."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], flags.astype(np.int8), [0]))))
    runs = [(int(a) * frame_len, int(b) * frame_len) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    joined = _join(runs, int(opts.join_gap_s * ASR_RATE))
    return [(a, b) for a, b in joined if b - a >= opts.min_speech_s * ASR_RATE]


def utterances(segments: list[tuple[int, int]], n: int, opts: AnnotateOptions) -> list[tuple[int, int]]:
    """Segments joined across gaps under `unit_gap_s`, padded by `pad_s` (not past the neighbours' midpoints)."""
    units = _join(segments, int(opts.unit_gap_s * ASR_RATE))
    pad = int(opts.pad_s * ASR_RATE)
    out = []
    for i, (a, b) in enumerate(units):
        lo = max(0, a - pad, (units[i - 1][1] + a) // 2 if i else 0)
        hi = min(n, b + pad, (b + units[i + 1][0]) // 2 if i + 1 < len(units) else n)
        out.append((lo, hi))
    return out


def split_long(x16: np.ndarray, units: list[tuple[int, int]], limit_s: float) -> list[tuple[int, int]]:
    """Utterances longer than `limit_s` cut into pieces no longer than that, each cut at the quietest 100 ms in the
    second half of the piece (noise keeps a VAD busy, and one utterance can then span half a minute)."""
    limit = int(limit_s * ASR_RATE)
    hop = ASR_RATE // 100
    out = []
    for a, b in units:
        while b - a > limit:
            lo, hi = a + limit // 2, a + limit
            frames = x16[lo:hi].astype(np.float64)[: (hi - lo) // hop * hop].reshape(-1, hop)
            energy = np.convolve((frames**2).mean(axis=1), np.ones(10), "same")  # 100 ms
            cut = lo + int(np.argmin(energy)) * hop
            out.append((a, cut))
            a = cut
        out.append((a, b))
    return out


def windows(units: list[tuple[int, int]], limit_s: float) -> list[tuple[int, int]]:
    """Consecutive utterances packed into windows no longer than `limit_s` (a longer utterance is its own)."""
    out: list[list[int]] = []
    for a, b in units:
        if out and b - out[-1][0] <= limit_s * ASR_RATE:
            out[-1][1] = b
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _by_unit(heard: list[Heard], units: list[tuple[int, int]]) -> list[list[Heard]]:
    """Words (seconds into the track) given to the utterance their middle falls in, in that utterance's seconds."""
    per_unit: list[list[Heard]] = [[] for _ in units]
    centres = np.array([(a + b) / 2 / ASR_RATE for a, b in units])
    for h in heard:
        mid = (h.start_s + h.end_s) / 2
        inside = [i for i, (a, b) in enumerate(units) if a / ASR_RATE <= mid < b / ASR_RATE]
        i = inside[0] if inside else int(np.argmin(np.abs(centres - mid)))  # whisper's times can be 0.5 s off
        per_unit[i].append(
            Heard(h.word, h.start_s - units[i][0] / ASR_RATE, h.end_s - units[i][0] / ASR_RATE, h.confidence)
        )
    return per_unit


def _aligned(x16: np.ndarray, units: list[tuple[int, int]], per_unit: list[list[Heard]], aligner: Aligner):
    words: list[Aligned] = []
    for (a, b), heard_here in zip(units, per_unit, strict=True):
        if not heard_here:
            continue
        got = aligner.align(x16[a:b], heard_here)
        words += shift(got, a / ASR_RATE) if got is not None else unaligned(heard_here, a / ASR_RATE)
    return words


def recognise(
    x16: np.ndarray, units: list[tuple[int, int]], engine: Engine, aligner: Aligner, opts: AnnotateOptions
) -> list[Aligned]:
    """Words said in each utterance (16 kHz sample ranges of x16), with aligned times in seconds."""
    if engine.name != "whisper":
        return _aligned(x16, units, [engine.transcribe(x16[a:b]) for a, b in units], aligner)
    units = split_long(x16, units, opts.window_s)
    words: list[Aligned] = []
    for a, b in windows(units, opts.window_s):
        heard = engine.transcribe(x16[a:b])
        # whisper's times can be off by more than the pause between two utterances: a word given to the neighbouring
        # utterance by them would be forced onto another word there. So the window's transcript is aligned to the
        # whole window first, those times say which utterance each word belongs to, and each utterance is aligned
        # on its own (its times are the closer ones)
        placed = aligner.align(x16[a:b], heard) if heard else None
        times = [(p.start_s, p.end_s) for p in placed] if placed is not None else [(h.start_s, h.end_s) for h in heard]
        track = [
            Heard(h.word, s + a / ASR_RATE, e + a / ASR_RATE, h.confidence)
            for h, (s, e) in zip(heard, times, strict=True)
        ]
        inside = [(c, d) for c, d in units if a <= c and d <= b]
        words += _aligned(x16, inside, _by_unit(track, inside), aligner)
    return words
