"""What clients send, parsed: pure functions from a Socket.IO payload to checked values, or `BadMessage`.

No Flask and no server here, so every malformed payload can be tried in a unit test (tests/test_messages.py).
Each function raises `BadMessage("bad_payload", ...)` (or the code named) with a message that says what was expected.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import NamedTuple, TypeGuard

from ..core import format as fmt
from ..core.actions import KEYS
from ..errors import BadMessage, UnknownGame
from ..games import Game, resolve_game

MAX_CLIENT_INFO_BYTES = 4096
MAX_PAINT_ACKS = 600
MAX_TOKEN_LEN = 64
MAX_SEQ = 2**53  # the largest integer a browser's Number holds exactly
AUDIO_STATES = ("stalled", "resumed", "muted", "unmuted", "ended")


def is_number(v: object) -> TypeGuard[int | float]:
    """A finite int or float (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v: object) -> TypeGuard[int]:
    """An int (not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool)


def as_dict(data: object, event: str) -> dict:
    """The payload of an event that takes an object; none at all counts as an empty one."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadMessage("bad_payload", f"{event} expects an object, got {type(data).__name__}")
    return data


def _small_json(value: object) -> bool:
    return len(json.dumps(value, default=str)) <= MAX_CLIENT_INFO_BYTES


@dataclass(frozen=True)
class Start:
    """A checked `start`: the game asked for (None: the server chooses), the client's description, the participant."""

    game: Game | None
    client: dict
    participant: str | None


def parse_start(data: object, offered: tuple[str, ...] | list[str]) -> Start:
    """`{game?, participant?, client?}`; `game` must be one of `offered`, `client` a small object."""
    data = as_dict(data, "start")
    game = None
    if data.get("game") is not None:
        raw = data["game"]
        if not isinstance(raw, str) or len(raw) > 64:
            raise BadMessage("unknown_game", "game must be a short string naming a game")
        try:
            game = resolve_game(raw)
        except UnknownGame:
            game = None
        if game is None or game.name not in offered:
            raise BadMessage("unknown_game", f"unknown game {raw[:64]!r}; this server offers: {', '.join(offered)}")
    client = data.get("client") or {}
    if not isinstance(client, dict) or not _small_json(client):
        raise BadMessage("bad_payload", f"client must be an object of at most {MAX_CLIENT_INFO_BYTES} bytes")
    return Start(game, client, fmt.sanitize_participant(data.get("participant")))


def session_token(value: object) -> str | None:
    """A session token as the `episode` message gave it, or None when `value` cannot be one."""
    if isinstance(value, str) and 0 < len(value) <= MAX_TOKEN_LEN:
        return value
    return None


def parse_rejoin(data: object) -> str:
    """`{session}`: the token."""
    token = session_token(as_dict(data, "rejoin").get("session"))
    if token is None:
        raise BadMessage("bad_payload", "rejoin expects {session: <token from the episode message>}")
    return token


@dataclass(frozen=True)
class Hello:
    """A checked `hello`: the session to take over after a reload, the participant ID (both optional), and where
    the participant came from (`recruitment`: platform, study and session IDs from the page URL)."""

    session: str | None
    participant: str | None
    recruitment: dict | None = None


PLATFORMS = ("prolific", "mturk")
_REF_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _ref(value: object) -> str | None:
    """A platform's study or session ID: 1-64 letters, digits, `_` or `-`; anything else counts as absent."""
    if isinstance(value, str) and 0 < len(value) <= 64 and set(value) <= _REF_CHARS:
        return value
    return None


def parse_recruitment(value: object) -> dict | None:
    """`{platform, study_id?, session_id?}` (Prolific's STUDY_ID and SESSION_ID; MTurk's hitId and assignmentId)."""
    if not isinstance(value, dict) or value.get("platform") not in PLATFORMS:
        return None
    out = {
        "platform": value["platform"],
        "study_id": _ref(value.get("study_id")),
        "session_id": _ref(value.get("session_id")),
    }
    return out


