"""One demonstrator's game: key latching, the 60 Hz absolute-deadline tick, episode lifecycle and recording.

Framework-free: the web layer gives it `send(event, data)`, `sleep(seconds)` and `run_blocking(fn, *args)`, so it
runs under eventlet, gevent or plain threads alike.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import secrets
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field

from . import format as fmt
from .actions import KEYS, keys_label, keys_to_action
from .codec import make_codec, palette_bytes
from .emulator import SCREEN_HEIGHT, SCREEN_WIDTH, EmulatorSession, StepResult
from .recorder import RecordingWriter
from .speech import AudioLimits, AudioRejected

log = logging.getLogger(__name__)

TICK_S = 1.0 / 60.0
HOUSEKEEPING_S = 0.1  # a game's own task wakes this often (or at its countdown's or grace period's end) while it plays
MAX_LAG_S = 0.25  # further behind than this, the loop gives up catching up and restarts its deadline
FLUSH_EVERY = 3  # a pass of the Ticker has the frames it holds written after every this many games (see Ticker)

IDLE, PLAYING, PAUSED, COUNTDOWN, ENDING = "idle", "playing", "paused", "countdown", "ending"


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
        self._due: list[tuple[float, int, int, Demonstrator]] = []  # (deadline, order, generation, game)
        self._order = itertools.count()

    def schedule(self, d: Demonstrator, deadline: float) -> None:
        heapq.heappush(self._due, (deadline, next(self._order), d._tick_gen, d))

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
        due = []
        heap = self._due
        while heap and heap[0][0] <= now:
            deadline, _, gen, d = heapq.heappop(heap)
            if gen == d._tick_gen and d.state == PLAYING and not d.gone:
                due.append((deadline, d))
        stepped = []
        for deadline, d in due:
            try:
                stepped.append((deadline, d, d._step()))
            except Exception:
                d._tick_failed()
        for i, (deadline, d, step) in enumerate(stepped):
            if i and i % FLUSH_EVERY == 0:
                try:
                    self.flush()
                except Exception:  # the frames are lost, not the games: each one still gets its tick and next deadline
                    log.exception("writing the frames of a pass failed")
            try:
                d._after_step(*step)
                d._ticked(now)
            except Exception:
                d._tick_failed()
                continue
            if d.state == PLAYING:
                deadline += TICK_S
                if now - deadline > MAX_LAG_S:
                    deadline = d.rt.phases.next_deadline(now, d._phase)
                self.schedule(d, deadline)


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


class Demonstrator:
    """One person at one browser tab: owns an emulator, a codec stream, and the open trajectory."""

    def __init__(
        self,
        sid: str,
        token: str,
        participant: str,
        game,
        config: LoopConfig,
        store,
        pool: EmulatorPool,
        rt: Runtime,
        client: dict | None = None,
    ) -> None:
        self.sid = sid
        self.token = token
        self.participant = participant
        self.game = game
        self.config = config
        self.store = store
        self.pool = pool
        self.rt = rt
        self.client = client or {}
        self.session_id = secrets.token_hex(8)
        self.state = IDLE
        self.connected = True
        self.gone = False
        self.disconnected_at: float | None = None
        self.episode_index = 0
        self.emu: EmulatorSession | None = None
        self.codec = make_codec(config.codec)
        self.writer: RecordingWriter | None = None
        self.traj_id: str | None = None
        self.frame = 0
        self.score = 0
        self.held: set[str] = set()
        self._key_seq: dict[str, int] = {}
        self._key_queue: list[tuple] = []
        self._countdown_end = 0.0
        self._end_at = 0.0
        self._end_reason = ""
        self._end_status = fmt.STATUS_COMPLETE
        self._phase: float | None = None  # this game's tick phase (TickPhases), claimed when it first plays
        self._tick_gen = 0  # bumped each time play (re)starts: the Ticker drops deadlines of an older generation
        self._last_tick: float | None = None
        self._play_time_s = 0.0
        self.fps = 0.0
        self._fps_window: array = array("d")
        self._audio_stalled = False
        self.practice = False
        self.recorded = True
        self.episode_limit_s: float | None = config.episode_time_limit_s
        self.on_episode_end: Callable | None = None
        self.rtt_ms: float | None = None
        self.mic_level: float | None = None

    # --- handlers call these (validated input only); they queue, never step --------------------------------
    def key_event(self, seq: int, t: float, key: str, down: bool) -> None:
        self._key_queue.append((seq, t, key, down))

    def painted(self, acks: list[tuple[int, float]]) -> None:
        if self.writer is not None and not self.writer.closed:
            for frame, t in acks:
                self.writer.painted(frame, t)

    def audio_chunk(self, seq: int, first_sample: int, t: float, rate: int, pcm: bytes) -> bool:
        """Queue a microphone chunk into the open episode; AudioRejected if it breaks a limit."""
        w = self.writer
        if w is None or w.closed or w.speech is None:
            return False  # between episodes the microphone is not recorded
        fresh = w.speech.add(seq, first_sample, t, rate, pcm, now=self.rt.clock())
        if self._audio_stalled:
            self._audio_stalled = False
            self.log_event("audio resumed")
            self.send("audio_status", {"ok": True})
        return fresh

    def _check_audio(self) -> None:
        """A microphone that delivered audio and then stopped is reported on screen and in the log."""
        sp = self.writer.speech if self.writer is not None else None
        if sp is None or sp.last_arrival is None or self._audio_stalled:
            return
        if self.rt.clock() - sp.last_arrival > self.config.audio_stall_s:
            self._audio_stalled = True
            self.log_event("audio stalled", detail=f"no audio for {self.config.audio_stall_s:g}s")
            self.send(
                "audio_status",
                {
                    "ok": False,
                    "message": "Your microphone stopped sending audio. Check that it is connected and not muted.",
                },
            )

    def log_event(self, event: str, detail: str | None = None) -> None:
        if self.writer is not None and not self.writer.closed:
            self.writer.append_event(event, frame=self.frame, detail=detail)

    def start_episode(self, practice: bool = False, time_limit_s: float | None = None, record: bool = True) -> str:
        """Open a new trajectory and start stepping; returns its ID.

        An unrecorded episode (a practice round) is written to a scratch directory and deleted when it ends.
        """
        if self.state not in (IDLE,):
            raise RuntimeError("an episode is already running; stop it first")
        if self.emu is None:
            self.emu = self.pool.acquire(self.game.rom)
        seed = secrets.randbelow(2**31 - 1)
        self.emu.reset(seed)
        self.practice = practice
        self.recorded = record
        self.episode_limit_s = time_limit_s if time_limit_s is not None else self.config.episode_time_limit_s
        if record:
            self.episode_index += 1
        while True:
            n = self.episode_index if record else secrets.randbelow(10**9)
            traj_id = fmt.make_traj_id(self.game.name, self.participant, n)
            if record and self.store.reserved(traj_id):
                self.episode_index += 1
                continue
            root = self.store.spool_dir() if record else self.store.spool_dir() / ".scratch"
            writer = RecordingWriter(root / traj_id, self.config.audio_limits)
            try:
                writer.open(self._meta(traj_id))
                break
            except FileExistsError:
                self.episode_index += 1
        self.writer, self.traj_id = writer, traj_id
        self.frame = 0
        self.score = 0
        self.held.clear()
        self._key_seq.clear()
        self._key_queue.clear()
        self._play_time_s = 0.0
        self._audio_stalled = False
        self.codec.force_keyframe()
        self.writer.append_event("start", frame=0)
        self.send("episode", self.episode_payload())
        self._play()
        return traj_id

    def episode_payload(self, resumed: bool = False) -> dict:
        return {
            "traj_id": self.traj_id,
            "game": self.game.name,
            "title": self.game.title,
            "keys": self.game.keys,  # the page's key help (roms/games.json)
            "width": SCREEN_WIDTH,
            "height": SCREEN_HEIGHT,
            "codec": self.codec.name,
            "palette": palette_bytes(),
            "frame": self.frame,
            "resumed": resumed,
            "session": self.token,
            "participant": self.participant,
            "time_limit_s": self.episode_limit_s,
            "practice": self.practice,
            "recorded": self.recorded,
        }

    def _meta(self, traj_id: str) -> dict:
        assert self.emu is not None
        return {
            "traj_id": traj_id,
            "game": self.game.name,
            "ale": self.emu.spec.to_json(),
            "participant": self.participant,
            "session_id": self.session_id,
            "episode_index": self.episode_index,
            "codec": self.codec.name,
            "episode_time_limit_s": self.episode_limit_s,
            "practice": self.practice,
            "client": self.client,
        }

    def pause(self, reason: str = "pause") -> None:
        if self.state in (PLAYING, COUNTDOWN):
            self.state = PAUSED
            self.log_event(reason)
            if self.held:
                self.log_event("keys released", detail=keys_label(self.held))
                self.held.clear()
            self.send("paused", {"reason": reason, "frame": self.frame})

    def resume(self) -> None:
        if self.state == PAUSED and self.connected:
            self.state = COUNTDOWN
            self._countdown_end = self.rt.clock() + self.config.resume_countdown_s
            self.log_event("resume", detail=f"countdown {self.config.resume_countdown_s:g}s")
            self.send("countdown", {"seconds": self.config.resume_countdown_s, "frame": self.frame})

    def stop(self) -> None:
        if self.state in (PLAYING, PAUSED, COUNTDOWN):
            self._begin_end(fmt.QUIT)

    def disconnect(self) -> None:
        self.connected = False
        self.disconnected_at = self.rt.clock()
        if self.writer is not None and not self.writer.closed:
            self.log_event("disconnect")
        self.pause("disconnect")

    def reconnect(self, sid: str) -> None:
        self.sid = sid
        self.connected = True
        self.disconnected_at = None
        self.codec.force_keyframe()
        if self.state in (PAUSED, COUNTDOWN):
            self.log_event("reconnect")
            self.send("episode", self.episode_payload(resumed=True))
            self.send("frame", self.codec.encode(max(self.frame - 1, 0), self.emu.screen()), self.codec.discard_last)
            self.state = PAUSED
            self.resume()

    def send(self, event: str, data: object, on_drop: Callable[[], None] | None = None) -> bool:
        """Send to the client; False if it was not sent (not connected). A frame that does not reach the client (not
        connected, or dropped on a congested link) calls `on_drop`: at once, or when the transport writes the batch of
        frames it belongs to (always before this game's next tick)."""
        if self.connected:
            return self.rt.send(event, self.sid, data, on_drop) is not False
        if on_drop is not None:
            on_drop()
        return False

    # --- the tick -----------------------------------------------------------------------------------------
    def _play(self) -> None:
        """Enter PLAYING and hand this game to the process's Ticker, due at its phase's next tick."""
        rt = self.rt
        if self._phase is None:
            self._phase = rt.phases.claim(self)
        self.state = PLAYING
        self._tick_gen += 1
        self._last_tick = None
        rt.ticker.schedule(self, rt.phases.next_deadline(rt.clock(), self._phase))

    def tick(self) -> None:
        """One frame: apply the queued keys, step the emulator, record, send."""
        self._after_step(*self._step())

    def _step(self) -> tuple[int, StepResult]:
        assert self.emu is not None and self.writer is not None
        if self._key_queue:
            events = sorted(self._key_queue)
            self._key_queue.clear()
            for seq, t, key, down in events:
                stale = seq <= self._key_seq.get(key, -1)
                if not stale:
                    self._key_seq[key] = seq
                    if down:
                        self.held.add(key)
                    else:
                        self.held.discard(key)
                self.writer.append_event(
                    "key", frame=self.frame, seq=seq, client_ms=t, key=key, down=down, detail="stale" if stale else None
                )
        action = keys_to_action(self.held)
        return action, self.emu.step(action)

    def _after_step(self, action: int, r: StepResult) -> None:
        assert self.emu is not None and self.writer is not None
        self.score += r.reward
        self.writer.append_step(
            self.frame,
            r.reward,
            self.score,
            r.terminal,
            action,
            r.lives,
            keys_label(self.held),
            r.ram_crc32,
            self.writer.server_ms(),
        )
        self.writer.append_game_audio(self.emu.audio())
        self.send("frame", self.codec.encode(self.frame, self.emu.screen()), self.codec.discard_last)
        if self.frame % 15 == 0 or r.reward:
            self.send("hud", {"frame": self.frame, "score": self.score, "lives": r.lives})
            if self.frame % 60 == 0:
                self._check_audio()
        self.frame += 1
        self._play_time_s += TICK_S
        if r.terminal:
            self._begin_end(fmt.GAME_OVER)
        elif self.episode_limit_s and self._play_time_s >= self.episode_limit_s - 1e-9:
            self._begin_end(fmt.TIME_LIMIT)

    def _ticked(self, now: float) -> None:
        if self._last_tick is not None and self.writer is not None:
            self.writer.tick_intervals.append((now - self._last_tick) * 1000.0)
        self._last_tick = now
        self._fps_window.append(now)
        if len(self._fps_window) > 120:
            del self._fps_window[:60]

    def _tick_failed(self) -> None:
        """A tick raised: the episode is closed as interrupted by this game's own task (closing blocks)."""
        log.exception("tick failed for %s; closing its episode", self.traj_id)
        self.state = ENDING
        self._end_reason = "server error"
        self._end_status = fmt.STATUS_INTERRUPTED
        self._end_at = self.rt.clock()

    def _begin_end(self, reason: str) -> None:
        self.state = ENDING
        self._end_reason = reason
        self._end_status = fmt.STATUS_COMPLETE
        self._end_at = self.rt.clock() + self.config.end_grace_s
        if self.writer is not None:
            self.writer.append_event("stop", frame=self.frame, detail=reason)

    def finish_episode(self, status: str, reason: str) -> dict | None:
        """Close the files (blocking work in a real thread) and tell the client."""
        writer, self.writer = self.writer, None
        self.state = IDLE
        if writer is None or writer.closed:
            return None
        writer.append_event("end", frame=self.frame, detail=reason)
        writer.flush(final=True)
        meta = self.rt.run_blocking(writer.close, status, reason)
        if not self.recorded:
            import shutil

            self.rt.run_blocking(shutil.rmtree, writer.dir, True)
        self.send(
            "episode_end",
            {
                "traj_id": meta["traj_id"] if self.recorded else None,
                "reason": reason,
                "score": meta["final_score"],
                "frames": meta["frames"],
                "status": status,
                "practice": self.practice,
                "recorded": self.recorded,
            },
        )
        if self.on_episode_end is not None:
            try:
                self.on_episode_end(self, meta)
            except Exception:
                log.exception("study bookkeeping failed after %s", meta.get("traj_id"))
        return meta

    def run(self) -> None:
        """The demonstrator's background task: everything but the ticks (the Ticker's): countdowns, the end of an
        episode, a disconnect's grace period."""
        try:
            self._run()
        finally:
            self.rt.phases.release(self)

    def _run(self) -> None:
        rt = self.rt
        while not self.gone:
            now = rt.clock()
            if self.state == COUNTDOWN and now >= self._countdown_end:
                self.log_event("play")
                self._play()
                continue
            if self.state == ENDING and now >= self._end_at:
                self.finish_episode(self._end_status, self._end_reason)
            if not self.connected and self.disconnected_at is not None:
                if now - self.disconnected_at >= self.config.reconnect_grace_s or self.state == IDLE:
                    self.finish_episode(fmt.STATUS_INTERRUPTED, fmt.DISCONNECT)
                    self.gone = True
                    break
            wait = HOUSEKEEPING_S
            if self.state == COUNTDOWN:
                wait = min(wait, self._countdown_end - now)
            elif self.state == ENDING:
                wait = min(wait, self._end_at - now)
            rt.sleep(max(wait, 0.0))

    def measured_fps(self) -> float:
        w = self._fps_window
        if len(w) < 2:
            return 0.0
        span = w[-1] - w[0]
        return (len(w) - 1) / span if span > 0 else 0.0

    def release(self) -> None:
        if self.emu is not None:
            self.pool.release(self.emu)
            self.emu = None


class Registry:
    """All demonstrators of this process, by socket id and by reconnect token."""

    def __init__(self, max_demonstrators: int) -> None:
        self.max = max_demonstrators
        self.by_sid: dict[str, Demonstrator] = {}
        self.by_token: dict[str, Demonstrator] = {}

    def active(self) -> int:
        return sum(1 for d in self.by_token.values() if not d.gone)

    def full(self) -> bool:
        return self.active() >= self.max

    def add(self, d: Demonstrator) -> None:
        self.by_sid[d.sid] = d
        self.by_token[d.token] = d

    def rebind(self, d: Demonstrator, sid: str) -> None:
        self.by_sid.pop(d.sid, None)
        self.by_sid[sid] = d

    def remove(self, d: Demonstrator) -> None:
        if self.by_sid.get(d.sid) is d:
            del self.by_sid[d.sid]
        if self.by_token.get(d.token) is d:
            del self.by_token[d.token]
        d.release()

    def shutdown(self) -> list[str]:
        """Close every open episode as interrupted (server stop); returns their IDs."""
        closed = []
        for d in list(self.by_token.values()):
            if d.writer is not None and not d.writer.closed:
                d.writer.append_event("end", frame=d.frame, detail=fmt.SERVER_STOP)
                d.writer.flush(final=True)
                meta = d.writer.close(fmt.STATUS_INTERRUPTED, fmt.SERVER_STOP)
                closed.append(meta["traj_id"])
            d.gone = True
        return closed


__all__ = ["AudioRejected", "Demonstrator", "EmulatorPool", "LoopConfig", "Registry", "Runtime", "TickPhases", "KEYS"]
