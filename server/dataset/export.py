"""Exports: the Atari Grand Challenge layout (what T-REX's code reads), and (re-exported) Minari datasets.

Atari Grand Challenge (Kurin et al. 2017), as its `agc/dataset.py` reads it:

    <out>/trajectories/<game>/<n>.txt   line 1: the trajectory ID; line 2: frame,reward,score,terminal,action;
                                        then one line per frame, terminal written True/False (AGC v1, T-REX's fork
                                        of agc) or 1/0 (AGC v2): `terminal="bool"|"int"`
    <out>/screens/<game>/<n>/<i>.png    the RGB screen of frame i (after its step), i from 0
    <out>/index.csv                     game,n,traj_id,final_score,status,end_reason (outside both trees, so the
                                        original readers, which list those directories, are not disturbed)

<game> is AGC's own name for its five games (`AGC_GAMES`: pinball for Video Pinball, revenge, mspacman, ...), and
this project's game name for the others.

The Minari export is `minari_export.py`; `export_minari` is re-exported here.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core import format as fmt
from ..core.emulator import SCREEN_HEIGHT, SCREEN_WIDTH
from ..core.reader import read_meta
from ..core.replay import resimulate
from ..parallel import constant, run_jobs
from ..store import Store
from .png import RgbPng, write_file
from .trajectory import TrajectoryInfo, list_trajectories, load

AGC_HEADER = "frame,reward,score,terminal,action"
#: AGC's directory names of its five games (agc/util.py's GAMES), by ALE ROM id.
AGC_GAMES = {
    "space_invaders": "spaceinvaders",
    "qbert": "qbert",
    "ms_pacman": "mspacman",
    "video_pinball": "pinball",
    "montezuma_revenge": "revenge",
}
#: How each dialect writes the terminal column. AGC v1's reader (agc/dataset.py, August 2017) and T-REX's fork of it
#: parse `int(c[3] == "True")`; AGC v2's (October 2017) parses `int(c[3])`, which raises ValueError on "True".
AGC_TERMINALS = {"bool": ("False", "True"), "int": ("0", "1")}


def agc_game(rom_id: str, game: str) -> str:
    """The directory name AGC and T-REX use for a game: AGC's own for its five, else this project's name."""
    return AGC_GAMES.get(rom_id, game)


def select(
    store: Store, game: str | None = None, traj_ids: list[str] | None = None, include_incomplete: bool = False
) -> list[TrajectoryInfo]:
    """The trajectories to export: the named ones, or every complete one (of a game)."""
    if traj_ids:
        wanted = set(traj_ids)
        infos = [t for t in list_trajectories(store) if t.traj_id in wanted]
        missing = wanted - {t.traj_id for t in infos}
        if missing:
            raise KeyError(f"not in {store.url}: {', '.join(sorted(missing))}")
        return infos
    infos = list_trajectories(store, game)
    return [t for t in infos if t.complete or (include_incomplete and t.status != fmt.STATUS_RECORDING)]


# --- Atari Grand Challenge --------------------------------------------------------------------------------------


def export_agc(
    store: Store,
    out: Path | str,
    infos: list[TrajectoryInfo],
    png_compression: int = 1,
    terminal: str = "bool",
    jobs: int = 1,
    setup: Callable[[], Store] | None = None,
    quiet: bool = True,
) -> list[dict]:
    """Write trajectories in the Atari Grand Challenge layout; returns the index rows written.

    `terminal`: "bool" (True/False: AGC v1 and T-REX's fork read it; the default, because T-REX's fork reads 1/0 as
    never terminal without an error, and its agc_demos.py then drops every demonstration but Montezuma's Revenge's)
    or "int" (1/0: AGC v2's reader, which fails loudly on True/False).

    `jobs` trajectories are written at once, one process each (`setup()` opens the store in a worker; default: this
    store, inherited). Numbers are given before any is written, so the files are the same for any `jobs`; index.csv is
    rewritten after each trajectory, in order (an interrupted export resumes where it stopped).
    """
    if terminal not in AGC_TERMINALS:
        raise ValueError(f"terminal must be one of {sorted(AGC_TERMINALS)}, not {terminal!r}")
    out = Path(out)
    by_game: dict[str, list[TrajectoryInfo]] = {}
    for t in sorted(infos, key=lambda t: t.traj_id):
        by_game.setdefault(agc_game(read_meta(store, t.traj_id)["ale"]["rom_id"], t.game), []).append(t)
    index = []
    index_path = out / "index.csv"
    if index_path.exists():
        with open(index_path, newline="") as f:
            index = list(csv.DictReader(f))
    todo: list[_AgcJob] = []
    for game, trajs in by_game.items():
        done = {r["traj_id"] for r in index if r["game"] == game}
        n = max([int(r["n"]) for r in index if r["game"] == game] + [0])
        for t in trajs:
            if t.traj_id not in done:
                n += 1
                todo.append(_AgcJob(t, game, n, out, png_compression, terminal))
    runs = run_jobs(_write_agc, todo, jobs, setup or constant(store), "agc export", quiet, context=store)
    for job, _ in runs:
        t = job.info
        index.append(
            {
                "game": job.game,
                "n": job.n,
                "traj_id": t.traj_id,
                "final_score": t.final_score,
                "status": t.status,
                "end_reason": t.end_reason or "",
            }
        )
        with open(index_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["game", "n", "traj_id", "final_score", "status", "end_reason"])
            w.writeheader()
            w.writerows(index)
    return index


@dataclass(frozen=True)
class _AgcJob:
    info: TrajectoryInfo
    game: str
    n: int
    out: Path
    png_compression: int
    terminal: str


def _write_agc(store: Store, job: _AgcJob) -> None:
    """One trajectory's screens and its trajectory file (written last: a listed trajectory is whole)."""
    t, words = job.info, AGC_TERMINALS[job.terminal]
    tdir, shots = job.out / "trajectories" / job.game, job.out / "screens" / job.game / str(job.n)
    tdir.mkdir(parents=True, exist_ok=True)
    traj = load(store, t.traj_id, speech=False)
    lines = [t.traj_id, AGC_HEADER]
    lines += [
        f"{i},{traj.rewards[i]},{traj.scores[i]},{words[int(traj.terminals[i])]},{traj.actions[i]}"
        for i in range(len(traj))
    ]
    shots.mkdir(parents=True, exist_ok=True)
    png, folder = RgbPng(SCREEN_HEIGHT, SCREEN_WIDTH, job.png_compression), str(shots)
    last_screen, data = b"", b""
    for frame, emu in resimulate(store, t.traj_id):
        # A screen the same as the frame before's (palette indices: 3 us to compare) is written from the same bytes:
        # 23% of Space Invaders' frames, 5% of Pong's, each sparing the RGB screen (33 us) and its PNG (150 us).
        screen = emu.screen().tobytes()
        if screen != last_screen:
            data, last_screen = png.encode(emu.screen_rgb()), screen
        write_file(f"{folder}/{frame}.png", data)
    (tdir / f"{job.n}.txt").write_text("\n".join(lines) + "\n")


# --- Minari -----------------------------------------------------------------------------------------------------


from .minari_export import export_minari, reset_to_ale_seed  # noqa: E402  (the public names of the exports)

__all__ = ["AGC_GAMES", "agc_game", "export_agc", "export_minari", "reset_to_ale_seed", "select"]
