"""Deterministic replay: re-simulate a trajectory from its seed and actions and check every frame against the log."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ReplayDivergence
from ..store.base import Store
from .emulator import EmulatorSession, EmulatorSpec, StepResult, replay_emulator
from .reader import Frames, read_frames, read_meta

VERIFIED_FIELDS = ("reward", "terminal", "lives", "ram_crc32")
#: The frames.csv columns a LoggedStep holds, in its fields' order.
LOGGED_COLUMNS = ("frame", "reward", "score", "terminal", "action", "lives", "keys", "ram_crc32")
#: How the recorder writes a RAM CRC32 (f"{crc:08x}"); a logged value of any other form matches no re-simulation.
_CRC_RE = re.compile(r"[0-9a-f]{8}")
_HEX_RE = re.compile(r"[0-9a-f]*")


@dataclass(frozen=True)
class LoggedStep:
    frame: int
    reward: int
    score: int
    terminal: bool
    action: int
    lives: int
    keys: str
    ram_crc32: str


@dataclass
class ReplayFrame:
    """One re-simulated step, checked against its logged row."""

    step: LoggedStep
    result: StepResult
    emulator: EmulatorSession

    def screen(self) -> np.ndarray:
        return self.emulator.screen()


def load_steps(store: Store, traj_id: str) -> list[LoggedStep]:
    """The logged rows of a trajectory (server.core.reader), as steps to check re-simulation against."""
    return _steps(read_frames(store, traj_id))


def _steps(frames: Frames) -> list[LoggedStep]:
    cols = [frames[name].tolist() for name in LOGGED_COLUMNS]
    return [
        LoggedStep(frame, reward, score, terminal == 1, action, lives, keys, crc)
        for frame, reward, score, terminal, action, lives, keys, crc in zip(*cols, strict=True)
    ]


def _checked(traj_id: str, frames: Frames, emu: EmulatorSession) -> Iterator[int]:
    """Step `emu` through the logged actions, yielding each frame number once its step agrees with its row; raise
    ReplayDivergence at the first disagreement, as the log has it (a frame out of order is one).

    The log's columns are Python lists, compared with ALE's values as they come (the CRC as an int): 1.6 us a frame
    beside ALE's 70 us (Pong, 4 minutes, the same emulation timed both ways), where a StepResult, the comparison by
    field name and a ReplayFrame took 7.6 us, and making the LoggedSteps 3-5 us more.
    """
    n = len(frames)
    out_of_order = np.flatnonzero(frames["frame"] != np.arange(n))
    stop = int(out_of_order[0]) if out_of_order.size else n
    actions = frames["action"][:stop].tolist()
    rewards = frames["reward"].tolist()
    terminals = (frames["terminal"] == 1).tolist()
    lives = frames["lives"].tolist()
    crcs = _crc_ints(frames["ram_crc32"].tolist())
    for i, (reward, terminal, life, crc) in enumerate(emu.outcomes(actions)):
        if reward != rewards[i] or terminal != terminals[i] or life != lives[i] or crc != crcs[i]:
            actual = {"reward": reward, "terminal": terminal, "lives": life, "ram_crc32": f"{crc:08x}"}
            logged = {"reward": rewards[i], "terminal": terminals[i], "lives": lives[i]}
            logged["ram_crc32"] = str(frames["ram_crc32"][i])
            field = next(f for f in VERIFIED_FIELDS if logged[f] != actual[f])
            raise ReplayDivergence(traj_id, i, field, logged[field], actual[field])
        yield i
    if stop < n:
        raise ReplayDivergence(traj_id, stop, "frame", stop, int(frames["frame"][stop]))


def _crc_ints(logged: list[str]) -> list[int]:
    """The logged CRCs as ints, -1 for one not in the recorder's form. A column all in that form (as every recording
    is) is read at once, in 0.8 ms for 4 minutes of play where a regular expression and int() for each took 10 ms."""
    joined = "".join(logged)
    if all(len(c) == 8 for c in logged) and _HEX_RE.fullmatch(joined):
        return np.frombuffer(bytes.fromhex(joined), ">u4").tolist()
    return [int(c, 16) if _CRC_RE.fullmatch(c) else -1 for c in logged]


def _log(store: Store, traj_id: str) -> tuple[Frames, EmulatorSpec]:
    """frames.csv and the emulator's spec (meta.json first: an unknown trajectory is TrajectoryNotFound)."""
    meta = read_meta(store, traj_id)
    return read_frames(store, traj_id), EmulatorSpec.from_json(meta["ale"])


def _check_rom(traj_id: str, spec: EmulatorSpec, emu: EmulatorSession) -> None:
    if spec.rom_md5 and emu.spec.rom_md5 != spec.rom_md5:
        raise ReplayDivergence(traj_id, 0, "rom_md5", spec.rom_md5, emu.spec.rom_md5)


def resimulate(store: Store, traj_id: str, sound: bool = False) -> Iterator[tuple[int, EmulatorSession]]:
    """(frame, emulator right after that frame's step) for every frame, checked as `replay` checks it, without its
    per-frame objects; the emulator is this process's to reuse once the iteration ends (or is abandoned)."""
    frames, spec = _log(store, traj_id)
    with replay_emulator(spec, sound) as emu:
        _check_rom(traj_id, spec, emu)
        for i in _checked(traj_id, frames, emu):
            yield i, emu


def replay(store: Store, traj_id: str, sound: bool = False) -> Iterator[ReplayFrame]:
    """Re-simulate from the seed; yield every frame; raise ReplayDivergence at the first disagreement."""
    frames, spec = _log(store, traj_id)
    steps = _steps(frames)
    with replay_emulator(spec, sound) as emu:
        _check_rom(traj_id, spec, emu)
        for i in _checked(traj_id, frames, emu):
            step = steps[i]
            # checked: the re-simulated reward, terminal, lives and CRC are the logged ones
            yield ReplayFrame(step, StepResult(step.reward, step.terminal, step.lives, step.ram_crc32), emu)


def verify(store: Store, traj_id: str) -> int:
    """Re-simulate a whole trajectory; return its frame count or raise ReplayDivergence."""
    frames, spec = _log(store, traj_id)
    with replay_emulator(spec) as emu:
        _check_rom(traj_id, spec, emu)
        n = 0
        for _ in _checked(traj_id, frames, emu):
            n += 1
        return n
