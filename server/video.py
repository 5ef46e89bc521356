"""Video export of a trajectory by re-simulation: H.264 + AAC at exactly 60 fps, speech and game sound in sync.

    export_video(store, "mspacman_1QQ3LEWANF_1", "mspacman_1QQ3LEWANF_1_final.mp4")

The picture is never taken from a screenshot: the trajectory is re-simulated from its seed and logged actions
(`server.core.replay.replay`), and every frame is checked against the log while it is produced, so a trajectory
that does not verify fails the export with the `ReplayDivergence` message (and leaves no file behind).

Picture. Each re-simulated screen is taken as 160x210 RGB (ALE's getScreenRGB, the NTSC palette) and is piped raw
into ffmpeg (`imageio_ffmpeg.get_ffmpeg_exe()`), which scales it with nearest neighbour *inside ffmpeg*: the colour
conversion runs at the Atari's size (`format=yuv444p`), and only then is the picture scaled (`flags=neighbor`) and
subsampled to yuv420p, which stays crisp because at even scales every Atari pixel covers whole 2x2 chroma blocks.
The Atari's pixels are twice as wide as high (as the
browser client shows them), so scale s gives 320*s x 210*s (4: 1280x840). x264 `ultrafast` (flat Atari frames cost
little size for it; see docs/benchmarks.md), BT.709 tagged.

Overlay (`overlay=True`): frame, score and action drawn with a 3x5 bitmap font into an 8-row strip added *below*
the 210 game rows, before scaling (so the game is never covered, and no font file is needed: the text is the same on
every machine). The video is then 218*s rows high.

Sound. One 48 kHz PCM16 WAV is prepared in numpy and given to ffmpeg as a file; it is exactly frames/60 s long, the
same as the video (which is 60 fps by construction, never guessed from the audio's length):
- game sound: `game_audio.wav` holds 512 samples per frame at 30720 Hz, so frame f's sound starts at f/60 s;
  resampled to 48 kHz by linear interpolation.
- speech: `speech.wav`'s sample `speech_sample[f]` was being captured when frame f was painted. The speech is laid on
  the video's 60 fps timeline at 1x in segments (`speech_segments`): it plays unbroken while the logged mapping
  stays within a frame of the 1x line, and is re-cut where it moves further for good (a pause, where the speech of
  the paused time is skipped; the display falling behind). Every sample is heard with the frame that was on screen
  when it was spoken, to within about a frame, without the warble or the clicks a per-frame time warp would add from
  paint-time jitter. The browser replay page lays the speech out with the same segments.
- mixed by default (sum, clipped), or `stereo=True`: speech left, game right.
"""

from __future__ import annotations

import csv
import io
import math
import os
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .core import format as fmt
from .core.actions import ACTION_NAMES
from .core.emulator import GAME_AUDIO_RATE, SCREEN_HEIGHT, SCREEN_WIDTH
from .core.replay import load_meta, replay
from .core.wav import wav_header
from .errors import AtariSpeechError, TrajectoryNotFound

FPS = 60
AUDIO_RATE = 48000
PIXEL_ASPECT = 2  # an Atari pixel is twice as wide as high
OVERLAY_ROWS = 8
CONTAINERS = {"mp4": "mp4", "mov": "mov"}
BATCH_FRAMES = 30  # frames per write to ffmpeg's stdin
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


class VideoExportError(AtariSpeechError):
    """ffmpeg failed, or the trajectory cannot be exported; the message says why."""


# --- the logged columns ---------------------------------------------------------------------------------------------


@dataclass
class Columns:
    """frames.csv as column arrays (display_ms and speech_sample are NaN where empty)."""

    frame: np.ndarray
    reward: np.ndarray
    score: np.ndarray
    terminal: np.ndarray
    action: np.ndarray
    lives: np.ndarray
    keys: list[str]
    display_ms: np.ndarray
    speech_sample: np.ndarray

    def __len__(self) -> int:
        return int(self.frame.size)


