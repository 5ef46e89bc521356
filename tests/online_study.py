"""A study over the internet, with real parts: `python -m server --study --certfile --keyfile` (a test CA from trustme),
reached by headless Chromium at a host name that is not localhost (study.example.org, mapped to 127.0.0.1) over
HTTPS, with the fake microphone; a local page stands in for Prolific. The participants are the test's bots:

- one completes and lands on the completion URL with the right `cc=`; meta.json carries STUDY_ID and SESSION_ID;
  coming back, they are told they completed and nothing is recorded again;
- one declines and gets the declined outcome;
- one fails an entry check (--max-rtt-ms 0, under gevent) and is screened out with nothing recorded;
- over plain HTTP at that host name the page explains the secure connection before the consent form.

Free play's Finish button ends an episode as `quit`. One browser serves every case.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
from browser_util import CHROMIUM, CHROMIUM_ARGS, pass_mic_check

if not CHROMIUM.exists():
    pytest.skip(f"browser test needs Debian's chromium at {CHROMIUM}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser test needs the playwright package")
pytest.importorskip("trustme", reason="the HTTPS test makes its certificates with trustme")
expect = sync_api.expect

from helpers import ServerProcess, free_port  # noqa: E402
from tls_util import STUDY_HOST, make_certificates  # noqa: E402

PROLIFIC_HOST = "prolific.example.net"
CODE, DECLINED, SCREENED = "CC1234AB", "DECL9", "SCRN9"
VIEWPORT = {"width": 1366, "height": 657}  # a 1366x768 laptop screen's browser window


class Prolific:
    """A local page standing in for Prolific's completion URL; remembers the paths asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        seen = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the standard library's name)
                seen.append(self.path)
                body = b"<!doctype html><title>Prolific</title><h1>Submission received</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://{PROLIFIC_HOST}:{self.port}"

    def url(self) -> str:
        return self.base + "/submissions/complete?cc={code}"

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def prolific():
    p = Prolific()
    yield p
    p.close()


@pytest.fixture(scope="module")
def browser(certs):
    args = [
        *CHROMIUM_ARGS,
        f"--host-resolver-rules=MAP {STUDY_HOST} 127.0.0.1, MAP {PROLIFIC_HOST} 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={certs.spki}",  # trust the test certificate, not every certificate
    ]
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield b
        b.close()


def _tls_args(certs) -> list[str]:
    return ["--certfile", str(certs.certfile), "--keyfile", str(certs.keyfile)]


@pytest.fixture(scope="module")
def study(tmp_path_factory, certs, prolific):
    """The study on HTTPS: no practice, 3 seconds of recorded play, a completion code and URL, a declined code."""
    store = tmp_path_factory.mktemp("online") / "store"
    server = ServerProcess(
        store,
        "--study",
        "--game",
        "mspacman",
        "--practice",
        "0",
        "--play-time",
        "3",
        "--completion-code",
        CODE,
        "--completion-url",
        prolific.url(),
        "--declined-code",
        DECLINED,
        *_tls_args(certs),
        cafile=certs.cafile,
    )
    yield server
    server.stop()


def _page(browser, console: list[str]):
    page = browser.new_page(viewport=VIEWPORT)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    return page


def _url(server: ServerProcess, pid: str, scheme: str = "https") -> str:
    return f"{scheme}://{STUDY_HOST}:{server.port}/?PROLIFIC_PID={pid}&STUDY_ID=STUDY{pid}&SESSION_ID=SESSION{pid}"


def _log(store: Path) -> list[dict]:
    p = store / ".study" / "log.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def _trajectories(store: Path, pid: str) -> list[str]:
    return sorted(p.parent.name for p in store.glob(f"*_{pid}_*/meta.json"))


