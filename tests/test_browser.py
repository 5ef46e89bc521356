"""End to end in a real browser: headless Chromium plays Space Invaders through the thin client.

Drives /usr/bin/chromium with Playwright (sync API): passes the microphone check with Chromium's fake microphone
(its default device beeps, loud enough for the check), holds keys like a person would, checks what the page shows,
then stops the server and checks what the recording says about those keys.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"browser test needs Debian's chromium at {CHROMIUM}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser test needs the playwright package")
Image = pytest.importorskip("PIL.Image", reason="browser test needs Pillow to decode the screenshot")

from browser_util import CHROMIUM_ARGS, pass_mic_check  # noqa: E402
from helpers import ServerProcess, read_csv  # noqa: E402

from server.core.replay import replay  # noqa: E402
from server.store import open_store  # noqa: E402

ATARI_W, ATARI_H, PIXEL_ASPECT = 160, 210, 2
ACTION_FIRE, ACTION_RIGHT, ACTION_RIGHTFIRE = 1, 3, 11


def _wait_for_text(path: Path, needle: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return True
        time.sleep(0.05)
    return False


def _assert_shows_the_emulators_screen(store: Path, traj_id: str, shown: dict) -> None:
    """Re-simulated to the frame the page showed (`window.__atari.snapshot()`): the pixels must be the emulator's,
    palette colour for colour."""
    for rf in replay(open_store(str(store)), traj_id):
        if rf.step.frame == shown["frame"]:
            want = rf.emulator.screen_rgb()
            break
    got = np.array(shown["rgba"], dtype=np.uint8).reshape(ATARI_H, ATARI_W, 4)[:, :, :3]
    assert np.array_equal(got, want), f"frame {shown['frame']}: {int((got != want).any(axis=2).sum())} pixels differ"


def test_browser_plays_and_records(tmp_path):
    store = tmp_path / "store"
    server = ServerProcess(store, "--game", "spaceinvaders")
    console: list[str] = []
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                page.goto(server.url + "/?pid=BROWSER1")

                # The microphone check comes first; the game (and Start) only after a test that is not silent.
                sync_api.expect(page.locator("#miccheck")).to_be_visible()
                sync_api.expect(page.locator("#game")).to_be_hidden()
                sync_api.expect(page.locator("#mic-continue")).to_be_disabled()
                pass_mic_check(page, sync_api.expect)

                start = page.locator("#start")
                sync_api.expect(start).to_be_enabled(timeout=10_000)
                start.click()
                page.wait_for_function("() => window.__atari.paintedCount > 60", timeout=15_000)
                assert page.locator("#overlay").is_hidden()

                # Hold keys as a person would: RIGHT ~1 s, FIRE ~0.5 s, then WASD's d (RIGHT) briefly.
                kb = page.keyboard
                kb.down("ArrowRight")
                page.wait_for_timeout(1000)
                kb.up("ArrowRight")
                page.wait_for_timeout(150)
                kb.down("Space")
                page.wait_for_timeout(500)
                kb.up("Space")
                page.wait_for_timeout(150)
                kb.down("d")
                page.wait_for_timeout(250)
                kb.up("d")
                page.wait_for_timeout(300)  # let the last key and paint acks reach the server

                # The canvas shows exactly the frame it says it painted (the codec decoded in the browser's game
                # worker, which owns the canvas): read there in one step, so no paint comes between the pixels and
                # the frame number.
                shown = page.evaluate("() => window.__atari.snapshot()")

                # The game runs in the page's worker: a page whose main thread is busy for 0.6 s (a long task, as a
                # heavy extension or a garbage collection makes) keeps showing frames; before the worker it showed
                # none until the task ended.
                busy = page.evaluate("""async () => {
                    const a = window.__atari, t0 = a.clientNow();
                    while (a.clientNow() - t0 < 600) {}
                    const t1 = a.clientNow();
                    await new Promise((resolve) => setTimeout(resolve, 400)); // the worker's report of them
                    return a.shownLog.filter(([, t]) => t > t0 && t < t1).length;
                }""")
                assert busy >= 18, f"{busy} frames shown while the page was busy for 0.6 s (36 refreshes)"

                # The canvas: a real picture, at the Atari's intrinsic size, scaled with its pixel aspect.
                png = page.locator("#screen").screenshot()
                img = Image.open(io.BytesIO(png)).convert("RGB")
                colours = img.getcolors(maxcolors=1 << 16)
                assert colours is not None and len(colours) > 4, f"canvas looks blank: {colours}"
                geom = page.evaluate("""() => {
                    const c = document.getElementById('screen'), r = c.getBoundingClientRect();
                    return {w: c.width, h: c.height, cssW: r.width, cssH: r.height,
                            rendering: getComputedStyle(c).imageRendering};
                }""")
                assert (geom["w"], geom["h"]) == (ATARI_W, ATARI_H), geom
                assert geom["cssW"] >= ATARI_W * PIXEL_ASPECT, geom
                want = ATARI_W * PIXEL_ASPECT / ATARI_H
                assert abs(geom["cssW"] / geom["cssH"] - want) / want < 0.01, geom

                # The status line refreshes once a second: "connected · 60 fps · latency 2 ms".
                page.wait_for_function(
                    "() => /^connected\\b.*\\d+ fps/.test(document.getElementById('status').textContent)", timeout=3_000
                )
                status = page.locator("#status").text_content()
                assert status.startswith("connected") and "fps" in status, status

                atari = page.evaluate(
                    "({errors: window.__atari.errors, traj: window.__atari.traj_id,"
                    " painted: window.__atari.paintedCount, audioSent: window.__atari.audioSent,"
                    " audioErrors: window.__atari.audioErrors})"
                )
                assert atari["errors"] == [] and atari["audioErrors"] == 0, atari
                assert atari["audioSent"] > 10, f"the microphone sent no audio while playing: {atari}"
                assert not [c for c in console if c.startswith("pageerror")], console
                assert atari["traj"] == "spaceinvaders_BROWSER1_1", atari

                page.close()  # disconnects; the server pauses the episode and waits for a reconnect
            finally:
                browser.close()

        traj = store / "spaceinvaders_BROWSER1_1"
        assert _wait_for_text(traj / "events.csv", "disconnect", timeout=5), "server never saw the disconnect"
        server.stop()  # SIGTERM closes the open episode as interrupted
        assert server.proc.returncode == 0, server.log()
    finally:
        server.stop()

    meta = json.loads((traj / "meta.json").read_text())
    assert meta["status"] == "interrupted", meta
    assert meta["end_reason"] == "server stop", meta
    assert meta["participant"] == "BROWSER1"
    assert meta["frames"] > 60, meta
    mic_rate = meta["client"]["audio"]["sample_rate"]
    assert meta["speech"]["rate"] == (16000 if meta["audio_format"] == "pcm16k" else mic_rate), meta
    assert (traj / "speech.wav").exists()

    frames = read_csv(traj / "frames.csv")
    events = read_csv(traj / "events.csv")
    assert len(frames) == meta["frames"]
    assert 60 < shown["frame"] < len(frames)
    _assert_shows_the_emulators_screen(store, traj.name, shown)
    assert [int(r["frame"]) for r in frames] == list(range(len(frames)))
    by_frame = {int(r["frame"]): r for r in frames}

    right_rows = [r for r in frames if r["action"] == str(ACTION_RIGHT)]
    assert right_rows and all(r["keys"] == "RIGHT" for r in right_rows)
    assert len(right_rows) > 30, f"RIGHT held ~1 s but only {len(right_rows)} frames"
    fire_rows = [r for r in frames if "FIRE" in r["keys"].split("+")]
    assert fire_rows, "no frame with FIRE held"
    assert all(r["action"] in (str(ACTION_FIRE), str(ACTION_RIGHTFIRE)) for r in fire_rows)

    keys = [e for e in events if e["event"] == "key"]
    assert all(e["frame"] != "" and e["detail"] == "" for e in keys), keys
    for key in ("RIGHT", "FIRE"):
        downs = [e for e in keys if e["key"] == key and e["down"] == "1"]
        ups = [e for e in keys if e["key"] == key and e["down"] == "0"]
        assert downs and ups, f"{key}: expected key down and up events, got {keys}"
        first_down = downs[0]
        row = by_frame[int(first_down["frame"])]
        assert key in row["keys"].split("+"), (key, first_down, row)
        assert int(ups[0]["frame"]) > int(first_down["frame"])
        # the frame a key-up is applied at no longer holds it
        up_row = by_frame.get(int(ups[0]["frame"]))
        if up_row is not None:
            assert key not in up_row["keys"].split("+"), (key, ups[0], up_row)
    # ArrowRight and WASD's d both send RIGHT: two presses
    assert len([e for e in keys if e["key"] == "RIGHT" and e["down"] == "1"]) == 2, keys
    assert [int(e["seq"]) for e in keys] == list(range(len(keys)))
    assert any(e["event"] == "disconnect" for e in events)

    painted = sum(1 for r in frames if r["display_ms"] != "")
    assert painted > 0.9 * len(frames), f"only {painted}/{len(frames)} frames have display_ms"
    display = [float(r["display_ms"]) for r in frames if r["display_ms"] != ""]
    assert display[0] == 0.0 and display == sorted(display), "display_ms should start at 0 and never go back"

    # Checked last so a styling regression does not hide the recording checks above. Both declarations are in
    # client/style.css; the preferred `pixelated` must come after the `crisp-edges` fallback to win.
    assert geom["rendering"] == "pixelated", f"canvas image-rendering is {geom['rendering']!r}: {geom}"


def test_a_browser_without_offscreencanvas_still_shows_the_emulators_frames(tmp_path):
    """Where the page cannot hand its canvas to the game's worker (no OffscreenCanvas: Safari before 16.4), the worker
    sends the pixels and the page draws them: the canvas shows exactly the emulator's screen of the frame it says."""
    store = tmp_path / "store"
    server = ServerProcess(store, "--game", "spaceinvaders")
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.add_init_script("delete HTMLCanvasElement.prototype.transferControlToOffscreen;")
                page.goto(server.url + "/?pid=NOOFFSCREEN")
                pass_mic_check(page, sync_api.expect)
                page.locator("#start").click()
                page.wait_for_function("() => window.__atari.paintedCount > 90", timeout=15_000)
                shown = page.evaluate("() => window.__atari.snapshot()")
                page.locator("#finish").click()
                page.wait_for_function("() => !window.__atari.playing", timeout=15_000)
            finally:
                browser.close()
        traj = store / "spaceinvaders_NOOFFSCREEN_1"
        assert _wait_for_text(traj / "meta.json", '"status"', timeout=10), server.log()
    finally:
        server.stop()

    assert shown["frame"] > 60, shown["frame"]
    _assert_shows_the_emulators_screen(store, traj.name, shown)
