"""S3 storage against a real S3-compatible server (moto's standalone server, a process on loopback)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ROOT, ScriptedDemonstrator, ServerProcess
from moto_util import CREDS, MotoServer

from server.core import format as fmt
from server.core.replay import verify
from server.spool import UPLOADED_INDEX, Spool
from server.store import open_store

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    for k, v in CREDS.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def moto():
    m = MotoServer()
    m.client().create_bucket(Bucket="study")
    yield m
    m.stop()


def s3_server(tmp_path, moto, *args, **env):
    return ServerProcess(
        tmp_path / "spool",
        "--store",
        "s3://study/demos",
        "--s3-endpoint-url",
        moto.url,
        "--spool",
        str(tmp_path / "spool"),
        "--cache",
        str(tmp_path / "cache"),
        *args,
        env={**CREDS, **env},
    )


def play_with_speech(client, frames, seq0=0):
    """Play while sending 100 ms chunks of audio and paint acks, like a browser."""
    sent = seq0
    while len(client.frames) < frames:
        client.wait_frames(min(frames, len(client.frames) + 6))
        t = client.now_ms()
        pcm = (np.sin(np.arange(4800) / 8) * 3000).astype("<i2").tobytes()
        if t > (sent + 1) * 100:
            client.sio.emit(
                "audio", {"seq": sent, "first_sample": sent * 4800, "t": sent * 100.0, "rate": 48000, "pcm": pcm}
            )
            sent += 1
    return sent


def wait_for_key(moto, key, timeout=30):
    c = moto.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return c.get_object(Bucket="study", Key=key)["Body"].read()
        except c.exceptions.NoSuchKey:
            time.sleep(0.2)
    raise TimeoutError(key)


def test_round_trip_is_byte_identical_listed_and_loaded(tmp_path, moto):
    server = s3_server(tmp_path, moto, "--keep-spool")
    try:
        c = ScriptedDemonstrator(server.url)
        ep = c.start(participant="ROUND")
        play_with_speech(c, 300)
        c.stop_episode()
        traj = ep["traj_id"]
        wait_for_key(moto, f"demos/{traj}/meta.json")
        spool = tmp_path / "spool" / traj
        store = open_store(
            "s3://study/demos", spool=tmp_path / "spool2", cache=tmp_path / "cache", endpoint_url=moto.url
        )
        meta = json.loads(store.get(f"{traj}/meta.json"))
        assert meta["status"] == "complete" and set(meta["files"]) >= {fmt.FRAMES, fmt.SPEECH, fmt.GAME_AUDIO}
        for name, digest in meta["files"].items():
            data = store.get(f"{traj}/{name}")
            assert data == (spool / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest["sha256"]
        assert f"{traj}/meta.json" in store.list()
        assert verify(store, traj) == meta["frames"]  # loaded by ID from S3 and re-simulated
        c.close()
    finally:
        server.stop()


def test_spool_is_deleted_after_verified_upload_and_ids_stay_unique(tmp_path, moto):
    server = s3_server(tmp_path, moto)
    try:
        c = ScriptedDemonstrator(server.url)
        first = c.start(participant="UNIQ")["traj_id"]
        c.wait_frames(60)
        c.stop_episode()
        wait_for_key(moto, f"demos/{first}/meta.json")
        deadline = time.monotonic() + 10
        while (tmp_path / "spool" / first).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (tmp_path / "spool" / first).exists()
        assert first in (tmp_path / "spool" / UPLOADED_INDEX).read_text()
        c.close()
        c2 = ScriptedDemonstrator(server.url)  # same participant again: never overwrites the uploaded one
        assert c2.start(participant="UNIQ")["traj_id"] == "spaceinvaders_UNIQ_2"
        c2.close()
    finally:
        server.stop()


def test_killed_server_episode_is_uploaded_as_interrupted_after_restart(tmp_path, moto):
    server = s3_server(tmp_path, moto)
    c = ScriptedDemonstrator(server.url)
    ep = c.start(participant="KILLED")
    play_with_speech(c, 400)
    frames_seen = len(c.frames)
    server.stop(signal.SIGKILL)
    c.close()
    time.sleep(1.5)  # the orphaned uploader notices its parent is gone
    restarted = s3_server(tmp_path, moto)
    try:
        traj = ep["traj_id"]
        meta = json.loads(wait_for_key(moto, f"demos/{traj}/meta.json"))
        assert meta["status"] == "interrupted" and meta["recovered"] is True
        assert meta["frames"] >= frames_seen - 60  # at most a second lost
        frames = wait_for_key(moto, f"demos/{traj}/frames.csv").decode().splitlines()
        assert len(frames) - 1 == meta["frames"]
        speech = wait_for_key(moto, f"demos/{traj}/speech.wav")
        assert len(speech) > 44 + 48000 * 2 * 3  # seconds of speech made it
        assert fmt.SPEECH in meta["files"] and meta["files"][fmt.SPEECH]["bytes"] == len(speech)
    finally:
        restarted.stop()


def test_s3_outage_loses_nothing_and_the_game_runs_on(tmp_path, moto):
    server = s3_server(tmp_path, moto)
    try:
        c = ScriptedDemonstrator(server.url)
        ep = c.start(participant="OUTAGE")
        c.wait_frames(60)
        moto.stop()  # S3 goes away mid-episode
        n0, t0 = len(c.frames), time.monotonic()
        play_with_speech(c, n0 + 300)
        rate = (len(c.frames) - n0) / (time.monotonic() - t0)
        end = c.stop_episode()
        time.sleep(3)  # uploads fail and back off meanwhile
        traj = ep["traj_id"]
        assert (tmp_path / "spool" / traj / fmt.META).exists()  # the spool keeps everything
        status = json.loads((tmp_path / "spool" / ".upload-status.json").read_text())
        assert "cannot reach S3" in status[traj]["error"]
        moto.start()  # S3 comes back (moto starts empty: the bucket is made again)
        moto.client().create_bucket(Bucket="study")
        meta = json.loads(wait_for_key(moto, f"demos/{traj}/meta.json", timeout=90))
        assert meta["status"] == "complete" and meta["frames"] == end["frames"]
        rows = wait_for_key(moto, f"demos/{traj}/frames.csv").decode().splitlines()
        assert len(rows) - 1 == end["frames"]
        assert rate == pytest.approx(60, abs=6)  # the game never waited for storage
        c.close()
    finally:
        server.stop()


@pytest.mark.parametrize("case", ["wrong_credentials", "missing_bucket", "unreachable"])
def test_startup_check_names_the_setting_to_fix(tmp_path, case):
    moto = MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if case == "wrong_credentials" else {})
    try:
        env = {**os.environ, **CREDS}
        endpoint = moto.url
        if case == "unreachable":
            moto.stop()
        if case == "wrong_credentials":
            env["AWS_ACCESS_KEY_ID"] = "AKIAWRONGWRONGWRONG0"
        cmd = [
            sys.executable,
            "-m",
            "server",
            "--store",
            "s3://missing-bucket/x" if case == "missing_bucket" else "s3://study/x",
            "--s3-endpoint-url",
            endpoint,
            "--spool",
            str(tmp_path / "spool"),
            "--port",
            "0",
        ]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        expected = {
            "wrong_credentials": "AWS_ACCESS_KEY_ID",
            "missing_bucket": "does not exist",
            "unreachable": "cannot reach S3",
        }[case]
        assert expected in r.stderr, r.stderr
        assert "--s3-endpoint-url" in r.stderr or "--store" in r.stderr or "AWS_" in r.stderr
    finally:
        moto.stop()


def test_old_variable_names_work(tmp_path, moto):
    env = {
        "S3_BUCKET": "study",
        "AMAZON_CLIENT_KEY": "testing",
        "AMAZON_SECRET_CLIENT_KEY": "testing",
        "AMAZON_REGION": "us-east-1",
        "S3_ENDPOINT_URL": moto.url,
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
    }
    server = ServerProcess(tmp_path / "spool", "--spool", str(tmp_path / "spool"), env=env, pass_store=False)
    try:
        c = ScriptedDemonstrator(server.url)
        traj = c.start(participant="OLDENV")["traj_id"]
        c.wait_frames(30)
        c.stop_episode()
        assert json.loads(wait_for_key(moto, f"{traj}/meta.json"))["traj_id"] == traj
        c.close()
    finally:
        server.stop()


def test_sync_storage_lists_pushes_and_pulls_multipart(tmp_path, moto):
    spool = tmp_path / "spool"
    traj = "revenge_LONG_1"
    d = spool / traj
    d.mkdir(parents=True)
    speech = np.random.default_rng(0).integers(-3000, 3000, 48000 * 60 * 30, dtype="<i2").tobytes()  # 30 minutes
    from server.core.wav import wav_header

    (d / fmt.SPEECH).write_bytes(wav_header(48000, 1, 2, len(speech)) + speech)
    (d / fmt.FRAMES).write_text(",".join(fmt.FRAME_COLUMNS) + "\n")
    (d / fmt.META).write_text(json.dumps({"traj_id": traj, "status": "complete", "files": {}}))
    env = {**os.environ, **CREDS, "S3_ENDPOINT_URL": moto.url}
    base = [sys.executable, "scripts/sync_storage.py", "--store", "s3://study/demos", "--spool", str(spool)]
    r = subprocess.run(base + ["--status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and traj in r.stdout and "waiting" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(base, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"uploaded {traj}" in r.stdout, r.stdout + r.stderr
    head = moto.client().head_object(Bucket="study", Key=f"demos/{traj}/speech.wav")
    assert head["ContentLength"] == len(speech) + 44
    assert head["ETag"].strip('"').endswith(f"-{-(-(len(speech) + 44) // (16 * 1024 * 1024))}")  # multipart
    assert not d.exists()
    r = subprocess.run(
        base + ["--pull", traj, "--cache", str(tmp_path / "cache")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    pulled = tmp_path / "cache" / traj / fmt.SPEECH
    assert pulled.read_bytes()[44:] == speech
    r = subprocess.run(base + ["--pull", "../etc"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "invalid trajectory ID" in r.stderr + r.stdout


def test_delete_participant_locally_and_in_s3(tmp_path, moto):
    server = s3_server(tmp_path, moto, "--keep-spool")
    try:
        for pid in ("GONE", "STAY"):
            c = ScriptedDemonstrator(server.url)
            traj = c.start(participant=pid)["traj_id"]
            c.wait_frames(30)
            c.stop_episode()
            wait_for_key(moto, f"demos/{traj}/meta.json")
            c.close()
    finally:
        server.stop()
    (tmp_path / "spool" / ".study").mkdir(exist_ok=True)
    (tmp_path / "spool" / ".study" / "GONE.json").write_text("{}")
    env = {**os.environ, **CREDS}
    base = [
        sys.executable,
        "scripts/delete_participant.py",
        "--store",
        "s3://study/demos",
        "--spool",
        str(tmp_path / "spool"),
        "--cache",
        str(tmp_path / "cache"),
        "--endpoint-url",
        moto.url,
    ]
    r = subprocess.run(base + ["GONE"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket="study").get("Contents", [])]
    assert not any("_GONE_" in k for k in keys) and any("_STAY_" in k for k in keys)
    assert not list((tmp_path / "spool").glob("*_GONE_*")) and list((tmp_path / "spool").glob("*_STAY_*"))
    assert not (tmp_path / "spool" / ".study" / "GONE.json").exists()
    r = subprocess.run(base + ["../x"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "invalid participant ID" in r.stderr


def test_an_upload_that_fails_inside_boto3_is_retried_not_fatal(tmp_path, moto):
    """boto3's upload_file raises its own S3UploadFailedError (here: the bucket is gone); the uploader must record it
    in words and back off, not die (an outage test once found the uploader process dead after S3 came back)."""
    from server.spool import STATUS_FILE
    from server.store.s3 import S3Location
    from server.uploader import Uploader

    spool = tmp_path / "spool"
    d = spool / "pong_P1_1"
    d.mkdir(parents=True)
    (d / fmt.FRAMES).write_text("frame\n0\n")
    (d / fmt.META).write_text(json.dumps({"traj_id": "pong_P1_1", "status": "complete", "files": {}}))
    up = Uploader(Spool(spool), S3Location("no-such-bucket", "demos", endpoint_url=moto.url))
    assert up.run_once() == ([], ["pong_P1_1"])
    status = json.loads((spool / STATUS_FILE).read_text())["pong_P1_1"]
    assert status["attempts"] == 1 and "bucket 'no-such-bucket' does not exist" in status["error"], status
    moto.client().create_bucket(Bucket="no-such-bucket")
    assert up.run_once(force=True) == (["pong_P1_1"], [])
    assert (
        moto.client().get_object(Bucket="no-such-bucket", Key="demos/pong_P1_1/frames.csv")["Body"].read()
        == b"frame\n0\n"
    )


def test_a_file_sent_in_parts_is_verified_part_by_part_and_a_changed_one_is_kept_and_failing(tmp_path, moto, caplog):
    """A file over the multipart threshold is checked against S3's composite checksum (the SHA-256 of its parts'
    SHA-256 digests), computed locally the same way; a spool file that changed after meta.json took its digest is
    not uploaded: it stays in the spool and shows as failing, with the reason, and the log says so as an error."""
    import logging

    from server.core.files import file_digests
    from server.store.s3 import TRANSFER, S3Location
    from server.uploader import FAILING_ATTEMPTS, ChecksumMismatch, Uploader, _verify, local_checksums
    from server.web.admin import upload_state

    spool = tmp_path / "spool"
    rng = np.random.default_rng(1)
    size = 2 * TRANSFER.multipart_chunksize + 12345  # three parts
    for traj in ("revenge_PARTS_1", "revenge_CHANGED_1"):
        d = spool / traj
        d.mkdir(parents=True)
        (d / fmt.SPEECH).write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        (d / fmt.FRAMES).write_text(",".join(fmt.FRAME_COLUMNS) + "\n")
        (d / fmt.META).write_text(json.dumps({"traj_id": traj, "status": "complete", "files": file_digests(d)}))
    changed = spool / "revenge_CHANGED_1" / fmt.SPEECH
    with open(changed, "r+b") as f:  # one byte of the second part, after the digest was taken
        f.seek(TRANSFER.multipart_chunksize + 7)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    loc = S3Location("study", "demos", endpoint_url=moto.url)
    up = Uploader(Spool(spool), loc, keep=True)
    with caplog.at_level(logging.WARNING, logger="server.uploader"):
        for _ in range(FAILING_ATTEMPTS):
            done, failed = up.run_once(force=True)
            assert failed == ["revenge_CHANGED_1"]
    assert done == [] and "revenge_PARTS_1" not in failed
    # the good one went up in three parts and matches S3's composite checksum
    head = moto.client().head_object(Bucket="study", Key="demos/revenge_PARTS_1/speech.wav", ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3")
    _, good, parts = local_checksums(tmp_path / "spool" / "revenge_PARTS_1" / fmt.SPEECH)
    assert parts == 3 and head["ChecksumSHA256"].split("-")[0] == good
    _, composite, _ = local_checksums(changed)
    assert composite != good
    # the changed one: nothing of it in S3, kept in the spool, failing with the reason, logged as an error
    keys = [o["Key"] for o in moto.client().list_objects_v2(Bucket="study").get("Contents", [])]
    assert not any("CHANGED" in k for k in keys)
    assert changed.exists()
    state = Spool(spool).upload_states()["revenge_CHANGED_1"]
    assert state["state"] == "failing" and "changed after its digest" in state["error"], state
    assert (
        upload_state({"traj_id": "revenge_CHANGED_1", "status": "complete"}, Spool(spool).upload_states(), True)[
            "state"
        ]
        == "failing"
    )
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "revenge_CHANGED_1" in r.getMessage()]
    assert errors and "changed after its digest" in errors[0].getMessage()
    # a composite that does not match what S3 holds is caught after the upload too
    with pytest.raises(ChecksumMismatch, match="composite SHA-256 of 3 parts"):
        _verify(moto.client(), loc, "demos/revenge_PARTS_1/speech.wav", changed, composite, 3)
