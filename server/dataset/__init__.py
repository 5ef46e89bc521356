"""The researcher-side dataset: recorded trajectories as numpy arrays, T-REX observations, ranking and pairs.

    from server.dataset import Dataset
    from server.store import open_store

    ds = Dataset(open_store("./recordings"))
    ds.trajectories("spaceinvaders")               # ID, status, frames, final score, seconds of speech
    traj = ds.load("spaceinvaders_ALICE_1")        # actions, rewards, scores, lives, ..., speech, words
    obs = ds.observations(traj.traj_id).stacks     # (n, 84, 84, 4) uint8, T-REX preprocessing, cached
    demos = ds.ranked_demonstrations("spaceinvaders")
    pairs = ds.trex_pairs(1000, (50, 100), rng=0, game="spaceinvaders")

Imports neither Flask nor Socket.IO. Speech annotation (pocketsphinx) and exports (Minari) live in
`server.dataset.annotate` and `server.dataset.export` and import their optional packages only when used.
See docs/dataset.md.
"""

from .observations import (
    DEFAULT_CACHE_DIR,
    MaskRect,
    TrexObservations,
    TrexPreprocessing,
    as_float,
    initial_rgb,
    iter_rgb,
    rgb_frames,
    trex_mask,
    trex_observations,
)
from .pairs import Dataset, Snippet, SnippetPair
from .trajectory import SpeechSegment, Trajectory, TrajectoryInfo, Word, list_trajectories, load

__all__ = [
    "DEFAULT_CACHE_DIR",
    "Dataset",
    "MaskRect",
    "Snippet",
    "SnippetPair",
    "SpeechSegment",
    "Trajectory",
    "TrajectoryInfo",
    "TrexObservations",
    "TrexPreprocessing",
    "Word",
    "as_float",
    "initial_rgb",
    "iter_rgb",
    "list_trajectories",
    "load",
    "rgb_frames",
    "trex_mask",
    "trex_observations",
]
