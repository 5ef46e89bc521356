"""Video export: a trajectory recorded through a real server (with speech) becomes an H.264 + AAC file at exactly
60 fps whose picture is the re-simulation and whose sound has the speech where it was spoken.

ffprobe is not shipped with imageio-ffmpeg, so the files are inspected by decoding them with ffmpeg: frames are
counted as bytes of tiny grey rawvideo, the sound is decoded to PCM, and `ffmpeg -i` reports the streams.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")

from helpers import ROOT  # noqa: E402
from replay_fixtures import recorded_trajectory, tamper  # noqa: E402

from server.core.alignment import speech_segments  # noqa: E402
from server.core.palette import to_rgb  # noqa: E402
from server.core.reader import read_frames  # noqa: E402
from server.core.replay import replay  # noqa: E402
from server.errors import ReplayDivergence  # noqa: E402
from server.store import open_store  # noqa: E402
from server.video import (  # noqa: E402
    AUDIO_RATE,
    SoundSources,
    export_video,
    load_sound,
    render_audio,
    segment_bounds,
)

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SCALE = 2  # 640x420, the default (the "mix" export is made without --scale): quick to encode and to decode
FRAME_S = 1 / 60


def make_video(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_video.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ffmpeg(*args: str, text: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([FFMPEG, "-hide_banner", "-nostdin", *args], capture_output=True, timeout=120, text=text)


def probe(path) -> str:
    """What `ffmpeg -i` says about a file (it exits 1 for want of an output; the report is on stderr)."""
    return ffmpeg("-i", str(path), text=True).stderr


def count_frames(path) -> int:
    p = ffmpeg(
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
        "-vf",
        "scale=8:8",
        "-pix_fmt",
        "gray",
        "-f",
        "rawvideo",
        "-",
    )
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert len(p.stdout) % 64 == 0
    return len(p.stdout) // 64


def decode_audio(path, channels: int) -> np.ndarray:
    p = ffmpeg(
        "-i",
        str(path),
        "-map",
        "0:a:0",
        "-f",
        "s16le",
        "-acodec",
        "pcm_s16le",
        "-ar",
        str(AUDIO_RATE),
        "-ac",
        str(channels),
        "-",
    )
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    a = np.frombuffer(p.stdout, dtype="<i2").astype(np.float64)
    return a.reshape(-1, channels) if channels > 1 else a


def decode_frame(path, k: int, width: int, height: int) -> np.ndarray:
    p = ffmpeg(
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-vf",
        f"select=eq(n\\,{k})",
        "-fps_mode",
        "passthrough",
        "-frames:v",
        "1",
        "-pix_fmt",
        "rgb24",
        "-f",
        "rawvideo",
        "-",
    )
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    return np.frombuffer(p.stdout, dtype=np.uint8).reshape(height, width, 3)


def onset(x: np.ndarray, threshold: float) -> int:
    hits = np.flatnonzero(np.abs(x) > threshold)
    assert hits.size, f"no sample above {threshold} (max {np.abs(x).max():.0f})"
    return int(hits[0])


@pytest.fixture(scope="module")
def rec(tmp_path_factory):
    return recorded_trajectory(tmp_path_factory)


@pytest.fixture(scope="module")
def videos(rec, tmp_path_factory):
    """The default export (mixed sound, the default scale, named <traj_id>_final.mp4 in the working directory), a
    stereo one, and a .mov with the overlay."""
    work = tmp_path_factory.mktemp("videos")
    store, traj = str(rec["store"]), rec["traj_id"]
    runs = {
        "mix": make_video("--key", traj, "--store", store, cwd=work),
        "stereo": make_video(
            "--key",
            traj,
            "--store",
            store,
            "--scale",
            str(SCALE),
            "--stereo",
            "--out",
            str(work / "stereo.mp4"),
            cwd=work,
        ),
        "mov": make_video(
            "--key", traj, "--store", store, "--scale", str(SCALE), "--format", "mov", "--overlay", cwd=work
        ),
    }
    for name, p in runs.items():
        assert p.returncode == 0, f"{name}: {p.stdout}\n{p.stderr}"
    return {
        "dir": work,
        "runs": runs,
        "mix": work / f"{traj}_final.mp4",
        "stereo": work / "stereo.mp4",
        "mov": work / f"{traj}_final.mov",
    }


@pytest.fixture(scope="module")
def expected(rec):
    """The click's expected time in the video, from speech.wav and frames.csv alone (not from server.video)."""
    ss = np.array([int(r["speech_sample"]) for r in rec["rows"]])
    click, rate = rec["click_sample"], rec["speech_rate"]
    f = int(np.searchsorted(ss, click, side="right") - 1)
    return {"frame": f, "t": f / 60 + (click - ss[f]) / rate, "n": len(rec["rows"])}


