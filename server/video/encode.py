"""The export: re-simulate and verify, pipe the screens into ffmpeg, mux the soundtrack (see the package's doc)."""

from __future__ import annotations

import math
import os
import shutil
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
from ..parallel import constant, run_jobs
from ..store import Store
from .font import OVERLAY_ROWS, overlay_strip
from .sound import load_sound, write_audio_wav

PIXEL_ASPECT = 2  # an Atari pixel is twice as wide as high
CONTAINERS = {"mp4": "mp4", "mov": "mov"}
BATCH_FRAMES = 30  # frames per write to ffmpeg's stdin
MIN_SEGMENT_FRAMES = 1800  # 30 s: the shortest segment encoded on its own with jobs > 1
#: 640x420: sharp and at the right aspect at its own size, and about 10x real time on one core (4: 1280x840, about 3x;
#: docs/benchmarks.md "Video export: where the time goes")
DEFAULT_SCALE = 2
#: x264's constant quantiser: about 98% of the pixels of an Atari frame come out exact. Against the CRF 20 it replaced:
#: a slightly better picture, a smaller file and about 15% less CPU (CRF's rate control costs an extra look at every
#: frame); docs/benchmarks.md
QP = 16
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
    audio_wav: Path | None,
    out: Path,
    container: str,
    scale: int,
    overlay: bool,
    stereo: bool,
    qp: int = QP,
    preset: str = "ultrafast",
    threads: int = 0,
) -> list[str]:
    """The encoder: raw 160xrows RGB on stdin -> `out`; with `audio_wav` None, raw H.264 (a segment, no sound).
    `qp`: x264's constant quantiser; `threads`: x264's threads (0: its default, 1.5 per core)."""
    width, height = output_size(scale, overlay)
    rows = SCREEN_HEIGHT + (OVERLAY_ROWS if overlay else 0)
    # One swscale pass: nearest neighbour, the colour conversion at the Atari's size with every pixel's own chroma
    # (full_chroma_inp: RGB's chroma is not averaged over pixel pairs first), then 4:2:0 at the output size; the same
    # bytes as converting to yuv444p, scaling and subsampling in three passes, in about 2/3 of the time.
    vf = (
        f"scale={width}:{height}:flags=neighbor+full_chroma_inp+full_chroma_int"
        ":out_color_matrix=bt709:out_range=tv,format=yuv420p,setsar=1"
    )
    cmd = [
        ffmpeg,
        *FFMPEG_QUIET,
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
    ]
    if audio_wav is not None:
        cmd += ["-i", str(audio_wav), "-map", "0:v:0", "-map", "1:a:0"]
    cmd += ["-vf", vf, "-r", str(FPS), "-c:v", "libx264", "-preset", preset, "-qp", str(qp), "-threads", str(threads)]
    cmd += [*COLOUR_TAGS]
    if audio_wav is None:
        return [*cmd, "-f", "h264", str(out)]
    return [*cmd, *_audio_and_container(stereo, container), str(out)]


FFMPEG_QUIET = ("-hide_banner", "-nostdin", "-loglevel", "error", "-y")
#: BT.709, limited range: written into the H.264 stream's VUI (kept when segments are joined by copying).
COLOUR_TAGS = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")


#: ffmpeg's AAC with its fast coder: about twice as fast as its default (twoloop), which was the soundtrack's biggest
#: cost, and no worse at these rates for speech and game sound (docs/benchmarks.md)
AAC = ("-c:a", "aac", "-aac_coder", "fast")


def _audio_and_container(stereo: bool, container: str) -> list[str]:
    return [
        *AAC,
        "-b:a",
        "192k" if stereo else "128k",
        "-movflags",
        "+faststart",
        "-f",
        CONTAINERS[container],
    ]