def load_columns(store, traj_id: str) -> Columns:
    """frames.csv of a trajectory; TrajectoryNotFound when it is missing."""
    fmt.validate_traj_id(traj_id)
    try:
        text = store.get(f"{traj_id}/{fmt.FRAMES}").decode()
    except KeyError:
        raise TrajectoryNotFound(f"trajectory {traj_id!r} has no {fmt.FRAMES} in {store.url}") from None
    rows = list(csv.reader(io.StringIO(text)))
    header, rows = rows[0] if rows else [], rows[1:]
    col = {name: i for i, name in enumerate(header)}
    missing = [c for c in ("frame", "reward", "score", "terminal", "action", "lives") if c not in col]
    if missing:
        raise VideoExportError(f"{traj_id}/{fmt.FRAMES} has no column {', '.join(missing)}")

    def ints(name: str) -> np.ndarray:
        i = col[name]
        return np.array([int(r[i]) for r in rows], dtype=np.int64)

    def floats(name: str) -> np.ndarray:
        i = col.get(name)
        if i is None:
            return np.full(len(rows), np.nan)
        return np.array([float(r[i]) if i < len(r) and r[i] != "" else np.nan for r in rows], dtype=np.float64)

    ki = col.get("keys")
    return Columns(
        frame=ints("frame"),
        reward=ints("reward"),
        score=ints("score"),
        terminal=ints("terminal"),
        action=ints("action"),
        lives=ints("lives"),
        keys=[r[ki] if ki is not None else "" for r in rows],
        display_ms=floats("display_ms"),
        speech_sample=floats("speech_sample"),
    )


# --- audio ------------------------------------------------------------------------------------------------------------


def parse_wav(data: bytes, name: str = "WAV") -> tuple[int, np.ndarray]:
    """(rate, int16 mono samples) of a PCM8/PCM16 WAV held in memory (other chunks are skipped; PCM8 is scaled to
    16 bit, several channels are averaged)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise VideoExportError(f"{name} is not a WAV file")
    pos, fmt_chunk, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt_chunk = body
        elif cid == b"data":
            payload = body
            break
        pos += 8 + size + (size & 1)
    if fmt_chunk is None or payload is None:
        raise VideoExportError(f"{name} has no fmt or data chunk")
    tag, channels, rate = struct.unpack_from("<HHI", fmt_chunk, 0)
    bits = struct.unpack_from("<H", fmt_chunk, 14)[0]
    if tag != 1 or bits not in (8, 16):
        raise VideoExportError(f"{name}: only PCM 8 or 16 bit is supported (format {tag}, {bits} bit)")
    if bits == 16:
        a = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2")
    else:
        a = ((np.frombuffer(payload, dtype=np.uint8).astype(np.int16) - 128) * 256).astype(np.int16)
    if channels > 1:
        a = a[: a.size // channels * channels].reshape(-1, channels).mean(axis=1).astype(np.int16)
    return rate, a


def _fill_speech_samples(ss: np.ndarray, rate: float) -> np.ndarray | None:
    """speech_sample of every frame: gaps interpolated, ends extrapolated at 1x. None if no frame has one."""
    known = ~np.isnan(ss)
    if not known.any():
        return None
    f = np.arange(ss.size, dtype=np.float64)
    kf, kv = f[known], ss[known]
    out = np.interp(f, kf, kv)
    spf = rate / FPS
    before, after = f < kf[0], f > kf[-1]
    out[before] = kv[0] - (kf[0] - f[before]) * spf
    out[after] = kv[-1] + (f[after] - kf[-1]) * spf
    return out


def speech_segments(
    speech_sample: np.ndarray, rate: float, tolerance_frames: float = 1.0, persist: int = 15
) -> list[tuple[int, float]]:
    """Where speech.wav is laid on the 60 fps timeline: [(first frame, speech sample at that frame), ...].

    Segment j plays speech at 1x from its sample, starting at its frame, until the next segment's frame. Each frame
    has an offset: its logged speech_sample minus 1x time. A new segment starts at frame f when f's offset is more
    than `tolerance_frames` from the current segment's, and the median offset of the `persist` frames from f on is
    too, and agrees with f's (a pause, or the display falling behind for good). Single paints a refresh or three late,
    and stalls shorter than half of `persist`, do not cut the speech. So the speech stays within about a frame of the
    picture, and plays unbroken in between. Without any logged speech_sample, it plays at 1x from sample 0.
    """
    ss = _fill_speech_samples(np.asarray(speech_sample, dtype=np.float64), rate)
    if ss is None:
        return [(0, 0.0)]
    spf = rate / FPS
    tol = tolerance_frames * spf
    n = ss.size
    offset = ss - np.arange(n) * spf  # each frame's speech sample of frame 0 on its own 1x line
    origin = float(np.median(offset[:persist]))
    segments = [(0, origin)]
    f = 1
    block = 4096
    while f < n:
        off = np.abs(offset[f : f + block] - origin) > tol
        if not off.any():
            f += block
            continue
        f += int(np.argmax(off))
        ahead = float(np.median(offset[f : f + persist]))
        if abs(ahead - origin) > tol and abs(offset[f] - ahead) <= tol:
            origin = ahead
            segments.append((f, origin + f * spf))
        f += 1
    return segments


def _interp(src: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of `src` at fractional positions (touching only what they need); silence outside it."""
    out = np.zeros(pos.size, dtype=np.float32)
    if src.size < 2:
        return out
    i = np.floor(pos).astype(np.int64)
    ok = (i >= 0) & (i < src.size - 1)
    i = i[ok]
    frac = (pos[ok] - i).astype(np.float32)
    a = src[i].astype(np.float32)
    out[ok] = a + (src[i + 1].astype(np.float32) - a) * frac
    return out


