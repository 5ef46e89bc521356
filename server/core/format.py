"""The recording format, schema 2: trajectory IDs, file names and columns (see docs/format.md)."""

from __future__ import annotations

import re

from ..errors import InvalidTrajectoryId

#: 2: frames.csv's `shown` column, rtt.csv, meta.json's `connection`, `audio_format` (schema 1 still loads)
SCHEMA_VERSION = 2

#: The episode number has at most MAX_EPISODE_DIGITS digits: an unbounded one made a path too long for the file system
#: (a 5,000-digit ID answered 500). Practice rounds use up to 9 digits.
MAX_EPISODE_DIGITS = 12
TRAJ_ID_RE = re.compile(rf"^[a-z0-9]{{1,64}}_[A-Za-z0-9]{{1,64}}_[0-9]{{1,{MAX_EPISODE_DIGITS}}}$")
PARTICIPANT_RE = re.compile(r"^[A-Za-z0-9]{1,64}$")

META = "meta.json"
FRAMES = "frames.csv"
EVENTS = "events.csv"
SPEECH = "speech.wav"
SPEECH_SYNC = "speech_sync.csv"
GAME_AUDIO = "game_audio.wav"
RTT = "rtt.csv"

#: frames.csv's columns, in order, and how each reads back (server.core.reader): int, float (an empty cell is NaN)
#: or str. A new column goes here, into `frame_head` or `frame_tail` below (the writer), into docs/format.md, and
#: bumps SCHEMA_VERSION; readers find columns by name, so nothing else changes.
FRAME_TYPES: dict[str, type] = {
    "frame": int,
    "reward": int,
    "score": int,
    "terminal": int,
    "action": int,
    "lives": int,
    "keys": str,
    "ram_crc32": str,
    "server_ms": float,
    "display_ms": float,
    "speech_sample": float,
    "shown": float,  # schema 2: 1 on screen, 0 not; absent (NaN) in schema 1
}
FRAME_COLUMNS = tuple(FRAME_TYPES)
#: The columns `frame_tail` writes: known only once the paint ack arrived (the writer rewrites them at close).
TAIL_COLUMNS = ("display_ms", "speech_sample", "shown")
EVENT_COLUMNS = ("server_ms", "frame", "event", "seq", "client_ms", "key", "down", "detail")
RTT_COLUMNS = ("server_ms", "client_send_ms", "client_recv_ms", "rtt_ms", "offset_ms")

STATUS_RECORDING = "recording"
STATUS_COMPLETE = "complete"
STATUS_INTERRUPTED = "interrupted"

# end reasons
GAME_OVER = "game over"
TIME_LIMIT = "time limit"
QUIT = "quit"
DISCONNECT = "disconnect"
SERVER_STOP = "server stop"
STORAGE_ERROR = "storage_error"  # a write error (full disk, read-only file system, quota) closed it
TECHNICAL_FAILURE = "technical failure"  # a connection too slow for too long (--drop-after-slow-s)


def validate_traj_id(traj_id: object) -> str:
    """Return the ID if it matches the schema's pattern; raise InvalidTrajectoryId otherwise."""
    if not isinstance(traj_id, str) or not TRAJ_ID_RE.fullmatch(traj_id):
        raise InvalidTrajectoryId(
            f"invalid trajectory ID {str(traj_id)[:80]!r}: expected <game>_<participant>_<n>, "
            f"for example mspacman_1QQ3LEWANF_1 (pattern {TRAJ_ID_RE.pattern})"
        )
    return traj_id


def participant_of(traj_id: str) -> str | None:
    """The participant part of a trajectory ID; None for a string that is not one."""
    return traj_id.split("_")[1] if TRAJ_ID_RE.fullmatch(traj_id) else None


def make_traj_id(game: str, participant: str, n: int) -> str:
    return validate_traj_id(f"{game}_{participant}_{n}")


def sanitize_participant(raw: object) -> str | None:
    """Letters and digits only, at most 64; None when nothing usable is left."""
    if not isinstance(raw, str):
        return None
    cleaned = re.sub(r"[^A-Za-z0-9]", "", raw)[:64]
    return cleaned or None


def csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_line(values: tuple | list) -> str:
    return ",".join(csv_cell(v) for v in values) + "\n"


def frame_head(
    frame: int,
    reward: int,
    score: int,
    terminal: bool,
    action: int,
    lives: int,
    keys: str,
    ram_crc32: str,
    server_ms: float,
) -> str:
    """A frames.csv row up to and including `server_ms,`: what is known when the frame is stepped. With `frame_tail`,
    the row `csv_line` would write for the values the game loop produces (integers, a key label of letters and '+', a
    hex CRC), without its cell-by-cell path (about 12 us a row, 60 rows a second per demonstrator)."""
    return f"{frame},{reward},{score},{1 if terminal else 0},{action},{lives},{keys},{ram_crc32},{server_ms:.3f},"


def frame_tail(display_ms: float | None, speech_sample: int | None, shown: bool = False) -> str:
    """The rest of a frames.csv row: known once the client's paint ack has arrived (or given up on). `shown`: the
    client said the frame was on screen (0: skipped by the server or the client, or no ack came)."""
    d = "" if display_ms is None else format(display_ms, ".3f")
    return f"{d},{'' if speech_sample is None else speech_sample},{1 if shown else 0}\n"
