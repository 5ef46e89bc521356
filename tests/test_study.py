"""The study flow over Socket.IO, researcher access, and hardening: tokens, traversal, floods, foreign origins."""

import json
import urllib.error
import urllib.request

import pytest
from helpers import ScriptedDemonstrator, ServerProcess, read_csv

from server.core import format as fmt

TOKEN = "research-token-for-tests"


class Participant(ScriptedDemonstrator):
    def __init__(self, url):
        self.states = []
        super().__init__(url)

        @self.sio.on("study_state")
        def on_state(data):
            self.states.append(data)

    def ask(self, event, payload=None, stage=None, timeout=10):
        n = len(self.states)
        self.sio.emit(event, payload) if payload is not None else self.sio.emit(event)
        self.wait_for(
            lambda: (
                len(self.states) > n
                and (stage is None or self.states[-1]["stage"] == stage)
                or (self.errors and self.errors[-1].get("event") == event)
            ),
            timeout,
        )
        return self.states[-1]

    def play_episode(self, timeout=30):
        n_end, n_states = len(self.ends), len(self.states)
        self.sio.emit("start", {})
        self.wait_for(lambda: len(self.ends) > n_end and len(self.states) > n_states, timeout)
        return self.ends[-1], self.states[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServerProcess(
        tmp_path_factory.mktemp("study") / "store",
        "--study",
        "--practice",
        "1",
        "--play-time",
        "2.5",
        "--episode-time-limit",
        "1.5",
        env={"RESEARCHER_TOKEN": TOKEN},
    )
    yield s
    s.stop()


def get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_consent_to_completion_code(server):
    p = Participant(server.url)
    st = p.ask("hello", {"participant": "FLOW-1!"})
    assert st["stage"] == "consent" and "research study" in st["consent_text"] and st["participant"] == "FLOW1"
    assert not (server.store / ".study" / "FLOW1.json").exists()  # nothing stored before consent
    st = p.ask("start", {})  # out of order: refused
    assert p.errors[-1]["code"] == "no_participant"
    st = p.ask("consent", {"accept": True}, stage="instructions")
    assert st["game"]["title"] == "Space Invaders" and "yes" in st["speech_instruction"]
    assert p.ask("instructions_done", stage="miccheck")["stage"] == "miccheck"
    st = p.ask("mic_ok", {"audio": {"sample_rate": 48000, "device_label": "test mic"}}, stage="practice")
    assert st["practice_s"] == 1
    end, st = p.play_episode()
    assert end["practice"] is True and end["recorded"] is False and end["traj_id"] is None
    assert st["stage"] == "episodes" and st["progress"]["remaining_s"] == 2.5
    end, st = p.play_episode()
    assert end["traj_id"] == "spaceinvaders_FLOW1_1" and end["frames"] == 90  # capped by --episode-time-limit
    assert st["stage"] == "episodes" and st["progress"]["remaining_s"] == pytest.approx(1.0)
    end, st = p.play_episode()
    assert end["frames"] == 60  # the last episode is capped by the time left
    assert st["stage"] == "done" and len(st["code"]) == 8
    rec = json.loads((server.store / ".study" / "FLOW1.json").read_text())
    assert rec["trajectories"] == ["spaceinvaders_FLOW1_1", "spaceinvaders_FLOW1_2"] and rec["code"] == st["code"]
    assert rec["audio"]["device_label"] == "test mic"
    # the practice round left nothing; the recorded ones are under the participant's ID
    trajs = sorted(d.name for d in server.store.iterdir() if (d / fmt.META).exists())
    assert [t for t in trajs if "FLOW1" in t] == ["spaceinvaders_FLOW1_1", "spaceinvaders_FLOW1_2"]
    assert not any((server.store / ".scratch").iterdir())
    # coming back later shows the code again
    again = Participant(server.url)
    assert again.ask("hello", {"participant": "FLOW1"})["code"] == st["code"]
    p.close()
    again.close()


def test_declining_records_nothing(server):
    p = Participant(server.url)
    p.ask("hello", {"participant": "DECLINER"})
    assert p.ask("consent", {"accept": False})["stage"] == "declined"
    assert not (server.store / ".study" / "DECLINER.json").exists()
    assert not list(server.store.glob("*_DECLINER_*"))
    p.close()


def test_reconnect_returns_the_same_participant_to_their_episode(server):
    p = Participant(server.url)
    p.ask("hello", {"participant": "BACK"})
    p.ask("consent", {"accept": True})
    p.ask("instructions_done")
    p.ask("mic_ok", {})
    p.play_episode()  # practice
    p.sio.emit("start", {})
    p.wait_for(lambda: len(p.episodes) >= 2)
    ep = p.episodes[-1]
    p.wait_frames(30)
    p.sio.disconnect()
    q = Participant(server.url)  # a reload: same participant ID, same tab session token
    q.episodes.append(ep)
    st = q.ask("hello", {"participant": "BACK", "session": ep["session"]})
    assert st["stage"] == "episodes"
    q.wait_for(
        lambda: (
            any(e == "episode" and d.get("resumed") for e, d in q.events)
            or (len(q.episodes) > 1 and q.episodes[-1].get("resumed"))
        ),
        timeout=10,
    )
    assert q.episodes[-1]["traj_id"] == ep["traj_id"] and q.episodes[-1]["participant"] == "BACK"
    q.wait_for(lambda: q.ends, timeout=20)
    rows = read_csv(server.store / ep["traj_id"] / fmt.FRAMES)
    assert [int(r["frame"]) for r in rows] == list(range(len(rows)))
    kinds = [e["event"] for e in read_csv(server.store / ep["traj_id"] / fmt.EVENTS)]
    assert "disconnect" in kinds and "reconnect" in kinds
    q.close()


def test_researcher_routes_need_the_token(server):
    for path in (
        "/admin",
        "/api/admin/sessions",
        "/api/trajectories",
        "/api/trajectories/spaceinvaders_FLOW1_1/meta.json",
    ):
        assert get(server.url + path)[0] == 401
        assert get(server.url + path, token="wrong")[0] == 401
    status, body = get(server.url + "/api/trajectories", token=TOKEN)
    assert status == 200
    listed = {t["traj_id"]: t for t in json.loads(body)["trajectories"]}
    t = listed["spaceinvaders_FLOW1_1"]
    assert t["status"] == "complete" and t["duration_s"] == 1.5 and t["participant"] == "FLOW1"
    status, body = get(server.url + "/api/trajectories/spaceinvaders_FLOW1_1/meta.json", token=TOKEN)
    assert status == 200 and json.loads(body)["traj_id"] == "spaceinvaders_FLOW1_1"
    assert get(server.url + "/admin", token=TOKEN)[0] == 200
    status, body = get(server.url + "/api/admin/sessions", token=TOKEN)
    assert status == 200 and "sessions" in json.loads(body)


@pytest.mark.parametrize(
    "path",
    [
        "/api/trajectories/..%2F..%2Fetc/passwd",
        "/api/trajectories/spaceinvaders_FLOW1_1/..%2Fmeta.json",
        "/api/trajectories/spaceinvaders_FLOW1_1/%2Fetc%2Fpasswd",
        "/api/trajectories/x_y_1%00/meta.json",
        "/api/trajectories/spaceinvaders_FLOW1_1/.study.json",
        "/static/..%2F..%2Fserver%2Fsettings.py",
        "/static/../server/settings.py",
    ],
)
def test_path_traversal_is_refused(server, path):
    status, body = get(server.url + path, token=TOKEN)
    assert status in (400, 404), (status, body[:200])
    assert b"SECRET" not in body and b"researcher_token" not in body


def test_a_flooding_client_is_disconnected_and_the_others_play_on(server, tmp_path):
    good = ScriptedDemonstrator(server.url)
    good.sio.emit("hello", {"participant": "CALM"})
    flood = ScriptedDemonstrator(server.url)
    for _ in range(3000):
        if not flood.sio.connected:
            break
        flood.sio.emit("rtt", {"rtt_ms": 1})
    flood.wait_for(lambda: not flood.sio.connected, timeout=10)
    assert any(e["code"] == "flood" for e in flood.errors) or not flood.sio.connected
    assert good.sio.connected and not any(e["code"] == "flood" for e in good.errors)
    good.close()


def test_socketio_refuses_a_foreign_origin(server):
    import websocket

    ws_url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(ws_url, origin="https://evil.example", timeout=5)
    ok = websocket.create_connection(ws_url, origin=server.url, timeout=5)
    assert ok.recv().startswith("0{")  # the Engine.IO open packet
    ok.close()
