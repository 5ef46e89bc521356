"""The study monitor (/admin) in headless Chromium: a study with participants in different stages shows the right
funnel, the stuck one highlighted, frame rate and latency of the one playing, replay and zip links; signed in by
the URL once, which the page then no longer shows."""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from pathlib import Path

import pytest
from browser_util import CHROMIUM, chromium_args
from helpers import ServerProcess, StudyParticipant, http

TOKEN = "monitor-test-token"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    server = ServerProcess(
        tmp_path_factory.mktemp("monitor") / "store",
        "--study",
        "--practice",
        "60",
        "--play-time",
        "1",
        "--stuck-after-s",
        "2",
        "--game",
        "pong",
        env={"RESEARCHER_TOKEN": TOKEN},
    )
    people: list[StudyParticipant] = []
    try:
        done, practising, at_mic, entered, declined = (
            StudyParticipant(server.url, pid) for pid in ("DONE1", "PRACT1", "MIC1", "ENTER1", "NOPE1")
        )
        people = [done, practising, at_mic, entered, declined]
        assert done.to_stage("practice")["stage"] == "practice"
        done.sio.emit("start", {})
        done.wait_frames(10)
        done.stop_episode()  # a practice round cut short: on to the recorded play
        done.wait_for(lambda: done.states[-1]["stage"] == "episodes")
        assert done.play_episode()["stage"] == "done"
        assert practising.to_stage("practice")["stage"] == "practice"
        practising.sio.emit("start", {})
        practising.wait_frames(30)
        for p in (practising,):
            p.sio.emit("rtt", {"rtt_ms": 42.0})
        assert at_mic.to_stage("miccheck")["stage"] == "miccheck"
        assert entered.to_stage("consent")["stage"] == "consent"
        assert declined.to_stage("declined")["stage"] == "declined"
        yield server, people
    finally:
        for p in people:
            p.close()
        server.stop()


EXPECTED = {
    "entered": 5,
    "consented": 3,
    "miccheck": 3,
    "practice": 2,
    "playing": 1,
    "completed": 1,
    "declined": 1,
    "screened_out": 0,
    "dropped": 0,
}


def test_the_monitor_api_has_the_funnel_and_a_row_per_participant(study):
    server, _ = study
    status, _, body = http("GET", server.url + "/api/monitor", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    view = json.loads(body)
    assert view["funnel"] == EXPECTED, view["funnel"]
    rows = {r["participant"]: r for r in view["participants"]}
    assert rows["DONE1"]["status"] == "completed" and rows["DONE1"]["episodes"] == 1 and rows["DONE1"]["code"]
    assert rows["PRACT1"]["in_episode"] and rows["PRACT1"]["fps"] > 30 and rows["PRACT1"]["rtt_ms"] == 42.0
    assert rows["MIC1"]["stage"] == "miccheck" and rows["ENTER1"]["stage"] == "consent"
    assert rows["NOPE1"]["status"] == "declined"


def test_the_monitor_in_chromium_shows_the_funnel_stuck_rows_and_links(study, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    server, _ = study
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=chromium_args())
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{server.url}/admin?token={TOKEN}")
            assert page.url == f"{server.url}/admin"  # signed in, and the token is gone from the address bar
            for step, n in EXPECTED.items():
                sync_api.expect(page.locator(f'#funnel li[data-step="{step}"] .n')).to_have_text(str(n), timeout=10_000)
            # the participant waiting at the microphone check for longer than --stuck-after-s is highlighted
            sync_api.expect(page.locator('tr[data-participant="MIC1"]')).to_have_class("stuck", timeout=10_000)
            assert page.locator('tr[data-participant="DONE1"]').get_attribute("class") != "stuck"
            playing = page.locator('tr[data-participant="PRACT1"] td')
            assert re.fullmatch(r"\d+\.\d", playing.nth(8).inner_text()), playing.all_inner_texts()  # fps
            assert playing.nth(6).inner_text() == "42"  # latency
            traj = page.locator("#trajectories tr[data-traj] a", has_text="replay").first
            sync_api.expect(traj).to_have_attribute("href", "/replay/pong_DONE1_1", timeout=15_000)
            row = page.locator('#trajectories tr[data-traj="pong_DONE1_1"]')
            zip_href = row.locator("a", has_text="zip").get_attribute("href")
            assert TOKEN not in page.content()
            # the page's own links work with the cookie it signed in with
            r = page.request.get(server.url + zip_href)
            assert r.status == 200 and "pong_DONE1_1/frames.csv" in zipfile.ZipFile(io.BytesIO(r.body())).namelist()
            out = Path(os.environ.get("MONITOR_SCREENSHOT", tmp_path / "monitor.png"))
            page.screenshot(path=str(out), full_page=True)
            # the replay link opens the replay, its data and audio fetched with the same cookie
            page.locator('#trajectories tr[data-traj="pong_DONE1_1"] a', has_text="replay").click()
            page.wait_for_function("() => window.__replay && (window.__replay.ready || window.__replay.error)")
            assert page.evaluate("() => window.__replay.error") is None
            assert page.url == f"{server.url}/replay/pong_DONE1_1"
            assert not errors, errors
        finally:
            browser.close()


def test_stale_live_files_are_ignored_and_a_silent_participant_is_dropped(tmp_path):
    """Without a server: a process's live file not rewritten for LIVE_STALE_S is a dead process's; a participant
    who consented, is connected nowhere and was last seen longer ago than the reconnect grace has dropped out."""
    from server.monitor import monitor_view
    from server.spool import LIVE_STALE_S, Spool

    spool = Spool(tmp_path)
    now = 1_000_000.0
    row = {"participant": "LIVE1", "stage": "miccheck", "since": now - 10, "active": now - 10, "last_seen": now}
    spool.publish_live("hostA-1", {"process": "hostA-1", "updated": now, "participants": [{**row, "connected": True}]})
    spool.publish_live(
        "hostB-2", {"process": "hostB-2", "updated": now, "participants": [{**row, "participant": "OLD1"}]}
    )
    old = spool.live_path("hostB-2")
    os.utime(old, (old.stat().st_mtime - LIVE_STALE_S - 1,) * 2)
    snaps = spool.live_snapshots()
    assert [s["process"] for s in snaps] == ["hostA-1"]
    records = [
        ({"participant": "LIVE1", "stage": "miccheck", "episodes": 0}, now - 10),
        ({"participant": "GONE1", "stage": "practice", "episodes": 0}, now - 500),
        ({"participant": "FIN1", "stage": "done", "episodes": 2, "code": "C0DE"}, now - 900),
    ]
    view = monitor_view(snaps, records, stuck_after_s=5, dropped_after_s=120, now=now)
    rows = {r["participant"]: r for r in view["participants"]}
    assert rows["GONE1"]["status"] == "dropped" and rows["FIN1"]["status"] == "completed"
    assert rows["LIVE1"]["stuck"] and not rows["GONE1"]["stuck"] and not rows["FIN1"]["stuck"]
    assert view["funnel"] == {
        "entered": 3,
        "consented": 3,
        "miccheck": 3,
        "practice": 2,
        "playing": 1,
        "completed": 1,
        "declined": 0,
        "screened_out": 0,
        "dropped": 1,
    }
