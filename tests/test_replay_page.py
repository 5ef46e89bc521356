"""The replay page and its API: a trajectory recorded through a real server (with speech) is re-simulated and served
by another server on loopback, and headless Chromium plays, steps and seeks it. The canvas must show exactly the
re-simulated screen (palette RGB), and a tampered trajectory must show where it diverged instead of playing; an
annotated one shows its words on the timeline and in a strip that seeks to them.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import numpy as np
import pytest
from browser_util import CHROMIUM, CHROMIUM_ARGS
from flask import Flask
from helpers import ServerProcess
from replay_fixtures import copy_trajectory, recorded_trajectory, tamper

from server.core import format as fmt
from server.core.codec import XorDeflateDecoder
from server.core.palette import to_rgb
from server.core.replay import replay
from server.dataset.annotate import AnnotateOptions, Annotation, write_annotation
from server.dataset.trajectory import Word, load, read_words
from server.store import open_store
from server.web import replay as replay_web
from server.web.access import is_loopback

TAMPERED = "spaceinvaders_TAMPERED_1"
TAMPERED_FRAME = 200
# (word, start_frame, end_frame, keyword): what an annotation in keyword mode (yes, no) found
WORDS = [
    ("yes", 60, 75, True),
    ("go", 120, 130, False),
    ("left", 150, 170, False),
    ("no", 250, 265, True),
    ("fire", 330, 345, False),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    rec = recorded_trajectory(tmp_path_factory)
    store = tmp_path_factory.mktemp("replay-page") / "store"
    shutil.copytree(rec["store"], store)
    tamper(rec["dir"], store, TAMPERED, TAMPERED_FRAME)
    screens = np.stack([rf.screen() for rf in replay(open_store(str(rec["store"])), rec["traj_id"])])
    server = ServerProcess(store, "--game", "spaceinvaders", "--trust-loopback")  # a researcher's laptop
    try:
        yield SimpleNamespace(rec=rec, store=store, server=server, traj=rec["traj_id"], screens=screens)
    finally:
        server.stop()


def get(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def annotate(served, traj_id: str) -> None:
    """Annotate a trajectory of the served store with WORDS, written by the annotator's own writer (the engine's
    provenance stands in for pocketsphinx's: recognising speech is tests/test_annotate.py's business)."""
    n = len(served.rec["rows"])
    nan = np.full(n, np.nan, np.float32)
    ann = Annotation(
        words=[Word(w, a, b, a / 60, (b + 1) / 60, 0.9, kw) for w, a, b, kw in WORDS],
        segments=[(a, b, a / 60, (b + 1) / 60) for _, a, b, _ in WORDS],
        voiced=np.zeros(n, bool),
        energy_db=np.full(n, -100.0, np.float32),
        pitch_hz=nan,
        intensity_db=nan,
        hnr_db=nan,
        word_extra=[{"keyword": kw, "aligned": True} for *_, kw in WORDS],
    )
    annotator = SimpleNamespace(
        opts=AnnotateOptions(keywords=("yes", "no")),
        provenance=lambda: {"recogniser": {"engine": "pocketsphinx", "model": "en-us"}},
    )
    write_annotation(open_store(str(served.store)), traj_id, ann, annotator)  # type: ignore[arg-type]


def decode_screens(body: bytes) -> list[tuple[int, bool, np.ndarray]]:
    dec = XorDeflateDecoder()
    out, pos = [], 0
    while pos < len(body):
        (n,) = struct.unpack_from("<I", body, pos)
        frame, key, screen = dec.decode(body[pos + 4 : pos + 4 + n])
        out.append((frame, key, screen.copy()))
        pos += 4 + n
    return out


# --- API ------------------------------------------------------------------------------------------------------------


def test_info_has_columns_verification_and_speech(served):
    status, body, headers = get(f"{served.server.url}/api/replay/{served.traj}")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    info = json.loads(body)
    n = len(served.rec["rows"])
    assert info["verified"] is True and info["n_frames"] == n == info["frames_available"]
    assert info["meta"]["traj_id"] == served.traj
    cols = info["frames"]
    assert set(cols) == {
        "frame",
        "score",
        "reward",
        "action",
        "keys",
        "terminal",
        "lives",
        "display_ms",
        "speech_sample",
    }
    assert all(len(v) == n for v in cols.values())
    rows = served.rec["rows"]
    assert cols["action"] == [int(r["action"]) for r in rows]
    assert cols["keys"] == [r["keys"] for r in rows]
    assert cols["speech_sample"] == [int(r["speech_sample"]) for r in rows]
    assert info["speech"]["rate"] == served.rec["speech_rate"] and info["speech"]["segments"][0][0] == 0
    assert info["game_audio"] == {"rate": 30720, "samples_per_frame": 512}
    assert len(info["palette"]) == 384 and info["pixel_aspect"] == 2


@pytest.mark.parametrize("start,count", [(0, 60), (75, 100), (400, 600)])
def test_screens_are_the_resimulated_frames(served, start, count):
    status, body, headers = get(f"{served.server.url}/api/replay/{served.traj}/screens?start={start}&count={count}")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    got = decode_screens(body)
    n = len(served.screens)
    assert [f for f, _, _ in got] == list(range(start, min(n, start + count)))
    assert got[0][1]  # every range starts with a keyframe
    for frame, _, screen in got:
        assert np.array_equal(screen, served.screens[frame]), frame


def test_audio_files_are_served(served):
    for name in (fmt.SPEECH, fmt.GAME_AUDIO):
        status, body, headers = get(f"{served.server.url}/api/replay/{served.traj}/{name}")
        assert status == 200 and headers["Content-Type"] == "audio/wav"
        assert body == (served.rec["dir"] / name).read_bytes()


def test_bad_requests(served):
    url = served.server.url
    status, body, _ = get(f"{url}/api/replay/not..an..id")
    assert status == 400 and "invalid trajectory ID" in json.loads(body)["error"]
    status, body, _ = get(f"{url}/api/replay/pong_NOBODY_1")
    assert status == 404 and "no trajectory 'pong_NOBODY_1'" in json.loads(body)["error"]
    for path in (
        "/replay/pong_NOBODY_1",
        "/api/replay/pong_NOBODY_1/speech.wav",
        "/api/replay/pong_NOBODY_1/screens?start=0&count=1",
    ):
        assert get(url + path)[0] == 404, path
    assert get(url + "/replay/bad%20id")[0] == 400
    assert get(f"{url}/api/replay/{served.traj}/screens?start=0&count=0")[0] == 400
    assert get(f"{url}/api/replay/{served.traj}/screens?start=x")[0] == 400
    assert get(f"{url}/api/replay/{served.traj}/screens?start=100000&count=1")[0] == 416


def test_tampered_trajectory_reports_the_divergence(served):
    status, body, _ = get(f"{served.server.url}/api/replay/{TAMPERED}")
    assert status == 200
    v = json.loads(body)["verified"]
    assert v["diverged_at"] == TAMPERED_FRAME and v["field"] == "ram_crc32" and v["expected"] == "deadbeef"
    assert f"diverged at frame {TAMPERED_FRAME}" in v["message"]
    status, body, _ = get(f"{served.server.url}/api/replay/{TAMPERED}/screens?start={TAMPERED_FRAME}&count=5")
    assert status == 416 and "diverged" in json.loads(body)["error"]


def test_info_has_the_words_once_the_trajectory_is_annotated(served):
    traj = "spaceinvaders_WORDSAPI_1"  # a copy: the other tests' trajectory stays unannotated
    copy_trajectory(served.rec["dir"], served.store, traj)
    url = f"{served.server.url}/api/replay/{traj}"
    status, body, _ = get(url)
    info = json.loads(body)
    assert status == 200 and info["verified"] is True
    assert info["words"] is None and info["annotation"] is None
    annotate(served, traj)  # after the replay was cached: its stamp changes, so it is built again
    info = json.loads(get(url)[1])
    assert info["words"] == [
        {"word": w, "start_frame": a, "end_frame": b, "keyword": kw, "confidence": 0.9} for w, a, b, kw in WORDS
    ]
    a = info["annotation"]
    assert (a["engine"], a["model"], a["mode"], a["keywords"]) == ("pocketsphinx", "en-us", "keywords", ["yes", "no"])
    # the page and the loader read the words through one reader
    store = open_store(str(served.store))
    assert load(store, traj, speech=False).words == read_words(store, traj)
    assert [(w.word, w.start_frame, w.end_frame, w.keyword) for w in read_words(store, traj) or []] == WORDS


def test_only_researchers_or_this_machine_under_trust_loopback_may_replay(served):
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("127.0.1.1")
    for addr in ("10.0.0.7", "192.168.1.20", "2001:db8::1", "::ffff:10.0.0.7", "", None, "not an address"):
        assert not is_loopback(addr), addr
    # the routes refuse a request without the researcher's credential with 401 (a bare app with the same store)
    for trust in (False, True):
        app = Flask(__name__)
        app.extensions["atari"] = SimpleNamespace(
            store=open_store(str(served.store)),
            runtime=None,
            settings=SimpleNamespace(researcher_token="tok-123", trust_loopback=trust),
        )
        replay_web.init_app(app)
        client = app.test_client()
        for path in (
            f"/replay/{served.traj}",
            f"/api/replay/{served.traj}",
            f"/api/replay/{served.traj}/speech.wav",
            f"/api/replay/{served.traj}/screens?start=0&count=1",
        ):
            r = client.get(path, environ_base={"REMOTE_ADDR": "10.1.2.3"})
            assert r.status_code == 401, path
            assert b"sign" in r.data.lower()
            r = client.get(path, environ_base={"REMOTE_ADDR": "10.1.2.3"}, headers={"Authorization": "Bearer tok-123"})
            assert r.status_code == 200, path  # the researcher token opens replays from anywhere
            assert (
                client.get(
                    path, environ_base={"REMOTE_ADDR": "10.1.2.3"}, headers={"Authorization": "Bearer wrong"}
                ).status_code
                == 401
            )
        # this machine gets in without the token only under --trust-loopback (a plain forwarder is this machine too)
        want = 200 if trust else 401
        assert client.get(f"/api/replay/{served.traj}", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == want
        assert client.get(f"/replay/{served.traj}", environ_base={"REMOTE_ADDR": "::1"}).status_code == want
        # behind a reverse proxy on this machine (deploy/nginx.conf) the peer is always 127.0.0.1: what the proxy
        # says about the client decides
        local = {"REMOTE_ADDR": "127.0.0.1"}
        for headers in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"},
            {"X-Real-IP": "10.0.0.7"},
            {"Forwarded": 'for="[2001:db8::1]:4711";proto=https'},
            {"Forwarded": "for=unknown"},
        ):
            r = client.get(f"/api/replay/{served.traj}", environ_base=local, headers=headers)
            assert r.status_code == 401, headers
        for headers in ({"X-Forwarded-For": "127.0.0.1"}, {"X-Real-IP": "::1"}, {"Forwarded": "for=127.0.0.1:5123"}):
            r = client.get(f"/api/replay/{served.traj}", environ_base=local, headers=headers)
            assert r.status_code == want, headers


def test_cache_builds_once_and_evicts_least_recently_used(served, tmp_path):
    store_dir = tmp_path / "store"
    shutil.copytree(served.rec["dir"], store_dir / served.traj)
    shutil.copytree(served.rec["dir"], store_dir / "spaceinvaders_COPY_1")
    store = open_store(str(store_dir))
    cache = replay_web.ReplayCache()
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(store, served.traj))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 4 and all(e is got[0] for e in got) and cache.builds == 1
    assert cache.get(store, served.traj) is got[0] and cache.builds == 1  # unchanged files: no new build
    frames = store_dir / served.traj / fmt.FRAMES
    frames.write_text(frames.read_text())  # touched: rebuilt
    os.utime(frames, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache.get(store, served.traj) is not got[0] and cache.builds == 2
    cache.max_bytes = 1  # room for one entry only
    cache.get(store, "spaceinvaders_COPY_1")
    assert list(cache._entries) == ["spaceinvaders_COPY_1"]


# --- the page in Chromium ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: (
            errors.append(f"{m.text} {m.location.get('url')}")
            if m.type == "error" and "favicon" not in str(m.location.get("url"))
            else None
        ),
    )
    page.goto(url)
    return page, errors


def canvas_rgb(page) -> np.ndarray:
    """The replay canvas's backing store (160x210, unscaled) as RGB."""
    data = page.evaluate("""() => {
        const c = document.getElementById('screen');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);
    }""")
    return np.array(data, dtype=np.uint8).reshape(210, 160, 4)[:, :, :3]


