import hashlib
import json

import pytest
from helpers import read_csv

from server.core import format as fmt
from server.core.recorder import ACK_LAG_FRAMES, RecordingWriter


def _steps(w, n, start=0):
    for f in range(start, start + n):
        w.append_step(
            f, int(f % 3 == 0), f // 3, False, f % 18, 3, "LEFT+FIRE" if f % 2 else "", f"{f:08x}", f * 16.667
        )


def test_writer_output_matches_the_format(tmp_path):
    w = RecordingWriter(tmp_path / "pong_P1_1")
    w.open({"traj_id": "pong_P1_1", "game": "pong"})
    _steps(w, 100)
    w.painted(0, 1000.0)
    w.painted(1, 1016.5)
    w.append_event("key", frame=5, seq=0, client_ms=1100.25, key="LEFT", down=True)
    w.append_event("pause", frame=50, detail='tab hidden, says "bye", ok')
    meta = w.close(fmt.STATUS_COMPLETE, fmt.GAME_OVER)

    d = tmp_path / "pong_P1_1"
    rows = read_csv(d / fmt.FRAMES)
    assert list(rows[0]) == list(fmt.FRAME_COLUMNS)
    assert [int(r["frame"]) for r in rows] == list(range(100))
    assert rows[0]["display_ms"] == "0.000" and rows[1]["display_ms"] == "16.500"
    # frames never acked get times interpolated between acks, or extrapolated at 60 Hz, and are counted
    assert rows[2]["display_ms"] == "33.167" and rows[99]["display_ms"] == f"{16.5 + 98 * 1000 / 60:.3f}"
    assert rows[3]["reward"] == "1" and rows[4]["terminal"] == "0" and rows[1]["keys"] == "LEFT+FIRE"
    events = read_csv(d / fmt.EVENTS)
    assert list(events[0]) == list(fmt.EVENT_COLUMNS)
    assert events[0]["event"] == "key" and events[0]["down"] == "1" and events[0]["frame"] == "5"
    assert events[1]["detail"] == 'tab hidden, says "bye", ok'

    on_disk = json.loads((d / fmt.META).read_text())
    assert on_disk == meta
    assert meta["schema"] == fmt.SCHEMA_VERSION and meta["status"] == "complete" and meta["end_reason"] == "game over"
    assert meta["frames"] == 100 and meta["final_score"] == 33
    assert meta["alignment"]["display_ms_interpolated"] == 98 and meta["speech"] is None
    for name in (fmt.FRAMES, fmt.EVENTS):
        data = (d / name).read_bytes()
        assert meta["files"][name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_flush_writes_rows_through_except_the_ack_window(tmp_path):
    w = RecordingWriter(tmp_path / "pong_P1_1")
    w.open({"traj_id": "pong_P1_1"})
    _steps(w, 100)
    w.flush()
    rows = read_csv(tmp_path / "pong_P1_1" / fmt.FRAMES)
    assert len(rows) == 100 - ACK_LAG_FRAMES  # the rest wait for their paint acks
    meta = json.loads((tmp_path / "pong_P1_1" / fmt.META).read_text())
    assert meta["status"] == "recording"


def test_flushed_rows_carry_the_paint_acks_that_arrived_and_continue_in_order(tmp_path):
    w = RecordingWriter(tmp_path / "pong_P1_1")
    w.open({"traj_id": "pong_P1_1"})
    _steps(w, 100)
    w.painted(0, 1000.0)
    w.painted(5, 1083.5)
    w.flush()
    _steps(w, 100, start=100)
    w.flush()
    rows = read_csv(tmp_path / "pong_P1_1" / fmt.FRAMES)
    assert [int(r["frame"]) for r in rows] == list(range(200 - ACK_LAG_FRAMES))
    assert rows[0]["display_ms"] == "0.000" and rows[5]["display_ms"] == "83.500" and rows[1]["display_ms"] == ""
    assert rows[7]["server_ms"] == f"{7 * 16.667:.3f}" and rows[7]["keys"] == "LEFT+FIRE"
    assert rows[7]["ram_crc32"] == "00000007"
    assert rows[150]["score"] == "50" and rows[150]["reward"] == "1" and rows[150]["action"] == str(150 % 18)


def test_rows_waiting_for_their_paint_acks_are_no_work_for_the_garbage_collector(tmp_path):
    """Every game of the process stops while the collector runs: a list per frame (60 a second per demonstrator)
    was most of what it walked, 2-4 ms pauses at 64 demonstrators. A waiting row is a string."""
    import gc

    w = RecordingWriter(tmp_path / "pong_P1_1")
    w.open({"traj_id": "pong_P1_1"})
    _steps(w, 10)
    gc.collect()
    before = len(gc.get_objects())
    _steps(w, 2000, start=10)  # more than a flush interval's worth, none written yet
    assert len(gc.get_objects()) - before < 100
    w.close(fmt.STATUS_COMPLETE, fmt.GAME_OVER)
    assert len(read_csv(tmp_path / "pong_P1_1" / fmt.FRAMES)) == 2010


def test_a_trajectory_id_is_never_overwritten(tmp_path):
    RecordingWriter(tmp_path / "pong_P1_1").open({})
    with pytest.raises(FileExistsError):
        RecordingWriter(tmp_path / "pong_P1_1").open({})
