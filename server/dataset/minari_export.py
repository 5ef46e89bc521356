"""Minari export: one episode per trajectory through `create_dataset_from_buffers`, added one at a time so only one
episode is in memory. Observations are either the RGB screens at the recorded frame rate (`rgb`: steps are emulator
frames, the first observation is the screen after reset, and the dataset's environment is ALE's with frame skip 1,
the full action space and the recorded sticky-action probability, so `recover_environment()` replays the actions
exactly), or T-REX's 84x84x4 stacks (`trex`: one step per 4 frames; the step's action is the first of its 4 frames,
its reward their sum; the first step also holds the 16 frames of the first observation, the last the 1-3 frames
after the last complete group, so rewards and the terminal flag add up to frames.csv's: see `trex_steps`). Per-step
infos carry the score, lives, frame and speech sample index; each episode's metadata its trajectory ID.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.reader import read_meta
from ..parallel import constant, run_jobs
from ..store import Store
from .observations import DEFAULT_CACHE_DIR, TrexPreprocessing, initial_rgb, iter_rgb, trex_observations
from .trajectory import TrajectoryInfo, load

MINARI_HINT = (
    "the Minari export needs minari and h5py: pip install -r requirements-trex.txt (or pip install 'minari[hdf5]')"
)


def _minari():
    try:
        import h5py  # noqa: F401  (Minari's default storage)
        import minari
        from minari.data_collector import EpisodeBuffer
    except ImportError as e:
        raise ImportError(MINARI_HINT) from e
    return minari, EpisodeBuffer


def ale_env_id(rom_id: str) -> str:
    """Gymnasium's id of an ALE ROM: space_invaders -> ALE/SpaceInvaders-v5."""
    return "ALE/" + "".join(p.capitalize() for p in rom_id.split("_")) + "-v5"