def parse_hello(data: object) -> Hello:
    """`{session?, participant?, recruitment?}`; an unusable value of any counts as absent."""
    data = as_dict(data, "hello")
    return Hello(
        session_token(data.get("session")),
        fmt.sanitize_participant(data.get("participant")),
        parse_recruitment(data.get("recruitment")),
    )


@dataclass(frozen=True)
class EntryChecks:
    """A checked `entry_checks`: what the page measured, the checks it found failing, and whether the participant
    says nothing can be changed (`give_up`)."""

    measured: dict
    reasons: list[str]
    give_up: bool


def parse_entry_checks(data: object, known: tuple[str, ...]) -> EntryChecks:
    """`{measured, reasons?, give_up?}`: `measured` a small object, `reasons` a list of names from `known`."""
    data = as_dict(data, "entry_checks")
    measured = data.get("measured")
    if not isinstance(measured, dict) or not _small_json(measured):
        raise BadMessage(
            "bad_payload", f"entry_checks.measured must be an object of at most {MAX_CLIENT_INFO_BYTES} bytes"
        )
    reasons = data.get("reasons") or []
    if not isinstance(reasons, list) or len(reasons) > len(known) or any(r not in known for r in reasons):
        raise BadMessage("bad_payload", f"entry_checks.reasons must be a list of: {', '.join(known)}")
    return EntryChecks(measured, list(reasons), data.get("give_up") is True)


def parse_failure(data: object, known: tuple[str, ...]) -> str:
    """`{reason}`: one of `known`."""
    reason = as_dict(data, "failure").get("reason")
    if reason not in known:
        raise BadMessage("bad_payload", f"failure.reason must be one of: {', '.join(known)}")
    return reason


class Key(NamedTuple):
    """A checked `key`."""

    seq: int
    t: float
    key: str
    down: bool


def parse_key(data: object) -> Key:
    """`{seq, t, key, down}`."""
    if not isinstance(data, dict):
        raise BadMessage("bad_payload", "key expects {seq, t, key, down}")
    seq, t, key, down = data.get("seq"), data.get("t"), data.get("key"), data.get("down")
    if not is_int(seq) or seq < 0 or seq > MAX_SEQ:
        raise BadMessage("bad_payload", "key.seq must be a non-negative integer")
    if not is_number(t):
        raise BadMessage("bad_payload", "key.t must be a finite number (client ms)")
    if key not in KEYS:
        raise BadMessage("bad_payload", f"key.key must be one of {', '.join(KEYS)}")
    if not isinstance(down, bool):
        raise BadMessage("bad_payload", "key.down must be true or false")
    return Key(seq, float(t), key, down)


def parse_paint_acks(data: object, what: str = "painted") -> list[tuple[int, float, bool]]:
    """`[[frame, t], ...]` or `[[frame, t, shown], ...]`: at most MAX_PAINT_ACKS; `shown` 0 (or false) for a frame
    the client's playout skipped (it was superseded at `t`), 1 (the default) for one that was on screen from `t`."""
    if not isinstance(data, list) or len(data) > MAX_PAINT_ACKS:
        raise BadMessage("bad_payload", f"{what} expects a list of at most {MAX_PAINT_ACKS} [frame, t] pairs")
    acks = []
    for item in data:
        if (
            not isinstance(item, (list, tuple))
            or len(item) not in (2, 3)
            or not is_int(item[0])
            or item[0] < 0
            or not is_number(item[1])
            or (len(item) == 3 and item[2] not in (0, 1))  # True == 1, False == 0
        ):
            raise BadMessage("bad_payload", f"{what} items must be [frame (int >= 0), t (ms), shown? (0 or 1)]")
        acks.append((item[0], float(item[1]), len(item) == 2 or bool(item[2])))
    return acks


class AudioChunk(NamedTuple):
    """A checked `audio` message: a microphone chunk and the paint acks that rode along (None when there were none)."""

    seq: int
    first_sample: int
    t: float
    rate: int
    pcm: bytes
    painted: list[tuple[int, float, bool]] | None


