"""Replay and verify in one process: a loaded emulator is reused from one trajectory to the next (a ROM load is 110-125
ms of CPU), and what they check and show is still a fresh load's; the log is compared as the recorder wrote it."""

import csv

import numpy as np
import pytest
from trex_recordings import offline_trajectory

from server.core import emulator
from server.core import format as fmt
from server.core.emulator import EmulatorSpec, fresh_emulator
from server.core.reader import read_frames, read_meta
from server.core.replay import replay, resimulate, verify
from server.errors import ReplayDivergence
from server.store import open_store


@pytest.fixture
def counted_loads(monkeypatch):
    """The ROM ids this test's replays loaded, none idle to start with."""
    loads: list[str] = []

    def load(spec, sound=False):
        loads.append(spec.rom_id)
        return fresh_emulator(spec, sound)

    monkeypatch.setattr(emulator, "_IDLE", {})
    monkeypatch.setattr(emulator, "fresh_emulator", load)
    return loads


def fresh_screens(store, traj_id: str) -> list[bytes]:
    emu = fresh_emulator(EmulatorSpec.from_json(read_meta(store, traj_id)["ale"]))
    return [(emu.step(a), emu.screen().tobytes())[1] for a in read_frames(store, traj_id)["action"].tolist()]


def test_replays_load_a_rom_once_and_play_as_a_fresh_load(tmp_path, counted_loads):
    a = offline_trajectory(tmp_path, "pong", "pong", "A", 1, 3, 0.5, 300)
    b = offline_trajectory(tmp_path, "pong", "pong", "B", 1, 4, 0.8, 300)
    store = open_store(str(tmp_path))
    half = replay(store, a)
    for _ in range(100):
        next(half)
    half.close()  # its emulator goes back mid-episode
    assert [rf.screen().tobytes() for rf in replay(store, b)] == fresh_screens(store, b)
    assert [emu.screen().tobytes() for _, emu in resimulate(store, a)] == fresh_screens(store, a)
    assert verify(store, a) == verify(store, b) == 300
    assert counted_loads == ["pong"]
    nested = [
        (x.screen().tobytes(), y.screen().tobytes()) for x, y in zip(replay(store, a), replay(store, b), strict=True)
    ]
    assert nested == list(zip(fresh_screens(store, a), fresh_screens(store, b), strict=True))
    assert counted_loads == ["pong", "pong"]  # two at once: a second emulator


def test_a_crc_not_written_as_the_recorder_writes_it_diverges(tmp_path, counted_loads):
    traj_id = offline_trajectory(tmp_path, "pong", "pong", "C", 1, 5, 0.5, 200)
    path = tmp_path / traj_id / fmt.FRAMES
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    frame = next(i for i, r in enumerate(rows) if i > 50 and r["ram_crc32"] != r["ram_crc32"].upper())
    logged = rows[frame]["ram_crc32"]
    rows[frame]["ram_crc32"] = logged.upper()  # the same number, not the recorder's lowercase
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(ReplayDivergence) as e:
        verify(open_store(str(tmp_path)), traj_id)
    assert (e.value.frame, e.value.field, e.value.expected, e.value.actual) == (
        frame,
        "ram_crc32",
        logged.upper(),
        logged,
    )


def test_outcomes_are_what_step_gives():
    actions = np.random.default_rng(5).integers(0, 18, 500).tolist()
    stepped, fast = emulator.EmulatorSession("space_invaders", 9), emulator.EmulatorSession("space_invaders", 9)
    results = [stepped.step(a) for a in actions]
    assert list(fast.outcomes(actions)) == [(r.reward, r.terminal, r.lives, int(r.ram_crc32, 16)) for r in results]
    assert fast.screen().tobytes() == stepped.screen().tobytes()
