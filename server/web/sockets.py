"""Socket.IO handlers: `GameNamespace`, one short method per client event; the 60 Hz work is elsewhere.

Each method parses its payload (messages.py), then queues onto the demonstrator or asks the study flow
(server/study/flow.py).
A bad message gets an `error` event ({code, message, event}) sent to that client only; docs/protocol.md lists them.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask_socketio import Namespace

from ..core.demonstrator import IDLE, Demonstrator
from ..core.speech import AudioRate
from ..core.storehealth import STORAGE_MESSAGE
from ..errors import BadMessage
from ..games import Game, resolve_game
from ..study import ENTRY_REASONS, FAILURE_REASONS, EpisodePlan
from . import messages as msg
from .guard import FloodLimiter  # noqa: F401  (its home was here)

if TYPE_CHECKING:
    from ..app import ServerState

log = logging.getLogger(__name__)

_ALPHABET = string.ascii_uppercase + string.digits
#: What a tab is told when another tab (or a reload) takes its session over.
SESSION_TAKEN_MESSAGE = "This game continues in another tab or window. You can close this one."


def new_participant_id() -> str:
    """A random participant ID for someone who did not bring one."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(10))


class GameNamespace(Namespace):
    """The default namespace. Every client event comes through `trigger_event` with the client's sid.

    `trigger_event` is the hook Flask-SocketIO documents for custom dispatch. Here it calls the `on_<event>` method
    itself, with the sid, instead of through Flask-SocketIO's wrapper, which builds a Flask request context for
    every message only so that a handler can read `request.sid`: 60 us or more per message on a busy 2-core
    machine, against under 1 us for this dispatch. The frequent events (key, painted, audio, rtt: tens of messages a
    second from each demonstrator) used to be registered with python-socketio's public `Server.on` to skip that
    context; now every event takes the short path, with one dispatch, and a method can be called in a unit test
    without a server (tests/test_namespace.py).
    """

    #: what a client may send; anything else gets `unknown_event`
    EVENTS = frozenset(
        {
            "start",
            "rejoin",
            "key",
            "painted",
            "audio",
            "audio_status",
            "pause",
            "resume",
            "stop",
            "rtt",
            "audio_pending",
            "audio_done",
            "hello",
            "consent",
            "instructions_done",
            "mic_ok",
            "entry_checks",
            "failure",
        }
    )

    def __init__(
        self,
        state: ServerState,
        disconnect: Callable[[str], Any],
        start_task: Callable[..., Any],
    ) -> None:
        super().__init__("/")
        self.state = state
        self.registry = state.registry
        self.flow = state.flow
        self.send = state.runtime.send  # the same path as the game's events, so a client gets them all in order
        self.disconnect = disconnect  # closes a client's connection (socketio.server.disconnect)
        self.start_task = start_task  # runs a demonstrator's background task (socketio.start_background_task)
        self.participant_of: dict[str, str] = {}  # sid -> the participant ID it said hello with (study only)
        self._audio_rates: dict[str, AudioRate] = {}  # sid -> how much audio that connection has sent lately

    # --- dispatch ------------------------------------------------------------------------------------------
    def trigger_event(self, event: str, *args: Any) -> Any:
        """python-socketio calls this with (event, sid, *payload) for every event of the namespace."""
        sid, data = args[0], (args[1] if len(args) > 1 else None)  # a payload's further arguments are ignored
        if event == "connect":
            return True
        if event == "disconnect":
            return self.on_disconnect(sid)
        if not isinstance(event, str) or event not in self.EVENTS:
            name = str(event)[:40]
            return self.emit_error(sid, "unknown_event", f"unknown event {name!r}", name)
        try:
            return getattr(self, "on_" + event)(sid, data)
        except BadMessage as e:
            self.emit_error(sid, e.code, e.message, event)
        except Exception:
            log.exception("handler %s failed", event)
            self.emit_error(sid, "internal", "the server could not handle this message", event)
        return None

    def study_state(self, sid: str, view: dict, pid: str | None = None) -> None:
        """Show the participant their step; the monitor learns (and the log says) where they are."""
        pid = pid or self.participant_of.get(sid)
        if pid:
            self.state.live.stage(pid, view["stage"])
        self.send("study_state", sid, view)

    def emit_error(self, sid: str, code: str, message: str, event: str) -> None:
        self.send("error", sid, {"code": code, "message": message, "event": event})

    # --- sessions ------------------------------------------------------------------------------------------
    def current(self, sid: str) -> Demonstrator:
        d = self.registry.by_sid.get(sid)
        if d is None or d.gone:
            raise BadMessage("no_session", "no game is running for this connection: send start first")
        return d

    def in_episode(self, sid: str) -> Demonstrator:
        d = self.current(sid)
        if d.state == IDLE or d.writer is None:
            raise BadMessage("no_episode", "no episode is running: send start first")
        return d

    def new_demonstrator(self, sid: str, participant: str, game: Game | None, client: dict) -> Demonstrator:
        """A session for this connection, and its background task; `game` None takes the next of the rotation."""
        if self.registry.full():
            raise BadMessage("full", "the server is full, try again later")
        s = self.state
        game = game or s.next_game()
        token = secrets.token_urlsafe(24)
        d = Demonstrator(
            sid, token, participant, game, s.loop_config, s.spool, s.pool, s.runtime, client=client, health=s.storage
        )
        self.registry.add(d)

        def run() -> None:
            try:
                d.run()
            finally:
                self.registry.remove(d)

        self.start_task(run)
        return d

    def resume_session(self, d: Demonstrator, sid: str, take_over: bool) -> None:
        """Bind a demonstrator's session to this connection and resume its episode. `hello` from a reloaded page
        takes over a connection the server still thinks open (it has not seen it close yet); `rejoin` refuses a
        session that is connected from another tab."""
        if d.connected and d.sid != sid:
            if not take_over:
                raise BadMessage("session_in_use", "that session is connected from another tab")
            self.send("session_taken", d.sid, {"message": SESSION_TAKEN_MESSAGE})  # the old tab says so
            d.disconnect()
        self.registry.rebind(d, sid)
        d.reconnect(sid)

    def audio_rate(self, sid: str) -> AudioRate:
        r = self._audio_rates.get(sid)
        if r is None:
            st = self.state.settings
            r = self._audio_rates[sid] = AudioRate(st.audio_rate_max, st.audio_rate_window_s)
        return r

    def on_disconnect(self, sid: str) -> None:
        """The connection closed: the demonstrator's episode pauses and waits for a rejoin."""
        self._audio_rates.pop(sid, None)
        pid = self.participant_of.pop(sid, None)
        if pid is not None:
            self.state.live.disconnected(pid)
        d = self.registry.by_sid.get(sid)
        if d is not None:
            d.disconnect()

    # --- the game ------------------------------------------------------------------------------------------
    def on_start(self, sid: str, data: object = None) -> None:
        data = msg.as_dict(data, "start")
        if not self.state.storage.writable():
            raise BadMessage("storage_error", STORAGE_MESSAGE)
        d = self.registry.by_sid.get(sid)
        if d is not None and not d.gone and not self.flow.enabled:  # the next episode of this connection's session
            if d.state != IDLE:
                raise BadMessage("episode_running", "an episode is already running: stop it before starting another")
            d.start_episode()
            return
        start = msg.parse_start(data, self.state.settings.games)
        if self.flow.enabled:
            self.study_start(sid, start.client)
            return
        participant = start.participant or new_participant_id()
        self.new_demonstrator(sid, participant, start.game, start.client).start_episode()

    def on_rejoin(self, sid: str, data: object = None) -> None:
        d = self.registry.by_token.get(msg.parse_rejoin(data))
        if d is None or d.gone:
            raise BadMessage("unknown_session", "that session has ended; press Start for a new one")
        self.resume_session(d, sid, take_over=False)

    def on_key(self, sid: str, data: object = None) -> None:
        k = msg.parse_key(data)
        d = self.current(sid)
        if d.state == IDLE or d.writer is None:
            return  # a key pressed as the episode closed (or between episodes): nothing to apply it to, no error
        d.key_event(k.seq, k.t, k.key, k.down)

    def on_painted(self, sid: str, data: object = None) -> None:
        acks = msg.parse_paint_acks(data)
        d = self.registry.by_sid.get(sid)
        if d is not None:
            d.painted(acks)

    def on_audio(self, sid: str, data: object = None) -> None:
        chunk = msg.parse_audio(data)
        d = self.current(sid)
        if chunk.painted:  # the client's paint acks ride along with its microphone chunks: one message instead of two
            d.painted(chunk.painted)
        if not self.audio_rate(sid).take(len(chunk.pcm) / 2 / min(max(chunk.rate, 8000), 96000)):
            raise BadMessage(
                "audio_rate", "audio is arriving faster than real time: this chunk was not recorded (check the client)"
            )
        # between episodes not recorded; AudioRejected (a BadMessage) for a chunk outside the limits
        d.audio_chunk(chunk.seq, chunk.first_sample, chunk.t, chunk.rate, chunk.pcm)

    def on_audio_status(self, sid: str, data: object = None) -> None:
        state = msg.parse_audio_status(data)
        self.current(sid).log_event(f"microphone {state}", detail="reported by the client")

    def on_pause(self, sid: str, data: object = None) -> None:
        self.in_episode(sid).pause("pause")

    def on_resume(self, sid: str, data: object = None) -> None:
        self.in_episode(sid).resume()

    def on_stop(self, sid: str, data: object = None) -> None:
        self.in_episode(sid).stop()

    def on_rtt(self, sid: str, data: object = None) -> dict:
        d = self.registry.by_sid.get(sid)
        if d is None:
            return {"server_ms": None}  # the client times the acknowledgement
        ping = msg.parse_rtt(data)
        d.mic_level = ping.mic_level if ping.mic_level is not None else d.mic_level
        if ping.last is not None:
            d.rtt_sample(*ping.last)
        elif ping.rtt_ms is not None:
            d.rtt_ms = ping.rtt_ms
        if ping.queue_ms is not None:
            d.downlink_queue(ping.queue_ms)
        if ping.held_s is not None:
            d.uploads_after_stop = True  # this client sends `audio_done` after `stopping`
        answer = d.ping(ping.t)  # {server_ms}: when this episode's clock got it, for the client's NTP-style sample
        if ping.slip_ms is not None and (slip_from := d.request_slip(ping.slip_ms)) is not None:
            answer["slip_from"] = slip_from
        return answer

    def on_audio_pending(self, sid: str, data: object = None) -> None:
        self.current(sid).audio_pending(msg.parse_audio_pending(data))

    def on_audio_done(self, sid: str, data: object = None) -> None:
        self.current(sid).audio_done()

    # --- the study (transitions in study.StudyFlow) --------------------------------------------------------
    def on_hello(self, sid: str, data: object = None) -> None:
        hello = msg.parse_hello(data)
        if hello.session is not None:
            d = self.registry.by_token.get(hello.session)
            if d is not None and not d.gone and d.sid != sid:
                self.resume_session(d, sid, take_over=True)  # a reload in the middle of an episode resumes it
        pid = None
        if self.flow.enabled:
            pid = self.participant_of[sid] = hello.participant or new_participant_id()
        view = self.flow.hello(pid, hello.recruitment)
        if pid is not None:
            self.study_state(sid, view, pid)
        else:
            self.send("study_state", sid, view)

    def on_entry_checks(self, sid: str, data: object = None) -> None:
        checks = msg.parse_entry_checks(data, ENTRY_REASONS)
        view = self.flow.entry_checks(self.participant_of.get(sid), checks.measured, checks.reasons, checks.give_up)
        self.study_state(sid, view)

    def on_failure(self, sid: str, data: object = None) -> None:
        reason = msg.parse_failure(data, FAILURE_REASONS)
        self.study_failed(sid, reason)

    def study_failed(self, sid: str, reason: str) -> None:
        """The failure outcome; an episode still running ends (as `quit`) and is kept."""
        view = self.flow.fail(self.participant_of.get(sid), reason)
        d = self.registry.by_sid.get(sid)
        if d is not None and not d.gone:
            d.stop()
        self.study_state(sid, view)

    def on_consent(self, sid: str, data: object = None) -> None:
        accept = msg.parse_consent(data)
        self.study_state(sid, self.flow.consent(self.participant_of.get(sid), accept))

    def on_instructions_done(self, sid: str, data: object = None) -> None:
        self.study_state(sid, self.flow.instructions_done(self.participant_of.get(sid)))

    def on_mic_ok(self, sid: str, data: object = None) -> None:
        audio = msg.parse_mic_ok(data)
        self.study_state(sid, self.flow.mic_ok(self.participant_of.get(sid), audio))

    def study_start(self, sid: str, client: dict) -> None:
        pid = self.participant_of.get(sid)
        plan = self.flow.plan_episode(pid)
        d = self.registry.by_sid.get(sid)
        if d is not None and d.state != IDLE:
            raise BadMessage("episode_running", "an episode is already running")
        if d is None or d.gone:
            # meta.json's client: what the page sent, with where the participant came from and what the entry
            # checks measured (the record's copy, as the page may have been reloaded since)
            client = {**self.flow.client_info(pid), **client}
            d = self.new_demonstrator(sid, plan.participant, resolve_game(plan.game), client)
            d.on_episode_end = self.study_episode_end(plan)
        try:
            d.start_episode(practice=plan.practice, time_limit_s=plan.time_limit_s, record=plan.record)
        except OSError:
            # the spool cannot be written (a full disk, permissions): the participant cannot be recorded
            log.exception("cannot record participant %s", plan.participant)
            self.study_failed(sid, "server")

    def study_episode_end(self, plan: EpisodePlan) -> Callable[[Demonstrator, dict], None]:
        """The demonstrator's end-of-episode callback: count the episode, show the participant the next step."""

        def on_end(d: Demonstrator, meta: dict) -> None:
            traj_id = meta["traj_id"] if d.recorded else None
            view = self.flow.episode_ended(plan.participant, bool(meta.get("practice")), meta["frames"], traj_id)
            if view is not None and meta.get("end_reason") == "server error":  # the recording broke off
                view = self.flow.fail(plan.participant, "server")
            if view is not None:
                self.study_state(d.sid, view, plan.participant)

        return on_end
