import json
import os

from helpers import read_csv

from server.core import format as fmt
from server.core.recorder import ACK_LAG_FRAMES, RecordingWriter
from server.core.wav import HEADER_BYTES, parse_header, read_wav
from server.spool import LOCK, Spool
from server.study import Participants


def _steps(w, n, start=0):
    for f in range(start, start + n):
        w.append_step(f, int(f % 3 == 0), f // 3, False, f % 18, 3, "LEFT" if f % 2 else "", f"{f:08x}", f * 16.667)


def _open(spool: Spool, traj_id: str, frames: int) -> RecordingWriter:
    """A trajectory being written: `frames` steps, flushed (the last ACK_LAG_FRAMES rows wait for paint acks)."""
    w = RecordingWriter(spool.trajectory_dir(traj_id))
    w.open({"traj_id": traj_id})
    _steps(w, frames)
    w.flush()
    return w


def _closed(spool: Spool, traj_id: str, frames: int = 10) -> RecordingWriter:
    w = _open(spool, traj_id, frames)
    w.close(fmt.STATUS_COMPLETE, fmt.GAME_OVER)
    return w


def test_recovery_closes_a_killed_recording_as_interrupted(tmp_path):
    spool = Spool(tmp_path)
    w = _open(spool, "pong_P1_1", 60)
    # a crash mid-write leaves half a line
    with open(tmp_path / "pong_P1_1" / fmt.FRAMES, "a") as f:
        f.write("40,0,1")
    os.close(w._lock)  # the process dies: the kernel drops its lock
    assert spool.recording() == ["pong_P1_1"]
    assert spool.recover_interrupted() == ["pong_P1_1"]
    meta = json.loads((tmp_path / "pong_P1_1" / fmt.META).read_text())
    assert meta["status"] == "interrupted" and meta["end_reason"] == "server stop" and meta["recovered"]
    rows = read_csv(tmp_path / "pong_P1_1" / fmt.FRAMES)
    assert len(rows) == 60 - ACK_LAG_FRAMES == meta["frames"]
    assert meta["final_score"] == int(rows[-1]["score"]) == (60 - ACK_LAG_FRAMES - 1) // 3
    assert spool.recover_interrupted() == []  # idempotent
    assert spool.recording() == [] and spool.closed() == [tmp_path / "pong_P1_1"]


def test_recovery_makes_a_killed_writers_speech_wav_whole(tmp_path):
    spool = Spool(tmp_path)
    w = RecordingWriter(spool.trajectory_dir("pong_P1_1"), game_audio=False)
    w.open({"traj_id": "pong_P1_1"})
    path = tmp_path / "pong_P1_1" / fmt.SPEECH
    from server.core.wav import wav_header

    path.write_bytes(wav_header(16000, 1, 2, 0) + b"\x01\x00" * 1000 + b"\x02")  # header not yet rewritten, odd tail
    os.close(w._lock)
    assert spool.recover_interrupted() == ["pong_P1_1"]
    with open(path, "rb") as f:
        assert parse_header(f.read(HEADER_BYTES)) == (1, 16000, 16, 2000)
    rate, samples = read_wav(path)
    assert rate == 16000 and samples.size == 1000 and int(samples[0]) == 1


def test_recovery_leaves_alone_a_trajectory_a_live_process_is_writing(tmp_path):
    spool = Spool(tmp_path)
    live = _open(spool, "pong_P1_1", 30)
    dead = RecordingWriter(spool.trajectory_dir("pong_P2_1"))
    dead.open({"traj_id": "pong_P2_1"})
    os.close(dead._lock)  # its process was killed
    # another server process starting on the same store (flock conflicts between open files, even in one process)
    assert spool.recover_interrupted() == ["pong_P2_1"]
    assert json.loads((tmp_path / "pong_P1_1" / fmt.META).read_text())["status"] == "recording"
    _steps(live, 30, start=30)
    meta = live.close("complete", "quit")
    assert meta["status"] == "complete" and meta["frames"] == 60
    assert not (tmp_path / "pong_P1_1" / LOCK).exists() and LOCK not in meta["files"]
    assert spool.recover_interrupted() == []


def test_scratch_cleanup_removes_only_abandoned_practice_rounds(tmp_path):
    spool = Spool(tmp_path)
    live = RecordingWriter(spool.trajectory_dir("pong_P1_5", recorded=False))
    live.open({})
    dead = RecordingWriter(spool.trajectory_dir("pong_P2_7", recorded=False))
    dead.open({})
    os.close(dead._lock)
    spool.trajectory_dir("pong_P3_9", recorded=False).mkdir()  # left by an older crash, no lock file at all
    assert spool.remove_abandoned() == ["pong_P2_7", "pong_P3_9"]
    assert (spool.trajectory_dir("pong_P1_5", recorded=False) / fmt.META).exists()
    assert spool.metas() == []  # practice rounds are not trajectories of the spool
    live.close("complete", "quit")


def test_an_id_is_reserved_while_spooled_and_after_upload(tmp_path):
    spool = Spool(tmp_path)
    assert not spool.reserved("pong_P1_1")
    _closed(spool, "pong_P1_1")
    _closed(spool, "pong_P1_2")
    assert spool.reserved("pong_P1_1") and [d.name for d in spool.closed()] == ["pong_P1_1", "pong_P1_2"]
    spool.finish_upload(spool.trajectory_dir("pong_P1_1"))
    assert not spool.trajectory_dir("pong_P1_1").exists() and spool.reserved("pong_P1_1")
    assert Spool(tmp_path).uploaded_ids() == {"pong_P1_1"}  # known to the next process too
    spool.finish_upload(spool.trajectory_dir("pong_P1_2"), keep=True)
    assert spool.trajectory_dir("pong_P1_2").exists() and spool.closed() == []
    spool.write_upload_status({"pong_P1_3": {"attempts": 1}})
    assert spool.upload_status() == {"pong_P1_3": {"attempts": 1}}


def test_deleting_a_participant_takes_their_trajectories_scratch_and_progress(tmp_path):
    spool = Spool(tmp_path)
    _closed(spool, "pong_GONE_1")
    _closed(spool, "pong_STAY_1")
    RecordingWriter(spool.trajectory_dir("pong_GONE_77", recorded=False)).open({})
    people = Participants(spool.study_dir)
    people.save({"participant": "GONE"})
    people.save({"participant": "STAY"})
    listed = spool.participant_files("GONE")
    assert sorted(p.name for p in listed) == ["GONE.json", "pong_GONE_1", "pong_GONE_77"]
    assert spool.delete_participant("GONE") == listed
    assert not any(p.exists() for p in listed)
    assert people.load("GONE") is None and people.load("STAY") is not None
    assert [m["traj_id"] for m in spool.metas()] == ["pong_STAY_1"]
