"""Schema 2 of the recording: frames.csv's `shown`, rtt.csv, meta.json's `connection`; schema 1 still loads."""

from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
from helpers import read_csv
from replay_fixtures import recorded_trajectory

from server.core import format as fmt
from server.core.recorder import RecordingWriter
from server.core.replay import verify
from server.dataset.latency import key_latencies
from server.dataset.trajectory import load
from server.settings import Settings


def _steps(w, n):
    for f in range(n):
        w.append_step(f, 0, 0, False, 0, 3, "", f"{f:08x}", f * 16.667)


def test_shown_frames_paint_statistics_rtt_and_key_latency(tmp_path):
    w = RecordingWriter(tmp_path / "pong_P1_1", game_audio=False)
    w.open({"traj_id": "pong_P1_1", "game": "pong"})
    _steps(w, 8)
    w.append_rtt(100.0, 5000.0, 5040.0)
    w.append_rtt(600.0, 5500.0, 5520.0)  # the fastest round trip sets the clock offset
    w.painted(0, 1000.0)
    w.painted(1, 1016.7)
    w.painted(2, 1050.0, shown=False)  # skipped by the playout: frame 3 superseded it at 1050
    w.painted(3, 1050.0)
    for f in range(4, 8):
        w.painted(f, 1050.0 + (f - 3) * 16.7)
    w.append_event("key", frame=2, seq=0, client_ms=1010.0, key="LEFT", down=True)  # on screen with frame 3
    w.append_event("key", frame=5, seq=1, client_ms=1060.0, key="LEFT", down=False)
    w.append_event("key", frame=6, seq=2, client_ms=1070.0, key="FIRE", down=True, detail="stale")  # not applied
    meta = w.close(fmt.STATUS_COMPLETE, fmt.GAME_OVER)

    d = tmp_path / "pong_P1_1"
    rows = read_csv(d / fmt.FRAMES)
    assert list(rows[0]) == list(fmt.FRAME_COLUMNS) and fmt.FRAME_COLUMNS[-1] == "shown"
    assert [r["shown"] for r in rows] == ["1", "1", "0", "1", "1", "1", "1", "1"]
    assert rows[2]["display_ms"] == "50.000"  # a skipped frame keeps the time it was superseded
    assert meta["schema"] == 2
    timing = meta["timing"]
    assert timing["shown_frames"] == 7 and timing["not_shown_frames"] == 1 and timing["painted_frames"] == 8
    # intervals between frames on screen: 16.7, 33.3 (across the skipped frame), then 16.7s; no 0 ms interval
    assert timing["paint"]["intervals"] == 6 and timing["paint"]["interval_ms_max"] == pytest.approx(33.3, abs=0.01)

    rtt = read_csv(d / fmt.RTT)
    assert list(rtt[0]) == list(fmt.RTT_COLUMNS) and [r["rtt_ms"] for r in rtt] == ["40.000", "20.000"]
    conn = meta["connection"]
    assert conn["rtt_samples"] == 2 and conn["rtt_ms"]["min"] == 20.0
    assert conn["clock_offset_ms"] == pytest.approx(600.0 - 5510.0)
    assert conn["paint0_client_ms"] == 1000.0
    assert conn["key_to_display"] == {"keys": 2, "p50_ms": 31.7, "p95_ms": 39.2, "max_ms": 40.0}  # 40 and 23.4
    assert fmt.RTT in meta["files"]

    store = Settings(store=str(tmp_path)).open_store()
    traj = load(store, "pong_P1_1", speech=False)
    assert traj.shown is not None and traj.shown.tolist() == [r["shown"] == "1" for r in rows]
    assert key_latencies(store, "pong_P1_1") == pytest.approx([40.0, 1050.0 + 2 * 16.7 - 1060.0])


def test_a_schema_1_recording_still_loads_and_verifies(tmp_path_factory, tmp_path):
    rec = recorded_trajectory(tmp_path_factory)
    old = tmp_path / rec["traj_id"]
    shutil.copytree(rec["dir"], old)
    # what the recorder wrote before schema 2: no shown column, no rtt.csv, no connection or audio_format
    with open(old / fmt.FRAMES, newline="") as f:
        rows = list(csv.reader(f))
    with open(old / fmt.FRAMES, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(r[:-1] for r in rows)
    (old / fmt.RTT).unlink()
    meta = json.loads((old / fmt.META).read_text())
    meta["schema"] = 1
    for key in ("connection", "audio_format"):
        meta.pop(key, None)
    meta["files"].pop(fmt.RTT, None)
    (old / fmt.META).write_text(json.dumps(meta))

    store = Settings(store=str(tmp_path)).open_store()
    traj = load(store, rec["traj_id"])
    assert traj.shown is None and len(traj) == meta["frames"]
    assert not math.isnan(traj.display_ms[-1]) and np.all(np.diff(traj.display_ms) >= 0)
    assert verify(store, rec["traj_id"]) == meta["frames"]
    with pytest.raises(ValueError, match="paint0"):
        key_latencies(store, rec["traj_id"])
