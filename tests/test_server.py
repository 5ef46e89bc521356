"""The server as a process: reconnects, pauses, signals, crash recovery, admission control, async modes, codecs."""

import json
import signal
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from helpers import ScriptedDemonstrator, ServerProcess, read_csv

from server.core import format as fmt
from server.core.replay import verify
from server.serve import make_listener
from server.store import open_store


def fps_over(client: ScriptedDemonstrator, seconds: float) -> float:
    n0, t0 = len(client.frames), time.monotonic()
    time.sleep(seconds)
    return (len(client.frames) - n0) / (time.monotonic() - t0)


def test_accepted_sockets_inherit_tcp_nodelay():
    lst = make_listener("127.0.0.1", 0)
    try:
        c = socket.create_connection(lst.getsockname())
        conn, _ = lst.accept()
        assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        conn.close()
        c.close()
    finally:
        lst.close()


def test_reconnect_resumes_the_same_episode_with_a_keyframe(tmp_path):
    server = ServerProcess(tmp_path / "store", "--resume-countdown", "0.5")
    try:
        a = ScriptedDemonstrator(server.url)
        ep = a.start(participant="RECON")
        a.wait_frames(120)
        a.sio.disconnect()  # the connection drops
        time.sleep(0.5)
        b = ScriptedDemonstrator(server.url)  # the page reconnects
        n = len(b.frames)
        b.episodes.append(ep)  # decode against the same stream
        b.sio.emit("rejoin", {"session": ep["session"]})
        b.wait_frames(n + 120, timeout=20)
        assert b.events and b.errors == []
        resumed = [d for e, d in b.events if e == "episode"] or b.episodes[1:]
        assert b.episodes[-1]["traj_id"] == ep["traj_id"] and b.episodes[-1]["resumed"] is True
        assert ("countdown", {"seconds": 0.5, "frame": b.episodes[-1]["frame"]}) in b.events
        assert resumed
        assert b.screen is not None  # the first frame after rejoin was a keyframe, so it decoded
        end = b.stop_episode()
        assert end["traj_id"] == ep["traj_id"]
        events = [e["event"] for e in read_csv(tmp_path / "store" / ep["traj_id"] / fmt.EVENTS)]
        for kind in ("disconnect", "reconnect", "resume", "play"):
            assert kind in events
        # frames continue without a gap across the reconnect
        rows = read_csv(tmp_path / "store" / ep["traj_id"] / fmt.FRAMES)
        assert [int(r["frame"]) for r in rows] == list(range(len(rows)))
        assert verify(open_store(str(tmp_path / "store")), ep["traj_id"]) == len(rows)
        b.close()
    finally:
        server.stop()


def test_pause_stops_the_game_and_resume_counts_down(tmp_path):
    server = ServerProcess(tmp_path / "store", "--resume-countdown", "1")
    try:
        c = ScriptedDemonstrator(server.url)
        ep = c.start()
        c.wait_frames(60)
        c.sio.emit("pause")
        time.sleep(0.3)
        n = len(c.frames)
        time.sleep(0.7)
        assert len(c.frames) == n  # paused: no frames
        c.sio.emit("resume")
        time.sleep(0.6)
        assert len(c.frames) == n  # counting down
        c.wait_frames(n + 30, timeout=5)
        c.stop_episode()
        meta = json.loads((tmp_path / "store" / ep["traj_id"] / fmt.META).read_text())
        assert meta["status"] == "complete"
        kinds = [e["event"] for e in read_csv(tmp_path / "store" / ep["traj_id"] / fmt.EVENTS)]
        assert kinds.index("pause") < kinds.index("resume") < kinds.index("play")
        c.close()
    finally:
        server.stop()