def wait_drawn(page, frame: int) -> None:
    page.wait_for_function(f"() => window.__replay.drawnFrame === {frame}", timeout=10_000)


def test_page_plays_steps_seeks_and_shows_the_resimulated_frames(served, browser):
    page, errors = open_page(browser, f"{served.server.url}/replay/{served.traj}")
    try:
        page.wait_for_function("() => window.__replay.ready || window.__replay.error", timeout=30_000)
        assert page.evaluate("() => window.__replay.error") is None
        n = len(served.screens)
        assert page.locator("#verified").inner_text() == f"verified, {n} frames"
        wait_drawn(page, 0)
        assert np.array_equal(canvas_rgb(page), to_rgb(served.screens[0]))

        # play: the audio clock drives the frame index at 60 frames a second
        page.keyboard.press("Space")
        page.wait_for_function("() => window.__replay.playing", timeout=5_000)
        t0 = time.monotonic()
        page.wait_for_function("() => window.__replay.frame >= 60", timeout=10_000)
        page.wait_for_timeout(500)
        f1 = page.evaluate("() => window.__replay.frame")
        elapsed = time.monotonic() - t0
        page.keyboard.press("Space")
        assert page.evaluate("() => window.__replay.audioMode") == "webaudio"
        assert 60 <= f1 <= 60 + (elapsed + 0.5) * 60 * 1.2
        assert not page.evaluate("() => window.__replay.playing")

        # step: right arrow is one frame on, left one back; the canvas shows exactly that screen
        f = page.evaluate("() => window.__replay.frame")
        page.keyboard.press("ArrowRight")
        wait_drawn(page, f + 1)
        assert np.array_equal(canvas_rgb(page), to_rgb(served.screens[f + 1]))
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        wait_drawn(page, f - 1)
        assert np.array_equal(canvas_rgb(page), to_rgb(served.screens[f - 1]))
        assert page.locator("#r-frame").inner_text() == f"{f - 1} / {n - 1}"
        row = served.rec["rows"][f - 1]
        assert page.locator("#r-score").inner_text() == row["score"]
        assert page.locator("#r-keys").inner_text() == (row["keys"] or "none")

        # seek: a click at 3/4 of the timeline goes to the frame 3/4 of the way through
        box = page.locator("#timeline").bounding_box()
        page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
        target = round(0.75 * (n - 1))
        page.wait_for_function(f"() => Math.abs(window.__replay.frame - {target}) <= 2", timeout=5_000)
        k = page.evaluate("() => window.__replay.frame")
        wait_drawn(page, k)
        assert np.array_equal(canvas_rgb(page), to_rgb(served.screens[k]))

        # speed: ] and [ step through 0.25x..8x
        page.keyboard.press("]")
        assert page.evaluate("() => window.__replay.speed") == 2
        page.keyboard.press("[")
        page.keyboard.press("[")
        assert page.evaluate("() => window.__replay.speed") == 0.5
        assert page.locator("#r-speed").inner_text() == "0.5x"
        assert errors == []
    finally:
        page.close()


