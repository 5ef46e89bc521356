"""One recorded trajectory as numpy arrays: the log, the speech, and the speech annotations when present.

Nothing here re-simulates: observations come from `observations.py`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..core import format as fmt
from ..core.replay import load_meta
from ..core.wav import read_wav
from ..errors import TrajectoryNotFound
from ..store.base import trajectory_ids
from . import schema


@dataclass(frozen=True)
class TrajectoryInfo:
    """A trajectory as listed: what meta.json says, without reading the per-frame files."""

    traj_id: str
    game: str
    participant: str
    status: str
    end_reason: str | None
    frames: int
    final_score: int
    speech_seconds: float
    annotated: bool
    meta: dict = field(repr=False, compare=False)

    @property
    def complete(self) -> bool:
        return self.status == fmt.STATUS_COMPLETE

    @property
    def game_over(self) -> bool:
        """The episode ended because the game did (the only kind the Atari Grand Challenge's T-REX loader keeps)."""
        return self.end_reason == fmt.GAME_OVER

    @classmethod
    def from_meta(cls, meta: dict, annotated: bool = False) -> TrajectoryInfo:
        speech = meta.get("speech") or {}
        return cls(
            traj_id=meta["traj_id"],
            game=meta.get("game", meta["traj_id"].split("_", 1)[0]),
            participant=meta.get("participant", ""),
            status=meta.get("status", ""),
            end_reason=meta.get("end_reason"),
            frames=int(meta.get("frames") or 0),
            final_score=int(meta.get("final_score") or 0),
            speech_seconds=float(speech.get("seconds") or 0.0),
            annotated=annotated,
            meta=meta,
        )


def list_trajectories(store, game: str | None = None) -> list[TrajectoryInfo]:
    """Every trajectory in a store (of one game, if given), sorted by ID."""
    keys = store.list(f"{game}_" if game else "")
    ids = trajectory_ids(keys)
    annotated = {k.split("/", 1)[0] for k in keys if k.endswith("/" + schema.SPEECH_WORDS)}
    infos = []
    for traj_id in ids:
        if not fmt.TRAJ_ID_RE.fullmatch(traj_id):
            continue
        info = TrajectoryInfo.from_meta(load_meta(store, traj_id), traj_id in annotated)
        if game is None or info.game == game:
            infos.append(info)
    return infos


@dataclass(frozen=True)
class Word:
    """A recognised word, on the frames that were on screen while it was said."""

    word: str
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    confidence: float


@dataclass(frozen=True)
class SpeechSegment:
    """A stretch of voice activity."""

    start_frame: int
    end_frame: int
    start_s: float
    end_s: float


@dataclass
class Trajectory:
    """A trajectory's per-frame log as arrays (index = frame), its speech, and its annotations if any."""

    info: TrajectoryInfo
    actions: np.ndarray  # uint8, ALE full-action-space ids
    rewards: np.ndarray  # int32
    scores: np.ndarray  # int64, running score after the frame
    lives: np.ndarray  # int16
    terminals: np.ndarray  # bool
    keys: np.ndarray  # str, held keys as in frames.csv
    server_ms: np.ndarray  # float64
    display_ms: np.ndarray  # float64, NaN where unknown
    speech_sample: np.ndarray  # int64, -1 where unknown (no microphone)
    shown: np.ndarray | None = None  # bool, the frame was on screen (schema 2; None for a schema-1 recording)
    speech: np.ndarray | None = None  # int16 mono waveform of speech.wav
    speech_rate: int | None = None
    words: list[Word] = field(default_factory=list)
    segments: list[SpeechSegment] = field(default_factory=list)
    voiced: np.ndarray | None = None  # bool per frame (speech_frames.csv)
    energy_db: np.ndarray | None = None  # float32 per frame
    pitch_hz: np.ndarray | None = None  # float32 per frame, NaN where no pitch

    @property
    def traj_id(self) -> str:
        return self.info.traj_id

    @property
    def game(self) -> str:
        return self.info.game

    def __len__(self) -> int:
        return int(self.actions.size)

    def frame_of_sample(self, sample: int | np.ndarray) -> int | np.ndarray:
        """The frame on screen when speech.wav's `sample` was captured (0 before frame 0's sample)."""
        if self.speech_sample.size == 0 or self.speech_sample[0] < 0:
            raise ValueError(f"{self.traj_id} has no speech alignment")
        f = np.searchsorted(self.speech_sample, sample, side="right") - 1
        return np.maximum(f, 0) if isinstance(f, np.ndarray) else max(int(f), 0)

    def words_between(self, first_frame: int, last_frame: int) -> list[Word]:
        """Words that start within frames [first_frame, last_frame]."""
        return [w for w in self.words if first_frame <= w.start_frame <= last_frame]

    def speech_between(self, first_frame: int, last_frame: int) -> np.ndarray | None:
        """The speech waveform captured while frames first_frame..last_frame were on screen."""
        if self.speech is None or self.speech_rate is None or self.speech_sample[0] < 0:
            return None
        a = int(self.speech_sample[first_frame])
        n = len(self)
        b = int(self.speech_sample[last_frame + 1]) if last_frame + 1 < n else self.speech.size
        return self.speech[a:b]


def _read_csv(store, key: str) -> list[dict] | None:
    try:
        text = store.get(key).decode()
    except KeyError:
        return None
    return list(csv.DictReader(io.StringIO(text)))


def _num(v: str, default: float = math.nan) -> float:
    return float(v) if v not in ("", None) else default


def load(store, traj_id: str, speech: bool = True) -> Trajectory:
    """Read a trajectory's arrays (and its speech waveform unless `speech=False`)."""
    meta = load_meta(store, traj_id)
    rows = _read_csv(store, f"{traj_id}/{fmt.FRAMES}")
    if rows is None:
        raise TrajectoryNotFound(f"trajectory {traj_id!r} has no {fmt.FRAMES} in {store.url}")
    n = len(rows)
    frames = np.fromiter((int(r["frame"]) for r in rows), dtype=np.int64, count=n)
    if not np.array_equal(frames, np.arange(n)):
        raise ValueError(f"{traj_id}: {fmt.FRAMES} does not hold frames 0..{n - 1} in order")
    annotated = store.exists(f"{traj_id}/{schema.SPEECH_WORDS}")
    has_shown = bool(rows) and "shown" in rows[0]  # schema 2
    traj = Trajectory(
        info=TrajectoryInfo.from_meta(meta, annotated),
        actions=np.fromiter((int(r["action"]) for r in rows), dtype=np.uint8, count=n),
        rewards=np.fromiter((int(r["reward"]) for r in rows), dtype=np.int32, count=n),
        scores=np.fromiter((int(r["score"]) for r in rows), dtype=np.int64, count=n),
        lives=np.fromiter((int(r["lives"]) for r in rows), dtype=np.int16, count=n),
        terminals=np.fromiter((r["terminal"] == "1" for r in rows), dtype=bool, count=n),
        keys=np.array([r["keys"] for r in rows], dtype=str),
        server_ms=np.fromiter((_num(r["server_ms"]) for r in rows), dtype=np.float64, count=n),
        display_ms=np.fromiter((_num(r["display_ms"]) for r in rows), dtype=np.float64, count=n),
        speech_sample=np.fromiter((int(_num(r["speech_sample"], -1)) for r in rows), dtype=np.int64, count=n),
        shown=np.fromiter((r["shown"] == "1" for r in rows), dtype=bool, count=n) if has_shown else None,
    )
    if speech and meta.get("speech") and store.exists(f"{traj_id}/{fmt.SPEECH}"):
        rate, wav = read_wav_key(store, f"{traj_id}/{fmt.SPEECH}")
        traj.speech, traj.speech_rate = np.asarray(wav, dtype=np.int16), int(rate)
    elif meta.get("speech"):
        traj.speech_rate = int(meta["speech"]["rate"])
    _load_annotations(store, traj)
    return traj


def read_wav_key(store, key: str):
    """(rate, samples) of a WAV in the store: read in place when the store has local files."""
    if hasattr(store, "path"):
        return read_wav(store.path(key))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "audio.wav"
        p.write_bytes(store.get(key))
        rate, a = read_wav(p)
        return rate, a.copy()


def _load_annotations(store, traj: Trajectory) -> None:
    tid = traj.traj_id
    rows = _read_csv(store, f"{tid}/{schema.SPEECH_WORDS}")
    if rows is not None:
        traj.words = [
            Word(
                r["word"],
                int(r["start_frame"]),
                int(r["end_frame"]),
                float(r["start_s"]),
                float(r["end_s"]),
                _num(r["confidence"]),
            )
            for r in rows
        ]
    rows = _read_csv(store, f"{tid}/{schema.SPEECH_SEGMENTS}")
    if rows is not None:
        traj.segments = [
            SpeechSegment(int(r["start_frame"]), int(r["end_frame"]), float(r["start_s"]), float(r["end_s"]))
            for r in rows
        ]
    rows = _read_csv(store, f"{tid}/{schema.SPEECH_FRAMES}")
    if rows is not None:
        n = len(traj)
        if len(rows) != n:
            raise ValueError(f"{tid}: {schema.SPEECH_FRAMES} has {len(rows)} rows for {n} frames; annotate again")
        traj.voiced = np.fromiter((r["voiced"] == "1" for r in rows), dtype=bool, count=n)
        traj.energy_db = np.fromiter((_num(r["energy_db"]) for r in rows), dtype=np.float32, count=n)
        traj.pitch_hz = np.fromiter((_num(r["pitch_hz"]) for r in rows), dtype=np.float32, count=n)


def annotation_info(store, traj_id: str) -> dict | None:
    """speech_annotations.json: how the annotation files were made (None if the trajectory is not annotated)."""
    try:
        return json.loads(store.get(f"{traj_id}/{schema.SPEECH_ANNOTATIONS}"))
    except KeyError:
        return None
