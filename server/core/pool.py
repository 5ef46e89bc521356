"""The emulators of the process, loaded once per ROM and reused."""

from __future__ import annotations

from .emulator import EmulatorSession


class EmulatorPool:
    """Loaded emulators by ROM id, reused across demonstrators: loading one holds the GIL about 90 ms."""

    def __init__(self, repeat_action_probability: float) -> None:
        self.p = repeat_action_probability
        self._idle: dict[str, list[EmulatorSession]] = {}
        self._loaded: dict[str, int] = {}  # emulators made per ROM, idle or in use

    def _load(self, rom_id: str) -> EmulatorSession:
        emu = EmulatorSession(rom_id, 0, self.p)
        self._loaded[rom_id] = self._loaded.get(rom_id, 0) + 1
        return emu

    def preload(self, rom_id: str, n: int = 1) -> None:
        for _ in range(n):
            self._idle.setdefault(rom_id, []).append(self._load(rom_id))

    def top_up(self, rom_id: str, n: int) -> bool:
        """Load one more emulator of `rom_id` if fewer than `n` were ever made; True if it loaded one. A start-up
        task calls it until every game has as many as the server admits demonstrators: a start then never loads a
        ROM (about 90 ms holding the GIL, a stall of every game of the process; 20 at once froze them for 2 s)."""
        if self._loaded.get(rom_id, 0) >= n:
            return False
        self.preload(rom_id)
        return True

    def loaded(self) -> int:
        """Emulators made since start-up, over every ROM (idle or in use)."""
        return sum(self._loaded.values())

    def idle(self) -> int:
        """Emulators ready for a new demonstrator, over every ROM."""
        return sum(len(v) for v in self._idle.values())

    def acquire(self, rom_id: str) -> EmulatorSession:
        idle = self._idle.get(rom_id)
        if idle:
            return idle.pop()
        return self._load(rom_id)

    def release(self, emu: EmulatorSession) -> None:
        self._idle.setdefault(emu.spec.rom_id, []).append(emu)

    def close(self) -> None:
        """Drop every idle emulator (at shutdown, before the interpreter's: an ALEInterface still alive then is
        reported by nanobind as leaked, about 25 lines at every stop)."""
        self._idle.clear()