def test_page_shows_where_a_tampered_trajectory_diverged(served, browser):
    page, _ = open_page(browser, f"{served.server.url}/replay/{TAMPERED}")
    try:
        box = page.locator("#diverged")
        box.wait_for(state="visible", timeout=30_000)
        assert box.inner_text().startswith(f"Replay diverged at frame {TAMPERED_FRAME} (ram_crc32):")
        assert page.locator("#play").is_disabled()
        page.keyboard.press("Space")
        page.wait_for_timeout(300)
        assert not page.evaluate("() => window.__replay.playing")
        assert page.evaluate("() => window.__replay.drawnFrame") == -1  # no picture of a wrong game
    finally:
        page.close()


def test_page_shows_the_words_and_a_click_on_one_seeks_to_it(served, browser):
    traj = "spaceinvaders_WORDSPAGE_1"
    copy_trajectory(served.rec["dir"], served.store, traj)
    annotate(served, traj)
    n = len(served.screens)
    page, errors = open_page(browser, f"{served.server.url}/replay/{traj}")
    try:
        page.wait_for_function("() => window.__replay.ready || window.__replay.error", timeout=30_000)
        assert page.evaluate("() => window.__replay.error") is None
        words = page.locator("#words button")
        assert words.all_inner_texts() == [w for w, *_ in WORDS]
        assert [words.nth(i).get_attribute("data-frame") for i in range(len(WORDS))] == [str(a) for _, a, *_ in WORDS]
        assert page.locator("#words button.keyword").all_inner_texts() == ["yes", "no"]
        assert page.locator("#words .words-about").inner_text() == "words (pocketsphinx, keywords yes, no):"

        # the timeline: a tick at each word's start frame in the band at its bottom, keywords in amber
        page.wait_for_function("() => window.__replay.waveform !== null", timeout=5_000)
        ticks = page.evaluate(
            """(frames) => {
                const t = document.getElementById('timeline'), g = t.getContext('2d'), n = window.__replay.n;
                return frames.map((f) => {
                    const x = Math.round(f / (n - 1) * (t.width - 1));
                    return Array.from(g.getImageData(x, t.height - 1, 1, 1).data.slice(0, 3));
                });
            }""",
            [a for _, a, *_ in WORDS],
        )
        assert ticks == [[255, 176, 0] if kw else [154, 154, 154] for *_, kw in WORDS]

        # a click on "no" seeks to the frame it starts on, shows that screen and marks the word
        no = words.nth(3)
        no.click()
        wait_drawn(page, 250)
        assert page.evaluate("() => window.__replay.frame") == 250
        assert np.array_equal(canvas_rgb(page), to_rgb(served.screens[250]))
        assert page.locator("#r-frame").inner_text() == f"250 / {n - 1}"
        page.wait_for_function("() => document.querySelector('#words button.current') !== null", timeout=5_000)
        assert page.locator("#words button.current").inner_text() == "no"
        assert errors == []
    finally:
        page.close()
    # a trajectory not annotated says how to annotate it
    page, errors = open_page(browser, f"{served.server.url}/replay/{served.traj}")
    try:
        page.wait_for_function("() => window.__replay.ready || window.__replay.error", timeout=30_000)
        note = page.locator("#words")
        assert note.inner_text() == f"not annotated: python scripts/annotate_speech.py {served.traj}"
        assert note.locator("button").count() == 0
        assert errors == []
    finally:
        page.close()