def ale_env_spec(ale_meta: dict):
    """The Gymnasium spec that re-creates the recording's emulator (frame skip 1, full action space)."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    spec = gym.spec(ale_env_id(ale_meta["rom_id"]))
    kwargs = {
        **spec.kwargs,
        "frameskip": int(ale_meta.get("frame_skip", 1)),
        "repeat_action_probability": float(ale_meta.get("repeat_action_probability", 0.0)),
        "full_action_space": bool(ale_meta.get("full_action_space", True)),
        "mode": int(ale_meta.get("mode", 0)),
        "difficulty": int(ale_meta.get("difficulty", 0)),
        # v5 stops episodes at 108,000 frames (30 minutes at 60 Hz); the recorder has no such cap
        "max_num_frames_per_episode": None,
    }
    return dataclasses.replace(spec, kwargs=kwargs)


def episode_seed(ale_meta: dict) -> int:
    """The seed for `env.reset(seed=...)` of the recovered environment: the recording's Gymnasium-level seed.

    Recordings made before `gym_seed` existed seeded ALE directly. Without sticky actions ALE's RNG never touches the
    game, so any seed replays them; with sticky actions no Gymnasium seed reproduces them, and `reset_to_ale_seed`
    does instead (the episode metadata keeps `ale_seed`).
    """
    if ale_meta.get("gym_seed") is not None:
        return int(ale_meta["gym_seed"])
    if float(ale_meta.get("repeat_action_probability", 0.0)) > 0:
        warnings.warn(
            "a sticky-action recording without ale.gym_seed (made before it was recorded): env.reset(seed=...) does "
            "not replay it; use server.dataset.minari_export.reset_to_ale_seed(env, episode_metadata['ale_seed'])",
            stacklevel=2,
        )
    return int(ale_meta["seed"])


def reset_to_ale_seed(env, ale_seed: int):
    """Reset a recovered ALE environment with an ALE seed, as the recorder did before `gym_seed` (what
    AtariEnv.reset(seed=...) does after deriving its ALE seed); returns (observation, info)."""
    atari = env.unwrapped
    atari.ale.setInt("random_seed", int(ale_seed))
    atari.load_game()
    return env.reset()


def _rgb_episode(store: Store, t: TrajectoryInfo, episode_id: int, EpisodeBuffer, level: int | None):
    """(buffer, chunks). With `level`, chunks are every observation but the last, each compressed as one gzip chunk
    (`_compressed_observations` writes them), and the buffer holds only the last (what Minari appends to them).
    Without, chunks is None and every screen is in the buffer (about 100 KB each: a 10-minute trajectory takes 3.6 GB
    of memory)."""
    traj = load(store, t.traj_id, speech=False)
    meta = read_meta(store, t.traj_id)
    n = len(traj)
    screens = itertools.chain([initial_rgb(store, t.traj_id)], (rgb for _, rgb in iter_rgb(store, t.traj_id)))
    chunks = None
    if level is None:
        obs = np.empty((n + 1, 210, 160, 3), dtype=np.uint8)
        for i, rgb in enumerate(screens):
            obs[i] = rgb
    else:
        # zlib's stream at the level is what HDF5's gzip filter writes into a chunk (compress2 with the same
        # defaults), so h5py and minari read these chunks as if the filter had written them
        chunks = [zlib.compress(rgb.tobytes(), level) for rgb in itertools.islice(screens, n)]
        obs = next(screens)[np.newaxis].copy()
    lives0 = int(traj.lives[0]) if n else 0
    infos = {
        "frame": np.concatenate(([-1], np.arange(n))).astype(np.int64),
        "score": np.concatenate(([0], traj.scores)).astype(np.int64),
        "lives": np.concatenate(([lives0], traj.lives)).astype(np.int64),
        "speech_sample": np.concatenate(([-1], traj.speech_sample)).astype(np.int64),
    }
    buffer = EpisodeBuffer(
        id=episode_id,
        seed=episode_seed(meta["ale"]),
        observations=obs,
        actions=traj.actions.astype(np.int64),
        rewards=traj.rewards.astype(np.float64),
        terminations=traj.terminals.copy(),
        truncations=_truncations(traj.terminals),
        infos=infos,
    )
    return buffer, chunks


def _truncations(terminals: np.ndarray) -> np.ndarray:
    """The last step is truncated when the episode stopped before game over (quit, time limit, ...)."""
    tr = np.zeros(terminals.size, dtype=bool)
    if terminals.size and not terminals[-1]:
        tr[-1] = True
    return tr


def trex_steps(n_frames: int, prep: TrexPreprocessing) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) emulator frame of every step of a T-REX-observation episode of `n_frames` frames.

    Observation j is the stack of processed frames j .. j+stack-1, so the first observation is made of the first
    stack*frame_skip frames (16) and step j leads to observation j+1, adding the frame_skip frames of processed frame
    j+stack. T-REX drops a last group of fewer than frame_skip frames; here the last step takes it (up to 7 frames,
    its observation the last complete stack) and the first step also takes the 16 frames the first observation is made
    of, so every frame's reward and terminal flag is in exactly one step whatever the length.
    """
    k, s = prep.frame_skip, prep.stack
    m = n_frames // k - s  # steps
    if m < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    first = (np.arange(m, dtype=np.int64) + s) * k
    last = first + k - 1
    first[0], last[-1] = 0, n_frames - 1
    return first, last