def test_a_participant_completes_and_lands_on_the_completion_url(browser, study, prolific):
    console: list[str] = []
    page = _page(browser, console)
    page.goto(_url(study, "ONL1"))
    assert page.evaluate("() => window.isSecureContext") is True

    # the entry checks pass; then the consent form, rendered from Markdown, with a secondary "I do not agree"
    expect(page.locator("#consent")).to_be_visible(timeout=15_000)
    expect(page.locator("#consent-text h1")).to_be_visible()
    accept_bg, decline_bg = (
        page.locator(sel).evaluate("e => getComputedStyle(e).backgroundColor")
        for sel in ("#consent-accept", "#consent-decline")
    )
    assert accept_bg != decline_bg and decline_bg in ("rgba(0, 0, 0, 0)", "transparent"), (accept_bg, decline_bg)
    # no technical readouts in a study
    for sel in ("#status", "#mic", "#score"):
        expect(page.locator(sel)).to_be_hidden()
    page.locator("#consent-accept").click()

    # instructions in words, with the game's real keys (Ms. Pac-Man has no fire)
    expect(page.locator("#instructions")).to_be_visible(timeout=5_000)
    expect(page.locator("#instr-plan")).to_have_text("You will have 3 seconds of recorded play.")
    assert "SPACE" not in page.locator("#instr-keys").text_content()
    page.locator("#instr-done").click()
    expect(page.locator("#miccheck")).to_be_visible(timeout=5_000)
    pass_mic_check(page, expect)

    start = page.locator("#start")
    expect(start).to_be_enabled(timeout=5_000)
    start.click()
    page.wait_for_function("() => window.__atari.playing && window.__atari.paintedCount > 30", timeout=10_000)
    # the game fills the window (at least 85% of its width or height), the help is the game's, the score shows
    box = page.locator("#screen").bounding_box()
    assert box["height"] >= 0.85 * VIEWPORT["height"] or box["width"] >= 0.85 * VIEWPORT["width"], box
    assert "SPACE" not in page.locator("#help").text_content()
    expect(page.locator("#score")).to_be_visible()
    expect(page.locator("#status")).to_be_hidden()
    expect(page.locator("#finish")).to_be_hidden()  # a study's episodes end by themselves

    # the outcome: the code, then the redirect to the completion URL with cc= the code
    expect(page.locator("#outcome[data-kind=completed]")).to_be_visible(timeout=20_000)
    expect(page.locator("#code")).to_have_text(CODE)
    expect(page.locator("#outcome-go")).to_have_attribute("href", prolific.url().replace("{code}", CODE))
    page.wait_for_url(f"{prolific.base}/submissions/complete?cc={CODE}", timeout=10_000)
    assert f"/submissions/complete?cc={CODE}" in prolific.paths
    assert not [c for c in console if c.startswith("pageerror")], console
    page.close()

    store = study.store
    (traj,) = _trajectories(store, "ONL1")
    meta = json.loads((store / traj / "meta.json").read_text())
    assert meta["participant"] == "ONL1" and meta["status"] == "complete", meta
    assert meta["client"]["recruitment"] == {
        "platform": "prolific",
        "study_id": "STUDYONL1",
        "session_id": "SESSIONONL1",
    }, meta["client"]
    checks = meta["client"]["entry_checks"]
    assert checks["rtt_ms"] is not None and len(checks["rtt_probes_ms"]) >= 5, checks
    assert checks["refresh_hz"] > 30 and checks["window"] == [1366, 657] and "Chrome" in checks["user_agent"], checks
    assert checks["secure_context"] is True and checks["missing_features"] == [], checks
    log = [e for e in _log(store) if e["participant"] == "ONL1"]
    assert [e["event"] for e in log] == ["consented", "completed"], log
    assert log[-1]["study_id"] == "STUDYONL1" and log[-1]["session_id"] == "SESSIONONL1", log

    # coming back: told so, not recorded again
    page = _page(browser, console)
    page.goto(_url(study, "ONL1"))
    expect(page.locator("#outcome[data-kind=completed]")).to_be_visible(timeout=15_000)
    expect(page.locator("#outcome-title")).to_have_text("You have already completed this study")
    for sel in ("#consent", "#entry", "#miccheck", "#game"):
        expect(page.locator(sel)).to_be_hidden()
    page.close()
    assert _trajectories(store, "ONL1") == [traj]
    assert [e["event"] for e in _log(store) if e["participant"] == "ONL1"] == ["consented", "completed"]


def test_a_participant_declines_and_is_asked_to_return_the_study(browser, study):
    console: list[str] = []
    page = _page(browser, console)
    page.goto(_url(study, "ONL2"))
    expect(page.locator("#consent")).to_be_visible(timeout=15_000)
    page.locator("#consent-decline").click()
    expect(page.locator("#outcome[data-kind=declined]")).to_be_visible(timeout=5_000)
    expect(page.locator("#outcome-text")).to_contain_text("return the study on Prolific")
    expect(page.locator("#code")).to_have_text(DECLINED)
    assert not [c for c in console if c.startswith("pageerror")], console
    page.close()
    assert not (study.store / ".study" / "ONL2.json").exists()
    assert _trajectories(study.store, "ONL2") == []
    (line,) = [e for e in _log(study.store) if e["participant"] == "ONL2"]
    assert line["event"] == "declined" and line["study_id"] == "STUDYONL2", line


