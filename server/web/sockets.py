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

from flask import request
from flask_socketio import SocketIO

from ..core import format as fmt
from ..core.actions import KEYS
from ..core.loop import IDLE, Demonstrator
from ..core.speech import AudioRejected
from ..errors import UnknownGame
from ..games import resolve_game

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


def init_socketio(socketio: SocketIO, state) -> None:
    registry = state.registry

    def emit_error(code: str, message: str, event: str) -> None:
        socketio.emit("error", {"code": code, "message": message, "event": event}, to=request.sid)

    def handler(event: str):
        """Register an event handler that turns bad input into an `error` for that client, never a crash."""

        def wrap(fn):
            @functools.wraps(fn)
            def inner(*args):
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

    def current() -> Demonstrator:
        d = registry.by_sid.get(request.sid)
        if d is None or d.gone:
            raise BadMessage("no_session", "no game is running for this connection: send start first")
        return d

    def in_episode() -> Demonstrator:
        d = current()
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
        if d is not None and not d.gone:
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
                raise BadMessage("unknown_game", f"unknown game {raw[:64]!r}; this server offers: "
                                 f"{', '.join(state.settings.games)}")
        participant = fmt.sanitize_participant(data.get("participant")) or new_participant_id()
        client = data.get("client") or {}
        if not isinstance(client, dict) or len(json.dumps(client, default=str)) > MAX_CLIENT_INFO_BYTES:
            raise BadMessage("bad_payload", f"client must be an object of at most {MAX_CLIENT_INFO_BYTES} bytes")
        if registry.full():
            raise BadMessage("full", "the server is full, try again later")
        token = secrets.token_urlsafe(24)
        d = Demonstrator(request.sid, token, participant, game or state.next_game(), state.loop_config,
                         state.store, state.pool, state.runtime, client=client)
        registry.add(d)

        def run():
            try:
                d.run()
            finally:
                registry.remove(d)

        socketio.start_background_task(run)
        d.start_episode()

    @handler("rejoin")
    def on_rejoin(data=None):
        data = as_dict(data, "rejoin")
        token = data.get("session")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LEN:
            raise BadMessage("bad_payload", "rejoin expects {session: <token from the episode message>}")
        d = registry.by_token.get(token)
        if d is None or d.gone:
            raise BadMessage("unknown_session", "that session has ended; press Start for a new one")
        if d.connected and d.sid != request.sid:
            raise BadMessage("session_in_use", "that session is connected from another tab")
        registry.rebind(d, request.sid)
        d.reconnect(request.sid)

    @handler("key")
    def on_key(data=None):
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
        in_episode().key_event(seq, float(t), key, down)

    @handler("painted")
    def on_painted(data=None):
        if not isinstance(data, list) or len(data) > MAX_PAINT_ACKS:
            raise BadMessage("bad_payload", f"painted expects a list of at most {MAX_PAINT_ACKS} [frame, t] pairs")
        acks = []
        for item in data:
            if (not isinstance(item, (list, tuple)) or len(item) != 2 or not _is_int(item[0]) or item[0] < 0
                    or not _is_number(item[1])):
                raise BadMessage("bad_payload", "painted items must be [frame (int >= 0), t (ms)]")
            acks.append((item[0], float(item[1])))
        d = registry.by_sid.get(request.sid)
        if d is not None:
            d.painted(acks)

    @handler("audio")
    def on_audio(data=None):
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
        try:
            current().audio_chunk(seq, first, float(t), rate, bytes(pcm))  # between episodes: not recorded
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

    @socketio.on("rtt")
    def on_rtt(data=None):
        return True  # the client times the acknowledgement

    @socketio.on("*")
    def on_unknown(event, *args):
        emit_error("unknown_event", f"unknown event {str(event)[:40]!r}", str(event)[:40])

    @socketio.on("disconnect")
    def on_disconnect(*args):
        d = registry.by_sid.get(request.sid)
        if d is not None:
            d.disconnect()
