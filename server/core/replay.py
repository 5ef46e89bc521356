"""Deterministic replay: re-simulate a trajectory from its seed and actions and check every frame against the log."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ReplayDivergence, TrajectoryNotFound
from . import format as fmt
from .emulator import EmulatorSession, EmulatorSpec, StepResult

VERIFIED_FIELDS = ("reward", "terminal", "lives", "ram_crc32")


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


def load_meta(store, traj_id: str) -> dict:
    fmt.validate_traj_id(traj_id)
    try:
        return json.loads(store.get(f"{traj_id}/{fmt.META}"))
    except KeyError:
        raise TrajectoryNotFound(f"no trajectory {traj_id!r} in {store.url}") from None


def load_steps(store, traj_id: str) -> list[LoggedStep]:
    fmt.validate_traj_id(traj_id)
    try:
        text = store.get(f"{traj_id}/{fmt.FRAMES}").decode()
    except KeyError:
        raise TrajectoryNotFound(f"trajectory {traj_id!r} has no {fmt.FRAMES} in {store.url}") from None
    steps = []
    for row in csv.DictReader(io.StringIO(text)):
        steps.append(
            LoggedStep(
                int(row["frame"]),
                int(row["reward"]),
                int(row["score"]),
                row["terminal"] == "1",
                int(row["action"]),
                int(row["lives"]),
                row["keys"],
                row["ram_crc32"],
            )
        )
    return steps


def replay(store, traj_id: str, sound: bool = False) -> Iterator[ReplayFrame]:
    """Re-simulate from the seed; yield every frame; raise ReplayDivergence at the first disagreement."""
    meta = load_meta(store, traj_id)
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


def verify(store, traj_id: str) -> int:
    """Re-simulate a whole trajectory; return its frame count or raise ReplayDivergence."""
    n = 0
    for _ in replay(store, traj_id):
        n += 1
    return n
