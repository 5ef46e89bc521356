"""Researcher sign-in over real HTTP (issue 19): every researcher route refuses a request without the credential,
directly and through a plain TCP forwarder on loopback; the token signs in once and becomes a cookie; no page
carries the token; the admin URL is printed at start-up whatever the flags.

One `--study` server with a generated token serves the whole module (the token is read from its start-up output).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from types import SimpleNamespace

import pytest
from flask import Flask
from helpers import ServerProcess, StudyParticipant, TcpForwarder, http

from server.settings import Settings
from server.settings_sources import load_settings
from server.web import admin as admin_web
from server.web import replay as replay_web
from server.web.access import COOKIE, is_researcher_path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k != "RESEARCHER_TOKEN"}
    server = ServerProcess(
        tmp_path_factory.mktemp("access") / "store",
        "--study",
        "--practice",
        "1",
        "--play-time",
        "1.5",
        "--episode-time-limit",
        "1.5",
        "--game",
        "pong",
        env={**env, "RESEARCHER_TOKEN": ""},
    )
    forwarder = TcpForwarder(server.port)
    try:
        m = re.search(r"http://127\.0\.0\.1:(\d+)/admin\?token=(\S+)", server.log())
        assert m, server.log()
        p = StudyParticipant(server.url, "ACCESS1")
        assert p.to_stage("done")["stage"] == "done"
        p.close()
        yield SimpleNamespace(
            server=server, token=m.group(2), port=int(m.group(1)), forwarder=forwarder, traj="pong_ACCESS1_1"
        )
    finally:
        forwarder.close()
        server.stop()


def researcher_paths(traj: str) -> list[str]:
    return [
        "/admin",
        "/api/admin/sessions",
        "/api/monitor",
        "/api/trajectories",
        f"/api/trajectories/{traj}/meta.json",
        f"/api/trajectories/{traj}/speech.wav",
        f"/api/trajectories/{traj}/game_audio.wav",
        f"/api/trajectories/{traj}.zip",
        f"/replay/{traj}",
        f"/api/replay/{traj}",
        f"/api/replay/{traj}/screens?start=0&count=2",
        f"/api/replay/{traj}/speech.wav",
        f"/api/replay/{traj}/game_audio.wav",
    ]


def signed_in_cookie(served) -> str:
    status, headers, _ = http("GET", f"{served.server.url}/admin?token={served.token}")
    assert status == 303, status
    return headers["Set-Cookie"].split(";", 1)[0]


def test_the_admin_url_with_the_generated_token_is_printed_on_a_study_start(served):
    assert served.port == served.server.port
    assert len(served.token) >= 24
    assert "Researcher monitor" in served.server.log()


def test_the_banner_with_any_flags_and_a_reminder_when_the_token_is_set():
    from server.__main__ import admin_banner

    for argv in ([], ["--study"], ["--port", "6001", "--games", "pong,enduro"], ["--host", "0.0.0.0", "--study"]):
        s = load_settings(argv, {})
        assert s.token_generated(), argv  # load_settings built the settings twice: a flag hid the token
        text = "\n".join(admin_banner(s))
        assert f":{s.port}/admin?token={s.researcher_token}" in text, argv
    s = load_settings(["--study"], {"RESEARCHER_TOKEN": "chosen-by-the-researcher"})
    text = "\n".join(admin_banner(s))
    assert not s.token_generated() and "chosen-by-the-researcher" not in text
    assert "/admin" in text and "RESEARCHER_TOKEN" in text


def test_every_researcher_route_refuses_without_the_credential_even_through_a_loopback_forwarder(served):
    bearer = {"Authorization": f"Bearer {served.token}"}
    for base in (served.server.url, served.forwarder.url):
        for path in researcher_paths(served.traj):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"{COOKIE}=1.abc"}):
                status, _, body = http("GET", base + path, headers)
                assert status == 401, (base, path, headers, status)
                assert b"RIFF" not in body and b"frame," not in body
            status, _, body = http("GET", base + path, bearer)
            assert status == 200, (base, path, status, body[:200])


def test_every_route_but_the_participants_is_a_researcher_route(tmp_path):
    from server.app import create_app

    app, _ = create_app(Settings(store=str(tmp_path / "store"), async_mode="threading"))
    public = {"/", "/static/<path:name>", "/healthz", "/favicon.ico", "/signin", "/signout"}
    for rule in app.url_map.iter_rules():
        if rule.rule not in public:
            assert is_researcher_path(rule.rule.replace("<", "x").replace(">", "x")), rule.rule


def test_the_token_signs_in_once_and_becomes_a_session_cookie(served):
    url = served.server.url
    status, headers, _ = http("GET", f"{url}/replay/{served.traj}?token={served.token}&speed=2")
    assert status == 303 and headers["Location"] == f"/replay/{served.traj}?speed=2"  # the URL is cleaned
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=") and served.token not in cookie
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
    assert {"httponly", "path"} <= attrs and "samesite=strict" in cookie.lower()
    assert "secure" not in attrs  # plain HTTP: a Secure cookie would never come back
    jar = {"Cookie": cookie.split(";", 1)[0]}
    for path in researcher_paths(served.traj):
        assert http("GET", url + path, jar)[0] == 200, path
    status, _, body = http("GET", f"{url}/admin?token=not-the-token")
    assert status == 401 and b"Researcher sign-in" in body
    # a forwarded header from an untrusted peer does not make the cookie Secure
    _, headers, _ = http("GET", f"{url}/admin?token={served.token}", {"X-Forwarded-Proto": "https"})
    assert "secure" not in {a.strip().lower() for a in headers["Set-Cookie"].split(";")}
    # the sign-in form
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = http("POST", f"{url}/signin", form, f"token={served.token}&next=/api/monitor".encode())
    assert status == 303 and headers["Location"] == "/api/monitor" and COOKIE in headers["Set-Cookie"]
    status, headers, _ = http("POST", f"{url}/signin", form, f"token={served.token}&next=//evil.example/".encode())
    assert status == 303 and headers["Location"] == "/admin"  # never sent to another site
    status, headers, _ = http("POST", f"{url}/signin", form, b"token=wrong&next=/admin")
    assert status == 401 and "Set-Cookie" not in headers


def test_no_page_contains_the_token(served):
    url = served.server.url
    jar = {"Cookie": signed_in_cookie(served)}
    pages = [
        "/",
        "/signin",
        "/static/admin.js",
        "/static/admin.html",
        "/static/replay.js",
        "/static/app.js",
        *researcher_paths(served.traj),
    ]
    for path in pages:
        status, headers, body = http("GET", url + path, jar)
        assert status == 200, path
        if path.endswith(".zip"):
            names = zipfile.ZipFile(io.BytesIO(body)).namelist()
            assert f"{served.traj}/meta.json" in names and f"{served.traj}/speech_sync.csv" in names
            body = b"".join(zipfile.ZipFile(io.BytesIO(body)).read(n) for n in names)
        assert served.token.encode() not in body, path
        assert served.token not in str(headers), path
    admin_js = http("GET", url + "/static/admin.js")[2]
    assert b"token=" not in admin_js and b"Authorization" not in admin_js  # the cookie, not the token
    trajs = json.loads(http("GET", url + "/api/trajectories", jar)[2])["trajectories"]
    assert {t["traj_id"]: t["upload"]["state"] for t in trajs}[served.traj] == "stored"


def bare_app(tmp_path, **settings) -> Flask:
    """The researcher gate and the replay routes on a bare app (no server): for what a real socket cannot fake."""
    from server.store import open_store

    app = Flask(__name__)
    app.extensions["atari"] = SimpleNamespace(
        store=open_store(str(tmp_path)), runtime=None, settings=SimpleNamespace(researcher_token="tok-123", **settings)
    )
    app.before_request(admin_web.researcher_gate)
    replay_web.init_app(app)
    return app


def test_loopback_gets_in_only_with_trust_loopback_and_never_through_a_proxy(tmp_path):
    path = "/api/replay/pong_NOBODY_1"
    local = {"REMOTE_ADDR": "127.0.0.1"}
    client = bare_app(tmp_path, trust_loopback=False).test_client()
    assert client.get(path, environ_base=local).status_code == 401
    client = bare_app(tmp_path, trust_loopback=True).test_client()
    assert client.get(path, environ_base=local).status_code == 404  # in: the trajectory does not exist
    assert client.get(path, environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 401
    assert client.get(path, environ_base=local, headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401


def test_the_cookie_is_secure_under_tls_and_behind_a_trusted_proxy_only(tmp_path):
    app = bare_app(tmp_path, trusted_proxies=("127.0.0.1",))
    admin_web.init_app(app)
    client = app.test_client()

    def cookie(**kw) -> str:
        r = client.get("/admin?token=tok-123", **kw)
        assert r.status_code == 303
        return r.headers["Set-Cookie"].lower()

    assert "secure" in cookie(environ_base={"REMOTE_ADDR": "127.0.0.1"}, headers={"X-Forwarded-Proto": "https"})
    assert "secure" not in cookie(environ_base={"REMOTE_ADDR": "10.0.0.9"}, headers={"X-Forwarded-Proto": "https"})
    assert "secure" in cookie(base_url="https://localhost")
    assert "secure" not in cookie(environ_base={"REMOTE_ADDR": "127.0.0.1"})
