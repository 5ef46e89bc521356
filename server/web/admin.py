"""Researcher routes: sign-in, the study monitor and its API, the trajectory list, downloads (a file, or a whole
trajectory as one zip).

Every path of `access.RESEARCHER_PREFIXES` (these routes, and the replay pages and their audio) passes
`researcher_gate` first: it needs the session cookie or `Authorization: Bearer <token>` (or, with
`--trust-loopback`, a request from this machine). `?token=...` on a researcher page signs in: the answer is a
redirect to the same URL without the token, with the session cookie. No page or link carries the token.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

from flask import Flask, Response, current_app, jsonify, redirect, request, send_file, send_from_directory
from werkzeug.wrappers import Response as BaseResponse

from ..core import format as fmt
from ..core.reader import list_ids, read_meta
from ..errors import InvalidTrajectoryId, StorageError, TrajectoryNotFound
from ..monitor import monitor_view, snapshot
from ..spool import Spool
from ..store import Store
from .access import (
    COOKIE,
    has_credential,
    is_researcher_path,
    safe_next,
    set_session_cookie,
    token_matches,
)
from .pages import CLIENT_DIR

#: The files a download may name: the format's own, and annotation files.
FILE_RE = re.compile(r"^[a-z_]{1,40}\.(json|csv|wav)$")

SIGN_IN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Researcher sign-in</title><link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/style.css"></head>
<body><main class="notice"><h1>Researcher sign-in</h1>
<p>{message}</p>
<form method="post" action="/signin">
<input type="hidden" name="next" value="{next}">
<label>Researcher token <input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">Sign in</button></form>
<p class="status">The server prints the token (or where it comes from) when it starts.</p>
</main></body></html>
"""
REFUSED = "researcher sign-in required: send Authorization: Bearer <token>, or sign in at /admin"


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def sign_in_page(next_path: str, message: str, status: int = 401) -> Response:
    body = SIGN_IN_PAGE.format(message=_html(message), next=_html(safe_next(next_path)))
    return Response(body, status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"})


def _refuse() -> BaseResponse:
    if request.path.startswith("/api/"):
        resp = jsonify({"error": REFUSED})
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Bearer realm="researcher"'
        return resp
    return sign_in_page(request.full_path.rstrip("?"), "This page is for the study's researchers.")


def researcher_gate() -> BaseResponse | None:
    """Before every researcher route: None lets the request through, anything else is the answer."""
    if not is_researcher_path(request.path):
        return None
    settings = current_app.extensions["atari"].settings
    if "token" in request.args:  # signing in through the URL: never a credential by itself, always redirected
        if request.method == "GET" and token_matches(settings.researcher_token, request.args.get("token")):
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
            resp = redirect(request.path + ("?" + urlencode(rest) if rest else ""), 303)
            resp.headers["Cache-Control"] = "no-store"
            set_session_cookie(resp, settings, request)
            return resp
        return _refuse()
    if has_credential(settings, request):
        return None
    return _refuse()


def trajectory_summaries(store: Store, spool: Spool) -> list[dict]:
    """Every trajectory in the spool (open ones, and closed ones not uploaded yet) and the store, with what a
    researcher scans for."""
    out = {}
    metas = spool.metas()
    spooled = {m.get("traj_id") for m in metas}
    try:
        ids = list_ids(store)
    except StorageError:
        ids = []
    for traj_id in ids:
        if traj_id in spooled:
            continue  # with the local store the spool is the store's directory: every one of them
        try:
            metas.append(read_meta(store, traj_id))
        except (StorageError, TrajectoryNotFound, InvalidTrajectoryId, ValueError):
            continue
    for m in metas:
        speech = m.get("speech") or {}
        out[m.get("traj_id")] = {
            "traj_id": m.get("traj_id"),
            "game": m.get("game"),
            "participant": m.get("participant"),
            "status": m.get("status"),
            "end_reason": m.get("end_reason"),
            "score": m.get("final_score"),
            "frames": m.get("frames"),
            "duration_s": round((m.get("frames") or 0) / 60.0, 1),
            # seconds of voice activity (server.core.voice), not of audio; recordings made before it have none
            "speech_s": speech.get("voiced_seconds"),
            "audio_s": speech.get("seconds", 0.0),
            "start_utc": m.get("start_utc"),
            "practice": m.get("practice", False),
        }
    return sorted(out.values(), key=lambda r: r.get("start_utc") or "")


def upload_state(row: dict, states: dict[str, dict], s3: bool) -> dict:
    """uploaded, waiting, failing (with the error), recording; `stored` for a local store (nothing to upload)."""
    if row.get("status") == fmt.STATUS_RECORDING:
        return {"state": "recording"}
    if not s3:
        return {"state": "stored"}
    return states.get(row["traj_id"], {"state": "uploaded"})  # not in the spool: only in the store


class _Sink:
    """A write-only, unseekable file for zipfile: it writes a streamable zip (data descriptors) into this."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.pos = 0

    def write(self, b: bytes, /) -> int:
        self.chunks.append(bytes(b))
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def stream_zip(files: list[tuple[str, Path]], chunk: int = 1 << 20) -> Iterator[bytes]:
    """A zip of `files` (name in the archive, path), produced piece by piece: nothing is held whole in memory."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as zf:
        for name, path in files:
            info = zipfile.ZipInfo.from_file(path, name)
            info.compress_type = zipfile.ZIP_STORED if name.endswith(".wav") else zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, zf.open(info, "w", force_zip64=info.file_size > 2**31) as dst:
                while data := src.read(chunk):
                    dst.write(data)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


def trajectory_files(store: Store, spool: Spool, traj_id: str) -> list[tuple[str, Path]]:
    """The files of a trajectory, from the spool while it is there, else from the store (S3: through the cache)."""
    d = spool.trajectory_dir(traj_id)
    if (d / fmt.META).is_file():
        return [(f"{traj_id}/{p.name}", p) for p in sorted(d.iterdir()) if p.is_file() and FILE_RE.fullmatch(p.name)]
    keys = [k for k in store.list(f"{traj_id}/") if FILE_RE.fullmatch(k.split("/", 1)[1])]
    if f"{traj_id}/{fmt.META}" not in keys:
        raise KeyError(traj_id)
    return [(k, store.local_path(k)) for k in keys]


def _monitor(state, own: dict) -> dict:
    """/api/monitor's answer: this process's snapshot, the other processes' live files, the progress records."""
    others = [s for s in state.spool.live_snapshots() if s.get("process") != state.process_id]
    st = state.settings
    view = monitor_view([own, *others], state.flow.participants.all(), st.stuck_after_s, st.reconnect_grace_s)
    view["processes"] = [s.get("process") for s in (own, *others)]
    view["process"] = state.process_id
    view["study"] = st.study
    return view


def _trajectories(state) -> list[dict]:
    """/api/trajectories's answer: every trajectory, with its upload state."""
    rows = trajectory_summaries(state.store, state.spool)
    states = state.spool.upload_states() if state.settings.is_s3() else {}
    for row in rows:
        row["upload"] = upload_state(row, states, state.settings.is_s3())
    return rows


def init_app(app: Flask) -> None:
    app.before_request(researcher_gate)

    @app.get("/signin")
    def sign_in_form():
        return sign_in_page(request.args.get("next", "/admin"), "Sign in with the researcher token.", 200)

    @app.post("/signin")
    def sign_in():
        settings = current_app.extensions["atari"].settings
        target = safe_next(request.form.get("next"))
        if not token_matches(settings.researcher_token, request.form.get("token")):
            return sign_in_page(target, "That is not the researcher token.")
        resp = redirect(target, 303)
        set_session_cookie(resp, settings, request)
        return resp

    @app.post("/signout")
    def sign_out():
        resp = redirect("/signin", 303)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="Strict")
        return resp

    @app.get("/admin")
    def admin_page():
        return send_from_directory(CLIENT_DIR, "admin.html", max_age=0)

    @app.get("/api/admin/sessions")
    def sessions():
        state = current_app.extensions["atari"]
        rows = []
        for d in list(state.registry.by_token.values()):
            rows.append(
                {
                    "participant": d.participant,
                    "game": d.game.name,
                    "traj_id": d.traj_id,
                    "episode": d.episode_index,
                    "state": d.state,
                    "connected": d.connected,
                    "frame": d.frame,
                    "score": d.score,
                    "fps": round(d.measured_fps(), 1),
                    **d.connection_status(),  # rtt_ms, rtt_min_ms, ack_lag_ms, connection_slow, ...
                    "mic_level": d.mic_level,
                    "practice": d.practice,
                }
            )
        return jsonify({"sessions": rows, "max": state.registry.max, "counts": state.registry.counts()})

    @app.get("/api/monitor")
    def monitor():
        """The funnel and one row per participant, over every process sharing this spool."""
        state = current_app.extensions["atari"]
        own = snapshot(state.process_id, state.live, list(state.registry.by_token.values()))
        # reading every participant's file (and the other processes') is blocking work: a worker thread's, not the
        # game loop's
        view = state.runtime.run_blocking(_monitor, state, own)
        return jsonify(view)

    @app.get("/api/trajectories")
    def trajectories():
        state = current_app.extensions["atari"]
        return jsonify({"trajectories": state.runtime.run_blocking(_trajectories, state)})

    @app.get("/api/trajectories/<traj_id>.zip")
    def download_zip(traj_id: str):
        try:
            fmt.validate_traj_id(traj_id)
        except InvalidTrajectoryId as e:
            return jsonify({"error": str(e)}), 400
        state = current_app.extensions["atari"]
        try:
            files = trajectory_files(state.store, state.spool, traj_id)
        except (KeyError, StorageError):
            return jsonify({"error": f"no trajectory {traj_id}"}), 404
        return Response(
            stream_zip(files),
            mimetype="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{traj_id}.zip"', "Cache-Control": "no-store"},
        )

    @app.get("/api/trajectories/<traj_id>/<name>")
    def download(traj_id: str, name: str):
        try:
            fmt.validate_traj_id(traj_id)
        except InvalidTrajectoryId as e:
            return jsonify({"error": str(e)}), 400
        if not FILE_RE.fullmatch(name):
            return jsonify({"error": f"invalid file name {name[:60]!r}"}), 400
        state = current_app.extensions["atari"]
        path = state.spool.trajectory_dir(traj_id) / name
        if not path.is_file():
            try:
                path = state.store.local_path(f"{traj_id}/{name}")
            except (KeyError, ValueError):
                return jsonify({"error": f"no {name} for trajectory {traj_id}"}), 404
        return send_file(path, as_attachment=True, download_name=f"{traj_id}_{name}")
