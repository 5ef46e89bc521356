"""A store's trajectories as a T-REX dataset: demonstrations ranked by score, and snippet pairs with their speech."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..store import Store
from .observations import DEFAULT_CACHE_DIR, TrexObservations, TrexPreprocessing, trex_observations
from .trajectory import SpeechSegment, Trajectory, TrajectoryInfo, Word, list_trajectories, load


@dataclass
class Snippet:
    """Observations start, start+stride, ... (fewer than start+length) of one trajectory, and what was said then."""

    traj_id: str
    score: int  # the trajectory's final score
    rank: int  # its index among the ranked demonstrations (higher is better)
    start: int
    length: int
    stride: int
    first_frame: int  # the emulator frames the snippet's observations are made of
    last_frame: int
    observations: TrexObservations = field(repr=False)
    words: list[Word] = field(default_factory=list)
    segments: list[SpeechSegment] = field(default_factory=list)
    voiced: np.ndarray | None = field(default=None, repr=False)  # per frame first_frame..last_frame
    energy_db: np.ndarray | None = field(default=None, repr=False)
    pitch_hz: np.ndarray | None = field(default=None, repr=False)

    @property
    def obs(self) -> np.ndarray:
        """(n, 84, 84, 4) uint8, a view into the trajectory's observations."""
        return self.observations.stacks[self.start : self.start + self.length : self.stride]


@dataclass
class SnippetPair:
    """Two snippets and T-REX's label: the index (0 or 1) of the one from the better trajectory."""

    snippets: tuple[Snippet, Snippet]
    label: int

    @property
    def better(self) -> Snippet:
        return self.snippets[self.label]

    @property
    def worse(self) -> Snippet:
        return self.snippets[1 - self.label]


class Dataset:
    """The trajectories of a store, with T-REX observations cached under `cache_dir`."""

    def __init__(
        self,
        store: Store,
        preprocessing: TrexPreprocessing | None = None,
        cache_dir: Path | str | None = DEFAULT_CACHE_DIR,
    ) -> None:
        self.store = store
        self.preprocessing = preprocessing or TrexPreprocessing()
        self.cache_dir = cache_dir
        self._obs: dict[str, TrexObservations] = {}
        self._traj: dict[str, Trajectory] = {}

    def trajectories(self, game: str | None = None) -> list[TrajectoryInfo]:
        """Every trajectory (of a game): ID, status, frames, final score, seconds of speech, annotated or not."""
        return list_trajectories(self.store, game)

    def load(self, traj_id: str, speech: bool = True) -> Trajectory:
        """A trajectory's arrays, speech and annotations."""
        return load(self.store, traj_id, speech=speech)

    def _trajectory(self, traj_id: str) -> Trajectory:
        if traj_id not in self._traj:
            self._traj[traj_id] = load(self.store, traj_id, speech=False)
        return self._traj[traj_id]

    def observations(self, traj_id: str) -> TrexObservations:
        """T-REX observations of a trajectory (re-simulated once, then read from the cache)."""
        if traj_id not in self._obs:
            self._obs[traj_id] = trex_observations(self.store, traj_id, self.preprocessing, self.cache_dir)
        return self._obs[traj_id]

    def ranked_demonstrations(
        self, game: str, require_game_over: bool = False, min_frames: int | None = None
    ) -> list[TrajectoryInfo]:
        """The game's complete trajectories ordered by final score, worst first (T-REX's order: a higher index is a
        better demonstration). Ties keep ID order. `require_game_over` keeps only episodes that ended in game over,
        as T-REX's Atari Grand Challenge loader does; `min_frames` drops trajectories too short for one observation
        stack (by default, those with fewer than frame_skip * stack frames)."""
        p = self.preprocessing
        shortest = p.frame_skip * p.stack if min_frames is None else min_frames
        demos = [
            t
            for t in self.trajectories(game)
            if t.complete and t.frames >= shortest and (t.game_over or not require_game_over)
        ]
        return sorted(demos, key=lambda t: t.final_score)

    def snippet(self, demo: TrajectoryInfo, rank: int, start: int, length: int, stride: int) -> Snippet:
        obs = self.observations(demo.traj_id)
        last_obs = start + ((length - 1) // stride) * stride
        first_frame, _ = obs.frame_span(start)
        _, last_frame = obs.frame_span(last_obs)
        traj = self._trajectory(demo.traj_id)
        sl = slice(first_frame, last_frame + 1)
        return Snippet(
            traj_id=demo.traj_id,
            score=demo.final_score,
            rank=rank,
            start=start,
            length=length,
            stride=stride,
            first_frame=first_frame,
            last_frame=last_frame,
            observations=obs,
            words=traj.words_between(first_frame, last_frame),
            segments=[s for s in traj.segments if s.end_frame >= first_frame and s.start_frame <= last_frame],
            voiced=None if traj.voiced is None else traj.voiced[sl],
            energy_db=None if traj.energy_db is None else traj.energy_db[sl],
            pitch_hz=None if traj.pitch_hz is None else traj.pitch_hz[sl],
        )

    def trex_pairs(
        self,
        n: int,
        snippet_length: int | tuple[int, int] = (50, 100),
        rng: np.random.Generator | int | None = None,
        game: str | None = None,
        demos: list[TrajectoryInfo] | None = None,
        stride: int = 2,
    ) -> list[SnippetPair]:
        """`n` snippet pairs sampled as T-REX samples them (`create_training_data` in its code).

        Two demonstrations with different final scores are drawn; a snippet length L is drawn from
        `snippet_length` (an int, or [low, high) like T-REX's 50-100) and cut to the shorter demonstration; the worse
        demonstration's snippet starts anywhere it fits in both, and the better one's starts no earlier than that
        (T-REX's progress prior). Every `stride`-th observation of a snippet is kept (T-REX keeps every 2nd).
        `demos` defaults to `ranked_demonstrations(game)`; pass a subset to hold trajectories out.
        """
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        if demos is None:
            if game is None:
                games = {t.game for t in self.trajectories()}
                if len(games) != 1:
                    raise ValueError(f"the store holds games {sorted(games)}: name one with game=")
                game = games.pop()
            demos = self.ranked_demonstrations(game)
        demos = sorted((d for d in demos if len(self.observations(d.traj_id)) > 0), key=lambda t: t.final_score)
        if len({d.final_score for d in demos}) < 2:
            raise ValueError(
                "T-REX pairs need at least two demonstrations (of at least one observation stack) with "
                f"different final scores; got scores {[d.final_score for d in demos]}"
            )
        lengths = [len(self.observations(d.traj_id)) for d in demos]
        low, high = (snippet_length, snippet_length + 1) if isinstance(snippet_length, int) else snippet_length
        pairs: list[SnippetPair] = []
        while len(pairs) < n:
            i, j = rng.integers(len(demos), size=2)
            if demos[i].final_score == demos[j].final_score:
                continue
            if demos[i].final_score > demos[j].final_score:
                i, j = j, i  # i is the worse one
            shortest = min(lengths[i], lengths[j])
            length = min(int(rng.integers(low, high)), shortest)
            start_i = int(rng.integers(shortest - length + 1))
            start_j = int(rng.integers(start_i, lengths[j] - length + 1))
            worse = self.snippet(demos[i], int(i), start_i, length, stride)
            better = self.snippet(demos[j], int(j), start_j, length, stride)
            label = int(rng.integers(2))  # which side the better snippet is on
            pairs.append(SnippetPair((worse, better) if label else (better, worse), label))
        return pairs
