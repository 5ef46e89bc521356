"""Opening and closing one demonstrator's episodes: the trajectory's ID and writer, meta.json, the end's grace period
and audio drain, a failed write, and the close that tells the client and the study. A mixin of the Demonstrator
(server.core.demonstrator), and the episode's states.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from typing import TYPE_CHECKING

from ..errors import BadMessage
from . import format as fmt
from .codec import palette_bytes
from .emulator import SCREEN_HEIGHT, SCREEN_WIDTH
from .recorder import RecordingWriter
from .storehealth import STORAGE_MESSAGE

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..spool import Spool
    from .codec import FrameCodec
    from .connection import Connection
    from .emulator import EmulatorSession
    from .pool import EmulatorPool
    from .runtime import LoopConfig, Runtime
    from .storehealth import StoreHealth

log = logging.getLogger("server.core.demonstrator")  # the episode start and end lines log under the Demonstrator's name

IDLE, PLAYING, PAUSED, COUNTDOWN, ENDING = "idle", "playing", "paused", "countdown", "ending"


class Episodes:
    """The Demonstrator's episode lifecycle. A mixin rather than an object the Demonstrator owns: opening and closing
    an episode sets the same state the ticks and the handlers use (`state`, `writer`, `frame`, `score`, the end's
    reason and time, the key queue), so a separate object would only reach back into the Demonstrator for all of it.
    """

    if TYPE_CHECKING:  # what these methods use of the Demonstrator (server.core.demonstrator), which sets it
        rt: Runtime
        config: LoopConfig
        spool: Spool
        pool: EmulatorPool
        health: StoreHealth | None
        conn: Connection
        codec: FrameCodec
        game: Any
        client: dict
        token: str
        participant: str
        session_id: str
        state: str
        emu: EmulatorSession | None
        writer: RecordingWriter | None
        traj_id: str | None
        episode_index: int
        frame: int
        score: int
        practice: bool
        recorded: bool
        played: bool
        episode_limit_s: float | None
        on_episode_end: Callable | None
        uploads_after_stop: bool
        held: set[str]
        _key_seq: dict[str, int]
        _key_queue: list[tuple]
        _play_time_s: float
        _audio_stalled: bool
        _draining: bool
        _end_at: float
        _end_reason: str
        _end_status: str

        def send(self, event: str, data: object, on_drop: Callable[[], None] | None = None) -> bool: ...
        def log_event(self, event: str, detail: str | None = None) -> None: ...
        def _play(self) -> None: ...

    def start_episode(self, practice: bool = False, time_limit_s: float | None = None, record: bool = True) -> str:
        """Open a new trajectory and start stepping; returns its ID.

        An unrecorded episode (a practice round) is written to a scratch directory and deleted when it ends.
        """
        if self.state not in (IDLE,):
            raise RuntimeError("an episode is already running; stop it first")
        if self.emu is None:
            self.emu = self.pool.acquire(self.game.rom)
        # a Gymnasium-level seed, from which ALE's is derived as Gymnasium derives it: a Minari export's recovered
        # environment then replays the episode with env.reset(seed=gym_seed), sticky actions included
        self.emu.reset_gym(secrets.randbelow(2**31 - 1))
        self.practice = practice
        self.recorded = record
        self.episode_limit_s = time_limit_s if time_limit_s is not None else self.config.episode_time_limit_s
        if record:
            self.episode_index += 1
        while True:
            n = self.episode_index if record else secrets.randbelow(10**9)
            traj_id = fmt.make_traj_id(self.game.name, self.participant, n)
            if record and self.spool.reserved(traj_id):
                self.episode_index += 1
                continue
            writer = RecordingWriter(self.spool.trajectory_dir(traj_id, record), self.config.audio_limits)
            try:
                writer.open(self._meta(traj_id))
                break
            except FileExistsError:
                self.episode_index += 1
            except OSError as e:  # the store cannot be written: nothing starts, the half-made directory goes
                writer.close_after_error(fmt.STATUS_INTERRUPTED, fmt.STORAGE_ERROR, e)
                shutil.rmtree(writer.dir, ignore_errors=True)
                if self.health is not None:
                    self.health.failed(e)
                raise BadMessage("storage_error", STORAGE_MESSAGE) from None
        self.writer, self.traj_id = writer, traj_id
        self.played = False
        self.frame = 0
        self.score = 0
        self.held.clear()
        self._key_seq.clear()
        self._key_queue.clear()
        self._play_time_s = 0.0
        self._audio_stalled = False
        self.conn.new_episode()
        self._draining = False
        self.codec.force_keyframe()
        self.writer.append_event("start", frame=0)
        log.info(
            "episode start: %s (participant %s, game %s%s)",
            traj_id,
            self.participant,
            self.game.name,
            ", practice" if practice else "",
        )
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
            "audio_format": self.config.audio_format,
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
            "audio_format": self.config.audio_format,
            "episode_time_limit_s": self.episode_limit_s,
            "practice": self.practice,
            "client": self.client,
        }

    def storage_failed(self, e: OSError) -> None:
        """A write of this episode failed (a full disk, a read-only file system, a quota): it ends now, as
        interrupted with the reason `storage_error`; this game's own task closes what was written (finish_episode)."""
        if self.health is not None:
            self.health.failed(e)
        if self.writer is not None:
            self.writer.failed = self.writer.failed or e
        if self.state == IDLE or (self.state == ENDING and self._end_reason == fmt.STORAGE_ERROR):
            return
        log.info("%s: a write failed (%s); closing it as interrupted", self.traj_id, e)
        self.state = ENDING
        self._end_reason = fmt.STORAGE_ERROR
        self._end_status = fmt.STATUS_INTERRUPTED
        self._end_at = self.rt.clock()

    def _begin_end(self, reason: str, status: str = fmt.STATUS_COMPLETE) -> None:
        self.state = ENDING
        self._end_reason = reason
        self._end_status = status
        self._end_at = self.rt.clock() + self.config.end_grace_s
        if self.writer is not None:
            self.writer.append_event("stop", frame=self.frame, detail=reason)
        # the client sends the audio it still holds (and says `audio_pending`, then `audio_done`) before the close; a
        # client that holds audio back waits for that from now (its `audio_pending` may be stuck behind its audio)
        sp = self.writer.speech if self.writer is not None else None
        if self.uploads_after_stop and sp is not None and sp.rate is not None:
            self._draining = True
            self._end_at = self.rt.clock() + self.config.end_upload_max_s
        self.send("stopping", {"reason": reason, "frame": self.frame})

    def audio_pending(self, seconds: float) -> None:
        """The client still holds this much audio after the episode stopped: keep it open (at most end_upload_max_s)
        until `audio_done`."""
        if self.state == ENDING and self.writer is not None and not self.writer.closed:
            self._draining = True
            self._end_at = max(self._end_at, self.rt.clock() + self.config.end_upload_max_s)
            self.log_event("audio upload", detail=f"{seconds:.1f}s held by the client")

    def audio_done(self) -> None:
        """The client has sent all its audio: close soon (its last chunks may still be in handlers)."""
        if self.state == ENDING and self._draining:
            self._draining = False
            self._end_at = min(self._end_at, self.rt.clock() + 0.3)

    def finish_episode(self, status: str, reason: str) -> dict | None:
        """Close the files (blocking work in a real thread) and tell the client."""
        writer, self.writer = self.writer, None
        self.state = IDLE
        if writer is None or writer.closed:
            return None
        for seq, t, key, down in sorted(self._key_queue):  # keys that came after the last step: logged, not applied
            writer.append_event("key", frame=self.frame, seq=seq, client_ms=t, key=key, down=down, detail="after stop")
        self._key_queue.clear()
        writer.append_event("end", frame=self.frame, detail=reason)
        try:
            if writer.failed is not None:
                raise writer.failed
            writer.flush(final=True)
            meta = self.rt.run_blocking(writer.close, status, reason, {"connection": self.conn.meta()})
        except OSError as e:  # whatever reached the disk stays; the episode ends as interrupted (storage_error)
            if self.health is not None:
                self.health.failed(e)
            status, reason = fmt.STATUS_INTERRUPTED, fmt.STORAGE_ERROR
            meta = self.rt.run_blocking(writer.close_after_error, status, reason, e)
            # The study flow (issue 18) gives this the technical-failure outcome: its on_episode_end sees
            # meta["end_reason"] == fmt.STORAGE_ERROR.
            self.send("storage_error", {"traj_id": meta.get("traj_id"), "message": STORAGE_MESSAGE})
        if not self.recorded:
            self.rt.run_blocking(shutil.rmtree, writer.dir, True)
        log.info(
            "episode end: %s (participant %s, %s, %s, %d frames, score %s)",
            meta["traj_id"],
            self.participant,
            status,
            reason,
            meta["frames"],
            meta["final_score"],
        )
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