def parse_audio(data: object) -> AudioChunk:
    """`{seq, first_sample, t, rate, pcm, painted?}`; the limits of the audio itself are the recorder's (speech.py)."""
    if not isinstance(data, dict):
        raise BadMessage("bad_payload", "audio expects {seq, first_sample, t, rate, pcm}")
    seq, first, t, rate, pcm = (data.get(k) for k in ("seq", "first_sample", "t", "rate", "pcm"))
    if not is_int(seq) or not 0 <= seq <= MAX_SEQ:
        raise BadMessage("bad_payload", "audio.seq must be a non-negative integer")
    if not is_int(first) or not 0 <= first <= MAX_SEQ:
        raise BadMessage("bad_payload", "audio.first_sample must be a non-negative integer")
    if not is_number(t):
        raise BadMessage("bad_payload", "audio.t must be a finite number (client ms)")
    if not is_int(rate):
        raise BadMessage("bad_payload", "audio.rate must be an integer (Hz)")
    if not isinstance(pcm, (bytes, bytearray)):
        raise BadMessage("bad_payload", "audio.pcm must be binary PCM16 little-endian")
    acks = parse_paint_acks(data["painted"], "audio.painted") if "painted" in data else None
    return AudioChunk(seq, first, float(t), rate, bytes(pcm), acks)


def parse_audio_status(data: object) -> str:
    """`{state}`: one of AUDIO_STATES."""
    state = as_dict(data, "audio_status").get("state")
    if state not in AUDIO_STATES:
        raise BadMessage("bad_payload", "audio_status.state must be stalled, resumed, muted, unmuted or ended")
    return state


class Ping(NamedTuple):
    """A checked `rtt`: each value when plausible, else None."""

    rtt_ms: float | None
    mic_level: float | None
    t: float | None  # client ms when this ping was sent
    last: tuple[float, float] | None  # (sent, answered) client ms of the previous ping
    queue_ms: float | None = None  # the downlink queue the client's frame arrivals show
    held_s: float | None = None  # audio (s) the client holds back, not sent yet: it uploads it after `stopping`
    slip_ms: float | None = None  # the client asks for its game's next tick this much later (its display's phase)


def parse_rtt(data: object) -> Ping:
    """`{rtt_ms?, mic_level?, t?, last?: [sent, answered], queue_ms?, held_s?, slip_ms?}`: never an error (the client
    only times it)."""
    if not isinstance(data, dict):
        return Ping(None, None, None, None)
    rtt, level, t, last = data.get("rtt_ms"), data.get("mic_level"), data.get("t"), data.get("last")
    pair = None
    if isinstance(last, list) and len(last) == 2 and all(is_number(v) for v in last):
        pair = (float(last[0]), float(last[1]))
    return Ping(
        float(rtt) if is_number(rtt) and 0 <= rtt < 1e6 else None,
        float(level) if is_number(level) and 0 <= level <= 1 else None,
        float(t) if is_number(t) else None,
        pair,
        float(q) if is_number(q := data.get("queue_ms")) and 0 <= q < 1e6 else None,
        float(h) if is_number(h := data.get("held_s")) and 0 <= h < 1e6 else None,
        float(v) if is_number(v := data.get("slip_ms")) and 0 < v < 1e6 else None,
    )


def parse_audio_pending(data: object) -> float:
    """`{seconds}`: how much audio the client still holds (0 when absent or implausible)."""
    v = as_dict(data, "audio_pending").get("seconds")
    return float(v) if is_number(v) and 0 <= v < 1e6 else 0.0


def parse_consent(data: object) -> bool:
    """`{accept}`: True only for an explicit `true`."""
    return as_dict(data, "consent").get("accept") is True


def parse_mic_ok(data: object) -> dict | None:
    """`{audio?}`: the browser's description of the microphone, kept when it is a small object."""
    audio = as_dict(data, "mic_ok").get("audio")
    return audio if isinstance(audio, dict) and _small_json(audio) else None
