"""Researcher routes, behind the researcher token: live sessions, the trajectory list, downloads.

The token comes as `Authorization: Bearer <token>` or `?token=<token>`; it is a setting, generated and printed at
start-up when absent.
"""

from __future__ import annotations

import functools
import hmac
import json
import re

from flask import Flask, abort, current_app, jsonify, request, send_file, send_from_directory

from ..core import format as fmt
from ..errors import InvalidTrajectoryId, StorageError
from .pages import CLIENT_DIR

#: The files a download may name: the format's own, and annotation files.
FILE_RE = re.compile(r"^[a-z_]{1,40}\.(json|csv|wav)$")


def _token_ok() -> bool:
    want = current_app.extensions["atari"].settings.researcher_token
    got = request.args.get("token", "")
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        got = auth[len("Bearer ") :]
    return bool(got) and hmac.compare_digest(got.encode(), want.encode())


def researcher_only(fn):
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        if not _token_ok():
            return jsonify(
                {"error": "researcher token required: add ?token=... or an Authorization: Bearer header"}
            ), 401
        return fn(*args, **kwargs)

    return inner


def trajectory_summaries(store) -> list[dict]:
    """Every trajectory in the store (and the spool, for ones not uploaded yet) with what a researcher scans for."""
    out = {}
    spool = store.spool_dir()
    metas = []
    for p in spool.glob("*/" + fmt.META):
        try:
            metas.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    if not hasattr(store, "root"):  # S3: uploaded ones
        try:
            for key in store.list():
                if key.endswith("/" + fmt.META):
                    traj = key.split("/", 1)[0]
                    if traj not in {m.get("traj_id") for m in metas}:
                        metas.append(json.loads(store.get(key)))
        except (StorageError, KeyError, ValueError):
            pass
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
            "speech_s": speech.get("seconds", 0.0),
            "start_utc": m.get("start_utc"),
            "practice": m.get("practice", False),
        }
    return sorted(out.values(), key=lambda r: r.get("start_utc") or "")


def init_app(app: Flask) -> None:
    @app.get("/admin")
    def admin_page():
        if not _token_ok():
            abort(401)
        return send_from_directory(CLIENT_DIR, "admin.html", max_age=0)

    @app.get("/api/admin/sessions")
    @researcher_only
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
        return jsonify({"sessions": rows, "max": state.registry.max})

    @app.get("/api/trajectories")
    @researcher_only
    def trajectories():
        return jsonify({"trajectories": trajectory_summaries(current_app.extensions["atari"].store)})

    @app.get("/api/trajectories/<traj_id>/<name>")
    @researcher_only
    def download(traj_id: str, name: str):
        try:
            fmt.validate_traj_id(traj_id)
        except InvalidTrajectoryId as e:
            return jsonify({"error": str(e)}), 400
        if not FILE_RE.fullmatch(name):
            return jsonify({"error": f"invalid file name {name[:60]!r}"}), 400
        store = current_app.extensions["atari"].store
        spooled = store.spool_dir() / traj_id / name
        if spooled.is_file():
            return send_file(spooled, as_attachment=True, download_name=f"{traj_id}_{name}")
        try:
            path = store.path(f"{traj_id}/{name}")
        except KeyError:
            return jsonify({"error": f"no {name} for trajectory {traj_id}"}), 404
        if not path.is_file():
            return jsonify({"error": f"no {name} for trajectory {traj_id}"}), 404
        return send_file(path, as_attachment=True, download_name=f"{traj_id}_{name}")
