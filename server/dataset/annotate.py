"""Offline speech annotation: voice activity, words with aligned times, and Praat prosody, aligned to frames.

Runs on the researcher's machine, no cloud, nothing downloaded (steps 2-4: utterances.py, asr.py, align.py; step 6:
prosody.py):

1. speech.wav is resampled to 16 kHz with soxr (what the acoustic models expect);
2. a voice activity detector marks every 10 ms as speech or not (`vad`: Silero VAD by default, which the game's sound
   and steady noise do not fool; or pocketsphinx's WebRTC-style detector); runs of speech closer than 0.3 s are
   joined into segments (speech_segments.csv);
3. segments closer than `unit_gap_s` form utterances; the recognition engine (pocketsphinx or faster-whisper)
   decodes long windows around them (pocketsphinx: one utterance each, padded; whisper: windows of up to
   `window_s` with its own Silero VAD gating, an utterance longer than that cut at its quietest point), always
   with an open vocabulary;
4. each utterance's transcript is force-aligned to its audio with pocketsphinx (align.py): the aligned times are
   the word times, the engine's confidence stays with each word (whisper's words are given to utterances by an
   alignment of the whole window's transcript: whisper's own times can be off by more than a pause);
5. keyword mode (`keywords=("yes", "no")`) marks the words that are keywords (column `keyword`); every other word
   said stays in the transcript, marked 0. A keyword is reported only where the engine heard that word, never
   because a grammar forced other speech into it (what made "no, not that way" give false "no"s);
6. per frame: voice activity, energy, and Praat's pitch, intensity and HNR; per word: Praat's duration, F0 mean and
   maximum, intensity, jitter and shimmer (prosody.py);
7. with `egemaps=True` only: openSMILE's eGeMAPSv02 functionals per word and per segment (egemaps.py; openSMILE is
   for research and education only, so it is an option and no dependency).

A word's frame is the frame on screen when its first (last) sample was captured, found through frames.csv's
speech_sample column; start_s and end_s are seconds into speech.wav. The files are written into the store next to
the recording (the recorder's own files are not touched), with speech_annotations.json saying how they were made.
The output depends only on the input and the options: pocketsphinx's decoders are reset for each trajectory
(they carry state from one utterance to the next; `Annotator.fresh`) and CTranslate2's sampling, used by whisper's
temperature fallback, is seeded; annotating again gives the same bytes (speech_annotations.json: but for
`created_utc`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core import format as fmt
from ..core.files import utc_now
from ..core.reader import read_meta
from ..store import Store
from . import prosody, schema
from .align import Aligner
from .asr import POCKETSPHINX_HINT, VOCABULARY, PocketsphinxEngine, WhisperOptions, make_engine, package_version
from .egemaps import Egemaps
from .trajectory import Word, load
from .utterances import (
    ASR_RATE,
    SILERO_OPTIONS,
    VADS,
    recognise,
    require_silero,
    segments_from_flags,
    utterances,
    vad_flags,
)

INSTALL_HINT = POCKETSPHINX_HINT


@dataclass(frozen=True)
class AnnotateOptions:
    """How to annotate (every field is recorded in speech_annotations.json)."""

    keywords: tuple[str, ...] = ()  # empty: every word; else these words are marked `keyword` (the rest stay, 0)
    engine: str = "pocketsphinx"  # or "whisper"
    model: str | None = None  # whisper: a model name (tiny.en, small.en, ...) or a local CTranslate2 directory
    vocabulary: int = VOCABULARY  # pocketsphinx: the language model's most probable words searched (0: every word)
    vad: str = "silero"  # or "webrtc" (pocketsphinx's detector)
    vad_mode: int = 2  # webrtc: aggressiveness, 0 (loose) to 3 (strict)
    join_gap_s: float = 0.3  # speech runs closer than this form one segment
    min_speech_s: float = 0.08  # shorter segments are dropped as clicks
    unit_gap_s: float = 0.5  # segments closer than this form one utterance (decoded and aligned together)
    pad_s: float = 0.25  # audio kept around an utterance when decoding and aligning it
    window_s: float = 25.0  # whisper decodes utterances packed into windows up to this long (its limit is 30 s)
    # (longer utterances are cut; 8-10 s windows were more accurate on bench_speech.py, and half as fast)
    whisper: WhisperOptions = field(default_factory=WhisperOptions)
    prosody: prosody.ProsodyOptions = field(default_factory=prosody.ProsodyOptions)
    egemaps: bool = False  # openSMILE's eGeMAPSv02 functionals per word and segment (research-only licence)

    def to_json(self) -> dict:
        d = asdict(self)
        d["keywords"] = list(self.keywords)
        if self.engine != "whisper":
            del d["whisper"]
        else:
            del d["vocabulary"]
            d["whisper"]["temperature"] = list(self.whisper.temperature)
            d["model"] = self.model or "tiny.en"
        return d


@dataclass
class Annotation:
    """What the annotator found in one trajectory, before it is written."""

    words: list[Word]
    segments: list[tuple[int, int, float, float]]  # start_frame, end_frame, start_s, end_s
    voiced: np.ndarray
    energy_db: np.ndarray
    pitch_hz: np.ndarray
    intensity_db: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    hnr_db: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    word_extra: list[dict] = field(default_factory=list)  # keyword, aligned and Praat's measures, one per word
    egemaps_names: tuple[str, ...] = ()  # openSMILE's feature names (with --egemaps)
    egemaps_words: np.ndarray | None = None  # (words, 88) eGeMAPS functionals, NaN where undefined
    egemaps_segments: np.ndarray | None = None  # (segments, 88)


class Annotator:
    """The engine and the aligner, loaded once (models take a moment) and used for many trajectories."""

    def __init__(self, opts: AnnotateOptions = AnnotateOptions()) -> None:
        self.opts = opts
        if opts.vad not in VADS:
            raise ValueError(f"vad must be one of {VADS}, not {opts.vad!r}")
        if opts.vad == "silero":
            require_silero()
        if not 0 < opts.window_s <= 30:
            raise ValueError(f"window_s must be more than 0 and at most 30 seconds (whisper's limit): {opts.window_s}")
        self.egemaps = Egemaps() if opts.egemaps else None  # first: a missing opensmile fails before models load
        self.keywords = tuple(k.strip().lower() for k in opts.keywords if k.strip())
        self.engine = make_engine(opts.engine, opts.model, opts.whisper, self.keywords, opts.vocabulary)
        self.aligner = Aligner()
        self._used = False
        missing = [k for k in self.keywords if not self.aligner.known(k)]
        if missing:
            raise ValueError(f"keywords not in pocketsphinx's dictionary (they could not be aligned): {missing}")

    def fresh(self) -> None:
        """Decoders as loaded: pocketsphinx carries state from one utterance to the next (its noise estimate), so
        without this a trajectory's words would depend on what was annotated before it (a first word's confidence
        changed in the second decimal). Its language model's decoder is made again, the others re-initialise their
        feature extraction (`reset`): 0.3 s a trajectory, where loading all of them again took a second, half of the
        pipeline benchmark's annotation time. Whisper is stateless."""
        if self._used:
            if isinstance(self.engine, PocketsphinxEngine):
                self.engine.reset()
            self.aligner.reset()
        self._used = True

    def provenance(self) -> dict:
        info = {
            "recogniser": {**self.engine.provenance(), "rate": ASR_RATE},
            "vad": self._vad_provenance(),
            "aligner": {"name": "pocketsphinx set_align_text", "version": _pocketsphinx_version()},
            "prosody": {**prosody.toolkit_versions(), "options": asdict(self.opts.prosody)},
        }
        if self.egemaps is not None:
            info["egemaps"] = {**self.egemaps.provenance(), "rate": ASR_RATE}
        return info

    def _vad_provenance(self) -> dict:
        if self.opts.vad == "silero":
            return {
                "name": "Silero VAD (in faster-whisper)",
                "version": package_version("faster-whisper"),
                "options": SILERO_OPTIONS,
            }
        return {"name": "pocketsphinx Vad (WebRTC)", "version": _pocketsphinx_version(), "mode": self.opts.vad_mode}


