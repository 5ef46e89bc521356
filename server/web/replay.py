"""The replay page: any trajectory by its ID, re-simulated and verified, with its speech and game sound.

Routes (loopback only for now: any other remote address gets 403, and so does a request a proxy forwarded for
another machine, see `access.request_is_local`):

- `GET /replay/<traj_id>`: the page (client/replay.html, client/replay.js).
- `GET /api/replay/<traj_id>`: JSON `{traj_id, meta, frames: {frame, score, reward, action, keys, terminal, lives,
  display_ms, speech_sample} (column arrays), n_frames, verified: true | {diverged_at, field, expected, actual,
  message}, frames_available, width, height, pixel_aspect, fps, palette, action_names, keyframe_interval,
  speech: {rate, samples, segments} | null, game_audio: {rate, samples_per_frame} | null}`.
  `speech.segments` is `[[frame, speech_sample], ...]`: how speech.wav lies on the 60 fps timeline
  (server.video.speech_segments, the same cut the video export uses).
- `GET /api/replay/<traj_id>/screens?start=N&count=M` (M at most 3600): the re-simulated screens N..N+M-1 as
  `application/octet-stream`: for each frame a uint32 little-endian length, then one message of the `xor` frame codec
  (server.core.codec, the same bytes the game stream uses: uint32 LE frame number, uint8 flags with bit 0 keyframe;
  a keyframe carries zlib of the 210x160 palette-index screen, a delta frame the mask of changed rows and zlib of
  those rows XORed with the previous frame's). The first message is always a keyframe, so any range decodes on its
  own. Frames past a divergence are not served (416).
- `GET /api/replay/<traj_id>/speech.wav`, `.../game_audio.wav`: the files as recorded.

Invalid IDs get 400, unknown ones 404, a trajectory still being recorded 409; the body says which.

Re-simulation and cache. The first request for a trajectory re-simulates it completely (verifying every frame, as
scripts/verify.py does) in a worker thread (`runtime.run_blocking`, so the game loops of an eventlet or gevent
server keep ticking), and keeps every screen as a codec message, XOR-delta with a keyframe every 60 frames, in an
LRU cache bounded by bytes. Why this and not an emulator with periodic cloneState snapshots:
- verification needs the whole re-simulation anyway (the page must say where a trajectory diverges before it plays),
  and at 10-15k frames/s with encoding that is about 3 s for 10 minutes, once;
- afterwards a screens request is byte slicing plus at most 59 XOR/inflate steps to make its first keyframe (well
  under a millisecond), instead of holding an emulator per trajectory, a lock around it (one emulator cannot serve
  two requests), and 90 ms of ROM loading whenever one is evicted;
- the memory is small: deltas are 200-300 bytes and keyframes 1-2 KB, so 10 minutes (36,000 frames) is about
  10-20 MB, where independent zlib screens would be 50 MB and raw screens 1.2 GB;
- no restoreState subtleties (stale screen until the next act, sticky actions' last action not in the state).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from flask import Blueprint, Flask, Response, current_app, request, send_file, send_from_directory

from ..core import format as fmt
from ..core.actions import ACTION_NAMES
from ..core.codec import FLAG_KEYFRAME, HEADER, XorDeflateCodec, XorDeflateDecoder
from ..core.emulator import AUDIO_SAMPLES_PER_FRAME, GAME_AUDIO_RATE, SCREEN_HEIGHT, SCREEN_WIDTH
from ..core.palette import NTSC_PALETTE
from ..core.replay import load_meta, replay
from ..errors import InvalidTrajectoryId, ReplayDivergence, TrajectoryNotFound
from ..video import FPS, PIXEL_ASPECT, Columns, load_columns, speech_segments
from .access import request_is_local
from .pages import CLIENT_DIR

KEYFRAME_INTERVAL = 60
MAX_SCREENS_PER_REQUEST = 3600
CACHE_BYTES = 256 * 1024 * 1024
LENGTH = struct.Struct("<I")
EXTENSION = "atari_replay"

bp = Blueprint("replay", __name__)


class ReplayHTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- who may see replays ----------------------------------------------------------------------------------------------


@bp.before_request
def researcher_or_local():
    """The researcher token opens replays from anywhere; without it, only this machine (not through a proxy)."""
    from .admin import _token_ok

    if _token_ok() or request_is_local(request.remote_addr, request.headers):
        return None
    raise ReplayHTTPError(
        403,
        "replays need the researcher token (?token=... or an Authorization: Bearer header), "
        "or a request from this machine",
    )


@bp.errorhandler(ReplayHTTPError)
def http_error(e: ReplayHTTPError):
    if request.path.startswith("/api/"):
        return {"error": e.message, "status": e.status}, e.status
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Replay</title>'
        f'<link rel="stylesheet" href="/static/style.css"></head><body><main class="notice">'
        f"<h1>{_html(e.message)}</h1></main></body></html>"
    )
    return body, e.status, {"Content-Type": "text/html; charset=utf-8"}


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# --- the cache ------------------------------------------------------------------------------------------------------


@dataclass
class ReplayEntry:
    """One re-simulated trajectory: its screens as codec messages and the JSON the page loads."""

    traj_id: str
    stamp: str
    meta: dict
    columns: Columns
    verified: object  # True or a dict describing the divergence
    messages: list[bytes] = field(default_factory=list)
    info_json: bytes = b""
    nbytes: int = 0  # what the cache counts: screens (with Python's per-object overhead) and the JSON

    @property
    def available(self) -> int:
        return len(self.messages)

    def screen(self, k: int) -> np.ndarray:
        """The palette-index screen of frame k, decoded from the keyframe before it."""
        k0 = k - k % KEYFRAME_INTERVAL
        decoder = XorDeflateDecoder(SCREEN_HEIGHT, SCREEN_WIDTH)
        for m in self.messages[k0 : k + 1]:
            screen = decoder.decode(m)[2]
        return screen

    def screens_payload(self, start: int, count: int) -> bytes:
        """Length-prefixed codec messages of frames start..start+count-1; the first one is a keyframe."""
        first = self.messages[start]
        if not first[4] & FLAG_KEYFRAME:
            first = HEADER.pack(start, FLAG_KEYFRAME) + zlib.compress(self.screen(start).tobytes(), 1)
        parts = [LENGTH.pack(len(first)), first]
        for m in self.messages[start + 1 : start + count]:
            parts.append(LENGTH.pack(len(m)))
            parts.append(m)
        return b"".join(parts)


def _nan_to_none(a: np.ndarray, as_int: bool) -> list:
    return [None if math.isnan(v) else (int(v) if as_int else round(float(v), 3)) for v in a.tolist()]


def _stamp(store, traj_id: str) -> tuple[str, dict]:
    """A fingerprint of the trajectory's files (meta.json's bytes, and frames.csv's size and mtime when local)."""
    try:
        raw = store.get(f"{traj_id}/{fmt.META}")
    except KeyError:
        raise TrajectoryNotFound(f"no trajectory {traj_id!r} in {store.url}") from None
    h = hashlib.sha256(raw)
    path_of = getattr(store, "path", None)
    if path_of is not None:
        try:
            st = path_of(f"{traj_id}/{fmt.FRAMES}").stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except (OSError, ValueError):
            pass
    return h.hexdigest(), json.loads(raw)


