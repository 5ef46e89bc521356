"""The replay page: any trajectory by its ID, re-simulated and verified, with its speech and game sound.

Routes (behind the researcher's sign-in, `admin.researcher_gate`: the session cookie or a Bearer header; a request
from this machine gets in without them only under `--trust-loopback`):

- `GET /replay/<traj_id>`: the page (client/replay.html, client/replay.js).
- `GET /api/replay/<traj_id>`: JSON `{traj_id, meta, frames: {frame, score, reward, action, keys, terminal, lives,
  display_ms, speech_sample} (column arrays), n_frames, verified: true | {diverged_at, field, expected, actual,
  message}, frames_available, width, height, pixel_aspect, fps, palette, action_names, keyframe_interval,
  speech: {rate, samples, segments} | null, game_audio: {rate, samples_per_frame} | null,
  words: [{word, start_frame, end_frame, keyword, confidence}, ...] | null,
  annotation: {engine, model, mode, keywords, created_utc} | null}`.
  `speech.segments` is `[[frame, speech_sample], ...]`: how speech.wav lies on the 60 fps timeline
  (server.core.alignment.speech_segments, the same cut the video export uses). `words` are the speech annotation's
  (speech_words.csv, server.dataset.trajectory.read_words) and `annotation` what made them
  (speech_annotations.json); both null until the trajectory is annotated (scripts/annotate_speech.py).
- `GET /api/replay/<traj_id>/screens?start=N&count=M` (M at most 3600): the re-simulated screens N..N+M-1 as
  `application/octet-stream`: for each frame a uint32 little-endian length, then one message of the `xor` frame codec
  (server.core.codec, the same bytes the game stream uses: uint32 LE frame number, uint8 flags with bit 0 keyframe;
  a keyframe carries zlib of the 210x160 palette-index screen, a delta frame the mask of changed rows and zlib of
  those rows XORed with the previous frame's). The first message is always a keyframe, so any range decodes on its
  own. Frames past a divergence are not served (416).
- `GET /api/replay/<traj_id>/speech.wav`, `.../game_audio.wav`: the files as recorded.

Invalid IDs get 400, unknown ones 404, a trajectory still being recorded 409; the body says which.

Access control is `access.py`; the re-simulation cache `replay_cache.py`.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, request, send_file, send_from_directory

from ..core import format as fmt
from ..errors import InvalidTrajectoryId, ReplayHTTPError, TrajectoryNotFound
from ..store import Store
from .access import is_loopback, request_is_local
from .pages import CLIENT_DIR
from .replay_cache import ReplayCache, ReplayEntry

MAX_SCREENS_PER_REQUEST = 3600
EXTENSION = "atari_replay"

bp = Blueprint("replay", __name__)

__all__ = ["ReplayCache", "ReplayHTTPError", "bp", "init_app", "is_loopback", "request_is_local"]


@bp.before_request
def researcher_only():
    """Replays (and the participants' voices in them) are the researcher's: the same gate as /admin. The app runs it
    for every route already; this covers an app that registers only the replay routes."""
    from .admin import researcher_gate

    return researcher_gate()


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


# --- routes ---------------------------------------------------------------------------------------------------------


def _state():
    return current_app.extensions.get("atari")


def _store() -> Store:
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
    return send_file(store.local_path(key), mimetype="audio/wav", max_age=0, conditional=True)


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