def test_a_client_can_have_its_games_next_tick_come_later_and_the_recording_says_so(tmp_path):
    """The display's phase (docs/protocol.md, `rtt`'s `slip_ms`): granted once while playing with the first frame that
    comes later, refused again within half a second and outside (0, one period]; meta.json counts what was granted;
    every frame is still recorded and verifies."""
    server = ServerProcess(tmp_path / "store")
    try:
        c = ScriptedDemonstrator(server.url)
        assert "slip_from" not in c.sio.call("rtt", {"t": c.now_ms(), "slip_ms": 8.0})  # no episode yet
        ep = c.start()
        c.wait_frames(30)
        granted = c.sio.call("rtt", {"t": c.now_ms(), "slip_ms": 8.0})
        assert isinstance(granted.get("slip_from"), int) and granted["slip_from"] > 0, granted
        assert "slip_from" not in c.sio.call("rtt", {"t": c.now_ms(), "slip_ms": 8.0})  # too soon
        time.sleep(0.6)
        for bad in (0, -5, 17.0, "8", None):
            assert "slip_from" not in c.sio.call("rtt", {"t": c.now_ms(), "slip_ms": bad}), bad
        c.wait_frames(len(c.frames) + 30)
        c.stop_episode()
        traj = tmp_path / "store" / ep["traj_id"]
        meta = json.loads((traj / fmt.META).read_text())
        assert meta["status"] == "complete"
        assert (meta["connection"]["display_slips"], meta["connection"]["display_slip_ms"]) == (1, 8.0)
        frames = [int(r["frame"]) for r in read_csv(traj / fmt.FRAMES)]
        assert frames == list(range(len(frames))) and granted["slip_from"] < len(frames)
        assert verify(open_store(str(tmp_path / "store")), ep["traj_id"]) == len(frames)
        c.close()
    finally:
        server.stop()


def test_sigterm_closes_open_episodes_as_interrupted(tmp_path):
    server = ServerProcess(tmp_path / "store")
    c = ScriptedDemonstrator(server.url)
    ep = c.start()
    c.wait_frames(200)
    assert server.stop(signal.SIGTERM) == 0
    meta = json.loads((tmp_path / "store" / ep["traj_id"] / fmt.META).read_text())
    assert meta["status"] == "interrupted" and meta["end_reason"] == "server stop"
    rows = read_csv(tmp_path / "store" / ep["traj_id"] / fmt.FRAMES)
    assert meta["frames"] == len(rows) >= 200
    assert verify(open_store(str(tmp_path / "store")), ep["traj_id"]) == len(rows)
    c.close()


def test_sigkill_loses_at_most_a_second_and_restart_recovers(tmp_path):
    server = ServerProcess(tmp_path / "store")
    c = ScriptedDemonstrator(server.url)
    ep = c.start()
    c.wait_frames(300)
    sent = len(c.frames)
    server.stop(signal.SIGKILL)
    c.close()
    d = tmp_path / "store" / ep["traj_id"]
    assert json.loads((d / fmt.META).read_text())["status"] == "recording"
    rows = read_csv(d / fmt.FRAMES)
    assert len(rows) >= sent - 60  # at most a second lost
    restarted = ServerProcess(tmp_path / "store")
    try:
        meta = json.loads((d / fmt.META).read_text())
        assert meta["status"] == "interrupted" and meta["recovered"] is True and meta["frames"] == len(rows)
        assert verify(open_store(str(tmp_path / "store")), ep["traj_id"]) == len(rows)
        assert "closed 1 trajectories left open" in restarted.log()
    finally:
        restarted.stop()


def test_a_second_process_on_the_same_store_leaves_the_first_ones_episode_alone(tmp_path):
    """One process per core share a store: a process starting (or restarting) later must not treat the episodes the
    others are recording as left open by a crash."""
    first = ServerProcess(tmp_path / "store")
    try:
        c = ScriptedDemonstrator(first.url)
        ep = c.start(participant="FIRST")
        c.wait_frames(120)
        d = tmp_path / "store" / ep["traj_id"]
        second = ServerProcess(tmp_path / "store")
        try:
            assert json.loads((d / fmt.META).read_text())["status"] == "recording"
            assert "left open" not in second.log()
            n = len(c.frames)
            c.wait_frames(n + 60)
            end = c.stop_episode()
        finally:
            second.stop()
        c.close()
    finally:
        first.stop()
    meta = json.loads((d / fmt.META).read_text())
    assert end["status"] == meta["status"] == "complete" and "recovered" not in meta
    assert verify(open_store(str(tmp_path / "store")), ep["traj_id"]) == meta["frames"] >= n + 60


