"""One ALE emulator: the real ROM, frame_skip 1, full action space, explicit sticky-action probability.

`EmulatorSpec` holds everything meta.json needs to re-create the emulator for a deterministic replay.

Seeds: an episode is seeded the way Gymnasium's `AtariEnv.reset(seed=s)` seeds ALE (ale_py/env.py, `seed_game`):
the recorder draws a Gymnasium-level seed `s`, and ALE gets `gym_ale_seed(s)`, derived through NumPy's
SeedSequence. meta.json keeps both: `ale.seed` is the seed ALE was given (what replay uses, as in every older
recording) and `ale.gym_seed` is `s`, so `env.reset(seed=s)` on the recovered environment of a Minari export replays
the episode exactly, sticky actions included. The other way round is not possible: no Gymnasium seed is known that
derives a given ALE seed (finding one means inverting SeedSequence's hash, about 2**32 tries).
"""

from __future__ import annotations

import atexit
import hashlib
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import ale_py
import numpy as np
from ale_py import ALEInterface, LoggerMode, roms

ALEInterface.setLoggerMode(LoggerMode.Error)

SCREEN_HEIGHT, SCREEN_WIDTH = 210, 160
AUDIO_SAMPLES_PER_FRAME = 512
GAME_AUDIO_RATE = 30720  # 512 samples x 60 frames/s


@cache
def rom_md5(path: str) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def gym_ale_seed(gym_seed: int) -> int:
    """The ALE seed Gymnasium's `AtariEnv.reset(seed=gym_seed)` gives ALE (ale-py 0.12's `seed_game`).

    `np.int32` of the second SeedSequence word, as ale-py passes it to `setInt("random_seed", ...)`: it may be negative.
    """
    _np_seed, ale_seed = np.random.SeedSequence(gym_seed).generate_state(n_words=2)
    return int(ale_seed.astype(np.int32))


@dataclass(frozen=True)
class EmulatorSpec:
    """What re-creates an emulator exactly: written to meta.json's `ale` object."""

    rom_id: str
    seed: int
    repeat_action_probability: float = 0.0
    frame_skip: int = 1
    mode: int = 0
    difficulty: int = 0
    full_action_space: bool = True
    rom_md5: str = ""
    version: str = ale_py.__version__
    #: The Gymnasium-level seed `seed` was derived from (`gym_ale_seed`); None in recordings made before it existed
    #: (their `seed` went to ALE directly) and when an emulator was seeded with an ALE seed.
    gym_seed: int | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> EmulatorSpec:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class StepResult:
    """The outcome of one `act()`."""

    reward: int
    terminal: bool
    lives: int
    ram_crc32: str


