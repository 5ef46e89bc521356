import json

import numpy as np
import pytest

from server.core import alignment
from server.core import format as fmt
from server.core.actions import keys_label
from server.core.emulator import EmulatorSession
from server.core.reader import (
    list_ids,
    local_metas,
    parse_frames,
    read_events,
    read_frames,
    read_meta,
    read_wav,
    trajectory_ids,
)
from server.core.recorder import RecordingWriter
from server.core.replay import verify
from server.core.wav import WavWriter, parse_wav, wav_header
from server.errors import InvalidTrajectoryId, TrajectoryNotFound
from server.store import open_store


def _record(root, traj_id: str, frames: int = 120) -> None:
    """A real trajectory: the emulator stepped, every frame written by the recorder, every other one acked."""
    emu = EmulatorSession("pong", 7, sound=False)
    emu.reset(7)
    w = RecordingWriter(root / traj_id, game_audio=False)
    w.open({"traj_id": traj_id, "game": "pong", "ale": emu.spec.to_json()})
    score = 0
    for f in range(frames):
        action = (0, 3, 4)[f % 3]
        r = emu.step(action)
        score += r.reward
        w.append_step(f, r.reward, score, r.terminal, action, r.lives, keys_label({"UP"}), r.ram_crc32, f * 16.667)
        if f % 2 == 0:
            w.painted(f, 5000.0 + f * alignment.FRAME_MS)
    w.append_event("key", frame=3, seq=0, client_ms=5050.0, key="UP", down=True)
    w.close(fmt.STATUS_COMPLETE, fmt.QUIT)


def test_a_recorded_trajectory_reads_back_by_column_name_and_verifies(tmp_path):
    _record(tmp_path, "pong_R1_1")
    store = open_store(str(tmp_path))
    assert list_ids(store) == ["pong_R1_1"] and read_meta(store, "pong_R1_1")["status"] == "complete"
    frames = read_frames(store, "pong_R1_1")
    assert len(frames) == 120 and frames["frame"].tolist() == list(range(120))
    assert frames["keys"][0] == "UP" and frames["ram_crc32"].dtype.kind == "U"
    assert frames["action"].tolist()[:3] == [0, 3, 4]
    np.testing.assert_allclose(frames["display_ms"], np.arange(120) * alignment.FRAME_MS, atol=0.001)
    assert np.isnan(frames["speech_sample"]).all()  # no microphone
    assert read_events(store, "pong_R1_1")[0]["key"] == "UP"
    assert verify(store, "pong_R1_1") == 120
    assert read_wav(store, "pong_R1_1", fmt.SPEECH) is None


def test_columns_are_found_by_name_in_any_order_and_a_missing_float_column_is_nan():
    header = [c for c in fmt.FRAME_COLUMNS if c != "speech_sample"][::-1]
    row = {"frame": "0", "reward": "1", "score": "1", "terminal": "0", "action": "3", "lives": "5", "keys": "UP"}
    row |= {"ram_crc32": "0000abcd", "server_ms": "1.500", "display_ms": "", "shown": "1"}
    text = ",".join(header) + "\n" + ",".join(row[c] for c in header) + "\n"
    frames = parse_frames(text)
    assert frames["action"].tolist() == [3] and frames["keys"].tolist() == ["UP"]
    assert frames["server_ms"].tolist() == [1.5] and np.isnan(frames["display_ms"][0])
    assert np.isnan(frames["speech_sample"][0]) and "speech_sample" in frames
    assert "speech_sample" not in frames.present and "shown" in frames.present  # what the file itself has
    with pytest.raises(ValueError, match="no column lives"):
        parse_frames(text.replace("lives", "lifes"), "x/frames.csv")


def test_missing_and_invalid_trajectories(tmp_path):
    store = open_store(str(tmp_path))
    with pytest.raises(TrajectoryNotFound):
        read_meta(store, "pong_NOPE_1")
    with pytest.raises(InvalidTrajectoryId):
        read_frames(store, "../etc")
    assert read_events(store, "pong_NOPE_1") == []


def test_listing_skips_what_is_not_a_trajectory(tmp_path):
    _record(tmp_path, "pong_R1_1", frames=5)
    (tmp_path / ".scratch" / "pong_R1_9").mkdir(parents=True)
    (tmp_path / ".scratch" / "pong_R1_9" / fmt.META).write_text("{}")
    (tmp_path / "broken_dir").mkdir()
    (tmp_path / "broken_dir" / fmt.META).write_text("{half")
    assert trajectory_ids(["pong_R1_1/meta.json", ".scratch/pong_R1_9/meta.json", "x/y/meta.json"]) == ["pong_R1_1"]
    assert list_ids(open_store(str(tmp_path))) == ["pong_R1_1"]
    assert [d.name for d, _ in local_metas(tmp_path)] == ["pong_R1_1"]


def test_one_wav_parser_reads_what_the_writer_writes(tmp_path):
    w = WavWriter(tmp_path / "a.wav", 16000)
    w.write_at(10, np.arange(5, dtype="<i2").tobytes())  # a hole before: silence
    w.close()
    rate, a = parse_wav((tmp_path / "a.wav").read_bytes())
    assert rate == 16000 and a.tolist() == [0] * 10 + [0, 1, 2, 3, 4]
    pcm8 = wav_header(30720, 1, 1, 3) + bytes([128, 255, 0])
    assert parse_wav(pcm8)[1].tolist() == [0, 127 * 256, -128 * 256]
    stereo = wav_header(8000, 2, 2, 8) + np.array([100, 300, -100, -300], dtype="<i2").tobytes()
    assert parse_wav(stereo)[1].tolist() == [200, -200]
    assert parse_wav(stereo, mono=False)[1].shape == (2, 2)
    with pytest.raises(ValueError, match="not a WAV"):
        parse_wav(b"nothing of the kind")


def test_alignment_fills_paint_gaps_at_60_hz_and_finds_the_frame_of_a_sample():
    paint = np.array([np.nan, 1000.0, np.nan, 1040.0, np.nan])
    filled, missing = alignment.paint_times(paint)
    assert missing == 3
    np.testing.assert_allclose(filled, [1000 - alignment.FRAME_MS, 1000, 1020, 1040, 1040 + alignment.FRAME_MS])
    assert alignment.paint_times(np.full(3, np.nan))[1] == 3
    ss = np.array([0, 800, 1600, 2400])
    assert alignment.frame_of_sample(ss, 799) == 0 and alignment.frame_of_sample(ss, 1600) == 2
    assert alignment.frame_of_sample(ss, np.array([-5, 5000])).tolist() == [0, 3]


def test_meta_is_read_as_written(tmp_path):
    _record(tmp_path, "pong_R1_1", frames=3)
    on_disk = json.loads((tmp_path / "pong_R1_1" / fmt.META).read_text())
    assert read_meta(open_store(str(tmp_path)), "pong_R1_1") == on_disk