def test_admission_control_turns_away_the_extra_demonstrator(tmp_path):
    server = ServerProcess(tmp_path / "store", "--max-demonstrators", "1")
    try:
        a = ScriptedDemonstrator(server.url)
        a.start()
        a.wait_frames(30)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url + "/")
        assert e.value.code == 503 and b"The server is full, try again later" in e.value.read()
        b = ScriptedDemonstrator(server.url)
        b.sio.emit("start", {})
        b.wait_for(lambda: b.errors)
        assert b.errors[0]["code"] == "full" and "try again later" in b.errors[0]["message"]
        assert b.frames == []
        assert fps_over(a, 2.0) == pytest.approx(60, abs=3)
        a.stop_episode()
        b.close()
        a.close()
        time.sleep(0.5)
        with urllib.request.urlopen(server.url + "/") as r:  # a place is free again
            assert r.status == 200
    finally:
        server.stop()


@pytest.mark.parametrize("mode,codec", [("gevent", "xor"), ("eventlet", "jpeg"), ("threading", "xor")])
def test_other_async_mode_and_codec_smoke(tmp_path, mode, codec):
    server = ServerProcess(tmp_path / "store", "--async-mode", mode, "--codec", codec, "--game", "pong")
    try:
        c = ScriptedDemonstrator(server.url)
        ep = c.start()
        assert ep["codec"] == codec
        c.wait_frames(30)
        c.key("UP", True)
        c.wait_frames(240)
        ts = np.array(c.frame_times[-180:])
        assert len(ts) / (ts[-1] - ts[0]) == pytest.approx(60, abs=3)
        c.stop_episode()
        assert verify(open_store(str(tmp_path / "store")), ep["traj_id"]) >= 240
        c.close()
    finally:
        server.stop()


def test_a_reload_gets_past_a_full_server(tmp_path):
    server = ServerProcess(tmp_path / "store", "--max-demonstrators", "1")
    try:
        a = ScriptedDemonstrator(server.url)
        ep = a.start()
        req = urllib.request.Request(server.url + "/", headers={"Cookie": f"atari_session={ep['session']}"})
        with urllib.request.urlopen(req) as r:
            assert r.status == 200  # the one already playing reloads
        req = urllib.request.Request(server.url + "/", headers={"Cookie": "atari_session=someone-else"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 503
        a.close()
    finally:
        server.stop()


def test_websocket_compression_is_refused(tmp_path):
    """Browsers offer permessage-deflate; frames are zlib already and speech hardly compresses, so the server says no
    (eventlet would otherwise deflate every message both ways at level 6)."""
    import websocket

    server = ServerProcess(tmp_path / "store")
    try:
        ws = websocket.create_connection(
            server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
            header=["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
            timeout=5,
        )
        try:
            assert ws.getstatus() == 101
            assert "sec-websocket-extensions" not in {k.lower() for k in ws.getheaders()}, ws.getheaders()
            assert ws.recv().startswith("0{")  # Engine.IO's open packet, uncompressed
        finally:
            ws.close()
    finally:
        server.stop()


def test_episode_closes_run_in_threads_the_scheduler_gives_only_spare_time():
    """Closing an episode (files rewritten, digests) runs in a worker thread under SCHED_IDLE: at the normal priority
    Linux handed it the game loop's core in 4 ms slices, stalling every game of the process each time."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from server.app import _a_few_at_a_time

    def policy():
        return os.sched_getscheduler(threading.get_native_id())

    with ThreadPoolExecutor(2) as pool:
        run_blocking = _a_few_at_a_time(lambda fn, *args: pool.submit(fn, *args).result())
        assert run_blocking(policy) == os.SCHED_IDLE
        assert run_blocking(lambda x: x + 1, 41) == 42
    assert policy() == os.SCHED_OTHER  # the caller (the game loop) keeps its own