@dataclass
class SoundSources:
    """The trajectory's two sound files (either may be absent; int16 samples) and how speech maps onto frames."""

    frames: int
    speech_rate: int | None = None
    speech: np.ndarray | None = None
    segments: list[tuple[int, float]] | None = None
    game_rate: int = GAME_AUDIO_RATE
    game: np.ndarray | None = None


def load_sound(store, traj_id: str, columns: Columns) -> SoundSources:
    src = SoundSources(frames=len(columns))
    try:
        rate, speech = parse_wav(store.get(f"{traj_id}/{fmt.SPEECH}"), f"{traj_id}/{fmt.SPEECH}")
        src.speech_rate, src.speech = rate, speech
        src.segments = speech_segments(columns.speech_sample, rate)
    except KeyError:
        pass
    try:
        rate, game = parse_wav(store.get(f"{traj_id}/{fmt.GAME_AUDIO}"), f"{traj_id}/{fmt.GAME_AUDIO}")
        if rate != GAME_AUDIO_RATE:
            raise VideoExportError(f"{traj_id}/{fmt.GAME_AUDIO} is {rate} Hz, expected {GAME_AUDIO_RATE}")
        src.game_rate, src.game = rate, game
    except KeyError:
        pass
    return src


def audio_blocks(
    src: SoundSources,
    stereo: bool = False,
    speech_gain: float = 1.0,
    game_gain: float = 1.0,
    rate: int = AUDIO_RATE,
    block_frames: int = 3600,
) -> Iterator[np.ndarray]:
    """The soundtrack in blocks of int16: mono mix (k,) or stereo (k, 2) speech left, game right; exactly frames/60 s
    in all."""
    if rate % FPS:
        raise ValueError(f"the output rate must be a multiple of {FPS}")
    per_frame = rate // FPS
    if src.segments:
        seg_frames = np.array([s[0] for s in src.segments], dtype=np.int64)
        seg_src = np.array([s[1] for s in src.segments], dtype=np.float64)
    for f0 in range(0, src.frames, block_frames):
        k = np.arange(f0 * per_frame, min(src.frames, f0 + block_frames) * per_frame, dtype=np.int64)
        speech = np.zeros(k.size, dtype=np.float32)
        game = np.zeros(k.size, dtype=np.float32)
        if src.speech is not None and src.speech_rate and src.segments:
            j = np.searchsorted(seg_frames, k // per_frame, side="right") - 1
            pos = seg_src[j] + (k - seg_frames[j] * per_frame) * (src.speech_rate / rate)
            speech = _interp(src.speech, pos) * np.float32(speech_gain)
        if src.game is not None:
            game = _interp(src.game, k * (src.game_rate / rate)) * np.float32(game_gain)
        block = np.stack([speech, game], axis=1) if stereo else speech + game
        yield np.clip(np.round(block), -32768, 32767).astype("<i2")


def render_audio(
    src: SoundSources, stereo: bool = False, speech_gain: float = 1.0, game_gain: float = 1.0, rate: int = AUDIO_RATE
) -> np.ndarray:
    """The whole soundtrack as one int16 array (see audio_blocks)."""
    blocks = list(audio_blocks(src, stereo, speech_gain, game_gain, rate))
    if not blocks:
        return np.zeros((0, 2) if stereo else 0, dtype="<i2")
    return np.concatenate(blocks)


def write_audio_wav(
    path: Path,
    src: SoundSources,
    stereo: bool = False,
    speech_gain: float = 1.0,
    game_gain: float = 1.0,
    rate: int = AUDIO_RATE,
) -> int:
    """Write the soundtrack as a PCM16 WAV block by block (memory stays at one block); returns its sample count."""
    channels = 2 if stereo else 1
    samples = src.frames * (rate // FPS)
    with open(path, "wb") as f:
        f.write(wav_header(rate, channels, 2, samples * channels * 2))
        for block in audio_blocks(src, stereo, speech_gain, game_gain, rate):
            f.write(block.tobytes())
    return samples


# --- overlay: a 3x5 bitmap font ---------------------------------------------------------------------------------------

_FONT_ROWS = {  # each glyph: 5 rows of 3 bits, most significant bit left
    "0": "111 101 101 101 111",
    "1": "010 110 010 010 111",
    "2": "111 001 111 100 111",
    "3": "111 001 111 001 111",
    "4": "101 101 111 001 001",
    "5": "111 100 111 001 111",
    "6": "111 100 111 101 111",
    "7": "111 001 010 010 010",
    "8": "111 101 111 101 111",
    "9": "111 101 111 001 111",
    "A": "010 101 111 101 101",
    "B": "110 101 110 101 110",
    "C": "011 100 100 100 011",
    "D": "110 101 101 101 110",
    "E": "111 100 110 100 111",
    "F": "111 100 110 100 100",
    "G": "011 100 101 101 011",
    "H": "101 101 111 101 101",
    "I": "111 010 010 010 111",
    "J": "001 001 001 101 010",
    "K": "101 101 110 101 101",
    "L": "100 100 100 100 111",
    "M": "101 111 111 101 101",
    "N": "110 101 101 101 101",
    "O": "010 101 101 101 010",
    "P": "110 101 110 100 100",
    "Q": "010 101 101 110 011",
    "R": "110 101 110 101 101",
    "S": "011 100 010 001 110",
    "T": "111 010 010 010 010",
    "U": "101 101 101 101 111",
    "V": "101 101 101 101 010",
    "W": "101 101 111 111 101",
    "X": "101 101 010 101 101",
    "Y": "101 101 010 010 010",
    "Z": "111 001 010 100 111",
    "-": "000 000 111 000 000",
    "+": "000 010 111 010 000",
    ":": "000 010 000 010 000",
    " ": "000 000 000 000 000",
}
FONT: dict[str, np.ndarray] = {
    ch: np.array([[c == "1" for c in row] for row in rows.split()], dtype=bool) for ch, rows in _FONT_ROWS.items()
}
OVERLAY_TEXT = (255, 255, 255)
OVERLAY_LABEL = (150, 150, 150)
OVERLAY_BG = (24, 24, 24)


def draw_text(img: np.ndarray, x: int, y: int, text: str, colour=OVERLAY_TEXT) -> int:
    """Draw `text` (upper case, digits, `-+:` and space) at (x, y) into an RGB image; returns the x after it."""
    for ch in text.upper():
        glyph = FONT.get(ch, FONT["-"])
        if x + 3 > img.shape[1]:
            break
        img[y : y + 5, x : x + 3][glyph] = colour
        x += 4
    return x


def overlay_strip(frame: int, score: int, action: int) -> np.ndarray:
    """An OVERLAY_ROWS x 160 RGB strip: `F <frame>  S <score>  <action name>`."""
    strip = np.empty((OVERLAY_ROWS, SCREEN_WIDTH, 3), dtype=np.uint8)
    strip[:] = OVERLAY_BG
    x = draw_text(strip, 1, 2, "F", OVERLAY_LABEL)
    x = draw_text(strip, x, 2, f"{frame:<6d}")
    x = draw_text(strip, x + 2, 2, "S", OVERLAY_LABEL)
    x = draw_text(strip, x, 2, f"{score:<6d}")
    draw_text(strip, x + 2, 2, ACTION_NAMES.get(action, str(action)))
    return strip


# --- the export -----------------------------------------------------------------------------------------------------


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
    store,
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
    load_meta(store, traj_id)  # validates the ID; TrajectoryNotFound without meta.json
    columns = load_columns(store, traj_id)
    n = len(columns)
    if n == 0:
        raise VideoExportError(f"{traj_id} has no frames to export")
    if not out.parent.exists():
        raise VideoExportError(f"output directory {out.parent} does not exist")

    try:
        import imageio_ffmpeg

        ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as e:
        raise VideoExportError(f"no ffmpeg: {e} (pip install imageio-ffmpeg, see requirements.txt)") from None
    sound = load_sound(store, traj_id, columns)
    notes = []
    if sound.speech is None:
        notes.append(f"{traj_id} has no {fmt.SPEECH}: the soundtrack has no speech")
    elif not np.isfinite(columns.speech_sample).any():
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
        ok = False
        t_sim = 0.0
        try:
            _grow_pipe(proc.stdin)
            batch: list[bytes] = []
            frames = 0
            t0 = time.perf_counter()
            for rf in replay(store, traj_id):
                rgb = rf.emulator.screen_rgb()  # ALE's own palette lookup: 20 us, 15x numpy's fancy index
                if overlay:
                    rgb = np.concatenate([rgb, overlay_strip(rf.step.frame, rf.step.score, rf.step.action)])
                batch.append(rgb.tobytes())
                frames += 1
                if len(batch) >= BATCH_FRAMES:
                    _write(proc, b"".join(batch), err_path)
                    batch.clear()
                    if progress is not None:
                        progress(frames, n)
            if batch:
                _write(proc, b"".join(batch), err_path)
            t_sim = time.perf_counter() - t0
            if frames != n:  # replay() reads the same frames.csv, so this only happens if it changed meanwhile
                raise VideoExportError(f"{traj_id}: re-simulated {frames} frames but frames.csv has {n}")
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