def build_entry(store, traj_id: str, stamp: str) -> ReplayEntry:
    """Re-simulate and verify the whole trajectory, keeping every screen (runs in a worker thread)."""
    meta = load_meta(store, traj_id)
    columns = load_columns(store, traj_id)
    codec = XorDeflateCodec()
    messages: list[bytes] = []
    verified: object = True
    try:
        for rf in replay(store, traj_id):
            if rf.step.frame % KEYFRAME_INTERVAL == 0:
                codec.force_keyframe()
            messages.append(codec.encode(rf.step.frame, rf.screen()))
    except ReplayDivergence as e:
        verified = {
            "diverged_at": e.frame,
            "field": e.field,
            "expected": str(e.expected),
            "actual": str(e.actual),
            "message": str(e),
        }
    entry = ReplayEntry(traj_id, stamp, meta, columns, verified, messages)
    entry.info_json = json.dumps(_info(store, entry), separators=(",", ":")).encode()
    entry.nbytes = sum(len(m) for m in messages) + 40 * len(messages) + len(entry.info_json)
    return entry


def _info(store, entry: ReplayEntry) -> dict:
    c, meta = entry.columns, entry.meta
    speech = None
    if store.exists(f"{entry.traj_id}/{fmt.SPEECH}"):
        sm = meta.get("speech") or {}
        rate = sm.get("rate") or _wav_rate(store, entry.traj_id)
        speech = {
            "rate": rate,
            "samples": sm.get("samples"),
            "segments": [[f, round(s, 3)] for f, s in speech_segments(c.speech_sample, rate)],
        }
    game_audio = None
    if store.exists(f"{entry.traj_id}/{fmt.GAME_AUDIO}"):
        game_audio = {"rate": GAME_AUDIO_RATE, "samples_per_frame": AUDIO_SAMPLES_PER_FRAME}
    return {
        "traj_id": entry.traj_id,
        "meta": meta,
        "n_frames": len(c),
        "frames_available": entry.available,
        "verified": entry.verified,
        "frames": {
            "frame": c.frame.tolist(),
            "score": c.score.tolist(),
            "reward": c.reward.tolist(),
            "action": c.action.tolist(),
            "keys": c.keys,
            "terminal": c.terminal.tolist(),
            "lives": c.lives.tolist(),
            "display_ms": _nan_to_none(c.display_ms, False),
            "speech_sample": _nan_to_none(c.speech_sample, True),
        },
        "width": SCREEN_WIDTH,
        "height": SCREEN_HEIGHT,
        "pixel_aspect": PIXEL_ASPECT,
        "fps": FPS,
        "palette": NTSC_PALETTE.reshape(-1).tolist(),
        "action_names": {str(k): v for k, v in ACTION_NAMES.items()},
        "keyframe_interval": KEYFRAME_INTERVAL,
        "speech": speech,
        "game_audio": game_audio,
    }


