"""Stopping a study server (issue 19): Ctrl-C (SIGINT to the process group), systemd's stop (SIGTERM to the group)
or SIGTERM to the server alone closes the episodes, and every closed trajectory is in S3 (moto's server) before the
process exits; a practice round's scratch files are gone; no emulator is reported leaked."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from helpers import ServerProcess, StudyParticipant
from moto_util import CREDS, MotoServer

from server.core import format as fmt
from server.spool import SCRATCH, Spool

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module")
def moto():
    m = MotoServer()
    m.client().create_bucket(Bucket="study")
    yield m
    m.stop()


def uploader_pids(spool: Path) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"server.uploader" in cmd and str(spool).encode() in cmd:
                out.append(int(proc.name))
    return out


@pytest.mark.parametrize(
    "target,sig",
    [("group", signal.SIGINT), ("group", signal.SIGTERM), ("server", signal.SIGTERM), ("every", signal.SIGTERM)],
    ids=str,
)
def test_a_stop_uploads_every_closed_trajectory_before_the_process_exits(tmp_path, moto, monkeypatch, target, sig):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)
    spool = tmp_path / "spool"
    server = ServerProcess(
        spool,
        "--store",
        "s3://study/demos",
        "--s3-endpoint-url",
        moto.url,
        "--spool",
        str(spool),
        "--study",
        "--practice",
        "60",
        "--play-time",
        "60",
        "--drain-timeout-s",
        "20",
        "--game",
        "pong",
        env=CREDS,
        new_session=True,
    )
    people = []
    try:
        ended, practising, playing = (StudyParticipant(server.url, f"STOP{c}{sig}") for c in "ABC")
        people = [ended, practising, playing]
        for p in people:
            assert p.to_stage("practice")["stage"] == "practice"
            p.sio.emit("start", {})
            p.wait_frames(20)
        for p in (ended, playing):
            p.stop_episode()  # the practice round ends early: on to the recorded episodes
            p.wait_for(lambda p=p: p.states[-1]["stage"] == "episodes")
            p.start()
            p.wait_frames(len(p.frames) + 30)
        ended_traj = ended.stop_episode()["traj_id"]  # closed just before the stop
        open_traj = playing.episodes[-1]["traj_id"]  # still playing at the stop: closed by it
        assert (spool / SCRATCH).is_dir() and any((spool / SCRATCH).iterdir())  # the practice round's files
        assert uploader_pids(spool)
        t0 = time.monotonic()
        if target == "group":
            os.killpg(server.proc.pid, sig)  # Ctrl-C in a terminal
        elif target == "every":  # systemctl stop (KillMode=control-group): every process of the service
            for pid in [server.proc.pid, *uploader_pids(spool)]:
                os.kill(pid, sig)
        else:
            server.proc.send_signal(sig)
        assert server.proc.wait(40) == 0
        print(f"stopped in {time.monotonic() - t0:.2f} s, both trajectories uploaded")
    finally:
        for p in people:
            p.close()
        log = server.log()
        server.stop()
    s3 = moto.client()
    for traj, status in ((ended_traj, fmt.STATUS_COMPLETE), (open_traj, fmt.STATUS_INTERRUPTED)):
        meta = json.loads(s3.get_object(Bucket="study", Key=f"demos/{traj}/meta.json")["Body"].read())
        assert meta["status"] == status, (traj, meta["status"])
        for name, digest in meta["files"].items():
            body = s3.get_object(Bucket="study", Key=f"demos/{traj}/{name}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == digest["sha256"], (traj, name)
    assert not Spool(spool).closed(), log  # nothing waits for the next start
    assert not (spool / SCRATCH).exists() or not any((spool / SCRATCH).iterdir())  # the practice round is gone
    assert not uploader_pids(spool)
    assert "every closed trajectory is in s3://study/demos" in log, log
    assert "nanobind" not in log and "leaked" not in log, log
    assert f"episode start: {ended_traj}" in log and f"episode end: {ended_traj}" in log
    assert f"participant STOPA{sig}: entered -> consent" in log


def test_what_a_stop_could_not_upload_is_listed_with_the_command_that_uploads_it(tmp_path, caplog):
    """S3 unreachable at the stop: the drain gives up after --drain-timeout-s and names what is left and how to send
    it (without a server: the drain with an uploader that never empties the spool)."""
    import logging

    from server.__main__ import _drain_uploader
    from server.settings import Settings

    d = tmp_path / "spool" / "pong_LEFT_1"
    d.mkdir(parents=True)
    (d / fmt.META).write_text(json.dumps({"traj_id": "pong_LEFT_1", "status": "complete", "files": {}}))
    settings = Settings(
        store="s3://study/demos",
        spool=str(tmp_path / "spool"),
        s3_endpoint_url="http://127.0.0.1:9",
        upload_drain_s=0.5,
    )

    class Uploader:  # alive, and uploading nothing
        signals: list[int] = []

        def poll(self):
            return None

        def send_signal(self, sig):
            self.signals.append(sig)

        def wait(self, timeout=None):
            return 0

    up = Uploader()
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO):
        _drain_uploader(up, Spool(settings.spool), settings, logging.getLogger("server"))
    assert 0.5 <= time.monotonic() - t0 < 3  # bounded by the setting
    assert up.signals == [signal.SIGUSR1, signal.SIGUSR2]  # "try now", then "stop"
    text = caplog.text
    assert "pong_LEFT_1" in text
    assert (
        f"python scripts/sync_storage.py --store s3://study/demos --spool {tmp_path / 'spool'} "
        "--s3-endpoint-url http://127.0.0.1:9" in text
    )