class EmulatorSession:
    """A loaded ROM. Loading costs about 90 ms with the GIL held, so callers reuse one across episodes.

    A new episode restores the state the ROM had right after it was loaded and reset (`cloneState` then): ALE's own
    `reset_game` emulates about 60 frames, 4 ms holding the GIL, a stall for every other game of the process.
    tests/test_emulator.py checks that the restored emulator plays exactly like a fresh load, frame by frame.
    """

    def __init__(
        self,
        rom_id: str,
        seed: int,
        repeat_action_probability: float = 0.0,
        sound: bool = True,
        rom_path: str | None = None,
    ) -> None:
        path = rom_path or str(roms.get_rom_path(rom_id))
        if path is None or not Path(path).exists():
            raise FileNotFoundError(f"no ROM for {rom_id!r}")
        self._path = path
        self._sound = sound
        self.spec = EmulatorSpec(
            rom_id=rom_id, seed=seed, repeat_action_probability=repeat_action_probability, rom_md5=rom_md5(path)
        )
        self.ale = self._load(self.spec)  # also sets _start_state, _start_screen and _fresh

    def _load(self, spec: EmulatorSpec) -> ALEInterface:
        ale = ALEInterface()
        ale.setInt("random_seed", spec.seed)
        ale.setFloat("repeat_action_probability", spec.repeat_action_probability)
        ale.setInt("frame_skip", spec.frame_skip)
        ale.setBool("sound_obs", self._sound)
        ale.loadROM(self._path)
        ale.setMode(spec.mode)
        ale.setDifficulty(spec.difficulty)
        ale.reset_game()
        self._start_state = ale.cloneState()  # what reset() restores
        self._start_screen = ale.getScreen()
        self._fresh = True  # no step since the load or reset: ALE's screen buffer may still hold the last episode's
        return ale

    def reset(self, seed: int, gym_seed: int | None = None) -> None:
        """Start a new episode that replays exactly from a fresh load with the ALE seed `seed`.

        Without sticky actions the emulator's RNG never touches the game, and restoring the state saved after the
        load reaches the same state as a fresh load (checked in tests/test_emulator.py), so the loaded ROM is
        reused. With sticky actions the RNG matters, so the ROM is loaded again with the new seed. `gym_seed` is
        only recorded: the Gymnasium seed `seed` was derived from, if it was (see `reset_gym`).
        """
        self.spec = EmulatorSpec(**{**self.spec.to_json(), "seed": seed, "gym_seed": gym_seed})
        if self.spec.repeat_action_probability > 0:
            self.ale = self._load(self.spec)
        else:
            self.ale.setInt("random_seed", seed)
            self.ale.restoreState(self._start_state)
            self._fresh = True

    def reset_gym(self, gym_seed: int) -> None:
        """Start a new episode seeded as Gymnasium's `reset(seed=gym_seed)` seeds ALE (what the recorder does)."""
        self.reset(gym_ale_seed(gym_seed), gym_seed=gym_seed)

    def step(self, action: int) -> StepResult:
        self._fresh = False
        reward = self.ale.act(action)
        return StepResult(
            reward=int(reward),
            terminal=bool(self.ale.game_over()),
            lives=int(self.ale.lives()),
            ram_crc32=f"{zlib.crc32(self.ale.getRAM().tobytes()):08x}",
        )

    def outcomes(self, actions: Sequence[int]) -> Iterator[tuple[int, bool, int, int]]:
        """Step through `actions`, giving after each (reward, terminal, lives, CRC32 of the RAM as an int): step()
        without its per-frame objects, for replay, which checks every frame of a trajectory. step() costs about 4 us
        a frame beyond ALE's own 75-90 us (a StepResult 1.2 us, getRAM's new array 0.9 us, the CRC's hex string
        0.4 us); this about 1 us (the RAM read into one array, 0.4 us)."""
        self._fresh = False
        ale, crc32 = self.ale, zlib.crc32
        act, game_over, lives, get_ram = ale.act, ale.game_over, ale.lives, ale.getRAM
        ram = np.empty(ale.getRAMSize(), np.uint8)
        ram_bytes = ram.data  # a view: sees what getRAM writes into `ram`
        for action in actions:
            reward = act(action)
            get_ram(ram)
            yield reward, game_over(), lives(), crc32(ram_bytes)

    def screen(self) -> np.ndarray:
        """Palette indices, (210, 160) uint8, a new array each time."""
        if self._fresh:
            return self._start_screen.copy()
        return self.ale.getScreen()

    def screen_rgb(self) -> np.ndarray:
        return self.ale.getScreenRGB()

    def audio(self) -> np.ndarray:
        """The last frame's game sound: 512 unsigned 8-bit samples."""
        return self.ale.getAudio()


def fresh_emulator(spec: EmulatorSpec, sound: bool = False) -> EmulatorSession:
    """An emulator freshly loaded from a recorded spec (replay starts here)."""
    emu = EmulatorSession(spec.rom_id, spec.seed, spec.repeat_action_probability, sound=sound)
    return emu


#: Loaded emulators this process re-simulated with and is not using, by (ROM id, sound), at most _IDLE_MAX of each.
#: ALE's loadROM takes 110-125 ms of CPU (Space Invaders and Pong alike), as long as re-simulating 1,300-1,600
#: frames, and a study's trajectories are 20-60 s long (1,200-3,600 frames): loading one per trajectory made verify
#: take 1.6-2.6x the time of ALE's steps alone on 8 Space Invaders games of 20-48 s (tests/trex_recordings.py's
#: player); a reset idle one plays exactly as a fresh load (tests/test_emulator.py), as the server's pool relies on.
_IDLE: dict[tuple[str, bool], list[EmulatorSession]] = {}
_IDLE_MAX = 2
_IDLE_LOCK = threading.Lock()
# dropped before the interpreter finalises, as the server's EmulatorPool.close does: nanobind reported ALEInterfaces
# still alive then as leaked (pool workers leave by os._exit, which skips both)
atexit.register(_IDLE.clear)


@contextmanager
def replay_emulator(spec: EmulatorSpec, sound: bool = False) -> Iterator[EmulatorSession]:
    """An emulator that plays as `fresh_emulator(spec, sound)` does: one this process used before and put back,
    reset to the spec's seed, when there is one (sticky actions excepted: their reset loads the ROM again anyway).
    It goes back to the idle ones when the block ends; nothing else may step it after that."""
    key = (spec.rom_id, sound)
    reuse = spec.repeat_action_probability == 0
    emu = None
    if reuse:
        with _IDLE_LOCK:
            idle = _IDLE.get(key)
            emu = idle.pop() if idle else None
    if emu is None:
        emu = fresh_emulator(spec, sound)
    else:
        emu.reset(spec.seed)
    try:
        yield emu
    finally:
        if reuse:
            with _IDLE_LOCK:
                idle = _IDLE.setdefault(key, [])
                if len(idle) < _IDLE_MAX:
                    idle.append(emu)