def _wav_rate(store, traj_id: str) -> int:
    head = store.get(f"{traj_id}/{fmt.SPEECH}")[:28]
    return struct.unpack_from("<I", head, 24)[0]


class ReplayCache:
    """Re-simulated trajectories, least recently used evicted beyond `max_bytes`; one build per ID at a time."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, ReplayEntry] = OrderedDict()
        self._building: dict[str, threading.Event] = {}
        self._lock = threading.Lock()  # guards the two dicts only; never held while building
        self.builds = 0

    def get(self, store, traj_id: str, run_blocking=None, revalidate: bool = True) -> ReplayEntry:
        """The entry for a trajectory, re-simulating it if it is new or its files changed."""
        fmt.validate_traj_id(traj_id)
        while True:
            with self._lock:
                entry = self._entries.get(traj_id)
            if entry is not None and not revalidate:
                with self._lock:
                    self._entries.move_to_end(traj_id)
                return entry
            stamp, meta = _stamp(store, traj_id)
            if meta.get("status") == fmt.STATUS_RECORDING:
                raise ReplayHTTPError(409, f"{traj_id} is still being recorded; replay it after its episode ends")
            if entry is not None and entry.stamp == stamp:
                with self._lock:
                    self._entries.move_to_end(traj_id)
                return entry
            with self._lock:
                event = self._building.get(traj_id)
                mine = event is None
                if mine:
                    event = self._building[traj_id] = threading.Event()
            if not mine:
                event.wait(600)
                continue  # built by another request (or failed there): look again
            try:
                run = run_blocking or (lambda fn, *a: fn(*a))
                entry = run(build_entry, store, traj_id, stamp)
                self.builds += 1
                with self._lock:
                    self._entries[traj_id] = entry
                    self._entries.move_to_end(traj_id)
                    self._evict()
                return entry
            finally:
                with self._lock:
                    self._building.pop(traj_id, None)
                event.set()

    def _evict(self) -> None:
        total = sum(e.nbytes for e in self._entries.values())
        while total > self.max_bytes and len(self._entries) > 1:
            _, old = self._entries.popitem(last=False)
            total -= old.nbytes


# --- routes ---------------------------------------------------------------------------------------------------------


def _state():
    return current_app.extensions.get("atari")


def _store():
    state = _state()
    if state is None:
        raise ReplayHTTPError(500, "the replay routes need the app's store (create_app)")
    return state.store


def _run_blocking():
    state = _state()
    return getattr(getattr(state, "runtime", None), "run_blocking", None)


def _checked_id(traj_id: str) -> str:
    try:
        return fmt.validate_traj_id(traj_id)
    except InvalidTrajectoryId as e:
        raise ReplayHTTPError(400, str(e)) from None


def _entry(traj_id: str, revalidate: bool = True) -> ReplayEntry:
    traj_id = _checked_id(traj_id)
    cache: ReplayCache = current_app.extensions[EXTENSION]
    try:
        return cache.get(_store(), traj_id, _run_blocking(), revalidate=revalidate)
    except TrajectoryNotFound as e:
        raise ReplayHTTPError(404, str(e)) from None


@bp.get("/replay/<traj_id>")
def page(traj_id: str):
    traj_id = _checked_id(traj_id)
    if not _store().exists(f"{traj_id}/{fmt.META}"):
        raise ReplayHTTPError(404, f"no trajectory {traj_id!r} in this server's store")
    return send_from_directory(CLIENT_DIR, "replay.html", max_age=0)


@bp.get("/api/replay/<traj_id>")
def info(traj_id: str):
    entry = _entry(traj_id)
    return Response(entry.info_json, mimetype="application/json", headers={"Cache-Control": "no-cache"})


@bp.get("/api/replay/<traj_id>/screens")
def screens(traj_id: str):
    try:
        start = int(request.args.get("start", "0"))
        count = int(request.args.get("count", "600"))
    except ValueError:
        raise ReplayHTTPError(400, "start and count must be integers") from None
    if start < 0 or not 1 <= count <= MAX_SCREENS_PER_REQUEST:
        raise ReplayHTTPError(400, f"start must be >= 0 and count 1 to {MAX_SCREENS_PER_REQUEST}")
    entry = _entry(traj_id, revalidate=False)
    if start >= entry.available:
        why = (
            f"the replay diverged at frame {entry.available}"
            if entry.verified is not True
            else f"the trajectory has {entry.available} frames"
        )
        raise ReplayHTTPError(416, f"frame {start} is not available: {why}")
    count = min(count, entry.available - start)
    body = entry.screens_payload(start, count)
    return Response(
        body,
        mimetype="application/octet-stream",
        headers={"X-Replay-Start": str(start), "X-Replay-Count": str(count), "Cache-Control": "no-cache"},
    )


def _send_wav(traj_id: str, name: str):
    traj_id = _checked_id(traj_id)
    store = _store()
    key = f"{traj_id}/{name}"
    if not store.exists(f"{traj_id}/{fmt.META}"):
        raise ReplayHTTPError(404, f"no trajectory {traj_id!r} in this server's store")
    if not store.exists(key):
        raise ReplayHTTPError(404, f"trajectory {traj_id} has no {name}")
    path_of = getattr(store, "path", None)
    if path_of is not None:
        return send_file(path_of(key), mimetype="audio/wav", max_age=0, conditional=True)
    return Response(store.get(key), mimetype="audio/wav", headers={"Cache-Control": "no-cache"})


@bp.get("/api/replay/<traj_id>/speech.wav")
def speech_wav(traj_id: str):
    return _send_wav(traj_id, fmt.SPEECH)


@bp.get("/api/replay/<traj_id>/game_audio.wav")
def game_audio_wav(traj_id: str):
    return _send_wav(traj_id, fmt.GAME_AUDIO)


def init_app(app: Flask) -> None:
    """Register the replay page and its API (call after the app's store is set up)."""
    app.extensions.setdefault(EXTENSION, ReplayCache())
    app.register_blueprint(bp)
