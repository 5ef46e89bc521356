"""One trajectory with speech, recorded through a real server, shared by tests/test_video.py and
tests/test_replay_page.py (recorded once per test session, whichever module asks first).

A synthetic client (tests/test_speech.py's SyntheticSpeaker) acks frame f as painted at T0 + f/60 s and streams
microphone chunks of silence with one click at a known time, while it taps FIRE and moves in Space Invaders (so
there are rewards, actions and game sound).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from helpers import ServerProcess, read_csv
from test_speech import FRAME_MS, T0, SyntheticSpeaker

from server.core import format as fmt
from server.core.wav import read_wav

FRAMES = 420
CLICK_MS = T0 + 3004.0  # client paint-clock ms: during frame 180
KEYS = [
    (40, "FIRE", True),
    (48, "FIRE", False),
    (60, "RIGHT", True),
    (64, "FIRE", True),
    (72, "FIRE", False),
    (100, "RIGHT", False),
    (110, "FIRE", True),
    (118, "FIRE", False),
    (130, "LEFT", True),
    (150, "FIRE", True),
    (158, "FIRE", False),
    (200, "LEFT", False),
    (210, "FIRE", True),
    (218, "FIRE", False),
    (240, "FIRE", True),
    (248, "FIRE", False),
    (270, "RIGHT", True),
    (280, "FIRE", True),
    (288, "FIRE", False),
    (320, "RIGHT", False),
    (330, "FIRE", True),
    (338, "FIRE", False),
    (360, "FIRE", True),
    (368, "FIRE", False),
]

_cache: dict = {}


class KeyedSpeaker(SyntheticSpeaker):
    def play_keys(self, frames: int, keys) -> dict:
        """As SyntheticSpeaker.play (acks the frames that came, by number), pressing `keys` when their frame is due."""
        seen, i = 0, 0
        while True:
            self.wait_frames(seen + 1, timeout=30)
            got = self.frames[seen:]
            seen += len(got)
            shown = got[-1] + 1
            while i < len(keys) and keys[i][0] <= shown:
                self.key(keys[i][1], keys[i][2])
                i += 1
            self.sio.emit("painted", [[f, T0 + f * FRAME_MS] for f in got])
            self.pump(T0 + shown * FRAME_MS)
            if shown >= frames:
                return self.stop_episode(timeout=30)
            time.sleep(0.02)


def recorded_trajectory(tmp_path_factory) -> dict:
    """{store, traj_id, dir, meta, rows, click_sample (index in speech.wav), speech_rate}; recorded once."""
    if "rec" in _cache:
        return _cache["rec"]
    store = tmp_path_factory.mktemp("replay-rec") / "store"
    server = ServerProcess(store, "--game", "spaceinvaders")
    client = None
    try:
        client = KeyedSpeaker(server.url, click_ms=CLICK_MS)
        client.start(participant="REPLAY")
        end = client.play_keys(FRAMES, KEYS)
    finally:
        if client is not None:
            client.close()
        server.stop()
    traj_id = end["traj_id"]
    d = store / traj_id
    meta = json.loads((d / fmt.META).read_text())
    rate, wav = read_wav(d / fmt.SPEECH)
    nz = np.flatnonzero(wav)
    assert nz.size, "the click did not reach speech.wav"
    rec = {
        "store": store,
        "traj_id": traj_id,
        "dir": d,
        "meta": meta,
        "rows": read_csv(d / fmt.FRAMES),
        "click_sample": int(nz[0]),
        "speech_rate": rate,
    }
    _cache["rec"] = rec
    return rec


def copy_trajectory(src_dir: Path, dst_store: Path, traj_id: str) -> Path:
    """Copy a trajectory into `dst_store` under another ID (meta.json's `traj_id` too)."""
    dst = Path(dst_store) / traj_id
    shutil.copytree(src_dir, dst)
    meta = json.loads((dst / fmt.META).read_text())
    meta["traj_id"] = traj_id
    (dst / fmt.META).write_text(json.dumps(meta, indent=2))
    return dst


def tamper(
    src_dir: Path, dst_store: Path, traj_id: str, frame: int, column: str = "ram_crc32", value: str = "deadbeef"
) -> Path:
    """Copy a trajectory into `dst_store` under `traj_id` with one cell of frames.csv changed."""
    dst = copy_trajectory(src_dir, dst_store, traj_id)
    rows = read_csv(dst / fmt.FRAMES)
    rows[frame][column] = value
    with open(dst / fmt.FRAMES, "w") as f:
        f.write(",".join(fmt.FRAME_COLUMNS) + "\n")
        for r in rows:
            f.write(",".join(r[c] for c in fmt.FRAME_COLUMNS) + "\n")
    return dst
