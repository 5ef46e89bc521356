"""Deterministic replay: re-simulate a trajectory from its seed and actions and check every frame against the log."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ReplayDivergence
from ..store.base import Store
from .emulator import EmulatorSession, EmulatorSpec, StepResult
from .reader import read_frames, read_meta

VERIFIED_FIELDS = ("reward", "terminal", "lives", "ram_crc32")
#: The frames.csv columns a LoggedStep holds, in its fields' order.
LOGGED_COLUMNS = ("frame", "reward", "score", "terminal", "action", "lives", "keys", "ram_crc32")


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
    frames = read_frames(store, traj_id)
    cols = [frames[name].tolist() for name in LOGGED_COLUMNS]
    return [
        LoggedStep(frame, reward, score, terminal == 1, action, lives, keys, crc)
        for frame, reward, score, terminal, action, lives, keys, crc in zip(*cols, strict=True)
    ]


def replay(store: Store, traj_id: str, sound: bool = False) -> Iterator[ReplayFrame]:
    """Re-simulate from the seed; yield every frame; raise ReplayDivergence at the first disagreement."""
    meta = read_meta(store, traj_id)
    steps = load_steps(store, traj_id)
    spec = EmulatorSpec.from_json(meta["ale"])
    emu = EmulatorSession(spec.rom_id, spec.seed, spec.repeat_action_probability, sound=sound)
    if spec.rom_md5 and emu.spec.rom_md5 != spec.rom_md5:
        raise ReplayDivergence(traj_id, 0, "rom_md5", spec.rom_md5, emu.spec.rom_md5)
    for i, step in enumerate(steps):
        if step.frame != i:
            raise ReplayDivergence(traj_id, i, "frame", i, step.frame)
        result = emu.step(step.action)
        for field in VERIFIED_FIELDS:
            expected, actual = getattr(step, field), getattr(result, field)
            if expected != actual:
                raise ReplayDivergence(traj_id, step.frame, field, expected, actual)
        yield ReplayFrame(step, result, emu)


def verify(store: Store, traj_id: str) -> int:
    """Re-simulate a whole trajectory; return its frame count or raise ReplayDivergence."""
    n = 0
    for _ in replay(store, traj_id):
        n += 1
    return n
