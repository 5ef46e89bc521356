"""One demonstrator's game: key latching, the ticks and recording, pause and reconnect, the microphone. The process's
Ticker (server.core.ticker) drives its ticks through its step interface (`step`, `finish_step`, ...). Its episodes are
opened and closed by the `Episodes` mixin (server.core.episode); its client's connection and flow control are a
`Connection` it owns (server.core.connection).

Framework-free: the web layer gives it `send(event, data)`, `sleep(seconds)` and `run_blocking(fn, *args)`, so it
runs under eventlet, gevent or plain threads alike.
"""

from __future__ import annotations

import logging
import secrets
from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import format as fmt
from .actions import keys_label, keys_to_action
from .codec import make_codec
from .connection import Connection
from .emulator import EmulatorSession, StepResult
from .episode import COUNTDOWN, ENDING, IDLE, PAUSED, PLAYING, Episodes
from .pool import EmulatorPool
from .recorder import RecordingWriter
from .runtime import LoopConfig, Runtime
from .storehealth import StoreHealth
from .ticker import TICK_S

if TYPE_CHECKING:
    from ..spool import Spool

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 0.1  # a game's own task wakes this often (or at its countdown's or grace period's end) while it plays


class Demonstrator(Episodes):
    """One person at one browser tab: owns an emulator, a codec stream, and the open trajectory."""

    def __init__(
        self,
        sid: str,
        token: str,
        participant: str,
        game,
        config: LoopConfig,
        spool: Spool,
        pool: EmulatorPool,
        rt: Runtime,
        client: dict | None = None,
        health: StoreHealth | None = None,
    ) -> None:
        self.sid = sid
        self.token = token
        self.participant = participant
        self.game = game
        self.config = config
        self.spool = spool
        self.pool = pool
        self.rt = rt
        self.client = client or {}
        self.health = health  # the store's state: a write error closes the episode (storage_failed)
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
        self._keyed = False  # a key event was applied this tick: its frame goes (Connection.next_frame)
        self.practice = False
        self.recorded = True
        self.episode_limit_s: float | None = config.episode_time_limit_s
        self.on_episode_end: Callable | None = None
        self.mic_level: float | None = None
        self.played = False  # the client painted a frame of this episode: only then does a disconnect hold the slot
        # how the client's connection is doing, and how many frames it may get
        self.conn = Connection(rt, config, self.log_event, self.send)
        self._draining = False
        self.uploads_after_stop = False  # the client said it holds audio back (`held_s` in its pings)

    # --- handlers call these (validated input only); they queue, never step --------------------------------
    def key_event(self, seq: int, t: float, key: str, down: bool) -> None:
        self._key_queue.append((seq, t, key, down))

    def painted(self, acks: Sequence[tuple]) -> None:
        """Paint acks `(frame, client ms[, shown])`: they pace the frames (flow control) and go into frames.csv."""
        # an ack of a frame not sent yet (an old episode's) is stale
        last, t = max(((a[0], a[1]) for a in acks if a[0] < self.frame), default=(-1, 0.0))
        if last > self.conn.acked:
            self.conn.ack(last, t)
        if last >= 0 and self.writer is not None:
            self.played = True
        if self.writer is not None and not self.writer.closed:
            for a in acks:
                self.writer.painted(a[0], a[1], a[2] if len(a) > 2 else True)

    def downlink_queue(self, queue: float) -> None:
        """The client's report of the downlink's queue (ms): the frames' byte budget follows it (Connection)."""
        self.conn.downlink_queue(queue, self.state == PLAYING)

    # --- the connection (server.core.connection): round trips, how slow it is ---------------------------------
    def ping(self, client_ms: float | None) -> dict:
        """The client's `rtt` ping, sent at `client_ms`: answered with when the server got it (this episode's ms)."""
        return self.conn.ping(client_ms, self.writer)

    def rtt_sample(self, client_send_ms: float, client_recv_ms: float) -> None:
        """The client had the answer to its ping sent at `client_send_ms` at `client_recv_ms`: a round trip sample,
        recorded (rtt.csv) when the ping was answered in this episode."""
        self.conn.rtt_sample(client_send_ms, client_recv_ms, self.writer)

    @property
    def rtt_ms(self) -> float | None:
        """The client's latest round trip (ms)."""
        return self.conn.rtt_ms

    @rtt_ms.setter
    def rtt_ms(self, value: float | None) -> None:  # a client that measures it itself says so in its pings
        self.conn.rtt_ms = value

    @property
    def send_rate(self) -> float | None:
        """Bytes a second the frames may use; None: no limit."""
        return self.conn.send_rate

    @property
    def skipped_frames(self) -> int:
        """Frames not sent because the client lagged, this process."""
        return self.conn.skipped_frames

    def connection_status(self) -> dict:
        """What the monitor shows live (/api/admin/sessions)."""
        return self.conn.status()

    def _check_connection(self) -> None:
        """While playing: warn the participant after `slow_for_s` of a slow connection; end the episode as a
        technical failure after `drop_after_slow_s` of it, when that is set (Connection.check)."""
        if self.conn.check(self.state == PLAYING):
            self._begin_end(fmt.TECHNICAL_FAILURE, fmt.STATUS_INTERRUPTED)

    def audio_chunk(self, seq: int, first_sample: int, t: float, rate: int, pcm: bytes) -> bool:
        """Queue a microphone chunk into the open episode; AudioRejected if it breaks a limit."""
        w = self.writer
        if w is None or w.closed or w.speech is None or w.failed is not None:
            return False  # between episodes the microphone is not recorded
        try:
            fresh = w.speech.add(seq, first_sample, t, rate, pcm, now=self.rt.clock())
        except OSError as e:
            self.storage_failed(e)
            return False
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
        self.conn.acked = self.frame - 1  # the new connection's lag counts from here
        self.conn.reset_flow()
        if self.state in (PAUSED, COUNTDOWN):
            assert self.emu is not None  # a paused episode has its emulator
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
        self.conn.reset_flow()
        self._tick_gen += 1
        self._last_tick = None
        assert rt.ticker is not None
        rt.ticker.schedule(self, self.deadline_after(rt.clock()))

    def tick(self) -> None:
        """One frame: apply the queued keys, step the emulator, record, send."""
        self.finish_step(self.step())

    # --- the step interface the Ticker drives (server.core.ticker.Tickable) ---------------------------------
    @property
    def tick_generation(self) -> int:
        """Bumped each time play (re)starts: the Ticker drops deadlines of an older generation."""
        return self._tick_gen

    @property
    def playing(self) -> bool:
        return self.state == PLAYING and not self.gone

    def deadline_after(self, now: float) -> float:
        """This game's first tick time at or after `now`, on its phase."""
        assert self._phase is not None
        return self.rt.phases.next_deadline(now, self._phase)

    def request_slip(self, ms: float) -> int | None:
        """The client asks for this game's next tick `ms` later (Connection.request_slip): the first frame that comes
        later when granted, else None."""
        return self.frame + 1 if self.conn.request_slip(ms, self.playing) else None

    def pop_slip(self) -> float:
        return self.conn.pop_slip()

    def step(self) -> tuple[int, StepResult]:
        """The first half of a tick: apply the queued keys and step the emulator; returns (action, result) for
        `finish_step`. The Ticker steps every due game back to back before finishing any (see Ticker)."""
        assert self.emu is not None and self.writer is not None
        if self._key_queue:
            events = sorted(self._key_queue)
            self._key_queue.clear()
            for seq, t, key, down in events:
                stale = seq <= self._key_seq.get(key, -1)
                if not stale:
                    self._keyed = True
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

    def finish_step(self, stepped: tuple[int, StepResult], now: float | None = None) -> None:
        """The second half of a tick: record, encode and send the frame `step` made; `now` (the Ticker's pass) is
        counted in the episode's tick intervals and the measured frame rate."""
        self._after_step(*stepped)
        if now is not None:
            self._ticked(now)

    def tick_failed(self) -> None:
        """A tick raised: the episode is closed as interrupted by this game's own task (closing blocks)."""
        log.exception("tick failed for %s; closing its episode", self.traj_id)
        self.state = ENDING
        self._end_reason = "server error"
        self._end_status = fmt.STATUS_INTERRUPTED
        self._end_at = self.rt.clock()

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
        emu, codec, frame = self.emu, self.codec, self.frame
        # flow control (Connection.next_frame): a frame over the client's budget is skipped, not encoded
        keyed, self._keyed = self._keyed, False
        data, behind = self.conn.next_frame(frame, lambda: codec.encode(frame, emu.screen()), keyed)
        if data is not None:
            self.send("frame", data, codec.discard_last)
        if self.frame % 15 == 0 or r.reward:
            if not behind:
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
            self._check_connection()
            if not self.connected and self.disconnected_at is not None:
                # the reconnect grace holds the slot only for an episode the client has played (painted a frame of)
                waited = now - self.disconnected_at
                if waited >= self.config.reconnect_grace_s or self.state == IDLE or not self.played:
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
