"""One recorded trajectory as numpy arrays: the log, the speech, and the speech annotations when present.

Nothing here re-simulates: observations come from `observations.py`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..core import format as fmt
from ..core.alignment import frame_of_sample
from ..core.reader import read_csv, read_frames, read_meta, read_wav, trajectory_ids
from ..store import Store
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


def list_trajectories(store: Store, game: str | None = None) -> list[TrajectoryInfo]:
    """Every trajectory in a store (of one game, if given), sorted by ID."""
    keys = store.list(f"{game}_" if game else "")
    ids = trajectory_ids(keys)
    annotated = {k.split("/", 1)[0] for k in keys if k.endswith("/" + schema.SPEECH_WORDS)}
    infos = []
    for traj_id in ids:
        info = TrajectoryInfo.from_meta(read_meta(store, traj_id), traj_id in annotated)
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
    keyword: bool = False  # one of the annotation's --keywords (speech_words.csv's `keyword` column)


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
        return frame_of_sample(self.speech_sample, sample)

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


def _num(v: str, default: float = math.nan) -> float:
    return float(v) if v not in ("", None) else default


def load(store: Store, traj_id: str, speech: bool = True) -> Trajectory:
    """Read a trajectory's arrays (and its speech waveform unless `speech=False`)."""
    meta = read_meta(store, traj_id)
    frames = read_frames(store, traj_id)
    n = len(frames)
    if not np.array_equal(frames["frame"], np.arange(n)):
        raise ValueError(f"{traj_id}: {fmt.FRAMES} does not hold frames 0..{n - 1} in order")
    annotated = store.exists(f"{traj_id}/{schema.SPEECH_WORDS}")
    speech_sample = frames["speech_sample"]
    traj = Trajectory(
        info=TrajectoryInfo.from_meta(meta, annotated),
        actions=frames["action"].astype(np.uint8),
        rewards=frames["reward"].astype(np.int32),
        scores=frames["score"],
        lives=frames["lives"].astype(np.int16),
        terminals=frames["terminal"] == 1,
        keys=frames["keys"],
        server_ms=frames["server_ms"],
        display_ms=frames["display_ms"],
        speech_sample=np.where(np.isnan(speech_sample), -1, speech_sample).astype(np.int64),
        shown=(frames["shown"] == 1) if "shown" in frames.present else None,  # schema 2
    )
    wav = read_wav(store, traj_id, fmt.SPEECH) if speech and meta.get("speech") else None
    if wav is not None:
        traj.speech, traj.speech_rate = np.asarray(wav[1], dtype=np.int16), int(wav[0])
    elif meta.get("speech"):
        traj.speech_rate = int(meta["speech"]["rate"])
    _load_annotations(store, traj)
    return traj


def read_words(store: Store, traj_id: str) -> list[Word] | None:
    """speech_words.csv's words in time order (None when the trajectory is not annotated): the one reader of the
    file, for the loader and the replay page."""
    rows = read_csv(store, f"{traj_id}/{schema.SPEECH_WORDS}")
    if rows is None:
        return None
    return [
        Word(
            r["word"],
            int(r["start_frame"]),
            int(r["end_frame"]),
            float(r["start_s"]),
            float(r["end_s"]),
            _num(r["confidence"]),
            r.get("keyword") == "1",
        )
        for r in rows
    ]


def _load_annotations(store: Store, traj: Trajectory) -> None:
    tid = traj.traj_id
    traj.words = read_words(store, tid) or []
    rows = read_csv(store, f"{tid}/{schema.SPEECH_SEGMENTS}")
    if rows is not None:
        traj.segments = [
            SpeechSegment(int(r["start_frame"]), int(r["end_frame"]), float(r["start_s"]), float(r["end_s"]))
            for r in rows
        ]
    rows = read_csv(store, f"{tid}/{schema.SPEECH_FRAMES}")
    if rows is not None:
        n = len(traj)
        if len(rows) != n:
            raise ValueError(f"{tid}: {schema.SPEECH_FRAMES} has {len(rows)} rows for {n} frames; annotate again")
        traj.voiced = np.fromiter((r["voiced"] == "1" for r in rows), dtype=bool, count=n)
        traj.energy_db = np.fromiter((_num(r["energy_db"]) for r in rows), dtype=np.float32, count=n)
        traj.pitch_hz = np.fromiter((_num(r["pitch_hz"]) for r in rows), dtype=np.float32, count=n)


def annotation_info(store: Store, traj_id: str) -> dict | None:
    """speech_annotations.json: how the annotation files were made (None if the trajectory is not annotated)."""
    try:
        return json.loads(store.get(f"{traj_id}/{schema.SPEECH_ANNOTATIONS}"))
    except KeyError:
        return None
