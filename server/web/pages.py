"""HTTP routes: the play page, the static client, and the 'server is full' page."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, abort, current_app, request, send_from_directory

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self' ws: wss:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)

FULL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Server full</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><main class="notice"><h1>The server is full, try again later.</h1>
<p>Every place for a demonstrator is taken right now. Please come back in a few minutes and reload this page.</p>
</main></body></html>
"""


def init_app(app: Flask) -> None:
    @app.after_request
    def security_headers(resp):
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        return resp

    @app.get("/")
    def index():
        state = current_app.extensions["atari"]
        token = request.cookies.get("atari_session", "")
        returning = token in state.registry.by_token and not state.registry.by_token[token].gone
        if state.registry.full() and not returning:  # a reload of someone already playing still gets in
            return FULL_PAGE, 503, {"Retry-After": "60", "Content-Type": "text/html; charset=utf-8"}
        return send_from_directory(CLIENT_DIR, "index.html", max_age=0)

    @app.get("/static/<path:name>")
    def static_file(name: str):
        # send_from_directory refuses paths that escape CLIENT_DIR
        return send_from_directory(CLIENT_DIR, name, max_age=0)

    @app.get("/healthz")
    def healthz():
        state = current_app.extensions["atari"]
        return {
            "ok": True,
            **state.registry.counts(),  # demonstrators (what the limit counts), playing, paused, waiting_rejoin
            "max": state.registry.max,
            "games": list(state.settings.games),
            "storage_ok": state.storage.ok,
            "emulators_idle": state.pool.idle(),
            "emulators_loaded": state.pool.loaded(),
        }

    @app.get("/favicon.ico")
    def favicon():
        abort(404)
