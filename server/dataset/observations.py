"""Observations by re-simulation: raw RGB screens, or T-REX's preprocessed frames, cached on disk.

T-REX (Brown et al. 2019, `agc_demos.py` and `trex_utils.py` in its code) turns Atari Grand Challenge screens into
observations this way, and so does `TrexPreprocessing` with its defaults:

- frame skip 4: of every 4 frames (4k .. 4k+3) the last two are max-pooled, channel by channel;
- grayscale (ITU-R 601 luma, what OpenCV's RGB2GRAY computes), resized to 84x84 by area averaging (INTER_AREA);
- the score and lives areas are blacked out: rectangles per game in roms/games.json (`trex_mask`, in the original
  210x160 screen's pixels, top/bottom rows and left/right columns, half-open); every 84x84 pixel that overlaps a
  rectangle is set to 0, which gives exactly T-REX's own row counts for the five study games;
- a stack of the last 4 processed frames: observation j is processed frames j .. j+3 (84, 84, 4).

Processed frames are uint8 (T-REX divides by 255 before the network; `as_float` does that). They are cached as
`.npy` under `cache_dir/<traj_id>/`, keyed by the ALE version, the ROM, frames.csv's checksum and the parameters, and
memory-mapped when read again. Every re-simulation is verified against the log (ReplayDivergence on disagreement).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cache, lru_cache
from pathlib import Path

import ale_py
import numpy as np

from ..core.emulator import SCREEN_HEIGHT, SCREEN_WIDTH
from ..core.reader import read_meta
from ..core.replay import resimulate
from ..games import CATALOGUE
from ..store import Store

#: Bumped when the processing code changes what it writes, so stale cache entries are not read.
CACHE_VERSION = 1
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "atari-speech-demos"


@dataclass(frozen=True)
class MaskRect:
    """A rectangle of the 210x160 screen: rows [top, bottom), columns [left, right)."""

    top: int
    bottom: int
    left: int = 0
    right: int = SCREEN_WIDTH


@cache
def catalogue_masks() -> dict[str, tuple[MaskRect, ...]]:
    """`trex_mask` of every game in roms/games.json that has one."""
    out = {}
    for e in json.loads(CATALOGUE.read_text())["games"]:
        if "trex_mask" in e:
            out[e["name"]] = tuple(
                MaskRect(r["rows"][0], r["rows"][1], *r.get("cols", [0, SCREEN_WIDTH])) for r in e["trex_mask"]
            )
    return out


def trex_mask(game: str) -> tuple[MaskRect, ...]:
    """The score/lives rectangles of a catalogue game; empty (nothing masked) for games without one."""
    return catalogue_masks().get(game, ())


@dataclass(frozen=True)
class TrexPreprocessing:
    """The parameters of T-REX's observation pipeline (the defaults are T-REX's)."""

    frame_skip: int = 4
    max_pool: int = 2  # the last this many frames of each skip group are max-pooled
    height: int = 84
    width: int = 84
    stack: int = 4
    mask: bool = True
    #: Rectangles to black out instead of the catalogue's (None: the catalogue's `trex_mask` for the game).
    mask_rects: tuple[MaskRect, ...] | None = field(default=None)

    def rects(self, game: str) -> tuple[MaskRect, ...]:
        if not self.mask:
            return ()
        return self.mask_rects if self.mask_rects is not None else trex_mask(game)

    def key(self, game: str) -> dict:
        d = asdict(self)
        d["mask_rects"] = [asdict(r) for r in self.rects(game)]
        return d


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights that average each output cell's share of the input (OpenCV's INTER_AREA)."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        a, b = i * scale, (i + 1) * scale
        for j in range(int(np.floor(a)), min(int(np.ceil(b)), n_in)):
            m[i, j] = min(b, j + 1) - max(a, j)
    return (m / scale).astype(np.float32)


@lru_cache(maxsize=8)
def _resize_matrices(h_out: int, w_out: int) -> tuple[np.ndarray, np.ndarray]:
    return _area_matrix(SCREEN_HEIGHT, h_out), _area_matrix(SCREEN_WIDTH, w_out).T.copy()


def mask_cells(rects: tuple[MaskRect, ...], h_out: int = 84, w_out: int = 84) -> np.ndarray:
    """Boolean (h_out, w_out): the processed pixels that overlap any rectangle."""
    rows_scale, cols_scale = SCREEN_HEIGHT / h_out, SCREEN_WIDTH / w_out
    m = np.zeros((h_out, w_out), dtype=bool)
    i, j = np.arange(h_out), np.arange(w_out)
    for r in rects:
        rows = (i * rows_scale < r.bottom) & ((i + 1) * rows_scale > r.top)
        cols = (j * cols_scale < r.right) & ((j + 1) * cols_scale > r.left)
        m |= rows[:, None] & cols[None, :]
    return m


def gray_resize(rgb: np.ndarray, h_out: int = 84, w_out: int = 84) -> np.ndarray:
    """(..., 210, 160, 3) uint8 RGB -> (..., h_out, w_out) uint8 grayscale, area-averaged."""
    gray = rgb[..., 0] * np.float32(0.299) + rgb[..., 1] * np.float32(0.587) + rgb[..., 2] * np.float32(0.114)
    rows, cols = _resize_matrices(h_out, w_out)
    lead = gray.shape[:-2]
    g = gray.reshape(-1, SCREEN_HEIGHT, SCREEN_WIDTH)
    k = g.shape[0]
    # two plain matrix products (columns, then rows) over the whole batch: broadcasting matmul is far slower
    x = (g.reshape(k * SCREEN_HEIGHT, SCREEN_WIDTH) @ cols).reshape(k, SCREEN_HEIGHT, w_out)
    x = rows @ x.transpose(1, 0, 2).reshape(SCREEN_HEIGHT, k * w_out)
    out = x.reshape(h_out, k, w_out).transpose(1, 0, 2).reshape(*lead, h_out, w_out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def iter_rgb(store: Store, traj_id: str) -> Iterator[tuple[int, np.ndarray]]:
    """(frame, RGB screen after that frame's step) for every frame, re-simulated and verified."""
    for frame, emu in resimulate(store, traj_id):
        yield frame, emu.screen_rgb()


def rgb_frames(store: Store, traj_id: str, start: int = 0, stop: int | None = None) -> np.ndarray:
    """(n, 210, 160, 3) uint8 RGB screens of frames [start, stop) (about 100 KB a frame: ask for a range)."""
    out = []
    for frame, rgb in iter_rgb(store, traj_id):
        if stop is not None and frame >= stop:
            break
        if frame >= start:
            out.append(rgb)
    return np.stack(out) if out else np.zeros((0, SCREEN_HEIGHT, SCREEN_WIDTH, 3), np.uint8)


def initial_rgb(store: Store, traj_id: str) -> np.ndarray:
    """The screen after reset, before frame 0's step (the first observation of an environment episode)."""
    from ..core.emulator import EmulatorSpec, fresh_emulator

    emu = fresh_emulator(EmulatorSpec.from_json(read_meta(store, traj_id)["ale"]))
    return emu.screen_rgb()


@dataclass
class TrexObservations:
    """Processed frames of one trajectory and their stacks."""

    traj_id: str
    frames: np.ndarray  # (K, h, w) uint8: processed frame k pools frames frame_skip*k .. frame_skip*k + skip-1
    preprocessing: TrexPreprocessing

    @property
    def stacks(self) -> np.ndarray:
        """(K - stack + 1, h, w, stack) uint8, a view (no copy): observation j is processed frames j .. j+stack-1."""
        s = self.preprocessing.stack
        if self.frames.shape[0] < s:
            return np.zeros((0, *self.frames.shape[1:], s), np.uint8)
        return np.lib.stride_tricks.sliding_window_view(self.frames, s, axis=0)

    def __len__(self) -> int:
        return max(0, self.frames.shape[0] - self.preprocessing.stack + 1)

    def frame_span(self, j: int) -> tuple[int, int]:
        """The first and last emulator frame that observation j is made of."""
        p = self.preprocessing
        return j * p.frame_skip, (j + p.stack) * p.frame_skip - 1


def as_float(obs: np.ndarray) -> np.ndarray:
    """uint8 observations scaled to [0, 1] float32, as T-REX feeds its network."""
    return np.asarray(obs, dtype=np.float32) / np.float32(255.0)


def _process(store: Store, traj_id: str, prep: TrexPreprocessing) -> Iterator[np.ndarray]:
    skip, pool = prep.frame_skip, prep.max_pool
    frames = []
    group: list[np.ndarray] = []
    for frame, rgb in iter_rgb(store, traj_id):
        if frame % skip >= skip - pool:
            group.append(rgb)
        if frame % skip == skip - 1:
            frames.append(np.maximum.reduce(group) if len(group) > 1 else group[0])
            group = []
            if len(frames) == 256:  # resize in batches: one matrix product for many frames
                yield gray_resize(np.stack(frames), prep.height, prep.width)
                frames = []
    if frames:
        yield gray_resize(np.stack(frames), prep.height, prep.width)


def process_trajectory(store: Store, traj_id: str, prep: TrexPreprocessing = TrexPreprocessing()) -> np.ndarray:
    """(K, h, w) uint8 processed frames, computed now (no cache)."""
    meta = read_meta(store, traj_id)
    game = meta["game"]
    batches = list(_process(store, traj_id, prep))
    out = np.concatenate(batches) if batches else np.zeros((0, prep.height, prep.width), np.uint8)
    rects = prep.rects(game)
    if rects:
        out[:, mask_cells(rects, prep.height, prep.width)] = 0
    return out


def cache_key(meta: dict, prep: TrexPreprocessing) -> tuple[str, dict]:
    """A short digest naming the cache entry, and what it digests."""
    key = {
        "cache_version": CACHE_VERSION,
        "ale": ale_py.__version__,
        "rom_md5": meta["ale"].get("rom_md5"),
        "frames_sha256": (meta.get("files") or {}).get("frames.csv", {}).get("sha256"),
        "frames": meta.get("frames"),
        "status": meta.get("status"),
        "preprocessing": prep.key(meta["game"]),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24], key


def trex_observations(
    store: Store,
    traj_id: str,
    prep: TrexPreprocessing = TrexPreprocessing(),
    cache_dir: Path | str | None = DEFAULT_CACHE_DIR,
) -> TrexObservations:
    """A trajectory's T-REX observations: read from the cache, or re-simulated, processed and cached."""
    meta = read_meta(store, traj_id)
    if cache_dir is None:
        return TrexObservations(traj_id, process_trajectory(store, traj_id, prep), prep)
    digest, key = cache_key(meta, prep)
    d = Path(cache_dir) / traj_id
    path = d / f"trex-{digest}.npy"
    if path.exists():
        return TrexObservations(traj_id, np.load(path, mmap_mode="r"), prep)
    frames = process_trajectory(store, traj_id, prep)
    d.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, frames)
    os.replace(tmp, path)
    (d / f"trex-{digest}.json").write_text(json.dumps(key, indent=2) + "\n")
    return TrexObservations(traj_id, frames, prep)
