"""Microphone limits and the game's own sound, through a real server."""

import json

import numpy as np
import pytest
from helpers import ScriptedDemonstrator, ServerProcess, read_csv

from server.core import format as fmt
from server.core.emulator import GAME_AUDIO_RATE
from server.core.wav import read_wav


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("audio") / "store", "--game", "spaceinvaders")
    yield s
    s.stop()


def chunk(seq, first, n=4800, rate=48000, t=None, value=1000):
    return {
        "seq": seq,
        "first_sample": first,
        "t": 1000.0 + first / rate * 1000 if t is None else t,
        "rate": rate,
        "pcm": np.full(n, value, dtype="<i2").tobytes(),
    }


def test_audio_beyond_the_limits_is_refused_and_nothing_else_is_affected(server):
    other = ScriptedDemonstrator(server.url)
    other.start()
    c = ScriptedDemonstrator(server.url)
    ep = c.start(participant="LIMITS")
    c.wait_frames(30)
    cases = [
        (chunk(0, 0, rate=4000), "audio_rejected", "outside 8000-96000 Hz"),
        (chunk(0, 0, rate=500_000), "audio_rejected", "outside"),
        (chunk(0, 0, n=48000), "audio_too_large", "a chunk must hold"),  # one second in one chunk
        ({**chunk(0, 0), "pcm": b"\x01\x02\x03"}, "audio_rejected", "even number of bytes"),
        ({**chunk(0, 0), "pcm": "not bytes"}, "bad_payload", "binary"),
        ({**chunk(0, 0), "seq": -4}, "bad_payload", "seq"),
        ({**chunk(0, 0), "first_sample": 1.5}, "bad_payload", "first_sample"),
    ]
    for payload, code, text in cases:
        n = len(c.errors)
        c.sio.emit("audio", payload)
        c.wait_for(lambda n=n: len(c.errors) > n, timeout=5)
        assert c.errors[-1]["code"] == code and text in c.errors[-1]["message"], c.errors[-1]
    # good chunks are taken, then a change of rate mid-episode is refused
    for k in range(3):
        c.sio.emit("audio", chunk(k, k * 4800))
    n = len(c.errors)
    c.sio.emit("audio", chunk(3, 3 * 4800, rate=44100))
    c.wait_for(lambda: len(c.errors) > n, timeout=5)
    assert "sample rate changed" in c.errors[-1]["message"]
    # a first_sample far in the future would make a huge file of silence: refused
    c.flush_acks()
    c.wait_frames(len(c.frames) + 90)
    for k in range(3, 15):
        c.sio.emit("audio", chunk(k, k * 4800))
    c.wait_frames(len(c.frames) + 30)
    n = len(c.errors)
    c.sio.emit("audio", chunk(99, 48000 * 3600 * 5))
    c.wait_for(lambda: len(c.errors) > n, timeout=5)
    assert c.errors[-1]["code"] == "audio_limit"
    # the connection is still open and the game still runs, for this client and the other
    n0 = len(c.frames)
    c.wait_frames(n0 + 30, timeout=5)
    assert other.errors == []
    end = c.stop_episode()
    meta = json.loads((server.store / ep["traj_id"] / fmt.META).read_text())
    assert meta["speech"]["chunks"] == 15 and meta["speech"]["rate"] == 48000
    rows = read_csv(server.store / ep["traj_id"] / fmt.FRAMES)
    assert end["frames"] == len(rows)
    other.stop_episode()
    c.close()
    other.close()


def test_game_sound_is_recorded_after_the_first_shot(server):
    c = ScriptedDemonstrator(server.url)
    ep = c.start(participant="SOUND")
    c.wait_frames(200)
    c.key("FIRE", True)
    c.wait_frames(260)
    c.key("FIRE", False)
    c.wait_frames(400)
    c.stop_episode()
    d = server.store / ep["traj_id"]
    rows = read_csv(d / fmt.FRAMES)
    rate, audio = read_wav(d / fmt.GAME_AUDIO)
    assert rate == GAME_AUDIO_RATE and audio.dtype == np.int16
    assert audio.size == 512 * len(rows)  # one frame's sound per step, so 60 fps video stays in step
    first_fire = next(int(r["frame"]) for r in rows if "FIRE" in r["keys"])
    shot = audio[512 * first_fire : 512 * (first_fire + 30)].astype(float)  # half a second after the first shot
    assert np.abs(shot).max() > 1000 and np.sqrt(np.mean(shot**2)) > 100  # audible, not silence
    assert abs(audio.astype(float).mean()) < 50  # the DC offset of ALE's unsigned samples is removed
    meta = json.loads((d / fmt.META).read_text())
    assert meta["game_audio"]["rate"] == GAME_AUDIO_RATE and fmt.GAME_AUDIO in meta["files"]
    c.close()


def test_paint_acks_riding_on_microphone_chunks_are_recorded(server):
    """The browser sends its paint acks inside its `audio` messages (one message instead of two every 100 ms)."""
    c = ScriptedDemonstrator(server.url, ack=False)
    ep = c.start(participant="RIDEALONG")
    frames: list[int] = []
    # acks for 15 frames in each of four chunks, sent as the frames arrive: a client whose acks lag half a second
    # behind has its frames skipped (server/core/connection.py, MAX_UNACKED_FRAMES)
    for k in range(4):
        c.wait_frames(15 * (k + 1))
        frames = sorted(set(c.frames))[: 15 * (k + 1)]
        acks = [[f, 5000.0 + f * 1000.0 / 60] for f in frames[k * 15 :]]
        c.sio.emit("audio", {**chunk(k, k * 4800, t=4000.0 + k * 100.0), "painted": acks})
    paint = {f: 5000.0 + f * 1000.0 / 60 for f in frames}
    n = len(c.errors)
    c.sio.emit("audio", {**chunk(4, 4 * 4800), "painted": [["x", 1.0]]})  # a bad ack: the message is refused
    c.wait_for(lambda: len(c.errors) > n, timeout=5)
    assert c.errors[-1]["code"] == "bad_payload" and "audio.painted" in c.errors[-1]["message"]
    c.stop_episode()
    rows = {int(r["frame"]): r for r in read_csv(server.store / ep["traj_id"] / fmt.FRAMES)}
    meta = json.loads((server.store / ep["traj_id"] / fmt.META).read_text())
    assert meta["speech"]["chunks"] == 4
    assert meta["alignment"]["display_ms_interpolated"] == len(rows) - len(frames)  # every ack sent was used
    first = frames[0]
    for f in frames:
        assert float(rows[f]["display_ms"]) == pytest.approx(paint[f] - paint[first], abs=1e-3)


def test_the_load_generators_demonstrators_are_recorded_like_the_browsers(server):
    """benchmark.loadgen (the benchmark's light client) sends acks inside its microphone chunks as the browser does:
    the server must record its paint times and speech, or the benchmark measures a lighter load than a study's."""
    import asyncio

    from benchmark import loadgen

    res = asyncio.run(loadgen.run_step(server.url, 2, duration_s=2.0, warmup_s=1.0, tag="LG"))
    assert not res.refused and len(res.sessions) == 2
    for s in res.sessions:
        traj = s.episodes[-1].traj_id  # the measured (restarted) episode
        meta = json.loads((server.store / traj / fmt.META).read_text())
        assert meta["speech"]["chunks"] >= 20, meta["speech"]
        assert meta["alignment"]["display_ms_interpolated"] <= 0.1 * meta["frames"], meta["alignment"]
