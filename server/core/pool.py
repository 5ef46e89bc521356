"""The emulators of the process, loaded once per ROM and reused."""

from __future__ import annotations

from .emulator import EmulatorSession


class EmulatorPool:
    """Loaded emulators by ROM id, reused across demonstrators: loading one holds the GIL about 90 ms."""

    def __init__(self, repeat_action_probability: float) -> None:
        self.p = repeat_action_probability
        self._idle: dict[str, list[EmulatorSession]] = {}

    def preload(self, rom_id: str, n: int = 1) -> None:
        for _ in range(n):
            self._idle.setdefault(rom_id, []).append(EmulatorSession(rom_id, 0, self.p))

    def acquire(self, rom_id: str) -> EmulatorSession:
        idle = self._idle.get(rom_id)
        if idle:
            return idle.pop()
        return EmulatorSession(rom_id, 0, self.p)

    def release(self, emu: EmulatorSession) -> None:
        self._idle.setdefault(emu.spec.rom_id, []).append(emu)