def _trex_episode(store: Store, t: TrajectoryInfo, episode_id: int, EpisodeBuffer, prep: TrexPreprocessing, cache_dir):
    traj = load(store, t.traj_id, speech=False)
    meta = read_meta(store, t.traj_id)
    obs = trex_observations(store, t.traj_id, prep, cache_dir)
    first, last = trex_steps(len(traj), prep)
    m = first.size
    if m < 1:
        warnings.warn(f"{t.traj_id}: {len(traj)} frames make no T-REX step; not exported", stacklevel=2)
        return None
    stacks = np.ascontiguousarray(obs.stacks[: m + 1])
    acted = (np.arange(m) + prep.stack) * prep.frame_skip  # the frame whose action a step keeps
    obs0 = prep.stack * prep.frame_skip - 1  # the last frame the first observation is made of
    infos = {
        "frame": np.concatenate(([obs0], last)).astype(np.int64),
        "first_frame": np.concatenate(([0], first)).astype(np.int64),
        "score": np.concatenate(([traj.scores[obs0]], traj.scores[last])).astype(np.int64),
        "lives": np.concatenate(([traj.lives[obs0]], traj.lives[last])).astype(np.int64),
        "speech_sample": np.concatenate(([traj.speech_sample[obs0 + 1]], traj.speech_sample[last])).astype(np.int64),
    }
    terminals = np.logical_or.reduceat(traj.terminals, first)
    return EpisodeBuffer(
        id=episode_id,
        seed=episode_seed(meta["ale"]),
        observations=stacks,
        actions=traj.actions[acted].astype(np.int64),
        rewards=np.add.reduceat(traj.rewards.astype(np.float64), first),
        terminations=terminals,
        truncations=_truncations(terminals),
        infos=infos,
    )


def _episode(
    store: Store,
    item: tuple[int, TrajectoryInfo],
    observations: str,
    prep: TrexPreprocessing,
    cache_dir,
    level: int | None,
):
    """Episode `item`'s (buffer, compressed observations or None), in a worker; (None, None) when it makes no step."""
    _, EpisodeBuffer = _minari()
    i, t = item
    if observations == "rgb":
        return _rgb_episode(store, t, i, EpisodeBuffer, level)
    return _trex_episode(store, t, i, EpisodeBuffer, prep, cache_dir), None


#: HDF5 filters for the observations (`compression=`): h5py decompresses them transparently, so minari.load_dataset
#: and any HDF5 reader load the dataset unchanged. Measured in docs/benchmarks.md ("The Minari export's size").
COMPRESSIONS = {"gzip": ("gzip", 4), "lzf": ("lzf", None), "none": (None, None)}


#: The Minari releases whose HDF5 storage appends to an episode's existing observations dataset (read in
#: minari/dataset/_storages/hdf5_storage.py); `_compressed_observations` relies on that behaviour, not on an API.
PRECREATE_MINARI = ("0.5.",)


def _can_precreate(minari) -> bool:
    """Whether this Minari stores into a dataset created beforehand; else the export writes raw frames (a warning)."""
    version = getattr(minari, "__version__", "")
    if version.startswith(PRECREATE_MINARI):
        return True
    warnings.warn(
        f"minari {version or '(unknown version)'} is not one the compressed export was written against "
        f"({', '.join(v + 'x' for v in PRECREATE_MINARI)}): observations are stored uncompressed",
        stacklevel=3,
    )
    return False


def _compressed_observations(
    storage, episode: int, shape: tuple[int, ...], compression: str, chunks: list[bytes] | None = None
) -> None:
    """Create episode `episode`'s observations dataset, chunked one observation a chunk and compressed: empty, or
    holding `chunks` (observations already compressed by the filter's codec, written as they are).

    Minari (0.5) exposes no compression option, but its HDF5 storage appends to an episode's dataset when one already
    exists (`_add_episode_to_group`), so the frames it then writes go through the filter. One observation per chunk:
    deflate's 32 KB window cannot reach from one 100 KB screen into the next anyway, and a reader gets any step
    without inflating its neighbours. Chunks compressed in the workers (gzip) spare this process the compression,
    which was nearly all of an RGB export's time here (docs/benchmarks.md, the pipeline).
    """
    import h5py

    name, level = COMPRESSIONS[compression]
    path = Path(storage.data_path) / "main_data.hdf5"
    with h5py.File(path, "a", track_order=True) as f:
        group = f.create_group(f"episode_{episode}")
        n = len(chunks) if chunks is not None else 0
        dataset = group.create_dataset(
            "observations",
            shape=(n, *shape),
            maxshape=(None, *shape),
            dtype=np.uint8,
            chunks=(1, *shape),
            compression=name,
            compression_opts=level,
        )
        for i, chunk in enumerate(chunks or ()):
            dataset.id.write_direct_chunk((i,) + (0,) * len(shape), chunk)


