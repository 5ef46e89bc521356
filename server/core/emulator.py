"""One ALE emulator: the real ROM, frame_skip 1, full action space, explicit sticky-action probability.

`EmulatorSpec` holds everything meta.json needs to re-create the emulator for a deterministic replay.
"""

from __future__ import annotations

import hashlib
import zlib
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

    def reset(self, seed: int) -> None:
        """Start a new episode that replays exactly from a fresh load with `seed`.

        Without sticky actions the emulator's RNG never touches the game, and restoring the state saved after the
        load reaches the same state as a fresh load (checked in tests/test_emulator.py), so the loaded ROM is
        reused. With sticky actions the RNG matters, so the ROM is loaded again with the new seed.
        """
        self.spec = EmulatorSpec(**{**self.spec.to_json(), "seed": seed})
        if self.spec.repeat_action_probability > 0:
            self.ale = self._load(self.spec)
        else:
            self.ale.setInt("random_seed", seed)
            self.ale.restoreState(self._start_state)
            self._fresh = True

    def step(self, action: int) -> StepResult:
        self._fresh = False
        reward = self.ale.act(action)
        return StepResult(
            reward=int(reward),
            terminal=bool(self.ale.game_over()),
            lives=int(self.ale.lives()),
            ram_crc32=f"{zlib.crc32(self.ale.getRAM().tobytes()):08x}",
        )

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