def test_a_failed_entry_check_screens_out_with_nothing_recorded(browser, certs, prolific, tmp_path):
    store = tmp_path / "store"
    server = ServerProcess(
        store,
        "--study",
        "--async-mode",
        "gevent",
        "--max-rtt-ms",
        "0",
        "--screened-code",
        SCREENED,
        "--screened-url",
        prolific.url(),
        *_tls_args(certs),
        cafile=certs.cafile,
    )
    try:
        console: list[str] = []
        page = _page(browser, console)
        page.goto(_url(server, "ONL3"))
        # what to change, and the way out when nothing can be changed; never the consent form
        expect(page.locator("#entry-reasons li[data-reason=rtt]")).to_be_visible(timeout=15_000)
        expect(page.locator("#entry-reasons li")).to_have_count(1)
        expect(page.locator("#consent")).to_be_hidden()
        page.locator("#entry-again").click()  # checking again does not help
        expect(page.locator("#entry-reasons li[data-reason=rtt]")).to_be_visible(timeout=15_000)
        page.locator("#entry-giveup").click()
        expect(page.locator("#outcome[data-kind=screened]")).to_be_visible(timeout=5_000)
        expect(page.locator("#code")).to_have_text(SCREENED)
        page.wait_for_url(f"{prolific.base}/submissions/complete?cc={SCREENED}", timeout=10_000)
        assert not [c for c in console if c.startswith("pageerror")], console
        page.close()
    finally:
        server.stop()
    assert [p.name for p in (store / ".study").iterdir()] == ["log.jsonl"]  # no participant record
    assert not [p for p in store.iterdir() if not p.name.startswith(".")], list(store.iterdir())  # no trajectory
    (line,) = _log(store)
    assert line["event"] == "screened" and line["reasons"] == ["rtt"] and line["participant"] == "ONL3", line
    assert set(line) == {"t", "event", "participant", "platform", "study_id", "session_id", "reasons"}, line


def test_plain_http_at_a_host_name_explains_the_secure_connection_before_consent(browser, tmp_path):
    server = ServerProcess(tmp_path / "store", "--study")
    try:
        page = _page(browser, [])
        page.goto(_url(server, "ONL4", scheme="http"))
        assert page.evaluate("() => window.isSecureContext") is False
        reason = page.locator("#entry-reasons li[data-reason=insecure]")
        expect(reason).to_be_visible(timeout=15_000)
        expect(reason).to_contain_text("https://")
        expect(reason.locator("a")).to_have_attribute("href", _url(server, "ONL4"))
        expect(page.locator("#consent")).to_be_hidden()
        expect(page.locator("#miccheck")).to_be_hidden()
        page.close()
    finally:
        server.stop()
    assert not (tmp_path / "store" / ".study" / "ONL4.json").exists()


def test_free_play_has_a_finish_button_that_ends_the_episode_as_quit(browser, tmp_path):
    server = ServerProcess(tmp_path / "store", "--game", "mspacman")
    try:
        page = _page(browser, [])
        page.goto(server.url + "/")  # 127.0.0.1: a secure context without TLS
        expect(page.locator("#miccheck")).to_be_visible(timeout=15_000)
        pass_mic_check(page, expect)
        page.locator("#start").click()
        page.wait_for_function("() => window.__atari.playing && window.__atari.paintedCount > 30", timeout=10_000)
        finish = page.locator("#finish")
        expect(finish).to_be_visible()
        traj = page.evaluate("() => window.__atari.traj_id")
        finish.focus()  # keyboard: the button takes the focus and Enter presses it
        page.keyboard.press("Enter")
        page.wait_for_function("() => !window.__atari.playing", timeout=10_000)
        expect(page.locator("#overlay-text")).to_contain_text("Finished")
        page.close()
    finally:
        server.stop()
    meta = json.loads((tmp_path / "store" / traj / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["end_reason"] == "quit", meta
    assert meta["client"]["entry_checks"]["secure_context"] is True, meta["client"]