def export_minari(
    store: Store,
    dataset_id: str,
    infos: list[TrajectoryInfo],
    observations: str = "rgb",
    jpeg: bool = False,
    compression: str = "gzip",
    prep: TrexPreprocessing | None = None,
    cache_dir=DEFAULT_CACHE_DIR,
    author: str | None = None,
    description: str | None = None,
    jobs: int = 1,
    setup: Callable[[], Store] | None = None,
    quiet: bool = True,
):
    """Create a Minari dataset (under MINARI_DATASETS_PATH, or ~/.minari/datasets) from trajectories.

    `jobs` episodes are re-simulated and processed at once, one process each (`setup()` opens the store in a worker;
    default: this store, inherited): T-REX observations, or RGB screens compressed with gzip (the default); they are
    written in order by this process, so the dataset is the same for any `jobs`. RGB episodes with another
    compression are built here, one after another, whatever `jobs`: their time is this process's compression, and
    shipping 100 KB a raw frame from workers cost more than it saved (docs/benchmarks.md)."""
    minari, EpisodeBuffer = _minari()
    prep = prep or TrexPreprocessing()
    import ale_py
    import gymnasium as gym

    if observations not in ("rgb", "trex"):
        raise ValueError(f"observations must be 'rgb' or 'trex', not {observations!r}")
    if not infos:
        raise ValueError("no trajectories to export")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, not {compression!r}")
    metas = [read_meta(store, t.traj_id) for t in infos]
    kinds = {(m["ale"]["rom_id"], m["ale"].get("repeat_action_probability", 0.0)) for m in metas}
    if len(kinds) != 1:
        raise ValueError(f"one Minari dataset holds one environment; these trajectories come from {sorted(kinds)}")
    action_space = gym.spaces.Discrete(18)
    env = None
    if observations == "rgb":
        obs_space = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
        env = ale_env_spec(metas[0]["ale"])
    else:
        obs_space = gym.spaces.Box(0, 255, (prep.height, prep.width, prep.stack), np.uint8)
    desc = description or (
        f"Human demonstrations with speech ({len(infos)} trajectories of "
        f"{infos[0].game}), recorded by atari-speech-demos; observations: {observations}."
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no code_permalink: there is no public URL to give
        ds = minari.create_dataset_from_buffers(
            dataset_id,
            [],
            env=env,
            algorithm_name="human demonstrators",
            author=author,
            action_space=action_space,
            observation_space=obs_space,
            description=desc,
            requirements=[f"ale-py=={ale_py.__version__}"],
            data_format="hdf5",
            jpeg_encoding=jpeg,
        )
    precreate = compression != "none" and not jpeg and _can_precreate(minari)
    # RGB screens with gzip are compressed in the workers (the bulk of the work); otherwise RGB episodes are built
    # here, one after another, whatever `jobs`: shipping 100 KB a raw frame from workers cost more than it saved
    level = COMPRESSIONS["gzip"][1] if observations == "rgb" and precreate and compression == "gzip" else None
    build = functools.partial(_episode, observations=observations, prep=prep, cache_dir=cache_dir, level=level)
    jobs = jobs if observations == "trex" or level is not None else 1
    episodes = run_jobs(build, enumerate(infos), jobs, setup or constant(store), "minari export", quiet, context=store)
    for (i, t), (buf, chunks) in episodes:
        if buf is None:
            continue
        ep = ds.storage.total_episodes
        buf = dataclasses.replace(buf, id=ep)
        if precreate:
            _compressed_observations(ds.storage, ep, obs_space.shape, compression, chunks)
        ds.storage.update_episodes([buf])
        ds.storage.update_episode_metadata(
            [
                {
                    "traj_id": t.traj_id,
                    "participant": t.participant,
                    "final_score": t.final_score,
                    "status": t.status,
                    "end_reason": t.end_reason or "",
                    "speech_seconds": t.speech_seconds,
                    "ale_seed": int(metas[i]["ale"]["seed"]),
                }
            ],
            [ep],
        )
    return minari.load_dataset(dataset_id)