def _pocketsphinx_version() -> str:
    return package_version("pocketsphinx")


def annotate_trajectory(store: Store, traj_id: str, annotator: Annotator) -> Annotation | None:
    """Annotate one trajectory's speech (None when it has none)."""
    opts = annotator.opts
    traj = load(store, traj_id, speech=True)
    if traj.speech is None or traj.speech_rate is None or len(traj) == 0 or traj.speech_sample[0] < 0:
        return None
    rate, x = traj.speech_rate, traj.speech
    x16 = np.clip(np.rint(prosody.resample(x, rate, ASR_RATE)), -32768, 32767).astype(np.int16)
    annotator.fresh()
    flags, vad_len = vad_flags(x16, opts.vad_mode, opts.vad)
    segs16 = segments_from_flags(flags, vad_len, opts)
    units = utterances(segs16, x16.size, opts)
    heard = recognise(x16, units, annotator.engine, annotator.aligner, opts)

    def frame_of(seconds: float) -> int:
        return int(traj.frame_of_sample(int(round(seconds * rate))))

    pros = prosody.Prosody(x16, ASR_RATE, opts.prosody)
    words, extra = [], []
    for w in heard:
        # the last sample of a word is the one before its end time
        words.append(
            Word(
                w.word,
                frame_of(w.start_s),
                frame_of(w.end_s - 1 / rate),
                round(w.start_s, 3),
                round(w.end_s, 3),
                round(w.confidence, 3),
                w.word in annotator.keywords,
            )
        )
        extra.append(
            {"keyword": w.word in annotator.keywords, "aligned": w.aligned, **asdict(pros.word(w.start_s, w.end_s))}
        )
    to_wav = rate / ASR_RATE
    segments = [
        (frame_of(a / ASR_RATE), frame_of((b - 1) / ASR_RATE), round(a * to_wav / rate, 3), round(b * to_wav / rate, 3))
        for a, b in segs16
    ]

    start, end = prosody.frame_bounds(traj.speech_sample, rate, x.size)
    centre_s = (start + end) / 2 / rate
    vad_index = np.minimum((centre_s * ASR_RATE).astype(np.int64) // vad_len, max(flags.size - 1, 0))
    voiced = flags[vad_index] if flags.size else np.zeros(len(traj), bool)
    voiced = voiced & (end > start)
    energy = prosody.energy_db(x, start, end)
    f0, intensity, hnr = pros.at(centre_s)
    f0[~voiced] = np.nan  # periodic game sound between utterances is not the demonstrator's pitch
    hnr[~voiced] = np.nan
    ann = Annotation(words, segments, voiced, energy, f0, intensity, hnr, extra)
    if annotator.egemaps is not None:
        word_ranges = [(int(round(w.start_s * ASR_RATE)), int(round(w.end_s * ASR_RATE))) for w in heard]
        ann.egemaps_names = annotator.egemaps.names
        ann.egemaps_words = annotator.egemaps.features(x16, ASR_RATE, word_ranges)
        ann.egemaps_segments = annotator.egemaps.features(x16, ASR_RATE, segs16)
    return ann


def _csv(header: tuple[str, ...], rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _f(v: float, digits: int) -> str:
    return "" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _g(v: float) -> str:
    """openSMILE's float32 features to their 7 significant digits (they range from 1e-5 to 1e3); empty for NaN."""
    return "" if not math.isfinite(v) else f"{v:.7g}"


def _egemaps_files(ann: Annotation) -> dict[str, bytes]:
    if ann.egemaps_words is None or ann.egemaps_segments is None:
        return {}
    return {
        schema.SPEECH_WORDS_EGEMAPS: _csv(
            schema.EGEMAPS_WORD_KEYS + ann.egemaps_names,
            (
                (i, w.word, w.start_frame, w.end_frame, *map(_g, row))
                for i, (w, row) in enumerate(zip(ann.words, ann.egemaps_words, strict=True))
            ),
        ),
        schema.SPEECH_SEGMENTS_EGEMAPS: _csv(
            schema.EGEMAPS_SEGMENT_KEYS + ann.egemaps_names,
            (
                (i, a, b, *map(_g, row))
                for i, ((a, b, _, _), row) in enumerate(zip(ann.segments, ann.egemaps_segments, strict=True))
            ),
        ),
    }


def annotation_files(ann: Annotation) -> dict[str, bytes]:
    extra = ann.word_extra or [{} for _ in ann.words]
    return {
        schema.SPEECH_WORDS: _csv(
            schema.WORD_COLUMNS,
            (
                (
                    w.word,
                    w.start_frame,
                    w.end_frame,
                    f"{w.start_s:.3f}",
                    f"{w.end_s:.3f}",
                    f"{w.confidence:.3f}",
                    int(e.get("keyword", False)),
                    int(e.get("aligned", False)),
                    _f(e.get("duration_s", math.nan), 3),
                    _f(e.get("f0_mean_hz", math.nan), 1),
                    _f(e.get("f0_max_hz", math.nan), 1),
                    _f(e.get("intensity_db", math.nan), 2),
                    _f(e.get("jitter", math.nan), 5),
                    _f(e.get("shimmer", math.nan), 5),
                )
                for w, e in zip(ann.words, extra, strict=True)
            ),
        ),
        schema.SPEECH_SEGMENTS: _csv(
            schema.SEGMENT_COLUMNS, ((a, b, f"{s:.3f}", f"{e:.3f}") for a, b, s, e in ann.segments)
        ),
        schema.SPEECH_FRAMES: _csv(
            schema.FRAME_FEATURE_COLUMNS,
            (
                (i, int(v), f"{e:.2f}", _f(p, 1), _f(it, 2), _f(h, 2))
                for i, (v, e, p, it, h) in enumerate(
                    zip(ann.voiced, ann.energy_db, ann.pitch_hz, ann.intensity_db, ann.hnr_db, strict=True)
                )
            ),
        ),
        **_egemaps_files(ann),
    }


def write_annotation(store, traj_id: str, ann: Annotation, annotator: Annotator) -> dict:
    """Put the annotation files into the store (speech_annotations.json last); returns that JSON."""
    opts = annotator.opts
    files = annotation_files(ann)
    for name, data in files.items():
        store.put(f"{traj_id}/{name}", data)
    for name in schema.EGEMAPS_FILES:  # left by an earlier annotation with --egemaps: they would not match
        if name not in files and store.exists(f"{traj_id}/{name}"):
            store.delete(f"{traj_id}/{name}")
    meta = read_meta(store, traj_id)
    info = {
        "schema": schema.ANNOTATION_SCHEMA,
        "traj_id": traj_id,
        "created_utc": utc_now(),
        **annotator.provenance(),
        "mode": "keywords" if opts.keywords else "words",
        "options": opts.to_json(),
        "speech_sha256": (meta.get("files") or {}).get(fmt.SPEECH, {}).get("sha256"),
        "words": len(ann.words),
        "keywords": sum(bool(e.get("keyword")) for e in ann.word_extra),
        "segments": len(ann.segments),
        "voiced_frames": int(ann.voiced.sum()),
        "files": {n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()},
    }
    store.put(f"{traj_id}/{schema.SPEECH_ANNOTATIONS}", (json.dumps(info, indent=2) + "\n").encode())
    return info


def annotate(
    store: Store, traj_id: str, opts: AnnotateOptions = AnnotateOptions(), annotator: Annotator | None = None
) -> dict | None:
    """Annotate one trajectory and write its files; None (nothing written) when it has no speech."""
    annotator = annotator or Annotator(opts)
    ann = annotate_trajectory(store, traj_id, annotator)
    if ann is None:
        return None
    return write_annotation(store, traj_id, ann, annotator)
