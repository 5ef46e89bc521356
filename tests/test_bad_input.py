"""Malformed, unknown and oversize messages get a clear error to the sender; the other demonstrator plays on."""

import os
import subprocess
import sys
import time

import pytest
from helpers import ROOT, ScriptedDemonstrator, ServerProcess

from server.core import format as fmt
from server.core.replay import verify
from server.store import open_store

BAD = [  # (event, payload, expected error code)
    ("key", {"seq": 0, "t": 1.0, "key": "LEFT", "down": True}, "no_session"),  # before start
    ("start", {"game": "notagame"}, "unknown_game"),
    ("start", {"game": "pong"}, "unknown_game"),  # a real ROM, but not one this server offers
    ("start", {"game": ["spaceinvaders"]}, "unknown_game"),
    ("start", "spaceinvaders", "bad_payload"),
    ("start", {"client": "x" * 10_000}, "bad_payload"),
    ("rejoin", {"session": "../../etc/passwd"}, "unknown_session"),
    ("rejoin", {"session": 12}, "bad_payload"),
    ("rejoin", {"session": "A" * 500}, "bad_payload"),
    ("frobnicate", {"x": 1}, "unknown_event"),
    ("stop", None, "no_session"),
]

BAD_IN_EPISODE = [
    ("key", {"seq": "1", "t": 1.0, "key": "LEFT", "down": True}, "bad_payload"),
    ("key", {"seq": -1, "t": 1.0, "key": "LEFT", "down": True}, "bad_payload"),
    ("key", {"seq": 1, "t": float("nan"), "key": "LEFT", "down": True}, "bad_payload"),
    ("key", {"seq": 1, "t": 1.0, "key": "ESCAPE", "down": True}, "bad_payload"),
    ("key", {"seq": 1, "t": 1.0, "key": "LEFT", "down": "yes"}, "bad_payload"),
    ("key", {"seq": 1, "t": 1.0, "key": "L" * 200_000, "down": True}, "bad_payload"),  # oversize
    ("key", [1, 2, 3], "bad_payload"),
    ("key", None, "bad_payload"),
    ("painted", {"frame": 1}, "bad_payload"),
    ("painted", [[1, 2, 3]], "bad_payload"),
    ("painted", [["a", 2]], "bad_payload"),
    ("painted", [[0, 1.0]] * 5000, "bad_payload"),  # too many
    ("start", {}, "episode_running"),
    ("key", b"\x00\x01binary", "bad_payload"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("bad") / "store")
    yield s
    s.stop()


def test_bad_messages_get_clear_errors_and_the_other_player_keeps_60hz(server):
    good = ScriptedDemonstrator(server.url)
    ep = good.start(participant="GOOD")
    good.wait_frames(30)
    bad = ScriptedDemonstrator(server.url)
    n0, t0 = len(good.frames), time.monotonic()

    for event, payload, code in BAD:
        before = len(bad.errors)
        bad.sio.emit(event, payload)
        bad.wait_for(lambda before=before: len(bad.errors) > before, timeout=5)
        err = bad.errors[-1]
        assert err["code"] == code, (event, payload, err)
        assert err["message"] and err["event"] == event

    bad.start(participant="../../etc/passwd")  # sanitised, not refused
    assert bad.episodes[-1]["participant"] == "etcpasswd"
    for event, payload, code in BAD_IN_EPISODE:
        before = len(bad.errors)
        bad.sio.emit(event, payload)
        bad.wait_for(lambda before=before: len(bad.errors) > before, timeout=5)
        assert bad.errors[-1]["code"] == code, (event, str(payload)[:80], bad.errors[-1])

    # the server kept serving the good client, at 60 frames per second, the whole time
    rate = (len(good.frames) - n0) / (time.monotonic() - t0)
    assert rate == pytest.approx(60, abs=6)
    assert good.errors == []

    # a message over the transport limit closes only the sender's connection
    bad.sio.emit("key", {"blob": "x" * 2_000_000})
    bad.wait_for(lambda: not bad.sio.connected, timeout=10)
    n1 = len(good.frames)
    good.wait_frames(n1 + 60, timeout=5)

    good.key("FIRE", True)
    good.wait_frames(len(good.frames) + 30)
    end = good.stop_episode()
    assert end["status"] == "complete"
    assert verify(open_store(str(server.store)), ep["traj_id"]) == end["frames"]
    # the bad client's episode was recorded under its sanitised id, and nothing escaped the store
    assert (server.store / bad.episodes[-1]["traj_id"] / fmt.META).exists()
    assert server.health()["ok"]
    bad.close()
    good.close()


def test_unknown_game_at_startup_is_refused_with_the_list(tmp_path):
    with pytest.raises(RuntimeError) as e:
        ServerProcess(tmp_path / "store", "--game", "notagame")
    assert "unknown game 'notagame'; valid names:" in str(e.value) and "mspacman" in str(e.value)


def test_rom_environment_variable_picks_the_game(tmp_path):
    s = ServerProcess(tmp_path / "store", env={"ROM": "mspacman"})
    try:
        assert s.health()["games"] == ["mspacman"]
        c = ScriptedDemonstrator(s.url)
        assert c.start()["game"] == "mspacman"
        c.close()
    finally:
        s.stop()


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "server"],
        ["scripts/verify.py", "--all"],
        ["scripts/export.py", "--format", "agc"],
        ["scripts/annotate_speech.py", "--all"],
        ["scripts/make_video.py", "--key", "pong_A_1"],
        ["scripts/delete_participant.py", "A"],
        ["scripts/sync_storage.py", "--status"],
    ],
)
def test_an_unsupported_store_url_is_one_line_not_a_traceback(command):
    r = subprocess.run(
        [sys.executable, *command, "--store", "ftp://example.org/x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert r.returncode == 2, r.stderr
    assert "unsupported store URL 'ftp://example.org/x'" in r.stderr and "Traceback" not in r.stderr


def test_sync_storage_refuses_a_local_store_without_creating_it(tmp_path):
    r = subprocess.run(
        [sys.executable, "scripts/sync_storage.py", "--status", "--store", str(tmp_path / "nowhere")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "the store is not S3" in r.stderr
    assert not (tmp_path / "nowhere").exists()