def mux_command(ffmpeg: str, video_h264: Path, audio_wav: Path, out: Path, container: str, stereo: bool) -> list[str]:
    """Joined raw H.264 segments and the soundtrack into the container; the picture is copied, not re-encoded."""
    return [
        ffmpeg,
        *FFMPEG_QUIET,
        "-framerate",
        str(FPS),
        "-f",
        "h264",
        "-i",
        str(video_h264),
        "-i",
        str(audio_wav),
        "-map",
        "0:v:0",
        "-map",
        "1:a:0",
        "-c:v",
        "copy",
        *_audio_and_container(stereo, container),
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
    scale: int = DEFAULT_SCALE,
    stereo: bool = False,
    overlay: bool = False,
    speech_gain: float = 1.0,
    game_gain: float = 1.0,
    qp: int = QP,
    preset: str = "ultrafast",
    progress: Callable[[int, int], None] | None = None,
    jobs: int = 1,
    min_segment: int = MIN_SEGMENT_FRAMES,
    setup: Callable[[], Store] | None = None,
) -> ExportResult:
    """Re-simulate, verify and encode a trajectory. Raises TrajectoryNotFound, InvalidTrajectoryId,
    ReplayDivergence (nothing is written) or VideoExportError.

    With `jobs` > 1 the picture is encoded in up to `jobs` segments at once (none shorter than `min_segment` frames),
    one process each (`setup()` opens the store in a worker; default: this store, inherited); each re-simulates and
    verifies from frame 0, encodes its frames as raw H.264, and the segments are joined and muxed with the soundtrack
    without re-encoding."""
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
    bounds = segment_bounds(n, jobs, min_segment)
    with tempfile.TemporaryDirectory(prefix="atari-video-") as tmp:
        audio_wav = Path(tmp) / "audio.wav"
        write_audio_wav(audio_wav, sound, stereo=stereo, speech_gain=speech_gain, game_gain=game_gain)
        del sound
        ok = False
        try:
            t0 = time.perf_counter()
            if len(bounds) == 1:
                # x264 gets `jobs` threads: one with jobs=1 (its own default, 1.5 per core, costs more CPU per frame)
                threads = max(1, jobs)
                cmd = ffmpeg_command(ffmpeg, audio_wav, part, container, scale, overlay, stereo, qp, preset, threads)
                done = _encode(store, traj_id, cmd, Path(tmp) / "ffmpeg.log", overlay, 0, n, n, progress)
            else:
                segs = [
                    _Segment(traj_id, ffmpeg, Path(tmp) / f"segment-{k}.h264", a, b, scale, overlay, qp, preset)
                    for k, (a, b) in enumerate(bounds)
                ]
                done = 0
                for seg, count in run_jobs(_encode_segment, segs, jobs, setup or constant(store), quiet=True):
                    done += count
                    if progress is not None:
                        progress(seg.stop, n)
                joined = Path(tmp) / "video.h264"
                with open(joined, "wb") as f:
                    for seg in segs:
                        with open(seg.out, "rb") as s:
                            shutil.copyfileobj(s, f, 1 << 20)
                        seg.out.unlink()
                cmd = mux_command(ffmpeg, joined, audio_wav, part, container, stereo)
                err_path = Path(tmp) / "mux.log"
                with open(err_path, "wb") as err:
                    code = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err).returncode
                if code != 0:
                    raise VideoExportError(f"ffmpeg failed to mux (exit {code}): {_tail(err_path)}")
            t_sim = time.perf_counter() - t0
            if done != n:  # replay() reads the same frames.csv, so this only happens if it changed meanwhile
                raise VideoExportError(f"{traj_id}: re-simulated {done} frames but frames.csv has {n}")
            if progress is not None:
                progress(n, n)
            os.replace(part, out)
            ok = True
        finally:
            if not ok:
                part.unlink(missing_ok=True)
    width, height = output_size(scale, overlay)
    elapsed = time.perf_counter() - t_start
    return ExportResult(out, n, n / FPS, width, height, elapsed, n / t_sim if t_sim > 0 else math.inf, notes)


def segment_bounds(n: int, jobs: int, min_segment: int = MIN_SEGMENT_FRAMES) -> list[tuple[int, int]]:
    """[start, stop) of each segment encoded on its own: one per job, none shorter than `min_segment` frames."""
    k = max(1, min(jobs, n // max(1, min_segment)))
    edges = [n * i // k for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


@dataclass(frozen=True)
class _Segment:
    traj_id: str
    ffmpeg: str
    out: Path
    start: int
    stop: int
    scale: int
    overlay: bool
    qp: int
    preset: str


def _encode_segment(store: Store, seg: _Segment) -> int:
    """Frames [start, stop) as raw H.264 (one x264 thread: the segments are the parallelism); the frames before are
    re-simulated and verified, not encoded."""
    cmd = ffmpeg_command(seg.ffmpeg, None, seg.out, "mp4", seg.scale, seg.overlay, False, seg.qp, seg.preset, 1)
    err_path = seg.out.with_suffix(".log")
    return _encode(store, seg.traj_id, cmd, err_path, seg.overlay, seg.start, seg.stop, seg.stop, None)


def _encode(
    store: Store,
    traj_id: str,
    cmd: list[str],
    err_path: Path,
    overlay: bool,
    start: int,
    stop: int,
    n: int,
    progress: Callable[[int, int], None] | None,
) -> int:
    """Re-simulate (verifying) up to frame `stop` and pipe frames [start, stop) into the encoder `cmd`; returns how
    many were piped."""
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
    assert proc.stdin is not None
    ok = False
    try:
        _grow_pipe(proc.stdin)
        batch: list[bytes] = []
        done = 0
        for rf in replay(store, traj_id):
            frame = rf.step.frame
            if frame >= stop:
                break
            if frame < start:
                continue
            rgb = rf.emulator.screen_rgb()  # ALE's own palette lookup: 20 us, 15x numpy's fancy index
            if overlay:
                rgb = np.concatenate([rgb, overlay_strip(frame, rf.step.score, rf.step.action)])
            batch.append(rgb.tobytes())
            done += 1
            if len(batch) >= BATCH_FRAMES:
                _write(proc, b"".join(batch), err_path)
                batch.clear()
                if progress is not None:
                    progress(start + done, n)
        if batch:
            _write(proc, b"".join(batch), err_path)
        proc.stdin.close()
        code = proc.wait()
        if code != 0:
            raise VideoExportError(f"ffmpeg failed (exit {code}): {_tail(err_path)}")
        ok = True
        return done
    finally:
        if not ok and proc.poll() is None:
            proc.kill()
            proc.wait()


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
