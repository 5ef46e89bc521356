"""The process's 60 Hz clock: `TickPhases` spreads the games' ticks over the period, and one `Ticker` steps every
playing game of the process from one task, on each game's absolute deadline, through the game's step interface
(`Tickable`: a Demonstrator)."""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

TICK_S = 1.0 / 60.0
MAX_LAG_S = 0.25  # further behind than this, the loop gives up catching up and restarts its deadline
FLUSH_EVERY = 3  # a pass of the Ticker has the frames it holds written after every this many games (see Ticker)


class Tickable(Protocol):
    """The step interface the Ticker drives (server.core.demonstrator.Demonstrator)."""

    @property
    def tick_generation(self) -> int:
        """Bumped each time play (re)starts: a deadline scheduled under an older generation is stale."""
        ...

    @property
    def playing(self) -> bool:
        """Whether the game is to be ticked at all (playing, and its demonstrator not gone)."""
        ...

    def step(self) -> Any:
        """The tick's first half: apply the queued keys and step the emulator; returns what `finish_step` takes."""
        ...

    def finish_step(self, stepped: Any, now: float | None = None) -> None:
        """The tick's second half: record, encode and send the frame `step` made; `now` is the pass's time."""
        ...

    def tick_failed(self) -> None:
        """`step` or `finish_step` raised: the game's episode is closed as interrupted (by its own task)."""
        ...

    def deadline_after(self, now: float) -> float:
        """The game's first tick time at or after `now` (on its phase)."""
        ...

    def pop_slip(self) -> float:
        """Seconds (0 to a period) the game's next tick is to come later than its schedule, once: its client asked,
        to have its frames ready just before its screen's refresh (server.core.connection.Connection.request_slip)."""
        ...


class TickPhases:
    """Spreads the demonstrators' ticks evenly over the 1/60 s period.

    Each demonstrator ticks at `phase + k * TICK_S`. Demonstrators that start together (a study's cohort, a restart)
    would otherwise tick in one burst every period, and the last of the burst would wait for all the others: with 32
    of them that alone put the p99 frame interval near 20 ms at half a core. A new demonstrator takes the middle of
    the widest gap between the phases already taken.
    """

    def __init__(self, period: float = TICK_S) -> None:
        self.period = period
        self._taken: dict[object, float] = {}

    def claim(self, owner: object) -> float:
        phases = sorted(self._taken.values())
        if not phases:
            phase = 0.0
        else:
            gaps = [((phases[(i + 1) % len(phases)] - p) % self.period or self.period, p) for i, p in enumerate(phases)]
            width, start = max(gaps)
            phase = (start + width / 2) % self.period
        self._taken[owner] = phase
        return phase

    def release(self, owner: object) -> None:
        self._taken.pop(owner, None)

    def next_deadline(self, now: float, phase: float) -> float:
        """The first tick time at or after `now` on this phase."""
        return phase + math.ceil((now - phase) / self.period) * self.period


class Ticker:
    """Steps every playing game of the process from one task, on each game's absolute deadline.

    A game is due at `phase + k * TICK_S` (see TickPhases). All games due at one pass are stepped back to back, then
    each one's frame is recorded, encoded and sent: ALE's emulation runs faster with its code and data still in the
    CPU's caches than after the interpreter and the network stack have run in between, and one task saves a task
    switch and a timer per tick. A game that falls more than MAX_LAG_S behind restarts its deadline.

    The web layer holds the frames sent during a pass and writes them together when the pass ends (writes made back
    to back share the peer's wake-up). A pass usually holds one to three games; a long one (the Ticker fell behind,
    and many games are due at once) has `flush` write what it holds after every FLUSH_EVERY games, so no frame waits
    for a dozen others to be encoded: that wait was 1.5-2.5 ms of the p99 frame interval at 56-64 demonstrators.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, flush: Callable[[], None] = lambda: None) -> None:
        self.clock = clock
        self.flush = flush
        self._due: list[tuple[float, int, int, Tickable]] = []  # (deadline, order, generation, game)
        self._order = itertools.count()

    def schedule(self, d: Tickable, deadline: float) -> None:
        heapq.heappush(self._due, (deadline, next(self._order), d.tick_generation, d))

    def next_wait(self, now: float) -> float:
        """Seconds until the next game is due (a full period when none plays)."""
        return min(self._due[0][0] - now, TICK_S) if self._due else TICK_S

    def run(self, sleep: Callable[[float], None]) -> None:
        """The process's ticking task: runs until the process ends. A failure outside any one game's tick (each
        game's own failure closes only its episode) is logged and the ticking goes on: this task stopping would
        freeze every game of the process."""
        while True:
            now = self.clock()
            wait = self.next_wait(now)
            if wait > 0:
                sleep(wait)
                continue
            try:
                self.tick_due(now)
            except Exception:
                log.exception("a pass of the ticker failed; ticking goes on")

    def tick_due(self, now: float) -> None:
        """Tick every game due at `now`, in deadline order."""
        due: list[tuple[float, Tickable]] = []
        heap = self._due
        while heap and heap[0][0] <= now:
            deadline, _, gen, d = heapq.heappop(heap)
            if gen == d.tick_generation and d.playing:
                due.append((deadline, d))
        stepped: list[tuple[float, Tickable, object]] = []
        for deadline, d in due:
            try:
                stepped.append((deadline, d, d.step()))
            except Exception:
                d.tick_failed()
        for i, (deadline, d, step) in enumerate(stepped):
            if i and i % FLUSH_EVERY == 0:
                try:
                    self.flush()
                except Exception:  # the frames are lost, not the games: each one still gets its tick and next deadline
                    log.exception("writing the frames of a pass failed")
            try:
                d.finish_step(step, now)
            except Exception:
                d.tick_failed()
                continue
            if d.playing:
                deadline += TICK_S + d.pop_slip()
                if now - deadline > MAX_LAG_S:
                    deadline = d.deadline_after(now)
                self.schedule(d, deadline)
