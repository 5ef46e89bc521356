"""Seconds of voice activity, not of audio: espeak-ng phrases in a quiet room streamed through the real server as a
demonstrator's microphone. The study monitor shows them live, and meta.json and the trajectory list keep them."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from helpers import ServerProcess, http
from trex_recordings import AUDIO_LEAD_MS, RATE, Player, espeak_word, have_espeak

from server.core import format as fmt
from server.core.voice import VoiceActivity

TOKEN = "voice-test-token"
PHRASES = [("yes", 1.0), ("no, not that way", 3.0), ("nice shot", 5.5)]  # (text, seconds into the episode)
TALK_S = 8.0

if not have_espeak():
    pytest.skip("espeak-ng and sox speak the test phrases (apt-get install espeak-ng sox)", allow_module_level=True)


@pytest.fixture(scope="module")
def talk() -> tuple[np.ndarray, float]:
    """(the microphone signal at 48 kHz, the seconds of it that are speech)"""
    rng = np.random.default_rng(3)
    pcm = rng.normal(0, 20, int(TALK_S * RATE))  # a quiet room
    spoken = 0
    for text, t in PHRASES:
        clip = espeak_word(text).astype(np.float64)
        start = int((t * 1000 + AUDIO_LEAD_MS) * RATE / 1000)
        pcm[start : start + clip.size] += clip
        spoken += clip.size
    return np.clip(np.round(pcm), -32768, 32767).astype(np.int16), spoken / RATE


def _count(pcm: np.ndarray, rate: int, chunk: int) -> float | None:
    v = VoiceActivity(rate)
    for i in range(0, pcm.size, chunk):
        v.add(pcm[i : i + chunk].tobytes())
    return v.seconds


def test_speech_counts_and_a_quiet_room_does_not(talk):
    pcm, spoken_s = talk
    voiced = _count(pcm, RATE, 4800)
    assert voiced is not None and 0.7 * spoken_s <= voiced <= spoken_s + 0.2, (voiced, spoken_s)
    room = np.random.default_rng(4).normal(0, 20, pcm.size).astype(np.int16)
    assert _count(room, RATE, 4800) == 0.0
    # chunks that do not hold whole 20 ms frames count the same
    assert abs(_count(pcm, RATE, 1234) - voiced) <= 0.1  # type: ignore[operator]
    # the browser's light format (16 kHz) too; a rate the detector does not take is not counted
    assert abs(_count(pcm[::3].copy(), 16000, 1600) - voiced) <= 0.3  # type: ignore[operator]
    assert _count(pcm, 44100, 4410) is not None and _count(pcm, 4000, 400) is None


def test_the_monitor_and_the_trajectory_say_seconds_of_voice(talk, tmp_path):
    pcm, spoken_s = talk
    server = ServerProcess(tmp_path / "store", "--game", "revenge", env={"RESEARCHER_TOKEN": TOKEN})
    player = Player(server.url, [], pcm)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        player.start(participant="TALKER")
        end: dict = {}
        t = threading.Thread(target=lambda: end.update(player.play(int(TALK_S * 60))))
        t.start()
        live = []
        while t.is_alive():
            status, _, body = http("GET", server.url + "/api/monitor", auth)
            assert status == 200
            row = next(r for r in json.loads(body)["participants"] if r["participant"] == "TALKER")
            if row.get("voiced_s") is not None:
                live.append(row["voiced_s"])
            time.sleep(0.3)
        t.join()
        # live, while playing: it grows with the phrases (the room alone adds nothing)
        assert live and live[0] < live[-1] and 0.5 * spoken_s <= live[-1] <= spoken_s + 0.2, live
        meta = json.loads((tmp_path / "store" / end["traj_id"] / fmt.META).read_text())
        speech = meta["speech"]
        assert speech["seconds"] >= TALK_S - 1 and 0.7 * spoken_s <= speech["voiced_seconds"] <= spoken_s + 0.2
        assert speech["voice_activity"]["detector"] == "webrtcvad"
        status, _, body = http("GET", server.url + "/api/trajectories", auth)
        rows = {r["traj_id"]: r for r in json.loads(body)["trajectories"]}
        assert rows[end["traj_id"]]["speech_s"] == speech["voiced_seconds"]
        assert rows[end["traj_id"]]["audio_s"] == speech["seconds"]
    finally:
        player.close()
        server.stop()
