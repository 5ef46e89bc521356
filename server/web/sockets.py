"""Socket.IO handlers. Each one validates its payload, then queues or delegates; the 60 Hz work is elsewhere.

A bad message gets an `error` event ({code, message, event}) sent to that client only.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import secrets
import string
import time

from flask import request
from flask_socketio import SocketIO

from ..core import format as fmt
from ..core.actions import KEYS
from ..core.loop import IDLE, Demonstrator
from ..core.speech import AudioRejected
from ..errors import UnknownGame
from ..games import resolve_game
from ..study import next_stage, public_state, record_episode, remaining_s

log = logging.getLogger(__name__)

MAX_CLIENT_INFO_BYTES = 4096
MAX_PAINT_ACKS = 600
MAX_TOKEN_LEN = 64
_ALPHABET = string.ascii_uppercase + string.digits


class BadMessage(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def new_participant_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(10))


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _drop_spoofed_reserved_events(socketio: SocketIO) -> None:
    """A client may send an event *named* connect or disconnect; python-socketio would hand it to the real connect
    and disconnect handlers with shifted arguments (found by tests/test_fuzz.py). Such events are dropped."""
    server = socketio.server
    original = server._handle_event

    def guarded(eio_sid, namespace, id, data):
        if isinstance(data, list) and data and data[0] in ("connect", "disconnect", "connect_error"):
            log.info("dropped a client event named %r", data[0])
            return None
        return original(eio_sid, namespace, id, data)

    server._handle_event = guarded


def init_socketio(socketio: SocketIO, state) -> None:
    registry = state.registry
    _drop_spoofed_reserved_events(socketio)
    study_cfg = state.study
    participants = state.participants
    sid_participant: dict[str, str] = {}
    rates: dict[str, list] = {}
    send = state.runtime.send  # the same path as the game's events, so a client gets them all in order

    def emit_error(code: str, message: str, event: str, sid: str | None = None) -> None:
        send("error", sid or request.sid, {"code": code, "message": message, "event": event})

    def flooding(sid: str | None = None) -> bool:
        """Count this client's messages per second; past the limit it is disconnected (the others carry on)."""
        sid = sid or request.sid
        now = time.monotonic()
        r = rates.setdefault(sid, [now, 0])
        if now - r[0] >= 1.0:
            r[0], r[1] = now, 0
        r[1] += 1
        if r[1] > state.settings.max_messages_per_s:
            if r[1] == state.settings.max_messages_per_s + 1:
                log.warning(
                    "client %s sent over %d messages in a second: disconnected", sid, state.settings.max_messages_per_s
                )
                emit_error("flood", "too many messages: this connection is closed", "*", sid)
                socketio.server.disconnect(sid)
            return True
        return False

    def handler(event: str):
        """Register an event handler that turns bad input into an `error` for that client, never a crash."""

        def wrap(fn):
            @functools.wraps(fn)
            def inner(*args):
                if flooding():
                    return None
                try:
                    return fn(*args)
                except BadMessage as e:
                    emit_error(e.code, e.message, event)
                except Exception:
                    log.exception("handler %s failed", event)
                    emit_error("internal", "the server could not handle this message", event)

            socketio.on_event(event, inner)
            return inner

        return wrap

    def fast_handler(event: str):
        """Like `handler`, for what every demonstrator sends many times a second (key, painted, audio, rtt):
        registered on python-socketio itself, so no Flask request context is built per message. The function gets
        the client's sid and the payload."""

        def wrap(fn):
            @functools.wraps(fn)
            def inner(sid, *args):
                if flooding(sid):
                    return None
                try:
                    return fn(sid, args[0] if args else None)
                except BadMessage as e:
                    emit_error(e.code, e.message, event, sid)
                except Exception:
                    log.exception("handler %s failed", event)
                    emit_error("internal", "the server could not handle this message", event, sid)

            socketio.server.on(event, inner)
            return inner

        return wrap

    def current(sid: str | None = None) -> Demonstrator:
        d = registry.by_sid.get(sid or request.sid)
        if d is None or d.gone:
            raise BadMessage("no_session", "no game is running for this connection: send start first")
        return d

    def in_episode(sid: str | None = None) -> Demonstrator:
        d = current(sid)
        if d.state == IDLE or d.writer is None:
            raise BadMessage("no_episode", "no episode is running: send start first")
        return d

    def as_dict(data: object, event: str) -> dict:
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise BadMessage("bad_payload", f"{event} expects an object, got {type(data).__name__}")
        return data

    @socketio.on("connect")
    def on_connect(auth=None):
        return True

    @handler("start")
    def on_start(data=None):
        data = as_dict(data, "start")
        d = registry.by_sid.get(request.sid)
        if d is not None and not d.gone and not study_cfg.enabled:
            if d.state != IDLE:
                raise BadMessage("episode_running", "an episode is already running: stop it before starting another")
            d.start_episode()
            return
        game = None
        if data.get("game") is not None:
            raw = data["game"]
            if not isinstance(raw, str) or len(raw) > 64:
                raise BadMessage("unknown_game", "game must be a short string naming a game")
            try:
                game = resolve_game(raw)
            except UnknownGame:
                game = None
            if game is None or game.name not in state.settings.games:
                raise BadMessage(
                    "unknown_game", f"unknown game {raw[:64]!r}; this server offers: {', '.join(state.settings.games)}"
                )
        client = data.get("client") or {}
        if not isinstance(client, dict) or len(json.dumps(client, default=str)) > MAX_CLIENT_INFO_BYTES:
            raise BadMessage("bad_payload", f"client must be an object of at most {MAX_CLIENT_INFO_BYTES} bytes")
        if study_cfg.enabled:
            study_start(client)
            return
        participant = fmt.sanitize_participant(data.get("participant")) or new_participant_id()
        if registry.full():
            raise BadMessage("full", "the server is full, try again later")
        new_demonstrator(participant, game or state.next_game(), client).start_episode()

    def new_demonstrator(participant: str, game, client: dict) -> Demonstrator:
        token = secrets.token_urlsafe(24)
        d = Demonstrator(
            request.sid,
            token,
            participant,
            game,
            state.loop_config,
            state.spool,
            state.pool,
            state.runtime,
            client=client,
        )
        registry.add(d)

        def run():
            try:
                d.run()
            finally:
                registry.remove(d)

        socketio.start_background_task(run)
        return d

    def resume_session(d, sid: str, take_over: bool) -> None:
        """Bind a demonstrator's session to this connection and resume its episode. `hello` from a reloaded page
        takes over a connection the server still thinks open (it has not seen it close yet); `rejoin` refuses a
        session that is connected from another tab."""
        if d.connected and d.sid != sid:
            if not take_over:
                raise BadMessage("session_in_use", "that session is connected from another tab")
            d.disconnect()
        registry.rebind(d, sid)
        d.reconnect(sid)

    @handler("rejoin")
    def on_rejoin(data=None):
        data = as_dict(data, "rejoin")
        token = data.get("session")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LEN:
            raise BadMessage("bad_payload", "rejoin expects {session: <token from the episode message>}")
        d = registry.by_token.get(token)
        if d is None or d.gone:
            raise BadMessage("unknown_session", "that session has ended; press Start for a new one")
        resume_session(d, request.sid, take_over=False)

    @fast_handler("key")
    def on_key(sid, data):
        if not isinstance(data, dict):
            raise BadMessage("bad_payload", "key expects {seq, t, key, down}")
        seq, t, key, down = data.get("seq"), data.get("t"), data.get("key"), data.get("down")
        if not _is_int(seq) or seq < 0 or seq > 2**53:
            raise BadMessage("bad_payload", "key.seq must be a non-negative integer")
        if not _is_number(t):
            raise BadMessage("bad_payload", "key.t must be a finite number (client ms)")
        if key not in KEYS:
            raise BadMessage("bad_payload", f"key.key must be one of {', '.join(KEYS)}")
        if not isinstance(down, bool):
            raise BadMessage("bad_payload", "key.down must be true or false")
        in_episode(sid).key_event(seq, float(t), key, down)

    def paint_acks(data: object, what: str = "painted") -> list[tuple[int, float]]:
        if not isinstance(data, list) or len(data) > MAX_PAINT_ACKS:
            raise BadMessage("bad_payload", f"{what} expects a list of at most {MAX_PAINT_ACKS} [frame, t] pairs")
        acks = []
        for item in data:
            if (
                not isinstance(item, (list, tuple))
                or len(item) != 2
                or not _is_int(item[0])
                or item[0] < 0
                or not _is_number(item[1])
            ):
                raise BadMessage("bad_payload", f"{what} items must be [frame (int >= 0), t (ms)]")
            acks.append((item[0], float(item[1])))
        return acks

    @fast_handler("painted")
    def on_painted(sid, data):
        acks = paint_acks(data)
        d = registry.by_sid.get(sid)
        if d is not None:
            d.painted(acks)

    @fast_handler("audio")
    def on_audio(sid, data):
        if not isinstance(data, dict):
            raise BadMessage("bad_payload", "audio expects {seq, first_sample, t, rate, pcm}")
        seq, first, t, rate, pcm = (data.get(k) for k in ("seq", "first_sample", "t", "rate", "pcm"))
        if not _is_int(seq) or not 0 <= seq <= 2**53:
            raise BadMessage("bad_payload", "audio.seq must be a non-negative integer")
        if not _is_int(first) or not 0 <= first <= 2**53:
            raise BadMessage("bad_payload", "audio.first_sample must be a non-negative integer")
        if not _is_number(t):
            raise BadMessage("bad_payload", "audio.t must be a finite number (client ms)")
        if not _is_int(rate):
            raise BadMessage("bad_payload", "audio.rate must be an integer (Hz)")
        if not isinstance(pcm, (bytes, bytearray)):
            raise BadMessage("bad_payload", "audio.pcm must be binary PCM16 little-endian")
        acks = paint_acks(data["painted"], "audio.painted") if "painted" in data else None
        d = current(sid)
        if acks:  # the client's paint acks ride along with its microphone chunks: one message instead of two
            d.painted(acks)
        try:
            d.audio_chunk(seq, first, float(t), rate, bytes(pcm))  # between episodes: not recorded
        except AudioRejected as e:
            raise BadMessage(e.code, e.message) from None

    @handler("audio_status")
    def on_audio_status(data=None):
        data = as_dict(data, "audio_status")
        state_ = data.get("state")
        if state_ not in ("stalled", "resumed", "muted", "unmuted", "ended"):
            raise BadMessage("bad_payload", "audio_status.state must be stalled, resumed, muted, unmuted or ended")
        current().log_event(f"microphone {state_}", detail="reported by the client")

    @handler("pause")
    def on_pause(data=None):
        in_episode().pause("pause")

    @handler("resume")
    def on_resume(data=None):
        in_episode().resume()

    @handler("stop")
    def on_stop(data=None):
        in_episode().stop()

    @fast_handler("rtt")
    def on_rtt(sid, data):
        d = registry.by_sid.get(sid)
        if d is not None and isinstance(data, dict):
            rtt, level = data.get("rtt_ms"), data.get("mic_level")
            d.rtt_ms = float(rtt) if _is_number(rtt) and 0 <= rtt < 1e6 else d.rtt_ms
            d.mic_level = float(level) if _is_number(level) and 0 <= level <= 1 else d.mic_level
        return True  # the client times the acknowledgement

    # --- the study flow ---------------------------------------------------------------------------------
    def send_study_state(sid: str, rec: dict | None, game=None) -> None:
        game = game or (resolve_game(rec["game"]) if rec else resolve_game(state.settings.games[0]))
        send("study_state", sid, public_state(rec, study_cfg, game))

    def participant_record() -> dict:
        pid = sid_participant.get(request.sid)
        rec = participants.load(pid) if pid else None
        if rec is None:
            raise BadMessage("no_participant", "send hello (and accept the consent) first")
        return rec

    @handler("hello")
    def on_hello(data=None):
        data = as_dict(data, "hello")
        token = data.get("session")
        if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_LEN:
            d = registry.by_token.get(token)
            if d is not None and not d.gone and d.sid != request.sid:
                resume_session(d, request.sid, take_over=True)  # a reload in the middle of an episode resumes it
        if not study_cfg.enabled:
            send_study_state(request.sid, None)
            return
        pid = fmt.sanitize_participant(data.get("participant")) or new_participant_id()
        sid_participant[request.sid] = pid
        rec = participants.load(pid)
        if rec is None:  # nothing is stored before consent
            out = public_state(
                {"participant": pid, "stage": "consent", "episodes": 0, "play_s": 0.0, "code": None},
                study_cfg,
                resolve_game(state.settings.games[0]),
            )
            send("study_state", request.sid, out)
            return
        send_study_state(request.sid, rec)

    @handler("consent")
    def on_consent(data=None):
        data = as_dict(data, "consent")
        pid = sid_participant.get(request.sid)
        if not study_cfg.enabled or pid is None:
            raise BadMessage("no_participant", "send hello first")
        if participants.load(pid) is not None:
            send_study_state(request.sid, participants.load(pid))
            return
        if data.get("accept") is not True:
            send("study_state", request.sid, {"stage": "declined"})
            return
        rec = participants.get_or_create(pid, state.next_game().name)
        rec["stage"] = "instructions"
        rec["consented"] = time.time()
        participants.save(rec)
        send_study_state(request.sid, rec)

    @handler("instructions_done")
    def on_instructions_done(data=None):
        rec = participant_record()
        if rec["stage"] == "instructions":
            rec["stage"] = next_stage(rec, study_cfg)
            participants.save(rec)
        send_study_state(request.sid, rec)

    @handler("mic_ok")
    def on_mic_ok(data=None):
        data = as_dict(data, "mic_ok")
        rec = participant_record()
        if rec["stage"] == "miccheck":
            audio = data.get("audio")
            if isinstance(audio, dict) and len(json.dumps(audio, default=str)) <= MAX_CLIENT_INFO_BYTES:
                rec["audio"] = audio
            rec["stage"] = next_stage(rec, study_cfg)
            participants.save(rec)
        send_study_state(request.sid, rec)

    def study_start(client: dict) -> None:
        rec = participant_record()
        if rec["stage"] not in ("practice", "episodes"):
            raise BadMessage("wrong_stage", f"there is no game to start at the {rec['stage']} step")
        d = registry.by_sid.get(request.sid)
        if d is not None and d.state != IDLE:
            raise BadMessage("episode_running", "an episode is already running")
        if d is None or d.gone:
            if registry.full():
                raise BadMessage("full", "the server is full, try again later")
            d = new_demonstrator(rec["participant"], resolve_game(rec["game"]), client)

            def on_end(dem, meta, pid=rec["participant"]):
                r = participants.load(pid)
                if r is None:
                    return
                r = record_episode(
                    r, study_cfg, bool(meta.get("practice")), meta["frames"], meta["traj_id"] if dem.recorded else None
                )
                participants.save(r)
                send_study_state(dem.sid, r)

            d.on_episode_end = on_end
        practice = rec["stage"] == "practice"
        if practice:
            d.start_episode(practice=True, time_limit_s=study_cfg.practice_s, record=study_cfg.record_practice)
        else:
            limit = remaining_s(rec, study_cfg)
            if state.settings.episode_time_limit_s:
                limit = (
                    min(limit, state.settings.episode_time_limit_s)
                    if limit is not None
                    else state.settings.episode_time_limit_s
                )
            d.start_episode(time_limit_s=limit)

    @socketio.on("*")
    def on_unknown(event, *args):
        if flooding():
            return
        emit_error("unknown_event", f"unknown event {str(event)[:40]!r}", str(event)[:40])

    @socketio.on("disconnect")
    def on_disconnect(*args):
        rates.pop(request.sid, None)
        sid_participant.pop(request.sid, None)
        d = registry.by_sid.get(request.sid)
        if d is not None:
            d.disconnect()