def test_default_name_progress_and_summary(rec, videos):
    p = videos["runs"]["mix"]
    assert videos["mix"].exists() and videos["mix"].name == f"{rec['traj_id']}_final.mp4"
    assert "100.0%" in p.stderr and "frames/s" in p.stderr  # the progress bar
    assert f"{len(rec['rows'])} frames" in p.stdout


@pytest.mark.parametrize("kind", ["mix", "stereo", "mov"])
def test_every_frame_at_exactly_60_fps(videos, expected, kind):
    n = expected["n"]
    assert count_frames(videos[kind]) == n
    info = probe(videos[kind])
    assert re.search(r"Video: h264 .*, 60 fps", info), info
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info).groups()
    duration = int(h) * 3600 + int(m) * 60 + float(s)
    assert abs(duration - n / 60) <= FRAME_S + 0.011  # ffmpeg prints 10 ms steps
    audio = decode_audio(videos[kind], 2 if kind == "stereo" else 1)
    assert abs(len(audio) / AUDIO_RATE - n / 60) <= 0.020
    assert re.search(r"Audio: aac .*48000 Hz, " + ("stereo" if kind == "stereo" else "mono"), info), info


def test_picture_is_the_resimulated_screen_scaled_with_wide_pixels(rec, videos):
    info = probe(videos["mix"])
    assert f"{320 * SCALE}x{210 * SCALE}" in info
    k = 200
    for rf in replay(open_store(str(rec["store"])), rec["traj_id"]):
        if rf.step.frame == k:
            want = to_rgb(rf.screen()).astype(int)
            break
    got = decode_frame(videos["mix"], k, 320 * SCALE, 210 * SCALE).astype(int)
    centres = got[SCALE // 2 :: SCALE, SCALE :: 2 * SCALE]  # the middle of each Atari pixel (2*SCALE wide, SCALE high)
    assert centres.shape == want.shape
    err = np.abs(centres - want)
    assert err.mean() < 6, err.mean()  # H.264 is lossy; a wrong frame or a blurred scale is far off
    assert np.percentile(err, 99) < 40


def test_segments_encoded_in_parallel_join_into_the_same_video(rec, videos, expected, tmp_path):
    """--jobs: segments encoded by two processes, joined without re-encoding: every frame once, at 60 fps, the same
    pictures as one encoder's, and the same soundtrack."""
    store = open_store(str(rec["store"]))
    n = expected["n"]
    assert len(segment_bounds(n, 2, n // 3)) == 2
    out = tmp_path / "parallel.mp4"
    seen = []
    export_video(
        store, rec["traj_id"], out, scale=SCALE, jobs=2, min_segment=n // 3, progress=lambda d, t: seen.append(d)
    )
    assert seen[-1] == n
    assert count_frames(out) == n
    info = probe(out)
    assert re.search(r"Video: h264 .*, 60 fps", info), info
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info).groups()
    assert abs(int(h) * 3600 + int(m) * 60 + float(s) - n / 60) <= FRAME_S + 0.011
    w, h_ = 320 * SCALE, 210 * SCALE
    for k in (0, n // 2 - 1, n // 2, n // 2 + 1, n - 1):  # either side of the join
        a, b = decode_frame(out, k, w, h_).astype(int), decode_frame(videos["mix"], k, w, h_).astype(int)
        assert np.abs(a - b).mean() < 3, k
    np.testing.assert_allclose(decode_audio(out, 1), decode_audio(videos["mix"], 1), atol=2)


def test_one_job_encodes_on_one_thread(rec, tmp_path, monkeypatch):
    """jobs=1 is one core: x264 gets one thread (its default, 1.5 per core, costs more CPU for the same video)."""
    import server.video.encode as encode

    commands = []
    popen = subprocess.Popen

    def recording_popen(cmd, *args, **kwargs):
        commands.append(cmd)
        return popen(cmd, *args, **kwargs)

    monkeypatch.setattr(encode.subprocess, "Popen", recording_popen)
    export_video(open_store(str(rec["store"])), rec["traj_id"], tmp_path / "one.mp4", scale=1, jobs=1)
    (cmd,) = commands
    assert cmd[cmd.index("-threads") + 1] == "1"


def test_click_in_stereo_left_lands_at_its_frame(videos, expected):
    audio = decode_audio(videos["stereo"], 2)
    left, right = audio[:, 0], audio[:, 1]
    i = onset(left, 10000)
    assert abs(i / AUDIO_RATE - expected["t"]) <= FRAME_S, (i / AUDIO_RATE, expected)
    assert abs(int(i / AUDIO_RATE * 60) - expected["frame"]) <= 1
    # the speech channel is silent apart from the click; the click is not on the game channel
    assert np.abs(np.delete(left, np.s_[max(0, i - 2400) : i + 2400])).max() < 2000
    window = right[max(0, i - 240) : i + 240]
    assert np.abs(window - np.median(window)).max() < 15000 < np.abs(left[i - 240 : i + 240]).max()


def test_stereo_right_is_the_game_sound(rec, videos):
    audio = decode_audio(videos["stereo"], 2)
    store = open_store(str(rec["store"]))
    cols = read_frames(store, rec["traj_id"])
    src = load_sound(store, rec["traj_id"], cols)
    game_only = render_audio(SoundSources(frames=src.frames, game=src.game)).astype(np.float64)
    right = audio[: game_only.size, 1]
    assert np.abs(game_only).max() > 1000, "the recording has no game sound to compare"
    assert np.corrcoef(right, game_only)[0, 1] > 0.95


def test_click_in_the_mix_lands_at_its_frame(rec, videos, expected):
    mono = decode_audio(videos["mix"], 1)
    store = open_store(str(rec["store"]))
    src = load_sound(store, rec["traj_id"], read_frames(store, rec["traj_id"]))
    game_only = render_audio(SoundSources(frames=src.frames, game=src.game)).astype(np.float64)
    n = min(mono.size, game_only.size)
    assert np.corrcoef(mono[:n], game_only[:n])[0, 1] > 0.8  # the game sound is in the mix
    speech_part = mono[:n] - game_only[:n]
    i = onset(speech_part, 10000)
    assert abs(i / AUDIO_RATE - expected["t"]) <= FRAME_S, (i / AUDIO_RATE, expected)


def test_mov_with_overlay(videos):
    info = probe(videos["mov"])
    assert "major_brand     : qt" in info
    assert f"{320 * SCALE}x{218 * SCALE}" in info  # an 8-row strip below the 210 game rows
    a, b = (decode_frame(videos["mov"], k, 320 * SCALE, 218 * SCALE) for k in (10, 300))
    strip_a, strip_b = a[210 * SCALE :], b[210 * SCALE :]
    assert (strip_a.max(axis=2) > 200).sum() > 50  # white digits on a dark strip
    assert np.median(strip_a) < 60
    assert np.abs(strip_a.astype(int) - strip_b).max() > 100  # the frame number changed
    assert np.abs(a[: 210 * SCALE].astype(int) - b[: 210 * SCALE]).mean() > 0.1


def test_unknown_and_invalid_ids_are_clear_errors(rec, tmp_path):
    p = make_video("--key", "pong_NOBODY_1", "--store", str(rec["store"]), cwd=tmp_path)
    assert p.returncode == 2 and "no trajectory 'pong_NOBODY_1'" in p.stderr and "Traceback" not in p.stderr
    p = make_video("--key", "../../etc/passwd", "--store", str(rec["store"]), cwd=tmp_path)
    assert p.returncode == 2 and "invalid trajectory ID" in p.stderr and "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []


def test_missing_frames_csv_is_named(rec, tmp_path):
    store = tmp_path / "store"
    d = tamper(rec["dir"], store, "spaceinvaders_NOFRAMES_1", 0, "ram_crc32", rec["rows"][0]["ram_crc32"])
    (d / "frames.csv").unlink()
    p = make_video("--key", "spaceinvaders_NOFRAMES_1", "--store", str(store), cwd=tmp_path)
    assert p.returncode == 2 and "frames.csv" in p.stderr and "Traceback" not in p.stderr


def test_a_tampered_log_fails_the_export_at_its_frame(rec, tmp_path):
    store = tmp_path / "store"
    tamper(rec["dir"], store, "spaceinvaders_TAMPERED_1", 200)
    p = make_video("--key", "spaceinvaders_TAMPERED_1", "--store", str(store), "--scale", "1", cwd=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "diverged at frame 200" in p.stderr and "ram_crc32" in p.stderr and "Traceback" not in p.stderr
    assert not any(x.suffix in (".mp4", ".part") for x in tmp_path.iterdir())  # nothing half-written is left
    with pytest.raises(ReplayDivergence, match="diverged at frame 200"):  # raised in a worker, whole
        export_video(open_store(str(store)), "spaceinvaders_TAMPERED_1", tmp_path / "x.mp4", jobs=2, min_segment=100)
    assert not any(x.suffix in (".mp4", ".part") for x in tmp_path.iterdir())


def test_speech_segments_follow_pauses_but_not_jitter():
    rate = 48000
    spf = rate / 60
    n = 1200
    rng = np.random.default_rng(1)
    ss = np.arange(n) * spf + rng.uniform(-0.4, 0.4, n) * spf  # paint jitter under half a frame
    late = rng.choice(n, 60, replace=False)
    ss[late] += spf * rng.integers(1, 4, late.size)  # single paints one to three refreshes late
    ss[900:905] += 6 * spf  # a short stall
    ss[300:] += 10 * rate  # a 10 s pause after frame 299
    ss[600:] += 1.5 * spf  # then the display falls 1.5 frames behind for good
    segs = speech_segments(ss, rate)
    assert [f for f, _ in segs] == [0, 300, 600]
    assert segs[1][1] == pytest.approx(300 * spf + 10 * rate, abs=0.5 * spf)
    assert segs[2][1] == pytest.approx(600 * spf + 10 * rate + 1.5 * spf, abs=0.5 * spf)
    ss[100] = np.nan  # a frame never acked is interpolated
    assert [f for f, _ in speech_segments(ss, rate)] == [0, 300, 600]
    assert speech_segments(np.full(n, np.nan), rate) == [(0, 0.0)]


def test_audio_is_exactly_frames_long_and_places_segments():
    rate = 48000
    speech = np.zeros(rate * 20, dtype=np.int16)
    speech[rate * 16] = 16000  # 16 s into speech.wav
    ss = np.arange(600) * 800.0
    ss[300:] += 10 * rate  # paused 10 s after frame 299: frame 300 is at 15 s, the click 1 s later
    src = SoundSources(frames=600, speech_rate=rate, speech=speech, segments=speech_segments(ss, rate))
    mono = render_audio(src)
    assert mono.size == 600 * 800
    assert int(np.argmax(np.abs(mono))) == (300 + 60) * 800
    stereo = render_audio(src, stereo=True)
    assert stereo.shape == (600 * 800, 2) and not stereo[:, 1].any()
