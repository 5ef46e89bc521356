"""Hostile and faulty input never hurts another participant (issue 20): raw Engine.IO and Socket.IO over real
sockets on loopback, each defect the probe found, each checked by behaviour (not by timers)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import websocket
from helpers import ScriptedDemonstrator, ServerProcess

from server.core import format as fmt
from server.core.recorder import RecordingWriter
from server.core.replay import verify
from server.spool import Spool
from server.store import open_store

TOKEN = "hostile-token"


class RawClient:
    """A raw WebSocket speaking Engine.IO v4 by hand (websocket-client): sends what a browser never would."""

    def __init__(self, url: str, join: bool = True) -> None:
        self.ws = websocket.create_connection(
            url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket", timeout=10
        )
        assert self.ws.recv().startswith("0")  # Engine.IO open
        if join:
            self.ws.send("40")
            assert self.ws.recv().startswith("40")

    def send(self, text: str) -> None:
        self.ws.send(text)

    def closed_by_server(self, timeout: float = 10.0) -> bool:
        """Read until the server closes the connection (True) or `timeout` passes (False); answers pings."""
        self.ws.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                op, data = self.ws.recv_data(control_frame=True)
                if op == websocket.ABNF.OPCODE_CLOSE:
                    return True
                if data == b"2":
                    self.ws.send("3")
                if data == b"" and op != websocket.ABNF.OPCODE_PING:
                    return True
        except (websocket.WebSocketException, OSError):
            return True
        return False

    def events(self, timeout: float = 1.0) -> list:
        """The Socket.IO events that arrive within `timeout` (name, data)."""
        out = []
        self.ws.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                break
            if isinstance(msg, str) and msg.startswith("42"):
                out.append(tuple(json.loads(msg[2:])))
        return out

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def server_rss_mb(server: ServerProcess) -> float:
    return int(Path(f"/proc/{server.proc.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServerProcess(
        tmp_path_factory.mktemp("hostile") / "store",
        "--max-demonstrators",
        "24",
        "--max-messages-per-s",
        "300",
        "--preload-emulators",
        "24",
        env={"RESEARCHER_TOKEN": TOKEN},
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def bystander(server):
    """A well-behaved demonstrator playing while the attacks run; its trajectory is verified at the end."""
    good = ScriptedDemonstrator(server.url)
    ep = good.start(participant="BYSTANDER")
    good.wait_frames(30)
    yield good
    n = len(good.frames)
    # still playing after everything, unless its game ended by itself first (an idle player loses Pong in about 45 s,
    # which a slow run of this module outlasts; each test that uses it checks that its frames keep coming)
    good.wait_for(lambda: len(good.frames) >= n + 30 or good.ends, timeout=10)
    end = good.ends[-1] if good.ends else good.stop_episode()
    assert end["status"] == "complete" and good.errors == [], (end, good.errors)
    assert verify(open_store(str(server.store)), ep["traj_id"]) == end["frames"]
    good.close()


def frames_keep_coming(good: ScriptedDemonstrator) -> None:
    n = len(good.frames)
    good.wait_frames(n + 20, timeout=10)


# --- memory: fragmented messages, attachment counts ---------------------------------------------------------------
def send_fragments_until_refused(raw: RawClient, total_mb: int, part: int = 256 * 1024) -> int:
    """Send one text message in fragments without ever finishing it; returns the bytes sent before the server
    closed the connection (or `total_mb` MB if it never did)."""
    sent = 0
    payload = b"4" + b"x" * (part - 1)
    try:
        raw.ws.send_frame(websocket.ABNF.create_frame(payload, websocket.ABNF.OPCODE_TEXT, fin=0))
        sent += part
        while sent < total_mb << 20:
            raw.ws.send_frame(websocket.ABNF.create_frame(b"x" * part, websocket.ABNF.OPCODE_CONT, fin=0))
            sent += part
    except (websocket.WebSocketException, OSError):
        pass
    return sent


@pytest.mark.parametrize("mode", [(), ("--no-fast-path",), ("--async-mode", "gevent")], ids=["fast", "plain", "gevent"])
def test_a_fragmented_oversize_message_is_refused_before_it_is_buffered(tmp_path, mode):
    s = ServerProcess(tmp_path / "store", "--preload-emulators", "1", *mode)
    try:
        rss0 = server_rss_mb(s)
        raw = RawClient(s.url)
        sent = send_fragments_until_refused(raw, total_mb=48)
        assert sent < 16 << 20, f"the server took {sent >> 20} MB of one message"  # the cap is 1 MB
        assert raw.closed_by_server()
        assert server_rss_mb(s) - rss0 < 40
        # a binary event announcing ten billion attachments closes that connection at once, before any arrives
        raw = RawClient(s.url)
        raw.send('459999999999-["audio",{"_placeholder":true,"num":0}]')
        assert raw.closed_by_server()
        assert s.health()["ok"]
    finally:
        s.stop()


# --- the rate limit sees every packet -----------------------------------------------------------------------------
def test_a_flooding_client_cannot_reconnect_its_namespace_and_start(server, bystander):
    raw = RawClient(server.url)
    for i in range(400):
        raw.send(f'42["rtt",{{"rtt_ms":{i}}}]')
    raw.send("40")  # before the fix: a new sid with a fresh counter
    raw.send('42["start",{}]')
    events = raw.events(timeout=2)
    assert not any(name == "episode" for name, *_ in events), events
    assert raw.closed_by_server()
    frames_keep_coming(bystander)


def test_reserved_names_and_undecodable_packets_count_toward_the_limit(server, bystander):
    raw = RawClient(server.url)
    for _ in range(350):
        raw.send('42["connect",{}]')  # dropped, but counted
    assert raw.closed_by_server()
    raw = RawClient(server.url)
    for _ in range(350):
        raw.send("42[")  # never decodes, but counted
    assert raw.closed_by_server()
    frames_keep_coming(bystander)


def test_connection_churn_is_refused_at_the_handshake_and_let_in_again(tmp_path):
    """A client that opens connection after connection, each under the message limit (bench_abuse's "malformed raw
    packets": hundreds a second), is refused at the handshake once its address's bucket is empty; the game of a
    player already connected goes on, and the address gets in again as the bucket refills."""
    from server.web.guard import CONNECT_BURST_S

    burst = 10 * CONNECT_BURST_S
    s = ServerProcess(tmp_path / "store", "--max-connects-per-s", "10")
    good = ScriptedDemonstrator(s.url)
    try:
        good.start(participant="CHURNSAFE")  # its connection was the first of this address's bucket
        good.wait_frames(10)
        opened = refused = 0
        t0 = time.monotonic()
        for _ in range(60):
            try:
                raw = RawClient(s.url, join=False)
            except websocket.WebSocketBadStatusException as e:
                assert e.status_code == 401
                refused += 1
                continue
            opened += 1
            raw.send("42[")
            raw.close()
        elapsed = time.monotonic() - t0
        # the bucket (less the player's own connection), plus what refilled at 10 a second meanwhile
        assert burst - 1 <= opened <= burst + 10 * elapsed + 1 and refused == 60 - opened > 0, (opened, elapsed)
        frames_keep_coming(good)
        time.sleep(0.5)  # five connections' worth refills
        RawClient(s.url).close()
        # one log line per run of refusals (a refilled connection let in ends a run), not one per refusal
        lines = s.log().count("opens connections too fast")
        assert 1 <= lines <= opened - burst + 2 and lines < refused, (lines, opened, refused)
        assert "connections were refused" in s.log()
        assert good.errors == []
    finally:
        good.close()
        s.stop()


def test_the_connection_bucket_refills_per_address_and_believes_only_trusted_proxies():
    from server.web.guard import ConnectRate, client_address

    now = [0.0]
    rate = ConnectRate(2.0, 4.0, clock=lambda: now[0])
    assert [rate.allow("a") for _ in range(5)] == [True] * 4 + [False]
    assert rate.allow("b")  # another address has its own bucket
    now[0] = 0.5
    assert rate.allow("a") and not rate.allow("a")  # one refilled in half a second
    assert all(ConnectRate(0.0, 0.0).allow("a") for _ in range(100))  # 0: no limit
    env = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 1.2.3.4"}
    assert client_address(env) == "10.0.0.1"  # anyone can send the header
    assert client_address(env, ("10.0.0.1",)) == "1.2.3.4"  # what the trusted proxy appended
    assert client_address({"REMOTE_ADDR": "10.0.0.1", "HTTP_X_REAL_IP": "5.5.5.5"}, ("10.0.0.1",)) == "5.5.5.5"


def test_a_storm_of_broken_packets_is_one_log_line_and_the_game_goes_on(tmp_path):
    s = ServerProcess(tmp_path / "store", "--preload-emulators", "1", "--max-messages-per-s", "100000")
    try:
        good = ScriptedDemonstrator(s.url)
        ep = good.start(participant="CALM")
        good.wait_frames(30)
        raw = RawClient(s.url)
        n0 = len(good.frames)
        for _ in range(5000):
            raw.send("42[")
        raw.send('421["rtt",{}]')
        raw.ws.settimeout(10)
        while not raw.ws.recv().startswith("431"):  # the rtt ack: every packet before it was handled
            pass
        raw.close()
        good.wait_frames(n0 + 60)
        end = good.stop_episode()
        assert verify(open_store(str(s.store)), ep["traj_id"]) == end["frames"]
        time.sleep(0.5)
        log = s.log()
        assert "Traceback" not in log
        assert log.count("cannot decode") == 1 and "5000 undecodable packets" in log
        good.close()
    finally:
        s.stop()


# --- audio rate -----------------------------------------------------------------------------------------------------
def test_audio_faster_than_real_time_is_refused_with_audio_rate(server, bystander):
    c = ScriptedDemonstrator(server.url)
    ep = c.start(participant="TALKER")
    rate, chunk = 16000, 8000  # 0.5 s chunks
    for seq in range(40):  # 20 s of audio as fast as the socket takes it
        c.sio.emit(
            "audio", {"seq": seq, "first_sample": seq * chunk, "t": c.now_ms(), "rate": rate, "pcm": bytes(2 * chunk)}
        )
    c.wait_for(lambda: any(e["code"] == "audio_rate" for e in c.errors), timeout=10)
    assert {e["code"] for e in c.errors} == {"audio_rate"}
    end = c.stop_episode()
    meta = json.loads((server.store / ep["traj_id"] / fmt.META).read_text())
    assert meta["speech"]["samples_received"] < 10 * rate  # about 3.6 s of credit plus 1.2x the time it took
    assert end["status"] == "complete"
    c.close()


# --- slots ----------------------------------------------------------------------------------------------------------
def test_clients_that_start_and_leave_do_not_squat_the_slots(tmp_path):
    s = ServerProcess(tmp_path / "store", "--max-demonstrators", "3", "--preload-emulators", "1")
    try:
        for _ in range(6):  # start, never paint a frame, leave: twice the limit
            c = ScriptedDemonstrator(s.url, decode=False, ack=False)
            c.start()
            c.close()
            # the slot is free once the server has seen the disconnect (not after the 120 s reconnect grace)
            c.wait_for(lambda: s.health()["demonstrators"] == 0, timeout=10)
        player = ScriptedDemonstrator(s.url)
        player.start()
        player.wait_frames(30)
        player.flush_acks()
        player.wait_for(lambda: s.health()["playing"] == 1, timeout=5)
        player.close()  # played, then dropped: the grace holds its slot, counted apart
        player.wait_for(lambda: s.health()["waiting_rejoin"] == 1, timeout=5)
        h = s.health()
        assert (h["demonstrators"], h["paused"], h["playing"]) == (1, 1, 0)
    finally:
        s.stop()


def test_a_tab_whose_session_another_tab_takes_is_told(server):
    first = ScriptedDemonstrator(server.url)
    ep = first.start(participant="TWOTABS")
    first.wait_frames(10)
    second = ScriptedDemonstrator(server.url)
    second.sio.emit("hello", {"session": ep["session"]})
    first.wait_for(lambda: any(name == "session_taken" for name, _ in first.events), timeout=5)
    second.wait_for(lambda: any(e.get("resumed") for e in second.episodes), timeout=5)
    second.stop_episode()
    first.close()
    second.close()


# --- start bursts ---------------------------------------------------------------------------------------------------
def test_a_burst_of_starts_loads_no_rom(server, bystander):
    bystander.wait_for(lambda: server.health()["emulators_idle"] >= 20, timeout=30)  # preloaded at start-up
    loaded = server.health()["emulators_loaded"]
    clients = [ScriptedDemonstrator(server.url, decode=False) for _ in range(20)]
    n0 = len(bystander.frames)
    threads = [threading.Thread(target=c.start) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(c.episodes for c in clients)
    assert server.health()["emulators_loaded"] == loaded  # no start loaded a ROM (each froze every game ~90 ms)
    bystander.wait_frames(n0 + 30)
    for c in clients:
        c.close()


# --- small fixes ----------------------------------------------------------------------------------------------------
def test_an_id_with_a_huge_episode_number_is_refused_not_a_server_error(server):
    traj_id = "spaceinvaders_A_" + "9" * 5000
    for path in (f"/api/trajectories/{traj_id}/meta.json", f"/replay/{traj_id}", f"/api/replay/{traj_id}"):
        req = urllib.request.Request(server.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        assert 400 <= status < 500, (path[:40], status)


def test_recovery_after_a_kill_during_a_close_keeps_the_end_and_removes_stray_files(tmp_path):
    """The state a SIGKILL in the middle of closing a `quit` episode leaves: every row and the end event written,
    meta.json still `recording`, a half-written frames.csv.tmp."""
    w = RecordingWriter(tmp_path / "pong_KILLED_1")
    w.open({"traj_id": "pong_KILLED_1", "game": "pong"})
    for frame in range(30):
        w.append_step(frame, 0, 0, False, 0, 3, "", "0", 1.0)
    w.append_event("stop", frame=30, detail=fmt.QUIT)
    w.append_event("end", frame=30, detail=fmt.QUIT)
    w.flush(final=True)
    (w.dir / "frames.csv.tmp").write_text("frame,rew")
    os.close(w._lock)  # the kill: the kernel drops the lock
    assert Spool(tmp_path).recover_interrupted() == ["pong_KILLED_1"]
    meta = json.loads((w.dir / fmt.META).read_text())
    assert (meta["status"], meta["end_reason"], meta["frames"]) == ("complete", fmt.QUIT, 30)
    assert not list(w.dir.glob("*.tmp"))


# --- storage errors -------------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MB tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "disk" / "store"  # the server's log goes next to the store, off the small disk
    mnt.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_closes_the_episode_as_storage_error_and_refuses_starts_until_it_has_room(tmp_path, small_disk):
    s = ServerProcess(small_disk, "--preload-emulators", "1")
    try:
        c = ScriptedDemonstrator(s.url)
        ep = c.start(participant="FULL")
        c.wait_frames(60)
        filler = fill(small_disk)
        c.wait_for(lambda: c.ends, timeout=15)
        end = c.ends[-1]
        assert (end["status"], end["reason"]) == ("interrupted", "storage_error")
        assert any(name == "storage_error" and "researcher" in data["message"] for name, data in c.events)
        meta = json.loads((s.store / ep["traj_id"] / fmt.META).read_text())
        assert (meta["status"], meta["end_reason"]) == ("interrupted", "storage_error")
        assert meta["frames"] > 0 and not list((s.store / ep["traj_id"]).glob("*.tmp"))
        assert verify(open_store(str(s.store)), ep["traj_id"]) == meta["frames"]  # what was written is whole
        n = len(c.errors)
        c.sio.emit("start", {})
        c.wait_for(lambda: len(c.errors) > n, timeout=5)
        assert c.errors[-1]["code"] == "storage_error"
        assert not s.health()["storage_ok"]
        filler.unlink()
        time.sleep(1.1)  # the store is probed again at most once a second
        c.start()
        c.wait_frames(len(c.frames) + 30)
        assert c.stop_episode()["status"] == "complete"
        log = s.log()
        assert log.count("the store cannot be written") == 1 and "Traceback" not in log
        c.close()
    finally:
        s.stop()
