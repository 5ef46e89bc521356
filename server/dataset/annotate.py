"""Offline speech annotation: voice activity, words with times, and per-frame prosody, aligned to frames.

Runs on the researcher's machine with pocketsphinx (its wheel ships a US English model; no cloud, no download):

1. speech.wav is band-limited and resampled to 16 kHz (what the acoustic model expects);
2. pocketsphinx's voice activity detector marks every 10 ms as speech or not; runs of speech closer than 0.3 s are
   joined into segments (speech_segments.csv);
3. each segment, padded by 0.2 s, is decoded as one utterance: with the English language model (every word), or,
   in keyword mode, with a grammar that allows only the keywords (`("yes" | "no")*`: a study that asks for yes/no
   feedback). Word times come from the decoder's 10 ms frames (speech_words.csv);
4. per frame: voice activity, energy and pitch (speech_frames.csv; see prosody.py).

A word's frame is the frame on screen when its first (last) sample was captured, found through frames.csv's
speech_sample column; start_s and end_s are seconds into speech.wav. The files are written into the store next to
the recording (the recorder's own files are not touched), with speech_annotations.json saying how they were made.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass

import numpy as np

from ..core import format as fmt
from ..core.files import utc_now
from ..core.reader import read_meta
from ..store import Store
from . import prosody, schema
from .trajectory import Word, load

ASR_RATE = 16000
ASR_FRAME = ASR_RATE // 100  # pocketsphinx reports times in 10 ms frames
INSTALL_HINT = (
    "speech annotation needs pocketsphinx: pip install -r requirements-trex.txt (or pip install pocketsphinx)"
)


@dataclass(frozen=True)
class AnnotateOptions:
    """How to annotate."""

    keywords: tuple[str, ...] = ()  # empty: every word (language model); else only these words (grammar)
    vad_mode: int = 2  # pocketsphinx VAD aggressiveness, 0 (loose) to 3 (strict)
    join_gap_s: float = 0.3  # speech runs closer than this form one segment
    min_speech_s: float = 0.08  # shorter segments are dropped as clicks
    pad_s: float = 0.2  # silence kept around a segment when decoding it


def _pocketsphinx():
    try:
        import pocketsphinx
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return pocketsphinx


def pocketsphinx_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pocketsphinx")
    except PackageNotFoundError:
        return "unknown"


class Recogniser:
    """A pocketsphinx decoder set up once (loading the model takes a moment) and used for many segments."""

    def __init__(self, keywords: tuple[str, ...] = ()) -> None:
        ps = _pocketsphinx()
        self.keywords = tuple(k.strip().lower() for k in keywords if k.strip())
        self.decoder = ps.Decoder(samprate=ASR_RATE, loglevel="FATAL")
        if self.keywords:
            missing = [k for k in self.keywords if self.decoder.lookup_word(k) is None]
            if missing:
                raise ValueError(f"keywords not in pocketsphinx's dictionary: {', '.join(missing)}")
            alternatives = " | ".join(self.keywords)
            self.decoder.add_jsgf_string(
                "keywords", f"#JSGF V1.0;\ngrammar keywords;\npublic <utt> = ( {alternatives} )* ;\n"
            )
            self.decoder.activate_search("keywords")

    def words(self, pcm16k: np.ndarray) -> list[tuple[str, int, int, float]]:
        """(word, first sample, last sample, confidence) in one utterance of 16 kHz int16 audio."""
        d = self.decoder
        d.start_utt()
        d.process_raw(pcm16k.astype("<i2").tobytes(), False, True)
        d.end_utt()
        out = []
        for s in d.seg():
            word = s.word
            if word.startswith(("<", "[")) or word in ("<sil>",):
                continue  # silence, sentence marks and noise fillers
            word = re.sub(r"\(\d+\)$", "", word)  # alternative pronunciations: yes(2) -> yes
            conf = float(min(1.0, max(0.0, s.prob)))
            out.append((word, s.start_frame * ASR_FRAME, (s.end_frame + 1) * ASR_FRAME - 1, conf))
        return out


def vad_flags(pcm16k: np.ndarray, mode: int = 2) -> tuple[np.ndarray, int]:
    """Speech or not for every VAD frame of 16 kHz int16 audio; and the frame length in samples."""
    ps = _pocketsphinx()
    vad = ps.Vad(mode=mode, sample_rate=ASR_RATE, frame_length=0.01)
    n = vad.frame_bytes // 2
    data = pcm16k.astype("<i2")
    flags = np.zeros(data.size // n, dtype=bool)
    for i in range(flags.size):
        flags[i] = vad.is_speech(data[i * n : (i + 1) * n].tobytes())
    return flags, n


def segments_from_flags(flags: np.ndarray, frame_len: int, opts: AnnotateOptions) -> list[tuple[int, int]]:
    """[start, end) sample ranges of speech: runs joined across short gaps, clicks dropped."""
    runs = []
    i = 0
    while i < flags.size:
        if flags[i]:
            j = i
            while j < flags.size and flags[j]:
                j += 1
            runs.append([i * frame_len, j * frame_len])
            i = j
        else:
            i += 1
    joined: list[list[int]] = []
    gap = int(opts.join_gap_s * ASR_RATE)
    for r in runs:
        if joined and r[0] - joined[-1][1] < gap:
            joined[-1][1] = r[1]
        else:
            joined.append(r)
    return [(a, b) for a, b in joined if b - a >= opts.min_speech_s * ASR_RATE]


@dataclass
class Annotation:
    """What the annotator found in one trajectory, before it is written."""

    words: list[Word]
    segments: list[tuple[int, int, float, float]]  # start_frame, end_frame, start_s, end_s
    voiced: np.ndarray
    energy_db: np.ndarray
    pitch_hz: np.ndarray


def annotate_trajectory(
    store: Store, traj_id: str, opts: AnnotateOptions = AnnotateOptions(), recogniser: Recogniser | None = None
) -> Annotation | None:
    """Annotate one trajectory's speech (None when it has none)."""
    traj = load(store, traj_id, speech=True)
    if traj.speech is None or traj.speech_rate is None or len(traj) == 0 or traj.speech_sample[0] < 0:
        return None
    rate, x = traj.speech_rate, traj.speech
    x16 = np.clip(np.rint(prosody.resample(x, rate, ASR_RATE)), -32768, 32767).astype(np.int16)
    flags, vad_len = vad_flags(x16, opts.vad_mode)
    segs16 = segments_from_flags(flags, vad_len, opts)
    rec = recogniser or Recogniser(opts.keywords)
    to_wav = rate / ASR_RATE

    def frame_of(sample_wav: float) -> int:
        return int(traj.frame_of_sample(int(sample_wav)))

    words = []
    pad = int(opts.pad_s * ASR_RATE)
    for a, b in segs16:
        lo, hi = max(0, a - pad), min(x16.size, b + pad)
        for word, s0, s1, conf in rec.words(x16[lo:hi]):
            w0, w1 = (lo + s0) * to_wav, (lo + s1) * to_wav
            words.append(
                Word(word, frame_of(w0), frame_of(w1), round(w0 / rate, 3), round(w1 / rate, 3), round(conf, 3))
            )
    segments = [
        (frame_of(a * to_wav), frame_of((b - 1) * to_wav), round(a * to_wav / rate, 3), round(b * to_wav / rate, 3))
        for a, b in segs16
    ]

    start, end = prosody.frame_bounds(traj.speech_sample, rate, x.size)
    centre_wav = (start + end) // 2
    centre16 = np.minimum((centre_wav / to_wav).astype(np.int64), max(x16.size - 1, 0))
    vad_index = np.minimum(centre16 // vad_len, max(flags.size - 1, 0))
    voiced = flags[vad_index] if flags.size else np.zeros(len(traj), bool)
    voiced = voiced & (end > start)
    energy = prosody.energy_db(x, start, end)
    pitch = np.full(len(traj), np.nan, dtype=np.float32)
    if voiced.any():
        pitch[voiced] = prosody.pitch(x16, ASR_RATE, centre16[voiced])
    return Annotation(words, segments, voiced, energy, pitch)


def _csv(header: tuple[str, ...], rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def write_annotation(store: Store, traj_id: str, ann: Annotation, opts: AnnotateOptions) -> dict:
    """Put the annotation files into the store (speech_annotations.json last); returns that JSON."""
    files = {
        schema.SPEECH_WORDS: _csv(
            schema.WORD_COLUMNS,
            (
                (w.word, w.start_frame, w.end_frame, f"{w.start_s:.3f}", f"{w.end_s:.3f}", f"{w.confidence:.3f}")
                for w in ann.words
            ),
        ),
        schema.SPEECH_SEGMENTS: _csv(
            schema.SEGMENT_COLUMNS, ((a, b, f"{s:.3f}", f"{e:.3f}") for a, b, s, e in ann.segments)
        ),
        schema.SPEECH_FRAMES: _csv(
            schema.FRAME_FEATURE_COLUMNS,
            (
                (i, int(v), f"{e:.2f}", "" if np.isnan(p) else f"{p:.1f}")
                for i, (v, e, p) in enumerate(zip(ann.voiced, ann.energy_db, ann.pitch_hz, strict=True))
            ),
        ),
    }
    for name, data in files.items():
        store.put(f"{traj_id}/{name}", data)
    meta = read_meta(store, traj_id)
    info = {
        "schema": schema.ANNOTATION_SCHEMA,
        "traj_id": traj_id,
        "created_utc": utc_now(),
        "recogniser": {
            "name": "pocketsphinx",
            "version": pocketsphinx_version(),
            "model": "en-us (shipped in the pocketsphinx wheel)",
            "rate": ASR_RATE,
        },
        "mode": "keywords" if opts.keywords else "words",
        "options": asdict(opts),
        "speech_sha256": (meta.get("files") or {}).get(fmt.SPEECH, {}).get("sha256"),
        "words": len(ann.words),
        "segments": len(ann.segments),
        "voiced_frames": int(ann.voiced.sum()),
        "files": {n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()},
    }
    store.put(f"{traj_id}/{schema.SPEECH_ANNOTATIONS}", (json.dumps(info, indent=2) + "\n").encode())
    return info


def annotate(
    store: Store, traj_id: str, opts: AnnotateOptions = AnnotateOptions(), recogniser: Recogniser | None = None
) -> dict | None:
    """Annotate one trajectory and write its files; None (nothing written) when it has no speech."""
    ann = annotate_trajectory(store, traj_id, opts, recogniser)
    if ann is None:
        return None
    return write_annotation(store, traj_id, ann, opts)
