"""What a game loop is given: its settings (`LoopConfig`, a slice of server.settings.Settings) and what the async mode
provides (`Runtime`: send, sleep, blocking work in a thread, the clock, the tick phases and the process's Ticker)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .speech import AudioLimits
from .ticker import Ticker, TickPhases


@dataclass(frozen=True)
class LoopConfig:
    """The settings a game loop needs (a slice of server.settings.Settings)."""

    codec: str = "xor"
    repeat_action_probability: float = 0.0
    episode_time_limit_s: float | None = None
    resume_countdown_s: float = 3.0
    end_grace_s: float = 1.0
    reconnect_grace_s: float = 120.0
    audio_limits: AudioLimits = AudioLimits()
    audio_stall_s: float = 2.0
    audio_format: str = "pcm16k"
    slow_rtt_ms: float = 250.0
    slow_for_s: float = 5.0
    drop_after_slow_s: float | None = None
    end_upload_max_s: float = 60.0


@dataclass
class Runtime:
    """What the async mode provides (one per process, shared by its demonstrators)."""

    send: Callable[..., bool | None]  # (event, sid, data, on_drop=None) -> False if not sent; see Demonstrator.send
    sleep: Callable[[float], None]
    run_blocking: Callable = field(default=lambda fn, *a: fn(*a))
    clock: Callable[[], float] = time.monotonic
    phases: TickPhases = field(default_factory=TickPhases)
    flush: Callable[[], None] = field(default=lambda: None)  # writes the frames `send` holds (see Ticker)
    ticker: Ticker | None = None  # made from `clock` and `flush` when not given; the web layer runs `ticker.run(sleep)`

    def __post_init__(self) -> None:
        if self.ticker is None:
            self.ticker = Ticker(self.clock, self.flush)
