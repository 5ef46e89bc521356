"""The export: re-simulate and verify, pipe the screens into ffmpeg, mux the soundtrack (see the package's doc)."""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core import format as fmt
from ..core.alignment import FPS
from ..core.emulator import SCREEN_HEIGHT, SCREEN_WIDTH
from ..core.reader import read_frames, read_meta
from ..core.replay import replay
from ..errors import VideoExportError
from ..store import Store
from .font import OVERLAY_ROWS, overlay_strip
from .sound import load_sound, write_audio_wav

PIXEL_ASPECT = 2  # an Atari pixel is twice as wide as high
CONTAINERS = {"mp4": "mp4", "mov": "mov"}
BATCH_FRAMES = 30  # frames per write to ffmpeg's stdin
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


@dataclass
class ExportResult:
    path: Path
    frames: int
    seconds: float
    width: int
    height: int
    elapsed_s: float
    resimulated_fps: float = 0.0
    notes: list[str] = field(default_factory=list)


def output_size(scale: int, overlay: bool) -> tuple[int, int]:
    rows = SCREEN_HEIGHT + (OVERLAY_ROWS if overlay else 0)
    return SCREEN_WIDTH * PIXEL_ASPECT * scale, rows * scale


def ffmpeg_command(
    ffmpeg: str,
    audio_wav: Path,
    out: Path,
    container: str,
    scale: int,
    overlay: bool,
    stereo: bool,
    crf: int = 20,
    preset: str = "ultrafast",
) -> list[str]:
    width, height = output_size(scale, overlay)
    rows = SCREEN_HEIGHT + (OVERLAY_ROWS if overlay else 0)
    vf = (
        "scale=out_color_matrix=bt709:out_range=tv,format=yuv444p,"
        f"scale={width}:{height}:flags=neighbor,format=yuv420p,setsar=1"
    )
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{SCREEN_WIDTH}x{rows}",
        "-framerate",
        str(FPS),
        "-i",
        "pipe:0",
        "-i",
        str(audio_wav),
        "-map",
        "0:v:0",
        "-map",
        "1:a:0",
        "-vf",
        vf,
        "-r",
        str(FPS),
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(crf),
        "-colorspace",
        "bt709",
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-color_range",
        "tv",
        "-c:a",
        "aac",
        "-b:a",
        "192k" if stereo else "128k",
        "-movflags",
        "+faststart",
        "-f",
        CONTAINERS[container],
        str(out),
    ]


def default_output(traj_id: str, container: str = "mp4") -> Path:
    return Path(f"{traj_id}_final.{container}")


def export_video(
    store: Store,
    traj_id: str,
    out: Path | str | None = None,
    *,
    container: str | None = None,
    scale: int = 4,
    stereo: bool = False,
    overlay: bool = False,
    speech_gain: float = 1.0,
    game_gain: float = 1.0,
    crf: int = 20,
    preset: str = "ultrafast",
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Re-simulate, verify and encode a trajectory. Raises TrajectoryNotFound, InvalidTrajectoryId,
    ReplayDivergence (nothing is written) or VideoExportError."""
    t_start = time.perf_counter()
    if container is None:
        suffix = Path(out).suffix.lower().lstrip(".") if out is not None else ""
        container = suffix if suffix in CONTAINERS else "mp4"
    if container not in CONTAINERS:
        raise VideoExportError(f"unknown format {container!r}; use one of {', '.join(CONTAINERS)}")
    if preset not in X264_PRESETS:
        raise VideoExportError(f"unknown x264 preset {preset!r}; use one of {', '.join(X264_PRESETS)}")
    if not 1 <= int(scale) <= 8:
        raise VideoExportError(f"scale must be 1 to 8, got {scale}")
    out = Path(out) if out is not None else default_output(traj_id, container)
    read_meta(store, traj_id)  # validates the ID; TrajectoryNotFound without meta.json
    try:
        frames = read_frames(store, traj_id)
    except ValueError as e:
        raise VideoExportError(str(e)) from None
    n = len(frames)
    if n == 0:
        raise VideoExportError(f"{traj_id} has no frames to export")
    if not out.parent.exists():
        raise VideoExportError(f"output directory {out.parent} does not exist")

    try:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as e:
        raise VideoExportError(f"no ffmpeg: {e} (pip install imageio-ffmpeg, see requirements.txt)") from None
    sound = load_sound(store, traj_id, frames)
    notes = []
    if sound.speech is None:
        notes.append(f"{traj_id} has no {fmt.SPEECH}: the soundtrack has no speech")
    elif not np.isfinite(frames["speech_sample"]).any():
        notes.append(f"{traj_id}'s {fmt.FRAMES} has no speech_sample: speech laid from frame 0 at 1x")
    if sound.game is None:
        notes.append(f"{traj_id} has no {fmt.GAME_AUDIO}: the soundtrack has no game sound")
    part = out.with_name(out.name + ".part")
    with tempfile.TemporaryDirectory(prefix="atari-video-") as tmp:
        audio_wav = Path(tmp) / "audio.wav"
        write_audio_wav(audio_wav, sound, stereo=stereo, speech_gain=speech_gain, game_gain=game_gain)
        del sound
        err_path = Path(tmp) / "ffmpeg.log"
        cmd = ffmpeg_command(ffmpeg, audio_wav, part, container, scale, overlay, stereo, crf, preset)
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        assert proc.stdin is not None
        ok = False
        t_sim = 0.0
        try:
            _grow_pipe(proc.stdin)
            batch: list[bytes] = []
            done = 0
            t0 = time.perf_counter()
            for rf in replay(store, traj_id):
                rgb = rf.emulator.screen_rgb()  # ALE's own palette lookup: 20 us, 15x numpy's fancy index
                if overlay:
                    rgb = np.concatenate([rgb, overlay_strip(rf.step.frame, rf.step.score, rf.step.action)])
                batch.append(rgb.tobytes())
                done += 1
                if len(batch) >= BATCH_FRAMES:
                    _write(proc, b"".join(batch), err_path)
                    batch.clear()
                    if progress is not None:
                        progress(done, n)
            if batch:
                _write(proc, b"".join(batch), err_path)
            t_sim = time.perf_counter() - t0
            if done != n:  # replay() reads the same frames.csv, so this only happens if it changed meanwhile
                raise VideoExportError(f"{traj_id}: re-simulated {done} frames but frames.csv has {n}")
            proc.stdin.close()
            code = proc.wait()
            if code != 0:
                raise VideoExportError(f"ffmpeg failed (exit {code}): {_tail(err_path)}")
            if progress is not None:
                progress(n, n)
            os.replace(part, out)
            ok = True
        finally:
            if not ok:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                part.unlink(missing_ok=True)
    width, height = output_size(scale, overlay)
    elapsed = time.perf_counter() - t_start
    return ExportResult(out, n, n / FPS, width, height, elapsed, n / t_sim if t_sim > 0 else math.inf, notes)


def _grow_pipe(pipe) -> None:
    """A 1 MB pipe buffer (10 frames) instead of 64 KB: fewer stalls between Python and ffmpeg."""
    try:
        import fcntl

        fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


def _write(proc: subprocess.Popen, data: bytes, err_path: Path) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
    except BrokenPipeError:
        proc.wait()
        raise VideoExportError(f"ffmpeg stopped (exit {proc.returncode}): {_tail(err_path)}") from None


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip()
    except OSError:
        return "(no ffmpeg output)"
    return " | ".join(text.splitlines()[-lines:]) or "(no ffmpeg output)"
